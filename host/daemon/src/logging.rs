//! Logging setup: text or JSON lines to stderr or a file, filtered by config or `RUST_LOG`.
//!
//! Why the daemon owns it: where log lines go decides how fatal errors are reported (a
//! background daemon logs to a file, so its start-up failures must also reach stderr, see
//! [`logs_to_stderr`]), and object_store's retries are only visible as log events, counted
//! here for `/metrics`.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};

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

pub fn init(cfg: &LoggingConfig) -> Result<(), String> {
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
    let result = tracing_subscriber::registry()
        .with(fmt.with_filter(filter))
        .with(RetryCounter.with_filter(retry_events()))
        .try_init();
    // A second init (tests) is harmless.
    let _ = result;
    Ok(())
}

/// The events `object_store`'s HTTP client logs when it sends a request again: one per
/// retry, whatever the log level (see [`RetryCounter`]).
fn retry_events() -> tracing_subscriber::filter::Targets {
    tracing_subscriber::filter::Targets::new()
        .with_target("object_store::client::retry", tracing::Level::INFO)
}

/// Counts `object_store`'s retries into `blobmount_backend::rest::retries` (our own REST
/// client counts its retries there directly), for `blobmount_backend_retries_total`.
/// object_store offers no other hook; its retry loop logs each retry at INFO.
struct RetryCounter;

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for RetryCounter {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if *event.metadata().level() == tracing::Level::INFO {
            blobmount_backend::rest::count_retry();
        }
    }
}
