//! The core with a policy (no kernel, in-memory store): filter verdicts on listing, lookup and
//! writes; name-conflict resolutions; per-path TTLs; ACL owner/mode and access checks.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use blobmount_backend::Backend;
use blobmount_backend::memory::MemoryBackend;
use blobmount_core::policy::{EXECUTE, READ, WRITE};
use blobmount_core::{Caller, Fs, FsConfig, FsError, ROOT_INO, SetAttr};
use blobmount_policy_api::{
    Access, AclDecision, Builtin, BuiltinConfig, ConflictEntry, ConflictKind, Consistency,
    FilterConfig, ObjectInfo, Policy, Resolution, Ttl, Verdict,
};

mod common;
use common::{Counting, names, put};

const ALICE: Caller = Caller {
    uid: 1001,
    gid: 1001,
};
const BOB: Caller = Caller {
    uid: 1002,
    gid: 1002,
};

/// A policy like the example plugins: `tmp/` hidden, `ro/` read-only, `forever/` cached
/// forever, `fresh/` never cached, `alice/` owned by and only open to uid 1001, files beside
/// directories renamed with `.plain`, invalid names hidden.
struct TestPolicy {
    builtin: Builtin,
}

impl Policy for TestPolicy {
    fn filter(&self, obj: &ObjectInfo, now: i64) -> Verdict {
        if obj.key.starts_with("tmp/") || obj.key.ends_with(".tmp") {
            Verdict::Hidden
        } else if obj.key.starts_with("ro/") {
            Verdict::VisibleReadOnly
        } else {
            self.builtin.filter(obj, now)
        }
    }

    fn resolve_conflict(
        &self,
        _parent: &str,
        kind: ConflictKind,
        entries: &[ConflictEntry],
    ) -> Vec<Resolution> {
        entries
            .iter()
            .map(|e| match (kind, e.is_dir) {
                (ConflictKind::InvalidName, _) => Resolution::Hide,
                (ConflictKind::FileAndDirectory, true) => Resolution::Keep,
                (ConflictKind::FileAndDirectory, false) => {
                    Resolution::Rename(format!("{}.plain", e.name))
                }
            })
            .collect()
    }

    fn consistency(&self, key: &str, is_dir: bool) -> Consistency {
        let mut c = self.builtin.consistency(key, is_dir);
        if key.starts_with("forever/") {
            c.stat_ttl = Ttl::Forever;
            c.list_ttl = Ttl::Forever;
        } else if key.starts_with("fresh/") {
            c.stat_ttl = Ttl::None;
            c.list_ttl = Ttl::None;
            c.revalidate_on_open = true;
        }
        c
    }

    fn acl(&self, obj: &ObjectInfo, caller: blobmount_policy_api::Caller) -> AclDecision {
        if obj.key.starts_with("alice/") {
            AclDecision {
                uid: 1001,
                gid: 1001,
                mode: if obj.is_dir { 0o700 } else { 0o600 },
                allow: if caller.uid == 1001 {
                    Access::ALL
                } else {
                    Access::NONE
                },
            }
        } else {
            self.builtin.acl(obj, caller)
        }
    }
}

struct T {
    mem: Arc<MemoryBackend>,
    counting: Arc<Counting>,
    fs: Fs,
    _dir: tempfile::TempDir,
}

fn setup() -> T {
    let mem = Arc::new(MemoryBackend::new());
    let counting = Counting::new(mem.clone());
    let dir = tempfile::tempdir().unwrap();
    let cfg = FsConfig::for_tests(dir.path().to_path_buf());
    let policy = Arc::new(TestPolicy {
        builtin: blobmount_core::policy::builtin_for(&cfg),
    });
    let fs = Fs::with_policy(counting.clone(), cfg, policy).unwrap();
    T {
        mem,
        counting,
        fs,
        _dir: dir,
    }
}

#[tokio::test]
async fn hidden_objects_are_absent_and_cannot_be_created_over() {
    let t = setup();
    put(&t.mem, "a.txt", b"a").await;
    put(&t.mem, "b.tmp", b"b").await;
    put(&t.mem, "tmp/x", b"x").await;
    assert_eq!(names(&t.fs, ROOT_INO).await, ["a.txt"]);
    // The cached listing does not show it, yet the name is taken.
    let e =
        t.fs.create(ROOT_INO, "b.tmp", 0o644, libc::O_WRONLY, ALICE)
            .await
            .unwrap_err();
    assert_eq!(e.errno(), libc::EACCES);
    // A fresh mount (no listing cached) must hide it on lookup too.
    let t2 = {
        let dir = tempfile::tempdir().unwrap();
        let cfg = FsConfig::for_tests(dir.path().to_path_buf());
        let policy = Arc::new(TestPolicy {
            builtin: blobmount_core::policy::builtin_for(&cfg),
        });
        (Fs::with_policy(t.mem.clone(), cfg, policy).unwrap(), dir)
    };
    assert_eq!(
        t2.0.lookup(ROOT_INO, "b.tmp").await.unwrap_err(),
        FsError::NotFound
    );
    assert_eq!(
        t2.0.lookup(ROOT_INO, "tmp").await.unwrap_err(),
        FsError::NotFound
    );
    let e =
        t2.0.create(ROOT_INO, "b.tmp", 0o644, libc::O_WRONLY, ALICE)
            .await
            .unwrap_err();
    assert_eq!(e.errno(), libc::EACCES);
    let e = t2.0.mkdir(ROOT_INO, "tmp", 0o755, ALICE).await.unwrap_err();
    assert_eq!(e.errno(), libc::EACCES);
    let e =
        t2.0.rename(ROOT_INO, "a.txt", ROOT_INO, "b.tmp", false)
            .await
            .unwrap_err();
    assert_eq!(e.errno(), libc::EACCES);
    assert_eq!(
        t.mem.get_range("b.tmp", 0..1, None).await.unwrap(),
        &b"b"[..]
    );
}

