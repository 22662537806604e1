//! Extended attributes as object metadata (`xattr.rs`), against the memory store with every
//! request counted: `user.*` reads, lists, sets and removes user metadata; blobmount's own
//! keys stay hidden and protected; `user.blobmount.*` is read-only; the store's limits are
//! errnos before any request; a file open with changes takes new metadata with its upload
//! (no request of its own), a clean one costs one metadata update, conditional on the
//! version read (ESTALE, nothing lost, when another client changed it).

mod common;

use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use blobmount_backend::memory::MemoryBackend;
use blobmount_backend::{Backend, Precondition, PutMeta, UserMetadata};
use blobmount_core::xattr::{self, XattrReply};
use blobmount_core::{Caller, ROOT_INO, attr};
use bytes::Bytes;
use common::{TestFs, test_fs, test_fs_on};

const ME: Caller = Caller { uid: 0, gid: 0 };

/// Every request the core made so far (reads, listings and writes of any kind).
fn requests(t: &TestFs) -> u64 {
    let (heads, lists) = t.c.calls();
    let (gets, _) = t.c.gets();
    let w = &t.mem.counters;
    (heads + lists + gets) as u64
        + w.put.load(Relaxed)
        + w.copy.load(Relaxed)
        + w.delete.load(Relaxed)
        + w.part.load(SeqCst)
        + w.complete.load(SeqCst)
        + w.append.load(Relaxed)
}

fn meta(pairs: &[(&str, &str)]) -> UserMetadata {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Another client writes `data` at `key` with user metadata `m`.
async fn put_with(b: &MemoryBackend, key: &str, data: &[u8], m: UserMetadata) -> String {
    let pm = PutMeta {
        metadata: m,
        content_type: Some("text/plain".into()),
    };
    b.put(key, Bytes::copy_from_slice(data), &pm, &Precondition::None)
        .await
        .unwrap()
        .etag
        .unwrap()
}

async fn store_meta(b: &MemoryBackend, key: &str) -> UserMetadata {
    b.head(key).await.unwrap().metadata.unwrap()
}

fn errno<T: std::fmt::Debug>(r: blobmount_core::FsResult<T>) -> i32 {
    r.unwrap_err().errno()
}

fn names(list: &[u8]) -> Vec<String> {
    list.split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8(s.to_vec()).unwrap())
        .collect()
}

fn long_ttl() -> TestFs {
    test_fs(|c| {
        c.attr_ttl = Duration::from_secs(600);
        c.list_ttl = Duration::from_secs(600);
    })
}

#[tokio::test]
async fn user_attributes_are_the_objects_metadata() {
    let t = long_ttl();
    let stored = meta(&[("color", "blue"), ("mode", "33188"), ("uid", "7")]);
    put_with(&t.mem, "f", b"data", stored).await;
    let f = t.fs.lookup(ROOT_INO, "f").await.unwrap();

    assert_eq!(t.fs.getxattr(f.ino, "user.color").await.unwrap(), b"blue");
    // blobmount's own keys are not user attributes.
    assert_eq!(names(&t.fs.listxattr(f.ino).await.unwrap()), ["user.color"]);
    assert_eq!(
        errno(t.fs.getxattr(f.ino, "user.mode").await),
        libc::ENODATA
    );
    assert_eq!(
        errno(t.fs.getxattr(f.ino, "user.nope").await),
        libc::ENODATA
    );

    t.fs.setxattr(f.ino, "user.size_class", b"small", 0)
        .await
        .unwrap();
    let m = store_meta(&t.mem, "f").await;
    assert_eq!(m.get("size_class").map(String::as_str), Some("small"));
    assert_eq!(m.get("color").map(String::as_str), Some("blue"));
    // The attributes blobmount keeps survive (uid from the object, mode unchanged).
    assert_eq!(m.get("uid").map(String::as_str), Some("7"));
    assert_eq!(m.get("mode").map(String::as_str), Some("33188"));
    // The next read sees it, without asking the store.
    let before = requests(&t);
    assert_eq!(
        t.fs.getxattr(f.ino, "user.size_class").await.unwrap(),
        b"small"
    );
    assert_eq!(
        names(&t.fs.listxattr(f.ino).await.unwrap()),
        ["user.color", "user.size_class"]
    );
    assert_eq!(requests(&t), before);

    t.fs.removexattr(f.ino, "user.color").await.unwrap();
    assert!(!store_meta(&t.mem, "f").await.contains_key("color"));
    assert_eq!(
        errno(t.fs.getxattr(f.ino, "user.color").await),
        libc::ENODATA
    );
    assert_eq!(
        errno(t.fs.removexattr(f.ino, "user.color").await),
        libc::ENODATA
    );
    // The data is untouched.
    assert_eq!(common::stored(&*t.mem, "f").await.unwrap(), b"data");
}

