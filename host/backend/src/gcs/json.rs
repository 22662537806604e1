//! Google Cloud Storage writes over the JSON API ([`GcsJson`]) and GCS's form of a
//! precondition ([`GenCond`]).
//!
//! Why this exists: `object_store` writes to GCS through the XML API (`PUT /bucket/key`,
//! XML multipart, `x-goog-copy-source`). That works on real GCS, but the GCS emulator our
//! tests and users run (fake-gcs-server as shipped on PyPI) implements only the JSON API for
//! writes, and the JSON API is the better fit anyway: uploads, copies (`rewriteTo`) and
//! metadata updates (`PATCH`, no rewrite of the data) all take an `ifGenerationMatch`
//! precondition, which is GCS's atomic compare-and-swap. Reads, HEAD and delete stay on
//! `object_store`, which handles them well on both; listings are in `list`.
//!
//! The core speaks ETags. A replacing write therefore resolves the ETag it was given to the
//! object's generation first (one HEAD) and then writes with `ifGenerationMatch`: if the object
//! changes in between, the generation no longer matches and the write fails, so nothing is
//! lost. After a write, the ETag reported back is read with a HEAD and accepted only if that
//! HEAD still sees the generation we wrote.

use std::path::Path as FsPath;

use bytes::Bytes;
use object_store::gcp::GcpCredentialProvider;
use reqwest::Method;
use serde_json::{Map, Value, json};
use tokio::io::{AsyncReadExt, AsyncSeekExt};

use crate::api::{PutMeta, Result, UserMetadata};
use crate::checksum::{self, Md5};
use crate::config::RetryConfig;
use crate::error::BackendError;
use crate::rest::{Rest, SendError, Signer, encode_segment, status_error, transient_status};

/// Public GCS endpoint, used when no endpoint is configured.
pub const DEFAULT_ENDPOINT: &str = "https://storage.googleapis.com";

/// Precondition in GCS terms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GenCond {
    None,
    /// `ifGenerationMatch=0`: create only.
    Absent,
    /// `ifGenerationMatch=N`: replace exactly this generation.
    Generation(String),
}

impl GenCond {
    fn query(&self) -> Option<(&'static str, String)> {
        match self {
            GenCond::None => None,
            GenCond::Absent => Some(("ifGenerationMatch", "0".to_string())),
            GenCond::Generation(g) => Some(("ifGenerationMatch", g.clone())),
        }
    }
}

pub struct GcsJson {
    rest: Rest,
    base: String,
    bucket: String,
    chunk: usize,
    /// Uploads carry their MD5 (`write.checksums`; on by default).
    checked: bool,
}

impl std::fmt::Debug for GcsJson {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcsJson")
            .field("base", &self.base)
            .field("bucket", &self.bucket)
            .finish()
    }
}

impl GcsJson {
    pub fn new(
        base: Option<&str>,
        bucket: &str,
        creds: Option<GcpCredentialProvider>,
        retry: RetryConfig,
        chunk: usize,
    ) -> Result<Self> {
        let signer = match creds {
            Some(c) => Signer::Gcp(c),
            None => Signer::Anonymous,
        };
        // Resumable chunks must be multiples of 256 KiB.
        let chunk = (chunk.max(256 * 1024) / (256 * 1024)) * 256 * 1024;
        Ok(GcsJson {
            rest: Rest::new(retry, signer)?,
            base: base
                .unwrap_or(DEFAULT_ENDPOINT)
                .trim_end_matches('/')
                .to_string(),
            bucket: bucket.to_string(),
            chunk,
            checked: true,
        })
    }

    /// Send no MD5 with uploads (`write.checksums: false`).
    pub fn without_checksums(mut self) -> Self {
        self.checked = false;
        self
    }

    /// Whether uploads carry their MD5.
    pub fn checked(&self) -> bool {
        self.checked
    }

    /// URL of the bucket's object collection (JSON-API listings).
    pub fn objects_url(&self) -> String {
        format!(
            "{}/storage/v1/b/{}/o",
            self.base,
            encode_segment(&self.bucket)
        )
    }

    /// Base URL of the bucket for XML-API calls (MD5s).
    pub fn xml_bucket_url(&self) -> String {
        format!("{}/{}", self.base, encode_segment(&self.bucket))
    }

    pub fn rest(&self) -> &Rest {
        &self.rest
    }

    fn object_url(&self, key: &str) -> String {
        format!(
            "{}/storage/v1/b/{}/o/{}",
            self.base,
            encode_segment(&self.bucket),
            encode_segment(key)
        )
    }

