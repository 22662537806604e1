//! Extended attributes through a real mount on each emulator: `user.*` set with `setfattr`
//! is the object's user metadata as the store's own API reports it; metadata another tool
//! wrote is read with `getfattr`; listxattr, removexattr; blobmount's keys stay hidden;
//! `user.blobmount.*` is read-only; the store's limits are errnos; and `cp -a` / `rsync -X`
//! between files in the mount keep the `user.*` values.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use object_store::{ObjectStore, ObjectStoreExt};

use blobmount_tests::proxy::CountingProxy;
use blobmount_tests::{Emulator, Kind, Mount, MountSpec, block_on, http, sh};

/// getxattr(2): the value, or the errno.
fn getx(p: &Path, name: &str) -> Result<Vec<u8>, i32> {
    let (path, name) = (cpath(p), CString::new(name).unwrap());
    let mut buf = vec![0u8; 65536];
    // SAFETY: NUL-terminated strings and a buffer of the length given, all alive here.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap());
    }
    buf.truncate(n as usize);
    Ok(buf)
}

/// setxattr(2): `Err(errno)` on failure.
fn setx(p: &Path, name: &str, value: &[u8], flags: i32) -> Result<(), i32> {
    let (path, name) = (cpath(p), CString::new(name).unwrap());
    // SAFETY: NUL-terminated strings and a value of the length given, all alive here.
    let r = unsafe {
        libc::setxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            flags,
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap());
    }
    Ok(())
}

/// listxattr(2): the names.
fn listx(p: &Path) -> Vec<String> {
    let path = cpath(p);
    let mut buf = vec![0u8; 65536];
    // SAFETY: a NUL-terminated path and a buffer of the length given.
    let n = unsafe { libc::listxattr(path.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert!(n >= 0, "listxattr: {}", std::io::Error::last_os_error());
    buf[..n as usize]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8(s.to_vec()).unwrap())
        .collect()
}

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).unwrap()
}

/// The user metadata the store holds for `key`, read through its own API (the SDK on
/// Azure and S3, the JSON API on GCS), not through a mount.
fn store_meta(emu: &Emulator, bucket: &str, key: &str) -> BTreeMap<String, String> {
    if emu.kind == Kind::Gcs {
        let path = format!(
            "/storage/v1/b/{bucket}/o/{}",
            blobmount_backend::gcs::encode_segment(key)
        );
        let (status, body) = http::request(emu.port(), "GET", &path, &[], b"");
        assert_eq!(status, 200, "GCS GET of {key}: {body}");
        // The answer's JSON body (after the headers; chunked or not, it is one object).
        let json = &body[body.find('{').unwrap()..=body.rfind('}').unwrap()];
        let v: serde_json::Value = serde_json::from_str(json).unwrap();
        return v["metadata"]
            .as_object()
            .map(|m| {
                m.iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                    .collect()
            })
            .unwrap_or_default();
    }
    let s = emu.sdk(bucket);
    let p = object_store::path::Path::parse(key).unwrap();
    block_on(async {
        let r = s.get(&p).await.expect("sdk get");
        r.attributes
            .iter()
            .filter_map(|(a, v)| match a {
                object_store::Attribute::Metadata(k) => {
                    Some((k.to_ascii_lowercase(), v.as_ref().to_string()))
                }
                _ => None,
            })
            .collect()
    })
}