#[tokio::test]
async fn reading_attributes_of_a_fresh_file_costs_no_request() {
    let t = long_ttl();
    put_with(&t.mem, "dir/f", b"x", meta(&[("a", "1")])).await;
    let d = t.fs.lookup(ROOT_INO, "dir").await.unwrap();
    // The listing (S3 and GCS style) carries no metadata: the lookup HEADs the file once.
    let h = t.fs.opendir(d.ino).await.unwrap();
    t.fs.readdir(h, 0).unwrap();
    let before = requests(&t);
    let f = t.fs.lookup(d.ino, "f").await.unwrap();
    assert_eq!(requests(&t) - before, 1, "one HEAD for the file");
    let before = requests(&t);
    for _ in 0..3 {
        assert_eq!(t.fs.getxattr(f.ino, "user.a").await.unwrap(), b"1");
        assert_eq!(names(&t.fs.listxattr(f.ino).await.unwrap()), ["user.a"]);
        t.fs.getxattr(f.ino, "user.blobmount.etag").await.unwrap();
    }
    assert_eq!(requests(&t), before, "answered from the cached stat");
}

#[tokio::test]
async fn an_expired_stat_is_asked_again_once() {
    let t = test_fs(|c| c.attr_ttl = Duration::ZERO);
    put_with(&t.mem, "f", b"x", meta(&[("a", "1")])).await;
    let f = t.fs.lookup(ROOT_INO, "f").await.unwrap();
    // Another client changes the metadata: the next read sees it.
    put_with(&t.mem, "f", b"x", meta(&[("a", "2")])).await;
    assert_eq!(t.fs.getxattr(f.ino, "user.a").await.unwrap(), b"2");
}

#[tokio::test]
async fn blobmounts_own_keys_are_hidden_and_protected() {
    let t = long_ttl();
    // Every internal key but gcsfuse's symlink target (any value makes a symlink);
    // hdi_isfolder=1 and is_symlink=1 are not "true": still a file.
    let all: Vec<(&str, &str)> = attr::INTERNAL_KEYS
        .iter()
        .filter(|k| **k != attr::META_GCSFUSE_SYMLINK)
        .map(|k| (*k, "1"))
        .collect();
    let mut m = meta(&all);
    m.insert("mine".into(), "yes".into());
    put_with(&t.mem, "f", b"x", m).await;
    let f = t.fs.lookup(ROOT_INO, "f").await.unwrap();
    assert_eq!(names(&t.fs.listxattr(f.ino).await.unwrap()), ["user.mine"]);
    for k in attr::INTERNAL_KEYS {
        let name = format!("user.{k}");
        assert_eq!(errno(t.fs.getxattr(f.ino, &name).await), libc::ENODATA);
        assert_eq!(
            errno(t.fs.setxattr(f.ino, &name, b"2", 0).await),
            libc::EPERM,
            "{name}"
        );
        assert_eq!(errno(t.fs.removexattr(f.ino, &name).await), libc::EPERM);
    }
}