#[tokio::test]
async fn read_only_verdicts_refuse_modifications_with_erofs() {
    let t = setup();
    put(&t.mem, "ro/f", b"frozen").await;
    let dir = t.fs.lookup(ROOT_INO, "ro").await.unwrap();
    let f = t.fs.lookup(dir.ino, "f").await.unwrap();
    let erofs = |r: Result<(), FsError>| assert_eq!(r.unwrap_err(), FsError::ReadOnly);
    erofs(t.fs.open(f.ino, libc::O_WRONLY).await.map(|_| ()));
    erofs(
        t.fs.open(f.ino, libc::O_RDONLY | libc::O_TRUNC)
            .await
            .map(|_| ()),
    );
    erofs(t.fs.unlink(dir.ino, "f").await);
    erofs(t.fs.rename(dir.ino, "f", ROOT_INO, "g", false).await);
    erofs(
        t.fs.setattr(
            f.ino,
            SetAttr {
                perm: Some(0o600),
                ..Default::default()
            },
        )
        .await
        .map(|_| ()),
    );
    erofs(
        t.fs.create(dir.ino, "new", 0o644, libc::O_WRONLY, ALICE)
            .await
            .map(|_| ()),
    );
    // Reading works.
    let h = t.fs.open(f.ino, libc::O_RDONLY).await.unwrap();
    assert_eq!(&t.fs.read(h.fh, 0, 100).await.unwrap()[..], b"frozen");
    t.fs.release(h.fh).await.unwrap();
    assert_eq!(FsError::ReadOnly.errno(), libc::EROFS);
}

#[tokio::test]
async fn conflicts_and_invalid_names_follow_the_policy() {
    let t = setup();
    put(&t.mem, "foo", b"file").await;
    put(&t.mem, "foo/bar", b"in dir").await;
    put(&t.mem, "x//y", b"odd").await;
    assert_eq!(names(&t.fs, ROOT_INO).await, ["foo", "foo.plain", "x"]);
    let x = t.fs.lookup(ROOT_INO, "x").await.unwrap();
    // The empty segment is an invalid name the policy hides.
    assert!(names(&t.fs, x.ino).await.is_empty());
    let plain = t.fs.lookup(ROOT_INO, "foo.plain").await.unwrap();
    assert_eq!(plain.size, 4);
    // The built-in suffix is not this policy's name for it.
    assert_eq!(
        t.fs.lookup(ROOT_INO, "foo.~file").await.unwrap_err(),
        FsError::NotFound
    );
}

#[tokio::test]
async fn ttls_come_from_the_consistency_policy_per_path() {
    let t = setup();
    put(&t.mem, "forever/f", b"1").await;
    put(&t.mem, "fresh/f", b"1").await;
    let fd = t.fs.lookup(ROOT_INO, "forever").await.unwrap();
    let rd = t.fs.lookup(ROOT_INO, "fresh").await.unwrap();
    let ff = t.fs.lookup(fd.ino, "f").await.unwrap();
    let rf = t.fs.lookup(rd.ino, "f").await.unwrap();
    assert_eq!(
        t.fs.kernel_ttl(ff.ino),
        blobmount_core::policy::KERNEL_TTL_MAX
    );
    assert_eq!(t.fs.kernel_ttl(rf.ino), Duration::ZERO);
    assert_eq!(t.fs.kernel_ttl(ROOT_INO), Duration::from_secs(1));
    put(&t.mem, "forever/f", b"22").await;
    put(&t.mem, "fresh/f", b"22").await;
    let heads = t.counting.heads.load(Ordering::SeqCst);
    assert_eq!(
        t.fs.getattr(ff.ino).await.unwrap().size,
        1,
        "trusted forever"
    );
    assert_eq!(t.counting.heads.load(Ordering::SeqCst), heads);
    assert_eq!(t.fs.getattr(rf.ino).await.unwrap().size, 2, "never trusted");
    // revalidate-on-open: every open asks, even right after a getattr.
    let heads = t.counting.heads.load(Ordering::SeqCst);
    let h = t.fs.open(rf.ino, libc::O_RDONLY).await.unwrap();
    t.fs.release(h.fh).await.unwrap();
    assert!(t.counting.heads.load(Ordering::SeqCst) > heads);
    // Listings: `forever/` was listed once, by the lookup of `f`, and is trusted since;
    // `fresh/` is listed every time.
    let lists = t.counting.lists.load(Ordering::SeqCst);
    names(&t.fs, fd.ino).await;
    names(&t.fs, fd.ino).await;
    let after_forever = t.counting.lists.load(Ordering::SeqCst);
    names(&t.fs, rd.ino).await;
    names(&t.fs, rd.ino).await;
    assert_eq!(after_forever - lists, 0);
    assert_eq!(t.counting.lists.load(Ordering::SeqCst) - after_forever, 2);
}

