//! Azure block uploads (Put Block, then Put Block List) over the REST API, so that the commit
//! carries the write's precondition.
//!
//! Why not `object_store`'s multipart upload: it cannot send `If-Match` / `If-None-Match`
//! with Put Block List, so a conditional write had to HEAD first and commit after, and a
//! writer from another client landing between the two was overwritten: silent loss of the
//! other write. Azure checks the condition on the commit itself, atomically, which is what
//! DESIGN §3 asks for. Block ids are random per block: the uncommitted block list belongs
//! to the blob, not to the upload, so a second writer of the same name must never reuse our
//! ids. Blocks that are never committed are discarded by Azure after a week; nothing becomes
//! visible before the commit.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use bytes::Bytes;
use futures::future::BoxFuture;
use reqwest::Method;

use crate::api::{AppendBase, PartUpload, Precondition, PutMeta, PutOutcome, Result};
use crate::checksum;

/// The blob's HTTP headers besides its type, as Get Blob Properties answers them and as Set
/// Blob Properties takes them.
const KEPT_HEADERS: [(&str, &str); 5] = [
    ("content-encoding", "x-ms-blob-content-encoding"),
    ("content-language", "x-ms-blob-content-language"),
    ("content-disposition", "x-ms-blob-content-disposition"),
    ("cache-control", "x-ms-blob-cache-control"),
    ("content-md5", "x-ms-blob-content-md5"),
];
use crate::rest::{Rest, encode_segment, header, header_refs, keyed, status_error};

/// The REST client and container URL the block uploads of one mount use.
pub struct AzureBlocks {
    rest: Rest,
    container_url: String,
    /// Uploads carry their MD5 (`write.checksums`).
    checked: bool,
}

impl std::fmt::Debug for AzureBlocks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureBlocks")
            .field("container_url", &self.container_url)
            .finish()
    }
}

impl AzureBlocks {
    pub fn new(rest: Rest, container_url: &str, checked: bool) -> Arc<Self> {
        Arc::new(AzureBlocks {
            rest,
            container_url: container_url.trim_end_matches('/').to_string(),
            checked,
        })
    }

    fn blob_url(&self, key: &str) -> String {
        let path: Vec<String> = key.split('/').map(encode_segment).collect();
        format!("{}/{}", self.container_url, path.join("/"))
    }

    /// Start a block upload of `key`; nothing is sent until the first part.
    pub fn start(self: &Arc<Self>, key: &str, meta: &PutMeta) -> Box<dyn PartUpload> {
        Box::new(self.upload(key, meta, Vec::new(), ID_BYTES))
    }

    fn upload(
        self: &Arc<Self>,
        key: &str,
        meta: &PutMeta,
        ids: Vec<String>,
        id_bytes: usize,
    ) -> BlockUpload {
        BlockUpload {
            az: self.clone(),
            key: key.to_string(),
            url: self.blob_url(key),
            meta: meta.clone(),
            whole: (self.checked && ids.is_empty()).then(checksum::Running::default),
            ids,
            id_bytes,
        }
    }

    /// Put Blob: `data` as the whole blob `key`, with `meta`, conditional on `cond`, carrying
    /// its `Content-MD5` (Azure refuses bytes that do not match it, and stores it as the
    /// blob's MD5). A refusal is sent once more.
    pub async fn put_blob(
        &self,
        key: &str,
        data: Bytes,
        meta: &PutMeta,
        cond: &Precondition,
    ) -> Result<PutOutcome> {
        // The keys `object_store` refuses (`.`/`..` segments, control characters) stay
        // refused on every call.
        crate::objstore::key_to_path(key)?;
        let sum = match self.checked {
            true => Some(checksum::md5_async(&data).await?),
            false => None,
        };
        let url = self.blob_url(key);
        let mut headers = commit_headers(meta, cond, data.len());
        headers.push(("x-ms-blob-type".into(), "BlockBlob".into()));
        if let Some(sum) = &sum {
            headers.push(("content-md5".into(), checksum::md5_base64(sum)));
        }
        let headers = header_refs(&headers);
        let what = "Put Blob";
        checksum::once_more(key, what, || async {
            let r = self
                .rest
                .send(what, Method::PUT, &url, &headers, data.clone())
                .await?;
            if !r.status().is_success() {
                let create = matches!(cond, Precondition::IfNotExists);
                return match keyed(status_error(what, create, r).await, key) {
                    // If-Match on a missing blob: nothing has the ETag asked for.
                    crate::error::BackendError::NotFound { .. }
                        if matches!(cond, Precondition::IfMatch(_)) =>
                    {
                        Err(crate::error::BackendError::PreconditionFailed { key: key.into() })
                    }
                    e => Err(e),
                };
            }
            if let Some(sum) = &sum {
                let stored = header(&r, "content-md5").and_then(|v| md5_from_base64(&v));
                checksum::compare(key, what, sum, stored.as_ref())?;
            }
            Ok(PutOutcome {
                etag: header(&r, "etag"),
            })
        })
        .await
    }