#[tokio::test]
async fn the_blobmount_namespace_is_read_only() {
    let t = long_ttl();
    let etag = put_with(&t.mem, "f", b"hello", UserMetadata::new()).await;
    let f = t.fs.lookup(ROOT_INO, "f").await.unwrap();
    let get = |n: &'static str| {
        let fs = t.fs.clone();
        async move { String::from_utf8(fs.getxattr(f.ino, n).await.unwrap()).unwrap() }
    };
    assert_eq!(get("user.blobmount.etag").await, etag);
    assert_eq!(get("user.blobmount.content_type").await, "text/plain");
    assert_eq!(get("user.blobmount.key").await, "f");
    assert_eq!(get("user.blobmount.kind").await, "file");
    assert_eq!(
        get("user.blobmount.mode").await,
        format!("{:o}", libc::S_IFREG | 0o644)
    );
    assert_eq!(get("user.blobmount.uid").await, f.uid.to_string());
    // md5("hello")
    assert_eq!(
        get("user.blobmount.content_md5").await,
        "5d41402abc4b2a76b9719d911017c592"
    );
    assert_eq!(
        errno(t.fs.getxattr(f.ino, "user.blobmount.nothing").await),
        libc::ENODATA
    );
    // Readable by name, not listed (cp -a and rsync -X would copy them onto other files).
    assert!(names(&t.fs.listxattr(f.ino).await.unwrap()).is_empty());
    for n in ["user.blobmount.etag", "user.blobmount.new"] {
        assert_eq!(errno(t.fs.setxattr(f.ino, n, b"x", 0).await), libc::EPERM);
        assert_eq!(errno(t.fs.removexattr(f.ino, n).await), libc::EPERM);
    }
    assert_eq!(
        get("user.blobmount.etag").await,
        t.mem.head("f").await.unwrap().etag.unwrap()
    );
}

#[tokio::test]
async fn other_namespaces_are_not_supported() {
    let t = long_ttl();
    put_with(&t.mem, "f", b"x", UserMetadata::new()).await;
    let f = t.fs.lookup(ROOT_INO, "f").await.unwrap();
    for n in [
        "security.capability",
        "security.selinux",
        "system.posix_acl_access",
        "trusted.overlay.opaque",
    ] {
        assert_eq!(errno(t.fs.getxattr(f.ino, n).await), libc::ENOTSUP);
        assert_eq!(errno(t.fs.setxattr(f.ino, n, b"x", 0).await), libc::ENOTSUP);
        assert_eq!(errno(t.fs.removexattr(f.ino, n).await), libc::ENOTSUP);
    }
}

#[tokio::test]
async fn limits_are_errnos_before_any_request() {
    let t = long_ttl();
    put_with(&t.mem, "f", b"x", meta(&[("a", "1")])).await;
    let f = t.fs.lookup(ROOT_INO, "f").await.unwrap();
    let before = requests(&t);
    let set = |n: &'static str, v: Vec<u8>, flags: i32| {
        let fs = t.fs.clone();
        async move { fs.setxattr(f.ino, n, &v, flags).await }
    };
    // Stores report names in lower case: `user.Color` is refused, not renamed.
    assert_eq!(
        errno(set("user.Color", b"x".to_vec(), 0).await),
        libc::EINVAL
    );
    assert_eq!(errno(set("user.", b"x".to_vec(), 0).await), libc::EINVAL);
    assert_eq!(
        errno(set("user.bin", vec![0xff, 0xfe], 0).await),
        libc::EINVAL
    );
    // The memory store keeps 8 KiB of metadata, like Azure and GCS.
    assert_eq!(
        errno(set("user.big", vec![b'x'; 8192], 0).await),
        libc::E2BIG
    );
    assert_eq!(
        errno(set("user.a", b"2".to_vec(), libc::XATTR_CREATE).await),
        libc::EEXIST
    );
    assert_eq!(
        errno(set("user.b", b"2".to_vec(), libc::XATTR_REPLACE).await),
        libc::ENODATA
    );
    assert_eq!(requests(&t), before, "refused without asking the store");
    assert_eq!(store_meta(&t.mem, "f").await.get("a").unwrap(), "1");
    assert!(t.fs.getxattr(f.ino, "user.big").await.is_err());
    // Just under the limit is accepted.
    set("user.big", vec![b'x'; 7000], 0).await.unwrap();
    set("user.a", b"3".to_vec(), libc::XATTR_REPLACE)
        .await
        .unwrap();
    // A buffer too small is ERANGE; size 0 asks for the size.
    let v = t.fs.getxattr(f.ino, "user.big").await.unwrap();
    assert_eq!(xattr::sized(v.clone(), 0).unwrap(), XattrReply::Size(7000));
    assert_eq!(xattr::sized(v, 100).unwrap_err().errno(), libc::ERANGE);
}

