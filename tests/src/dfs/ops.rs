//! The DFS path operations that shape the namespace: Filesystem Create/Delete/Get
//! Properties, Path Create (file, directory, rename), Path Delete, Path Get Properties
//! (incl. getStatus/getAccessControl), and Path Update's setProperties and
//! setAccessControl. Callers hold the endpoint lock (write for changes, read for reads), so
//! a multi-blob change (directory rename or delete) is atomic as seen through the endpoint.

use std::collections::BTreeMap;

use super::acl::{Access, SUPERUSER, parse_acl, parse_mode};
use super::blob::{Azurite, FOLDER_KEY};
use super::ns::{
    CondFail, Kind, Node, R, check, check_plain, expect, fail, hidden, keep_parent, materialize,
    parent, parse_properties, path_not_found, properties_header, stat, upstream,
};
use super::wire::{Request, Response, decode};

/// Filesystem Create (`PUT ?resource=filesystem`), Delete, Get Properties (`HEAD`).
pub fn filesystem(az: &Azurite, fs: &str, req: &Request) -> R<Response> {
    match req.method.as_str() {
        "PUT" => {
            let r = expect(az.container("PUT", fs)?, &[201])?;
            Ok(stamp(Response::new(201), &r))
        }
        "DELETE" => {
            expect(az.container("DELETE", fs)?, &[202])?;
            Ok(Response::new(202))
        }
        "HEAD" => {
            let r = expect(az.container("GET", fs)?, &[200])?;
            Ok(stamp(Response::new(200), &r).with("x-ms-namespace-enabled", "true"))
        }
        m => Err(fail(
            405,
            "UnsupportedHttpVerb",
            &format!("{m} on a filesystem"),
        )),
    }
}

/// Copy ETag and Last-Modified from an Azurite answer.
fn stamp(mut resp: Response, from: &Response) -> Response {
    for h in ["etag", "last-modified"] {
        if let Some(v) = from.header(h) {
            resp.set(h, v.to_string());
        }
    }
    resp
}

fn stamp_node(resp: Response, node: &Node) -> Response {
    resp.with("ETag", format!("\"{}\"", node.etag()))
        .with("Last-Modified", node.last_modified())
}

/// Map a destination's conditional-header failure.
fn dest_fail(f: CondFail) -> super::ns::Fail {
    match f {
        CondFail::Exists => fail(
            409,
            "PathAlreadyExists",
            "The specified path already exists.",
        ),
        CondFail::NotMet => super::ns::condition_not_met(),
    }
}

/// Every ancestor of `key` must be a directory (or absent): 409 `PathConflict` when one is
/// a file. Returns the nearest existing ancestor's default ACL and the ancestors that have
/// no blob (implicit or missing), deepest first.
#[allow(clippy::type_complexity)]
fn check_ancestors(az: &Azurite, fs: &str, key: &str) -> R<(Vec<super::acl::Entry>, Vec<String>)> {
    let mut p = parent(key);
    let mut defaults = None;
    let mut missing = Vec::new();
    while !p.is_empty() {
        match az.head(fs, p)?.map_err(|r| upstream(&r))? {
            Some(b) if !b.is_folder() => {
                return Err(fail(
                    409,
                    "PathConflict",
                    "The specified path, or an element of the path, exists and its resource type is invalid for this operation.",
                ));
            }
            Some(b) => {
                if defaults.is_none() {
                    defaults = Some(Access::from_meta(&b.metadata, Kind::Dir).defaults());
                }
            }
            None => missing.push(p.to_string()),
        }
        p = parent(p);
    }
    Ok((defaults.unwrap_or_default(), missing))
}

