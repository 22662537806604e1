//! Logging setup: text or JSON lines to stderr, a rotated file, syslog or the journal,
//! filtered by config or `RUST_LOG`; every line escaped and redacted on its way out
//! (`logsink`), and the file reopened on request ([`reopen`], SIGHUP).
//!
//! Why the daemon owns it: where log lines go decides how fatal errors are reported (a
//! background daemon logs to a file, so its start-up failures must also reach stderr, see
//! [`logs_to_stderr`]), and object_store's retries are only visible as log events, counted
//! here for `/metrics`.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogOutput, LoggingConfig, mib_bytes};
use crate::logfile::LogFile;
use crate::logsink::{Datagram, Escape, JOURNALD_SOCKET, Lines, Proto, SYSLOG_SOCKET, Sink};

/// 0: logging not set up yet, 1: log lines go to stderr, 2: elsewhere.
static SINK: AtomicU8 = AtomicU8::new(0);

/// The log file of this process, if lines go to one (for [`reopen`]).
static FILE: Mutex<Option<Arc<LogFile>>> = Mutex::new(None);

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("{0}")]
    Filter(String),
    #[error("logging.output: `file` needs logging.file")]
    NoFile,
    #[error("logging.file {}: {source}", path.display())]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("logging.socket {}: {source}", path.display())]
    Socket {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}")]
    Size(String),
}

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

/// The output `logging.output` resolves to (`auto` decided by `logging.file`).
fn output(cfg: &LoggingConfig) -> LogOutput {
    match (cfg.output, &cfg.file) {
        (LogOutput::Auto, Some(_)) | (LogOutput::File, _) => LogOutput::File,
        (LogOutput::Auto, None) | (LogOutput::Stderr, _) => LogOutput::Stderr,
        (LogOutput::Syslog, _) => LogOutput::Syslog,
        (LogOutput::Journald, _) => LogOutput::Journald,
    }
}

/// Where lines go, for the line a background mount prints (`log: ...`).
pub fn destination(cfg: &LoggingConfig) -> String {
    let socket = |default: &str| {
        cfg.socket
            .as_deref()
            .map_or_else(|| default.to_string(), |p| p.display().to_string())
    };
    match (output(cfg), &cfg.file) {
        (LogOutput::File, Some(p)) => p.display().to_string(),
        (LogOutput::Syslog, _) => format!("syslog {}", socket(SYSLOG_SOCKET)),
        (LogOutput::Journald, _) => format!("journald {}", socket(JOURNALD_SOCKET)),
        (LogOutput::Auto | LogOutput::Stderr | LogOutput::File, _) => "stderr".into(),
    }
}

/// Open where the lines go.
pub fn open_sink(cfg: &LoggingConfig) -> Result<Sink, LogError> {
    let socket = |default: &str, proto| {
        let path = cfg.socket.clone().unwrap_or_else(|| PathBuf::from(default));
        Datagram::open(&path, proto)
            .map(Sink::Socket)
            .map_err(|source| LogError::Socket { path, source })
    };
    match output(cfg) {
        LogOutput::Auto | LogOutput::Stderr => Ok(Sink::Stderr),
        LogOutput::File => {
            let path = cfg.file.as_deref().ok_or(LogError::NoFile)?;
            let max = mib_bytes("logging.max-size-mib", cfg.max_size_mib)
                .map_err(|e| LogError::Size(e.0))?;
            let f = LogFile::open(path, max, cfg.max_files).map_err(|source| LogError::File {
                path: path.to_path_buf(),
                source,
            })?;
            Ok(Sink::File(Arc::new(f)))
        }
        LogOutput::Syslog => socket(SYSLOG_SOCKET, Proto::Syslog),
        LogOutput::Journald => socket(JOURNALD_SOCKET, Proto::Journald),
    }
}

/// The formatting layer writing to `sink`: text lines escaped, JSON as is; no time stamp
/// for syslog and the journal (they stamp lines themselves), colours only on a terminal.
pub fn fmt_layer<S>(
    cfg: &LoggingConfig,
    sink: Arc<Sink>,
) -> Box<dyn tracing_subscriber::Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::Layer;
    let ansi = matches!(*sink, Sink::Stderr)
        && std::io::stderr().is_terminal()
        && std::env::var_os("NO_COLOR").is_none();
    let stamped = !matches!(*sink, Sink::Socket(_));
    let text = cfg.format == LogFormat::Text;
    // On a terminal ESC must pass for the colour codes the formatter writes itself;
    // tracing_subscriber escapes ANSI sequences in field values there.
    let escape = match (text, ansi) {
        (false, _) => Escape::None,
        (true, false) => Escape::All,
        (true, true) => Escape::KeepEsc,
    };
    let lines = Lines::new(sink, escape);
    let layer = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_target(false)
        .with_writer(lines);
    match (cfg.format, stamped) {
        (LogFormat::Json, true) => layer.json().boxed(),
        (LogFormat::Json, false) => layer.json().without_time().boxed(),
        (LogFormat::Text, true) => layer.boxed(),
        (LogFormat::Text, false) => layer.without_time().boxed(),
    }
}

