//! A random-operation exerciser in the spirit of fsx, on real FUSE mounts of the real daemon
//! against each emulator.
//!
//! Why it exists: the behaviour tests check one path each, but data loss in a file system
//! comes from *interleavings* nobody wrote a test for — a truncate while another handle holds
//! read-ahead, an append to an object that streamed in parts, an mmap write next to a
//! `pwrite`, a rename while a writer is open, a close that should have uploaded. Here a seeded
//! RNG drives a few files through open/create (several handles on one file, `O_APPEND`,
//! `O_TRUNC`), `pwrite` at random offsets (rarely across the 8 MiB part boundaries), in-order
//! rewrites that stream in parts, `pread`, `ftruncate` and `truncate` (grow and shrink),
//! `fsync`, close and reopen, `mmap` reads and writes (`msync(MS_SYNC)`), rename with handles
//! open and unlink, and now and then a pause past the mount's 1 s attribute and name TTLs (so
//! revalidation paths run too). Each step is checked against an in-memory shadow copy: reads
//! after every step, and **the object in the store, byte for byte, after every successful
//! close, fsync, msync, truncate of a closed file and rename** — a successful close means the
//! store has it.
//! At the end every file is checked by path, in listings and in the store, and again through
//! a fresh mount; the cache directory's `conflicts/` must be empty, the daemon must have
//! counted no upload conflict or failed upload and logged no error.
//!
//! Unlink and rename also hit files that are open: their descriptors live on as orphans
//! ("Unlinked open files" in docs/semantics.md), so reads, writes, truncates, mmaps, fsyncs
//! and closes through them must keep working on their own bytes, and nothing of them may reach
//! the store (the old name keeps what the store last held there, or nothing).
//! `BLOBMOUNT_FSX_ORPHANS=0` limits them to closed files (`ORPHANS` sets the default).
//!
//! Reproducing: the seed is printed at the start and in every failure together with the op
//! index and the last ops; run again with `BLOBMOUNT_FSX_SEED=<seed>` (and
//! `BLOBMOUNT_FSX_OPS=<index + 1>` to stop right after the failing op): the same seed gives
//! the same ops. `BLOBMOUNT_FSX_TRACE=1` prints every op as it starts, with the time of day
//! to line it up with the daemon's log. The op count defaults to a CI-sized run; long runs
//! (`BLOBMOUNT_FSX_OPS=100000`) take longer than nextest's slow-timeout allows, so run them
//! with `cargo test -p blobmount-tests --test exerciser -- --nocapture exerciser_s3` (no
//! timeout). A progress line is printed every 1000 ops, and a summary (ops and time per kind,
//! the daemon's upload paths, its warnings) at the end.

use std::collections::{BTreeMap, VecDeque};
use std::ffi::CString;
use std::fmt::Write as _;
use std::io;
use std::path::Path;
use std::time::Instant;

use blobmount_tests::{Emulator, Kind, Mount, MountSpec, free_port, http_get};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const KIB: u64 = 1024;
const MIB: u64 = 1024 * KIB;
/// Files never grow past this (three of them keep Azurite's and the shadow's memory modest).
const MAX_SIZE: u64 = 24 * MIB;
/// The daemon's upload part size: big writes are placed across multiples of it.
const PART: u64 = 8 * MIB;
/// Files alive at once, and descriptors open at once (over all files).
const MAX_FILES: usize = 3;
const MAX_FDS: usize = 6;
/// Names files take (two in a subdirectory, so renames also move between directories).
const NAMES: [&str; 6] = ["f0", "f1", "f2", "f3", "sub/f4", "sub/f5"];
/// Ops shown in a failure report.
const HISTORY: usize = 20;
/// Ops per store when `BLOBMOUNT_FSX_OPS` is unset: a CI run of well under two minutes (about
/// 20 to 40 s per store on two cores).
const DEFAULT_OPS: u64 = 1500;
/// Whether unlink and rename hit open files unless `BLOBMOUNT_FSX_ORPHANS` (`0` or `1`) says.
const ORPHANS: bool = true;
/// Longer than the mount's attribute, name and listing TTLs (1 s each by default).
const PAUSE: std::time::Duration = std::time::Duration::from_millis(1200);
/// Files at most this large are read whole after every step.
const READ_WHOLE_MAX: u64 = 256 * KIB;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Access {
    Read,
    Write,
    ReadWrite,
    /// `O_RDWR | O_APPEND`: writes go to the end whatever the offset.
    Append,
}

impl Access {
    fn readable(self) -> bool {
        self != Access::Write
    }

    fn writable(self) -> bool {
        self != Access::Read
    }

