//! The health monitor (BlobFuse2's `health_monitor`): with `monitor.enabled`, the daemon
//! appends one JSON line per `monitor.interval-secs` to `monitor.output` with its CPU use,
//! memory, file-cache and block-cache use, bytes to and from the store and FUSE operation
//! counts. The file is rotated by size (`monitor.max-size-mib`, keeping `monitor.max-files`
//! older files as `FILE.1` … `FILE.N`), so it never grows without bound.
//!
//! Why inside the daemon and not a second process as BlobFuse2's `bfusemon`: every figure
//! already lives in the daemon's counters (the FUSE adapter's, the metered backend's, the
//! core's caches), so a sample is a few atomic loads and two small `/proc/self` reads, with
//! no pipe protocol to keep in step. The same figures are on `/metrics` (`crate::metrics`).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use blobmount_backend::metered::BackendStats;
use blobmount_core::Fs;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tracing::{info, warn};

use crate::logfile::LogFile;
use crate::opstats::FuseStats;
use crate::procstat::{self, ProcStat};

/// The parts of a report `monitor.disable` can leave out.
pub const PARTS: [&str; 6] = [
    "cpu",
    "memory",
    "file-cache",
    "block-cache",
    "network",
    "ops",
];

/// The `monitor` section.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct MonitorConfig {
    // What each key means: its row in `settings::SETTINGS` (also the schema description).
    pub enabled: bool,
    pub interval_secs: f64,
    pub output: Option<PathBuf>,
    pub disable: Vec<String>,
    pub max_size_mib: u64,
    pub max_files: usize,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        MonitorConfig {
            enabled: false,
            interval_secs: 10.0,
            output: None,
            disable: Vec::new(),
            max_size_mib: 10,
            max_files: 9,
        }
    }
}

