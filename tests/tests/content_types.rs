//! Content types through a real mount on each emulator: every upload path (a whole PUT, an
//! upload in parts, a rename) stores the type of the file's name, read back through the
//! store's own API (not the mount); a deliberate type another tool set survives a rewrite;
//! and the type costs no request of its own.

use blobmount_tests::proxy::CountingProxy;
use blobmount_tests::{Emulator, Kind, Mount, MountSpec, sh};

fn mount_with_types(
    emu: &Emulator,
    bucket: &str,
    proxy: &CountingProxy,
) -> (Mount, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("blobmount.yaml");
    std::fs::write(
        &cfg,
        "write:\n  part-size-mib: 5\n  content-types:\n    \".LOG\": text/x-log\n    \".parquet\": application/vnd.apache.parquet\n",
    )
    .unwrap();
    let mut spec = MountSpec::for_emulator(emu, bucket);
    spec.endpoint = Some(emu.endpoint_on(proxy.port()));
    spec.args = vec!["--config".into(), cfg.to_string_lossy().into_owned()];
    (Mount::start(&spec), dir)
}

/// Requests that write something (what an upload sends), without reads and listings.
fn writes(reqs: &[String]) -> Vec<&String> {
    reqs.iter()
        .filter(|r| !(r.starts_with("GET ") || r.starts_with("HEAD ")))
        .collect()
}

fn content_types(kind: Kind) {
    let emu = Emulator::start(kind);
    let bucket = emu.create_bucket();
    let proxy = CountingProxy::start(emu.port());
    let (m, _cfg) = mount_with_types(&emu, &bucket, &proxy);
    let d = m.path();
    let ct = |key: &str| emu.content_type(&bucket, key);

    // Small files: one whole-object write each, and nothing else that writes.
    proxy.take();
    std::fs::write(m.p("index.HTML"), b"<p>hi</p>").unwrap();
    let sent = proxy.take();
    assert_eq!(
        writes(&sent).len(),
        1,
        "one write for a small file: {sent:?}"
    );
    for (name, data) in [
        ("app.log", &b"log line\n"[..]),
        ("data.json", b"{}"),
        ("a.tar.gz", b"\x1f\x8b"),
        ("Makefile", b"all:\n"),
        (".bashrc", b"set -e\n"),
    ] {
        std::fs::write(m.p(name), data).unwrap();
    }
    assert_eq!(ct("index.HTML").as_deref(), Some("text/html"));
    assert_eq!(ct("app.log").as_deref(), Some("text/x-log"));
    assert_eq!(ct("data.json").as_deref(), Some("application/json"));
    assert_eq!(ct("a.tar.gz").as_deref(), Some("application/gzip"));
    assert_eq!(ct("Makefile").as_deref(), Some("application/octet-stream"));
    assert_eq!(ct(".bashrc").as_deref(), Some("application/octet-stream"));

    // Larger than a part (5 MiB): streamed in parts, the type set when the upload starts.
    proxy.take();
    sh(
        d,
        "dd if=/dev/urandom of=big.parquet bs=1M count=12 status=none && dd if=/dev/urandom of=clip.mp4 bs=1M count=11 status=none",
    );
    let sent = proxy.take();
    let in_parts = match kind {
        Kind::Azure => "comp=block&",
        Kind::S3 => "uploadId=",
        Kind::Gcs => "uploadType=resumable",
    };
    assert!(
        sent.iter().any(|r| r.contains(in_parts)),
        "uploaded in parts: {sent:?}"
    );
    assert!(
        !sent
            .iter()
            .any(|r| r.starts_with("PATCH ") || r.contains("comp=properties")),
        "no request of its own for the type: {sent:?}"
    );
    assert_eq!(
        ct("big.parquet").as_deref(),
        Some("application/vnd.apache.parquet")
    );
    assert_eq!(ct("clip.mp4").as_deref(), Some("video/mp4"));
    assert_eq!(emu.get_object(&bucket, "big.parquet").len(), 12 << 20);

    // A rename: the new name's type wins over the old object's, small and large; on ADLS
    // Gen2 the path moves in one request and keeps its type (docs/semantics.md).
    sh(d, "mv data.json data.csv && mv clip.mp4 clip.webm");
    if emu.dfs.is_some() {
        assert_eq!(ct("data.csv").as_deref(), Some("application/json"));
        assert_eq!(ct("clip.webm").as_deref(), Some("video/mp4"));
    } else {
        assert_eq!(ct("data.csv").as_deref(), Some("text/csv"));
        assert_eq!(ct("clip.webm").as_deref(), Some("video/webm"));
    }
    assert_eq!(emu.get_object(&bucket, "data.csv"), b"{}");

    // A deliberate type set by another tool survives a rewrite of the same name; a
    // rename still takes the new name's.
    emu.put_object_typed(&bucket, "custom.txt", b"one", "text/x-mine");
    emu.put_object_typed(&bucket, "other.txt", b"one", "text/x-mine");
    // Past the mount's listing and negative-lookup TTLs (1 s), so it sees them.
    std::thread::sleep(std::time::Duration::from_millis(2500));
    sh(d, "echo two > custom.txt && echo more >> other.txt");
    assert_eq!(emu.get_object(&bucket, "custom.txt"), b"two\n");
    assert_eq!(ct("custom.txt").as_deref(), Some("text/x-mine"));
    assert_eq!(ct("other.txt").as_deref(), Some("text/x-mine"));
    sh(d, "chmod 600 custom.txt");
    assert_eq!(ct("custom.txt").as_deref(), Some("text/x-mine"));
    sh(d, "chmod 640 other.txt && mv other.txt other.md");
    let renamed = if emu.dfs.is_some() {
        "text/x-mine"
    } else {
        "text/markdown"
    };
    assert_eq!(ct("other.md").as_deref(), Some(renamed));
    // The copy kept the rest of the metadata (S3 sends it again with the new type).
    std::thread::sleep(std::time::Duration::from_millis(1500));
    assert_eq!(sh(d, "stat -c %a other.md"), "640\n");
    assert_eq!(emu.get_object(&bucket, "other.md"), b"onemore\n");
}