/// Another tool writes `key` with user metadata `meta` (the SDK on Azure and S3; a JSON
/// API upload then a metadata PATCH on GCS).
fn put_with_meta(emu: &Emulator, bucket: &str, key: &str, data: &[u8], meta: &[(&str, &str)]) {
    if emu.kind == Kind::Gcs {
        emu.put_object(bucket, key, data);
        let m: serde_json::Map<String, serde_json::Value> = meta
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
            .collect();
        let body = serde_json::json!({ "metadata": m }).to_string();
        let path = format!(
            "/storage/v1/b/{bucket}/o/{}",
            blobmount_backend::gcs::encode_segment(key)
        );
        let h = [("Content-Type", "application/json")];
        let (status, body) = http::request(emu.port(), "PATCH", &path, &h, body.as_bytes());
        assert_eq!(status, 200, "GCS PATCH of {key}: {body}");
        return;
    }
    let s = emu.sdk(bucket);
    let p = object_store::path::Path::parse(key).unwrap();
    let mut attrs = object_store::Attributes::new();
    for (k, v) in meta {
        attrs.insert(
            object_store::Attribute::Metadata(k.to_string().into()),
            v.to_string().into(),
        );
    }
    let opts = object_store::PutOptions {
        attributes: attrs,
        ..Default::default()
    };
    block_on(async {
        s.put_opts(&p, data.to_vec().into(), opts)
            .await
            .expect("sdk put")
    });
}

