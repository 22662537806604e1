//! The crash matrix: the daemon is SIGKILLed at each step of each kind of upload and of a
//! directory rename, and the next mount over the same cache directory must leave the store
//! with every acknowledged byte and nothing half-done. The proxy holds the request of the
//! step (so the daemon dies with it in flight) or delivers it late (so it lands after the
//! daemon died, before the next mount looks).
//!
//! Steps, on each emulator:
//! - a single PUT that never reached the store, and one that landed unseen;
//! - a streamed upload whose parts were sent and whose commit never reached the store, and
//!   one whose commit landed unseen (Azure block list, S3 multipart completion; GCS session
//!   chunks go to the emulator's own address, past the proxy);
//! - a directory rename killed during its copies, and during its deletes.

use std::os::fd::IntoRawFd;
use std::time::Duration;

use blobmount_tests::proxy::{CountingProxy, Fault};
use blobmount_tests::{Emulator, Kind, Mount, MountSpec, per_backend};

const MIB: usize = 1024 * 1024;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 11 + 5) % 249) as u8 ^ seed)
        .collect()
}

fn kept_in(cache: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(cache.join("conflicts"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

struct Rig {
    emu: Emulator,
    bucket: String,
    proxy: CountingProxy,
    spec: MountSpec,
    _cache: tempfile::TempDir,
}

impl Rig {
    fn new(kind: Kind) -> Rig {
        let emu = Emulator::start(kind);
        let bucket = emu.create_bucket();
        let proxy = CountingProxy::start(emu.port());
        let cache = tempfile::tempdir().unwrap();
        let mut spec = MountSpec::for_emulator(&emu, &bucket);
        spec.endpoint = Some(emu.endpoint_on(proxy.port()));
        spec.cache = Some(cache.path().join("c"));
        Rig {
            emu,
            bucket,
            proxy,
            spec,
            _cache: cache,
        }
    }

    /// Run `work` on a new mount (in a thread: it blocks on the held request), wait for the
    /// proxy to log `event`, SIGKILL the daemon, wait `settle`, mount again (recovery runs)
    /// and return the new mount and its log.
    fn kill_during(
        &self,
        event: &str,
        settle: Duration,
        work: impl FnOnce(std::path::PathBuf) + Send + 'static,
    ) -> (Mount, String) {
        let first = Mount::start(&self.spec);
        let root = first.path().to_path_buf();
        let worker = std::thread::spawn(move || work(root));
        assert!(
            self.proxy.wait_for(event, Duration::from_secs(60)),
            "the step ({event}) was never reached: {:?}\n{}",
            self.proxy.take(),
            first.log_text()
        );
        std::thread::sleep(Duration::from_millis(200));
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(first.pid().expect("daemon pid") as i32, libc::SIGKILL) };
        let _ = worker.join();
        drop(first);
        std::thread::sleep(settle);
        self.proxy.take();
        let second = Mount::start(&self.spec);
        let log = second.log_text();
        (second, log)
    }

    fn stored(&self, key: &str) -> Option<Vec<u8>> {
        self.emu.get_object_opt(&self.bucket, key)
    }
}

/// Write `data` to `root/name` and close it; the result does not matter (the daemon dies).
fn write_then_close(name: &'static str, data: Vec<u8>) -> impl FnOnce(std::path::PathBuf) + Send {
    move |root| {
        use std::io::Write;
        if let Ok(mut f) = std::fs::File::create(root.join(name)) {
            let _ = f.write_all(&data);
            // SAFETY: closing the descriptor we own.
            unsafe { libc::close(f.into_raw_fd()) };
        }
    }
}

fn crash_matrix(kind: Kind) {
    let rig = Rig::new(kind);
    let put = match kind {
        Kind::Gcs => "uploadType=multipart",
        Kind::Azure | Kind::S3 => "PUT ",
    };
    let hold = Duration::from_secs(15);
    let late = Duration::from_secs(3);

    // A single PUT that never reached the store.
    let small = pattern(3000, 1);
    rig.proxy.inject(Fault::Hold(hold), Some(put), 1);
    let (m, log) = rig.kill_during(
        "HOLD ",
        Duration::ZERO,
        write_then_close("held.bin", small.clone()),
    );
    assert!(log.contains("unfinished write"), "{log}");
    assert_eq!(
        rig.stored("held.bin").as_deref(),
        Some(&small[..]),
        "held PUT"
    );
    assert!(kept_in(rig.spec.cache.as_ref().unwrap()).is_empty());
    drop(m);

    // A single PUT that landed after the daemon died: recovery finds its own upload.
    let small = pattern(3000, 2);
    rig.proxy.inject(Fault::Stall(late), Some(put), 1);
    let (m, log) = rig.kill_during(
        "STALL ",
        late + Duration::from_secs(1),
        write_then_close("late.bin", small.clone()),
    );
    assert!(log.contains("unfinished write"), "{log}");
    assert_eq!(
        rig.stored("late.bin").as_deref(),
        Some(&small[..]),
        "late PUT"
    );
    assert!(
        kept_in(rig.spec.cache.as_ref().unwrap()).is_empty(),
        "a landed upload was kept as a conflict: {log}"
    );
    drop(m);

    let commit = match kind {
        Kind::Azure => Some("comp=blocklist"),
        Kind::S3 => Some("?uploadId="),
        Kind::Gcs => None,
    };
    if let Some(commit) = commit {
        // Parts sent, commit never reached the store.
        let big = pattern(20 * MIB + 3, 3);
        let commit_req = commit;
        rig.proxy.inject(Fault::Hold(hold), Some(commit_req), 1);
        let (m, log) = rig.kill_during(
            "HOLD ",
            Duration::ZERO,
            write_then_close("parts.bin", big.clone()),
        );
        assert!(log.contains("unfinished write"), "{log}");
        assert!(
            rig.stored("parts.bin").as_deref() == Some(&big[..]),
            "held commit"
        );
        drop(m);

        // Commit landed after the daemon died.
        let big = pattern(20 * MIB + 5, 4);
        rig.proxy.inject(Fault::Stall(late), Some(commit_req), 1);
        let (m, log) = rig.kill_during(
            "STALL ",
            late + Duration::from_secs(1),
            write_then_close("landed.bin", big.clone()),
        );
        assert!(
            rig.stored("landed.bin").as_deref() == Some(&big[..]),
            "late commit: {log}"
        );
        assert!(
            kept_in(rig.spec.cache.as_ref().unwrap()).is_empty(),
            "a landed commit was kept as a conflict: {log}"
        );
        drop(m);
    }

    // A directory rename killed during its copies (rolled back) and during its deletes
    // (finished): never half-moved.
    let files: Vec<(String, Vec<u8>)> = (0..12)
        .map(|i| (format!("f{i:02}"), pattern(100 + i, i as u8)))
        .collect();
    for (step, (from, to)) in [("copy", ("dirA", "dirB")), ("delete", ("dirC", "dirD"))] {
        for (name, data) in &files {
            rig.emu
                .put_object(&rig.bucket, &format!("{from}/{name}"), data);
        }
        // The request of the 7th object copied, or of the 6th deleted (deletes go last key
        // first; S3 deletes in batch requests of one key each, Azure with Delete Blob).
        let (target, skip) = match (step, kind) {
            ("copy", Kind::Gcs) => (format!("rewriteTo/b/{}/o/{to}%2Ff06", rig.bucket), 0),
            ("copy", _) => (
                format!("PUT /{}{to}/f06", bucket_path(kind, &rig.bucket)),
                0,
            ),
            (_, Kind::Azure) => (
                format!("DELETE /{}{from}/f06", bucket_path(kind, &rig.bucket)),
                0,
            ),
            (_, Kind::S3) => ("?delete".to_string(), 5),
            (_, Kind::Gcs) => (format!("DELETE /{}/{from}%2Ff06", rig.bucket), 0),
        };
        rig.proxy
            .inject_after(Fault::Hold(hold), Some(&target), skip, 1);
        let (from_s, to_s) = (from.to_string(), to.to_string());
        let (m, log) = rig.kill_during("HOLD ", Duration::ZERO, move |root| {
            let _ = std::fs::rename(root.join(&from_s), root.join(&to_s));
        });
        assert!(
            log.contains("interrupted directory rename settled"),
            "{step}: {log}"
        );
        let (gone, kept) = if step == "copy" {
            (to, from)
        } else {
            (from, to)
        };
        for (name, data) in &files {
            assert_eq!(
                rig.stored(&format!("{kept}/{name}")).as_deref(),
                Some(&data[..]),
                "{step}: {kept}/{name}"
            );
            assert_eq!(
                rig.stored(&format!("{gone}/{name}")),
                None,
                "{step}: {gone}/{name}"
            );
            assert!(std::fs::read(m.p(&format!("{kept}/{name}"))).unwrap() == *data);
        }
        drop(m);
    }
    assert!(kept_in(rig.spec.cache.as_ref().unwrap()).is_empty());
}

/// The path prefix of the bucket in request lines (`acct/container/` on Azurite, `bucket/`
/// on S3).
fn bucket_path(kind: Kind, bucket: &str) -> String {
    match kind {
        Kind::Azure => format!("{}/{bucket}/", blobmount_tests::AZURITE_ACCOUNT),
        _ => format!("{bucket}/"),
    }
}

per_backend!(crash_matrix);