    /// Get Blob Properties of `key` (a HEAD): the reply, whose headers are the blob's
    /// properties; a failure is the error it names.
    async fn properties(&self, key: &str) -> Result<reqwest::Response> {
        let what = "Get Blob Properties";
        let r = self
            .rest
            .send(what, Method::HEAD, &self.blob_url(key), &[], Bytes::new())
            .await?;
        if !r.status().is_success() {
            return Err(keyed(status_error(what, false, r).await, key));
        }
        Ok(r)
    }

    /// Set Blob Properties of `key` with `content_type`; its new ETag. Azure sets all the
    /// blob's HTTP headers at once (a header not given is cleared), so the others it has
    /// (encoding, caching, disposition, language, Content-MD5) are read first and given
    /// again, and the update is conditional on the version read.
    pub async fn set_content_type(&self, key: &str, content_type: &str) -> Result<Option<String>> {
        let url = self.blob_url(key);
        let r = self.properties(key).await?;
        let mut headers = vec![
            ("content-length", "0".to_string()),
            ("x-ms-blob-content-type", content_type.to_string()),
        ];
        for (have, give) in KEPT_HEADERS {
            if let Some(v) = header(&r, have) {
                headers.push((give, v));
            }
        }
        if let Some(etag) = header(&r, "etag") {
            headers.push(("if-match", etag));
        }
        let what = "Set Blob Properties";
        let r = self
            .rest
            .send(
                what,
                Method::PUT,
                &format!("{url}?comp=properties"),
                &headers,
                Bytes::new(),
            )
            .await?;
        if !r.status().is_success() {
            return Err(keyed(status_error(what, false, r).await, key));
        }
        Ok(header(&r, "etag"))
    }