    fn upload_url(&self) -> String {
        format!(
            "{}/upload/storage/v1/b/{}/o",
            self.base,
            encode_segment(&self.bucket)
        )
    }

    /// Turn a non-success response into the backend error it means.
    async fn fail(key: &str, cond: &GenCond, r: reqwest::Response) -> BackendError {
        status_error(key, *cond == GenCond::Absent, r).await
    }

    async fn json_ok(key: &str, cond: &GenCond, r: reqwest::Response) -> Result<Value> {
        if !r.status().is_success() {
            return Err(Self::fail(key, cond, r).await);
        }
        let body = r
            .bytes()
            .await
            .map_err(|e| BackendError::Unavailable(format!("GCS {key}: reading reply: {e}")))?;
        serde_json::from_slice(&body)
            .map_err(|e| BackendError::Other(format!("GCS {key}: bad JSON reply: {e}")))
    }

    fn generation_of(key: &str, v: &Value) -> Result<String> {
        v.get("generation")
            .and_then(Value::as_str)
            .map(str::to_string)
            .ok_or_else(|| BackendError::Other(format!("GCS {key}: reply without generation")))
    }

    fn resource(key: &str, meta: &PutMeta) -> Value {
        let mut o = Map::new();
        o.insert("name".into(), Value::String(key.to_string()));
        if let Some(ct) = &meta.content_type {
            o.insert("contentType".into(), Value::String(ct.clone()));
        }
        if !meta.metadata.is_empty() {
            o.insert("metadata".into(), json!(meta.metadata));
        }
        Value::Object(o)
    }

    /// Upload a whole object in one `multipart/related` request whose resource carries the
    /// bytes' MD5 `sum` as `md5Hash` when given (GCS refuses bytes that do not match it). Returns its generation and
    /// the MD5 the store reports for what it stored.
    pub async fn upload_bytes(
        &self,
        key: &str,
        data: Bytes,
        meta: &PutMeta,
        (cond, sum): (&GenCond, Option<&Md5>),
    ) -> Result<(String, Option<Md5>)> {
        let boundary = format!("blobmount{:016x}", rand::random::<u64>());
        let mut resource = Self::resource(key, meta);
        if let (Some(o), Some(sum)) = (resource.as_object_mut(), sum) {
            o.insert("md5Hash".into(), Value::String(checksum::md5_base64(sum)));
        }
        let resource = resource.to_string();
        let ct = meta
            .content_type
            .as_deref()
            .unwrap_or("application/octet-stream");
        let mut body = Vec::with_capacity(data.len() + resource.len() + 256);
        body.extend_from_slice(
            format!(
                "--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n{resource}\r\n--{boundary}\r\nContent-Type: {ct}\r\n\r\n"
            )
            .as_bytes(),
        );
        body.extend_from_slice(&data);
        body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
        let body = Bytes::from(body);
        let mut query = vec![("uploadType", "multipart".to_string())];
        query.extend(cond.query());
        let qurl = with_query(&self.upload_url(), &query);
        let headers = [(
            "Content-Type",
            format!("multipart/related; boundary={boundary}"),
        )];
        let r = self
            .rest
            .send(key, Method::POST, &qurl, &headers, body)
            .await?;
        let v = Self::json_ok(key, cond, r).await?;
        Ok((Self::generation_of(key, &v)?, reported_md5(&v)))
    }

    /// Remove the damaged bytes a store that does not check stored at `key` (only while they
    /// are `generation`), so nobody reads them as the file. Best effort: logged.
    pub async fn remove_damaged(&self, key: &str, generation: &str) {
        let url = with_query(
            &self.object_url(key),
            &[("ifGenerationMatch", generation.to_string())],
        );
        match self
            .rest
            .send(key, Method::DELETE, &url, &[], Bytes::new())
            .await
        {
            Ok(r) if r.status().is_success() => {
                tracing::warn!(key, "removed the damaged object the store kept");
            }
            Ok(r) => {
                let e = Self::fail(key, &GenCond::None, r).await;
                tracing::error!(key, error = %e, "could not remove the damaged object the store kept");
            }
            Err(e) => {
                tracing::error!(key, error = %e, "could not remove the damaged object the store kept");
            }
        }
    }

