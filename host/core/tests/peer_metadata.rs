//! Buckets written by other mounters and tools look right here: their time, mode, owner and
//! symlink keys in object metadata (gcsfuse, rclone, s3fs, gsutil) are read, ours win where
//! both are present, and blobmount keeps the peers' keys an object carries in step when it
//! rewrites the object's attributes (host/core/src/attr.rs).

use std::sync::Arc;
use std::sync::atomic::Ordering::SeqCst;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use blobmount_backend::memory::MemoryBackend;
use blobmount_backend::{Backend, Precondition, PutMeta, UserMetadata};
use blobmount_core::{Caller, Kind, ROOT_INO, SetAttr};
use bytes::Bytes;

mod common;
use common::{TestFs, test_fs, test_fs_on};

const ME: Caller = Caller { uid: 0, gid: 0 };

async fn put_meta(b: &MemoryBackend, key: &str, data: &[u8], pairs: &[(&str, &str)]) {
    let metadata: UserMetadata = pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let meta = PutMeta {
        metadata,
        ..Default::default()
    };
    b.put(
        key,
        Bytes::copy_from_slice(data),
        &meta,
        &Precondition::None,
    )
    .await
    .unwrap();
}

fn at(secs: u64, nanos: u32) -> SystemTime {
    UNIX_EPOCH + Duration::new(secs, nanos)
}

fn fresh() -> TestFs {
    test_fs(|_| {})
}

#[tokio::test]
async fn gcsfuse_symlink_and_mtime_are_read_without_fetching_the_object() {
    let t = fresh();
    put_meta(
        &t.mem,
        "ln",
        b"",
        &[
            ("gcsfuse_symlink_target", "dir/target.txt"),
            ("gcsfuse_mtime", "2023-11-14T22:13:20.123456789Z"),
        ],
    )
    .await;
    let a = t.fs.lookup(ROOT_INO, "ln").await.unwrap();
    assert_eq!(a.kind, Kind::Symlink);
    assert_eq!(a.size, "dir/target.txt".len() as u64);
    assert_eq!(a.mtime, at(1_700_000_000, 123_456_789));
    let gets = t.c.gets.load(SeqCst);
    assert_eq!(t.fs.readlink(a.ino).await.unwrap(), "dir/target.txt");
    assert_eq!(t.c.gets.load(SeqCst), gets, "the target is in the metadata");
    // After a refresh drops the cached target, it still comes from the metadata.
    t.fs.refresh("ln", false).unwrap();
    let a = t.fs.lookup(ROOT_INO, "ln").await.unwrap();
    assert_eq!(t.fs.readlink(a.ino).await.unwrap(), "dir/target.txt");
}

#[tokio::test]
async fn rclone_s3fs_and_gsutil_keys_give_modes_owners_and_times() {
    let t = fresh();
    // rclone on Azure/GCS: RFC 3339 mtime, octal mode.
    put_meta(
        &t.mem,
        "rclone.txt",
        b"r",
        &[("mtime", "2023-11-15T00:13:20.5+02:00"), ("mode", "100600")],
    )
    .await;
    // s3fs (and rclone on S3): decimal seconds, decimal st_mode, uid, gid.
    put_meta(
        &t.mem,
        "s3fs.txt",
        b"s",
        &[
            ("mtime", "1600000000"),
            ("mode", "33261"),
            ("uid", "1234"),
            ("gid", "4321"),
        ],
    )
    .await;
    // gsutil / gcloud storage cp -P.
    put_meta(
        &t.mem,
        "gsutil.txt",
        b"g",
        &[
            ("goog-reserved-file-mtime", "1500000000"),
            ("goog-reserved-posix-mode", "640"),
            ("goog-reserved-posix-uid", "77"),
            ("goog-reserved-posix-gid", "88"),
        ],
    )
    .await;
    let r = t.fs.lookup(ROOT_INO, "rclone.txt").await.unwrap();
    assert_eq!((r.kind, r.perm), (Kind::File, 0o600));
    assert_eq!(r.mtime, at(1_700_000_000, 500_000_000));
    let s = t.fs.lookup(ROOT_INO, "s3fs.txt").await.unwrap();
    assert_eq!((s.perm, s.uid, s.gid), (0o755, 1234, 4321));
    assert_eq!(s.mtime, at(1_600_000_000, 0));
    let g = t.fs.lookup(ROOT_INO, "gsutil.txt").await.unwrap();
    assert_eq!((g.perm, g.uid, g.gid), (0o640, 77, 88));
    assert_eq!(g.mtime, at(1_500_000_000, 0));
}

#[tokio::test]
async fn changing_attributes_keeps_the_peers_keys_in_step() {
    // Written at once (not held and coalesced), so the store can be looked at right after.
    let t = test_fs(|c| c.attr_write_delay = std::time::Duration::ZERO);
    put_meta(
        &t.mem,
        "g.txt",
        b"data",
        &[
            ("gcsfuse_mtime", "2001-01-01T00:00:00Z"),
            ("goog-reserved-posix-mode", "644"),
            ("color", "blue"),
        ],
    )
    .await;
    let a = t.fs.lookup(ROOT_INO, "g.txt").await.unwrap();
    let when = at(1_700_000_000, 42);
    t.fs.as_caller(ME)
        .setattr(
            a.ino,
            SetAttr {
                perm: Some(0o600),
                mtime: Some(when),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let m = t.mem.head("g.txt").await.unwrap().metadata.unwrap();
    assert_eq!(m["gcsfuse_mtime"], "2023-11-14T22:13:20.000000042Z");
    assert_eq!(m["goog-reserved-posix-mode"], "600");
    assert_eq!(m["color"], "blue");
    assert!(!m.contains_key("goog-reserved-file-mtime"));
    // Another mount sees the change whichever key it reads first.
    let t2 = test_fs_on(t.mem.clone(), |_| {});
    let b = t2.fs.lookup(ROOT_INO, "g.txt").await.unwrap();
    assert_eq!((b.perm, b.mtime), (0o600, when));
}

#[tokio::test]
async fn symlinks_made_here_carry_the_gcsfuse_target_when_it_fits() {
    let t = fresh();
    t.fs.symlink(ROOT_INO, "short", "a/b", ME).await.unwrap();
    let long = "x/".repeat(700);
    t.fs.symlink(ROOT_INO, "long", &long, ME).await.unwrap();
    t.fs.symlink(ROOT_INO, "wide", "caf\u{e9}", ME)
        .await
        .unwrap();
    let meta = |k: &'static str| {
        let mem: Arc<MemoryBackend> = t.mem.clone();
        async move { mem.head(k).await.unwrap().metadata.unwrap() }
    };
    assert_eq!(meta("short").await["gcsfuse_symlink_target"], "a/b");
    assert!(!meta("long").await.contains_key("gcsfuse_symlink_target"));
    assert!(!meta("wide").await.contains_key("gcsfuse_symlink_target"));
    // All three read back through another mount (content or metadata).
    let t2 = test_fs_on(t.mem.clone(), |_| {});
    for (name, target) in [
        ("short", "a/b"),
        ("long", long.as_str()),
        ("wide", "caf\u{e9}"),
    ] {
        let a = t2.fs.lookup(ROOT_INO, name).await.unwrap();
        assert_eq!(a.kind, Kind::Symlink);
        assert_eq!(t2.fs.readlink(a.ino).await.unwrap(), target);
    }
}