    fn flags(self) -> i32 {
        match self {
            Access::Read => libc::O_RDONLY,
            Access::Write => libc::O_WRONLY,
            Access::ReadWrite => libc::O_RDWR,
            Access::Append => libc::O_RDWR | libc::O_APPEND,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Op {
    Write,
    BigWrite,
    Stream,
    Read,
    Truncate,
    Fsync,
    Open,
    Close,
    Reopen,
    MmapRead,
    MmapWrite,
    Rename,
    Unlink,
    TruncatePath,
    Stat,
    Pause,
}

/// Relative weights of the operations.
const WEIGHTS: &[(Op, u32)] = &[
    (Op::Write, 24),
    (Op::BigWrite, 1),
    (Op::Stream, 1),
    (Op::Read, 10),
    (Op::Truncate, 6),
    (Op::Fsync, 4),
    (Op::Open, 9),
    (Op::Close, 8),
    (Op::Reopen, 4),
    (Op::MmapRead, 5),
    (Op::MmapWrite, 5),
    (Op::Rename, 3),
    (Op::Unlink, 2),
    (Op::TruncatePath, 1),
    (Op::Stat, 3),
    (Op::Pause, 1),
];

struct OpenFd {
    fd: i32,
    file: u64,
    access: Access,
}

struct FileState {
    /// Its name; for an orphan, the name it had.
    name: &'static str,
    /// Unlinked or replaced by a rename while open: only its open descriptors reach it.
    orphan: bool,
    data: Vec<u8>,
}

/// The byte op `op` writes at file offset `off`: it names the op (mod 255) and its place, so a
/// wrong byte in a report says which write it came from, and shifted data never matches.
fn pattern_byte(op: u64, off: u64) -> u8 {
    ((op % 255) as u8 + 1) ^ (off as u8)
}

fn pattern(op: u64, off: u64, len: u64) -> Vec<u8> {
    (off..off + len).map(|o| pattern_byte(op, o)).collect()
}

fn cstr(p: &Path) -> CString {
    CString::new(p.as_os_str().as_encoded_bytes()).expect("a mount path without NUL")
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(p).unwrap_or(4096)
}

fn pread_all(fd: i32, off: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; len];
    let mut got = 0;
    while got < len {
        // SAFETY: the buffer has `len - got` writable bytes from `got`.
        let n = unsafe {
            libc::pread(
                fd,
                buf[got..].as_mut_ptr().cast(),
                len - got,
                (off + got as u64) as libc::off_t,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            break;
        }
        got += n as usize;
    }
    buf.truncate(got);
    Ok(buf)
}

/// `pwrite` (or `write`, for an append descriptor) of all of `data`.
fn write_all(fd: i32, off: u64, data: &[u8], append: bool) -> io::Result<()> {
    let mut done = 0;
    while done < data.len() {
        let rest = &data[done..];
        // SAFETY: `rest` is valid for reads of its length.
        let n = unsafe {
            if append {
                libc::write(fd, rest.as_ptr().cast(), rest.len())
            } else {
                libc::pwrite(
                    fd,
                    rest.as_ptr().cast(),
                    rest.len(),
                    (off + done as u64) as libc::off_t,
                )
            }
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "write returned 0"));
        }
        done += n as usize;
    }
    Ok(())
}

fn rc(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// `None` when equal, else where and how `seen` differs from `want` (both start at `base`).
fn diff(want: &[u8], seen: &[u8], base: u64) -> Option<String> {
    if want == seen {
        return None;
    }
    let common = want.len().min(seen.len());
    let first = (0..common).find(|&i| want[i] != seen[i]).unwrap_or(common);
    let last = (0..common).rev().find(|&i| want[i] != seen[i]);
    let differing = (0..common).filter(|&i| want[i] != seen[i]).count();
    let window = |v: &[u8]| {
        let a = first.saturating_sub(8);
        let b = (first + 24).min(v.len());
        let mut s = String::new();
        for (i, x) in v.iter().enumerate().take(b).skip(a) {
            let mark = if i == first { "[" } else { "" };
            let _ = write!(s, "{mark}{x:02x} ");
        }
        s
    };
    let mut out = format!(
        "lengths: want {} seen {}; {differing} of the {common} common bytes differ, first at \
         file offset {} (index {first})",
        want.len(),
        seen.len(),
        base + first as u64,
    );
    if let Some(l) = last {
        let _ = write!(out, ", last at file offset {}", base + l as u64);
    }
    let _ = write!(out, "\n  want: {}\n  seen: {}", window(want), window(seen));
    if first < seen.len() {
        let o = base + first as u64;
        let b = seen[first];
        if b == 0 {
            let _ = write!(out, "\n  seen byte is 0 (a hole, a truncate, or lost data)");
        } else {
            let k = (b ^ (o as u8)).wrapping_sub(1);
            let _ = write!(
                out,
                "\n  seen byte {b:#04x} at {o} is what an op with index = {k} (mod 255) \
                 writes there"
            );
        }
    }
    Some(out)
}

struct Fsx<'a> {
    kind: Kind,
    emu: &'a Emulator,
    bucket: &'a str,
    m: &'a Mount,
    rng: StdRng,
    seed: u64,
    ops: u64,
    /// Index of the op running now.
    op: u64,
    files: BTreeMap<u64, FileState>,
    next_file: u64,
    /// What the store was last seen to hold under each name (absent: no object).
    stored: BTreeMap<&'static str, Vec<u8>>,
    fds: Vec<OpenFd>,
    history: VecDeque<String>,
    /// `BLOBMOUNT_FSX_TRACE` set: print every op as it starts (for replays).
    trace: bool,
    /// Unlink and rename may hit open files (see `ORPHANS`).
    orphans_on: bool,
    /// `Err(reason)` when the mount cannot do shared writable mappings (then the op is skipped).
    mmap_write: Result<(), String>,
    page: u64,
    counts: BTreeMap<Op, u64>,
    /// Wall time spent per op kind, checks included (where a run's time goes).
    time: BTreeMap<Op, std::time::Duration>,
    skipped: BTreeMap<Op, u64>,
    store_checks: u64,
    /// Files unlinked or replaced while open.
    orphans: u64,
    bytes_written: u64,
    largest: u64,
    /// The daemon's health server (its `/metrics` show which upload paths the run took).
    health_port: u16,
}

impl Drop for Fsx<'_> {
    fn drop(&mut self) {
        // After a failure: let the mount unmount cleanly.
        for f in self.fds.drain(..) {
            // SAFETY: a descriptor we opened and still own.
            unsafe { libc::close(f.fd) };
        }
    }
}

impl<'a> Fsx<'a> {
    fn new(kind: Kind, emu: &'a Emulator, bucket: &'a str, m: &'a Mount, health_port: u16) -> Self {
        let seed = match std::env::var("BLOBMOUNT_FSX_SEED") {
            Ok(s) => {
                let s = s.trim();
                let parsed = match s.strip_prefix("0x") {
                    Some(h) => u64::from_str_radix(h, 16),
                    None => s.parse(),
                };
                parsed.unwrap_or_else(|e| panic!("BLOBMOUNT_FSX_SEED={s:?} is not a u64: {e}"))
            }
            Err(_) => rand::random(),
        };
        let ops = match std::env::var("BLOBMOUNT_FSX_OPS") {
            Ok(s) => s
                .trim()
                .parse()
                .unwrap_or_else(|e| panic!("BLOBMOUNT_FSX_OPS={s:?} is not a count: {e}")),
            Err(_) => DEFAULT_OPS,
        };
        Fsx {
            kind,
            emu,
            bucket,
            m,
            rng: StdRng::seed_from_u64(seed),
            seed,
            ops,
            op: 0,
            files: BTreeMap::new(),
            next_file: 0,
            stored: BTreeMap::new(),
            fds: Vec::new(),
            history: VecDeque::new(),
            trace: std::env::var_os("BLOBMOUNT_FSX_TRACE").is_some(),
            orphans_on: match std::env::var("BLOBMOUNT_FSX_ORPHANS").as_deref() {
                Ok("0") => false,
                Ok(_) => true,
                Err(_) => ORPHANS,
            },
            mmap_write: Ok(()),
            page: page_size(),
            counts: BTreeMap::new(),
            time: BTreeMap::new(),
            skipped: BTreeMap::new(),
            store_checks: 0,
            orphans: 0,
            bytes_written: 0,
            largest: 0,
            health_port,
        }
    }

    fn replay_hint(&self) -> String {
        let test = match self.kind {
            Kind::Azure => "exerciser_azure",
            Kind::S3 => "exerciser_s3",
            Kind::Gcs => "exerciser_gcs",
        };
        let orphans = if self.orphans_on == ORPHANS {
            String::new()
        } else {
            format!("BLOBMOUNT_FSX_ORPHANS={} ", u8::from(self.orphans_on))
        };
        format!(
            "BLOBMOUNT_FSX_SEED={} BLOBMOUNT_FSX_OPS={} {orphans}cargo test -p blobmount-tests \
             --test exerciser -- --nocapture {test}",
            self.seed,
            self.op + 1
        )
    }

