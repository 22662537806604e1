//! Start-up helpers every cloud backend uses to build its clients from [`StoreConfig`]:
//! settings from the config or the environment, `object_store`'s client and retry options
//! (timeouts, backoff), and the error for a client that cannot be built.
//!
//! Why a module of its own: each store module builds its own client (credentials and
//! endpoints differ per store), but the policy (which timeouts, which retries, how secrets
//! and environment variables combine) must be one, so that all stores behave alike.

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

/// Request and connect timeouts from the configuration; plain HTTP allowed only when the
/// endpoint asks for it (emulators).
pub(crate) fn client_options(cfg: &StoreConfig, endpoint: Option<&str>) -> ClientOptions {
    let r = &cfg.retry;
    let mut o = ClientOptions::new()
        .with_timeout(Duration::from_secs(r.request_timeout_secs.max(1)))
        .with_connect_timeout(Duration::from_secs(r.connect_timeout_secs.max(1)));
    if endpoint.map(|e| e.starts_with("http://")).unwrap_or(false) {
        o = o.with_allow_http(true);
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
