//! S3 multipart uploads over the REST API (large uploads, streamed writes, appends).
//!
//! Why not `object_store`'s multipart upload: it has no part copy, so an append would send
//! the old bytes again, and its commit carries no condition, so a write landing between a
//! HEAD check and the commit was overwritten. Here CompleteMultipartUpload carries `If-Match` / `If-None-Match: *` (AWS checks
//! them atomically with the commit) and the copied parts carry `x-amz-copy-source-if-match`,
//! so the old bytes are those of the version that was appended to. Stores that ignore those
//! headers (moto ignores `If-Match` on the commit and the copy condition) are covered by a
//! HEAD check just before the commit, as for every other S3 multipart commit. Nothing is
//! visible before the commit; a failed upload is aborted.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use futures::future::BoxFuture;
use reqwest::Method;

use crate::api::{AppendBase, PartUpload, Precondition, PutMeta, PutOutcome, Result};
use crate::checksum::{self, Md5};
use crate::error::BackendError;
use crate::rest::{Rest, encode_segment, header, header_refs, keyed, status_error};

/// S3's smallest part (all but the last part of an upload).
pub const MIN_PART: u64 = 5 * 1024 * 1024;
/// Largest part UploadPartCopy is asked to copy (S3 allows 5 GiB).
const MAX_COPY_PART: u64 = 4 * 1024 * 1024 * 1024;

/// The REST client and bucket URL of one mount's S3 store.
pub struct S3Parts {
    rest: Rest,
    bucket_url: String,
    bucket: String,
    /// `store.s3.conditional-writes`: false for stores that reject conditional headers; the
    /// commit is then unconditional.
    conditional: bool,
    /// Uploads carry their MD5 (`write.checksums`).
    checked: bool,
}

impl std::fmt::Debug for S3Parts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Parts")
            .field("bucket_url", &self.bucket_url)
            .finish()
    }
}

fn encoded_key(key: &str) -> String {
    key.split('/')
        .map(encode_segment)
        .collect::<Vec<_>>()
        .join("/")
}

/// The text of the first `<tag>` element of an S3 XML reply.
fn xml_field(xml: &str, tag: &str) -> Option<String> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&format!("</{tag}>"))?;
    Some(
        xml[start..end]
            .replace("&quot;", "\"")
            .replace("&#34;", "\"")
            .replace("&amp;", "&"),
    )
}

/// An error S3 returned inside a 200 reply (CompleteMultipartUpload and UploadPartCopy can).
fn embedded_error(what: &str, key: &str, xml: &str) -> Option<BackendError> {
    if !xml.contains("<Error>") {
        return None;
    }
    let code = xml_field(xml, "Code").unwrap_or_default();
    let msg = format!(
        "{what}: {code}: {}",
        xml_field(xml, "Message").unwrap_or_default()
    );
    Some(match code.as_str() {
        "PreconditionFailed" => BackendError::PreconditionFailed { key: key.into() },
        "NoSuchKey" => BackendError::NotFound { key: key.into() },
        "InternalError" | "SlowDown" | "ServiceUnavailable" => BackendError::Unavailable(msg),
        _ => BackendError::Other(msg),
    })
}

/// The XML body of CompleteMultipartUpload.
fn complete_xml(parts: &BTreeMap<u32, String>) -> String {
    let mut body = String::from("<CompleteMultipartUpload>");
    for (n, etag) in parts {
        let etag = etag.replace('&', "&amp;").replace('<', "&lt;");
        body.push_str(&format!(
            "<Part><PartNumber>{n}</PartNumber><ETag>{etag}</ETag></Part>"
        ));
    }
    body.push_str("</CompleteMultipartUpload>");
    body
}

/// Copy parts covering `[0, len)`: as few as S3 allows, of equal size (so none but the last
/// is under [`MIN_PART`] when `len` is at least that).
fn copy_ranges(len: u64) -> Vec<std::ops::Range<u64>> {
    let n = len.div_ceil(MAX_COPY_PART).max(1);
    let size = len.div_ceil(n);
    (0..n)
        .map(|i| i * size..((i + 1) * size).min(len))
        .filter(|r| !r.is_empty())
        .collect()
}