#[tokio::test]
async fn a_dirty_open_file_takes_its_metadata_with_the_upload() {
    let t = long_ttl();
    let (a, h) =
        t.fs.create(ROOT_INO, "new", 0o644, libc::O_WRONLY, ME)
            .await
            .unwrap();
    t.fs.write(h.fh, 0, b"contents").await.unwrap();
    let before = requests(&t);
    t.fs.setxattr(a.ino, "user.owner_team", b"data", 0)
        .await
        .unwrap();
    assert_eq!(requests(&t), before, "no request before the upload");
    assert_eq!(
        t.fs.getxattr(a.ino, "user.owner_team").await.unwrap(),
        b"data"
    );
    let puts = t.mem.counters.put.load(Relaxed);
    t.fs.release(h.fh).await.unwrap();
    assert_eq!(t.mem.counters.put.load(Relaxed) - puts, 1, "one upload");
    assert_eq!(common::stored(&*t.mem, "new").await.unwrap(), b"contents");
    assert_eq!(
        store_meta(&t.mem, "new").await.get("owner_team").unwrap(),
        "data"
    );
}

#[tokio::test]
async fn a_clean_file_costs_one_metadata_update() {
    let t = long_ttl();
    put_with(&t.mem, "f", b"payload", UserMetadata::new()).await;
    let f = t.fs.lookup(ROOT_INO, "f").await.unwrap();
    // Open for reading (clean) or not open at all: the same single update.
    let h = t.fs.open(f.ino, libc::O_RDONLY).await.unwrap();
    let before = requests(&t);
    t.fs.setxattr(f.ino, "user.k", b"v", 0).await.unwrap();
    assert_eq!(requests(&t) - before, 1, "one set_metadata");
    t.fs.release(h.fh).await.unwrap();
    let before = requests(&t);
    t.fs.removexattr(f.ino, "user.k").await.unwrap();
    assert_eq!(requests(&t) - before, 1, "one set_metadata");
    assert_eq!(common::stored(&*t.mem, "f").await.unwrap(), b"payload");
    // A chmod after it is still based on the right version (no ESTALE from our own update).
    let req = blobmount_core::SetAttr {
        perm: Some(0o600),
        ..Default::default()
    };
    t.fs.setattr(f.ino, req).await.unwrap();
}

#[tokio::test]
async fn a_change_by_another_client_is_estale_and_nothing_is_lost() {
    let t = long_ttl();
    put_with(&t.mem, "f", b"old", meta(&[("a", "1")])).await;
    let f = t.fs.lookup(ROOT_INO, "f").await.unwrap();
    // Another client replaces the object while our stat is still fresh.
    put_with(&t.mem, "f", b"theirs", meta(&[("theirs", "1")])).await;
    assert_eq!(
        errno(t.fs.setxattr(f.ino, "user.mine", b"1", 0).await),
        libc::ESTALE
    );
    assert_eq!(common::stored(&*t.mem, "f").await.unwrap(), b"theirs");
    assert_eq!(store_meta(&t.mem, "f").await, meta(&[("theirs", "1")]));
    // The refused value is not shown; the next read asks the store again.
    assert_eq!(
        errno(t.fs.getxattr(f.ino, "user.mine").await),
        libc::ENODATA
    );
    assert_eq!(t.fs.getxattr(f.ino, "user.theirs").await.unwrap(), b"1");
    // And a retry now succeeds on the new version.
    t.fs.setxattr(f.ino, "user.mine", b"1", 0).await.unwrap();
    assert_eq!(store_meta(&t.mem, "f").await.get("theirs").unwrap(), "1");
}

