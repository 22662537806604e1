//! `ls -l` on GCS costs listings only (issue 18), through a real mount on fake-gcs-server with
//! the requests counted at the wire.
//!
//! Why: GCS listings used to go over the XML API, whose entries carry no user metadata, so
//! the core HEADed every file to learn the mode and times blobmount keeps there (`ls -l` of N
//! files = N HEADs). JSON-API listings carry the metadata; these tests check that the mount
//! shows it without a HEAD per file, across pages, and that the ETag a listing reports is the
//! one HEAD, reads and writes report (a mismatch would make every listed file look changed).

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::Duration;

use blobmount_tests::proxy::CountingProxy;
use blobmount_tests::{Emulator, Kind, Mount, MountSpec, block_on, http};

/// Files in the listed directory.
const FILES: usize = 200;
/// Objects per listing call the mount asks for: `FILES` take 4 pages.
const PAGE: usize = 64;
const MTIME0: u64 = 1_700_000_000;

/// Upload `key` over the JSON API with user metadata (as another blobmount, or gcsfuse,
/// would leave it).
fn put_with_metadata(
    emu: &Emulator,
    bucket: &str,
    key: &str,
    data: &[u8],
    meta: &[(&str, String)],
) {
    let b = "gcslistingboundary";
    let m: serde_json::Map<String, serde_json::Value> = meta
        .iter()
        .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.clone())))
        .collect();
    let resource = serde_json::json!({ "name": key, "metadata": m }).to_string();
    let mut body = format!(
        "--{b}\r\nContent-Type: application/json\r\n\r\n{resource}\r\n--{b}\r\nContent-Type: application/octet-stream\r\n\r\n"
    )
    .into_bytes();
    body.extend_from_slice(data);
    body.extend_from_slice(format!("\r\n--{b}--\r\n").as_bytes());
    let ct = format!("multipart/related; boundary={b}");
    let (status, reply) = http::request(
        emu.port(),
        "POST",
        &format!("/upload/storage/v1/b/{bucket}/o?uploadType=multipart"),
        &[("Content-Type", ct.as_str())],
        &body,
    );
    assert_eq!(status, 200, "upload of {key}: {reply}");
}

/// The mode, size and mtime file `i` is given.
fn expected(i: usize) -> (u32, u64, u64) {
    let mode = [0o640, 0o600, 0o755, 0o444][i % 4];
    (mode, (i % 37) as u64, MTIME0 + i as u64)
}

/// Requests that list (JSON API) and requests that HEAD or GET one object.
fn split(lines: &[String]) -> (Vec<&String>, Vec<&String>) {
    lines
        .iter()
        .partition(|l| l.starts_with("GET /storage/v1/b/") && l.contains("/o?"))
}

