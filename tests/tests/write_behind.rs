//! Write-behind (`write.close-delay-ms`) through real mounts of every store: `rsync -a` into
//! a directory (new files and files replacing objects), then the store holds exactly rsync's
//! files with their modes and times and none of its temporary names, as another mount sees
//! them; `fsync` stores at once; unmount uploads what is still pending.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::time::{Duration, Instant};

use blobmount_tests::{Emulator, Kind, Mount, MountSpec};

fn spec(emu: &Emulator, bucket: &str, delay_ms: u32) -> MountSpec {
    let mut spec = MountSpec::for_emulator(emu, bucket);
    spec.env.push((
        "BLOBMOUNT_WRITE__CLOSE_DELAY_MS".into(),
        delay_ms.to_string(),
    ));
    spec
}

/// Wait until the store holds `want` at `key` (uploads follow the close by the delay).
fn wait_stored(emu: &Emulator, bucket: &str, key: &str, want: &[u8], m: &Mount) {
    let t = Instant::now();
    loop {
        if emu.get_object_opt(bucket, key).as_deref() == Some(want) {
            return;
        }
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{key} never stored: {:?}\n{}",
            emu.get_object_opt(bucket, key)
                .map(|b| String::from_utf8_lossy(&b).into_owned()),
            m.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn rsync_lands_under_final_names(kind: Kind) {
    let emu = Emulator::start(kind);
    let bucket = emu.create_bucket();
    emu.put_object(&bucket, "dst/keep.txt", b"old keep");
    // (A size of its own: rsync skips a file of the same size and mtime.)
    emu.put_object(&bucket, "dst/f3.txt", b"old f3, replaced");
    let src = tempfile::tempdir().unwrap();
    for i in 0..12 {
        let f = src.path().join(format!("f{i}.txt"));
        std::fs::write(&f, format!("new {i}\n")).unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o640 + (i % 2) * 4)).unwrap();
    }
    let m = Mount::start(&spec(&emu, &bucket, 400));
    let out = std::process::Command::new("rsync")
        .arg("-a")
        .arg(format!("{}/", src.path().display()))
        .arg(m.p("dst"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "rsync: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        m.log_text()
    );
    for i in 0..12 {
        wait_stored(
            &emu,
            &bucket,
            &format!("dst/f{i}.txt"),
            format!("new {i}\n").as_bytes(),
            &m,
        );
    }
    assert_eq!(emu.get_object(&bucket, "dst/keep.txt"), b"old keep");
    // Give any stray upload time to show, then look with a mount that caches nothing.
    std::thread::sleep(Duration::from_millis(1200));
    let other = Mount::start(&MountSpec::for_emulator(&emu, &bucket));
    let mut names: Vec<String> = std::fs::read_dir(other.p("dst"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut want: Vec<String> = (0..12).map(|i| format!("f{i}.txt")).collect();
    want.push("keep.txt".into());
    want.sort();
    assert_eq!(names, want, "{}", m.log_text());
    for i in [0, 3, 11] {
        let s = std::fs::metadata(src.path().join(format!("f{i}.txt"))).unwrap();
        let g = std::fs::metadata(other.p(&format!("dst/f{i}.txt"))).unwrap();
        assert_eq!(g.mode() & 0o7777, s.mode() & 0o7777, "f{i}");
        assert_eq!(g.mtime(), s.mtime(), "f{i}");
    }
    assert!(!m.log_text().contains("ERROR"), "{}", m.log_text());
}

fn fsync_stores_at_once_and_unmount_uploads_the_rest(kind: Kind) {
    let emu = Emulator::start(kind);
    let bucket = emu.create_bucket();
    // A long delay: only fsync and the unmount can have uploaded.
    let mut m = Mount::start(&spec(&emu, &bucket, 60_000));
    let f = std::fs::File::create(m.p("synced.bin")).unwrap();
    std::io::Write::write_all(&mut &f, b"durable").unwrap();
    f.sync_all().unwrap();
    assert_eq!(emu.get_object(&bucket, "synced.bin"), b"durable");
    drop(f);
    std::fs::write(m.p("pending.bin"), b"at unmount").unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        emu.get_object_opt(&bucket, "pending.bin"),
        None,
        "uploaded at close"
    );
    assert_eq!(m.stop(), Some(0), "daemon exit");
    assert_eq!(emu.get_object(&bucket, "pending.bin"), b"at unmount");
}

blobmount_tests::per_backend_and_adls!(
    rsync_lands_under_final_names,
    fsync_stores_at_once_and_unmount_uploads_the_rest,
);