    /// Fail the test with everything needed to replay it.
    fn fail(&self, what: impl std::fmt::Display) -> ! {
        let mut s = format!(
            "fsx on {:?} FAILED at op {} of {} (seed {})\n{what}\n\nreplay: {}\n\nlast {} ops \
             (the failing one last):\n",
            self.kind,
            self.op,
            self.ops,
            self.seed,
            self.replay_hint(),
            self.history.len()
        );
        for h in &self.history {
            let _ = writeln!(s, "  {h}");
        }
        let _ = writeln!(s, "files:");
        for (id, f) in &self.files {
            let fds: Vec<String> = self
                .fds
                .iter()
                .enumerate()
                .filter(|(_, d)| d.file == *id)
                .map(|(i, d)| format!("#{i}(fd {} {:?})", d.fd, d.access))
                .collect();
            let _ = writeln!(
                s,
                "  {}{} size {} open {}",
                f.name,
                if f.orphan { " (unlinked)" } else { "" },
                f.data.len(),
                fds.join(" ")
            );
        }
        let log = self.m.log_text();
        let tail: Vec<&str> = log.lines().rev().take(40).collect();
        let _ = writeln!(s, "daemon log (last {} lines):", tail.len());
        for l in tail.iter().rev() {
            let _ = writeln!(s, "  {l}");
        }
        panic!("{s}");
    }

    fn log(&mut self, what: String) {
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        let line = format!("op {}: {what}", self.op);
        if self.trace {
            // Time of day (UTC), to line the op up with the daemon's log.
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            let (secs, ms) = (t.as_secs() % 86_400, t.subsec_millis());
            eprintln!(
                "fsx {:?} {:02}:{:02}:{:02}.{ms:03} {line}",
                self.kind,
                secs / 3600,
                secs / 60 % 60,
                secs % 60
            );
        }
        self.history.push_back(line);
    }

    fn pick<T: Copy>(&mut self, v: &[T]) -> Option<T> {
        if v.is_empty() {
            None
        } else {
            Some(v[self.rng.random_range(0..v.len())])
        }
    }

    fn file(&self, id: u64) -> &FileState {
        self.files
            .get(&id)
            .unwrap_or_else(|| self.fail(format!("internal: no file {id}")))
    }

    fn fds_where(&self, f: impl Fn(&OpenFd) -> bool) -> Vec<usize> {
        (0..self.fds.len()).filter(|&i| f(&self.fds[i])).collect()
    }

    fn open_count(&self, id: u64) -> usize {
        self.fds.iter().filter(|d| d.file == id).count()
    }