    /// Open a resumable upload session for `key` whose object is created conditional on
    /// `cond` when the session is finalized; `total` when the size is known already.
    /// Returns the session URL.
    pub async fn start_session(
        &self,
        key: &str,
        meta: &PutMeta,
        cond: &GenCond,
        total: Option<u64>,
    ) -> Result<String> {
        let mut query = vec![("uploadType", "resumable".to_string())];
        query.extend(cond.query());
        let qurl = with_query(&self.upload_url(), &query);
        let resource = Bytes::from(Self::resource(key, meta).to_string());
        let ct = meta
            .content_type
            .clone()
            .unwrap_or_else(|| "application/octet-stream".into());
        let mut headers = vec![
            (
                "Content-Type",
                "application/json; charset=UTF-8".to_string(),
            ),
            ("X-Upload-Content-Type", ct),
        ];
        if let Some(t) = total {
            headers.push(("X-Upload-Content-Length", t.to_string()));
        }
        let r = self
            .rest
            .send(key, Method::POST, &qurl, &headers, resource)
            .await?;
        if !r.status().is_success() {
            return Err(Self::fail(key, cond, r).await);
        }
        r.headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
            .ok_or_else(|| BackendError::Other(format!("GCS {key}: no upload session URL")))
    }

    /// Send `data` at `offset` of a session; with `total` this finalizes the object (an
    /// empty `data` then only finalizes), and `whole`, the MD5 of all the session's bytes,
    /// goes with it (`X-Goog-Hash`, which GCS checks) and is compared with the MD5 the store
    /// reports. Returns the new generation once finalized. A chunk that is not the last must
    /// be a multiple of 256 KiB.
    #[allow(clippy::too_many_arguments)]
    pub async fn send_chunk(
        &self,
        key: &str,
        session: &str,
        cond: &GenCond,
        offset: u64,
        data: Bytes,
        total: Option<u64>,
        whole: Option<&Md5>,
    ) -> Result<Option<String>> {
        let end = offset + data.len() as u64;
        let range = match total {
            Some(t) if data.is_empty() => format!("bytes */{t}"),
            Some(t) => format!("bytes {offset}-{}/{t}", end - 1),
            None if data.is_empty() => return Ok(None),
            None => format!("bytes {offset}-{}/*", end - 1),
        };
        let mut headers = vec![("Content-Range", range)];
        if let (Some(d), Some(_)) = (whole, total) {
            headers.push(("X-Goog-Hash", format!("md5={}", checksum::md5_base64(d))));
        }
        let r = self
            .rest
            .send(key, Method::PUT, session, &headers, data)
            .await?;
        match r.status().as_u16() {
            308 if total.is_none() => match acknowledged(&r) {
                Some(a) if a == end => Ok(None),
                a => Err(BackendError::Unavailable(format!(
                    "GCS {key}: the upload session holds {a:?} bytes, {end} were sent"
                ))),
            },
            200 | 201 => {
                let v = Self::json_ok(key, cond, r).await?;
                if let Some(d) = whole {
                    checksum::compare(key, "GCS upload", d, reported_md5(&v).as_ref())?;
                }
                Self::generation_of(key, &v).map(Some)
            }
            _ => Err(Self::fail(key, cond, r).await),
        }
    }

    /// Cancel a resumable session (best effort: an abandoned session expires in a week).
    pub async fn cancel_session(&self, key: &str, session: &str) {
        if let Err(e) = self
            .rest
            .send_once(Method::DELETE, session, &[], Bytes::new())
            .await
        {
            tracing::debug!(key, error = ?e, "cancelling a GCS upload session failed");
        }
    }