#[tokio::test]
async fn directories_symlinks_and_the_root() {
    let t = long_ttl();
    // A directory with a marker keeps its metadata on the marker.
    let d = t.fs.mkdir(ROOT_INO, "d", 0o755, ME).await.unwrap();
    t.fs.setxattr(d.ino, "user.project", b"x", 0).await.unwrap();
    assert_eq!(store_meta(&t.mem, "d/").await.get("project").unwrap(), "x");
    assert_eq!(
        names(&t.fs.listxattr(d.ino).await.unwrap()),
        ["user.project"]
    );
    // Seen by another mount of the same store.
    let other = test_fs_on(t.mem.clone(), |_| {});
    let d2 = other.fs.lookup(ROOT_INO, "d").await.unwrap();
    assert_eq!(
        other.fs.getxattr(d2.ino, "user.project").await.unwrap(),
        b"x"
    );

    // An implicit directory (no marker) has none; setting one creates its marker.
    put_with(&t.mem, "imp/f", b"x", UserMetadata::new()).await;
    let imp = t.fs.lookup(ROOT_INO, "imp").await.unwrap();
    assert!(names(&t.fs.listxattr(imp.ino).await.unwrap()).is_empty());
    assert_eq!(errno(t.fs.getxattr(imp.ino, "user.a").await), libc::ENODATA);
    assert_eq!(
        errno(t.fs.getxattr(imp.ino, "user.blobmount.key").await),
        libc::ENODATA
    );
    t.fs.setxattr(imp.ino, "user.a", b"1", 0).await.unwrap();
    assert_eq!(store_meta(&t.mem, "imp/").await.get("a").unwrap(), "1");

    // Symlinks keep no user.* attributes (as Linux has it).
    let l = t.fs.symlink(ROOT_INO, "l", "d", ME).await.unwrap();
    assert_eq!(errno(t.fs.getxattr(l.ino, "user.a").await), libc::ENODATA);
    assert_eq!(
        errno(t.fs.setxattr(l.ino, "user.a", b"1", 0).await),
        libc::EPERM
    );
    assert_eq!(
        t.fs.getxattr(l.ino, "user.blobmount.kind").await.unwrap(),
        b"symlink"
    );

    // The mount root has no object.
    assert!(names(&t.fs.listxattr(ROOT_INO).await.unwrap()).is_empty());
    assert_eq!(
        errno(t.fs.setxattr(ROOT_INO, "user.a", b"1", 0).await),
        libc::ENOTSUP
    );
}

#[tokio::test]
async fn a_read_only_mount_refuses_changes() {
    let mem = std::sync::Arc::new(MemoryBackend::new());
    put_with(&mem, "f", b"x", meta(&[("a", "1")])).await;
    let t = test_fs_on(mem, |c| c.read_only = true);
    let f = t.fs.lookup(ROOT_INO, "f").await.unwrap();
    assert_eq!(t.fs.getxattr(f.ino, "user.a").await.unwrap(), b"1");
    assert_eq!(
        errno(t.fs.setxattr(f.ino, "user.a", b"2", 0).await),
        libc::EROFS
    );
    assert_eq!(errno(t.fs.removexattr(f.ino, "user.a").await), libc::EROFS);
}

#[tokio::test]
async fn metadata_set_on_a_dirty_file_survives_a_crash() {
    let mem = std::sync::Arc::new(MemoryBackend::new());
    let dir = tempfile::tempdir().unwrap();
    let core = || {
        let cfg = blobmount_core::FsConfig::for_tests(dir.path().to_path_buf());
        blobmount_core::Fs::new(mem.clone(), cfg).unwrap()
    };
    let fs = core();
    let (a, h) = fs
        .create(ROOT_INO, "ckpt.bin", 0o600, libc::O_WRONLY, ME)
        .await
        .unwrap();
    fs.write(h.fh, 0, b"weights").await.unwrap();
    fs.setxattr(a.ino, "user.step", b"42", 0).await.unwrap();
    fs.abandon_like_a_crash();
    assert!(mem.head("ckpt.bin").await.is_err(), "nothing was committed");

    let fs = core();
    let r = fs.recover(blobmount_core::Recovery::Upload).await;
    assert_eq!(r.uploaded, vec!["ckpt.bin".to_string()]);
    assert_eq!(
        store_meta(&mem, "ckpt.bin").await.get("step").unwrap(),
        "42"
    );
}
