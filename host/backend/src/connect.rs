//! Start-up helpers every cloud backend uses to build its clients from [`StoreConfig`]:
//! settings from the config or the environment, `object_store`'s client and retry options
//! (timeouts, backoff), and the error for a client that cannot be built.
//!
//! Why a module of its own: each store module builds its own client (credentials and
//! endpoints differ per store), but the policy (which timeouts, which retries, how secrets
//! and environment variables combine) must be one, so that all stores behave alike.

use std::sync::RwLock;
use std::time::Duration;

use object_store::{BackoffConfig, ClientOptions, RetryConfig};

use crate::config::{Secret, StoreConfig};
use crate::error::{BackendError, redact};

/// The first of the environment variables `names` that is set and not empty.
pub(crate) fn env(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
}

/// A secret from the configuration, else from the environment.
pub(crate) fn secret_or_env(s: &Option<Secret>, names: &[&str]) -> Option<Secret> {
    s.clone().or_else(|| env(names).map(Secret::new))
}

/// The certificate authorities of `store.ca-file` (PEM), trusted by every HTTP client the
/// backends build from then on (the data plane's, our REST clients', the credential
/// endpoints'). Process-wide: one daemon mounts one store.
static EXTRA_ROOTS: RwLock<Vec<u8>> = RwLock::new(Vec::new());

/// Read `store.ca-file`, when set, and trust its certificates from now on. A missing file,
/// or one without a PEM certificate, is a configuration error naming it.
pub(crate) fn trust_ca_file(cfg: &StoreConfig) -> Result<(), BackendError> {
    let Some(path) = &cfg.ca_file else {
        return Ok(());
    };
    let bad =
        |why: String| BackendError::Config(format!("store.ca-file {}: {why}", path.display()));
    let pem = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
    match reqwest::Certificate::from_pem_bundle(&pem) {
        Ok(certs) if !certs.is_empty() => {}
        Ok(_) => return Err(bad("no PEM certificate in it".into())),
        Err(e) => return Err(bad(format!("not a PEM certificate bundle: {e}"))),
    }
    if let Ok(mut roots) = EXTRA_ROOTS.write() {
        *roots = pem;
    }
    Ok(())
}

/// The PEM bundle of [`trust_ca_file`] (empty: none).
fn extra_roots() -> Vec<u8> {
    EXTRA_ROOTS.read().map(|r| r.clone()).unwrap_or_default()
}

/// A `reqwest` client builder that trusts `store.ca-file` too: every client of ours that
/// talks to the store or a credential endpoint starts here.
pub(crate) fn http_builder() -> reqwest::ClientBuilder {
    let mut b = reqwest::Client::builder();
    for c in reqwest::Certificate::from_pem_bundle(&extra_roots()).unwrap_or_default() {
        b = b.add_root_certificate(c);
    }
    b
}

/// Request and connect timeouts from the configuration; plain HTTP allowed only when the
/// endpoint asks for it (emulators); `store.ca-file` trusted.
pub(crate) fn client_options(cfg: &StoreConfig, endpoint: Option<&str>) -> ClientOptions {
    let r = &cfg.retry;
    let mut o = ClientOptions::new()
        .with_timeout(Duration::from_secs(r.request_timeout_secs.max(1)))
        .with_connect_timeout(Duration::from_secs(r.connect_timeout_secs.max(1)));
    if endpoint.map(|e| e.starts_with("http://")).unwrap_or(false) {
        o = o.with_allow_http(true);
    }
    for c in object_store::Certificate::from_pem_bundle(&extra_roots()).unwrap_or_default() {
        o = o.with_root_certificate(c);
    }
    o
}

/// `object_store`'s retry policy from the configuration (exponential backoff with jitter).
pub(crate) fn retry_config(cfg: &StoreConfig) -> RetryConfig {
    let r = &cfg.retry;
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(r.initial_backoff_ms),
            max_backoff: Duration::from_millis(r.max_backoff_ms.max(r.initial_backoff_ms)),
            base: 2.0,
        },
        max_retries: r.max_retries,
        retry_timeout: Duration::from_secs(r.retry_timeout_secs),
    }
}

/// A client that could not be built: a configuration error, secrets removed.
pub(crate) fn build_err(e: object_store::Error) -> BackendError {
    BackendError::Config(redact(&e.to_string()))
}
