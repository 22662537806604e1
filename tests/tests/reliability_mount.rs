//! The data-loss cases of the reliability issue, as the programs that found them meet them
//! on a real mount of each emulator: `tar -xpf` of a file over one upload part (its
//! `fchmod` before `close` made the file's own upload a conflict), a rewrite at offset 0
//! after a streaming upload began, and `mv` of a directory while a file in it is being
//! written. Every case ends by comparing the store with what the program wrote.

use std::ffi::CString;
use std::os::fd::IntoRawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::time::Duration;

use blobmount_tests::{Emulator, Kind, Mount, MountSpec, sh};

const MIB: usize = 1024 * 1024;

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i * 13 + 7) % 251) as u8 ^ seed)
        .collect()
}

fn kept_in(cache: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(cache.join("conflicts"))
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

fn mode_of(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

/// `close(2)` of `fd`, with its result (dropping a `File` hides it).
fn close(fd: i32) -> std::io::Result<()> {
    // SAFETY: the caller owns `fd` and gives it up here.
    if unsafe { libc::close(fd) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `open(O_CREAT|O_EXCL|O_WRONLY)`, write, `fchmod`, `close`: every step succeeds and the
/// store has the bytes; then `tar -xpf` of a tree with such a file does the same.
fn chmod_before_close_of_a_streamed_file(kind: Kind) {
    let emu = Emulator::start(kind);
    let bucket = emu.create_bucket();
    let m = Mount::start(&MountSpec::for_emulator(&emu, &bucket));
    let data = pattern(9 * MIB + 123, 1);

    let path = CString::new(m.p("fchmod.bin").as_os_str().as_bytes()).unwrap();
    // SAFETY: a plain open(2) of a NUL-terminated path.
    let fd = unsafe {
        libc::open(
            path.as_ptr(),
            libc::O_CREAT | libc::O_EXCL | libc::O_WRONLY,
            0o600,
        )
    };
    assert!(fd >= 0, "open: {}", std::io::Error::last_os_error());
    let mut off = 0;
    while off < data.len() {
        let end = (off + MIB).min(data.len());
        // SAFETY: writes from a live buffer of the given length.
        let n = unsafe { libc::write(fd, data[off..end].as_ptr().cast(), end - off) };
        assert!(n > 0, "write: {}", std::io::Error::last_os_error());
        off += n as usize;
    }
    // SAFETY: fchmod of our descriptor.
    let rc = unsafe { libc::fchmod(fd, 0o640) };
    assert_eq!(rc, 0, "fchmod: {}", std::io::Error::last_os_error());
    close(fd).expect("close after fchmod of a streamed file");
    assert_eq!(emu.get_object(&bucket, "fchmod.bin"), data);
    assert_eq!(mode_of(&m.p("fchmod.bin")), 0o640);

    // The program that found it.
    let src = tempfile::tempdir().unwrap();
    let tree = src.path().join("tree");
    std::fs::create_dir_all(tree.join("sub")).unwrap();
    let big = pattern(8 * MIB + 4096 + 1, 2);
    std::fs::write(tree.join("sub/big.bin"), &big).unwrap();
    std::fs::write(tree.join("small.txt"), b"small").unwrap();
    sh(
        src.path(),
        "chmod 0640 tree/sub/big.bin && chmod 0600 tree/small.txt && tar -cf t.tar tree",
    );
    let out = std::process::Command::new("tar")
        .arg("-xpf")
        .arg(src.path().join("t.tar"))
        .current_dir(m.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "tar -xpf: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(emu.get_object(&bucket, "tree/sub/big.bin"), big);
    assert_eq!(emu.get_object(&bucket, "tree/small.txt"), b"small");
    assert_eq!(mode_of(&m.p("tree/sub/big.bin")), 0o640);
    assert_eq!(mode_of(&m.p("tree/small.txt")), 0o600);
    assert!(kept_in(&m.cache).is_empty(), "nothing was a conflict");
}

/// A file whose streaming upload began is rewritten at offset 0 (the upload is abandoned
/// and the file goes up whole at close): close succeeds and the store has the new bytes.
fn rewrite_after_streaming_began(kind: Kind) {
    use std::os::unix::fs::FileExt;
    let emu = Emulator::start(kind);
    let bucket = emu.create_bucket();
    let m = Mount::start(&MountSpec::for_emulator(&emu, &bucket));
    let mut data = pattern(10 * MIB, 3);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(m.p("rewritten.bin"))
        .unwrap();
    for (i, c) in data.chunks(MIB).enumerate() {
        f.write_all_at(c, (i * MIB) as u64).unwrap();
    }
    f.write_all_at(b"HEADER", 0).unwrap();
    data[..6].copy_from_slice(b"HEADER");
    close(f.into_raw_fd()).expect("close after an out-of-order write");
    assert_eq!(emu.get_object(&bucket, "rewritten.bin"), data);
    assert!(kept_in(&m.cache).is_empty(), "nothing was a conflict");
}

/// `mv dirA dirB` while `dirA/f` is open: a write and close at any moment during the
/// rename either land in `dirB/f` or fail loudly; the store never keeps the old bytes after
/// a successful close.
fn writes_during_mv_of_the_directory(kind: Kind) {
    let emu = Emulator::start(kind);
    let bucket = emu.create_bucket();
    let m = Mount::start(&MountSpec::for_emulator(&emu, &bucket));
    for trial in 0..6u64 {
        let (a, b) = (format!("dirA{trial}"), format!("dirB{trial}"));
        std::fs::create_dir(m.p(&a)).unwrap();
        for i in 0..40 {
            std::fs::write(m.p(&format!("{a}/other-{i}")), b"x").unwrap();
        }
        std::fs::write(m.p(&format!("{a}/f")), b"old bytes").unwrap();
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(m.p(&format!("{a}/f")))
            .unwrap();
        let (from, to) = (m.p(&a), m.p(&b));
        let mv = std::thread::spawn(move || std::fs::rename(from, to));
        std::thread::sleep(Duration::from_millis(trial * 15));
        let new = format!("new bytes of trial {trial}");
        let wrote = {
            use std::os::unix::fs::FileExt;
            f.write_all_at(new.as_bytes(), 0)
        };
        let closed = close(f.into_raw_fd());
        mv.join().unwrap().expect("mv of the directory");
        let key = format!("{b}/f");
        let got = emu.get_object(&bucket, &key);
        match (&wrote, &closed) {
            (Ok(()), Ok(())) => assert_eq!(
                got,
                new.as_bytes(),
                "trial {trial}: write and close succeeded but {key} holds {:?}",
                String::from_utf8_lossy(&got)
            ),
            _ => panic!("trial {trial}: write {wrote:?}, close {closed:?}"),
        }
        assert!(emu.get_object_opt(&bucket, &format!("{a}/f")).is_none());
    }
    assert!(kept_in(&m.cache).is_empty(), "nothing was a conflict");
}

blobmount_tests::per_backend_and_adls!(
    chmod_before_close_of_a_streamed_file,
    rewrite_after_streaming_began,
    writes_during_mv_of_the_directory,
);

/// Case 7 of the reliability issue: what blobmount tells a program it kept must survive a
/// power loss, not only a crash. The daemon's fsync calls are watched with strace while a
/// conflict keeps a file in `conflicts/` and a directory rename writes its journal: the kept
/// file and the `conflicts/` directory are synced before close returns, and so is the
/// journal's directory once the plan is in place.
#[test]
fn kept_data_and_rename_plans_are_synced() {
    let emu = Emulator::start(Kind::Azure);
    let bucket = emu.create_bucket();
    let m = Mount::start(&MountSpec::for_emulator(&emu, &bucket));
    let trace = m.cache.with_extension("strace");
    let mut strace = std::process::Command::new("strace")
        .args(["-f", "-y", "-qq", "-e", "trace=fsync,fdatasync", "-o"])
        .arg(&trace)
        .args(["-p", &m.pid().expect("daemon pid").to_string()])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("strace (tests/scripts/install-deps.sh installs it)");
    std::thread::sleep(Duration::from_secs(2)); // attached to every thread

    // A conflict: another client creates the name while we write it.
    let f = std::fs::File::create(m.p("contested.txt")).unwrap();
    {
        use std::os::unix::fs::FileExt;
        f.write_all_at(b"ours", 0).unwrap();
    }
    emu.put_object(&bucket, "contested.txt", b"theirs");
    let closed = close(f.into_raw_fd());
    assert_eq!(closed.unwrap_err().raw_os_error(), Some(libc::ESTALE));
    // A directory rename (journaled).
    std::fs::create_dir(m.p("d")).unwrap();
    std::fs::write(m.p("d/x"), b"x").unwrap();
    std::fs::rename(m.p("d"), m.p("e")).unwrap();

    std::thread::sleep(Duration::from_millis(500));
    // SAFETY: a signal to our own child (strace detaches and writes its log).
    unsafe { libc::kill(strace.id() as i32, libc::SIGINT) };
    let _ = strace.wait();
    let log = std::fs::read_to_string(&trace).unwrap_or_default();
    let _ = std::fs::remove_file(&trace);
    let synced = |what: &dyn Fn(&str) -> bool| {
        log.lines()
            .filter(|l| l.contains("fsync(") && l.contains("= 0"))
            .filter_map(|l| l.split_once('<').and_then(|(_, r)| r.split_once('>')))
            .any(|(path, _)| what(path))
    };
    let cache = m.cache.display().to_string();
    let conflicts = format!("{cache}/conflicts");
    assert!(
        synced(&|p| p.starts_with(&format!("{conflicts}/")) && p.ends_with("contested.txt")),
        "the kept file was not synced:\n{log}"
    );
    assert!(
        synced(&|p| p == conflicts),
        "the conflicts/ directory was not synced:\n{log}"
    );
    assert!(
        synced(&|p| p == format!("{cache}/journal")),
        "the rename journal's directory was not synced:\n{log}"
    );
    assert_eq!(kept_in(&m.cache).len(), 1);
    assert_eq!(emu.get_object(&bucket, "contested.txt"), b"theirs");
}