impl S3Parts {
    pub fn new(
        rest: Rest,
        bucket_url: &str,
        bucket: &str,
        (conditional, checked): (bool, bool),
    ) -> Arc<Self> {
        Arc::new(S3Parts {
            rest,
            bucket_url: bucket_url.trim_end_matches('/').to_string(),
            bucket: bucket.to_string(),
            conditional,
            checked,
        })
    }

    /// Start a multipart upload of `key` (created now, so the first part can go at once).
    pub async fn start(self: &Arc<Self>, key: &str, meta: &PutMeta) -> Result<Box<dyn PartUpload>> {
        Ok(self.new_upload(key, meta).await?)
    }

    async fn new_upload(self: &Arc<Self>, key: &str, meta: &PutMeta) -> Result<Box<S3Upload>> {
        let upload_id = self.create(key, meta).await?;
        Ok(Box::new(S3Upload {
            s3: self.clone(),
            key: key.to_string(),
            upload_id,
            next: 1,
            etags: Arc::default(),
            sums: Some(Arc::default()),
        }))
    }

    /// The URL of part `n` of upload `upload_id` of `key`.
    fn part_url(&self, key: &str, upload_id: &str, n: u32) -> String {
        format!(
            "{}?partNumber={n}&uploadId={}",
            self.object_url(key),
            encode_segment(upload_id)
        )
    }

    fn object_url(&self, key: &str) -> String {
        format!("{}/{}", self.bucket_url, encoded_key(key))
    }

    async fn reply_text(what: &str, r: reqwest::Response) -> Result<String> {
        r.text()
            .await
            .map_err(|e| BackendError::Unavailable(format!("{what}: reading the reply: {e}")))
    }

    /// CreateMultipartUpload carrying the object's metadata; the upload id.
    async fn create(&self, key: &str, meta: &PutMeta) -> Result<String> {
        let headers = meta_headers(meta);
        let headers = header_refs(&headers);
        let url = format!("{}?uploads", self.object_url(key));
        let what = "CreateMultipartUpload";
        let r = self
            .rest
            .send(what, Method::POST, &url, &headers, Bytes::new())
            .await?;
        if !r.status().is_success() {
            return Err(keyed(status_error(what, false, r).await, key));
        }
        let xml = Self::reply_text(what, r).await?;
        xml_field(&xml, "UploadId")
            .ok_or_else(|| BackendError::Other(format!("{what}: no UploadId in the reply")))
    }

    /// CopyObject of `from` (only while it has `etag`) to `to` with `meta` in place of the
    /// source's metadata and content type (`x-amz-metadata-directive: REPLACE`).
    pub async fn copy_replacing(
        &self,
        from: &str,
        etag: &str,
        to: &str,
        meta: &PutMeta,
    ) -> Result<PutOutcome> {
        let mut headers = meta_headers(meta);
        headers.push((
            "x-amz-copy-source".into(),
            format!("/{}/{}", self.bucket, encoded_key(from)),
        ));
        headers.push(("x-amz-copy-source-if-match".into(), etag.to_string()));
        headers.push(("x-amz-metadata-directive".into(), "REPLACE".into()));
        let headers = header_refs(&headers);
        let what = "CopyObject";
        let r = self
            .rest
            .send(
                what,
                Method::PUT,
                &self.object_url(to),
                &headers,
                Bytes::new(),
            )
            .await?;
        if !r.status().is_success() {
            return Err(keyed(status_error(what, false, r).await, from));
        }
        let xml = Self::reply_text(what, r).await?;
        if let Some(e) = embedded_error(what, from, &xml) {
            return Err(e);
        }
        Ok(PutOutcome {
            etag: xml_field(&xml, "ETag"),
        })
    }

