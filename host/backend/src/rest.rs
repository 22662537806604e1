//! Signed REST requests with retries, for the calls `object_store` does not make the way we
//! need them (GCS JSON-API writes, delimiter listings that must accept every key, Azure block
//! commits, S3 multipart uploads), and the URL and reply helpers those calls share.
//!
//! Why here and not hand-rolled signing: the signers are `object_store`'s own public
//! authorizers (AWS SigV4, Azure SharedKey/SAS/bearer) and credential providers, so credentials
//! are resolved, cached and refreshed exactly as for every other request of the mount. This
//! module only adds the request loop: sign each attempt, retry connection errors, timeouts,
//! throttling and 5xx with exponential backoff and full jitter, bounded by the store's retry
//! configuration.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use object_store::aws::{AwsAuthorizer, AwsCredentialProvider};
use object_store::azure::{AzureAuthorizer, AzureCredentialProvider};
use object_store::client::HttpRequestBody;
use object_store::gcp::GcpCredentialProvider;
use reqwest::{Method, StatusCode};

use crate::api::Result;
use crate::config::RetryConfig;
use crate::error::{BackendError, names_auth_failure, names_missing_container, redact};

/// How requests are authenticated.
#[derive(Clone)]
pub enum Signer {
    /// No credentials (emulators, public buckets).
    Anonymous,
    /// OAuth bearer token (GCS).
    Gcp(GcpCredentialProvider),
    /// AWS Signature V4 for service `s3`.
    Aws {
        creds: AwsCredentialProvider,
        region: String,
    },
    /// Azure SharedKey, SAS or bearer token.
    Azure {
        creds: AzureCredentialProvider,
        account: String,
    },
}

/// A clone shares the connection pool, the credential cache and the retry budget.
#[derive(Clone)]
pub struct Rest {
    http: reqwest::Client,
    retry: RetryConfig,
    signer: Signer,
    budget: Arc<RetryBudget>,
}

/// Retries one store's requests may still make (a token bucket shared by all of them): a
/// retry spends a token, a success earns a tenth of one back, up to [`RetryBudget::CAP`].
/// While the store answers, every failure may be retried; when most requests fail (a store
/// down or drowning), retries stop at about one per ten successes instead of multiplying
/// each request by `max-retries + 1` (no retry storm).
#[derive(Debug)]
pub struct RetryBudget {
    /// Tokens, in tenths.
    tenths: std::sync::atomic::AtomicU64,
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget {
            tenths: std::sync::atomic::AtomicU64::new(Self::CAP * 10),
        }
    }
}

impl RetryBudget {
    /// Most tokens the bucket holds (a burst of failures retried at once).
    pub const CAP: u64 = 10;

    /// Spend a token for a retry; `false` (no retry) when none is left.
    pub fn try_spend(&self) -> bool {
        use std::sync::atomic::Ordering;
        self.tenths
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| t.checked_sub(10))
            .is_ok()
    }

    /// A request succeeded: earn a tenth of a token.
    pub fn earn(&self) {
        use std::sync::atomic::Ordering;
        let _ = self
            .tenths
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |t| {
                (t < Self::CAP * 10).then_some(t + 1)
            });
    }
}

impl std::fmt::Debug for Rest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Rest").finish_non_exhaustive()
    }
}

/// Record one request sent again after a transient failure. No counter lives here: the
/// event goes to target [`RETRY_TARGET`], where the daemon counts it together with the
/// retries `object_store`'s own client logs (`blobmount_backend_retries_total`), so the count
/// belongs to whoever installed the subscriber, not to the process.
pub fn note_retry(what: &str, attempt: usize) {
    tracing::trace!(target: "blobmount_backend::retry", what, attempt, "request sent again");
}

/// The tracing target of [`note_retry`]'s events.
pub const RETRY_TARGET: &str = "blobmount_backend::retry";

