//! Backend conformance: one list of checks run through the `Backend` trait (no FUSE) against
//! every store: mem://, file://, Azurite, moto (S3) and fake-gcs-server.
//!
//! Why: the core's unit tests run against the in-memory backend, so it must behave like the
//! real stores; and the stores must behave alike wherever the core relies on it. Where a
//! store legitimately differs, the difference is written down once in [`Expect`] and asserted
//! (never skipped), so a change on either side fails here.
//!
//! Each store runs as one test (`mem`, `file`, `azurite`, `moto_s3`, `fake_gcs`): every check
//! runs under its own key prefix, and the test fails listing every check that failed.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use blobmount_backend::checksum::{ChecksumKind, StoredSum};
use blobmount_backend::{
    AppendBase, Backend, BackendError, ListPage, Precondition, PutMeta, PutOutcome, Result,
};
use blobmount_tests::{Emulator, Kind};
use bytes::Bytes;

const MIB: usize = 1024 * 1024;

/// The store under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Store {
    Memory,
    Local,
    Emulated(Kind),
}

/// How the stores legitimately differ; everything not listed here is the same everywhere.
#[derive(Debug)]
struct Expect {
    /// `dir/` keys are directory markers (Azure: the backend does not claim them, the core
    /// writes BlobFuse2's `hdi_isfolder` blobs instead).
    dir_markers: bool,
    /// User metadata and content type are kept (file://: no).
    keeps_metadata: bool,
    /// ETags are content hashes (S3; fake-gcs-server, where GCS itself changes the ETag with
    /// the metageneration), so a metadata-only change keeps the ETag.
    metadata_change_keeps_etag: bool,
    /// Deleting a missing key succeeds (S3 answers 204 to any DELETE) instead of `NotFound`.
    delete_missing_is_ok: bool,
    /// A server-side copy reports the new object's ETag (`object_store` copies report none).
    copy_reports_etag: bool,
    /// MD5 reported for an object written in one request / assembled from parts (S3: the
    /// ETag of a single PUT is its MD5, a multipart ETag is not; Azure: Put Blob stores a
    /// Content-MD5, and our block list commits send the whole blob's; file://: none at all).
    md5_single: bool,
    md5_parts: bool,
    /// Uploads in parts exist (`start_upload` gives `Some`); file:// has none.
    part_uploads: bool,
    /// A part shorter than the others is the last one and commits the object (GCS
    /// resumable sessions finalize with it), before `complete`.
    short_part_commits: bool,
    /// An upload in parts conditional on `If-Match` is refused when it starts (GCS resolves
    /// the ETag to a generation for the session) rather than at the commit.
    upload_if_match_at_start: bool,
    /// A key `set_metadata` removes stays, with an empty value (fake-gcs-server stores the
    /// `null` of a JSON-API metadata patch as ""; GCS removes the key).
    removed_metadata_stays_empty: bool,
    /// Listings report user metadata (Azure's List Blobs does; the core tells BlobFuse2's
    /// `hdi_isfolder` markers from files by it).
    listing_has_metadata: bool,
    /// `put_appended` can reuse the old bytes (Azure blocks, S3 part copy, memory).
    appends: bool,
    /// Smallest old length an append reuses (S3: a part copy needs 5 MiB).
    append_min_base: u64,
    /// A listing is one page whatever `max` says (file://: one `readdir`).
    one_page_listing: bool,
    /// `max` limits the objects of a page but not its prefixes (fake-gcs-server's JSON
    /// listing returns every prefix from the page on with each page; GCS counts both).
    max_counts_objects_only: bool,
    /// `copy` can create conditionally (S3: `object_store` has no copy-if-not-exists for
    /// S3 without extra configuration, so `IfNotExists` is `NotSupported`).
    copy_create: bool,
    /// A key can name a file and, with a `/` after it, a directory at once (file://: no).
    file_and_dir_share_names: bool,
    /// Empty key segments (`a//b`) are kept (file://: the file system folds them: `a/b`).
    empty_segments: bool,
    /// Every directory is listed as its own marker, also one made only as a parent of a
    /// deeper key (file://: markers are the directories themselves).
    every_dir_is_a_marker: bool,
    /// Keys with `.`/`..` segments are accepted (memory); the cloud clients reject them.
    dot_segments: bool,
}

impl Store {
    fn expect(self) -> Expect {
        let cloud = Expect {
            dir_markers: true,
            keeps_metadata: true,
            metadata_change_keeps_etag: false,
            delete_missing_is_ok: false,
            copy_reports_etag: false,
            md5_single: true,
            md5_parts: false,
            part_uploads: true,
            short_part_commits: false,
            upload_if_match_at_start: false,
            listing_has_metadata: false,
            removed_metadata_stays_empty: false,
            appends: true,
            append_min_base: 0,
            one_page_listing: false,
            max_counts_objects_only: false,
            copy_create: true,
            file_and_dir_share_names: true,
            empty_segments: true,
            every_dir_is_a_marker: false,
            dot_segments: false,
        };
        match self {
            Store::Memory => Expect {
                copy_reports_etag: true,
                md5_parts: true,
                dot_segments: true,
                ..cloud
            },
            Store::Local => Expect {
                keeps_metadata: false,
                md5_single: false,
                part_uploads: false,
                appends: false,
                one_page_listing: true,
                file_and_dir_share_names: false,
                empty_segments: false,
                every_dir_is_a_marker: true,
                ..cloud
            },
            Store::Emulated(Kind::Azure) => Expect {
                dir_markers: false,
                listing_has_metadata: true,
                md5_parts: true,
                ..cloud
            },
            Store::Emulated(Kind::S3) => Expect {
                metadata_change_keeps_etag: true,
                copy_create: false,
                delete_missing_is_ok: true,
                append_min_base: 5 * MIB as u64,
                ..cloud
            },
            Store::Emulated(Kind::Gcs) => Expect {
                removed_metadata_stays_empty: true,
                metadata_change_keeps_etag: true,
                listing_has_metadata: true,
                max_counts_objects_only: true,
                copy_reports_etag: true,
                md5_parts: true,
                short_part_commits: true,
                upload_if_match_at_start: true,
                appends: false,
                ..cloud
            },
        }
    }
}

