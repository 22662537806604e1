//! How many policy questions each file-system operation asks.
//!
//! Why this matters: with a plugin every question is a WASM call (answers may be cached, but
//! a plugin that fails or is slow pays its deadline on every one). A question asked twice for
//! one operation doubles what a slow plugin costs; with the test plugin burning its 200 ms
//! deadline, 210 small files took over 14 minutes. These tests count the questions the core
//! asks (through a counting wrapper over the built-in policy, no answer cache) for the
//! operations a FUSE mount sees, done the way the kernel does them, and hold each count to
//! the minimum the operation needs.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use blobmount_backend::memory::MemoryBackend;
use blobmount_core::{Caller, Fs, FsConfig, ROOT_INO};
use blobmount_policy_api::{
    AclDecision, Builtin, ConflictEntry, ConflictKind, Consistency, ObjectInfo, Policy, Resolution,
    Verdict,
};

mod common;
use common::put;

/// Questions asked, by hook.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
struct Asked {
    filter: usize,
    consistency: usize,
    acl: usize,
    conflict: usize,
}

impl Asked {
    fn total(&self) -> usize {
        self.filter + self.consistency + self.acl + self.conflict
    }
}

/// The built-in policy, counting every question (a batch counts once per object: a plugin
/// is called once per batch, but its budget scales with the objects).
struct CountingPolicy {
    inner: Builtin,
    filter: AtomicUsize,
    consistency: AtomicUsize,
    acl: AtomicUsize,
    conflict: AtomicUsize,
}

impl CountingPolicy {
    fn take(&self) -> Asked {
        Asked {
            filter: self.filter.swap(0, Ordering::SeqCst),
            consistency: self.consistency.swap(0, Ordering::SeqCst),
            acl: self.acl.swap(0, Ordering::SeqCst),
            conflict: self.conflict.swap(0, Ordering::SeqCst),
        }
    }
}

impl Policy for CountingPolicy {
    fn filter(&self, obj: &ObjectInfo, now: i64) -> Verdict {
        self.filter.fetch_add(1, Ordering::SeqCst);
        self.inner.filter(obj, now)
    }

    fn filter_batch(&self, objs: &[ObjectInfo], now: i64) -> Vec<Verdict> {
        self.filter.fetch_add(objs.len(), Ordering::SeqCst);
        self.inner.filter_batch(objs, now)
    }

    fn resolve_conflict(
        &self,
        parent: &str,
        kind: ConflictKind,
        entries: &[ConflictEntry],
    ) -> Vec<Resolution> {
        self.conflict.fetch_add(1, Ordering::SeqCst);
        self.inner.resolve_conflict(parent, kind, entries)
    }

    fn consistency(&self, key: &str, is_dir: bool) -> Consistency {
        self.consistency.fetch_add(1, Ordering::SeqCst);
        self.inner.consistency(key, is_dir)
    }

    fn acl(&self, obj: &ObjectInfo, caller: blobmount_policy_api::Caller) -> AclDecision {
        self.acl.fetch_add(1, Ordering::SeqCst);
        self.inner.acl(obj, caller)
    }
}

const USER: Caller = Caller {
    uid: 1000,
    gid: 1000,
};

struct T {
    mem: Arc<MemoryBackend>,
    fs: Fs,
    policy: Arc<CountingPolicy>,
    _dir: tempfile::TempDir,
}

fn setup(listing_metadata: bool) -> T {
    let mem = Arc::new(MemoryBackend::new());
    mem.set_listing_metadata(listing_metadata);
    let dir = tempfile::tempdir().unwrap();
    let cfg = FsConfig::for_tests(dir.path().to_path_buf());
    let mut b = blobmount_core::policy::builtin_config_for(&cfg);
    // Everyone may do everything: the counts are about questions, not answers.
    b.acl.file_mode = 0o666;
    b.acl.dir_mode = 0o777;
    let policy = Arc::new(CountingPolicy {
        inner: Builtin::new(b).unwrap(),
        filter: AtomicUsize::new(0),
        consistency: AtomicUsize::new(0),
        acl: AtomicUsize::new(0),
        conflict: AtomicUsize::new(0),
    });
    let fs = Fs::with_policy(mem.clone(), cfg, policy.clone()).unwrap();
    T {
        mem,
        fs,
        policy,
        _dir: dir,
    }
}

const N: usize = 10;