/// Path Create: `?resource=file|directory`.
pub fn create(az: &Azurite, fs: &str, key: &str, req: &Request) -> R<Response> {
    let kind = match req.q("resource").as_deref() {
        Some("file") => Kind::File,
        Some("directory") => Kind::Dir,
        _ => {
            return Err(fail(
                400,
                "InvalidQueryParameterValue",
                "resource must be file or directory",
            ));
        }
    };
    if key.is_empty() {
        return Err(fail(400, "InvalidUri", "a path is required"));
    }
    let existing = stat(az, fs, key)?;
    check(req, "", existing.as_ref()).map_err(dest_fail)?;
    let conflict = || {
        fail(
            409,
            "PathConflict",
            "The specified path, or an element of the path, exists and its resource type is invalid for this operation.",
        )
    };
    match (kind, existing.as_ref().map(|n| n.kind)) {
        (Kind::Dir, Some(Kind::Dir)) => {
            let node = existing.as_ref().ok_or_else(path_not_found)?;
            let node = match node.blob {
                Some(_) => node.clone(),
                None => {
                    materialize(az, fs, key)?;
                    stat(az, fs, key)?.ok_or_else(path_not_found)?
                }
            };
            return Ok(stamp_node(Response::new(201), &node));
        }
        (Kind::File, Some(Kind::Dir)) | (Kind::Dir, Some(Kind::File)) => return Err(conflict()),
        _ => {}
    }
    let (defaults, missing) = check_ancestors(az, fs, key)?;
    let mut meta = match req.header("x-ms-properties") {
        Some(p) => parse_properties(p)?,
        None => BTreeMap::new(),
    };
    let requested = req.header("x-ms-permissions").map(parse_mode).transpose()?;
    let umask = req.header("x-ms-umask").map(parse_mode).transpose()?;
    let access = match existing.as_ref() {
        // Overwriting a file keeps its owner, group and ACL unless the request sets them.
        Some(n) if requested.is_none() => {
            let mut a = Access::from_meta(&n.metadata(), Kind::File);
            if let Some(o) = req.header("x-ms-owner") {
                a.owner = o.to_string();
            }
            if let Some(g) = req.header("x-ms-group") {
                a.group = g.to_string();
            }
            a
        }
        _ => Access::new_path(
            kind,
            req.header("x-ms-owner").unwrap_or(SUPERUSER).to_string(),
            req.header("x-ms-group").unwrap_or(SUPERUSER).to_string(),
            requested,
            umask,
            &defaults,
        ),
    };
    access.to_meta(&mut meta);
    if kind == Kind::Dir {
        meta.insert(FOLDER_KEY.into(), "true".into());
    }
    // Missing parents become real directories, as Path Create makes them on the service.
    for dir in missing.iter().rev() {
        let mut dmeta = BTreeMap::new();
        let a = Access::new_path(
            Kind::Dir,
            SUPERUSER.into(),
            SUPERUSER.into(),
            None,
            umask,
            &defaults,
        );
        a.to_meta(&mut dmeta);
        dmeta.insert(FOLDER_KEY.into(), "true".into());
        expect(az.put(fs, dir, Vec::new(), "", &dmeta)?, &[201])?;
    }
    let ctype = req.header("x-ms-content-type").unwrap_or("");
    let r = expect(az.put(fs, key, Vec::new(), ctype, &meta)?, &[201])?;
    Ok(stamp(Response::new(201), &r))
}

