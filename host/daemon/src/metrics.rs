//! The Prometheus text rendering of every metric the daemon exports (`/metrics`), one
//! function per section: FUSE operations, store calls, the core's caches and uploads, read
//! memory, the file cache, preload, policy plugins.
//!
//! Why hand-rendered: all values already live in atomics owned by the subsystems (core
//! caches, memory budget, file cache, backend counters) or in snapshots the mount hands up
//! (the FUSE adapter's [`FuseSnapshot`], the plugins' [`StatsSnapshot`]s); the exposition
//! format is a few lines per series, and a registry library would need each value copied
//! into its own types at every scrape. Histograms use fixed buckets (100 µs .. 10 s).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

use blobmount_backend::checksum::{READ_SUMS, UPLOAD_CHECKS};
use blobmount_backend::metered::BackendStats;
use blobmount_core::filecache::FileCache;
use blobmount_core::{Fs, PreloadProgress};
use blobmount_policy::{FAILURE_KINDS, Hook, StatsSnapshot, WasmPolicy};

use crate::opstats::{BOUNDS_US, FuseSnapshot};

/// What one scrape reads.
pub struct Sources<'a> {
    pub fuse: &'a FuseSnapshot,
    pub backend: &'a BackendStats,
    /// Store requests sent again.
    pub retries: u64,
    pub fs: &'a Fs,
    pub preload: Option<&'a PreloadProgress>,
    /// Counters of the configured plugins, by hook (`None`: no policy was loaded).
    pub plugins: Option<&'a [(Hook, StatsSnapshot)]>,
}

/// The counters of `policy`'s plugins now, for [`Sources::plugins`].
pub fn plugin_snapshot(policy: &WasmPolicy) -> Vec<(Hook, StatsSnapshot)> {
    Hook::ALL
        .into_iter()
        .filter_map(|h| policy.stats(h).map(|s| (h, s)))
        .collect()
}

/// The whole `/metrics` page.
pub fn render(s: &Sources) -> String {
    let mut o = Out(String::new());
    fuse_ops(&mut o, s.fuse);
    store_calls(&mut o, s.backend, s.retries);
    core(&mut o, s.fs);
    read_memory(&mut o, s.fs);
    if let Some(fc) = &s.fs.file_cache {
        file_cache(&mut o, fc);
    }
    if let Some(p) = s.preload {
        preload(&mut o, p);
    }
    if let Some(p) = s.plugins {
        plugins(&mut o, p);
    }
    if let Some(p) = crate::procstat::read_self() {
        process(&mut o, &p);
    }
    o.0
}

/// The daemon's CPU time and memory (the health monitor's figures), under the standard
/// Prometheus process-collector names.
fn process(o: &mut Out, p: &crate::procstat::ProcStat) {
    o.head(
        "process_cpu_seconds_total",
        COUNTER,
        "User and system CPU time of the daemon, in seconds (rate() gives the CPU use).",
    );
    let _ = writeln!(o.0, "process_cpu_seconds_total {}", p.cpu_secs);
    o.all(&[
        (
            "process_resident_memory_bytes",
            GAUGE,
            "Resident memory of the daemon (VmRSS).",
            p.rss_bytes,
        ),
        (
            "blobmount_process_peak_resident_memory_bytes",
            GAUGE,
            "Most resident memory the daemon has had (VmHWM).",
            p.peak_rss_bytes,
        ),
        (
            "blobmount_process_threads",
            GAUGE,
            "Threads of the daemon.",
            p.threads,
        ),
    ]);
}

struct Out(String);

