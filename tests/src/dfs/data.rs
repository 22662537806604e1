//! File data through the DFS API: Path Update `append` (an Azurite Put Block whose block id
//! is derived from the position), `flush` (Put Block List of the committed blocks followed
//! by the appended ones that continue the file exactly up to the flush position, else 400
//! `InvalidFlushPosition`), and Path Read (Get Blob, same bytes and ranges).

use base64::Engine;

use super::blob::Azurite;
use super::ns::{Kind, R, check_plain, expect, fail, path_not_found, stat, upstream};
use super::ops::describe;
use super::wire::{Request, Response};

/// The block id for data appended at `position` (all the same length, as Azure requires).
pub fn block_id(position: u64) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("dfs-{position:016x}"))
}

fn position(req: &Request) -> R<u64> {
    req.q("position")
        .and_then(|p| p.parse().ok())
        .ok_or_else(|| fail(400, "InvalidQueryParameterValue", "position is required"))
}

fn file_node(az: &Azurite, fs: &str, key: &str) -> R<super::ns::Node> {
    let node = stat(az, fs, key)?.ok_or_else(path_not_found)?;
    if node.kind != Kind::File {
        return Err(fail(
            409,
            "PathConflict",
            "The specified path, or an element of the path, exists and its resource type is invalid for this operation.",
        ));
    }
    Ok(node)
}

/// Path Update `append` (with `flush=true`, flushed right after).
pub fn append(az: &Azurite, fs: &str, key: &str, req: &Request) -> R<Response> {
    let pos = position(req)?;
    let node = file_node(az, fs, key)?;
    if pos < node.len() {
        return Err(fail(
            400,
            "InvalidFlushPosition",
            "The uploaded data is not contiguous or the position query parameter value is not equal to the length of the file after appending the uploaded data.",
        ));
    }
    expect(
        az.put_block(fs, key, &block_id(pos), req.body.clone())?,
        &[201],
    )?;
    if req.q("flush").as_deref() == Some("true") {
        return flush_at(az, fs, key, req, pos + req.body.len() as u64).map(|mut r| {
            r.status = 202;
            r
        });
    }
    Ok(Response::new(202).with("x-ms-request-server-encrypted", "false"))
}

/// Path Update `flush`.
pub fn flush(az: &Azurite, fs: &str, key: &str, req: &Request) -> R<Response> {
    let pos = position(req)?;
    flush_at(az, fs, key, req, pos)
}

fn flush_at(az: &Azurite, fs: &str, key: &str, req: &Request, pos: u64) -> R<Response> {
    let bad_position = || {
        fail(
            400,
            "InvalidFlushPosition",
            "The uploaded data is not contiguous or the position query parameter value is not equal to the length of the file after appending the uploaded data.",
        )
    };
    let node = file_node(az, fs, key)?;
    check_plain(req, Some(&node))?;
    let blob = node.blob.clone().ok_or_else(path_not_found)?;
    let (committed, uncommitted) = az.block_list(fs, key)?.map_err(|r| upstream(&r))?;
    let ours = |id: &str| id.len() == block_id(0).len();
    let committed_len: u64 = committed.iter().map(|(_, s)| s).sum();
    let mut base: Vec<String> = Vec::new();
    let mut chain: Vec<String> = Vec::new();
    if committed_len == blob.len && committed.iter().all(|(id, _)| ours(id)) {
        base = committed.iter().map(|(id, _)| id.clone()).collect();
    } else if blob.len > 0 {
        // Written some other way (Put Blob): restage its bytes as the block at 0.
        let r = expect(az.get(fs, key, &[])?, &[200])?;
        expect(az.put_block(fs, key, &block_id(0), r.body)?, &[201])?;
        chain.push(block_id(0));
    }
    if pos < blob.len {
        return Err(bad_position());
    }
    let mut at = blob.len;
    while at < pos {
        let id = block_id(at);
        let size = uncommitted
            .iter()
            .find(|(u, _)| *u == id)
            .map(|(_, s)| *s)
            .ok_or_else(bad_position)?;
        chain.push(id);
        at += size;
        if size == 0 {
            return Err(bad_position());
        }
    }
    if at != pos {
        return Err(bad_position());
    }
    let ctype = req
        .header("x-ms-content-type")
        .map_or(blob.content_type.clone(), str::to_string);
    let r = expect(
        az.put_block_list(fs, key, &base, &chain, &ctype, &blob.metadata)?,
        &[201],
    )?;
    let mut resp = Response::new(200).with("Content-Length", "0");
    for h in ["etag", "last-modified"] {
        if let Some(v) = r.header(h) {
            resp.set(h, v.to_string());
        }
    }
    Ok(resp.with("x-ms-request-server-encrypted", "false"))
}

/// Path Read (`GET`, optional `Range` / `x-ms-range`).
pub fn read(az: &Azurite, fs: &str, key: &str, req: &Request) -> R<Response> {
    let node = stat(az, fs, key)?.ok_or_else(path_not_found)?;
    if node.blob.is_none() || key.is_empty() {
        return Err(path_not_found());
    }
    check_plain(req, Some(&node))?;
    let mut h: Vec<(String, String)> = Vec::new();
    for name in ["range", "x-ms-range", "x-ms-range-get-content-md5"] {
        if let Some(v) = req.header(name) {
            h.push((name.to_string(), v.to_string()));
        }
    }
    let r = az.get(fs, key, &h)?;
    if !matches!(r.status, 200 | 206) {
        return Err(upstream(&r));
    }
    let mut resp = describe(&node, req);
    resp.status = r.status;
    resp.headers
        .retain(|(k, _)| !k.eq_ignore_ascii_case("content-length"));
    for name in [
        "content-range",
        "content-type",
        "content-md5",
        "x-ms-content-md5",
    ] {
        if let Some(v) = r.header(name) {
            resp.set(name, v.to_string());
        }
    }
    resp.body = r.body;
    Ok(resp)
}