/// Path Create with `x-ms-rename-source`: move a file or a whole directory.
pub fn rename(az: &Azurite, fs: &str, key: &str, req: &Request) -> R<Response> {
    let source = req.header("x-ms-rename-source").unwrap_or("");
    let source = source.split_once('?').map_or(source, |(p, _)| p);
    let source = decode(source);
    let (src_fs, src_key) = source
        .trim_start_matches('/')
        .split_once('/')
        .map(|(f, k)| (f.to_string(), k.trim_matches('/').to_string()))
        .ok_or_else(|| {
            fail(
                400,
                "InvalidSourceUri",
                "x-ms-rename-source must be /{filesystem}/{path}",
            )
        })?;
    if key.is_empty() || src_key.is_empty() {
        return Err(fail(
            400,
            "InvalidRenameSourcePath",
            "cannot rename a filesystem root",
        ));
    }
    let src = stat(az, &src_fs, &src_key)?.ok_or_else(|| {
        fail(
            404,
            "SourcePathNotFound",
            "The source path for a rename operation does not exist.",
        )
    })?;
    check(req, "x-ms-source-", Some(&src)).map_err(|_| {
        fail(
            412,
            "SourceConditionNotMet",
            "The source condition specified using HTTP conditional header(s) is not met.",
        )
    })?;
    let dest = stat(az, fs, key)?;
    check(req, "", dest.as_ref()).map_err(dest_fail)?;
    let same_dir = src_fs == fs && src.kind == Kind::Dir && src_key == key;
    if same_dir || (src_fs == fs && key.starts_with(&format!("{src_key}/"))) {
        return Err(fail(
            409,
            "InvalidRenameSourcePath",
            "The source directory cannot be the same as the destination directory, nor can the destination be a subdirectory of the source directory.",
        ));
    }
    if src_fs == fs && src_key == key {
        return Ok(stamp_node(Response::new(201), &src));
    }
    let dparent = parent(key);
    if !dparent.is_empty() {
        match stat(az, fs, dparent)? {
            None => {
                return Err(fail(
                    404,
                    "RenameDestinationParentPathNotFound",
                    "The parent directory of the destination path does not exist.",
                ));
            }
            Some(n) if n.kind == Kind::File => {
                return Err(fail(
                    409,
                    "PathConflict",
                    "The parent of the destination path is a file.",
                ));
            }
            Some(_) => {}
        }
    }
    let type_conflict = || {
        fail(
            409,
            "InvalidSourceOrDestinationResourceType",
            "The source and destination resource type must be identical.",
        )
    };
    if let Some(d) = &dest {
        match (src.kind, d.kind) {
            (Kind::File, Kind::Dir) | (Kind::Dir, Kind::File) => return Err(type_conflict()),
            (Kind::Dir, Kind::Dir) => {
                let children = az
                    .list_page(fs, &format!("{key}/"), false, None, Some(1))?
                    .map_err(|r| upstream(&r))?;
                if !children.blobs.is_empty() {
                    return Err(fail(
                        409,
                        "DirectoryNotEmpty",
                        "The recursive query parameter value must be true to delete a non-empty directory.",
                    ));
                }
                expect(az.delete(fs, key)?, &[202])?;
            }
            (Kind::File, Kind::File) => {}
        }
    }
    keep_parent(az, &src_fs, &src_key)?;
    let mut moved: Vec<String> = Vec::new();
    if src.kind == Kind::Dir {
        let children = az
            .list_all(&src_fs, &format!("{src_key}/"))?
            .map_err(|r| upstream(&r))?;
        for c in &children {
            let to = format!("{key}{}", &c.name[src_key.len()..]);
            expect(az.copy((&src_fs, &c.name), (fs, &to))?, &[201, 202])?;
            moved.push(c.name.clone());
        }
        if src.blob.is_some() {
            expect(az.copy((&src_fs, &src_key), (fs, key))?, &[201, 202])?;
            moved.push(src_key.clone());
        } else {
            materialize(az, fs, key)?;
        }
    } else {
        expect(az.copy((&src_fs, &src_key), (fs, key))?, &[201, 202])?;
        moved.push(src_key.clone());
    }
    for name in &moved {
        expect(az.delete(&src_fs, name)?, &[202, 404])?;
    }
    let mut node = stat(az, fs, key)?.ok_or_else(path_not_found)?;
    // "If x-ms-properties is specified, the properties will overwrite the existing
    // properties; otherwise, the existing properties will be preserved."
    if let (Some(p), Some(b)) = (req.header("x-ms-properties"), &node.blob) {
        let mut meta = b.metadata.clone();
        meta.retain(|k, _| hidden(k));
        meta.extend(parse_properties(p)?);
        expect(az.set_metadata(fs, key, &meta)?, &[200])?;
        node = stat(az, fs, key)?.ok_or_else(path_not_found)?;
    }
    Ok(stamp_node(Response::new(201), &node))
}