    /// PutObject: `data` as the whole object `key` with `meta`, conditional on `cond` (when
    /// the store takes conditions), carrying its `Content-MD5`: S3 refuses bytes that do not
    /// match it (`BadDigest`), and the ETag of the reply, the MD5 of what was stored, is
    /// compared too (stores that do not check the header, moto among them). A refusal is
    /// sent once more.
    pub async fn put_object(
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
        let cond = if self.conditional {
            cond.clone()
        } else {
            Precondition::None
        };
        let url = self.object_url(key);
        let what = "PutObject";
        // A store that checks refuses damaged bytes (nothing lands); one that does not
        // stores them and its ETag tells: the bytes then go once more, replacing exactly
        // what was stored.
        let mut again = cond;
        for attempt in 0..2 {
            let mut headers = meta_headers(meta);
            headers.push(("content-length".into(), data.len().to_string()));
            if let Some(sum) = &sum {
                headers.push(("content-md5".into(), checksum::md5_base64(sum)));
            }
            match &again {
                Precondition::None => {}
                Precondition::IfNotExists => headers.push(("if-none-match".into(), "*".into())),
                Precondition::IfMatch(e) => headers.push(("if-match".into(), e.clone())),
            }
            let headers = header_refs(&headers);
            let r = self
                .rest
                .send(what, Method::PUT, &url, &headers, data.clone())
                .await?;
            let r = if r.status().is_success() {
                let etag = header(&r, "etag");
                let stored = etag_md5(&r, etag.as_deref());
                let checked = match &sum {
                    Some(sum) => checksum::compare(key, what, sum, stored.as_ref()),
                    None => Ok(()),
                };
                match checked {
                    Ok(()) => Ok(PutOutcome { etag }),
                    Err(e) => {
                        if let (Some(etag), true) = (etag, self.conditional) {
                            again = Precondition::IfMatch(etag);
                        }
                        Err(e)
                    }
                }
            } else {
                let create = matches!(again, Precondition::IfNotExists);
                match keyed(status_error(what, create, r).await, key) {
                    // If-Match on a missing key: nothing has the ETag asked for.
                    BackendError::NotFound { .. } if matches!(again, Precondition::IfMatch(_)) => {
                        Err(BackendError::PreconditionFailed { key: key.into() })
                    }
                    e => Err(e),
                }
            };
            match checksum::note(key, what, r) {
                Err(BackendError::ChecksumMismatch { .. }) if attempt == 0 => {
                    tracing::warn!(
                        key,
                        "the store refused the upload's bytes as damaged; sending them once more"
                    );
                }
                Err(e @ BackendError::ChecksumMismatch { .. }) => {
                    tracing::error!(
                        key,
                        "the store refused the upload's bytes twice as damaged; the write fails"
                    );
                    if let Precondition::IfMatch(etag) = &again {
                        self.remove_damaged(key, etag).await;
                    }
                    return Err(e);
                }
                r => return r,
            }
        }
        Err(BackendError::ChecksumMismatch { key: key.into() })
    }

    /// Remove the damaged bytes a store that does not check stored at `key` (only while they
    /// are the version `etag`), so nobody reads them as the file. Best effort: logged.
    async fn remove_damaged(&self, key: &str, etag: &str) {
        let what = "DeleteObject (damaged upload)";
        let headers = [("if-match", etag.to_string())];
        let r = self
            .rest
            .send(
                what,
                Method::DELETE,
                &self.object_url(key),
                &headers,
                Bytes::new(),
            )
            .await;
        match r {
            Ok(r) if r.status().is_success() => {
                tracing::warn!(key, "removed the damaged object the store kept");
            }
            Ok(r) => {
                let e = status_error(what, false, r).await;
                tracing::error!(key, error = %e, "could not remove the damaged object the store kept");
            }
            Err(e) => {
                tracing::error!(key, error = %e, "could not remove the damaged object the store kept");
            }
        }
    }