/// The questions of each operation, in the order the kernel sends them for a create, a
/// `stat`, `ls -l`, `mv` and `rm` on a fresh mount, over a directory `d` of [`N`] files.
async fn questions(listing_metadata: bool) -> Vec<(&'static str, Asked)> {
    let t = setup(listing_metadata);
    for i in 0..N {
        put(&t.mem, &format!("d/f{i}"), b"x").await;
    }
    let fs = &t.fs;
    let me = fs.as_caller(USER);
    t.policy.take();
    let mut out = Vec::new();

    // create + write + close of a new file: the kernel looks the name up first (ENOENT).
    assert!(me.lookup(ROOT_INO, "new.txt").await.is_err());
    let (a, o) = me
        .create(ROOT_INO, "new.txt", 0o644, libc::O_WRONLY)
        .await
        .unwrap();
    assert_eq!(a.kind, blobmount_core::attr::Kind::File);
    fs.write(o.fh, 0, b"hello").await.unwrap();
    fs.flush(o.fh).await.unwrap();
    fs.release(o.fh).await.unwrap();
    out.push(("create+write+close", t.policy.take()));

    // lookup of a directory and a file the mount has not seen yet
    let d = me.lookup(ROOT_INO, "d").await.unwrap();
    out.push(("lookup dir", t.policy.take()));
    let f0 = me.lookup(d.ino, "f0").await.unwrap();
    out.push(("lookup file (lists d)", t.policy.take()));

    // stat of a known file (attributes still fresh)
    fs.getattr(f0.ino).await.unwrap();
    out.push(("stat", t.policy.take()));

    // `ls -l d`: opendir, readdirplus (a lookup per entry), releasedir
    let fh = me.opendir(d.ino).await.unwrap();
    let entries = me.readdir_plus(d.ino, fh, 0).unwrap();
    let names: Vec<String> = entries
        .iter()
        .map(|(_, e)| e.name.clone())
        .filter(|n| n != "." && n != "..")
        .collect();
    assert_eq!(names.len(), N);
    for r in fs.lookup_many(d.ino, &names).await {
        r.unwrap();
    }
    fs.releasedir(fh);
    out.push(("readdir+lookups of N", t.policy.take()));

    me.rename(d.ino, "f1", d.ino, "g1", false).await.unwrap();
    out.push(("rename in one dir", t.policy.take()));

    me.unlink(d.ino, "f2").await.unwrap();
    out.push(("unlink", t.policy.take()));
    for (op, a) in &out {
        println!(
            "listing metadata {listing_metadata:5}: {op:24} {a:?} total {}",
            a.total()
        );
    }
    out
}

/// What each operation needs, and no more:
/// - create: execute on `/` and a listing of `/` (one verdict: `d/`) for the kernel's
///   lookup; write on `/`, the new name's verdict (read-only names refuse with EROFS) and
///   the new node's consistency.
/// - lookup of a name never seen: execute on the parent, then verdict, consistency and
///   default owner of the new node; the file's lookup lists `d` first (one verdict per
///   object), and when that listing carried the objects' metadata (Azure) its verdict is
///   reused instead of asked again.
/// - a fresh stat asks nothing; `ls -l` asks read (opendir) and execute (readdirplus) on
///   the directory and per new entry consistency and owner, plus its verdict unless the
///   listing already gave it; rename within one directory asks write once and the target
///   name's verdict; unlink asks write on the directory.
#[tokio::test]
async fn each_operation_asks_the_policy_the_fewest_questions() {
    for (listing_metadata, lookup_file, readdir) in [
        // S3, GCS: a listing without metadata; the lookup's HEAD adds it, and the filter
        // must see it.
        (false, 1 + N + 3, 2 + 3 * (N - 1)),
        // Azure: the listing's verdict is the node's.
        (true, 1 + N + 2, 2 + 2 * (N - 1)),
    ] {
        let got: Vec<(&str, usize)> = questions(listing_metadata)
            .await
            .into_iter()
            .map(|(op, a)| (op, a.total()))
            .collect();
        assert_eq!(
            got,
            [
                ("create+write+close", 5),
                ("lookup dir", 4),
                ("lookup file (lists d)", lookup_file),
                ("stat", 0),
                ("readdir+lookups of N", readdir),
                ("rename in one dir", 2),
                ("unlink", 1),
            ],
            "listing metadata {listing_metadata}"
        );
    }
}