/// Path Delete (`?recursive=`): 409 `DirectoryNotEmpty` for a non-empty directory unless
/// recursive. All at once (no `x-ms-continuation`).
pub fn delete(az: &Azurite, fs: &str, key: &str, req: &Request) -> R<Response> {
    if key.is_empty() {
        return Err(fail(
            400,
            "InvalidUri",
            "use Filesystem Delete for the root",
        ));
    }
    let node = stat(az, fs, key)?.ok_or_else(path_not_found)?;
    check_plain(req, Some(&node))?;
    let recursive = req.q("recursive").as_deref() == Some("true");
    keep_parent(az, fs, key)?;
    if node.kind == Kind::Dir {
        let children = az
            .list_all(fs, &format!("{key}/"))?
            .map_err(|r| upstream(&r))?;
        if !children.is_empty() && !recursive {
            return Err(fail(
                409,
                "DirectoryNotEmpty",
                "The recursive query parameter value must be true to delete a non-empty directory.",
            ));
        }
        for c in &children {
            expect(az.delete(fs, &c.name)?, &[202, 404])?;
        }
    }
    if node.blob.is_some() {
        expect(az.delete(fs, key)?, &[202, 404])?;
    }
    Ok(Response::new(200))
}

/// The headers Get Properties answers with for `node`.
pub fn describe(node: &Node, req: &Request) -> Response {
    let meta = node.metadata();
    let access = Access::from_meta(&meta, node.kind);
    let action = req.q("action").unwrap_or_default();
    let mut r = stamp_node(Response::new(200), node)
        .with(
            "x-ms-resource-type",
            if node.kind == Kind::Dir {
                "directory"
            } else {
                "file"
            },
        )
        .with("Content-Length", node.len().to_string())
        .with("x-ms-owner", access.owner.clone())
        .with("x-ms-group", access.group.clone())
        .with("x-ms-permissions", access.permissions())
        .with("Accept-Ranges", "bytes");
    if let Some(b) = &node.blob
        && !b.content_type.is_empty()
    {
        r.set("Content-Type", b.content_type.clone());
    }
    if action == "getAccessControl" {
        r.set("x-ms-acl", access.render_acl());
    } else if action != "getStatus" {
        r.set("x-ms-properties", properties_header(&meta));
    }
    r
}

/// Path Get Properties (`HEAD`).
pub fn properties(az: &Azurite, fs: &str, key: &str, req: &Request) -> R<Response> {
    let node = stat(az, fs, key)?.ok_or_else(path_not_found)?;
    check_plain(req, Some(&node))?;
    Ok(describe(&node, req))
}

/// Path Update `setProperties` and `setAccessControl`.
pub fn update_meta(az: &Azurite, fs: &str, key: &str, req: &Request, acl: bool) -> R<Response> {
    let node = stat(az, fs, key)?.ok_or_else(path_not_found)?;
    check_plain(req, Some(&node))?;
    let blob = match &node.blob {
        Some(b) => b.clone(),
        None => materialize(az, fs, key)?,
    };
    let mut meta = blob.metadata.clone();
    if acl {
        let mut a = Access::from_meta(&meta, node.kind);
        if req.header("x-ms-acl").is_some() && req.header("x-ms-permissions").is_some() {
            return Err(fail(
                400,
                "InvalidHeaderValue",
                "x-ms-acl and x-ms-permissions are exclusive",
            ));
        }
        if let Some(o) = req.header("x-ms-owner") {
            a.owner = o.to_string();
        }
        if let Some(g) = req.header("x-ms-group") {
            a.group = g.to_string();
        }
        if let Some(p) = req.header("x-ms-permissions") {
            a.mode = parse_mode(p)? & 0o1777;
        }
        if let Some(l) = req.header("x-ms-acl") {
            a.set_acl(parse_acl(l)?)?;
        }
        a.to_meta(&mut meta);
    } else {
        let props = parse_properties(req.header("x-ms-properties").unwrap_or(""))?;
        meta.retain(|k, _| hidden(k));
        meta.extend(props);
    }
    let r = if key.is_empty() {
        az.set_container_metadata(fs, &meta)?
    } else {
        az.set_metadata(fs, key, &meta)?
    };
    let r = expect(r, &[200])?;
    Ok(stamp(Response::new(200), &r))
}