    /// Copy Blob of `from` to `to` giving the copy `metadata` (not the source's), conditional
    /// on the source being version `source_etag` when given and on `cond` about `to`; the
    /// copy's ETag. A copy the store reports `pending` (large or cross-account on real Azure;
    /// never within one Azurite) is waited for, polling its properties.
    pub async fn copy_blob(
        &self,
        from: &str,
        to: &str,
        metadata: &crate::api::UserMetadata,
        source_etag: Option<&str>,
        cond: &Precondition,
    ) -> Result<Option<String>> {
        let meta = PutMeta {
            metadata: metadata.clone(),
            content_type: None,
        };
        let mut headers = commit_headers(&meta, cond, 0);
        let source = self.rest.azure_source_url(&self.blob_url(from)).await?;
        headers.push(("x-ms-copy-source".into(), source));
        if let Some(e) = source_etag {
            headers.push(("x-ms-source-if-match".into(), e.to_string()));
        }
        let headers = header_refs(&headers);
        let what = "Copy Blob";
        let url = self.blob_url(to);
        let r = self
            .rest
            .send(what, Method::PUT, &url, &headers, Bytes::new())
            .await?;
        if !r.status().is_success() {
            let create = matches!(cond, Precondition::IfNotExists);
            let status = r.status().as_u16();
            let e = status_error(what, create, r).await;
            // The source's condition failed, whatever the destination's was.
            return Err(match e {
                crate::error::BackendError::AlreadyExists { .. }
                    if status == 412 && source_etag.is_some() && create =>
                {
                    self.source_or_target_412(from, to, source_etag).await
                }
                e => keyed(e, to),
            });
        }
        let mut etag = header(&r, "etag");
        let mut status = header(&r, "x-ms-copy-status").unwrap_or_default();
        let started = std::time::Instant::now();
        let limit = std::time::Duration::from_secs(self.rest.retry().retry_timeout_secs.max(30));
        while status == "pending" {
            if started.elapsed() > limit {
                return Err(crate::error::BackendError::Unavailable(format!(
                    "Copy Blob of {from} to {to} still pending after {limit:?}"
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            let r = self.properties(to).await?;
            status = header(&r, "x-ms-copy-status").unwrap_or_default();
            etag = header(&r, "etag");
        }
        match status.as_str() {
            "success" | "" => Ok(etag),
            other => Err(crate::error::BackendError::Unavailable(format!(
                "Copy Blob of {from} to {to} ended {other}"
            ))),
        }
    }

    /// A 412 of a copy conditional on both ends: the source's version (then the source
    /// changed) or the destination's absence (then it exists); a HEAD of the source tells.
    async fn source_or_target_412(
        &self,
        from: &str,
        to: &str,
        source_etag: Option<&str>,
    ) -> crate::error::BackendError {
        match self.properties(from).await {
            Ok(r) if header(&r, "etag").as_deref() == source_etag => {
                crate::error::BackendError::AlreadyExists { key: to.into() }
            }
            _ => crate::error::BackendError::PreconditionFailed { key: from.into() },
        }
    }

    /// Set Blob Metadata of `key` to `metadata` (all of it replaced; data and HTTP headers
    /// untouched), conditional on `if_match` when given; the new ETag.
    pub async fn set_metadata(
        &self,
        key: &str,
        metadata: &crate::api::UserMetadata,
        if_match: Option<&str>,
    ) -> Result<Option<String>> {
        let mut headers = vec![("content-length".to_string(), "0".to_string())];
        // The access pseudo-keys of an HNS head are no metadata (`api::ACCESS_OWNER`).
        for (k, v) in metadata
            .iter()
            .filter(|(k, _)| !crate::api::is_access_key(k))
        {
            headers.push((format!("x-ms-meta-{k}"), v.clone()));
        }
        if let Some(e) = if_match {
            headers.push(("if-match".into(), e.to_string()));
        }
        let headers = header_refs(&headers);
        let what = "Set Blob Metadata";
        let url = format!("{}?comp=metadata", self.blob_url(key));
        let r = self
            .rest
            .send(what, Method::PUT, &url, &headers, Bytes::new())
            .await?;
        if !r.status().is_success() {
            return Err(keyed(status_error(what, false, r).await, key));
        }
        Ok(header(&r, "etag"))
    }

    /// The committed blocks of `key` (id and size, in order) and the blob's ETag.
    async fn committed_blocks(&self, key: &str) -> Result<(Vec<(String, u64)>, Option<String>)> {
        let url = format!(
            "{}?comp=blocklist&blocklisttype=committed",
            self.blob_url(key)
        );
        let r = self
            .rest
            .send("Get Block List", Method::GET, &url, &[], Bytes::new())
            .await?;
        if !r.status().is_success() {
            return Err(keyed(status_error("Get Block List", false, r).await, key));
        }
        let etag = header(&r, "etag");
        let body = r.text().await.map_err(|e| {
            crate::error::BackendError::Unavailable(format!(
                "Get Block List: reading the reply: {e}"
            ))
        })?;
        Ok((parse_committed(&body)?, etag))
    }

    /// Append by block-list reuse: commit the blob's committed blocks followed by new blocks
    /// holding `file` from `base.len` on. A last committed block under [`MERGE_BELOW`] is
    /// sent again together with the new bytes, so that small appends do not pile up small
    /// blocks towards Azure's limit. A blob without committed blocks (written by one Put
    /// Blob) is rebuilt from blocks once: its bytes are copied from the store part by part
    /// (never staged whole), and later appends to it send only what is new. `None` when the
    /// blocks do not match `base`, their ids cannot be imitated, or the blob would exceed
    /// Azure's block count; the caller then uploads the whole content. `read_old` reads a
    /// range of the base version (the backend's own pinned ranged GET).
    #[allow(clippy::too_many_arguments)]
    pub async fn append<F, Fut>(
        self: &Arc<Self>,
        key: &str,
        base: &AppendBase,
        file: &Path,
        meta: &PutMeta,
        cond: &Precondition,
        (part, in_flight): (usize, usize),
        read_old: F,
    ) -> Result<Option<PutOutcome>>
    where
        F: Fn(Range<u64>) -> Fut,
        Fut: std::future::Future<Output = Result<Bytes>>,
    {
        // Old bytes must come whole: the base version holds all of them.
        let fetch = |range: Range<u64>| {
            let want = range.end - range.start;
            let got = read_old(range);
            async move {
                let data = got.await?;
                if data.len() as u64 != want {
                    return Err(crate::error::BackendError::Unavailable(format!(
                        "Get Blob: {} bytes for a range of {want}",
                        data.len()
                    )));
                }
                Ok(data)
            }
        };
        let part = part.max(1);
        let file_len = tokio::fs::metadata(file).await?.len();
        if file_len < base.len {
            return Ok(None);
        }
        let (mut blocks, etag) = self.committed_blocks(key).await?;
        if etag.as_deref().is_some_and(|e| e != base.etag) {
            return Err(crate::error::BackendError::PreconditionFailed { key: key.into() });
        }
        let id_bytes = match blocks.first() {
            None => ID_BYTES,
            Some((first, _)) => {
                // Every block id of a blob must have the same length: new ids copy the old.
                let Ok(raw) = BASE64.decode(first) else {
                    return Ok(None);
                };
                if raw.len() < MIN_ID_BYTES || blocks.iter().any(|(id, _)| id.len() != first.len())
                {
                    return Ok(None);
                }
                raw.len()
            }
        };
        if !blocks.is_empty() && blocks.iter().map(|b| b.1).sum::<u64>() != base.len {
            return Ok(None);
        }
        let mut resend_from = if blocks.is_empty() { 0 } else { base.len };
        if let Some(&(_, last)) = blocks.last()
            && last < MERGE_BELOW
        {
            blocks.pop();
            resend_from -= last;
        }
        let new_blocks = (file_len - resend_from).div_ceil(part as u64);
        if blocks.len() as u64 + new_blocks > MAX_BLOCKS {
            return Ok(None);
        }
        let ids = blocks.into_iter().map(|(id, _)| id).collect();
        let mut up: Box<dyn PartUpload> = Box::new(self.upload(key, meta, ids, id_bytes));
        // Old bytes that go into new blocks: whole parts copied from the store as they come,
        // the rest (under one part) leads the new bytes.
        let mut sent = futures::stream::FuturesUnordered::new();
        let mut off = resend_from;
        let copied = async {
            use futures::StreamExt;
            while base.len - off >= part as u64 {
                while sent.len() >= in_flight.max(1) {
                    if let Some(r) = sent.next().await {
                        r?;
                    }
                }
                let data = fetch(off..off + part as u64).await?;
                sent.push(up.put_part(data));
                off += part as u64;
            }
            while let Some(r) = sent.next().await {
                r?;
            }
            Ok::<_, crate::error::BackendError>(())
        }
        .await;
        if let Err(e) = copied {
            let _ = up.abort().await;
            return Err(e);
        }
        let head = if off < base.len {
            match fetch(off..base.len).await {
                Ok(b) => b,
                Err(e) => {
                    let _ = up.abort().await;
                    return Err(e);
                }
            }
        } else {
            Bytes::new()
        };
        crate::upload::send_file_in_parts(up, key, (file, base.len, head), (part, in_flight), cond)
            .await
            .map(Some)
    }
}

/// A last committed block smaller than this is sent again with the appended bytes.
const MERGE_BELOW: u64 = 1024 * 1024;
/// Bytes of the block ids this crate makes (random: see the module doc).
const ID_BYTES: usize = 16;
/// Shortest id of another writer's blocks this crate will imitate (random ids shorter than
/// this could collide).
const MIN_ID_BYTES: usize = 8;
/// Azure's limit of committed blocks per blob.
const MAX_BLOCKS: u64 = 50_000;

fn md5_from_base64(s: &str) -> Option<checksum::Md5> {
    use base64::Engine;
    BASE64.decode(s.trim()).ok()?.try_into().ok()
}

/// The committed blocks (`<CommittedBlocks><Block><Name>id</Name><Size>n</Size>`) of a Get
/// Block List reply, in order.
fn parse_committed(xml: &str) -> Result<Vec<(String, u64)>> {
    use quick_xml::events::Event;
    let bad =
        |what: &str| crate::error::BackendError::Other(format!("Get Block List reply: {what}"));
    let mut reader = quick_xml::Reader::from_str(xml);
    let (mut in_committed, mut field) = (false, None::<&'static str>);
    let (mut name, mut size) = (None::<String>, None::<u64>);
    let mut out = Vec::new();
    loop {
        match reader.read_event().map_err(|e| bad(&e.to_string()))? {
            Event::Start(e) => match e.name().as_ref() {
                b"CommittedBlocks" => in_committed = true,
                b"Name" if in_committed => field = Some("name"),
                b"Size" if in_committed => field = Some("size"),
                _ => {}
            },
            Event::Text(t) => {
                let t = t.decode().map_err(|e| bad(&e.to_string()))?;
                match field {
                    Some("name") => name = Some(t.trim().to_string()),
                    Some("size") => size = Some(t.trim().parse().map_err(|_| bad("size"))?),
                    _ => {}
                }
            }
            Event::End(e) => match e.name().as_ref() {
                b"CommittedBlocks" => in_committed = false,
                b"Block" if in_committed => {
                    let (Some(n), Some(s)) = (name.take(), size.take()) else {
                        return Err(bad("a block without name or size"));
                    };
                    out.push((n, s));
                }
                _ => field = None,
            },
            Event::Eof => break,
            _ => {}
        }
    }
    Ok(out)
}

/// One block upload in progress.
struct BlockUpload {
    az: Arc<AzureBlocks>,
    key: String,
    url: String,
    meta: PutMeta,
    /// Block ids in the order of the parts (after the reused ones of an append).
    ids: Vec<String>,
    /// Bytes of each new block id (all ids of a blob have the same length).
    id_bytes: usize,
    /// MD5 of the whole content, fed part by part as they are sent; `None` once some bytes
    /// are not sent by this upload (an append that reuses committed blocks).
    whole: Option<checksum::Running>,
}

impl std::fmt::Debug for BlockUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockUpload")
            .field("key", &self.key)
            .field("blocks", &self.ids.len())
            .finish()
    }
}

/// The XML body of Put Block List committing `ids` in order.
fn block_list_xml(ids: &[String]) -> String {
    let mut body = String::from(r#"<?xml version="1.0" encoding="utf-8"?><BlockList>"#);
    for id in ids {
        // Base64 has no characters XML needs escaped.
        body.push_str("<Latest>");
        body.push_str(id);
        body.push_str("</Latest>");
    }
    body.push_str("</BlockList>");
    body
}

/// The headers of the commit: content type, user metadata and the precondition.
fn commit_headers(meta: &PutMeta, cond: &Precondition, len: usize) -> Vec<(String, String)> {
    let mut h = vec![("content-length".to_string(), len.to_string())];
    if let Some(ct) = &meta.content_type {
        h.push(("x-ms-blob-content-type".into(), ct.clone()));
    }
    for (k, v) in (meta.metadata.iter()).filter(|(k, _)| !crate::api::is_access_key(k)) {
        h.push((format!("x-ms-meta-{k}"), v.clone()));
    }
    match cond {
        Precondition::None => {}
        Precondition::IfNotExists => h.push(("if-none-match".into(), "*".into())),
        Precondition::IfMatch(e) => h.push(("if-match".into(), e.clone())),
    }
    h
}

#[async_trait]
impl PartUpload for BlockUpload {
    fn put_part(&mut self, data: Bytes) -> BoxFuture<'static, Result<()>> {
        let raw: Vec<u8> = (0..self.id_bytes).map(|_| rand::random::<u8>()).collect();
        let id = BASE64.encode(raw);
        let url = format!("{}?comp=block&blockid={}", self.url, encode_segment(&id));
        self.ids.push(id);
        if let Some(w) = &mut self.whole {
            w.update(&data);
        }
        let (az, key) = (self.az.clone(), self.key.clone());
        Box::pin(async move {
            let mut headers = vec![("content-length", data.len().to_string())];
            if az.checked {
                let sum = checksum::md5_async(&data).await?;
                headers.push(("content-md5", checksum::md5_base64(&sum)));
            }
            let what = "Put Block";
            checksum::once_more(&key, what, || async {
                let r = az
                    .rest
                    .send(what, Method::PUT, &url, &headers, data.clone())
                    .await?;
                if r.status().is_success() {
                    Ok(())
                } else {
                    Err(keyed(status_error(what, false, r).await, &key))
                }
            })
            .await
        })
    }

    async fn complete(self: Box<Self>, cond: &Precondition) -> Result<PutOutcome> {
        let body = block_list_xml(&self.ids);
        let mut headers = commit_headers(&self.meta, cond, body.len());
        if let Some(w) = self.whole.clone() {
            // Stored as the blob's Content-MD5, which readers check the bytes against.
            headers.push((
                "x-ms-blob-content-md5".into(),
                checksum::md5_base64(&w.finish()),
            ));
        }
        let headers = header_refs(&headers);
        let url = format!("{}?comp=blocklist", self.url);
        let r = self
            .az
            .rest
            .send(
                "Put Block List",
                Method::PUT,
                &url,
                &headers,
                Bytes::from(body),
            )
            .await?;
        if !r.status().is_success() {
            let create = matches!(cond, Precondition::IfNotExists);
            return Err(keyed(
                status_error("Put Block List", create, r).await,
                &self.key,
            ));
        }
        Ok(PutOutcome {
            etag: header(&r, "etag"),
        })
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        // Uncommitted blocks are invisible and Azure drops them after a week; there is no
        // call to discard them sooner.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_list_keeps_the_order_of_the_parts() {
        let ids = vec!["QQ==".to_string(), "Qg==".to_string()];
        assert_eq!(
            block_list_xml(&ids),
            r#"<?xml version="1.0" encoding="utf-8"?><BlockList><Latest>QQ==</Latest><Latest>Qg==</Latest></BlockList>"#
        );
    }

    #[test]
    fn committed_blocks_are_read_in_order() {
        let xml = r#"<?xml version="1.0" encoding="utf-8"?><BlockList><CommittedBlocks><Block><Name>QUFB</Name><Size>8388608</Size></Block><Block><Name>QkJC</Name><Size>12</Size></Block></CommittedBlocks><UncommittedBlocks><Block><Name>Q0ND</Name><Size>5</Size></Block></UncommittedBlocks></BlockList>"#;
        assert_eq!(
            parse_committed(xml).unwrap(),
            vec![("QUFB".to_string(), 8388608), ("QkJC".to_string(), 12)]
        );
        let empty =
            r#"<?xml version="1.0" encoding="utf-8"?><BlockList><CommittedBlocks /></BlockList>"#;
        assert!(parse_committed(empty).unwrap().is_empty());
        assert!(parse_committed("<BlockList><CommittedBlocks><Block><Name>x</Name></Block></CommittedBlocks></BlockList>").is_err());
    }

    #[test]
    fn commit_carries_the_precondition_and_metadata() {
        let meta = PutMeta {
            content_type: Some("text/plain".into()),
            metadata: [("mode".to_string(), "644".to_string())].into(),
        };
        let h = commit_headers(&meta, &Precondition::IfMatch("\"0x1\"".into()), 10);
        assert!(h.contains(&("if-match".into(), "\"0x1\"".into())));
        assert!(h.contains(&("x-ms-meta-mode".into(), "644".into())));
        assert!(h.contains(&("x-ms-blob-content-type".into(), "text/plain".into())));
        assert!(h.contains(&("content-length".into(), "10".into())));
        let h = commit_headers(&PutMeta::default(), &Precondition::IfNotExists, 0);
        assert!(h.contains(&("if-none-match".into(), "*".into())));
        let h = commit_headers(&PutMeta::default(), &Precondition::None, 0);
        assert!(!h.iter().any(|(k, _)| k.starts_with("if-")));
    }
}