    /// Upload a local file with a resumable upload session, `chunk` bytes per request,
    /// resuming from what the server acknowledged after a transient failure.
    pub async fn upload_file(
        &self,
        key: &str,
        path: &FsPath,
        meta: &PutMeta,
        cond: &GenCond,
    ) -> Result<String> {
        let total = tokio::fs::metadata(path).await?.len();
        let session = self.start_session(key, meta, cond, Some(total)).await?;
        let mut file = tokio::fs::File::open(path).await?;
        let mut offset = 0u64;
        let mut buf = vec![0u8; self.chunk];
        let mut stalls = 0usize;
        // MD5 of the bytes read so far, each byte once (a chunk sent again after a stall is
        // read again, not hashed again).
        let (mut whole, mut hashed) = (checksum::Running::default(), 0u64);
        let mut sum = None;
        loop {
            let want = ((total - offset) as usize).min(self.chunk);
            file.seek(std::io::SeekFrom::Start(offset)).await?;
            file.read_exact(&mut buf[..want]).await?;
            let end = offset + want as u64;
            if end > hashed && offset <= hashed {
                whole.update(&buf[(hashed - offset) as usize..want]);
                hashed = end;
            }
            let last = offset + want as u64 == total;
            if last && sum.is_none() && self.checked {
                sum = Some(whole.clone().finish());
            }
            let range = if want == 0 {
                format!("bytes */{total}")
            } else if last {
                format!("bytes {offset}-{}/{total}", offset + want as u64 - 1)
            } else {
                format!("bytes {offset}-{}/*", offset + want as u64 - 1)
            };
            let chunk = Bytes::copy_from_slice(&buf[..want]);
            let mut headers = vec![("Content-Range", range)];
            if let Some(d) = sum.filter(|_| last) {
                headers.push(("X-Goog-Hash", format!("md5={}", checksum::md5_base64(&d))));
            }
            let r = self
                .rest
                .send_once(Method::PUT, &session, &headers, chunk)
                .await;
            match r {
                Ok(r) if r.status().is_success() => {
                    let v = Self::json_ok(key, cond, r).await?;
                    if let Some(d) = &sum {
                        checksum::compare(key, "GCS upload", d, reported_md5(&v).as_ref())?;
                    }
                    return Self::generation_of(key, &v);
                }
                Ok(r) if r.status().as_u16() == 308 => {
                    offset = acknowledged(&r).unwrap_or(offset + want as u64);
                    stalls = 0;
                }
                Ok(r) if !transient_status(r.status()) => {
                    return Err(Self::fail(key, cond, r).await);
                }
                Err(SendError::Backend(e)) => return Err(e),
                // A transient status or a transport error: ask the session where it is.
                other @ (Ok(_) | Err(SendError::Http(_))) => {
                    stalls += 1;
                    if stalls > self.rest.retry().max_retries {
                        return match other {
                            Ok(r) => Err(Self::fail(key, cond, r).await),
                            Err(e) => Err(BackendError::Unavailable(format!("GCS {key}: {e:?}"))),
                        };
                    }
                    crate::rest::note_retry("GCS upload session", stalls);
                    tokio::time::sleep(self.rest.backoff(stalls)).await;
                    offset = self.query_session(key, &session, total).await?;
                }
            }
        }
    }

    /// Ask a resumable session how many bytes it has persisted.
    async fn query_session(&self, key: &str, session: &str, total: u64) -> Result<u64> {
        let range = [("Content-Range", format!("bytes */{total}"))];
        let r = self
            .rest
            .send(key, Method::PUT, session, &range, Bytes::new())
            .await?;
        match r.status().as_u16() {
            308 => Ok(acknowledged(&r).unwrap_or(0)),
            200 | 201 => Ok(total),
            _ => Err(Self::fail(key, &GenCond::None, r).await),
        }
    }

    /// Server-side copy with `rewriteTo`, following rewrite tokens until done.
    pub async fn rewrite(&self, from: &str, to: &str, cond: &GenCond) -> Result<String> {
        self.rewrite_as(from, to, None, None, cond).await
    }

    /// [`GcsJson::rewrite`] whose copy gets `meta` (user metadata and content type) instead
    /// of the source's when given: the request body is then the copy's resource, which
    /// replaces the source's metadata as a whole (a field left out is not the source's),
    /// so the caller gives the type it wants kept. Conditional on the source still being
    /// `source_generation` when given (`ifSourceGenerationMatch`) and on `cond` about `to`.
    /// fake-gcs-server (measured 2026-12-07) applies the body's `metadata` and `contentType`
    /// to the copy (keeping the source's type when the body has none) but ignores
    /// `ifSourceGenerationMatch`.
    pub async fn rewrite_as(
        &self,
        from: &str,
        to: &str,
        meta: Option<&PutMeta>,
        source_generation: Option<&str>,
        cond: &GenCond,
    ) -> Result<String> {
        let body = match meta {
            Some(m) => {
                let mut r = Self::resource(to, m);
                if let Some(o) = r.as_object_mut()
                    && !o.contains_key("metadata")
                {
                    // Explicitly none: the copy keeps none of the source's.
                    o.insert("metadata".into(), Value::Object(Map::new()));
                }
                Bytes::from(r.to_string())
            }
            None => Bytes::from_static(b"{}"),
        };
        let url = format!(
            "{}/rewriteTo/b/{}/o/{}",
            self.object_url(from),
            encode_segment(&self.bucket),
            encode_segment(to)
        );
        let mut token: Option<String> = None;
        loop {
            let mut query: Vec<(&str, String)> = cond.query().into_iter().collect();
            if let Some(g) = source_generation {
                query.push(("ifSourceGenerationMatch", g.to_string()));
            }
            if let Some(t) = &token {
                query.push(("rewriteToken", t.clone()));
            }
            let qurl = with_query(&url, &query);
            let json = [("Content-Type", "application/json".to_string())];
            let r = self
                .rest
                .send(from, Method::POST, &qurl, &json, body.clone())
                .await?;
            let v = Self::json_ok(from, cond, r).await?;
            if v.get("done").and_then(Value::as_bool).unwrap_or(false) {
                let res = v.get("resource").cloned().unwrap_or(Value::Null);
                return Self::generation_of(to, &res);
            }
            token = v
                .get("rewriteToken")
                .and_then(Value::as_str)
                .map(str::to_string);
            if token.is_none() {
                return Err(BackendError::Other(format!(
                    "GCS rewrite {from} -> {to}: not done and no rewrite token"
                )));
            }
        }
    }