impl MonitorConfig {
    /// Every name in `disable` is a part of the report.
    pub fn check(&self) -> Result<(), String> {
        for d in &self.disable {
            if !PARTS.contains(&d.as_str()) {
                return Err(format!(
                    "monitor.disable: unknown part {d:?} (one of {})",
                    PARTS.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// The report file: `output` with `{pid}` replaced by the daemon's PID, else
    /// `monitor.jsonl` in the cache directory.
    pub fn path(&self, cache_dir: &Path) -> PathBuf {
        match &self.output {
            Some(p) => PathBuf::from(
                p.to_string_lossy()
                    .replace("{pid}", &std::process::id().to_string()),
            ),
            None => cache_dir.join("monitor.jsonl"),
        }
    }
}

/// What BlobFuse2's `health_monitor` section becomes.
#[derive(Default)]
pub struct FromBlobfuse2 {
    /// Native keys and their values.
    pub keys: Vec<(&'static str, Value)>,
    /// The one interval: the BlobFuse2 key it came from and its seconds (clamped by the
    /// importer into `monitor.interval-secs`'s range).
    pub interval: Option<(&'static str, u64)>,
    pub warnings: Vec<String>,
}

/// BlobFuse2 polls its own counters and the process at two intervals; blobmount reports
/// both at one (the stats one when both are given). Its output directory gets BlobFuse2's
/// file name (as JSON lines). `enable-monitoring` is a plain key of the importer's table.
pub fn from_blobfuse2(section: Option<&Value>) -> Result<FromBlobfuse2, String> {
    let mut out = FromBlobfuse2::default();
    let Some(hm) = section else {
        return Ok(out);
    };
    let (stats, process) = (
        "health_monitor.stats-poll-interval-sec",
        "health_monitor.process-monitor-interval-sec",
    );
    let secs = |key: &'static str| -> Result<Option<u64>, String> {
        let Some(v) = hm
            .get(key.trim_start_matches("health_monitor."))
            .filter(|v| !v.is_null())
        else {
            return Ok(None);
        };
        v.as_u64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
            .map(Some)
            .ok_or_else(|| format!("blobfuse2 config {key}: expected a non-negative number"))
    };
    let (s, p) = (secs(stats)?, secs(process)?);
    if let (Some(a), Some(b)) = (s, p)
        && a != b
    {
        out.warnings.push(format!(
            "{process}: blobmount reports everything every monitor.interval-secs; using {stats} ({a} s)"
        ));
    }
    out.interval = s.map(|n| (stats, n)).or(p.map(|n| (process, n)));
    if let Some(dir) = hm.get("output-path").and_then(Value::as_str) {
        let file = Path::new(dir).join("monitor_{pid}.jsonl");
        out.keys
            .push(("monitor.output", Value::from(file.display().to_string())));
    }
    let list = match hm.get("monitor-disable-list") {
        Some(Value::Array(a)) => a,
        None | Some(Value::Null) => return Ok(out),
        Some(_) => {
            return Err(
                "blobfuse2 config health_monitor.monitor-disable-list: expected a list".into(),
            );
        }
    };
    let mut parts: Vec<Value> = Vec::new();
    for name in list.iter().filter_map(Value::as_str) {
        // BlobFuse2's component stats hold the operation counts and the bytes moved.
        let these: &[&str] = match name {
            "blobfuse_stats" => &["ops", "network"],
            "file_cache_monitor" => &["file-cache"],
            "cpu_profiler" => &["cpu"],
            "memory_profiler" => &["memory"],
            "network_profiler" => &["network"],
            other => {
                out.warnings.push(format!(
                    "health_monitor.monitor-disable-list: unknown monitor {other:?}; ignored"
                ));
                continue;
            }
        };
        for p in these {
            if !parts.iter().any(|x| x == p) {
                parts.push(Value::from(*p));
            }
        }
    }
    out.keys.push(("monitor.disable", Value::Array(parts)));
    Ok(out)
}

/// The counters a report reads.
#[derive(Clone)]
pub struct Sources {
    pub fs: Arc<Fs>,
    pub fuse: Arc<FuseStats>,
    pub backend: Arc<BackendStats>,
}

/// Start the monitor thread when `monitor.enabled`; the report file is opened (and its
/// directory created) here, so a path that cannot be written fails the mount.
pub fn start(cfg: &MonitorConfig, cache_dir: &Path, src: Sources) -> Result<(), String> {
    if !cfg.enabled {
        return Ok(());
    }
    let path = cfg.path(cache_dir);
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("monitor.output {}: {e}", dir.display()))?;
    }
    let max = crate::config::mib_bytes("monitor.max-size-mib", cfg.max_size_mib)
        .map_err(|e| e.to_string())?;
    let file = LogFile::open(&path, max, cfg.max_files)
        .map_err(|e| format!("monitor.output {}: {e}", path.display()))?;
    let interval = Duration::from_secs_f64(cfg.interval_secs.max(0.1));
    let disable = cfg.disable.clone();
    info!(file = %path.display(), interval_secs = cfg.interval_secs, "health monitor");
    std::thread::Builder::new()
        .name("blobmount-monitor".into())
        .spawn(move || {
            let mut sampler = Sampler::new(&disable, &src);
            let mut failed = false;
            loop {
                std::thread::sleep(interval);
                let mut line = sampler.sample(&src).to_string();
                line.push('\n');
                match file.write_line(line.as_bytes()) {
                    Ok(()) => failed = false,
                    // Logged once per run of failures (a full disk must not flood the log).
                    Err(e) if !failed => {
                        warn!(file = %file.path().display(), error = %e, "health monitor: cannot write its report");
                        failed = true;
                    }
                    Err(_) => {}
                }
            }
        })
        .map_err(|e| format!("health monitor thread: {e}"))?;
    Ok(())
}

/// Turns counters into report lines; keeps the previous sample for rates.
pub struct Sampler {
    disable: Vec<String>,
    prev: Option<(Instant, f64, u64, u64)>,
}

impl Sampler {
    /// A sampler whose first report covers the time from now.
    pub fn new(disable: &[String], src: &Sources) -> Self {
        let cpu = procstat::read_self().map_or(0.0, |p| p.cpu_secs);
        let (rx, tx) = (src.backend.bytes_read(), src.backend.bytes_written());
        Sampler {
            disable: disable.to_vec(),
            prev: Some((Instant::now(), cpu, rx, tx)),
        }
    }

    fn on(&self, part: &str) -> bool {
        !self.disable.iter().any(|d| d == part)
    }

    /// One report: the counters now, rates since the previous report (or since start).
    pub fn sample(&mut self, src: &Sources) -> Value {
        let proc = procstat::read_self().unwrap_or_default();
        let now = Instant::now();
        let (rx, tx) = (src.backend.bytes_read(), src.backend.bytes_written());
        let (since, cpu0, rx0, tx0) = self.prev.unwrap_or((now, 0.0, 0, 0));
        let secs = now.duration_since(since).as_secs_f64();
        self.prev = Some((now, proc.cpu_secs, rx, tx));
        let rate = |d: f64| if secs > 0.0 { d / secs } else { 0.0 };
        let mut o = Map::new();
        o.insert(
            "timestamp".into(),
            humantime::format_rfc3339_millis(SystemTime::now())
                .to_string()
                .into(),
        );
        o.insert("pid".into(), std::process::id().into());
        o.insert("interval_secs".into(), round(secs).into());
        if self.on("cpu") {
            o.insert("cpu".into(), cpu(&proc, cpu0, secs));
        }
        if self.on("memory") {
            o.insert(
                "memory".into(),
                json!({"rss_bytes": proc.rss_bytes, "peak_rss_bytes": proc.peak_rss_bytes, "threads": proc.threads}),
            );
        }
        if self.on("file-cache") {
            let fc = src.fs.file_cache.as_ref().map(|c| {
                let (used, max, st) = (c.used_bytes(), c.config().max_bytes, &c.stats);
                let n = |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed);
                json!({
                    "bytes": used, "files": c.len(), "limit_bytes": max, "percent": percent(used, max),
                    "hits": n(&st.hits), "misses": n(&st.misses), "evictions": n(&st.evictions),
                })
            });
            o.insert("file_cache".into(), fc.unwrap_or(Value::Null));
        }
        if self.on("block-cache") {
            let b = &src.fs.budget;
            o.insert(
                "block_cache".into(),
                json!({"bytes": b.in_use(), "peak_bytes": b.peak(), "limit_bytes": b.total(), "percent": percent(b.in_use(), b.total())}),
            );
        }
        if self.on("network") {
            let calls: u64 = src.backend.calls().iter().map(|(_, n)| n).sum();
            o.insert(
                "network".into(),
                json!({
                    "bytes_received": rx, "bytes_sent": tx,
                    "received_per_sec": round(rate(rx.saturating_sub(rx0) as f64)),
                    "sent_per_sec": round(rate(tx.saturating_sub(tx0) as f64)),
                    "store_calls": calls,
                }),
            );
        }
        if self.on("ops") {
            let snap = src.fuse.snapshot();
            let (n, errors, read, written) = snap.totals();
            let by_op: Map<String, Value> = snap
                .ops
                .iter()
                .filter(|(_, s)| s.count > 0)
                .map(|(op, s)| (op.name().to_string(), s.count.into()))
                .collect();
            o.insert(
                "ops".into(),
                json!({"total": n, "errors": errors, "read_bytes": read, "written_bytes": written, "by_op": by_op}),
            );
        }
        Value::Object(o)
    }
}

/// CPU use over the interval, in percent of one core (200 for two busy cores, as `top`).
fn cpu(p: &ProcStat, before: f64, secs: f64) -> Value {
    let pct = if secs > 0.0 {
        (p.cpu_secs - before).max(0.0) / secs * 100.0
    } else {
        0.0
    };
    json!({"percent": round(pct), "seconds": round(p.cpu_secs)})
}

fn percent(used: u64, of: u64) -> f64 {
    if of == 0 {
        0.0
    } else {
        round(used as f64 * 100.0 / of as f64)
    }
}

fn round(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_report_path_and_the_disabled_parts() {
        let mut c = MonitorConfig::default();
        assert_eq!(c.path(Path::new("/c")), Path::new("/c/monitor.jsonl"));
        c.output = Some("/var/log/bf/monitor_{pid}.jsonl".into());
        assert_eq!(
            c.path(Path::new("/c")),
            PathBuf::from(format!("/var/log/bf/monitor_{}.jsonl", std::process::id()))
        );
        c.disable = vec!["cpu".into(), "network".into()];
        assert!(c.check().is_ok());
        c.disable.push("disk".into());
        let e = c.check().unwrap_err();
        assert!(e.contains("\"disk\"") && e.contains("block-cache"), "{e}");
    }

    #[test]
    fn rates_and_percentages() {
        let p = ProcStat {
            cpu_secs: 3.0,
            ..ProcStat::default()
        };
        assert_eq!(cpu(&p, 2.0, 2.0)["percent"], 50.0);
        assert_eq!(cpu(&p, 2.0, 0.0)["percent"], 0.0);
        assert_eq!(percent(1, 3), 33.33);
        assert_eq!(percent(5, 0), 0.0);
    }
}
