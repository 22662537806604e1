//! The background poller (`cache.poll-secs`) on real mounts: with attributes, listings and
//! absent names trusted for an hour (so no TTL can explain the result), another client's
//! overwrite, new object and deletion become visible through the mount within a few poll
//! rounds, on their own, including for a file whose pages the kernel holds and a file held
//! open. The same sequence on a mount without the poller still serves the old state (the
//! control), so each test fails if the poller does nothing.

use std::time::{Duration, Instant};

use blobmount_tests::{Emulator, Kind, Mount, MountSpec, block_on};

const HOUR: &str = "3600";
/// Long enough for a few 0.3 s rounds on a loaded machine.
const WITHIN: Duration = Duration::from_secs(15);

fn mount(emu: &Emulator, bucket: &str, poll: bool) -> Mount {
    let mut spec = MountSpec::for_emulator(emu, bucket);
    spec.args = vec!["--attr-timeout".into(), HOUR.into()];
    let mut env = vec![
        ("BLOBMOUNT_CACHE__LIST_TTL_SECS", HOUR),
        ("BLOBMOUNT_CACHE__NEGATIVE_TTL_SECS", HOUR),
    ];
    if poll {
        env.push(("BLOBMOUNT_CACHE__POLL_SECS", "0.3"));
    }
    for (k, v) in env {
        spec.env.push((k.into(), v.into()));
    }
    Mount::start(&spec)
}

fn ls(m: &Mount, dir: &str) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(m.p(dir))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Poll `probe` until it holds or `WITHIN` passes; whether it held.
fn eventually(mut probe: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < WITHIN {
        if probe() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn outside_changes_show_up_without_a_refresh(kind: Kind) {
    let emu = Emulator::start(kind);
    let bucket = emu.create_bucket();
    emu.put_object(&bucket, "d/f", b"old content");
    emu.put_object(&bucket, "d/gone", b"soon gone");
    let polled = mount(&emu, &bucket, true);
    let control = mount(&emu, &bucket, false);
    for m in [&polled, &control] {
        assert_eq!(std::fs::read(m.p("d/f")).unwrap(), b"old content");
        // Twice: the second open keeps the kernel's pages, which later reads are served from.
        assert_eq!(std::fs::read(m.p("d/f")).unwrap(), b"old content");
        assert_eq!(ls(m, "d"), ["f", "gone"]);
        assert!(std::fs::metadata(m.p("d/new")).is_err());
    }

    let new = b"new, longer content written by another tool";
    emu.put_object(&bucket, "d/f", new);
    emu.put_object(&bucket, "d/new", b"added");
    block_on(emu.backend(&bucket).delete("d/gone")).unwrap();

    assert!(
        eventually(|| std::fs::read(polled.p("d/f")).unwrap() == new),
        "the overwrite never showed through the polled mount"
    );
    assert!(
        eventually(|| ls(&polled, "d") == ["f", "new"]),
        "listing: {:?}",
        ls(&polled, "d")
    );
    // The kernel is told just after the daemon dropped its own state (a few ms later).
    assert!(
        eventually(|| std::fs::read(polled.p("d/new")).is_ok_and(|b| b == b"added")),
        "the new object never became readable"
    );
    assert!(
        eventually(|| std::fs::metadata(polled.p("d/gone"))
            .is_err_and(|e| e.raw_os_error() == Some(libc::ENOENT))),
        "the deleted object is still there"
    );

    // The control mount, which had the same time, still serves what it cached.
    assert_eq!(std::fs::read(control.p("d/f")).unwrap(), b"old content");
    assert_eq!(ls(&control, "d"), ["f", "gone"]);
    assert!(std::fs::metadata(control.p("d/new")).is_err());
}

fn an_open_file_sees_the_new_version_at_its_next_open(kind: Kind) {
    let emu = Emulator::start(kind);
    let bucket = emu.create_bucket();
    emu.put_object(&bucket, "big/f", b"version one");
    let polled = mount(&emu, &bucket, true);
    let held = std::fs::File::open(polled.p("big/f")).unwrap();
    assert_eq!(std::fs::read(polled.p("big/f")).unwrap(), b"version one");
    emu.put_object(&bucket, "big/f", b"version two, longer");
    assert!(
        eventually(|| std::fs::metadata(polled.p("big/f")).unwrap().len() == 19),
        "the size of the open file never changed"
    );
    assert_eq!(
        std::fs::read(polled.p("big/f")).unwrap(),
        b"version two, longer"
    );
    drop(held);
}

blobmount_tests::per_backend_and_adls!(
    outside_changes_show_up_without_a_refresh,
    an_open_file_sees_the_new_version_at_its_next_open,
);
