//! Counters of the FUSE adapter and the Prometheus text rendering of every metric the
//! daemon exports (`/metrics`).
//!
//! Why hand-rendered: all values already live in atomics owned by the subsystems (core
//! caches, memory budget, file cache, backend counters); the exposition format is a few
//! lines per series, and a registry library would need each value copied into its own
//! types at every scrape. Histograms use fixed buckets (100 µs .. 10 s).

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use blobmount_policy::{Hook, StatsSnapshot, WasmPolicy};

use blobmount_backend::metered::BackendStats;
use blobmount_core::{Fs, PreloadProgress};

/// Upper bounds of the latency buckets, in microseconds.
const BOUNDS_US: [u64; 11] = [
    100, 500, 1_000, 5_000, 10_000, 50_000, 100_000, 500_000, 1_000_000, 5_000_000, 10_000_000,
];

/// FUSE operations that are timed, in the order of [`Fuse::ops`].
pub const OPS: [&str; 24] = [
    "lookup",
    "getattr",
    "setattr",
    "readlink",
    "mknod",
    "mkdir",
    "unlink",
    "rmdir",
    "symlink",
    "rename",
    "link",
    "open",
    "read",
    "write",
    "flush",
    "release",
    "fsync",
    "opendir",
    "readdir",
    "readdirplus",
    "releasedir",
    "statfs",
    "create",
    "other",
];

/// Counts and latency histogram of one operation.
pub struct OpStats {
    count: AtomicU64,
    errors: AtomicU64,
    sum_us: AtomicU64,
    buckets: [AtomicU64; BOUNDS_US.len()],
}

impl OpStats {
    const fn new() -> Self {
        OpStats {
            count: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
            buckets: [const { AtomicU64::new(0) }; BOUNDS_US.len()],
        }
    }
}

/// Everything the FUSE adapter counts.
pub struct Fuse {
    ops: [OpStats; OPS.len()],
    read_bytes: AtomicU64,
    written_bytes: AtomicU64,
}

/// The adapter's counters (one mount per process).
pub static FUSE: Fuse = Fuse {
    ops: [const { OpStats::new() }; OPS.len()],
    read_bytes: AtomicU64::new(0),
    written_bytes: AtomicU64::new(0),
};

impl Fuse {
    fn op(&self, name: &str) -> &OpStats {
        let i = OPS.iter().position(|o| *o == name).unwrap_or(OPS.len() - 1);
        &self.ops[i]
    }