    fn free_names(&self) -> Vec<&'static str> {
        NAMES
            .iter()
            .copied()
            .filter(|n| self.live_named(n).is_none())
            .collect()
    }

    /// Files that have a name (not orphans), in a stable order.
    fn live(&self) -> Vec<u64> {
        self.files
            .iter()
            .filter(|(_, f)| !f.orphan)
            .map(|(&id, _)| id)
            .collect()
    }

    fn live_named(&self, name: &str) -> Option<u64> {
        self.files
            .iter()
            .find(|(_, f)| !f.orphan && f.name == name)
            .map(|(&id, _)| id)
    }

    /// `name`, marked when the file is an orphan (for logs).
    fn shown(&self, id: u64) -> String {
        let f = self.file(id);
        if f.orphan {
            format!("{} (unlinked)", f.name)
        } else {
            f.name.to_string()
        }
    }

    /// After a close, fsync or msync of file `id`: the store holds it. An orphan is never
    /// uploaded again: its old name still holds what the store held there before (the file
    /// that has the name now, as last uploaded, or nothing).
    fn check_store_of(&mut self, id: u64, why: &str) {
        let f = self.file(id);
        if !f.orphan {
            return self.check_store(id, why);
        }
        let name = f.name;
        let why = format!("{why} of an unlinked file (nothing of it may be uploaded)");
        self.store_checks += 1;
        let got = self.emu.get_object_opt(self.bucket, name);
        match (self.stored.get(name), got) {
            (None, None) => {}
            (None, Some(got)) => self.fail(format!(
                "{why}: an object {name} ({} bytes) appeared in the store",
                got.len()
            )),
            (Some(_), None) => self.fail(format!("{why}: object {name} vanished from the store")),
            (Some(want), Some(got)) => {
                if let Some(d) = diff(want, &got, 0) {
                    self.fail(format!("{why}: object {name} in the store changed\n{d}"));
                }
            }
        }
    }

    fn set_data(&mut self, id: u64, f: impl FnOnce(&mut Vec<u8>)) {
        let Some(st) = self.files.get_mut(&id) else {
            self.fail(format!("internal: no file {id}"))
        };
        f(&mut st.data);
        self.largest = self.largest.max(st.data.len() as u64);
    }

    // ---- checks ----

    /// The object in the store is the shadow, byte for byte.
    fn check_store(&mut self, id: u64, why: &str) {
        let name = self.file(id).name;
        self.store_checks += 1;
        match self.emu.get_object_opt(self.bucket, name) {
            None => self.fail(format!("{why}: object {name} is missing from the store")),
            Some(got) => {
                if let Some(d) = diff(&self.file(id).data, &got, 0) {
                    self.fail(format!(
                        "{why}: object {name} in the store differs from what was written\n{d}"
                    ));
                }
                self.stored.insert(name, got);
            }
        }
    }

    fn check_store_absent(&mut self, name: &str, why: &str) {
        self.store_checks += 1;
        if let Some(got) = self.emu.get_object_opt(self.bucket, name) {
            self.fail(format!(
                "{why}: object {name} is still in the store ({} bytes)",
                got.len()
            ));
        }
        self.stored.remove(name);
    }

    fn check_read(&self, i: usize, off: u64, len: u64, why: &str) {
        let OpenFd { fd, file, .. } = self.fds[i];
        let data = &self.file(file).data;
        let size = data.len() as u64;
        let want = if off >= size {
            &[][..]
        } else {
            &data[off as usize..(off + len).min(size) as usize]
        };
        match pread_all(fd, off, len as usize) {
            Err(e) => self.fail(format!(
                "{why}: pread(#{i} fd {fd}, {len} at {off}) of {}: {e}",
                self.file(file).name
            )),
            Ok(got) => {
                if let Some(d) = diff(want, &got, off) {
                    self.fail(format!(
                        "{why}: pread(#{i} fd {fd}, {len} at {off}) of {} differs from the \
                         shadow\n{d}",
                        self.file(file).name
                    ));
                }
            }
        }
    }

    fn check_fstat(&self, i: usize, why: &str) {
        let OpenFd { fd, file, .. } = self.fds[i];
        // SAFETY: an all-zero stat is a valid out-buffer.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: fd is open; st is a valid out-pointer.
        if let Err(e) = rc(unsafe { libc::fstat(fd, &mut st) }) {
            self.fail(format!("{why}: fstat(#{i} fd {fd}): {e}"));
        }
        let want = self.file(file).data.len() as u64;
        if st.st_size as u64 != want {
            self.fail(format!(
                "{why}: fstat(#{i} fd {fd}) of {} says size {}, the shadow has {want}",
                self.file(file).name,
                st.st_size
            ));
        }
    }

    fn check_stat_path(&self, id: u64, why: &str) {
        let f = self.file(id);
        match std::fs::metadata(self.m.p(f.name)) {
            Err(e) => self.fail(format!("{why}: stat {}: {e}", f.name)),
            Ok(md) => {
                if md.len() != f.data.len() as u64 {
                    self.fail(format!(
                        "{why}: stat {} says size {}, the shadow has {}",
                        f.name,
                        md.len(),
                        f.data.len()
                    ));
                }
            }
        }
    }

    fn check_gone(&self, name: &str, why: &str) {
        match std::fs::symlink_metadata(self.m.p(name)) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
            Err(e) => self.fail(format!("{why}: stat of removed {name}: {e} (want ENOENT)")),
            Ok(md) => self.fail(format!(
                "{why}: {name} still exists ({} bytes) after it was removed",
                md.len()
            )),
        }
    }

    /// After a step on file `id`: its size through a descriptor, and its bytes through a
    /// readable descriptor (the whole file when small, else the `focus` range, the tail and a
    /// random window).
    fn check_file(&mut self, id: u64, focus: Option<(u64, u64)>) {
        let why = "check after the op";
        let Some(&any) = self.fds_where(|d| d.file == id).first() else {
            return;
        };
        self.check_fstat(any, why);
        let readable = self.fds_where(|d| d.file == id && d.access.readable());
        let Some(r) = self.pick(&readable) else {
            return;
        };
        let size = self.file(id).data.len() as u64;
        if size <= READ_WHOLE_MAX {
            self.check_read(r, 0, size + 1, why);
            return;
        }
        if let Some((off, len)) = focus {
            let a = off.saturating_sub(64);
            self.check_read(r, a, (off + len + 64 - a).min(2 * MIB), why);
        }
        self.check_read(r, size.saturating_sub(4 * KIB), 4 * KIB + 1, why);
        let off = self.rng.random_range(0..size);
        self.check_read(r, off, 64 * KIB, why);
    }

    // ---- operations ----

    fn open_flags_desc(flags: i32) -> String {
        let mut s = match flags & libc::O_ACCMODE {
            libc::O_RDONLY => "O_RDONLY".to_string(),
            libc::O_WRONLY => "O_WRONLY".to_string(),
            _ => "O_RDWR".to_string(),
        };
        for (f, n) in [
            (libc::O_CREAT, "O_CREAT"),
            (libc::O_EXCL, "O_EXCL"),
            (libc::O_TRUNC, "O_TRUNC"),
            (libc::O_APPEND, "O_APPEND"),
        ] {
            if flags & f != 0 {
                s.push('|');
                s.push_str(n);
            }
        }
        s
    }

    fn open_path(&self, name: &str, flags: i32) -> io::Result<i32> {
        let p = cstr(&self.m.p(name));
        // SAFETY: a valid C string; the mode argument is read only with O_CREAT.
        let fd = unsafe { libc::open(p.as_ptr(), flags | libc::O_CLOEXEC, 0o644 as libc::c_uint) };
        if fd < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(fd)
        }
    }

    fn op_open(&mut self) -> bool {
        if self.fds.len() >= MAX_FDS {
            return false;
        }
        let create =
            self.live().len() < MAX_FILES && (self.live().is_empty() || self.rng.random_bool(0.3));
        if create {
            let free = self.free_names();
            let Some(name) = self.pick(&free) else {
                return false;
            };
            let access = if self.rng.random_bool(0.85) {
                Access::ReadWrite
            } else {
                Access::Write
            };
            let flags = access.flags() | libc::O_CREAT | libc::O_EXCL;
            self.log(format!(
                "create {name} {} -> #{}",
                Self::open_flags_desc(flags),
                self.fds.len()
            ));
            let fd = self
                .open_path(name, flags)
                .unwrap_or_else(|e| self.fail(format!("create {name}: {e}")));
            let id = self.next_file;
            self.next_file += 1;
            self.files.insert(
                id,
                FileState {
                    name,
                    orphan: false,
                    data: Vec::new(),
                },
            );
            self.fds.push(OpenFd {
                fd,
                file: id,
                access,
            });
            self.check_file(id, None);
            return true;
        }
        let ids = self.live();
        let Some(id) = self.pick(&ids) else {
            return false;
        };
        let access = match self.rng.random_range(0..20) {
            0..=10 => Access::ReadWrite,
            11..=15 => Access::Read,
            16..=17 => Access::Write,
            _ => Access::Append,
        };
        let trunc = access.writable() && self.rng.random_ratio(1, 20);
        self.open_existing(id, access, trunc, "open");
        true
    }

    fn open_existing(&mut self, id: u64, access: Access, trunc: bool, what: &str) {
        let name = self.file(id).name;
        let flags = access.flags() | if trunc { libc::O_TRUNC } else { 0 };
        self.log(format!(
            "{what} {name} {} -> #{}",
            Self::open_flags_desc(flags),
            self.fds.len()
        ));
        let fd = self
            .open_path(name, flags)
            .unwrap_or_else(|e| self.fail(format!("{what} {name}: {e}")));
        if trunc {
            self.set_data(id, Vec::clear);
        }
        self.fds.push(OpenFd {
            fd,
            file: id,
            access,
        });
        self.check_file(id, None);
    }

    /// Close descriptor `i`; every close flushes, so the store must hold the file after it.
    fn close_fd(&mut self, i: usize, what: &str) -> (u64, Access) {
        let OpenFd { fd, file, access } = self.fds.remove(i);
        let name = self.shown(file);
        // SAFETY: a descriptor we opened and own; it is out of the pool now.
        if let Err(e) = rc(unsafe { libc::close(fd) }) {
            self.fail(format!("{what}: close(fd {fd}) of {name}: {e}"));
        }
        let last = self.open_count(file) == 0;
        let why = if last {
            format!("after {what} of the last handle of {name}")
        } else {
            format!("after {what} of {name}")
        };
        self.check_store_of(file, &why);
        if last && self.file(file).orphan {
            self.files.remove(&file);
        }
        (file, access)
    }

    fn op_close(&mut self) -> bool {
        if self.fds.is_empty() {
            return false;
        }
        let i = self.rng.random_range(0..self.fds.len());
        let (fd, name) = (self.fds[i].fd, self.shown(self.fds[i].file));
        self.log(format!("close #{i} (fd {fd}, {name})"));
        let (id, _) = self.close_fd(i, "close");
        self.check_file(id, None);
        true
    }

    fn op_reopen(&mut self) -> bool {
        let named = self.fds_where(|d| !self.file(d.file).orphan);
        let Some(i) = self.pick(&named) else {
            return false;
        };
        let (fd, name) = (self.fds[i].fd, self.file(self.fds[i].file).name);
        self.log(format!("reopen: close #{i} (fd {fd}, {name})"));
        let (id, access) = self.close_fd(i, "close");
        self.open_existing(id, access, false, "reopen");
        true
    }

    /// Length of an ordinary write: mostly small, sometimes up to a few MiB.
    fn write_len(&mut self) -> u64 {
        match self.rng.random_range(0..100) {
            0..=54 => self.rng.random_range(1..=4 * KIB),
            55..=84 => self.rng.random_range(4 * KIB..=64 * KIB),
            85..=96 => self.rng.random_range(64 * KIB..=MIB),
            _ => self.rng.random_range(MIB..=3 * MIB),
        }
    }

    /// Offset of an ordinary write into a file of `size` bytes.
    fn write_off(&mut self, size: u64) -> u64 {
        if size == 0 {
            return if self.rng.random_ratio(1, 10) {
                self.rng.random_range(1..=64 * KIB)
            } else {
                0
            };
        }
        match self.rng.random_range(0..100) {
            0..=44 => self.rng.random_range(0..size),
            45..=69 => size,
            70..=79 => size + self.rng.random_range(1..=64 * KIB),
            80..=89 => size - self.rng.random_range(1..=size.min(8 * KIB)),
            _ => {
                let p = self.rng.random_range(0..=size / self.page) * self.page;
                (p + self.rng.random_range(0..3)).saturating_sub(1)
            }
        }
    }

    fn op_write(&mut self, big: bool) -> bool {
        let writable = self.fds_where(|d| d.access.writable());
        let Some(i) = self.pick(&writable) else {
            return false;
        };
        let OpenFd { fd, file, access } = self.fds[i];
        let size = self.file(file).data.len() as u64;
        let append = access == Access::Append;
        let (mut off, mut len) = if big {
            let len = self.rng.random_range(MIB..=5 * MIB);
            if append || self.rng.random_bool(0.5) {
                // A long write at the end (an append to the object).
                (size, len)
            } else {
                // Across a part boundary.
                let b = PART * self.rng.random_range(1..=2);
                (b - self.rng.random_range(1..len.min(b)), len)
            }
        } else {
            let len = self.write_len();
            let off = if append { size } else { self.write_off(size) };
            (off, len)
        };
        if off >= MAX_SIZE {
            if append {
                return false;
            }
            off = self.rng.random_range(0..MAX_SIZE);
        }
        len = len.min(MAX_SIZE - off);
        let name = self.shown(file);
        let how = if append { "write(O_APPEND)" } else { "pwrite" };
        self.log(format!(
            "{how} #{i} (fd {fd}, {name}) {len} at {off}{}",
            if big { " (big)" } else { "" }
        ));
        let buf = pattern(self.op, off, len);
        if let Err(e) = write_all(fd, off, &buf, append) {
            self.fail(format!("{how} {len} at {off} to {name}: {e}"));
        }
        self.bytes_written += len;
        self.set_data(file, |d| {
            let end = (off + len) as usize;
            if d.len() < end {
                d.resize(end, 0);
            }
            d[off as usize..end].copy_from_slice(&buf);
        });
        self.check_file(file, Some((off, len)));
        true
    }

    /// Rewrite a file from offset 0 in order, past a part boundary, as `cp` or a checkpoint
    /// writer does: the daemon uploads it in parts while it is written (a truncate to 0
    /// first, unless it is empty already).
    fn op_stream(&mut self) -> bool {
        let writable =
            self.fds_where(|d| d.access == Access::ReadWrite || d.access == Access::Write);
        let Some(i) = self.pick(&writable) else {
            return false;
        };
        let OpenFd { fd, file, .. } = self.fds[i];
        let total = self.rng.random_range(PART + 1..=PART + 3 * MIB);
        let chunk = self.rng.random_range(64 * KIB..=MIB);
        let size = self.file(file).data.len() as u64;
        let name = self.shown(file);
        self.log(format!(
            "stream #{i} (fd {fd}, {name}): {}pwrite {total} from 0 in order, {chunk} at a time",
            if size > 0 {
                "ftruncate to 0, then "
            } else {
                ""
            }
        ));
        if size > 0 {
            // SAFETY: fd is open.
            if let Err(e) = rc(unsafe { libc::ftruncate(fd, 0) }) {
                self.fail(format!("stream: ftruncate {name} to 0: {e}"));
            }
            self.set_data(file, Vec::clear);
        }
        let buf = pattern(self.op, 0, total);
        for (k, piece) in buf.chunks(chunk as usize).enumerate() {
            let off = k as u64 * chunk;
            if let Err(e) = write_all(fd, off, piece, false) {
                self.fail(format!(
                    "stream: pwrite {} at {off} to {name}: {e}",
                    piece.len()
                ));
            }
        }
        self.bytes_written += total;
        self.set_data(file, |d| *d = buf);
        self.check_file(file, Some((PART - KIB, 2 * KIB)));
        true
    }

    fn op_read(&mut self) -> bool {
        let readable = self.fds_where(|d| d.access.readable());
        let Some(i) = self.pick(&readable) else {
            return false;
        };
        let OpenFd { fd, file, .. } = self.fds[i];
        let size = self.file(file).data.len() as u64;
        let (off, len) = if self.rng.random_ratio(1, 5) {
            (0, size + 1)
        } else {
            let off = self.rng.random_range(0..=size + 100);
            (off, self.rng.random_range(1..=256 * KIB))
        };
        let name = self.shown(file);
        self.log(format!("pread #{i} (fd {fd}, {name}) {len} at {off}"));
        self.check_read(i, off, len, "pread");
        self.check_file(file, None);
        true
    }

    fn new_size(&mut self, size: u64) -> u64 {
        let shrink_bias = size > 10 * MIB && self.rng.random_bool(0.6);
        if size > 0 && shrink_bias {
            return self.rng.random_range(0..size);
        }
        let n = match self.rng.random_range(0..100) {
            0..=29 if size > 0 => self.rng.random_range(0..size),
            30..=39 => 0,
            40..=64 => size + self.rng.random_range(1..=256 * KIB),
            65..=74 if size > 0 => size - self.rng.random_range(1..=size.min(4 * KIB)),
            75..=84 => {
                let b = PART * self.rng.random_range(1..=2);
                b - 64 * KIB + self.rng.random_range(0..=128 * KIB)
            }
            85..=89 => size,
            _ => self.rng.random_range(0..=(2 * size).max(64 * KIB)),
        };
        n.min(MAX_SIZE)
    }

    fn op_truncate(&mut self) -> bool {
        let writable = self.fds_where(|d| d.access.writable());
        let Some(i) = self.pick(&writable) else {
            return false;
        };
        let OpenFd { fd, file, .. } = self.fds[i];
        let size = self.file(file).data.len() as u64;
        let new = self.new_size(size);
        let name = self.shown(file);
        self.log(format!("ftruncate #{i} (fd {fd}, {name}) {size} -> {new}"));
        // SAFETY: fd is open.
        if let Err(e) = rc(unsafe { libc::ftruncate(fd, new as libc::off_t) }) {
            self.fail(format!("ftruncate {name} to {new}: {e}"));
        }
        self.set_data(file, |d| d.resize(new as usize, 0));
        let lo = size.min(new);
        self.check_file(file, Some((lo, size.max(new) - lo)));
        true
    }

    fn op_truncate_path(&mut self) -> bool {
        let closed: Vec<u64> = self
            .live()
            .into_iter()
            .filter(|&id| self.open_count(id) == 0)
            .collect();
        let Some(id) = self.pick(&closed) else {
            return false;
        };
        let size = self.file(id).data.len() as u64;
        let new = self.new_size(size);
        let name = self.file(id).name;
        self.log(format!("truncate(path) {name} {size} -> {new}"));
        let p = cstr(&self.m.p(name));
        // SAFETY: a valid C string.
        if let Err(e) = rc(unsafe { libc::truncate(p.as_ptr(), new as libc::off_t) }) {
            self.fail(format!("truncate {name} to {new}: {e}"));
        }
        self.set_data(id, |d| d.resize(new as usize, 0));
        // No handle is open: the change is uploaded at once.
        self.check_store(id, "after truncate(2) of a closed file");
        self.check_stat_path(id, "after truncate(2)");
        true
    }

    fn op_fsync(&mut self) -> bool {
        if self.fds.is_empty() {
            return false;
        }
        let i = self.rng.random_range(0..self.fds.len());
        let OpenFd { fd, file, .. } = self.fds[i];
        let data_only = self.rng.random_ratio(1, 5);
        let call = if data_only { "fdatasync" } else { "fsync" };
        let name = self.shown(file);
        self.log(format!("{call} #{i} (fd {fd}, {name})"));
        // SAFETY: fd is open.
        let r = unsafe {
            if data_only {
                libc::fdatasync(fd)
            } else {
                libc::fsync(fd)
            }
        };
        if let Err(e) = rc(r) {
            self.fail(format!("{call} of {name}: {e}"));
        }
        self.check_store_of(file, &format!("after {call}"));
        self.check_file(file, None);
        true
    }

    /// A page-aligned range of file `id` to map: `(offset, length)`, length within the file.
    fn map_range(&mut self, size: u64) -> (u64, u64) {
        let off = self.rng.random_range(0..size) / self.page * self.page;
        let len = self.rng.random_range(1..=(size - off).min(MIB));
        (off, len)
    }

    fn op_mmap_read(&mut self) -> bool {
        let readable =
            self.fds_where(|d| d.access.readable() && !self.file(d.file).data.is_empty());
        let Some(i) = self.pick(&readable) else {
            return false;
        };
        let OpenFd { fd, file, .. } = self.fds[i];
        let size = self.file(file).data.len() as u64;
        let (off, len) = self.map_range(size);
        let name = self.shown(file);
        self.log(format!(
            "mmap(PROT_READ, MAP_SHARED) #{i} (fd {fd}, {name}) {len} at {off}"
        ));
        // A mapping past what the kernel thinks is the end would be a SIGBUS, not a report.
        self.check_fstat(i, "before mmap");
        // SAFETY: a fresh mapping of an open descriptor; the range lies inside the file.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len as usize,
                libc::PROT_READ,
                libc::MAP_SHARED,
                fd,
                off as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            let e = io::Error::last_os_error();
            self.fail(format!("mmap(PROT_READ) of {name}: {e}"));
        }
        // SAFETY: the mapping is `len` readable bytes until munmap below.
        let seen = unsafe { std::slice::from_raw_parts(p.cast::<u8>(), len as usize) }.to_vec();
        // SAFETY: the mapping made above.
        if let Err(e) = rc(unsafe { libc::munmap(p, len as usize) }) {
            self.fail(format!("munmap of {name}: {e}"));
        }
        let want = &self.file(file).data[off as usize..(off + len) as usize];
        if let Some(d) = diff(want, &seen, off) {
            self.fail(format!(
                "mmap read of {name} ({len} at {off}) differs from the shadow\n{d}"
            ));
        }
        self.check_file(file, None);
        true
    }

    /// Map `len` bytes at `off` of `fd` shared and writable, write `data` at `at` (relative
    /// to the file), `msync(MS_SYNC)` and unmap. `Err` names the call that failed.
    fn mmap_write_at(fd: i32, off: u64, len: u64, at: u64, data: &[u8]) -> Result<(), String> {
        // SAFETY: a fresh mapping of an open descriptor; the range lies inside the file.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd,
                off as libc::off_t,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(format!(
                "mmap(PROT_READ|PROT_WRITE, MAP_SHARED): {}",
                io::Error::last_os_error()
            ));
        }
        // SAFETY: `[at, at + data.len())` lies inside the mapped `[off, off + len)`.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                p.cast::<u8>().add((at - off) as usize),
                data.len(),
            )
        };
        // SAFETY: the mapping made above.
        let synced = rc(unsafe { libc::msync(p, len as usize, libc::MS_SYNC) });
        // SAFETY: the mapping made above.
        let unmapped = rc(unsafe { libc::munmap(p, len as usize) });
        synced.map_err(|e| format!("msync(MS_SYNC): {e}"))?;
        unmapped.map_err(|e| format!("munmap: {e}"))
    }

    fn op_mmap_write(&mut self) -> bool {
        let rw =
            self.fds_where(|d| d.access == Access::ReadWrite && !self.file(d.file).data.is_empty());
        let Some(i) = self.pick(&rw) else {
            return false;
        };
        if self.mmap_write.is_err() {
            *self.skipped.entry(Op::MmapWrite).or_default() += 1;
            return true;
        }
        let OpenFd { fd, file, .. } = self.fds[i];
        let size = self.file(file).data.len() as u64;
        let (off, len) = self.map_range(size);
        let at = off + self.rng.random_range(0..len);
        let n = self.rng.random_range(1..=(off + len - at).min(64 * KIB));
        let name = self.shown(file);
        self.log(format!(
            "mmap(PROT_WRITE, MAP_SHARED) #{i} (fd {fd}, {name}) {len} at {off}; write {n} at \
             {at}; msync(MS_SYNC)"
        ));
        self.check_fstat(i, "before mmap");
        let buf = pattern(self.op, at, n);
        if let Err(e) = Self::mmap_write_at(fd, off, len, at, &buf) {
            self.fail(format!("mmap write to {name}: {e}"));
        }
        self.bytes_written += n;
        self.set_data(file, |d| {
            d[at as usize..(at + n) as usize].copy_from_slice(&buf);
        });
        self.check_file(file, Some((at, n)));
        // msync(MS_SYNC) is an fsync of the range: the store has it.
        self.check_store_of(file, "after msync(MS_SYNC)");
        true
    }

    /// File `id` lost its name: gone, or an orphan while descriptors hold it.
    fn drop_name(&mut self, id: u64) {
        if self.open_count(id) == 0 {
            self.files.remove(&id);
        } else if let Some(f) = self.files.get_mut(&id) {
            f.orphan = true;
            self.orphans += 1;
        }
    }

    fn op_rename(&mut self) -> bool {
        let ids = self.live();
        let Some(src) = self.pick(&ids) else {
            return false;
        };
        // Onto a free name, or over another file (which, if open, lives on as an orphan).
        let mut targets: Vec<&'static str> = self.free_names();
        targets.extend(
            ids.iter()
                .filter(|&&id| id != src && (self.orphans_on || self.open_count(id) == 0))
                .map(|&id| self.file(id).name),
        );
        let Some(to) = self.pick(&targets) else {
            return false;
        };
        let from = self.file(src).name;
        let replaced = self.live_named(to);
        self.log(format!(
            "rename {from} -> {to} ({} handles open on {from}){}",
            self.open_count(src),
            match replaced {
                Some(r) => format!(
                    " replacing {to} ({} handles open on it)",
                    self.open_count(r)
                ),
                None => String::new(),
            }
        ));
        if let Err(e) = std::fs::rename(self.m.p(from), self.m.p(to)) {
            self.fail(format!("rename {from} -> {to}: {e}"));
        }
        if let Some(r) = replaced {
            self.drop_name(r);
        }
        if let Some(f) = self.files.get_mut(&src) {
            f.name = to;
        }
        self.check_gone(from, "after rename");
        self.check_stat_path(src, "after rename");
        // An open file is uploaded before it is copied: the new name holds all of it.
        self.check_store(src, "after rename (the new name)");
        self.check_store_absent(from, "after rename (the old name)");
        self.check_file(src, None);
        if let Some(r) = replaced {
            self.check_file(r, None);
        }
        true
    }

    fn op_unlink(&mut self) -> bool {
        let ids: Vec<u64> = self
            .live()
            .into_iter()
            .filter(|&id| self.orphans_on || self.open_count(id) == 0)
            .collect();
        let Some(id) = self.pick(&ids) else {
            return false;
        };
        let name = self.file(id).name;
        let open = self.open_count(id);
        self.log(format!("unlink {name} ({open} handles open on it)"));
        if let Err(e) = std::fs::remove_file(self.m.p(name)) {
            self.fail(format!("unlink {name}: {e}"));
        }
        self.drop_name(id);
        self.check_gone(name, "after unlink");
        self.check_store_absent(name, "after unlink");
        self.check_file(id, None);
        true
    }

    fn op_stat(&mut self) -> bool {
        let ids = self.live();
        let Some(id) = self.pick(&ids) else {
            return false;
        };
        let name = self.file(id).name;
        self.log(format!("stat {name}"));
        self.check_stat_path(id, "stat");
        true
    }

    /// Let the daemon's and the kernel's attribute, name and listing caches expire (all 1 s by
    /// default), so the next ops take the revalidation paths a fast run never reaches.
    fn op_pause(&mut self) -> bool {
        if !self.rng.random_ratio(1, 4) {
            return false;
        }
        self.log(format!("pause {} ms (caches expire)", PAUSE.as_millis()));
        std::thread::sleep(PAUSE);
        for id in self.files.keys().copied().collect::<Vec<_>>() {
            self.check_file(id, None);
        }
        true
    }

    fn step(&mut self) {
        let total: u32 = WEIGHTS.iter().map(|(_, w)| w).sum();
        let started = Instant::now();
        loop {
            let mut r = self.rng.random_range(0..total);
            let op = WEIGHTS
                .iter()
                .find(|(_, w)| {
                    if r < *w {
                        true
                    } else {
                        r -= w;
                        false
                    }
                })
                .map(|(op, _)| *op)
                .unwrap_or(Op::Open);
            let done = match op {
                Op::Write => self.op_write(false),
                Op::BigWrite => self.op_write(true),
                Op::Stream => self.op_stream(),
                Op::Read => self.op_read(),
                Op::Truncate => self.op_truncate(),
                Op::Fsync => self.op_fsync(),
                Op::Open => self.op_open(),
                Op::Close => self.op_close(),
                Op::Reopen => self.op_reopen(),
                Op::MmapRead => self.op_mmap_read(),
                Op::MmapWrite => self.op_mmap_write(),
                Op::Rename => self.op_rename(),
                Op::Unlink => self.op_unlink(),
                Op::TruncatePath => self.op_truncate_path(),
                Op::Stat => self.op_stat(),
                Op::Pause => self.op_pause(),
            };
            if done {
                *self.counts.entry(op).or_default() += 1;
                *self.time.entry(op).or_default() += started.elapsed();
                return;
            }
        }
    }

    /// Whether this mount takes shared writable mappings (the kernel's writeback of dirty
    /// pages through FUSE writes, then `msync` as an fsync). Asked once, on a file of its own;
    /// a mapping that works but loses data fails the test.
    fn probe_mmap_write(&mut self) {
        let name = "mmap-probe";
        let fd = self
            .open_path(name, libc::O_RDWR | libc::O_CREAT | libc::O_EXCL)
            .unwrap_or_else(|e| self.fail(format!("probe: create {name}: {e}")));
        let mut want = vec![b'a'; 3 * self.page as usize];
        if let Err(e) = write_all(fd, 0, &want, false) {
            self.fail(format!("probe: pwrite {name}: {e}"));
        }
        let at = self.page + 10;
        let data = vec![b'b'; 100];
        let r = Self::mmap_write_at(fd, 0, want.len() as u64, at, &data);
        want[at as usize..at as usize + data.len()].copy_from_slice(&data);
        let checked = match r {
            Err(reason) => Err(reason),
            Ok(()) => {
                let seen = pread_all(fd, 0, want.len() + 1)
                    .unwrap_or_else(|e| self.fail(format!("probe: pread {name}: {e}")));
                if let Some(d) = diff(&want, &seen, 0) {
                    self.fail(format!(
                        "probe: an mmap write to {name} is not read back\n{d}"
                    ));
                }
                let stored = self
                    .emu
                    .get_object_opt(self.bucket, name)
                    .unwrap_or_default();
                if let Some(d) = diff(&want, &stored, 0) {
                    self.fail(format!(
                        "probe: after msync(MS_SYNC) the store does not hold {name}'s mmap \
                         write\n{d}"
                    ));
                }
                Ok(())
            }
        };
        // SAFETY: our descriptor.
        if let Err(e) = rc(unsafe { libc::close(fd) }) {
            self.fail(format!("probe: close {name}: {e}"));
        }
        if let Err(e) = std::fs::remove_file(self.m.p(name)) {
            self.fail(format!("probe: unlink {name}: {e}"));
        }
        if let Err(reason) = checked {
            eprintln!(
                "fsx {:?}: FINDING: shared writable mmap is not supported on this mount \
                 ({reason}); mmap writes are skipped",
                self.kind
            );
            self.mmap_write = Err(reason);
        }
    }

    fn run(&mut self) {
        let start = Instant::now();
        eprintln!(
            "fsx {:?}: seed {} (BLOBMOUNT_FSX_SEED={}), {} ops, {MAX_FILES} files, up to \
             {MAX_FDS} descriptors, files up to {} MiB",
            self.kind,
            self.seed,
            self.seed,
            self.ops,
            MAX_SIZE / MIB
        );
        if let Err(e) = std::fs::create_dir(self.m.p("sub")) {
            self.fail(format!("mkdir sub: {e}"));
        }
        self.probe_mmap_write();
        while self.op < self.ops {
            self.step();
            self.op += 1;
            if self.op.is_multiple_of(1000) {
                eprintln!(
                    "fsx {:?}: {} ops in {:.1?}, {} MiB written, {} store checks, largest file \
                     {} KiB",
                    self.kind,
                    self.op,
                    start.elapsed(),
                    self.bytes_written / MIB,
                    self.store_checks,
                    self.largest / KIB
                );
            }
        }
        self.finish();
        let paths = self.check_metrics();
        let log = self.m.log_text();
        let level = |l: &str| -> Vec<&str> { log.lines().filter(|x| x.contains(l)).collect() };
        let (warns, errors) = (level(" WARN "), level(" ERROR "));
        if !errors.is_empty() {
            self.fail(format!("the daemon logged errors:\n{}", errors.join("\n")));
        }
        for w in warns.iter().take(5) {
            eprintln!("fsx {:?}: daemon warning: {w}", self.kind);
        }
        let (warns, errors) = (warns.len(), errors.len());
        eprintln!(
            "fsx {:?}: PASS seed {}: {} ops in {:.1?}; {} MiB written; {} store checks; {} \
             orphans; largest file {} KiB; ops: {}; skipped {:?}; daemon: {paths}, log: \
             {warns} WARN {errors} ERROR lines{}",
            self.kind,
            self.seed,
            self.ops,
            start.elapsed(),
            self.bytes_written / MIB,
            self.store_checks,
            self.orphans,
            self.largest / KIB,
            self.counts
                .iter()
                .map(|(op, n)| format!(
                    "{op:?} {n} in {:.1}s",
                    self.time.get(op).copied().unwrap_or_default().as_secs_f64()
                ))
                .collect::<Vec<_>>()
                .join(", "),
            self.skipped,
            match &self.mmap_write {
                Ok(()) => String::new(),
                Err(r) => format!(" (mmap writes unsupported: {r})"),
            }
        );
    }

    /// The daemon counted no upload conflict and no failed upload; returns the counters that
    /// show which upload paths the run took (appends, streamed uploads, parts).
    fn check_metrics(&self) -> String {
        let page = http_get(self.health_port, "/metrics").1;
        // The sum over a metric's labels (`name{...} v` lines), if it is there.
        let value = |name: &str| {
            let vals: Vec<f64> = page
                .lines()
                .filter(|l| !l.starts_with('#'))
                .filter(|l| l.split(['{', ' ']).next() == Some(name))
                .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
                .collect();
            (!vals.is_empty()).then(|| vals.iter().sum::<f64>())
        };
        for bad in [
            "blobmount_upload_conflicts_total",
            "blobmount_upload_errors_total",
        ] {
            if let Some(n) = value(bad).filter(|&n| n != 0.0) {
                self.fail(format!("at the end: the daemon counted {bad} = {n}"));
            }
        }
        [
            ("appends", "blobmount_append_uploads_total"),
            ("streamed", "blobmount_streamed_uploads_total"),
            ("parts", "blobmount_upload_parts_total"),
            ("backend requests", "blobmount_backend_requests_total"),
            ("backend retries", "blobmount_backend_retries_total"),
            ("backend errors", "blobmount_backend_errors_total"),
        ]
        .iter()
        .map(|(what, name)| format!("{what} {}", value(name).unwrap_or(0.0)))
        .collect::<Vec<_>>()
        .join(", ")
    }

    /// Close everything, then check every file by path and in the store, the listing, and
    /// that nothing was kept in `conflicts/`.
    fn finish(&mut self) {
        self.log("finish: close every descriptor".into());
        while !self.fds.is_empty() {
            self.close_fd(self.fds.len() - 1, "final close");
        }
        self.log("finish: check every file by path, in the store and in listings".into());
        let ids: Vec<u64> = self.files.keys().copied().collect();
        for &id in &ids {
            self.check_stat_path(id, "at the end");
            let name = self.file(id).name;
            match std::fs::read(self.m.p(name)) {
                Err(e) => self.fail(format!("at the end: read {name}: {e}")),
                Ok(got) => {
                    if let Some(d) = diff(&self.file(id).data, &got, 0) {
                        self.fail(format!("at the end: {name} read by path differs\n{d}"));
                    }
                }
            }
            self.check_store(id, "at the end");
        }
        for dir in ["", "sub"] {
            let mut want: Vec<String> = self
                .files
                .values()
                .filter_map(|f| match f.name.rsplit_once('/') {
                    Some((d, n)) if d == dir => Some(n.to_string()),
                    None if dir.is_empty() => Some(f.name.to_string()),
                    _ => None,
                })
                .collect();
            if dir.is_empty() {
                want.push("sub".into());
            }
            want.sort();
            let mut seen: Vec<String> = match std::fs::read_dir(self.m.p(dir)) {
                Err(e) => self.fail(format!("at the end: readdir {dir:?}: {e}")),
                Ok(rd) => rd
                    .map(|e| {
                        e.map(|e| e.file_name().to_string_lossy().into_owned())
                            .unwrap_or_else(|e| self.fail(format!("readdir {dir:?}: {e}")))
                    })
                    .collect(),
            };
            seen.sort();
            if seen != want {
                self.fail(format!(
                    "at the end: directory {dir:?} lists {seen:?}, want {want:?}"
                ));
            }
        }
        let kept: Vec<String> = std::fs::read_dir(self.m.cache.join("conflicts"))
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        if !kept.is_empty() {
            self.fail(format!(
                "at the end: data was kept aside in {}: {kept:?}",
                self.m.cache.join("conflicts").display()
            ));
        }
    }
}