    /// The ETag of `key` now (`None`: no such object).
    async fn etag_now(&self, key: &str) -> Result<Option<String>> {
        let r = self
            .rest
            .send(
                "HEAD object",
                Method::HEAD,
                &self.object_url(key),
                &[],
                Bytes::new(),
            )
            .await?;
        match r.status().as_u16() {
            404 => Ok(None),
            s if (200..300).contains(&s) => Ok(header(&r, "etag")),
            _ => Err(keyed(status_error("HEAD object", false, r).await, key)),
        }
    }

    /// Append by part copy: a multipart upload whose first parts are copied from the object
    /// at `base` inside the store and whose other parts hold `file` from `base.len` on. `None`
    /// when the old bytes are fewer than S3's smallest part (the caller uploads it whole:
    /// that much is cheap to send again).
    pub async fn append(
        self: &Arc<Self>,
        key: &str,
        base: &AppendBase,
        file: &Path,
        meta: &PutMeta,
        cond: &Precondition,
        (part, in_flight): (usize, usize),
    ) -> Result<Option<PutOutcome>> {
        if base.len < MIN_PART {
            return Ok(None);
        }
        let mut up = self.new_upload(key, meta).await?;
        up.sums = None;
        for range in copy_ranges(base.len) {
            let n = up.next;
            match self
                .copy_part(key, &up.upload_id, n, range, &base.etag)
                .await
            {
                Ok(etag) => up.record(n, etag),
                Err(e) => {
                    let _ = PartUpload::abort(up).await;
                    return Err(e);
                }
            }
            up.next += 1;
        }
        crate::upload::send_file_in_parts(
            up,
            key,
            (file, base.len, Bytes::new()),
            (part, in_flight),
            cond,
        )
        .await
        .map(Some)
    }

    /// UploadPartCopy of `range` of `key` (only while it has `etag`) as part `n`.
    async fn copy_part(
        &self,
        key: &str,
        upload_id: &str,
        n: u32,
        range: std::ops::Range<u64>,
        etag: &str,
    ) -> Result<String> {
        let url = self.part_url(key, upload_id, n);
        let headers = [
            (
                "x-amz-copy-source",
                format!("/{}/{}", self.bucket, encoded_key(key)),
            ),
            (
                "x-amz-copy-source-range",
                format!("bytes={}-{}", range.start, range.end - 1),
            ),
            ("x-amz-copy-source-if-match", etag.to_string()),
        ];
        let what = "UploadPartCopy";
        let r = self
            .rest
            .send(what, Method::PUT, &url, &headers, Bytes::new())
            .await?;
        if !r.status().is_success() {
            return Err(keyed(status_error(what, false, r).await, key));
        }
        let xml = Self::reply_text(what, r).await?;
        if let Some(e) = embedded_error(what, key, &xml) {
            return Err(e);
        }
        xml_field(&xml, "ETag")
            .ok_or_else(|| BackendError::Other(format!("{what}: no ETag in the reply")))
    }
}

/// One multipart upload in progress; parts are numbered in the order they are started.
struct S3Upload {
    s3: Arc<S3Parts>,
    key: String,
    upload_id: String,
    next: u32,
    /// ETag of every part that landed, by part number.
    etags: Arc<Mutex<BTreeMap<u32, String>>>,
    /// MD5 of every part sent, by part number (the multipart ETag is the MD5 of these);
    /// `None` once a part was copied inside the store.
    sums: Option<Arc<Mutex<BTreeMap<u32, Md5>>>>,
}

impl std::fmt::Debug for S3Upload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Upload")
            .field("key", &self.key)
            .field("parts", &(self.next - 1))
            .finish()
    }
}

impl S3Upload {
    fn record(&self, n: u32, etag: String) {
        if let Ok(mut m) = self.etags.lock() {
            m.insert(n, etag);
        }
    }