#[tokio::test]
async fn acl_sets_owner_and_mode_and_checks_access_per_caller() {
    let t = setup();
    put(&t.mem, "alice/secret", b"s").await;
    put(&t.mem, "pub", b"p").await;
    let d = t.fs.lookup(ROOT_INO, "alice").await.unwrap();
    assert_eq!((d.uid, d.gid, d.perm), (1001, 1001, 0o700));
    let f = t.fs.lookup(d.ino, "secret").await.unwrap();
    assert_eq!((f.uid, f.gid, f.perm), (1001, 1001, 0o600));
    let p = t.fs.lookup(ROOT_INO, "pub").await.unwrap();
    assert_eq!((p.uid, p.gid, p.perm), (0, 0, 0o644));
    t.fs.check_access(f.ino, ALICE, READ).unwrap();
    t.fs.check_access(d.ino, ALICE, WRITE).unwrap();
    for want in [READ, WRITE, EXECUTE] {
        let e = t.fs.check_access(d.ino, BOB, want).unwrap_err();
        assert_eq!(e.errno(), libc::EACCES);
    }
    t.fs.check_access(p.ino, BOB, WRITE).unwrap();
    // Creating inside checks the caller against the directory.
    let e =
        t.fs.create(d.ino, "bobs", 0o644, libc::O_WRONLY, BOB)
            .await
            .unwrap_err();
    assert_eq!(e, FsError::AccessDenied("denied by the ACL policy"));
    let e = t.fs.mkdir(d.ino, "bobs", 0o755, BOB).await.unwrap_err();
    assert_eq!(e.errno(), libc::EACCES);
    assert!(t.fs.mkdir(d.ino, "alices", 0o755, ALICE).await.is_ok());
}

#[tokio::test]
async fn builtin_filter_config_applies_without_plugins() {
    let mem = Arc::new(MemoryBackend::new());
    let dir = tempfile::tempdir().unwrap();
    let cfg = FsConfig::for_tests(dir.path().to_path_buf());
    let mut bc = blobmount_core::policy::builtin_config_for(&cfg);
    bc.filter = FilterConfig {
        exclude: vec!["*.log".into()],
        ..Default::default()
    };
    let builtin = Builtin::new(bc).unwrap();
    let fs = Fs::with_policy(mem.clone(), cfg, Arc::new(builtin)).unwrap();
    put(&mem, "a/x.log", b"1").await;
    put(&mem, "a/y.csv", b"1").await;
    let a = fs.lookup(ROOT_INO, "a").await.unwrap();
    assert_eq!(names(&fs, a.ino).await, ["y.csv"]);
    // The default built-in equals the global settings.
    assert_eq!(
        blobmount_core::policy::builtin_config_for(&FsConfig::for_tests("/x".into())).filter,
        BuiltinConfig::default().filter
    );
}

/// Every operation a caller asks for through `Fs::as_caller` is checked against the ACL
/// policy in the core (the FUSE adapter no longer checks anything itself).
#[tokio::test]
async fn operations_as_a_caller_are_checked_by_the_core() {
    let t = setup();
    put(&t.mem, "alice/secret", b"s").await;
    let d = t.fs.lookup(ROOT_INO, "alice").await.unwrap();
    let f = t.fs.lookup(d.ino, "secret").await.unwrap();
    let bob = t.fs.as_caller(BOB);
    let denied = |r: Result<(), FsError>| assert_eq!(r.unwrap_err().errno(), libc::EACCES);
    denied(bob.lookup(d.ino, "secret").await.map(|_| ()));
    denied(bob.open(f.ino, libc::O_RDONLY).await.map(|_| ()));
    denied(bob.opendir(d.ino).await.map(|_| ()));
    denied(bob.unlink(d.ino, "secret").await);
    denied(bob.rename(d.ino, "secret", ROOT_INO, "taken", false).await);
    denied(bob.mkdir(d.ino, "x", 0o755).await.map(|_| ()));
    denied(bob.setattr(f.ino, Default::default()).await.map(|_| ()));
    denied(bob.readdir_plus(d.ino, 0, 0).map(|_| ()));
    // Nothing changed in the store, and the owner may do all of it.
    assert_eq!(t.mem.keys(), ["alice/secret"]);
    let alice = t.fs.as_caller(ALICE);
    alice.lookup(d.ino, "secret").await.unwrap();
    let h = alice.open(f.ino, libc::O_RDONLY).await.unwrap();
    t.fs.release(h.fh).await.unwrap();
    alice
        .rename(d.ino, "secret", d.ino, "kept", false)
        .await
        .unwrap();
    assert_eq!(t.mem.keys(), ["alice/kept"]);
}