    /// An operation finished after `took`.
    pub fn record(&self, op: &str, took: Duration) {
        let s = self.op(op);
        let us = took.as_micros().min(u64::MAX as u128) as u64;
        s.count.fetch_add(1, Ordering::Relaxed);
        s.sum_us.fetch_add(us, Ordering::Relaxed);
        if let Some(i) = BOUNDS_US.iter().position(|b| us <= *b) {
            s.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// An operation failed (counted once per failure, whatever the errno).
    pub fn error(&self, op: &str) {
        self.op(op).errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn bytes_read(&self, n: usize) {
        self.read_bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn bytes_written(&self, n: usize) {
        self.written_bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// `(operations, failed operations, bytes read, bytes written)`.
    pub fn totals(&self) -> (u64, u64, u64, u64) {
        let (mut n, mut e) = (0, 0);
        for s in &self.ops {
            n += s.count.load(Ordering::Relaxed);
            e += s.errors.load(Ordering::Relaxed);
        }
        (
            n,
            e,
            self.read_bytes.load(Ordering::Relaxed),
            self.written_bytes.load(Ordering::Relaxed),
        )
    }
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
}

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

/// The whole `/metrics` page.
pub fn render(fs: &Fs, backend: &BackendStats, preload: Option<&PreloadProgress>) -> String {
    let mut o = Out(String::new());
    let h = "blobmount_fuse_op_duration_seconds";
    o.head(
        h,
        "histogram",
        "Time from a FUSE request to its reply, by operation.",
    );
    for (name, s) in OPS.iter().zip(&FUSE.ops) {
        let count = load(&s.count);
        if count == 0 {
            continue;
        }
        let mut cum = 0;
        for (b, c) in BOUNDS_US.iter().zip(&s.buckets) {
            cum += load(c);
            let le = *b as f64 / 1e6;
            let _ = writeln!(o.0, "{h}_bucket{{op=\"{name}\",le=\"{le}\"}} {cum}");
        }
        let _ = writeln!(o.0, "{h}_bucket{{op=\"{name}\",le=\"+Inf\"}} {count}");
        let sum = load(&s.sum_us) as f64 / 1e6;
        let _ = writeln!(
            o.0,
            "{h}_sum{{op=\"{name}\"}} {sum}\n{h}_count{{op=\"{name}\"}} {count}"
        );
    }
    let e = "blobmount_fuse_op_errors_total";
    o.head(
        e,
        "counter",
        "FUSE operations answered with an error, by operation.",
    );
    for (name, s) in OPS.iter().zip(&FUSE.ops) {
        let n = load(&s.errors);
        if n > 0 {
            let _ = writeln!(o.0, "{e}{{op=\"{name}\"}} {n}");
        }
    }
    o.one(
        "blobmount_read_bytes_total",
        "counter",
        "Bytes returned to readers.",
        load(&FUSE.read_bytes),
    );
    o.one(
        "blobmount_written_bytes_total",
        "counter",
        "Bytes accepted from writers.",
        load(&FUSE.written_bytes),
    );

    let r = "blobmount_backend_requests_total";
    o.head(
        r,
        "counter",
        "Calls to the store by kind (each may be several HTTP requests when retried).",
    );
    for (kind, n) in backend.calls() {
        let _ = writeln!(o.0, "{r}{{call=\"{kind}\"}} {n}");
    }
    let r = "blobmount_backend_errors_total";
    o.head(
        r,
        "counter",
        "Failed calls to the store by error kind (after retries).",
    );
    for (kind, n) in backend.errors() {
        let _ = writeln!(o.0, "{r}{{error=\"{kind}\"}} {n}");
    }
    o.one(
        "blobmount_backend_retries_total",
        "counter",
        "Store requests sent again after a transient failure (5xx, throttling, a dropped connection).",
        blobmount_backend::rest::retries(),
    );
    o.one(
        "blobmount_backend_read_bytes_total",
        "counter",
        "Bytes fetched from the store.",
        backend.bytes_read(),
    );
    o.one(
        "blobmount_backend_written_bytes_total",
        "counter",
        "Bytes the store accepted (whole objects and parts).",
        backend.bytes_written(),
    );

    let st = &fs.stats;
    o.one(
        "blobmount_list_cache_hits_total",
        "counter",
        "Directory listings served from the list cache.",
        load(&st.list_cache_hits),
    );
    o.one(
        "blobmount_list_cache_evictions_total",
        "counter",
        "Cached listings dropped to stay under cache.list-cache-max-entries.",
        load(&st.list_evictions),
    );
    o.one(
        "blobmount_negative_cache_hits_total",
        "counter",
        "Lookups answered 'absent' without asking the store.",
        load(&st.negative_hits),
    );
    o.one(
        "blobmount_small_dir_relists_total",
        "counter",
        "Expired one-page listings fetched again by a lookup instead of probing the name.",
        load(&st.relists),
    );
    o.one(
        "blobmount_type_cache_hits_total",
        "counter",
        "Lookups that needed one HEAD thanks to a cached listing.",
        load(&st.type_cache_hits),
    );
    o.one(
        "blobmount_name_conflicts_total",
        "counter",
        "Objects shown under another name because a directory has theirs.",
        load(&st.name_conflicts),
    );
    o.one(
        "blobmount_upload_conflicts_total",
        "counter",
        "Uploads refused because the object changed remotely (data kept in conflicts/).",
        load(&st.upload_conflicts),
    );
    o.one(
        "blobmount_upload_errors_total",
        "counter",
        "Uploads that failed (data stays staged or is kept in conflicts/).",
        load(&st.upload_errors),
    );
    o.one(
        "blobmount_uploads_pending",
        "gauge",
        "Open files with changes not yet in the store (uploaded at flush/fsync/close).",
        fs.pending_uploads() as u64,
    );
    o.one(
        "blobmount_upload_parts_total",
        "counter",
        "Parts sent by streaming uploads (while files were being written).",
        load(&st.parts_sent),
    );
    o.one(
        "blobmount_upload_parts_read_back_total",
        "counter",
        "Streamed parts read back from the staging file because no memory was free to keep them as they were written.",
        load(&st.parts_read_back),
    );
    o.one(
        "blobmount_streamed_uploads_total",
        "counter",
        "Files committed by a streaming upload (the others are uploaded whole at close).",
        load(&st.streamed_uploads),
    );
    o.one(
        "blobmount_append_uploads_total",
        "counter",
        "Uploads that sent only the bytes appended to an existing object (the store kept the old ones).",
        load(&st.append_uploads),
    );
    let r = "blobmount_recovered_writes_total";
    o.head(
        r,
        "counter",
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
        "gauge",
        "Inodes the kernel references (the stat cache).",
        fs.inode_count() as u64,
    );

    o.one(
        "blobmount_read_memory_bytes",
        "gauge",
        "Bytes of read-ahead blocks held or in flight.",
        fs.budget.in_use(),
    );
    o.one(
        "blobmount_read_memory_peak_bytes",
        "gauge",
        "Most read-ahead memory ever in use.",
        fs.budget.peak(),
    );
    o.one(
        "blobmount_read_memory_limit_bytes",
        "gauge",
        "The read-ahead memory budget (cache.read-memory-mib).",
        fs.budget.total(),
    );
    o.one(
        "blobmount_block_shared_hits_total",
        "counter",
        "Read-ahead blocks one handle got from another handle's fetch.",
        load(&fs.pool.shared_hits),
    );

    if let Some(fc) = &fs.file_cache {
        let s = &fc.stats;
        o.one(
            "blobmount_file_cache_bytes",
            "gauge",
            "Bytes of objects in the file cache.",
            fc.used_bytes(),
        );
        o.one(
            "blobmount_file_cache_limit_bytes",
            "gauge",
            "cache.file-cache-max-mib in bytes.",
            fc.config().max_bytes,
        );
        o.one(
            "blobmount_file_cache_objects",
            "gauge",
            "Objects in the file cache.",
            fc.len() as u64,
        );
        o.one(
            "blobmount_file_cache_hits_total",
            "counter",
            "Opens served by a cached (or downloading) copy.",
            load(&s.hits),
        );
        o.one(
            "blobmount_file_cache_misses_total",
            "counter",
            "Opens that started a download.",
            load(&s.misses),
        );
        o.one(
            "blobmount_file_cache_bypassed_total",
            "counter",
            "Opens of objects that did not fit (read through the block cache).",
            load(&s.bypassed),
        );
        o.one(
            "blobmount_file_cache_range_reads_total",
            "counter",
            "Handles that read ranges of an uncached object without downloading it (cache.file-cache-range-reads: false).",
            load(&s.range_reads),
        );
        o.one(
            "blobmount_file_cache_evictions_total",
            "counter",
            "Objects evicted from the file cache.",
            load(&s.evictions),
        );
        o.one(
            "blobmount_file_cache_downloaded_bytes_total",
            "counter",
            "Bytes downloaded into the file cache.",
            load(&s.downloaded_bytes),
        );
        o.one(
            "blobmount_file_cache_verified_total",
            "counter",
            "Downloads that matched the store's MD5.",
            load(&s.verified),
        );
        o.one(
            "blobmount_file_cache_checksum_failures_total",
            "counter",
            "Downloads that did not match the store's MD5 (discarded).",
            load(&s.checksum_failures),
        );
    }
    if let Some(p) = preload {
        let (fd, ff, bd, bf) = p.snapshot();
        o.one(
            "blobmount_preload_files_done",
            "gauge",
            "Files preloaded.",
            fd,
        );
        o.one(
            "blobmount_preload_files_total",
            "gauge",
            "Files found to preload so far.",
            ff,
        );
        o.one(
            "blobmount_preload_bytes_done",
            "gauge",
            "Bytes preloaded.",
            bd,
        );
        o.one(
            "blobmount_preload_bytes_total",
            "gauge",
            "Bytes found to preload so far.",
            bf,
        );
        o.one(
            "blobmount_preload_failed",
            "gauge",
            "Files that could not be preloaded.",
            load(&p.failed),
        );
        o.one(
            "blobmount_preload_finished",
            "gauge",
            "1 once the preload is over.",
            u64::from(p.finished.load(Ordering::Acquire)),
        );
    }
    render_plugins(&mut o);
    o.0
}

/// The mount's policy, once loaded (its plugins' counters are exported).
static POLICY: OnceLock<Arc<WasmPolicy>> = OnceLock::new();

/// Export the counters of `policy`'s plugins (called once, at mount).
pub fn set_policy(policy: Arc<WasmPolicy>) {
    // A second mount in the same process keeps the first one's counters; there is none.
    let _ = POLICY.set(policy);
}

/// One exported plugin counter: name, help, and how to read it from a snapshot.
type Series = (&'static str, &'static str, fn(&StatsSnapshot) -> u64);

fn render_plugins(o: &mut Out) {
    let Some(p) = POLICY.get() else {
        return;
    };
    let series: [Series; 4] = [
        (
            "blobmount_plugin_calls_total",
            "Calls into a policy plugin, by hook (answers from its cache not counted).",
            |s| s.calls,
        ),
        (
            "blobmount_plugin_cache_hits_total",
            "Policy answers served from the plugin answer cache, by hook.",
            |s| s.cache_hits,
        ),
        (
            "blobmount_plugin_failures_total",
            "Plugin calls that trapped, ran out of fuel or time, hit the memory cap or returned garbage (answered by the failure mode), by hook.",
            |s| s.failures,
        ),
        (
            "blobmount_plugin_instantiations_total",
            "Plugin instances created (at load, on overlap, and to replace failed ones), by hook.",
            |s| s.instantiations,
        ),
    ];
    for (name, help, get) in series {
        o.head(name, "counter", help);
        for hook in Hook::ALL {
            if let Some(s) = p.stats(hook) {
                let _ = writeln!(o.0, "{name}{{hook=\"{}\"}} {}", hook.name(), get(&s));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let f = Fuse {
            ops: [const { OpStats::new() }; OPS.len()],
            read_bytes: AtomicU64::new(0),
            written_bytes: AtomicU64::new(0),
        };
        f.record("read", Duration::from_micros(50));
        f.record("read", Duration::from_millis(3));
        f.record("nonsense", Duration::from_secs(20));
        f.error("read");
        let s = f.op("read");
        assert_eq!(load(&s.count), 2);
        assert_eq!(load(&s.buckets[0]), 1);
        assert_eq!(load(&s.buckets[3]), 1);
        assert_eq!(load(&f.op("other").count), 1);
        assert_eq!(f.totals().1, 1);
    }
}