    /// Replace user metadata (and content type) in place: keys no longer present are
    /// removed (`null`), conditional on the generation.
    pub async fn patch_metadata(
        &self,
        key: &str,
        old: &UserMetadata,
        meta: &PutMeta,
        cond: &GenCond,
    ) -> Result<String> {
        let mut m = Map::new();
        for k in old.keys() {
            if !meta.metadata.contains_key(k) {
                m.insert(k.clone(), Value::Null);
            }
        }
        for (k, v) in &meta.metadata {
            m.insert(k.clone(), Value::String(v.clone()));
        }
        let mut body = Map::new();
        body.insert("metadata".into(), Value::Object(m));
        if let Some(ct) = &meta.content_type {
            body.insert("contentType".into(), Value::String(ct.clone()));
        }
        self.patch(key, body, cond).await
    }

    /// PATCH `body` (merged into the object's resource) onto `key` under `cond`; the new
    /// generation.
    async fn patch(&self, key: &str, body: Map<String, Value>, cond: &GenCond) -> Result<String> {
        let body = Bytes::from(Value::Object(body).to_string());
        let query: Vec<(&str, String)> = cond.query().into_iter().collect();
        let qurl = with_query(&self.object_url(key), &query);
        let json = [("Content-Type", "application/json".to_string())];
        let r = self
            .rest
            .send(key, Method::PATCH, &qurl, &json, body)
            .await?;
        let v = Self::json_ok(key, cond, r).await?;
        Self::generation_of(key, &v)
    }
}

impl GcsJson {
    /// Set the content type of `key` in place (a PATCH merges: the rest of its metadata
    /// stays), only while it has `generation`; the new generation.
    pub async fn set_content_type(
        &self,
        key: &str,
        content_type: &str,
        generation: &str,
    ) -> Result<String> {
        let cond = GenCond::Generation(generation.to_string());
        let mut body = Map::new();
        body.insert("contentType".into(), Value::String(content_type.into()));
        self.patch(key, body, &cond).await
    }
}

/// The MD5 a JSON object resource reports (`md5Hash`, base64); composite objects have none.
fn reported_md5(v: &Value) -> Option<Md5> {
    use base64::Engine;
    let b = v.get("md5Hash")?.as_str()?;
    base64::engine::general_purpose::STANDARD
        .decode(b)
        .ok()?
        .try_into()
        .ok()
}

/// `url?k=v&...` with form-encoded values.
pub fn with_query(url: &str, query: &[(&str, String)]) -> String {
    if query.is_empty() {
        return url.to_string();
    }
    let mut q = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in query {
        q.append_pair(k, v);
    }
    format!("{url}?{}", q.finish())
}

/// The next offset a resumable session expects, from its `Range: bytes=0-N` header.
fn acknowledged(r: &reqwest::Response) -> Option<u64> {
    let v = r.headers().get("range")?.to_str().ok()?;
    let end = v.rsplit('-').next()?.trim().parse::<u64>().ok()?;
    Some(end + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_map_to_generation_match() {
        assert_eq!(GenCond::None.query(), None);
        assert_eq!(
            GenCond::Absent.query(),
            Some(("ifGenerationMatch", "0".to_string()))
        );
        assert_eq!(
            GenCond::Generation("7".into()).query(),
            Some(("ifGenerationMatch", "7".to_string()))
        );
    }
}