impl Out {
    fn head(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.0, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn one(&mut self, name: &str, kind: &str, help: &str, v: u64) {
        self.head(name, kind, help);
        let _ = writeln!(self.0, "{name} {v}");
    }

    /// Single-value series in order: `(name, kind, help, value)`.
    fn all(&mut self, series: &[(&str, &str, &str, u64)]) {
        for (name, kind, help, v) in series {
            self.one(name, kind, help, *v);
        }
    }
}

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

const COUNTER: &str = "counter";
const GAUGE: &str = "gauge";

/// Latency histograms and errors by operation, bytes through the mount.
fn fuse_ops(o: &mut Out, f: &FuseSnapshot) {
    let h = "blobmount_fuse_op_duration_seconds";
    o.head(
        h,
        "histogram",
        "Time from a FUSE request to its reply, by operation.",
    );
    for (op, s) in f.ops.iter().filter(|(_, s)| s.count > 0) {
        let (name, count) = (op.name(), s.count);
        let mut cum = 0;
        for (b, c) in BOUNDS_US.iter().zip(&s.buckets) {
            cum += c;
            let le = *b as f64 / 1e6;
            let _ = writeln!(o.0, "{h}_bucket{{op=\"{name}\",le=\"{le}\"}} {cum}");
        }
        let _ = writeln!(o.0, "{h}_bucket{{op=\"{name}\",le=\"+Inf\"}} {count}");
        let sum = s.sum_us as f64 / 1e6;
        let _ = writeln!(
            o.0,
            "{h}_sum{{op=\"{name}\"}} {sum}\n{h}_count{{op=\"{name}\"}} {count}"
        );
    }
    let e = "blobmount_fuse_op_errors_total";
    o.head(
        e,
        COUNTER,
        "FUSE operations answered with an error, by operation.",
    );
    for (op, s) in f.ops.iter().filter(|(_, s)| s.errors > 0) {
        let _ = writeln!(o.0, "{e}{{op=\"{}\"}} {}", op.name(), s.errors);
    }
    o.all(&[
        (
            "blobmount_read_bytes_total",
            COUNTER,
            "Bytes returned to readers.",
            f.read_bytes,
        ),
        (
            "blobmount_written_bytes_total",
            COUNTER,
            "Bytes accepted from writers.",
            f.written_bytes,
        ),
    ]);
}

/// Calls to the store, their failures and retries, bytes moved.
fn store_calls(o: &mut Out, backend: &BackendStats, retries: u64) {
    let r = "blobmount_backend_requests_total";
    o.head(
        r,
        COUNTER,
        "Calls to the store by kind (each may be several HTTP requests when retried).",
    );
    for (kind, n) in backend.calls() {
        let _ = writeln!(o.0, "{r}{{call=\"{kind}\"}} {n}");
    }
    let r = "blobmount_backend_errors_total";
    o.head(
        r,
        COUNTER,
        "Failed calls to the store by error kind (after retries).",
    );
    for (kind, n) in backend.errors() {
        let _ = writeln!(o.0, "{r}{{error=\"{kind}\"}} {n}");
    }
    o.all(&[
        (
            "blobmount_backend_retries_total",
            COUNTER,
            "Store requests sent again after a transient failure (5xx, throttling, a dropped connection).",
            retries,
        ),
        (
            "blobmount_backend_read_bytes_total",
            COUNTER,
            "Bytes fetched from the store.",
            backend.bytes_read(),
        ),
        (
            "blobmount_backend_written_bytes_total",
            COUNTER,
            "Bytes the store accepted (whole objects and parts).",
            backend.bytes_written(),
        ),
    ]);
}

/// The core's metadata caches, uploads, recovery and inodes.
fn core(o: &mut Out, fs: &Fs) {
    let st = &fs.stats;
    o.all(&[
        ("blobmount_list_cache_hits_total", COUNTER, "Directory listings served from the list cache.", load(&st.list_cache_hits)),
        ("blobmount_list_cache_evictions_total", COUNTER, "Cached listings dropped to stay under cache.list-cache-max-entries.", load(&st.list_evictions)),
        ("blobmount_negative_cache_hits_total", COUNTER, "Lookups answered 'absent' without asking the store.", load(&st.negative_hits)),
        ("blobmount_small_dir_relists_total", COUNTER, "Expired one-page listings fetched again by a lookup instead of probing the name.", load(&st.relists)),
        ("blobmount_poll_rounds_total", COUNTER, "Rounds of the background poller (cache.poll-secs).", load(&st.poll_rounds)),
        ("blobmount_poll_changes_total", COUNTER, "Names the background poller found changed by another client (dropped from the caches).", load(&st.poll_changes)),
        ("blobmount_type_cache_hits_total", COUNTER, "Lookups that needed one HEAD thanks to a cached listing.", load(&st.type_cache_hits)),
        ("blobmount_name_conflicts_total", COUNTER, "Objects shown under another name because a directory has theirs.", load(&st.name_conflicts)),
        ("blobmount_upload_conflicts_total", COUNTER, "Uploads refused because the object changed remotely (data kept in conflicts/).", load(&st.upload_conflicts)),
        ("blobmount_upload_errors_total", COUNTER, "Uploads that failed (data stays staged or is kept in conflicts/).", load(&st.upload_errors)),
        ("blobmount_uploads_pending", GAUGE, "Open files with changes not yet in the store (uploaded at flush/fsync/close).", fs.pending_uploads() as u64),
        ("blobmount_upload_parts_total", COUNTER, "Parts sent by streaming uploads (while files were being written).", load(&st.parts_sent)),
        ("blobmount_upload_parts_read_back_total", COUNTER, "Streamed parts read back from the staging file because no memory was free to keep them as they were written.", load(&st.parts_read_back)),
        ("blobmount_streamed_uploads_total", COUNTER, "Files committed by a streaming upload (the others are uploaded whole at close).", load(&st.streamed_uploads)),
        ("blobmount_append_uploads_total", COUNTER, "Uploads that sent only the bytes appended to an existing object (the store kept the old ones).", load(&st.append_uploads)),
        ("blobmount_upload_checksums_verified_total", COUNTER, "Upload requests (whole objects, parts) whose MD5 the store accepted.", load(&UPLOAD_CHECKS.verified)),
        ("blobmount_upload_checksum_mismatches_total", COUNTER, "Upload requests the store refused as damaged (bytes not matching their MD5); each is sent once more.", load(&UPLOAD_CHECKS.mismatches)),
        ("blobmount_read_checksums_verified_total", COUNTER, "Handles (direct, block-cache) that read an object to the end in order and matched the store's checksum (CRC32C on GCS, MD5 elsewhere).", load(&st.reads_verified)),
        ("blobmount_checksum_failures_total", COUNTER, "Handles (direct, block-cache) whose bytes, read to the end, did not match the store's checksum (the last read failed with EIO).", load(&st.read_checksum_failures)),
        ("blobmount_read_checksums_unavailable_total", COUNTER, "Handles read to the end whose object has no checksum of the kind checked in the store (not checked).", load(&st.reads_unchecked)),
        ("blobmount_read_checksum_requests_total", COUNTER, "Requests made to learn the store's checksum for read checks (at most one per handle).", load(&st.read_verify_requests)),
    ]);
    let h = "blobmount_read_checksum_bytes_total";
    o.head(
        h,
        COUNTER,
        "Bytes hashed to verify reads (direct, block-cache, file cache), by checksum kind.",
    );
    let _ = writeln!(o.0, "{h}{{kind=\"md5\"}} {}", load(&READ_SUMS.md5_bytes));
    let _ = writeln!(
        o.0,
        "{h}{{kind=\"crc32c\"}} {}",
        load(&READ_SUMS.crc32c_bytes)
    );
    let r = "blobmount_recovered_writes_total";
    o.head(
        r,
        COUNTER,
        "Unfinished writes of a previous daemon found at start, by what was done with them.",
    );
    let _ = writeln!(
        o.0,
        "{r}{{outcome=\"uploaded\"}} {}",
        load(&st.recovered_uploaded)
    );
    let _ = writeln!(o.0, "{r}{{outcome=\"kept\"}} {}", load(&st.recovered_kept));
    o.one(
        "blobmount_inodes",
        GAUGE,
        "Inodes the kernel references (the stat cache).",
        fs.inode_count() as u64,
    );
}

/// The read-ahead memory budget and shared blocks.
fn read_memory(o: &mut Out, fs: &Fs) {
    o.all(&[
        (
            "blobmount_read_memory_bytes",
            GAUGE,
            "Bytes of read-ahead blocks held or in flight.",
            fs.budget.in_use(),
        ),
        (
            "blobmount_read_memory_peak_bytes",
            GAUGE,
            "Most read-ahead memory ever in use.",
            fs.budget.peak(),
        ),
        (
            "blobmount_read_memory_limit_bytes",
            GAUGE,
            "The read-ahead memory budget (cache.read-memory-mib).",
            fs.budget.total(),
        ),
        (
            "blobmount_block_shared_hits_total",
            COUNTER,
            "Read-ahead blocks one handle got from another handle's fetch.",
            load(&fs.pool.shared_hits),
        ),
    ]);
}

/// The file cache (`read.mode: file-cache` only).
fn file_cache(o: &mut Out, fc: &FileCache) {
    let s = &fc.stats;
    o.all(&[
        ("blobmount_file_cache_bytes", GAUGE, "Bytes of objects in the file cache.", fc.used_bytes()),
        ("blobmount_file_cache_limit_bytes", GAUGE, "cache.file-cache-max-mib in bytes.", fc.config().max_bytes),
        ("blobmount_file_cache_objects", GAUGE, "Objects in the file cache.", fc.len() as u64),
        ("blobmount_file_cache_hits_total", COUNTER, "Opens served by a cached (or downloading) copy.", load(&s.hits)),
        ("blobmount_file_cache_misses_total", COUNTER, "Opens that started a download.", load(&s.misses)),
        ("blobmount_file_cache_bypassed_total", COUNTER, "Opens of objects that did not fit (read through the block cache).", load(&s.bypassed)),
        ("blobmount_file_cache_range_reads_total", COUNTER, "Handles that read ranges of an uncached object without downloading it (cache.file-cache-range-reads: false).", load(&s.range_reads)),
        ("blobmount_file_cache_evictions_total", COUNTER, "Objects evicted from the file cache.", load(&s.evictions)),
        ("blobmount_file_cache_downloaded_bytes_total", COUNTER, "Bytes downloaded into the file cache.", load(&s.downloaded_bytes)),
        ("blobmount_file_cache_verified_total", COUNTER, "Downloads that matched the store's MD5.", load(&s.verified)),
        ("blobmount_file_cache_checksum_failures_total", COUNTER, "Downloads that did not match the store's MD5 (discarded).", load(&s.checksum_failures)),
        ("blobmount_file_cache_passthrough_opens_total", COUNTER, "Opens answered with kernel passthrough to the cached copy (cache.file-cache-passthrough).", load(&s.passthrough_opens)),
    ]);
}

/// Progress of the preload started with the mount.
fn preload(o: &mut Out, p: &PreloadProgress) {
    let (fd, ff, bd, bf) = p.snapshot();
    o.all(&[
        (
            "blobmount_preload_files_done",
            GAUGE,
            "Files preloaded.",
            fd,
        ),
        (
            "blobmount_preload_files_total",
            GAUGE,
            "Files found to preload so far.",
            ff,
        ),
        (
            "blobmount_preload_bytes_done",
            GAUGE,
            "Bytes preloaded.",
            bd,
        ),
        (
            "blobmount_preload_bytes_total",
            GAUGE,
            "Bytes found to preload so far.",
            bf,
        ),
        (
            "blobmount_preload_failed",
            GAUGE,
            "Files that could not be preloaded.",
            load(&p.failed),
        ),
        (
            "blobmount_preload_finished",
            GAUGE,
            "1 once the preload is over.",
            u64::from(p.finished.load(Ordering::Acquire)),
        ),
    ]);
}

/// One exported plugin counter: name, help, and how to read it from a snapshot.
type Series = (&'static str, &'static str, fn(&StatsSnapshot) -> f64);

/// Per-hook plugin counters.
fn plugins(o: &mut Out, stats: &[(Hook, StatsSnapshot)]) {
    let series: [Series; 9] = [
        (
            "blobmount_plugin_calls_total",
            "Calls into a policy plugin, by hook (answers from its cache not counted).",
            |s| s.calls as f64,
        ),
        (
            "blobmount_plugin_call_seconds_total",
            "Wall time spent in plugin calls (waiting for a free instance included), by hook; divide by calls for the mean.",
            |s| s.call_micros as f64 / 1e6,
        ),
        (
            "blobmount_plugin_fuel_used_total",
            "Fuel consumed by plugin calls (about one WebAssembly instruction each), by hook.",
            |s| s.fuel_used as f64,
        ),
        (
            "blobmount_plugin_cache_hits_total",
            "Policy answers served from the plugin answer cache, by hook.",
            |s| s.cache_hits as f64,
        ),
        (
            "blobmount_plugin_failures_total",
            "Plugin calls that trapped, ran out of fuel or time, hit the memory cap or returned garbage (answered by the failure mode), by hook.",
            |s| s.failures as f64,
        ),
        (
            "blobmount_plugin_instantiations_total",
            "Plugin instances created (at load, on overlap, and to replace failed ones), by hook.",
            |s| s.instantiations as f64,
        ),
        (
            "blobmount_plugin_breaker_open",
            "1 while the plugin's circuit breaker keeps it out (the failure mode answers), by hook.",
            |s| f64::from(u8::from(s.breaker_open)),
        ),
        (
            "blobmount_plugin_breaker_trips_total",
            "Times the plugin's circuit breaker opened after consecutive failures, by hook.",
            |s| s.breaker_trips as f64,
        ),
        (
            "blobmount_plugin_breaker_skipped_total",
            "Policy questions answered by the failure mode without calling the plugin because its breaker was open, by hook.",
            |s| s.breaker_skipped as f64,
        ),
    ];
    for (name, help, get) in series {
        let kind = if name.ends_with("_total") {
            COUNTER
        } else {
            GAUGE
        };
        o.head(name, kind, help);
        for (hook, s) in stats {
            let _ = writeln!(o.0, "{name}{{hook=\"{}\"}} {}", hook.name(), get(s));
        }
    }
    let name = "blobmount_plugin_failures_by_kind_total";
    o.head(
        name,
        COUNTER,
        "Failed plugin calls by hook and kind (out-of-fuel, deadline, memory, trap, bad-return, instantiate, busy).",
    );
    for (hook, s) in stats {
        for (kind, n) in FAILURE_KINDS.iter().zip(s.failures_by_kind) {
            if n > 0 {
                let _ = writeln!(
                    o.0,
                    "{name}{{hook=\"{}\",kind=\"{kind}\"}} {n}",
                    hook.name()
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The breaker's state is a gauge, its counts are counters, one line per hook.
    #[test]
    fn plugin_breaker_series() {
        let open = StatsSnapshot {
            calls: 5,
            failures: 5,
            breaker_open: true,
            breaker_trips: 1,
            breaker_skipped: 42,
            call_micros: 2_500_000,
            fuel_used: 123,
            failures_by_kind: [0, 4, 0, 1, 0, 0, 0],
            ..StatsSnapshot::default()
        };
        let mut o = Out(String::new());
        plugins(
            &mut o,
            &[(Hook::Filter, open), (Hook::Acl, StatsSnapshot::default())],
        );
        let page = o.0;
        for line in [
            "# TYPE blobmount_plugin_breaker_open gauge",
            "blobmount_plugin_breaker_open{hook=\"filter\"} 1",
            "blobmount_plugin_breaker_open{hook=\"acl\"} 0",
            "# TYPE blobmount_plugin_breaker_trips_total counter",
            "blobmount_plugin_breaker_trips_total{hook=\"filter\"} 1",
            "blobmount_plugin_breaker_skipped_total{hook=\"filter\"} 42",
            "blobmount_plugin_calls_total{hook=\"filter\"} 5",
            "blobmount_plugin_call_seconds_total{hook=\"filter\"} 2.5",
            "blobmount_plugin_fuel_used_total{hook=\"filter\"} 123",
            "blobmount_plugin_failures_by_kind_total{hook=\"filter\",kind=\"deadline\"} 4",
            "blobmount_plugin_failures_by_kind_total{hook=\"filter\",kind=\"trap\"} 1",
        ] {
            assert!(page.lines().any(|l| l == line), "no {line:?} in\n{page}");
        }
    }
}