pub fn init(cfg: &LoggingConfig) -> Result<Retries, LogError> {
    use tracing_subscriber::Layer;
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let filter = filter(cfg).map_err(LogError::Filter)?;
    let sink = Arc::new(open_sink(cfg)?);
    SINK.store(
        if matches!(*sink, Sink::Stderr) { 1 } else { 2 },
        Ordering::Relaxed,
    );
    if let Sink::File(f) = &*sink {
        *FILE.lock().unwrap_or_else(|p| p.into_inner()) = Some(f.clone());
    }
    let retries = Retries::default();
    let result = tracing_subscriber::registry()
        .with(fmt_layer(cfg, sink).with_filter(filter))
        .with(RetryCounter(retries.clone()).with_filter(retry_events()))
        .try_init();
    // A second init (tests) is harmless.
    let _ = result;
    Ok(retries)
}

/// Reopen the log file at its configured path (logrotate moved it away). Returns the path,
/// or `None` when lines do not go to a file.
pub fn reopen() -> Result<Option<PathBuf>, LogError> {
    let file = FILE.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let Some(f) = file else { return Ok(None) };
    f.reopen().map_err(|source| LogError::File {
        path: f.path().to_path_buf(),
        source,
    })?;
    Ok(Some(f.path().to_path_buf()))
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

    fn file_config(path: &std::path::Path, format: LogFormat) -> LoggingConfig {
        LoggingConfig {
            file: Some(path.to_path_buf()),
            format,
            ..LoggingConfig::default()
        }
    }

    /// Emit `event` through the layer the daemon builds for `cfg`, and give what reached
    /// the log file.
    fn logged(cfg: &LoggingConfig, event: impl FnOnce()) -> String {
        use tracing_subscriber::layer::SubscriberExt;
        let sink = Arc::new(open_sink(cfg).unwrap());
        let subscriber = tracing_subscriber::registry().with(fmt_layer(cfg, sink));
        tracing::subscriber::with_default(subscriber, event);
        std::fs::read_to_string(cfg.file.as_ref().unwrap()).unwrap()
    }

    /// A crafted object name cannot forge a log line: in the text format the newline (and
    /// every other control character) of a field or the message is escaped, whatever way
    /// the value was recorded; the JSON format stays valid JSON, one object per line.
    #[test]
    fn control_characters_in_fields_cannot_forge_lines() {
        let dir = tempfile::tempdir().unwrap();
        let name = "a\nFAKE LOG LINE\r\x1b[31mred";
        let emit = || {
            tracing::warn!(key = %name, "upload of {name} failed");
            tracing::info!(path = ?std::path::Path::new(name), "next");
        };
        let text = logged(
            &file_config(&dir.path().join("t.log"), LogFormat::Text),
            emit,
        );
        assert_eq!(text.lines().count(), 2, "{text}");
        assert!(!text.lines().any(|l| l.starts_with("FAKE")), "{text}");
        assert!(
            text.contains("key=a\\nFAKE LOG LINE\\r\\e[31mred"),
            "{text}"
        );
        assert!(!text.contains('\x1b') && !text.contains('\r'), "{text}");
        let json = logged(
            &file_config(&dir.path().join("j.log"), LogFormat::Json),
            emit,
        );
        assert_eq!(json.lines().count(), 2, "{json}");
        for l in json.lines() {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert!(v.to_string().contains("FAKE LOG LINE"));
        }
        assert!(
            json.lines()
                .next()
                .unwrap()
                .contains(r#""key":"a\nFAKE LOG LINE"#),
            "{json}"
        );
    }

    /// Syslog and journald lines reach a datagram socket bound here (not the system's),
    /// with the priority of their level and the text escaped.
    #[test]
    fn syslog_and_journald_outputs_send_datagrams() {
        use std::os::unix::net::UnixDatagram;
        let dir = tempfile::tempdir().unwrap();
        for (output, name) in [(LogOutput::Syslog, "log"), (LogOutput::Journald, "journal")] {
            let path = dir.path().join(name);
            let server = UnixDatagram::bind(&path).unwrap();
            server
                .set_read_timeout(Some(std::time::Duration::from_secs(5)))
                .unwrap();
            let cfg = LoggingConfig {
                output,
                socket: Some(path.clone()),
                ..LoggingConfig::default()
            };
            use tracing_subscriber::layer::SubscriberExt;
            let sink = Arc::new(open_sink(&cfg).unwrap());
            let subscriber = tracing_subscriber::registry().with(fmt_layer(&cfg, sink));
            tracing::subscriber::with_default(subscriber, || {
                tracing::error!(key = %"x\nFAKE", "store refused");
            });
            let mut buf = vec![0; 65536];
            let n = server.recv(&mut buf).unwrap();
            let got = String::from_utf8_lossy(&buf[..n]).into_owned();
            match output {
                LogOutput::Syslog => {
                    assert!(got.starts_with("<27>blobmount["), "{got}");
                    assert!(got.contains("store refused key=x\\nFAKE"), "{got}");
                    assert!(!got.contains('\n'), "{got}");
                    // No time stamp of ours: the syslog daemon adds its own.
                    assert!(!got.contains("Z "), "{got}");
                }
                _ => {
                    assert!(
                        got.starts_with("PRIORITY=3\nSYSLOG_IDENTIFIER=blobmount\n"),
                        "{got}"
                    );
                    assert!(got.contains("store refused key=x\\nFAKE"), "{got}");
                }
            }
        }
        // A socket that is not there is an error at start, naming the key.
        let cfg = LoggingConfig {
            output: LogOutput::Syslog,
            socket: Some(dir.path().join("none")),
            ..LoggingConfig::default()
        };
        let e = open_sink(&cfg).unwrap_err().to_string();
        assert!(e.starts_with("logging.socket "), "{e}");
    }
}
