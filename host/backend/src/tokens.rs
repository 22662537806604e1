//! What the three credential chains (`awscreds.rs`, `gcscreds.rs`, `azcreds.rs`) share: the
//! provider that caches a source's credentials and fetches them again before they expire
//! ([`Refreshing`]), and the small HTTP pieces every token endpoint needs.
//!
//! Why one place: each chain differs in where credentials come from, not in how they are
//! cached, refreshed and kept while a refresh fails; three copies of that would drift.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use object_store::CredentialProvider;
use tracing::warn;

use crate::error::BackendError;

/// Credentials are fetched again this long before they expire.
pub(crate) const REFRESH_MARGIN: Duration = Duration::from_secs(5 * 60);

/// A source of credentials of one store.
#[async_trait]
pub(crate) trait Fetch: Debug + Send + Sync + 'static {
    type Credential: Debug + Send + Sync + 'static;
    /// For messages: `AWS`, `GCS`, `Azure`.
    const NAME: &'static str;
    /// `object_store`'s name of the store, for its error.
    const STORE: &'static str;

    /// Fresh credentials and when they expire (`None`: never, static keys).
    async fn fetch(
        &self,
        http: &reqwest::Client,
    ) -> Result<(Self::Credential, Option<SystemTime>), String>;
}

/// The credentials last fetched and when they expire.
type Cached<C> = Option<(Arc<C>, Option<SystemTime>)>;

/// Caches the credentials of a source and fetches them again before they expire; while a
/// refresh fails, credentials that have not expired yet are still used.
pub(crate) struct Refreshing<S: Fetch> {
    source: S,
    http: reqwest::Client,
    cached: tokio::sync::Mutex<Cached<S::Credential>>,
}

impl<S: Fetch> Refreshing<S> {
    /// A provider for `source`, with the HTTP client its token requests use.
    pub(crate) fn new(source: S) -> Result<Refreshing<S>, BackendError> {
        // The TLS provider the whole crate uses (installed by `crate::open` too).
        let _ = rustls::crypto::ring::default_provider().install_default();
        let http = crate::connect::http_builder()
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| BackendError::Config(format!("credentials client: {e}")))?;
        Ok(Refreshing {
            source,
            http,
            cached: tokio::sync::Mutex::new(None),
        })
    }
}

impl<S: Fetch> Debug for Refreshing<S> {
    /// Names the source (whose own `Debug` never prints a secret).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} credentials from {:?}", S::NAME, self.source)
    }
}

#[async_trait]
impl<S: Fetch> CredentialProvider for Refreshing<S> {
    type Credential = S::Credential;

    async fn get_credential(&self) -> object_store::Result<Arc<S::Credential>> {
        let mut cached = self.cached.lock().await;
        let now = SystemTime::now();
        if let Some((c, expires)) = cached.as_ref()
            && expires.is_none_or(|e| now + REFRESH_MARGIN < e)
        {
            return Ok(c.clone());
        }
        match self.source.fetch(&self.http).await {
            Ok((c, expires)) => {
                let c = Arc::new(c);
                *cached = Some((c.clone(), expires));
                Ok(c)
            }
            Err(e) => match cached.as_ref() {
                Some((c, Some(expires))) if now < *expires => {
                    warn!(source = ?self.source, error = %e, "{} credentials: refresh failed; the current ones are still valid", S::NAME);
                    Ok(c.clone())
                }
                _ => Err(object_store::Error::Generic {
                    store: S::STORE,
                    source: format!("{} credentials from {:?}: {e}", S::NAME, self.source).into(),
                }),
            },
        }
    }
}

/// Send a token request; the body of a success, else the status and the start of the body.
pub(crate) async fn send(req: reqwest::RequestBuilder) -> Result<String, String> {
    let r = req.send().await.map_err(|e| e.to_string())?;
    let status = r.status();
    let body = r.text().await.map_err(|e| e.to_string())?;
    if status.is_success() {
        Ok(body)
    } else {
        Err(format!(
            "HTTP {status}: {}",
            body.chars().take(300).collect::<String>()
        ))
    }
}

/// A POST of `application/x-www-form-urlencoded` pairs.
pub(crate) fn post_form(
    http: &reqwest::Client,
    url: &str,
    pairs: &[(&str, &str)],
) -> reqwest::RequestBuilder {
    let body = pairs
        .iter()
        .map(|(k, v)| format!("{k}={}", urlencode(v)))
        .collect::<Vec<_>>()
        .join("&");
    http.post(url)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body(body)
}

/// Percent-encode everything but the unreserved characters.
pub(crate) fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// The host of a plain-HTTP `url` (without its port); `None` for any other URL.
pub(crate) fn http_host(url: &str) -> Option<&str> {
    let host = url.strip_prefix("http://")?.split('/').next()?;
    Some(match host.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => host,
    })
}