    fn upload_url(&self) -> String {
        format!(
            "{}?uploadId={}",
            self.s3.object_url(&self.key),
            encode_segment(&self.upload_id)
        )
    }
}

#[async_trait]
impl PartUpload for S3Upload {
    fn put_part(&mut self, data: Bytes) -> BoxFuture<'static, Result<()>> {
        let n = self.next;
        self.next += 1;
        let url = self.s3.part_url(&self.key, &self.upload_id, n);
        let (s3, key, etags) = (self.s3.clone(), self.key.clone(), self.etags.clone());
        let sums = self.sums.clone();
        Box::pin(async move {
            let sum = match s3.checked {
                true => Some(checksum::md5_async(&data).await?),
                false => None,
            };
            let mut headers = vec![("content-length", data.len().to_string())];
            if let Some(sum) = &sum {
                headers.push(("content-md5", checksum::md5_base64(sum)));
            }
            let what = "UploadPart";
            let etag = checksum::once_more(&key, what, || async {
                let r = s3
                    .rest
                    .send(what, Method::PUT, &url, &headers, data.clone())
                    .await?;
                if !r.status().is_success() {
                    return Err(keyed(status_error(what, false, r).await, &key));
                }
                let etag = header(&r, "etag").ok_or_else(|| {
                    BackendError::Other("UploadPart: no ETag in the reply".into())
                })?;
                if let Some(sum) = &sum {
                    checksum::compare(&key, what, sum, etag_md5(&r, Some(&etag)).as_ref())?;
                }
                Ok(etag)
            })
            .await?;
            if let Ok(mut m) = etags.lock() {
                m.insert(n, etag);
            }
            if let (Some(Ok(mut m)), Some(sum)) = (sums.as_ref().map(|s| s.lock()), sum) {
                m.insert(n, sum);
            }
            Ok(())
        })
    }

    async fn complete(self: Box<Self>, cond: &Precondition) -> Result<PutOutcome> {
        let parts = self.etags.lock().map(|m| m.clone()).unwrap_or_default();
        if parts.len() as u32 != self.next - 1 {
            let e = BackendError::Other("a part of the upload has no ETag".into());
            let _ = self.abort().await;
            return Err(e);
        }
        let cond = if self.s3.conditional {
            cond
        } else {
            &Precondition::None
        };
        // Stores that ignore the commit's condition: check it just before as well.
        let now = match self.s3.etag_now(&self.key).await {
            Ok(e) => e,
            Err(e) => {
                let _ = self.abort().await;
                return Err(e);
            }
        };
        let mut headers = vec![];
        let refused = match cond {
            Precondition::None => None,
            Precondition::IfNotExists => {
                headers.push(("if-none-match", "*".to_string()));
                now.is_some().then(|| BackendError::AlreadyExists {
                    key: self.key.clone(),
                })
            }
            Precondition::IfMatch(e) => {
                headers.push(("if-match", e.clone()));
                (now.as_deref() != Some(e.as_str())).then(|| BackendError::PreconditionFailed {
                    key: self.key.clone(),
                })
            }
        };
        if let Some(e) = refused {
            let _ = self.abort().await;
            return Err(e);
        }
        let what = "CompleteMultipartUpload";
        let body = Bytes::from(complete_xml(&parts));
        let r = self
            .s3
            .rest
            .send(what, Method::POST, &self.upload_url(), &headers, body)
            .await?;
        let create = matches!(cond, Precondition::IfNotExists);
        if !r.status().is_success() {
            return Err(keyed(status_error(what, create, r).await, &self.key));
        }
        let digest_etag = etag_md5(&r, Some(&"0".repeat(32))).is_some();
        let xml = S3Parts::reply_text(what, r).await?;
        if let Some(e) = embedded_error(what, &self.key, &xml) {
            return Err(e);
        }
        let etag = xml_field(&xml, "ETag");
        // The multipart ETag is the MD5 of the parts' MD5s: the parts the store put together
        // are the ones that were sent (where the ETag is such a digest at all).
        if let (Some(sums), Some(got), true) = (
            &self.sums,
            etag.as_deref().and_then(multipart_md5),
            digest_etag,
        ) {
            let sums = sums.lock().map(|m| m.clone()).unwrap_or_default();
            if sums.len() == parts.len() {
                let mut all = Vec::with_capacity(16 * sums.len());
                sums.values().for_each(|d| all.extend_from_slice(d));
                checksum::compare(&self.key, what, &checksum::md5(&all), Some(&got))?;
            }
        }
        Ok(PutOutcome { etag })
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        let r = self
            .s3
            .rest
            .send(
                "AbortMultipartUpload",
                Method::DELETE,
                &self.upload_url(),
                &[],
                Bytes::new(),
            )
            .await?;
        if r.status().is_success() || r.status().as_u16() == 404 {
            Ok(())
        } else {
            Err(keyed(
                status_error("AbortMultipartUpload", false, r).await,
                &self.key,
            ))
        }
    }
}