blobmount_tests::per_backend_and_adls!(content_types);

/// Azure: a rename that changes the type sets it with Set Blob Properties, which clears every
/// HTTP header it is not given; the other headers another tool set (encoding, caching,
/// disposition, language) must come through the rename.
#[test]
fn azure_rename_keeps_the_other_http_headers() {
    use object_store::{Attribute, Attributes, ObjectStore, ObjectStoreExt, PutOptions};
    let emu = Emulator::start(Kind::Azure);
    let bucket = emu.create_bucket();
    let s = emu.sdk(&bucket);
    let mut attrs = Attributes::new();
    for (a, v) in [
        (Attribute::ContentType, "text/html"),
        (Attribute::ContentEncoding, "gzip"),
        (Attribute::CacheControl, "max-age=60"),
        (Attribute::ContentDisposition, "attachment"),
        (Attribute::ContentLanguage, "de"),
    ] {
        attrs.insert(a, v.to_string().into());
    }
    let opts = PutOptions {
        attributes: attrs,
        ..Default::default()
    };
    let p = |k: &str| object_store::path::Path::parse(k).unwrap();
    blobmount_tests::block_on(s.put_opts(&p("page.html"), b"<p>x</p>".to_vec().into(), opts))
        .unwrap();
    let m = Mount::start(&MountSpec::for_emulator(&emu, &bucket));
    std::fs::rename(m.p("page.html"), m.p("page.txt")).unwrap();
    let got = blobmount_tests::block_on(s.get(&p("page.txt"))).unwrap();
    let a = |k: &Attribute| got.attributes.get(k).map(|v| v.to_string());
    assert_eq!(a(&Attribute::ContentType).as_deref(), Some("text/plain"));
    assert_eq!(a(&Attribute::ContentEncoding).as_deref(), Some("gzip"));
    assert_eq!(a(&Attribute::CacheControl).as_deref(), Some("max-age=60"));
    assert_eq!(
        a(&Attribute::ContentDisposition).as_deref(),
        Some("attachment")
    );
    assert_eq!(a(&Attribute::ContentLanguage).as_deref(), Some("de"));
}