/// A backend of one store, with what keeps the store alive.
struct Subject {
    store: Store,
    expect: Expect,
    backend: Arc<dyn Backend>,
    _emulator: Option<Emulator>,
    _dir: Option<tempfile::TempDir>,
}

fn open_config(url: &str) -> Arc<dyn Backend> {
    let cfg: blobmount_backend::StoreConfig =
        serde_json::from_value(serde_json::json!({ "url": url })).expect("a valid config");
    blobmount_tests::block_on(blobmount_backend::open(&cfg)).expect("open the backend")
}

impl Subject {
    fn start(store: Store) -> Subject {
        let (backend, emulator, dir) = match store {
            Store::Memory => (open_config("mem://"), None, None),
            Store::Local => {
                let dir = tempfile::tempdir().expect("tempdir");
                let b = open_config(&format!("file://{}", dir.path().display()));
                (b, None, Some(dir))
            }
            Store::Emulated(kind) => {
                let emu = Emulator::start(kind);
                let bucket = emu.create_bucket();
                (emu.backend(&bucket), Some(emu), None)
            }
        };
        Subject {
            store,
            expect: store.expect(),
            backend,
            _emulator: emulator,
            _dir: dir,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Helpers

fn meta(pairs: &[(&str, &str)], content_type: Option<&str>) -> PutMeta {
    PutMeta {
        metadata: pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        content_type: content_type.map(str::to_string),
    }
}

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

async fn put(b: &dyn Backend, key: &str, bytes: &[u8], cond: &Precondition) -> Result<PutOutcome> {
    b.put(
        key,
        Bytes::copy_from_slice(bytes),
        &PutMeta::default(),
        cond,
    )
    .await
}

async fn read_all(b: &dyn Backend, key: &str) -> Vec<u8> {
    let size = b.head(key).await.expect("head").size;
    b.get_range(key, 0..size, None).await.expect("get").to_vec()
}

/// The error of `r`, which must have failed.
fn err<T: std::fmt::Debug>(what: &str, r: Result<T>) -> BackendError {
    match r {
        Ok(v) => panic!("{what}: expected an error, got Ok({v:?})"),
        Err(e) => e,
    }
}

fn is_not_found(e: &BackendError) -> bool {
    matches!(e, BackendError::NotFound { .. })
}

fn is_stale(e: &BackendError) -> bool {
    matches!(e, BackendError::PreconditionFailed { .. })
}

fn is_exists(e: &BackendError) -> bool {
    matches!(e, BackendError::AlreadyExists { .. })
}

/// A written object's ETag is the one HEAD reports (where the write reports one).
async fn etag_is_current(b: &dyn Backend, key: &str, out: &PutOutcome) {
    let now = b.head(key).await.expect("head").etag;
    assert!(now.is_some(), "{key}: no ETag from HEAD");
    if let Some(e) = &out.etag {
        assert_eq!(
            Some(e),
            now.as_ref(),
            "{key}: the write reported another ETag"
        );
    }
}

/// Every page of the listing of `prefix` with pages of `max`: objects, prefixes, pages.
async fn list_all(b: &dyn Backend, prefix: &str, max: usize) -> (Vec<String>, Vec<String>, usize) {
    let (mut objects, mut prefixes, mut pages) = (Vec::new(), Vec::new(), 0);
    let mut token = None;
    loop {
        let p: ListPage = b.list_page(prefix, token, max).await.expect("list");
        pages += 1;
        assert!(pages < 1000, "{prefix}: the listing does not end");
        objects.extend(p.objects.into_iter().map(|o| o.key));
        prefixes.extend(p.prefixes);
        token = p.next;
        if token.is_none() {
            break;
        }
    }
    objects.sort();
    prefixes.sort();
    (objects, prefixes, pages)
}

fn strings(v: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
    v.sort();
    v
}

fn temp_file(bytes: &[u8]) -> tempfile::NamedTempFile {
    let f = tempfile::NamedTempFile::new().expect("temp file");
    std::fs::write(f.path(), bytes).expect("write temp file");
    f
}

fn md5(bytes: &[u8]) -> [u8; 16] {
    use md5::Digest;
    md5::Md5::digest(bytes).into()
}

// ---------------------------------------------------------------------------------------
// Checks

/// Capabilities say what the rest of the checks find.
async fn capabilities(s: &Subject) {
    let c = s.backend.capabilities();
    assert_eq!(c.dir_markers, s.expect.dir_markers, "dir_markers");
    assert_eq!(c.append_uploads, s.expect.appends, "append_uploads");
    assert_eq!(
        c.conditional_writes,
        s.store != Store::Local,
        "conditional_writes (file:// checks conditions by HEAD, not atomically)"
    );
    assert_eq!(
        c.native_metadata_update,
        matches!(s.store, Store::Memory | Store::Emulated(Kind::Gcs)),
        "native_metadata_update"
    );
    assert_eq!(
        c.max_object_size.is_none(),
        s.store == Store::Local,
        "max_object_size"
    );
}

/// HEAD and ranged GETs, ranges past the end, and reads pinned to an ETag.
async fn head_and_get_range(s: &Subject) {
    let b = &*s.backend;
    let k = "range/obj";
    let out = put(b, k, b"0123456789", &Precondition::None).await.unwrap();
    etag_is_current(b, k, &out).await;
    let info = b.head(k).await.unwrap();
    assert_eq!(info.key, k);
    assert_eq!(info.size, 10);
    assert!(info.metadata.is_some(), "HEAD reports metadata");
    let get = |r: std::ops::Range<u64>, m: Option<String>| async move {
        b.get_range(k, r, m.as_deref()).await
    };
    assert_eq!(&get(2..5, None).await.unwrap()[..], b"234");
    assert_eq!(&get(0..10, None).await.unwrap()[..], b"0123456789");
    // Past the end: clipped.
    assert_eq!(&get(8..20, None).await.unwrap()[..], b"89");
    // Empty: no bytes, no request.
    assert!(get(5..5, None).await.unwrap().is_empty());
    let (hi, lo) = (7, 3);
    assert!(
        get(hi..lo, None).await.unwrap().is_empty(),
        "a reversed range"
    );
    // Pinned to the ETag read.
    let e1 = info.etag.clone().unwrap();
    assert_eq!(&get(0..4, Some(e1.clone())).await.unwrap()[..], b"0123");
    let wrong = get(0..4, Some("\"not-the-etag\"".into())).await;
    assert!(is_stale(&err("If-Match another ETag", wrong)));
    // Replaced: the old version is not served as the pinned one.
    put(b, k, b"abcdefghij", &Precondition::None).await.unwrap();
    let stale = get(0..4, Some(e1)).await;
    assert!(is_stale(&err("If-Match a replaced version", stale)));
    // Missing.
    assert!(is_not_found(&err(
        "HEAD missing",
        b.head("range/none").await
    )));
    let r = b.get_range("range/none", 0..1, None).await;
    assert!(is_not_found(&err("GET missing", r)));
}

/// A range that starts at or after the end of the object.
async fn range_from_the_end(s: &Subject) {
    let b = &*s.backend;
    let k = "range-end/obj";
    put(b, k, b"0123456789", &Precondition::None).await.unwrap();
    let e = b.head(k).await.unwrap().etag;
    assert!(
        b.get_range(k, 10..20, None).await.unwrap().is_empty(),
        "from the end"
    );
    assert!(
        b.get_range(k, 15..20, None).await.unwrap().is_empty(),
        "past the end"
    );
    let pinned = b.get_range(k, 10..20, e.as_deref()).await.unwrap();
    assert!(pinned.is_empty(), "from the end, pinned");
    let stale = b.get_range(k, 10..20, Some("\"nope\"")).await;
    assert!(is_stale(&err("from the end, another ETag", stale)));
    let missing = b.get_range("range-end/none", 10..20, None).await;
    assert!(is_not_found(&err("from the end of nothing", missing)));
    // An empty object; an empty range asks nothing, not even whether the key exists.
    put(b, "range-end/empty", b"", &Precondition::None)
        .await
        .unwrap();
    let r = b.get_range("range-end/empty", 0..4096, None).await.unwrap();
    assert!(r.is_empty(), "an empty object");
    assert!(
        b.get_range("range-end/none", 5..5, None)
            .await
            .unwrap()
            .is_empty()
    );
}

/// `put` under each precondition, with the right and a wrong ETag.
async fn put_preconditions(s: &Subject) {
    let b = &*s.backend;
    let k = "cond/obj";
    let created = put(b, k, b"one", &Precondition::IfNotExists).await.unwrap();
    etag_is_current(b, k, &created).await;
    let again = put(b, k, b"two", &Precondition::IfNotExists).await;
    assert!(is_exists(&err("create over an object", again)));
    let e1 = b.head(k).await.unwrap().etag.unwrap();
    let wrong = put(b, k, b"two", &Precondition::IfMatch("\"nope\"".into())).await;
    assert!(is_stale(&err("If-Match another ETag", wrong)));
    assert_eq!(read_all(b, k).await, b"one");
    let replaced = put(b, k, b"two", &Precondition::IfMatch(e1.clone()))
        .await
        .unwrap();
    etag_is_current(b, k, &replaced).await;
    let e2 = b.head(k).await.unwrap().etag.unwrap();
    assert_ne!(e1, e2, "a replaced object has a new ETag");
    let stale = put(b, k, b"three", &Precondition::IfMatch(e1)).await;
    assert!(is_stale(&err("If-Match the old ETag", stale)));
    let over = put(b, k, b"four", &Precondition::None).await.unwrap();
    etag_is_current(b, k, &over).await;
    assert_eq!(read_all(b, k).await, b"four");
    let missing = put(b, "cond/none", b"x", &Precondition::IfMatch(e2)).await;
    let e = err("If-Match on a missing key", missing);
    assert!(is_stale(&e), "{e:?}");
    assert!(is_not_found(&err(
        "nothing written",
        b.head("cond/none").await
    )));
}

/// User metadata and content type round-trip through `put` and HEAD.
async fn metadata_round_trip(s: &Subject) {
    let b = &*s.backend;
    let k = "meta/obj";
    let m = meta(
        &[
            ("mode", "100644"),
            ("mtime", "1700000000.5"),
            ("MixedCase", "Yes"),
        ],
        Some("text/plain"),
    );
    b.put(k, Bytes::from_static(b"x"), &m, &Precondition::None)
        .await
        .unwrap();
    let info = b.head(k).await.unwrap();
    let got = info.metadata.unwrap();
    if s.expect.keeps_metadata {
        // Keys come back lower-case from every store (Azure also refuses '-' in them).
        let want = meta(
            &[
                ("mode", "100644"),
                ("mtime", "1700000000.5"),
                ("mixedcase", "Yes"),
            ],
            None,
        );
        assert_eq!(got, want.metadata);
        assert_eq!(info.content_type.as_deref(), Some("text/plain"));
    } else {
        assert!(got.is_empty(), "{got:?}");
        assert_eq!(info.content_type, None);
    }
}

/// `set_metadata` replaces the user metadata, conditional on the ETag; the data stays.
async fn set_metadata(s: &Subject) {
    let b = &*s.backend;
    let k = "setmeta/obj";
    let m1 = meta(&[("a", "1"), ("keep", "x")], None);
    b.put(k, Bytes::from_static(b"data"), &m1, &Precondition::None)
        .await
        .unwrap();
    let e1 = b.head(k).await.unwrap().etag.unwrap();
    let m2 = meta(&[("b", "2"), ("keep", "y")], None);
    let out = b.set_metadata(k, &m2, Some(&e1)).await.unwrap();
    etag_is_current(b, k, &out).await;
    let e2 = b.head(k).await.unwrap().etag.unwrap();
    assert_eq!(
        e1 == e2,
        s.expect.metadata_change_keeps_etag,
        "{e1} -> {e2}"
    );
    let info = b.head(k).await.unwrap();
    let mut want = if s.expect.keeps_metadata {
        m2.metadata.clone()
    } else {
        Default::default()
    };
    if s.expect.removed_metadata_stays_empty {
        want.insert("a".into(), String::new());
    }
    assert_eq!(
        info.metadata.unwrap(),
        want,
        "metadata replaced, not merged"
    );
    assert_eq!(read_all(b, k).await, b"data");
    // Checked on every store (file:// keeps no metadata, but it checks the condition).
    put(b, k, b"new data", &Precondition::None).await.unwrap();
    let stale = b.set_metadata(k, &m1, Some(&e2)).await;
    assert!(is_stale(&err("set_metadata with a stale ETag", stale)));
    let unconditional = b.set_metadata(k, &m1, None).await.unwrap();
    etag_is_current(b, k, &unconditional).await;
    let missing = b.set_metadata("setmeta/none", &m1, None).await;
    assert!(is_not_found(&err("set_metadata on a missing key", missing)));
}

/// `put_file`: small files in one request, large ones in parts, under each condition.
async fn put_file(s: &Subject) {
    let b = &*s.backend;
    let m = meta(&[("mode", "100600")], None);
    let small = data(1000, 1);
    let f = temp_file(&small);
    let k = "file/small";
    let out = b
        .put_file(k, f.path(), &m, &Precondition::IfNotExists)
        .await
        .unwrap();
    etag_is_current(b, k, &out).await;
    assert_eq!(read_all(b, k).await, small);
    let again = b
        .put_file(k, f.path(), &m, &Precondition::IfNotExists)
        .await;
    assert!(is_exists(&err("put_file create over an object", again)));
    let wrong = b
        .put_file(k, f.path(), &m, &Precondition::IfMatch("\"nope\"".into()))
        .await;
    assert!(is_stale(&err("put_file If-Match another ETag", wrong)));
    // Larger than one request takes (32 MiB): in parts where the store has them.
    let large = data(33 * MIB, 2);
    let f = temp_file(&large);
    let k = "file/large";
    let out = b
        .put_file(k, f.path(), &m, &Precondition::IfNotExists)
        .await
        .unwrap();
    etag_is_current(b, k, &out).await;
    assert!(read_all(b, k).await == large, "large put_file content");
    let info = b.head(k).await.unwrap();
    if s.expect.keeps_metadata {
        assert_eq!(info.metadata.unwrap(), m.metadata);
    }
    let e = info.etag.unwrap();
    let f = temp_file(&data(33 * MIB, 3));
    let out = b
        .put_file(k, f.path(), &m, &Precondition::IfMatch(e.clone()))
        .await
        .unwrap();
    etag_is_current(b, k, &out).await;
    let stale = b.put_file(k, f.path(), &m, &Precondition::IfMatch(e)).await;
    assert!(is_stale(&err(
        "large put_file If-Match the old ETag",
        stale
    )));
    let missing = b
        .put_file(
            "file/none",
            f.path(),
            &m,
            &Precondition::IfMatch("\"x\"".into()),
        )
        .await;
    let e = err("put_file If-Match on a missing key", missing);
    assert!(is_stale(&e), "{e:?}");
}

/// `put_appended` sends only the new bytes where the store can keep the old ones.
async fn put_appended(s: &Subject) {
    let b = &*s.backend;
    let m = PutMeta::default();
    let k = "append/obj";
    let old = data(6 * MIB, 3);
    put(b, k, &old, &Precondition::None).await.unwrap();
    let etag = b.head(k).await.unwrap().etag.unwrap();
    let mut all = old.clone();
    all.extend_from_slice(b"appended bytes\n");
    let f = temp_file(&all);
    let base = AppendBase {
        etag: etag.clone(),
        len: old.len() as u64,
    };
    let cond = Precondition::IfMatch(etag.clone());
    let r = b.put_appended(k, &base, f.path(), &m, &cond).await.unwrap();
    if !s.expect.appends {
        assert_eq!(r, None, "no append path: the caller uploads it whole");
        assert!(read_all(b, k).await == old, "nothing changed");
        return;
    }
    let out = r.expect("an append");
    etag_is_current(b, k, &out).await;
    assert!(read_all(b, k).await == all, "appended content");
    // From a version that is no longer there: refused, nothing changed.
    let mut more = all.clone();
    more.extend_from_slice(b"more\n");
    let f = temp_file(&more);
    let stale = b.put_appended(k, &base, f.path(), &m, &cond).await;
    assert!(is_stale(&err("append to a replaced version", stale)));
    assert!(read_all(b, k).await == all, "nothing changed");
    // A small object: appended where the store can, declined otherwise.
    let k = "append/small";
    put(b, k, b"small\n", &Precondition::None).await.unwrap();
    let etag = b.head(k).await.unwrap().etag.unwrap();
    let f = temp_file(b"small\nmore\n");
    let base = AppendBase {
        etag: etag.clone(),
        len: 6,
    };
    let r = b
        .put_appended(k, &base, f.path(), &m, &Precondition::IfMatch(etag))
        .await
        .unwrap();
    if base.len < s.expect.append_min_base {
        assert_eq!(r, None, "too small to reuse");
        assert_eq!(read_all(b, k).await, b"small\n");
    } else {
        assert!(r.is_some(), "small objects append too");
        assert_eq!(read_all(b, k).await, b"small\nmore\n");
    }
}

/// Delimiter listings: objects and common prefixes, a file and a directory of the same name,
/// odd names, pages and tokens, listings without delimiter.
async fn listing(s: &Subject) {
    let b = &*s.backend;
    let x = &s.expect;
    let mut keys = vec![
        "ls/a",
        "ls/b/c",
        "ls/b/d",
        "ls/foo/x",
        "ls/sp ace",
        "ls/ünï €",
        "ls/e//b",
        "ls/zz",
    ];
    if x.file_and_dir_share_names {
        keys.push("ls/foo");
    }
    if x.dir_markers {
        keys.push("ls/foo/");
    }
    for k in &keys {
        put(b, k, k.as_bytes(), &Precondition::None)
            .await
            .unwrap_or_else(|e| panic!("put {k:?}: {e}"));
        if !k.ends_with('/') {
            assert_eq!(read_all(b, k).await, k.as_bytes(), "{k:?}");
        }
    }
    let mut want = vec!["ls/a", "ls/sp ace", "ls/zz", "ls/ünï €"];
    if x.file_and_dir_share_names {
        want.push("ls/foo");
    }
    if x.every_dir_is_a_marker {
        want.push("ls/");
    }
    let (objects, prefixes, pages) = list_all(b, "ls/", 1000).await;
    assert_eq!(objects, strings(&want));
    assert_eq!(prefixes, strings(&["ls/b/", "ls/e/", "ls/foo/"]));
    assert_eq!(pages, 1);
    let entries = objects.len() + prefixes.len();
    let n_objects = objects.len();
    // Small pages give the same entries, a page at a time.
    let (o2, p2, pages) = list_all(b, "ls/", 2).await;
    assert_eq!((o2, p2), (objects, prefixes));
    let p = b.list_page("ls/", None, 2).await.unwrap();
    if x.one_page_listing {
        assert_eq!(pages, 1, "one page whatever the size asked");
        assert_eq!(p.objects.len() + p.prefixes.len(), entries);
        assert!(p.next.is_none());
    } else if x.max_counts_objects_only {
        assert!(
            pages >= n_objects.div_ceil(2),
            "{pages} pages of 2 for {n_objects} objects"
        );
        assert!(p.objects.len() <= 2);
        assert!(p.next.is_some());
    } else {
        assert!(
            pages >= entries.div_ceil(2),
            "{pages} pages of 2 for {entries}"
        );
        assert!(p.objects.len() + p.prefixes.len() <= 2);
        assert!(p.next.is_some());
    }
    // A file and a directory of one name: the directory's own marker is listed inside it.
    let (objects, prefixes, _) = list_all(b, "ls/foo/", 1000).await;
    let mut want = vec!["ls/foo/x"];
    if x.dir_markers {
        want.push("ls/foo/");
    }
    assert_eq!(objects, strings(&want));
    assert!(prefixes.is_empty());
    let (objects, _, _) = list_all(b, "ls/b/", 1000).await;
    let mut want_b = vec!["ls/b/c", "ls/b/d"];
    if x.every_dir_is_a_marker {
        want_b.push("ls/b/");
    }
    assert_eq!(objects, strings(&want_b));
    // An empty segment.
    let (objects, prefixes, _) = list_all(b, "ls/e/", 1000).await;
    if x.empty_segments {
        assert!(objects.is_empty(), "{objects:?}");
        assert_eq!(prefixes, strings(&["ls/e//"]));
        let (objects, _, _) = list_all(b, "ls/e//", 1000).await;
        assert_eq!(objects, strings(&["ls/e//b"]));
    } else {
        assert_eq!(objects, strings(&["ls/e/", "ls/e/b"]), "folded");
        assert!(prefixes.is_empty(), "{prefixes:?}");
    }
    // Nothing there.
    let p = b.list_page("ls/none/", None, 10).await.unwrap();
    assert!(p.objects.is_empty() && p.prefixes.is_empty() && p.next.is_none());
    // Without delimiter: any depth, no next page.
    let p = b.list_under("ls/b/", 10).await.unwrap();
    let mut under: Vec<String> = p.objects.iter().map(|o| o.key.clone()).collect();
    under.sort();
    assert_eq!(under, strings(&want_b));
    assert!(p.prefixes.is_empty() && p.next.is_none());
    let p = b.list_under("ls/", 1).await.unwrap();
    let n = p.objects.len() + p.prefixes.len();
    if x.one_page_listing {
        assert!(n > 1, "{n}: everything, whatever `max` says");
    } else {
        assert_eq!(n, 1);
    }
    assert!(p.next.is_none());
}

/// Listings carry user metadata only where the store returns it with the listing; the
/// BlobFuse2 directory marker (a blob with `hdi_isfolder=true`) round-trips on every store
/// that keeps metadata.
async fn listing_metadata(s: &Subject) {
    let b = &*s.backend;
    let m = meta(&[("hdi_isfolder", "true")], None);
    b.put("lm/d", Bytes::new(), &m, &Precondition::IfNotExists)
        .await
        .unwrap();
    let page = b.list_page("lm/", None, 10).await.unwrap();
    let listed: Vec<_> = page.objects.iter().filter(|o| o.key == "lm/d").collect();
    assert_eq!(listed.len(), 1, "{page:?}");
    assert_eq!(listed[0].size, 0);
    assert!(listed[0].etag.is_some());
    if s.expect.listing_has_metadata {
        assert_eq!(listed[0].metadata.as_ref(), Some(&m.metadata));
    } else {
        assert_eq!(listed[0].metadata, None);
    }
    let head = b.head("lm/d").await.unwrap().metadata.unwrap();
    if s.expect.keeps_metadata {
        assert_eq!(head, m.metadata);
    } else {
        assert!(head.is_empty());
    }
}

/// A file and a directory of the same name on a store that cannot hold both.
async fn file_and_dir_of_one_name(s: &Subject) {
    let b = &*s.backend;
    put(b, "fd/foo/x", b"x", &Precondition::None).await.unwrap();
    let r = put(b, "fd/foo", b"f", &Precondition::None).await;
    if s.expect.file_and_dir_share_names {
        r.unwrap();
        assert_eq!(read_all(b, "fd/foo").await, b"f");
    } else {
        let e = err("a file where a directory is", r);
        assert!(!is_not_found(&e), "{e:?}");
    }
    assert_eq!(read_all(b, "fd/foo/x").await, b"x");
}

/// Directory markers: written, read, listed and deleted where the store has them.
async fn dir_markers(s: &Subject) {
    let b = &*s.backend;
    if !s.expect.dir_markers {
        // Azure: the backend writes no `dir/` keys; the core marks directories with
        // `hdi_isfolder` blobs instead (see `listing_metadata`).
        assert!(!b.capabilities().dir_markers);
        return;
    }
    put(b, "dm/d/", b"", &Precondition::IfNotExists)
        .await
        .unwrap();
    let again = put(b, "dm/d/", b"", &Precondition::IfNotExists).await;
    assert!(is_exists(&err("marker created twice", again)));
    let info = b.head("dm/d/").await.unwrap();
    assert_eq!(info.size, 0);
    assert!(b.get_range("dm/d/", 0..10, None).await.unwrap().is_empty());
    let (objects, prefixes, _) = list_all(b, "dm/", 100).await;
    let want: &[&str] = if s.expect.every_dir_is_a_marker {
        &["dm/"]
    } else {
        &[]
    };
    assert_eq!(objects, strings(want));
    assert_eq!(prefixes, strings(&["dm/d/"]));
    let (objects, _, _) = list_all(b, "dm/d/", 100).await;
    assert_eq!(
        objects,
        strings(&["dm/d/"]),
        "the marker lists inside itself"
    );
    b.delete("dm/d/").await.unwrap();
    assert!(is_not_found(&err("deleted marker", b.head("dm/d/").await)));
}

/// Keys the cloud clients cannot represent.
async fn dot_segments(s: &Subject) {
    let b = &*s.backend;
    let r = put(b, "dots/x/../y", b"x", &Precondition::None).await;
    if s.expect.dot_segments {
        r.unwrap();
        assert_eq!(read_all(b, "dots/x/../y").await, b"x");
    } else {
        let e = err("a '..' segment", r);
        assert!(matches!(e, BackendError::InvalidKey { .. }), "{e:?}");
    }
}

/// Delete, and delete of a key that is not there.
async fn delete(s: &Subject) {
    let b = &*s.backend;
    put(b, "del/obj", b"x", &Precondition::None).await.unwrap();
    b.delete("del/obj").await.unwrap();
    assert!(is_not_found(&err("deleted", b.head("del/obj").await)));
    let again = b.delete("del/obj").await;
    if s.expect.delete_missing_is_ok {
        again.unwrap();
    } else {
        assert!(is_not_found(&err("delete a missing key", again)));
    }
}

/// Server-side copy under each condition; metadata travels with the data.
async fn copy(s: &Subject) {
    let b = &*s.backend;
    let m = meta(&[("mode", "100755")], None);
    b.put(
        "cp/src",
        Bytes::from_static(b"source"),
        &m,
        &Precondition::None,
    )
    .await
    .unwrap();
    let created = b.copy("cp/src", "cp/dst", &Precondition::IfNotExists).await;
    let out = if s.expect.copy_create {
        created.unwrap()
    } else {
        let e = err("a conditional create by copy", created);
        assert!(matches!(e, BackendError::NotSupported(_)), "{e:?}");
        assert!(is_not_found(&err("nothing copied", b.head("cp/dst").await)));
        b.copy("cp/src", "cp/dst", &Precondition::None)
            .await
            .unwrap()
    };
    assert_eq!(out.etag.is_some(), s.expect.copy_reports_etag, "{out:?}");
    etag_is_current(b, "cp/dst", &out).await;
    assert_eq!(read_all(b, "cp/dst").await, b"source");
    let want = if s.expect.keeps_metadata {
        m.metadata.clone()
    } else {
        Default::default()
    };
    assert_eq!(b.head("cp/dst").await.unwrap().metadata.unwrap(), want);
    let again = b.copy("cp/src", "cp/dst", &Precondition::IfNotExists).await;
    let e = err("copy create over an object", again);
    if s.expect.copy_create {
        assert!(is_exists(&e), "{e:?}");
    } else {
        assert!(matches!(e, BackendError::NotSupported(_)), "{e:?}");
    }
    let wrong = b
        .copy(
            "cp/src",
            "cp/dst",
            &Precondition::IfMatch("\"nope\"".into()),
        )
        .await;
    assert!(is_stale(&err("copy If-Match another ETag", wrong)));
    put(b, "cp/src", b"second", &Precondition::None)
        .await
        .unwrap();
    let e = b.head("cp/dst").await.unwrap().etag.unwrap();
    b.copy("cp/src", "cp/dst", &Precondition::IfMatch(e))
        .await
        .unwrap();
    assert_eq!(read_all(b, "cp/dst").await, b"second");
    b.copy("cp/src", "cp/dst", &Precondition::None)
        .await
        .unwrap();
    let missing = b.copy("cp/none", "cp/dst2", &Precondition::None).await;
    assert!(is_not_found(&err("copy from a missing key", missing)));
    let to_missing = b
        .copy("cp/src", "cp/dst3", &Precondition::IfMatch("\"x\"".into()))
        .await;
    let e = err("copy If-Match onto a missing key", to_missing);
    assert!(is_stale(&e), "{e:?}");
}

/// A copy that takes a content type of its own (a rename): data and user metadata are the
/// source's, the type is the one asked for, and the source is untouched.
async fn copy_typed(s: &Subject) {
    let b = &*s.backend;
    let m = meta(&[("mode", "100640")], Some("application/json"));
    b.put(
        "ct/src.json",
        Bytes::from_static(b"{}"),
        &m,
        &Precondition::None,
    )
    .await
    .unwrap();
    let out = b
        .copy_typed("ct/src.json", "ct/dst.csv", "text/csv", &Precondition::None)
        .await
        .unwrap();
    if out.etag.is_some() {
        etag_is_current(b, "ct/dst.csv", &out).await;
    }
    assert_eq!(read_all(b, "ct/dst.csv").await, b"{}");
    let info = b.head("ct/dst.csv").await.unwrap();
    let src = b.head("ct/src.json").await.unwrap();
    if s.expect.keeps_metadata {
        assert_eq!(info.metadata.unwrap(), m.metadata);
        assert_eq!(info.content_type.as_deref(), Some("text/csv"));
        assert_eq!(src.content_type.as_deref(), Some("application/json"));
    } else {
        assert_eq!(info.content_type, None);
    }
    let missing = b
        .copy_typed("ct/none", "ct/dst2", "text/plain", &Precondition::None)
        .await;
    assert!(is_not_found(&err("typed copy from a missing key", missing)));
}

/// A copy carrying metadata of its own (a rename after a chmod): the copy has the new user
/// metadata (none of the source's) and the type asked for, or the source's when none is
/// asked for; the source keeps its own; a `source_etag` the source no longer has fails
/// with `PreconditionFailed` and writes no copy.
async fn copy_as(s: &Subject) {
    let b = &*s.backend;
    let m = meta(
        &[("mode", "100640"), ("old", "x")],
        Some("application/json"),
    );
    let v1 = b
        .put(
            "ca/src.json",
            Bytes::from_static(b"{}"),
            &m,
            &Precondition::None,
        )
        .await
        .unwrap();
    let held = meta(&[("mode", "100600"), ("mtime", "7")], Some("text/csv"));
    let out = b
        .copy_as(
            "ca/src.json",
            "ca/dst.csv",
            &held,
            v1.etag.as_deref(),
            Some("application/json"),
            &Precondition::None,
        )
        .await
        .unwrap();
    if out.etag.is_some() {
        etag_is_current(b, "ca/dst.csv", &out).await;
    }
    assert_eq!(read_all(b, "ca/dst.csv").await, b"{}");
    let info = b.head("ca/dst.csv").await.unwrap();
    let src = b.head("ca/src.json").await.unwrap();
    if s.expect.keeps_metadata {
        assert_eq!(info.metadata.unwrap(), held.metadata);
        assert_eq!(info.content_type.as_deref(), Some("text/csv"));
        assert_eq!(src.metadata.unwrap(), m.metadata, "the source is untouched");
        assert_eq!(src.content_type.as_deref(), Some("application/json"));
    }
    // No type asked for and none known: the copy keeps the source's.
    let untyped = meta(&[("mode", "100444")], None);
    b.copy_as(
        "ca/src.json",
        "ca/same",
        &untyped,
        None,
        None,
        &Precondition::None,
    )
    .await
    .unwrap();
    let info = b.head("ca/same").await.unwrap();
    if s.expect.keeps_metadata {
        assert_eq!(info.metadata.unwrap(), untyped.metadata);
        assert_eq!(info.content_type.as_deref(), Some("application/json"));
    }
    // Another client replaced the source: the version the caller knows is gone.
    b.put(
        "ca/src.json",
        Bytes::from_static(b"[1]"),
        &m,
        &Precondition::None,
    )
    .await
    .unwrap();
    let stale = b
        .copy_as(
            "ca/src.json",
            "ca/dst2.csv",
            &held,
            v1.etag.as_deref(),
            Some("application/json"),
            &Precondition::None,
        )
        .await;
    if v1.etag.is_some() {
        assert!(is_stale(&err("copy of a replaced source", stale)));
        assert!(
            is_not_found(&err(
                "copy after a stale source",
                b.head("ca/dst2.csv").await
            )),
            "no copy is written"
        );
    }
    let missing = b
        .copy_as("ca/none", "ca/dst3", &held, None, None, &Precondition::None)
        .await;
    assert!(is_not_found(&err("copy from a missing key", missing)));
}

/// Uploads in parts: parts in order, commit under a condition, abort, metadata.
async fn uploads_in_parts(s: &Subject) {
    let b = s.backend.clone();
    let m = meta(&[("mode", "100644")], Some("application/x-test"));
    let k = "parts/obj";
    let started = b
        .clone()
        .start_upload(k, &m, &Precondition::IfNotExists)
        .await
        .unwrap();
    let Some(mut up) = started else {
        assert!(!s.expect.part_uploads, "no uploads in parts");
        return;
    };
    assert!(s.expect.part_uploads);
    let (p1, p2, tail) = (data(5 * MIB, 4), data(5 * MIB, 5), data(1000, 6));
    let (f1, f2) = (
        up.put_part(Bytes::from(p1.clone())),
        up.put_part(Bytes::from(p2.clone())),
    );
    // Parts landing out of order still commit in the order they were sent.
    let (r2, r1) = futures::join!(f2, f1);
    r1.unwrap();
    r2.unwrap();
    up.put_part(Bytes::from(tail.clone())).await.unwrap();
    let visible = b.head(k).await;
    if s.expect.short_part_commits {
        let size = visible.unwrap().size;
        assert_eq!(size, 10 * MIB as u64 + 1000, "committed by the last part");
    } else {
        assert!(is_not_found(&err("invisible before the commit", visible)));
    }
    let out = up.complete(&Precondition::IfNotExists).await.unwrap();
    etag_is_current(&*b, k, &out).await;
    let want = [p1, p2, tail].concat();
    assert!(read_all(&*b, k).await == want, "committed content");
    let info = b.head(k).await.unwrap();
    assert_eq!(info.metadata.unwrap(), m.metadata);
    assert_eq!(info.content_type, m.content_type);
    // Another create of the same key loses.
    let create = b
        .clone()
        .start_upload(k, &m, &Precondition::IfNotExists)
        .await;
    refused_upload(s, create, &Precondition::IfNotExists, is_exists).await;
    // A replacement of a version that is gone.
    let stale = Precondition::IfMatch("\"nope\"".into());
    let replace = b.clone().start_upload(k, &m, &stale).await;
    refused_upload(s, replace, &stale, is_stale).await;
    assert!(read_all(&*b, k).await == want, "nothing changed");
    // Abort: nothing becomes visible.
    let mut up = b
        .clone()
        .start_upload("parts/aborted", &m, &Precondition::None)
        .await
        .unwrap()
        .unwrap();
    up.put_part(Bytes::from(data(5 * MIB, 7))).await.unwrap();
    up.abort().await.unwrap();
    assert!(is_not_found(&err("aborted", b.head("parts/aborted").await)));
}

/// An upload under a condition that does not hold fails, and nothing of it becomes visible:
/// when it starts (GCS, `If-Match`), at the short last part that commits it (GCS), else at
/// the commit.
async fn refused_upload(
    s: &Subject,
    started: Result<Option<Box<dyn blobmount_backend::PartUpload>>>,
    cond: &Precondition,
    refused: fn(&BackendError) -> bool,
) {
    if s.expect.upload_if_match_at_start && matches!(cond, Precondition::IfMatch(_)) {
        let e = err("upload started under a failing condition", started);
        assert!(refused(&e), "{e:?}");
        return;
    }
    let mut up = started.unwrap().unwrap();
    let last = up.put_part(Bytes::from(data(1000, 8))).await;
    if s.expect.short_part_commits {
        let e = err("last part under a failing condition", last);
        assert!(refused(&e), "{e:?}");
        up.abort().await.unwrap();
        return;
    }
    last.unwrap();
    let e = err("commit under a failing condition", up.complete(cond).await);
    assert!(refused(&e), "{e:?}");
}

/// The MD5 the store reports, pinned to the ETag read.
async fn content_md5(s: &Subject) {
    let b = &*s.backend;
    let k = "md5/obj";
    put(b, k, b"hello md5", &Precondition::None).await.unwrap();
    let e = b.head(k).await.unwrap().etag.unwrap();
    let got = b.content_md5(k, &e).await.unwrap();
    let want = s.expect.md5_single.then(|| md5(b"hello md5"));
    assert_eq!(got, want);
    let stale = b.content_md5(k, "\"nope\"").await;
    if s.store == Store::Local {
        // No checksum, so nothing to pin: the answer is None whatever the ETag.
        assert_eq!(stale.unwrap(), None);
    } else {
        assert!(is_stale(&err("MD5 of another version", stale)));
        let missing = b.content_md5("md5/none", &e).await;
        assert!(is_not_found(&err("MD5 of a missing key", missing)));
    }
    // Assembled from parts.
    let Some(mut up) = s
        .backend
        .clone()
        .start_upload("md5/parts", &PutMeta::default(), &Precondition::None)
        .await
        .unwrap()
    else {
        assert!(!s.expect.part_uploads);
        return;
    };
    let body = data(5 * MIB + 10, 9);
    up.put_part(Bytes::copy_from_slice(&body[..5 * MIB]))
        .await
        .unwrap();
    up.put_part(Bytes::copy_from_slice(&body[5 * MIB..]))
        .await
        .unwrap();
    up.complete(&Precondition::None).await.unwrap();
    let e = b.head("md5/parts").await.unwrap().etag.unwrap();
    let got = b.content_md5("md5/parts", &e).await.unwrap();
    assert_eq!(got, s.expect.md5_parts.then(|| md5(&body)));
}

/// The kind of checksum each store prefers for read checks, and its CRC32C where it keeps
/// one (GCS, for every object; the memory store keeps both kinds), pinned to the ETag read.
async fn content_crc32c(s: &Subject) {
    let b = &*s.backend;
    let (kind, keeps_crc) = match s.store {
        Store::Emulated(Kind::Gcs) => (ChecksumKind::Crc32c, true),
        Store::Memory => (ChecksumKind::Md5, true),
        Store::Local | Store::Emulated(Kind::Azure | Kind::S3) => (ChecksumKind::Md5, false),
    };
    assert_eq!(b.checksum_kind(), kind);
    let k = "crc/obj";
    put(b, k, b"hello world", &Precondition::None)
        .await
        .unwrap();
    let e = b.head(k).await.unwrap().etag.unwrap();
    let got = b
        .content_checksum(k, &e, ChecksumKind::Crc32c)
        .await
        .unwrap();
    // GCS's documented example: "hello world" is crc32c=yZRlqg==.
    assert_eq!(got, keeps_crc.then_some(StoredSum::Crc32c(0xc994_65aa)));
    let got = b.content_checksum(k, &e, ChecksumKind::Md5).await.unwrap();
    assert_eq!(
        got,
        s.expect
            .md5_single
            .then(|| StoredSum::Md5(md5(b"hello world")))
    );
    if s.store != Store::Local {
        let stale = b
            .content_checksum(k, "\"nope\"", ChecksumKind::Crc32c)
            .await;
        assert!(is_stale(&err("CRC32C of another version", stale)));
    }
}

// ---------------------------------------------------------------------------------------
// Driver

type Check = for<'a> fn(&'a Subject) -> futures::future::BoxFuture<'a, ()>;

macro_rules! checks {
    ($($name:ident),* $(,)?) => {
        &[$((stringify!($name), (|s| Box::pin($name(s))) as Check)),*]
    };
}

const CHECKS: &[(&str, Check)] = checks!(
    capabilities,
    head_and_get_range,
    range_from_the_end,
    put_preconditions,
    metadata_round_trip,
    set_metadata,
    put_file,
    put_appended,
    listing,
    listing_metadata,
    file_and_dir_of_one_name,
    dir_markers,
    dot_segments,
    delete,
    copy,
    copy_typed,
    copy_as,
    uploads_in_parts,
    content_md5,
    content_crc32c,
);

/// Run every check against `store`; fail naming each check that failed.
fn conformance(store: Store) {
    let s = Subject::start(store);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let mut failed = Vec::new();
    for (name, check) in CHECKS {
        let r = std::panic::catch_unwind(AssertUnwindSafe(|| rt.block_on(check(&s))));
        if let Err(p) = r {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            failed.push(format!("{name}: {msg}"));
        }
    }
    assert!(
        failed.is_empty(),
        "{store:?}: {} of {} checks failed:\n{}",
        failed.len(),
        CHECKS.len(),
        failed.join("\n")
    );
}

#[test]
fn mem() {
    conformance(Store::Memory);
}

#[test]
fn file() {
    conformance(Store::Local);
}

#[test]
fn azurite() {
    conformance(Store::Emulated(Kind::Azure));
}

#[test]
fn moto_s3() {
    conformance(Store::Emulated(Kind::S3));
}

#[test]
fn fake_gcs() {
    conformance(Store::Emulated(Kind::Gcs));
}
