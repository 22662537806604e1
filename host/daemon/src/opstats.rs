//! The FUSE operation table ([`Op`]) and the adapter's counters for it ([`FuseStats`]):
//! per-operation counts, failures and latency histograms, and bytes read and written.
//!
//! Why owned by the mount and not a process global: the counters belong to one FUSE adapter;
//! the mount creates them, hands them to the adapter to fill, and the health endpoint reads
//! them as a [`FuseSnapshot`] (a plain copy) for `/metrics` and `/status`. Two mounts (or two
//! tests) in one process no longer share counts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the latency buckets, in microseconds (100 µs .. 10 s).
pub const BOUNDS_US: [u64; 11] = [
    100, 500, 1_000, 5_000, 10_000, 50_000, 100_000, 500_000, 1_000_000, 5_000_000, 10_000_000,
];

/// Defines [`Op`] with its metric label; the order is the order of `/metrics`.
macro_rules! ops {
    ($($op:ident => $name:literal,)*) => {
        /// A FUSE operation the adapter serves through the core and counts.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum Op { $($op,)* }

        impl Op {
            /// Every operation, in the order of `/metrics`.
            pub const ALL: [Op; [$($name,)*].len()] = [$(Op::$op,)*];

            /// The `op` label in `/metrics` and the `op` field of log lines.
            pub const fn name(self) -> &'static str {
                match self { $(Op::$op => $name,)* }
            }
        }
    };
}

ops! {
    Lookup => "lookup",
    Getattr => "getattr",
    Setattr => "setattr",
    Readlink => "readlink",
    Mknod => "mknod",
    Mkdir => "mkdir",
    Unlink => "unlink",
    Rmdir => "rmdir",
    Symlink => "symlink",
    Rename => "rename",
    Link => "link",
    Open => "open",
    Read => "read",
    Write => "write",
    Flush => "flush",
    Release => "release",
    Fsync => "fsync",
    Opendir => "opendir",
    Readdir => "readdir",
    Readdirplus => "readdirplus",
    Releasedir => "releasedir",
    Statfs => "statfs",
    Create => "create",
    Getxattr => "getxattr",
    Listxattr => "listxattr",
    Setxattr => "setxattr",
    Removexattr => "removexattr",
}

/// Live counters of one operation.
struct OpStats {
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

    fn snapshot(&self) -> OpSnapshot {
        OpSnapshot {
            count: load(&self.count),
            errors: load(&self.errors),
            sum_us: load(&self.sum_us),
            buckets: std::array::from_fn(|i| load(&self.buckets[i])),
        }
    }
}

fn load(a: &AtomicU64) -> u64 {
    a.load(Ordering::Relaxed)
}

/// Everything the FUSE adapter of one mount counts.
pub struct FuseStats {
    ops: [OpStats; Op::ALL.len()],
    read_bytes: AtomicU64,
    written_bytes: AtomicU64,
}

impl Default for FuseStats {
    fn default() -> Self {
        FuseStats {
            ops: [const { OpStats::new() }; Op::ALL.len()],
            read_bytes: AtomicU64::new(0),
            written_bytes: AtomicU64::new(0),
        }
    }
}

impl FuseStats {
    /// An operation finished after `took`.
    pub fn record(&self, op: Op, took: Duration) {
        let s = &self.ops[op as usize];
        let us = took.as_micros().min(u64::MAX as u128) as u64;
        s.count.fetch_add(1, Ordering::Relaxed);
        s.sum_us.fetch_add(us, Ordering::Relaxed);
        if let Some(i) = BOUNDS_US.iter().position(|b| us <= *b) {
            s.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// An operation failed (counted once per failure, whatever the errno).
    pub fn error(&self, op: Op) {
        self.ops[op as usize].errors.fetch_add(1, Ordering::Relaxed);
    }

    pub fn bytes_read(&self, n: usize) {
        self.read_bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    pub fn bytes_written(&self, n: usize) {
        self.written_bytes.fetch_add(n as u64, Ordering::Relaxed);
    }

    /// A copy of every counter now.
    pub fn snapshot(&self) -> FuseSnapshot {
        FuseSnapshot {
            ops: Op::ALL.map(|op| (op, self.ops[op as usize].snapshot())),
            read_bytes: load(&self.read_bytes),
            written_bytes: load(&self.written_bytes),
        }
    }
}

/// Counts and latency histogram of one operation at one moment (buckets not cumulative).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpSnapshot {
    pub count: u64,
    pub errors: u64,
    pub sum_us: u64,
    pub buckets: [u64; BOUNDS_US.len()],
}

/// The adapter's counters at one moment.
#[derive(Clone, Debug)]
pub struct FuseSnapshot {
    pub ops: [(Op, OpSnapshot); Op::ALL.len()],
    pub read_bytes: u64,
    pub written_bytes: u64,
}

impl FuseSnapshot {
    /// `(operations, failed operations, bytes read, bytes written)`.
    pub fn totals(&self) -> (u64, u64, u64, u64) {
        let n = self.ops.iter().map(|(_, s)| s.count).sum();
        let e = self.ops.iter().map(|(_, s)| s.errors).sum();
        (n, e, self.read_bytes, self.written_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_counts_land_in_their_bucket() {
        let f = FuseStats::default();
        f.record(Op::Read, Duration::from_micros(50));
        f.record(Op::Read, Duration::from_millis(3));
        f.record(Op::Lookup, Duration::from_secs(20));
        f.error(Op::Read);
        let snap = f.snapshot();
        let (_, read) = snap.ops[Op::Read as usize];
        assert_eq!(read.count, 2);
        assert_eq!(read.buckets[0], 1);
        assert_eq!(read.buckets[3], 1);
        // Beyond the last bound: counted, in no bucket (only in +Inf).
        let (_, lookup) = snap.ops[Op::Lookup as usize];
        assert_eq!((lookup.count, lookup.buckets.iter().sum::<u64>()), (1, 0));
        assert_eq!(snap.totals(), (3, 1, 0, 0));
    }

    #[test]
    fn two_adapters_do_not_share_counters() {
        let (a, b) = (FuseStats::default(), FuseStats::default());
        a.record(Op::Open, Duration::from_millis(1));
        assert_eq!(a.snapshot().totals().0, 1);
        assert_eq!(b.snapshot().totals().0, 0);
    }

    #[test]
    fn op_names_are_the_metric_labels() {
        let names: Vec<_> = Op::ALL.iter().map(|o| o.name()).collect();
        assert_eq!(names.len(), 27);
        assert_eq!(names[0], "lookup");
        assert_eq!(names[22], "create");
        assert_eq!(names[26], "removexattr");
        assert!(Op::ALL.iter().enumerate().all(|(i, o)| *o as usize == i));
    }
}
