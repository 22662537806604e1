//! A bucket written by another tool looks right through a real mount: objects the test
//! writes with the store's own API, carrying the metadata gcsfuse, gsutil, rclone, s3fs and
//! BlobFuse2 write (per store, the keys that tool writes there), show their modes, owners,
//! times and symlinks through `stat` and `readlink`, on a first lookup and through a listing
//! (docs/semantics.md, "Metadata written by other tools").

use std::os::unix::fs::MetadataExt;

use blobmount_tests::{Emulator, Kind, Mount, MountSpec, http, per_backend};

/// Write `key` with user metadata `pairs` from outside the mount: the SDK on Azure and S3,
/// the JSON API (upload, then PATCH of the metadata) on GCS.
fn put_with_metadata(emu: &Emulator, bucket: &str, key: &str, data: &[u8], pairs: &[(&str, &str)]) {
    if emu.kind == Kind::Gcs {
        emu.put_object(bucket, key, data);
        let meta: serde_json::Map<String, serde_json::Value> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), serde_json::Value::from(*v)))
            .collect();
        let body = serde_json::json!({ "metadata": meta }).to_string();
        let path = format!(
            "/storage/v1/b/{bucket}/o/{}",
            blobmount_backend::gcs::encode_segment(key)
        );
        let h = [("Content-Type", "application/json")];
        let (status, answer) = http::request(emu.port(), "PATCH", &path, &h, body.as_bytes());
        assert_eq!(status, 200, "GCS metadata of {key}: {answer}");
        return;
    }
    use object_store::{Attribute, Attributes, PutOptions};
    let mut attrs = Attributes::new();
    for (k, v) in pairs {
        attrs.insert(
            Attribute::Metadata(k.to_string().into()),
            v.to_string().into(),
        );
    }
    let opts = PutOptions {
        attributes: attrs,
        ..Default::default()
    };
    let s = emu.sdk(bucket);
    let p = object_store::path::Path::parse(key).unwrap();
    blobmount_tests::block_on(s.put_opts(&p, data.to_vec().into(), opts)).expect("sdk put");
}

/// What one file should look like: mode bits, uid, gid, mtime seconds.
struct Want {
    name: &'static str,
    perm: u32,
    owner: Option<(u32, u32)>,
    mtime: i64,
}

fn peer_metadata(kind: Kind) {
    let emu = Emulator::start(kind);
    let bucket = emu.create_bucket();
    let put = |key: &str, data: &[u8], pairs: &[(&str, &str)]| {
        put_with_metadata(&emu, &bucket, key, data, pairs)
    };
    let mut want = Vec::new();
    // Symlinks: (name, target) as the tool stores them on this store.
    let mut links = Vec::new();
    match kind {
        Kind::Azure => {
            // rclone's azureblob backend: RFC 3339 mtime, octal mode.
            put(
                "p/rclone.txt",
                b"r",
                &[("mtime", "2023-11-15T00:13:20.5+02:00"), ("mode", "100640")],
            );
            want.push(Want {
                name: "rclone.txt",
                perm: 0o640,
                owner: None,
                mtime: 1_700_000_000,
            });
            // BlobFuse2: the content is the target.
            put("p/bf2link", b"rclone.txt", &[("is_symlink", "true")]);
            links.push(("bf2link", "rclone.txt"));
        }
        Kind::S3 => {
            // s3fs: decimal st_mode, decimal seconds, uid, gid; a symlink's content is its
            // target and its mode says S_IFLNK.
            put(
                "p/s3fs.txt",
                b"s",
                &[
                    ("mode", "33261"),
                    ("mtime", "1600000000"),
                    ("uid", "1234"),
                    ("gid", "4321"),
                ],
            );
            want.push(Want {
                name: "s3fs.txt",
                perm: 0o755,
                owner: Some((1234, 4321)),
                mtime: 1_600_000_000,
            });
            put("p/s3fslink", b"s3fs.txt", &[("mode", "41471")]);
            links.push(("s3fslink", "s3fs.txt"));
            // rclone's s3 backend: decimal seconds with a fraction.
            put("p/rclone.txt", b"r", &[("mtime", "1700000000.25")]);
            want.push(Want {
                name: "rclone.txt",
                perm: 0o644,
                owner: None,
                mtime: 1_700_000_000,
            });
        }
        Kind::Gcs => {
            // gcsfuse: RFC 3339 mtime; a symlink is an empty object with the target in
            // metadata.
            put(
                "p/gcsfuse.txt",
                b"g",
                &[("gcsfuse_mtime", "2020-09-13T12:26:40.123456789Z")],
            );
            want.push(Want {
                name: "gcsfuse.txt",
                perm: 0o644,
                owner: None,
                mtime: 1_600_000_000,
            });
            put(
                "p/gcsfuselink",
                b"",
                &[("gcsfuse_symlink_target", "gcsfuse.txt")],
            );
            links.push(("gcsfuselink", "gcsfuse.txt"));
            // gsutil / gcloud storage cp -P.
            put(
                "p/gsutil.txt",
                b"u",
                &[
                    ("goog-reserved-file-mtime", "1500000000"),
                    ("goog-reserved-posix-mode", "600"),
                    ("goog-reserved-posix-uid", "77"),
                    ("goog-reserved-posix-gid", "88"),
                ],
            );
            want.push(Want {
                name: "gsutil.txt",
                perm: 0o600,
                owner: Some((77, 88)),
                mtime: 1_500_000_000,
            });
        }
    }
    // Twice: by name on a fresh mount (lookup), and after a listing on another fresh mount.
    for listing_first in [false, true] {
        let m = Mount::start(&MountSpec::for_emulator(&emu, &bucket));
        if listing_first {
            let n = std::fs::read_dir(m.p("p")).unwrap().count();
            assert_eq!(n, want.len() + links.len());
        }
        for w in &want {
            let md = std::fs::symlink_metadata(m.p(&format!("p/{}", w.name))).unwrap();
            assert!(md.is_file(), "{}", w.name);
            assert_eq!(md.mode() & 0o7777, w.perm, "{} mode", w.name);
            assert_eq!(md.mtime(), w.mtime, "{} mtime", w.name);
            if let Some((uid, gid)) = w.owner {
                assert_eq!((md.uid(), md.gid()), (uid, gid), "{} owner", w.name);
            }
        }
        for (name, target) in &links {
            let p = m.p(&format!("p/{name}"));
            let md = std::fs::symlink_metadata(&p).unwrap();
            assert!(
                md.file_type().is_symlink(),
                "{name} is a symlink (listing {listing_first})"
            );
            assert_eq!(md.len(), target.len() as u64, "{name} size");
            assert_eq!(std::fs::read_link(&p).unwrap().to_str(), Some(*target));
            // And it leads where it should.
            assert!(std::fs::metadata(&p).unwrap().is_file());
        }
    }
}

per_backend!(peer_metadata);