#[test]
fn ls_l_of_a_gcs_directory_costs_listings_only() {
    let emu = Emulator::start(Kind::Gcs);
    let bucket = emu.create_bucket();
    for i in 0..FILES {
        let (mode, size, mtime) = expected(i);
        put_with_metadata(
            &emu,
            &bucket,
            &format!("dir/f{i:03}"),
            &vec![b'x'; size as usize],
            &[("mode", format!("{mode:o}")), ("mtime", mtime.to_string())],
        );
    }
    // One object without any metadata, one in a subdirectory.
    emu.put_object(&bucket, "dir/plain", b"plain!");
    emu.put_object(&bucket, "dir/sub/inner", b"i");

    let proxy = CountingProxy::start(emu.port());
    let mut spec = MountSpec::for_emulator(&emu, &bucket);
    spec.endpoint = Some(emu.endpoint_on(proxy.port()));
    spec.env
        .push(("BLOBMOUNT_CACHE__LIST_PAGE_SIZE".into(), PAGE.to_string()));
    let m = Mount::start(&spec);
    // The directory itself is looked up first; what `ls -l` of its content costs is counted.
    assert!(m.p("dir").is_dir());
    proxy.take();

    let out = std::process::Command::new("ls")
        .args(["-ln", "--time-style=+%s"])
        .arg(m.p("dir"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let sent = proxy.take();
    let (lists, others) = split(&sent);
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().skip(1).collect();
    assert_eq!(lines.len(), FILES + 2, "{text}");
    println!(
        "ls -l of {} entries: {} listing requests, {} others: {others:?}",
        lines.len(),
        lists.len(),
        others.len()
    );
    // No file is HEADed; the subdirectory's probe (is `dir/sub` also a file?) is a cost per
    // directory, the same on every store.
    let files: Vec<&&String> = others
        .iter()
        .filter(|l| !l.ends_with("/dir%2Fsub"))
        .collect();
    assert!(
        files.is_empty(),
        "ls -l made requests other than listings: {files:?}"
    );
    assert!(others.len() <= 1, "{others:?}");
    // 4 pages of 64; a directory read twice (the kernel's getdents after a lookup) may list
    // once more, never once per file.
    assert!(
        (4..=8).contains(&lists.len()),
        "{} listing requests: {lists:?}",
        lists.len()
    );
    assert!(
        lists.iter().any(|l| l.contains("pageToken=")),
        "more than one page was read: {lists:?}"
    );

    // What `ls -l` showed is what the metadata says.
    for i in 0..FILES {
        let (mode, size, mtime) = expected(i);
        let name = format!("f{i:03}");
        let line = lines
            .iter()
            .find(|l| l.ends_with(&format!(" {name}")))
            .unwrap_or_else(|| panic!("{name} not listed: {text}"));
        let f: Vec<&str> = line.split_whitespace().collect();
        let perm = &f[0][1..10];
        let want = format!(
            "{}{}{}{}{}{}{}{}{}",
            if mode & 0o400 != 0 { 'r' } else { '-' },
            if mode & 0o200 != 0 { 'w' } else { '-' },
            if mode & 0o100 != 0 { 'x' } else { '-' },
            if mode & 0o040 != 0 { 'r' } else { '-' },
            if mode & 0o020 != 0 { 'w' } else { '-' },
            if mode & 0o010 != 0 { 'x' } else { '-' },
            if mode & 0o004 != 0 { 'r' } else { '-' },
            if mode & 0o002 != 0 { 'w' } else { '-' },
            if mode & 0o001 != 0 { 'x' } else { '-' },
        );
        assert_eq!(perm, want, "{line}");
        assert_eq!(f[4], size.to_string(), "{line}");
        assert_eq!(f[5], mtime.to_string(), "{line}");
    }
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with('d') && l.ends_with(" sub"))
    );
    let plain = lines.iter().find(|l| l.ends_with(" plain")).unwrap();
    assert!(plain.contains(" 6 "), "{plain}");

    // The listing's ETag is the one reads pin: reading listed files needs no HEAD and
    // fails with nothing (a mismatch would be a 412 on the pinned GET, ESTALE here).
    for i in [0usize, 5, 36] {
        let (mode, size, _) = expected(i);
        let p = m.p(&format!("dir/f{i:03}"));
        assert_eq!(std::fs::read(&p).unwrap(), vec![b'x'; size as usize]);
        let md = std::fs::metadata(&p).unwrap();
        assert_eq!(md.permissions().mode() & 0o7777, mode);
        assert_eq!(md.mtime() as u64, MTIME0 + i as u64);
    }
    let sent = proxy.take();
    let heads: Vec<&String> = sent.iter().filter(|l| l.starts_with("HEAD ")).collect();
    let gets = sent
        .iter()
        .filter(|l| l.starts_with("GET ") && !l.contains("/storage/v1/b/"))
        .count();
    println!("reading 3 listed files: {sent:?}");
    assert!(heads.is_empty(), "reads of listed files HEADed: {heads:?}");
    // f000 is empty: only f005 and f036 have bytes to fetch, once each.
    assert!(gets <= 2, "{gets} GETs for 2 non-empty files: {sent:?}");

    // An object replaced from outside is seen as changed, not served stale.
    std::thread::sleep(Duration::from_millis(1100));
    put_with_metadata(
        &emu,
        &bucket,
        "dir/f005",
        b"changed",
        &[("mode", "600".into()), ("mtime", MTIME0.to_string())],
    );
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(std::fs::read(m.p("dir/f005")).unwrap(), b"changed");
}