fn xattrs(kind: Kind) {
    let emu = Emulator::start(kind);
    let bucket = emu.create_bucket();
    // Written by another tool, before the mount (which would not look again for a while).
    put_with_meta(
        &emu,
        &bucket,
        "ext.bin",
        b"x",
        &[("team", "ml"), ("stage", "raw")],
    );
    let proxy = CountingProxy::start(emu.port());
    let cfg = tempfile::tempdir().unwrap();
    let cfg_file = cfg.path().join("blobmount.yaml");
    std::fs::write(&cfg_file, "mount:\n  attr-timeout-secs: 600\n").unwrap();
    let mut spec = MountSpec::for_emulator(&emu, &bucket);
    spec.endpoint = Some(emu.endpoint_on(proxy.port()));
    spec.args = vec!["--config".into(), cfg_file.to_string_lossy().into_owned()];
    let m = Mount::start(&spec);
    let d = m.path();
    let f = m.p("f.txt");
    std::fs::write(&f, b"hello").unwrap();

    // What it costs: reading attributes of a file whose stat is fresh asks nothing;
    // setting one on a clean file is one metadata update, no data moved (S3: HEAD +
    // CopyObject onto itself; Azure: Set Blob Metadata alone, conditional on the version the
    // mount knows with its type; GCS: PATCH between two HEADs).
    proxy.take();
    assert_eq!(getx(&f, "user.color"), Err(libc::ENODATA));
    assert!(listx(&f).is_empty());
    assert_eq!(
        proxy.take(),
        Vec::<String>::new(),
        "answered from the cache"
    );
    setx(&f, "user.color", b"blue", 0).unwrap();
    let sent = proxy.take();
    let want = match kind {
        // HEAD (the version, checked: moto ignores copy-source-if-match) + CopyObject.
        Kind::S3 => 2,
        Kind::Azure => 1,
        // HEAD for the generation, PATCH, HEAD for the ETag of the generation written.
        Kind::Gcs => 3,
    };
    assert_eq!(sent.len(), want, "{sent:?}");
    assert!(
        !sent.iter().any(|r| r.contains("alt=media")
            || r.starts_with("GET /devstore")
            || (kind == Kind::S3 && r.starts_with("GET "))),
        "no data read: {sent:?}"
    );
    setx(&f, "user.color", b"red", 0).unwrap();
    assert_eq!(
        proxy.take().len(),
        want,
        "again, on the version just written"
    );

    // Set through the mount: the store's API sees it, next to blobmount's own keys.
    sh(d, "setfattr -n user.color -v blue f.txt && chmod 600 f.txt");
    // The xattr is written at once; the chmod of a closed file is held for
    // write.attr-delay-ms (200 ms) and then written, keeping the xattr.
    let sm = store_meta(&emu, &bucket, "f.txt");
    assert_eq!(sm.get("color").map(String::as_str), Some("blue"), "{sm:?}");
    // On ADLS Gen2 the mode is the path's permissions (one setAccessControl), not our key.
    let mode_key = if emu.dfs.is_some() {
        "dfs_permissions"
    } else {
        "mode"
    };
    let want_mode = if emu.dfs.is_some() { "0600" } else { "33152" };
    let t = std::time::Instant::now();
    let sm = loop {
        let sm = store_meta(&emu, &bucket, "f.txt");
        if sm.get(mode_key).map(String::as_str) == Some(want_mode)
            || t.elapsed() > std::time::Duration::from_secs(5)
        {
            break sm;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert_eq!(
        sm.get(mode_key).map(String::as_str),
        Some(want_mode),
        "{sm:?}"
    );
    assert_eq!(sm.get("color").map(String::as_str), Some("blue"), "{sm:?}");
    assert_eq!(getx(&f, "user.color").unwrap(), b"blue");
    let dump = sh(d, "getfattr -d --absolute-names f.txt");
    assert!(dump.contains("user.color=\"blue\""), "{dump}");
    assert!(
        !dump.contains("user.mode"),
        "internal keys are hidden: {dump}"
    );
    assert_eq!(listx(&f), ["user.color"]);
    assert_eq!(std::fs::read(&f).unwrap(), b"hello");

    // A chmod held for the delay and a rename right after it: the copy that renames carries
    // the new mode and keeps the xattr (Azure and S3 in the copy request itself).
    sh(
        d,
        "cp f.txt moved.txt && chmod 640 moved.txt && mv moved.txt moved2.txt",
    );
    let sm = store_meta(&emu, &bucket, "moved2.txt");
    let want_mode = if emu.dfs.is_some() { "0640" } else { "33184" };
    assert_eq!(
        sm.get(mode_key).map(String::as_str),
        Some(want_mode),
        "{sm:?}"
    );
    assert!(emu.get_object_opt(&bucket, "moved.txt").is_none());
    assert_eq!(emu.get_object(&bucket, "moved2.txt"), b"hello");
    sh(
        d,
        "setfattr -n user.shape -v round moved2.txt && chmod 604 moved2.txt && mv moved2.txt moved3.txt",
    );
    let sm = store_meta(&emu, &bucket, "moved3.txt");
    let want_mode = if emu.dfs.is_some() { "0604" } else { "33156" };
    assert_eq!(
        sm.get(mode_key).map(String::as_str),
        Some(want_mode),
        "{sm:?}"
    );
    assert_eq!(sm.get("shape").map(String::as_str), Some("round"), "{sm:?}");
    std::fs::remove_file(m.p("moved3.txt")).unwrap();

    // Written by another tool: read through the mount.
    let ext = m.p("ext.bin");
    assert_eq!(getx(&ext, "user.team").unwrap(), b"ml");
    assert_eq!(listx(&ext), ["user.stage", "user.team"]);

    // Removed through the mount.
    sh(d, "setfattr -x user.color f.txt");
    let sm = store_meta(&emu, &bucket, "f.txt");
    match kind {
        // fake-gcs-server keeps a key PATCHed to null with an empty value (GCS removes it:
        // the backend sends null, as the JSON API documents).
        Kind::Gcs => assert_eq!(sm.get("color").map(String::as_str).unwrap_or(""), ""),
        Kind::Azure | Kind::S3 => assert!(!sm.contains_key("color"), "{sm:?}"),
    }
    assert_eq!(getx(&f, "user.color"), Err(libc::ENODATA));
    assert!(listx(&f).is_empty());

    // The errnos.
    assert_eq!(getx(&f, "user.nothing"), Err(libc::ENODATA));
    assert_eq!(setx(&f, "user.mode", b"1", 0), Err(libc::EPERM));
    assert_eq!(setx(&f, "user.Upper", b"1", 0), Err(libc::EINVAL));
    assert_eq!(setx(&f, "user.blobmount.etag", b"1", 0), Err(libc::EPERM));
    assert_eq!(getx(&f, "trusted.x"), Err(libc::ENOTSUP));
    assert_eq!(setx(&f, "trusted.x", b"1", 0), Err(libc::ENOTSUP));
    let hyphen = setx(&f, "user.my-key", b"1", 0);
    let too_big = match kind {
        Kind::Azure => {
            assert_eq!(hyphen, Err(libc::EINVAL), "Azure names are C# identifiers");
            9000
        }
        Kind::S3 => {
            assert_eq!(hyphen, Ok(()));
            3000
        }
        Kind::Gcs => {
            assert_eq!(hyphen, Ok(()));
            9000
        }
    };
    assert_eq!(
        setx(&f, "user.big", &vec![b'x'; too_big], 0),
        Err(libc::E2BIG)
    );
    // Still readable and writable after all the refusals (the kernel did not give up on
    // extended attributes).
    setx(&f, "user.color", b"green", 0).unwrap();
    assert_eq!(getx(&f, "user.color").unwrap(), b"green");

    // blobmount's read-only view.
    let etag = getx(&f, "user.blobmount.etag").unwrap();
    assert!(!etag.is_empty());
    assert_eq!(getx(&f, "user.blobmount.key").unwrap(), b"f.txt");
    assert_eq!(getx(&f, "user.blobmount.kind").unwrap(), b"file");
    std::fs::write(&f, b"changed").unwrap();
    assert_ne!(getx(&f, "user.blobmount.etag").unwrap(), etag);
    assert_eq!(
        getx(&f, "user.color").unwrap(),
        b"green",
        "kept by a rewrite"
    );

    // Copies between files of the mount keep user.* values.
    sh(d, "cp -a f.txt copy.txt && rsync -X f.txt synced.txt");
    for key in ["copy.txt", "synced.txt"] {
        let sm = store_meta(&emu, &bucket, key);
        assert_eq!(
            sm.get("color").map(String::as_str),
            Some("green"),
            "{key}: {sm:?}"
        );
        assert!(
            !sm.keys().any(|k| k.starts_with("blobmount.")),
            "{key}: {sm:?}"
        );
        assert_eq!(getx(&m.p(key), "user.color").unwrap(), b"green");
    }
    // Another tool replaces the object while the mount's stat is fresh. Through a
    // descriptor the update is refused (ESTALE) and theirs stays untouched...
    let fd = std::fs::File::open(&f).unwrap();
    put_with_meta(&emu, &bucket, "f.txt", b"theirs", &[("theirs", "1")]);
    let (n, v) = (CString::new("user.mine").unwrap(), b"1");
    use std::os::fd::AsRawFd;
    // SAFETY: our open descriptor, a NUL-terminated name and a 1-byte value.
    let r = unsafe { libc::fsetxattr(fd.as_raw_fd(), n.as_ptr(), v.as_ptr().cast(), 1, 0) };
    assert_eq!(r, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::ESTALE)
    );
    drop(fd);
    assert_eq!(emu.get_object(&bucket, "f.txt"), b"theirs");
    assert_eq!(store_meta(&emu, &bucket, "f.txt").get("mine"), None);
    // ...and by path the kernel retries an ESTALE once after looking the name up again
    // (the VFS's retry_estale): the change lands on their version, theirs kept.
    put_with_meta(&emu, &bucket, "f.txt", b"theirs 2", &[("theirs", "2")]);
    setx(&f, "user.mine", b"1", 0).unwrap();
    let sm = store_meta(&emu, &bucket, "f.txt");
    assert_eq!(sm.get("mine").map(String::as_str), Some("1"), "{sm:?}");
    assert_eq!(sm.get("theirs").map(String::as_str), Some("2"), "{sm:?}");
    assert_eq!(emu.get_object(&bucket, "f.txt"), b"theirs 2");

    // A directory keeps them on its marker; `ls -l` is untroubled.
    std::fs::create_dir(m.p("dir")).unwrap();
    setx(&m.p("dir"), "user.project", b"p1", 0).unwrap();
    assert_eq!(getx(&m.p("dir"), "user.project").unwrap(), b"p1");
    let ls = sh(d, "ls -la");
    assert!(ls.contains("copy.txt"), "{ls}");
}

blobmount_tests::per_backend_and_adls!(xattrs);
