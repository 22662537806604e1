//! Content types chosen by the core against the in-memory store: each upload carries its
//! name's type on its one write, a deliberate stored type survives a rewrite and a chmod, a
//! rename takes the new name's type with one copy, and a directory rename keeps types.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use blobmount_backend::{Backend, Precondition, PutMeta};
use blobmount_core::contenttype::ContentTypes;
use blobmount_core::{Caller, Fs, ROOT_INO, SetAttr};
use bytes::Bytes;

mod common;
use common::{TestFs, test_fs};

const ME: Caller = Caller {
    uid: 1000,
    gid: 1000,
};

async fn write_file(fs: &Fs, parent: u64, name: &str, data: &[u8]) -> u64 {
    let (a, h) = fs
        .create(parent, name, 0o644, libc::O_WRONLY, ME)
        .await
        .unwrap();
    assert_eq!(fs.write(h.fh, 0, data).await.unwrap() as usize, data.len());
    fs.flush(h.fh).await.unwrap();
    fs.release(h.fh).await.unwrap();
    a.ino
}

async fn stored_type(t: &TestFs, key: &str) -> Option<String> {
    t.mem.head(key).await.unwrap().content_type
}

fn with_overrides() -> TestFs {
    test_fs(|cfg| {
        let over = BTreeMap::from([(".LOG".to_string(), "text/x-log".to_string())]);
        cfg.content_types = ContentTypes::new(&over, "binary/x-unknown").unwrap();
    })
}

#[tokio::test]
async fn new_files_get_their_names_type_on_their_one_write() {
    let t = with_overrides();
    let puts = t.mem.counters.put.load(Ordering::Relaxed);
    write_file(&t.fs, ROOT_INO, "index.html", b"<p>").await;
    assert_eq!(t.mem.counters.put.load(Ordering::Relaxed), puts + 1);
    write_file(&t.fs, ROOT_INO, "app.Log", b"x").await;
    write_file(&t.fs, ROOT_INO, "README", b"x").await;
    assert_eq!(
        stored_type(&t, "index.html").await.as_deref(),
        Some("text/html")
    );
    assert_eq!(
        stored_type(&t, "app.Log").await.as_deref(),
        Some("text/x-log")
    );
    assert_eq!(
        stored_type(&t, "README").await.as_deref(),
        Some("binary/x-unknown")
    );
}

#[tokio::test]
async fn a_deliberate_type_survives_a_rewrite_and_a_chmod_but_not_a_rename() {
    let t = with_overrides();
    let typed = |ct: &str| PutMeta {
        content_type: Some(ct.to_string()),
        ..Default::default()
    };
    for (key, ct) in [
        ("mine.txt", "text/x-mine"),
        ("plain.txt", "application/octet-stream"),
    ] {
        t.mem
            .put(
                key,
                Bytes::from_static(b"old"),
                &typed(ct),
                &Precondition::None,
            )
            .await
            .unwrap();
    }
    for name in ["mine.txt", "plain.txt"] {
        let a = t.fs.lookup(ROOT_INO, name).await.unwrap();
        let h =
            t.fs.open(a.ino, libc::O_WRONLY | libc::O_TRUNC)
                .await
                .unwrap();
        t.fs.write(h.fh, 0, b"new").await.unwrap();
        t.fs.release(h.fh).await.unwrap();
    }
    assert_eq!(
        stored_type(&t, "mine.txt").await.as_deref(),
        Some("text/x-mine")
    );
    // The store's default for "no type" is not deliberate: the name's type replaces it.
    assert_eq!(
        stored_type(&t, "plain.txt").await.as_deref(),
        Some("text/plain")
    );
    let a = t.fs.lookup(ROOT_INO, "mine.txt").await.unwrap();
    let chmod = SetAttr {
        perm: Some(0o600),
        ..Default::default()
    };
    t.fs.setattr(a.ino, chmod).await.unwrap();
    assert_eq!(
        stored_type(&t, "mine.txt").await.as_deref(),
        Some("text/x-mine")
    );

    let copies = t.mem.counters.copy.load(Ordering::Relaxed);
    t.fs.rename(ROOT_INO, "mine.txt", ROOT_INO, "mine.log", false)
        .await
        .unwrap();
    assert_eq!(t.mem.counters.copy.load(Ordering::Relaxed), copies + 1);
    assert_eq!(
        stored_type(&t, "mine.log").await.as_deref(),
        Some("text/x-log")
    );
    assert_eq!(t.mem.keys(), ["mine.log", "plain.txt"]);
}

#[tokio::test]
async fn a_directory_rename_keeps_each_files_type() {
    let t = with_overrides();
    let d = t.fs.mkdir(ROOT_INO, "d", 0o755, ME).await.unwrap();
    write_file(&t.fs, d.ino, "a.css", b"x").await;
    t.fs.rename(ROOT_INO, "d", ROOT_INO, "e", false)
        .await
        .unwrap();
    assert_eq!(
        stored_type(&t, "e/a.css").await.as_deref(),
        Some("text/css")
    );
}