/// A listing's entry, a HEAD and a write's answer report the same ETag for the same object,
/// and the listing carries the metadata HEAD does (the core trusts one for the other).
#[test]
fn listing_etag_and_metadata_agree_with_head_and_writes() {
    use blobmount_backend::{Precondition, PutMeta};
    let emu = Emulator::start(Kind::Gcs);
    let bucket = emu.create_bucket();
    let be = emu.backend(&bucket);
    let mut meta = PutMeta::default();
    meta.metadata.insert("mode".into(), "100640".into());
    meta.metadata.insert("Mixed-Case".into(), "V".into());
    let put = block_on(be.put("d/a", "hello".into(), &meta, &Precondition::None)).unwrap();
    emu.put_object(&bucket, "d/plain", b"p");
    // An odd name taken as it is.
    emu.put_object(&bucket, "d/%41 b+c", b"odd");

    let listed = |key: &str| {
        let page = block_on(be.list_page("d/", None, 100)).unwrap();
        page.objects.into_iter().find(|o| o.key == key).unwrap()
    };
    let head = block_on(be.head("d/a")).unwrap();
    let l = listed("d/a");
    assert!(put.etag.is_some());
    assert_eq!(l.etag, put.etag, "listing vs upload answer");
    assert_eq!(l.etag, head.etag, "listing vs HEAD");
    assert_eq!(l.metadata, head.metadata, "listing vs HEAD metadata");
    assert_eq!(l.size, head.size);
    assert_eq!(l.last_modified, head.last_modified);
    assert_eq!(l.content_type, head.content_type);
    // The listed ETag pins a read.
    let bytes = block_on(be.get_range("d/a", 0..5, l.etag.as_deref())).unwrap();
    assert_eq!(&bytes[..], b"hello");

    // A metadata write: the listing follows HEAD and the write's answer.
    meta.metadata.insert("mode".into(), "100600".into());
    // Names as HEAD reported them (lower case), as the core sends them back.
    meta.metadata.remove("Mixed-Case");
    meta.metadata.insert("mixed-case".into(), "V".into());
    let set = block_on(be.set_metadata("d/a", &meta, l.etag.as_deref())).unwrap();
    let l2 = listed("d/a");
    let h2 = block_on(be.head("d/a")).unwrap();
    assert_eq!(l2.etag, set.etag);
    assert_eq!(l2.etag, h2.etag);
    assert_eq!(l2.metadata, h2.metadata);
    assert_eq!(
        l2.metadata.unwrap().get("mode").map(String::as_str),
        Some("100600")
    );

    // No metadata: an empty map, complete all the same.
    let p = listed("d/plain");
    assert_eq!(p.metadata.map(|m| m.len()), Some(0));
    assert_eq!(p.etag, block_on(be.head("d/plain")).unwrap().etag);
    assert_eq!(listed("d/%41 b+c").size, 3);
}

/// Fill `n` objects `dir/fNNNNN` with blobmount metadata, 8 uploads at a time.
fn fill(emu: &Emulator, bucket: &str, n: usize) {
    std::thread::scope(|s| {
        for t in 0..8 {
            s.spawn(move || {
                for i in (t..n).step_by(8) {
                    let (mode, size, mtime) = expected(i);
                    put_with_metadata(
                        emu,
                        bucket,
                        &format!("dir/f{i:05}"),
                        &vec![b'x'; size as usize],
                        &[("mode", format!("{mode:o}")), ("mtime", mtime.to_string())],
                    );
                }
            });
        }
    });
}