/// The MD5 an S3 ETag spells (single-part uploads and parts), unless the reply says the
/// object is encrypted with KMS or a customer key (its ETag is then no MD5).
fn etag_md5(r: &reqwest::Response, etag: Option<&str>) -> Option<Md5> {
    let encrypted = header(r, "x-amz-server-side-encryption").as_deref() == Some("aws:kms")
        || header(r, "x-amz-server-side-encryption-customer-algorithm").is_some();
    if encrypted {
        return None;
    }
    hex_md5(etag?.trim_matches('"'))
}

/// The digest of a multipart ETag (`"<hex>-<parts>"`).
fn multipart_md5(etag: &str) -> Option<Md5> {
    let (hex, _) = etag.trim_matches('"').split_once('-')?;
    hex_md5(hex)
}

fn hex_md5(s: &str) -> Option<Md5> {
    if s.len() != 32 {
        return None;
    }
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(s.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// `meta` as S3 request headers: `x-amz-meta-*` per user key, and the content type.
fn meta_headers(meta: &PutMeta) -> Vec<(String, String)> {
    let mut headers: Vec<(String, String)> = meta
        .metadata
        .iter()
        .map(|(k, v)| (format!("x-amz-meta-{k}"), v.clone()))
        .collect();
    if let Some(ct) = &meta.content_type {
        headers.push(("content-type".into(), ct.clone()));
    }
    headers
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_parts_are_few_and_none_but_the_last_is_small() {
        assert_eq!(copy_ranges(6 << 20), vec![0..6 << 20]);
        let len = MAX_COPY_PART + (1 << 20);
        let r = copy_ranges(len);
        assert_eq!(r.len(), 2);
        assert_eq!(r[0].start, 0);
        assert_eq!(r[1].end, len);
        assert_eq!(r[0].end, r[1].start);
        assert!(r.iter().all(|r| r.end - r.start >= MIN_PART));
    }

    #[test]
    fn replies_are_read_and_embedded_errors_found() {
        let ok = r#"<CopyPartResult><LastModified>x</LastModified><ETag>&quot;abc&quot;</ETag></CopyPartResult>"#;
        assert_eq!(xml_field(ok, "ETag").as_deref(), Some("\"abc\""));
        assert!(embedded_error("c", "k", ok).is_none());
        let bad = "<Error><Code>PreconditionFailed</Code><Message>no</Message></Error>";
        assert!(matches!(
            embedded_error("c", "k", bad),
            Some(BackendError::PreconditionFailed { .. })
        ));
        let parts = BTreeMap::from([(1, "\"a\"".to_string()), (2, "\"b\"".to_string())]);
        assert_eq!(
            complete_xml(&parts),
            "<CompleteMultipartUpload><Part><PartNumber>1</PartNumber><ETag>\"a\"</ETag></Part><Part><PartNumber>2</PartNumber><ETag>\"b\"</ETag></Part></CompleteMultipartUpload>"
        );
    }
}