fn exercise(kind: Kind) {
    let emu = Emulator::start(kind);
    let bucket = emu.create_bucket();
    let mut spec = MountSpec::for_emulator(&emu, &bucket);
    let health_port = free_port();
    spec.args = vec!["--health-listen".into(), format!("127.0.0.1:{health_port}")];
    let m = Mount::start(&spec);
    let mut fsx = Fsx::new(kind, &emu, &bucket, &m, health_port);
    fsx.run();
    let (seed, files): (u64, Vec<(&str, Vec<u8>)>) = (
        fsx.seed,
        std::mem::take(&mut fsx.files)
            .into_values()
            .map(|f| (f.name, f.data))
            .collect(),
    );
    drop(fsx);
    drop(m);
    // A fresh daemon sees exactly what the run left, from the store alone.
    let m = Mount::start(&MountSpec::for_emulator(&emu, &bucket));
    for (name, want) in &files {
        let got = std::fs::read(m.p(name)).unwrap_or_else(|e| {
            panic!("fsx {kind:?} seed {seed}: after remount, read {name}: {e}")
        });
        if let Some(d) = diff(want, &got, 0) {
            panic!("fsx {kind:?} seed {seed}: after remount, {name} differs\n{d}");
        }
    }
}

#[test]
fn exerciser_azure() {
    exercise(Kind::Azure);
}

#[test]
fn exerciser_s3() {
    exercise(Kind::S3);
}

#[test]
fn exerciser_gcs() {
    exercise(Kind::Gcs);
}

/// The same random operations on ADLS Gen2 (Azurite behind the DFS test endpoint, mounted
/// with a hierarchical namespace: native renames, real directories, POSIX access).
#[test]
fn exerciser_adls() {
    blobmount_tests::as_adls(|| exercise(Kind::Azure));
}