/// Seconds `f` takes.
fn timed(f: impl FnOnce()) -> f64 {
    let t = std::time::Instant::now();
    f();
    t.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn ls_l(dir: &std::path::Path) {
    let st = std::process::Command::new("ls")
        .arg("-l")
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
}

/// The benchmark of issue 18's GCS row: `ls -l` of `BENCH_NLIST` (10,000) objects with
/// blobmount metadata on fake-gcs-server, cold (fresh mount) and warm (second run), median of
/// `BENCH_REPS` (3) mounts, against the raw JSON paged listing walked with curl (1000 per
/// page); then one cold `ls -l` through the counting proxy for the requests it costs.
/// `BLOBMOUNT_BIN` picks the daemon (a release build for numbers). Prints one Markdown row.
#[test]
#[ignore = "benchmark: see docs/benchmarks.md, GCS `ls -l` (issue 18)"]
fn bench_gcs_ls_l() {
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let (n, reps) = (env("BENCH_NLIST", 10_000), env("BENCH_REPS", 3));
    let load = || {
        std::fs::read_to_string("/proc/loadavg")
            .unwrap_or_default()
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" ")
    };
    let load0 = load();
    let emu = Emulator::start(Kind::Gcs);
    let bucket = emu.create_bucket();
    fill(&emu, &bucket, n);
    let raw_script = format!(
        r#"t=""; pages=0; f=$(mktemp)
        while :; do
          curl -sf -o "$f" "http://127.0.0.1:{port}/storage/v1/b/{bucket}/o?prefix=dir%2F&delimiter=%2F&maxResults=1000${{t:+&pageToken=$t}}" || exit 1
          pages=$((pages+1))
          t=$(grep -o '"nextPageToken":"[^"]*"' "$f" | cut -d'"' -f4 | sed 's|/|%2F|g')
          [ -z "$t" ] && break
        done
        rm -f "$f"; echo $pages"#,
        port = emu.port()
    );
    let mut pages = String::new();
    let raw = median(
        (0..reps)
            .map(|_| {
                timed(|| {
                    let o = std::process::Command::new("bash")
                        .args(["-c", &raw_script])
                        .output()
                        .unwrap();
                    assert!(o.status.success(), "{o:?}");
                    pages = String::from_utf8_lossy(&o.stdout).trim().to_string();
                })
            })
            .collect(),
    );
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let m = Mount::start(&MountSpec::for_emulator(&emu, &bucket));
        cold.push(timed(|| ls_l(&m.p("dir"))));
        warm.push(timed(|| ls_l(&m.p("dir"))));
    }
    let proxy = CountingProxy::start(emu.port());
    let mut spec = MountSpec::for_emulator(&emu, &bucket);
    spec.endpoint = Some(emu.endpoint_on(proxy.port()));
    let m = Mount::start(&spec);
    proxy.take();
    ls_l(&m.p("dir"));
    let sent = proxy.take();
    let (lists, others) = split(&sent);
    let heads = others.iter().filter(|l| l.starts_with("HEAD ")).count();
    let (cold, warm) = (median(cold), median(warm));
    println!(
        "BENCH-ROW | `ls -l` of {n} objects | raw JSON listing (curl, {pages} pages) {raw:.3} s | cold {cold:.3} s ({:.2}x raw) | warm {warm:.3} s | requests: {} (listing {}, HEAD {heads}, other {}) | load {load0} -> {} |",
        cold / raw,
        sent.len(),
        lists.len(),
        others.len() - heads,
        load()
    );
}

/// A directory renamed while it needs several listing pages: fake-gcs-server repeats the
/// prefixes still ahead on every page (here `m/` and `z/` came back on all 3 pages before the
/// backend dropped them), and a caller walking prefixes would visit a subtree more than once.
/// Every file arrives once, with its bytes, nothing is left behind, and a paged listing
/// reports each prefix once.
#[test]
fn rename_of_a_directory_listed_in_several_pages() {
    let emu = Emulator::start(Kind::Gcs);
    let bucket = emu.create_bucket();
    for i in 0..12 {
        emu.put_object(&bucket, &format!("src/f{i:02}"), format!("f{i}").as_bytes());
    }
    for s in ["a", "m", "z"] {
        emu.put_object(&bucket, &format!("src/{s}/inner"), s.as_bytes());
    }
    let mut spec = MountSpec::for_emulator(&emu, &bucket);
    spec.env
        .push(("BLOBMOUNT_CACHE__LIST_PAGE_SIZE".into(), "4".into()));
    let m = Mount::start(&spec);
    let mut names: Vec<String> = std::fs::read_dir(m.p("src"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names.len(), 15, "{names:?}");
    std::fs::rename(m.p("src"), m.p("dst")).unwrap();
    assert!(!m.p("src").exists());
    for i in 0..12 {
        assert_eq!(
            std::fs::read(m.p(&format!("dst/f{i:02}"))).unwrap(),
            format!("f{i}").as_bytes()
        );
    }
    for s in ["a", "m", "z"] {
        assert_eq!(
            std::fs::read(m.p(&format!("dst/{s}/inner"))).unwrap(),
            s.as_bytes()
        );
    }
    drop(m);
    let be = emu.backend(&bucket);
    // Each prefix once across pages (what the rename walked).
    let (mut prefixes, mut token, mut pages) = (Vec::new(), None, 0);
    loop {
        let p = block_on(be.list_page("dst/", token, 4)).unwrap();
        prefixes.extend(p.prefixes);
        pages += 1;
        token = p.next;
        if token.is_none() {
            break;
        }
    }
    assert!(pages >= 3, "{pages} pages");
    assert_eq!(prefixes, ["dst/a/", "dst/m/", "dst/z/"]);
    let left = block_on(be.list_under("src/", 100)).unwrap();
    assert!(left.objects.is_empty(), "{:?}", left.objects);
    let moved = block_on(be.list_under("dst/", 100)).unwrap();
    assert_eq!(moved.objects.len(), 15, "{:?}", moved.objects);
}