/// Statuses after which the same request may be sent again.
pub fn transient_status(s: StatusCode) -> bool {
    matches!(s.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}

impl Rest {
    pub fn new(retry: RetryConfig, signer: Signer) -> Result<Self> {
        let http = crate::connect::http_builder()
            .timeout(Duration::from_secs(retry.request_timeout_secs.max(1)))
            .connect_timeout(Duration::from_secs(retry.connect_timeout_secs.max(1)))
            .build()
            .map_err(|e| BackendError::Config(format!("http client: {e}")))?;
        Ok(Rest {
            http,
            retry,
            signer,
            budget: Arc::new(RetryBudget::default()),
        })
    }

    pub fn retry(&self) -> &RetryConfig {
        &self.retry
    }

    /// The URL of a blob of this account as an Azure copy source (`x-ms-copy-source`): with a
    /// SAS credential the source is read under the same SAS (appended to it), as
    /// `object_store` does for its copies; Shared Key and bearer tokens authorize the source
    /// of a copy within the account by the request's own signature.
    pub async fn azure_source_url(&self, url: &str) -> Result<String> {
        let Signer::Azure { creds, .. } = &self.signer else {
            return Ok(url.to_string());
        };
        let cred = creds
            .get_credential()
            .await
            .map_err(|e| BackendError::Unauthenticated(redact(&e.to_string())))?;
        match cred.as_ref() {
            object_store::azure::AzureCredential::SASToken(pairs) => {
                let mut u = url::Url::parse(url)
                    .map_err(|e| BackendError::Other(format!("copy source {url}: {e}")))?;
                u.query_pairs_mut()
                    .extend_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())));
                Ok(u.to_string())
            }
            object_store::azure::AzureCredential::AccessKey(_)
            | object_store::azure::AzureCredential::BearerToken(_) => Ok(url.to_string()),
        }
    }

    /// Build and sign one attempt.
    async fn signed(
        &self,
        method: &Method,
        url: &str,
        headers: &[(&str, String)],
        body: &Bytes,
    ) -> Result<reqwest::RequestBuilder> {
        let bad = |e: String| BackendError::Other(format!("building request for {url}: {e}"));
        let mut b = http::Request::builder().method(method.clone()).uri(url);
        for (k, v) in headers {
            b = b.header(*k, v.as_str());
        }
        let mut req = b
            .body(HttpRequestBody::from(body.clone()))
            .map_err(|e| bad(e.to_string()))?;
        let auth = |e: object_store::Error| BackendError::Unauthenticated(redact(&e.to_string()));
        match &self.signer {
            Signer::Anonymous => {}
            Signer::Gcp(c) => {
                let cred = c.get_credential().await.map_err(auth)?;
                let v = format!("Bearer {}", cred.bearer);
                req.headers_mut().insert(
                    http::header::AUTHORIZATION,
                    http::HeaderValue::from_str(&v).map_err(|e| bad(e.to_string()))?,
                );
            }
            Signer::Aws { creds, region } => {
                let cred = creds.get_credential().await.map_err(auth)?;
                // A body that carries its Content-MD5 (object and part uploads) is checked by
                // the store with it (and by us against the ETag): signing its SHA-256 as well
                // would hash every uploaded byte twice. Other bodies are signed.
                let has_md5 = headers
                    .iter()
                    .any(|(k, _)| k.eq_ignore_ascii_case("content-md5"));
                AwsAuthorizer::new(&cred, "s3", region)
                    .with_sign_payload(!has_md5)
                    .try_authorize(&mut req, None)
                    .map_err(auth)?;
            }
            Signer::Azure { creds, account } => {
                let cred = creds.get_credential().await.map_err(auth)?;
                AzureAuthorizer::new(&cred, account)
                    .try_authorize(&mut req)
                    .map_err(auth)?;
            }
        }
        let (parts, _) = req.into_parts();
        Ok(self
            .http
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body.clone()))
    }

    /// One signed attempt, no retry (for requests whose retry needs extra logic).
    pub async fn send_once(
        &self,
        method: Method,
        url: &str,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> std::result::Result<reqwest::Response, SendError> {
        let rb = self
            .signed(&method, url, headers, &body)
            .await
            .map_err(SendError::Backend)?;
        rb.send().await.map_err(SendError::Http)
    }

    /// Send with retries of transient failures. A final non-success status is returned as a
    /// response for the caller to classify; a final transport error becomes `Unavailable`.
    pub async fn send(
        &self,
        what: &str,
        method: Method,
        url: &str,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<reqwest::Response> {
        let started = Instant::now();
        let mut attempt = 0usize;
        loop {
            let outcome = self
                .send_once(method.clone(), url, headers, body.clone())
                .await;
            let retryable = match &outcome {
                Ok(r) => transient_status(r.status()),
                Err(SendError::Http(e)) => e.is_connect() || e.is_timeout() || e.is_request(),
                Err(SendError::Backend(_)) => false,
            };
            if matches!(&outcome, Ok(r) if r.status().is_success()) {
                self.budget.earn();
            }
            let budget_left =
                started.elapsed() < Duration::from_secs(self.retry.retry_timeout_secs);
            if !retryable
                || attempt >= self.retry.max_retries
                || !budget_left
                || !self.budget.try_spend()
            {
                return match outcome {
                    Ok(r) => Ok(r),
                    Err(SendError::Backend(e)) => Err(e),
                    Err(SendError::Http(e)) => {
                        Err(BackendError::Unavailable(redact(&format!("{what}: {e}"))))
                    }
                };
            }
            let delay = self.backoff(attempt);
            tracing::debug!(what, attempt, ?delay, "retrying request");
            note_retry(what, attempt);
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// GET `url` with retries and read its body; a final non-success answer is classified
    /// by [`status_error`] (for the listings of every dialect).
    pub async fn get_body(&self, what: &str, url: &str) -> Result<Bytes> {
        let r = self.send(what, Method::GET, url, &[], Bytes::new()).await?;
        if !r.status().is_success() {
            return Err(status_error(what, false, r).await);
        }
        r.bytes()
            .await
            .map_err(|e| BackendError::Unavailable(format!("{what}: reading reply: {e}")))
    }

    /// Exponential backoff with full jitter for retry number `attempt` (0-based).
    pub fn backoff(&self, attempt: usize) -> Duration {
        let cap = self
            .retry
            .initial_backoff_ms
            .saturating_mul(1u64 << attempt.min(20))
            .min(self.retry.max_backoff_ms.max(self.retry.initial_backoff_ms));
        Duration::from_millis(rand::random_range(0..=cap.max(1)))
    }
}

/// Failure of one attempt.
#[derive(Debug)]
pub enum SendError {
    Backend(BackendError),
    Http(reqwest::Error),
}

/// Classify a non-success reply. `create` says the request was conditional on absence, so a
/// 412 means "already exists".
pub async fn status_error(what: &str, create: bool, r: reqwest::Response) -> BackendError {
    let status = r.status();
    let body = r.text().await.unwrap_or_default();
    let body: String = body.chars().take(300).collect();
    let msg = redact(&format!("{what}: {status}: {body}"));
    let lower = body.to_ascii_lowercase();
    match status.as_u16() {
        404 if names_missing_container(&lower) => {
            BackendError::Config(format!("container/bucket does not exist: {msg}"))
        }
        404 => BackendError::NotFound { key: what.into() },
        400 if crate::checksum::names_mismatch(400, &lower) => {
            tracing::warn!(what, "{msg}");
            BackendError::ChecksumMismatch { key: what.into() }
        }
        409 if create => BackendError::AlreadyExists { key: what.into() },
        412 if create => BackendError::AlreadyExists { key: what.into() },
        412 => BackendError::PreconditionFailed { key: what.into() },
        401 => BackendError::Unauthenticated(msg),
        403 if names_auth_failure(&lower) => BackendError::Unauthenticated(msg),
        403 => BackendError::PermissionDenied(msg),
        // Not transient: the store does not do what the request asks (Backblaze B2 answers
        // a conditional PUT so: "A header you provided implies functionality that is not
        // implemented").
        501 => BackendError::NotSupported(format!(
            "{msg} (the store does not implement this request; for an S3-compatible store without conditional writes, such as Backblaze B2, set store.s3.conditional-writes: false)"
        )),
        _ if transient_status(status) || status.is_server_error() => BackendError::Unavailable(msg),
        _ => BackendError::Other(msg),
    }
}

/// Request headers built as owned pairs, as [`Rest::send`] takes them.
pub(crate) fn header_refs(h: &[(String, String)]) -> Vec<(&str, String)> {
    h.iter().map(|(k, v)| (k.as_str(), v.clone())).collect()
}

/// A header of a reply as text.
pub(crate) fn header(r: &reqwest::Response, name: &str) -> Option<String> {
    r.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// [`status_error`] names the call in `NotFound` / `PreconditionFailed` / `AlreadyExists`;
/// callers that know the key want it there instead.
pub(crate) fn keyed(e: BackendError, key: &str) -> BackendError {
    match e {
        BackendError::PreconditionFailed { .. } => {
            BackendError::PreconditionFailed { key: key.into() }
        }
        BackendError::AlreadyExists { .. } => BackendError::AlreadyExists { key: key.into() },
        BackendError::NotFound { .. } => BackendError::NotFound { key: key.into() },
        BackendError::ChecksumMismatch { .. } => BackendError::ChecksumMismatch { key: key.into() },
        BackendError::NotEmpty { .. } => BackendError::NotEmpty { key: key.into() },
        BackendError::KindMismatch { .. } => BackendError::KindMismatch { key: key.into() },
        e @ (BackendError::PermissionDenied(_)
        | BackendError::Unauthenticated(_)
        | BackendError::InvalidKey { .. }
        | BackendError::NotSupported(_)
        | BackendError::Unavailable(_)
        | BackendError::Config(_)
        | BackendError::LocalIo(_)
        | BackendError::LocalNoSpace(_)
        | BackendError::TooLarge { .. }
        | BackendError::Other(_)) => e,
    }
}

/// Percent-encode one path segment (the JSON API wants `/` in object names encoded).
pub fn encode_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Decode `%XX` escapes (SAS values, S3 `encoding-type=url`, Azure `Encoded="true"`). S3
/// listings also encode spaces as `+`. Malformed escapes are kept as they are.
pub(crate) fn percent_decode(s: &str, plus_is_space: bool) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push(h << 4 | l);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' if plus_is_space => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// The texts of every `<tag>` element of a small, flat XML answer (List Containers, STS),
/// unescaped.
pub(crate) fn xml_values(xml: &str, tag: &str) -> Vec<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find(&open) {
        let after = &rest[i + open.len()..];
        let Some(j) = after.find(&close) else { break };
        if let Ok(v) = quick_xml::escape::unescape(&after[..j]) {
            out.push(v.into_owned());
        }
        rest = &after[j + close.len()..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A store that does not implement a request (B2 and a conditional PUT) is told apart
    /// from one that is down, and the message says what to set.
    #[tokio::test]
    async fn not_implemented_is_not_transient_and_says_what_to_do() {
        let r = http::Response::builder()
            .status(501)
            .body("<Error><Code>NotImplemented</Code><Message>A header you provided implies functionality that is not implemented</Message></Error>")
            .unwrap();
        match status_error("PutObject", true, reqwest::Response::from(r)).await {
            BackendError::NotSupported(m) => {
                assert!(
                    m.contains("conditional-writes: false") && m.contains("NotImplemented"),
                    "{m}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(!transient_status(StatusCode::NOT_IMPLEMENTED));
    }

    /// A burst of failures spends the bucket and then retries stop; successes earn retries
    /// back at one per ten.
    #[test]
    fn the_retry_budget_stops_a_retry_storm() {
        let b = RetryBudget::default();
        let retried = (0..100).filter(|_| b.try_spend()).count();
        assert_eq!(retried as u64, RetryBudget::CAP);
        for _ in 0..30 {
            b.earn();
        }
        assert_eq!((0..100).filter(|_| b.try_spend()).count(), 3);
        for _ in 0..1000 {
            b.earn();
        }
        assert_eq!(
            (0..100).filter(|_| b.try_spend()).count() as u64,
            RetryBudget::CAP
        );
    }

    #[test]
    fn segments_are_fully_encoded() {
        assert_eq!(encode_segment("a/b c.txt"), "a%2Fb%20c.txt");
        assert_eq!(encode_segment("ü~"), "%C3%BC~");
    }

    #[test]
    fn escapes_are_decoded() {
        assert_eq!(percent_decode("a%2Fb%3D", false), "a/b=");
        assert_eq!(percent_decode("plain", false), "plain");
        assert_eq!(percent_decode("a+b%zz", true), "a b%zz");
    }

    #[test]
    fn keyed_errors_name_the_key() {
        let e = keyed(BackendError::NotFound { key: "GET".into() }, "k");
        assert_eq!(e, BackendError::NotFound { key: "k".into() });
        let e = keyed(BackendError::Other("x".into()), "k");
        assert_eq!(e, BackendError::Other("x".into()));
    }
}
