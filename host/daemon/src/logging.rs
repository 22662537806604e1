//! Logging setup: text or JSON lines to stderr or a file, filtered by config or `RUST_LOG`.
//!
//! Why the daemon owns it: where log lines go decides how fatal errors are reported (a
//! background daemon logs to a file, so its start-up failures must also reach stderr, see
//! [`logs_to_stderr`]), and object_store's retries are only visible as log events, counted
//! here for `/metrics`.

use std::io::IsTerminal;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LoggingConfig};

/// 0: logging not set up yet, 1: log lines go to stderr, 2: to a file.
static SINK: AtomicU8 = AtomicU8::new(0);

/// Whether log lines reach stderr (else fatal errors must be printed there separately).
pub fn logs_to_stderr() -> bool {
    SINK.load(Ordering::Relaxed) == 1
}

/// The log filter from `RUST_LOG` or `logging.level`.
pub fn filter(cfg: &LoggingConfig) -> Result<EnvFilter, String> {
    match std::env::var("RUST_LOG") {
        Ok(v) if !v.is_empty() => {
            return EnvFilter::try_new(&v).map_err(|e| format!("RUST_LOG {v:?}: {e}"));
        }
        // fuser warns "Unmount failed" whenever the mount was already removed by
        // `blobmount unmount`/`umount`, which is the normal way to stop; keep that out of
        // the default log unless fuser's level is set explicitly.
        _ if cfg.level.contains("fuser") => EnvFilter::try_new(&cfg.level),
        _ => EnvFilter::try_new(format!("{},fuser::mnt=error", cfg.level)),
    }
    .map_err(|e| format!("logging.level {:?}: {e}", cfg.level))
}

/// Store requests sent again, counted by the subscriber [`init`] installs (see
/// [`RetryCounter`]); handed to the metrics page.
pub type Retries = Arc<AtomicU64>;

pub fn init(cfg: &LoggingConfig) -> Result<Retries, String> {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = filter(cfg)?;
    SINK.store(if cfg.file.is_some() { 2 } else { 1 }, Ordering::Relaxed);
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none())
        .with_target(false);
    let fmt = match (&cfg.file, cfg.format) {
        (Some(path), fmt) => {
            let f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("logging.file {}: {e}", path.display()))?;
            let l = layer.with_writer(Mutex::new(f)).with_ansi(false);
            match fmt {
                LogFormat::Json => l.json().boxed(),
                LogFormat::Text => l.boxed(),
            }
        }
        (None, LogFormat::Json) => layer.with_writer(std::io::stderr).json().boxed(),
        (None, LogFormat::Text) => layer.with_writer(std::io::stderr).boxed(),
    };
    let retries = Retries::default();
    let result = tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(RetryCounter(retries.clone()).with_filter(retry_events()))
        .try_init();
    // A second init (tests) is harmless.
    let _ = result;
    Ok(retries)
}

/// The events logged when a request is sent again, one per retry, whatever the log level
/// (see [`RetryCounter`]): `object_store`'s HTTP client at INFO, our own REST clients at
/// TRACE on their own target.
fn retry_events() -> tracing_subscriber::filter::Targets {
    tracing_subscriber::filter::Targets::new()
        .with_target("object_store::client::retry", tracing::Level::INFO)
        .with_target(blobmount_backend::rest::RETRY_TARGET, tracing::Level::TRACE)
}

/// Counts store retries for `blobmount_backend_retries_total`: object_store offers no other
/// hook (its retry loop logs each retry at INFO), and our REST clients report theirs the
/// same way (`blobmount_backend::rest::note_retry`).
struct RetryCounter(Retries);

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for RetryCounter {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let m = event.metadata();
        if *m.level() == tracing::Level::INFO || m.target() == blobmount_backend::rest::RETRY_TARGET
        {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Retries are counted by the subscriber the mount installs, from both sources: our REST
    /// clients' events and object_store's INFO lines; other events are not.
    #[test]
    fn retries_of_both_clients_are_counted_by_the_subscriber() {
        let retries = init(&LoggingConfig::default()).unwrap();
        blobmount_backend::rest::note_retry("PUT a", 0);
        blobmount_backend::rest::note_retry("PUT a", 1);
        tracing::info!(target: "object_store::client::retry", "Encountered transient error");
        tracing::info!("not a retry");
        tracing::debug!(target: "object_store::client::retry", "not counted either");
        assert_eq!(retries.load(Ordering::Relaxed), 3);
    }
}
