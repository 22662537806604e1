//! Concurrency on one file under a deterministic, seeded scheduler: writers on several
//! handles of one inode (with `fsync`s and a close in the middle), `chmod`s, `stat`s, reads,
//! and renames of the file and of its directory, interleaved on a current-thread runtime in
//! an order decided by the seed (see `common/sched.rs`). Checked for every seed: no operation
//! fails, reads see only whole writes, and after the last close the store holds exactly the
//! written bytes and the last mode, at the file's final name and nowhere else. Each seed runs
//! twice and must make the same requests in the same order, so a failure replays exactly:
//! `BLOBMOUNT_SCHED_SEED=<seed> cargo test -p blobmount-core --test interleave`.
//!
//! Why beside the model test (`model.rs`): the model runs one operation at a time; the
//! losses that come from two tasks meeting inside an operation (a rename between an
//! upload's flush and its commit, a chmod racing a streamed upload) need interleavings, and a
//! deterministic scheduler makes them reproducible instead of lucky.
//!
//! A second scenario does the same for a directory: files created in it, one renamed over
//! another that is open, one unlinked while open, while the directory itself is renamed.
//!
//! Seeds: `PROPTEST_CASES` (default 64 per scenario; each seed runs twice).

mod common;

use std::path::Path;
use std::sync::Arc;

use blobmount_backend::Backend;
use blobmount_backend::memory::MemoryBackend;
use blobmount_core::{Caller, Fs, FsConfig, ROOT_INO, SetAttr};
use common::sched::Sched;

const ME: Caller = Caller { uid: 0, gid: 0 };
const STRIPE: usize = 4 * 1024;
const STRIPES: usize = 18;
/// Handles that write (the last one is opened late and closed early).
const WRITERS: usize = 3;
/// Small parts, so that the file streams in several parts while it is written.
const PART: usize = 16 * 1024;

fn stripe(s: usize) -> Vec<u8> {
    (0..STRIPE)
        .map(|i| (i as u8).wrapping_mul(13).wrapping_add(s as u8 * 7 + 1))
        .collect()
}

fn config(dir: &Path) -> FsConfig {
    let mut cfg = FsConfig::for_tests(dir.to_path_buf());
    cfg.write_part_size = PART;
    // No time-based caching: what the core asks the store must not depend on the clock.
    cfg.attr_ttl = std::time::Duration::ZERO;
    cfg.list_ttl = std::time::Duration::ZERO;
    cfg.negative_ttl = std::time::Duration::ZERO;
    cfg
}

fn seeds() -> Vec<u64> {
    if let Some(s) = std::env::var("BLOBMOUNT_SCHED_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return vec![s];
    }
    let n = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(64);
    (0..n).collect()
}

#[test]
fn interleaved_writers_chmods_and_renames_lose_nothing_and_replay() {
    for seed in seeds() {
        replayed(seed, one_file);
    }
}

#[test]
fn interleaved_creates_replacing_renames_and_unlinks_in_a_moving_directory() {
    for seed in seeds() {
        replayed(seed, moving_directory);
    }
}

/// Run `round` twice with `seed`; both runs must pass and make the same requests.
fn replayed<F, Fut>(seed: u64, round: F)
where
    F: Fn(Arc<MemoryBackend>, Arc<Sched>) -> Fut,
    Fut: std::future::Future<Output = Res<()>>,
{
    let first = run(seed, &round);
    let again = run(seed, &round);
    if first != again {
        let at = first
            .iter()
            .zip(&again)
            .position(|(a, b)| a != b)
            .unwrap_or(first.len().min(again.len()));
        panic!(
            "seed {seed}: the same seed made a different schedule at request {at}: {:?} then {:?}",
            first.get(at),
            again.get(at)
        );
    }
}

fn run<F, Fut>(seed: u64, round: &F) -> Vec<String>
where
    F: Fn(Arc<MemoryBackend>, Arc<Sched>) -> Fut,
    Fut: std::future::Future<Output = Res<()>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mem = common::new_store();
    let sched = Sched::new(mem.clone(), seed, 3);
    if let Err(e) = rt.block_on(round(mem, sched.clone())) {
        if std::env::var_os("BLOBMOUNT_SCHED_TRACE").is_some() {
            for line in sched.trace() {
                eprintln!("  {line}");
            }
        }
        panic!(
            "seed {seed} (BLOBMOUNT_SCHED_SEED={seed}; BLOBMOUNT_SCHED_TRACE=1 prints the requests): {e}"
        );
    }
    sched.trace()
}

type Res<T> = Result<T, String>;

/// Writers on three handles of one file, chmods, a reader, and renames of the file and of
/// its directory.
async fn one_file(mem: Arc<MemoryBackend>, sched: Arc<Sched>) -> Res<()> {
    let cache = tempfile::tempdir().unwrap();
    let fs = Arc::new(Fs::new(sched.clone(), config(cache.path())).unwrap());
    let d = fs
        .mkdir(ROOT_INO, "d0", 0o755, ME)
        .await
        .map_err(|e| e.to_string())?;
    let (a, h0) = fs
        .create(d.ino, "f0", 0o644, libc::O_RDWR, ME)
        .await
        .map_err(|e| format!("create: {e}"))?;
    let ino = a.ino;
    let h1 = fs
        .open(ino, libc::O_RDWR)
        .await
        .map_err(|e| e.to_string())?
        .fh;
    sched.note("setup done");

    let mut tasks = Vec::new();
    // Writer w owns stripes w, w + WRITERS, ... and writes them in a seeded order; the
    // last writer opens its own handle after a while and closes it when done.
    for w in 0..WRITERS {
        let mut mine: Vec<usize> = (w..STRIPES).step_by(WRITERS).collect();
        for i in (1..mine.len()).rev() {
            let j = sched.draw(i as u64 + 1) as usize;
            mine.swap(i, j);
        }
        let fh = [Some(h0.fh), Some(h1), None][w];
        let (fs, sched) = (fs.clone(), sched.clone());
        tasks.push(tokio::spawn(async move {
            sched.jitter().await;
            let fh = match fh {
                Some(fh) => fh,
                None => {
                    fs.open(ino, libc::O_RDWR)
                        .await
                        .map_err(|e| format!("writer {w} open: {e}"))?
                        .fh
                }
            };
            for s in mine {
                fs.write(fh, (s * STRIPE) as u64, &stripe(s))
                    .await
                    .map_err(|e| format!("writer {w} stripe {s}: {e}"))?;
                sched.jitter().await;
                if sched.draw(3) == 0 {
                    fs.fsync(fh)
                        .await
                        .map_err(|e| format!("writer {w} fsync: {e}"))?;
                    sched.note(format!("> writer {w} fsync done"));
                }
            }
            if w == WRITERS - 1 {
                fs.flush(fh)
                    .await
                    .map_err(|e| format!("writer {w} flush: {e}"))?;
                fs.release(fh)
                    .await
                    .map_err(|e| format!("writer {w} close: {e}"))?;
                sched.note(format!("> writer {w} closed"));
            }
            Ok::<(), String>(())
        }));
    }
    // chmod through the path (no handle), as `chmod` after `open` does.
    let last_mode = 0o600 + sched.draw(0o100) as u16;
    let chmods = {
        let (fs, sched) = (fs.clone(), sched.clone());
        tokio::spawn(async move {
            for k in 0..3u16 {
                sched.jitter().await;
                let perm = if k == 2 { last_mode } else { 0o640 + k };
                let req = SetAttr {
                    perm: Some(perm),
                    ..Default::default()
                };
                fs.setattr(ino, req)
                    .await
                    .map_err(|e| format!("chmod {perm:o}: {e}"))?;
                sched.note(format!("> chmod {perm:o} done"));
            }
            Ok::<(), String>(())
        })
    };
    // A reader on its own handle: every stripe it sees is all zeros or all written.
    let reader = {
        let (fs, sched) = (fs.clone(), sched.clone());
        tokio::spawn(async move {
            let fh = fs
                .open(ino, libc::O_RDONLY)
                .await
                .map_err(|e| format!("reader open: {e}"))?
                .fh;
            for _ in 0..6 {
                sched.jitter().await;
                let s = sched.draw(STRIPES as u64) as usize;
                let got = fs
                    .read(fh, (s * STRIPE) as u64, STRIPE as u32)
                    .await
                    .map_err(|e| format!("read stripe {s}: {e}"))?;
                let whole = got.is_empty()
                    || got[..] == stripe(s)[..]
                    || got.iter().all(|&b| b == 0) && got.len() == STRIPE;
                if !whole {
                    return Err(format!("read stripe {s}: a torn or wrong stripe"));
                }
                let _ = fs.getattr(ino).await;
            }
            fs.release(fh)
                .await
                .map_err(|e| format!("reader close: {e}"))
        })
    };
    // Renames: the file inside its directory, and the directory at the root.
    let mover = {
        let (fs, sched) = (fs.clone(), sched.clone());
        tokio::spawn(async move {
            let mut names = ("d0", "f0");
            for _ in 0..4 {
                sched.jitter().await;
                let d = fs
                    .lookup(ROOT_INO, names.0)
                    .await
                    .map_err(|e| format!("lookup {}: {e}", names.0))?;
                if sched.draw(2) == 0 {
                    let to = if names.1 == "f0" { "f1" } else { "f0" };
                    fs.rename(d.ino, names.1, d.ino, to, false)
                        .await
                        .map_err(|e| format!("rename {} -> {to}: {e}", names.1))?;
                    names.1 = to;
                    sched.note(format!("> rename file to {to} done"));
                } else {
                    let to = if names.0 == "d0" { "d1" } else { "d0" };
                    fs.rename(ROOT_INO, names.0, ROOT_INO, to, false)
                        .await
                        .map_err(|e| format!("rename {} -> {to}: {e}", names.0))?;
                    names.0 = to;
                    sched.note(format!("> rename dir to {to} done"));
                }
            }
            Ok::<(&str, &str), String>(names)
        })
    };
    for t in tasks {
        t.await.map_err(|e| e.to_string())??;
    }
    chmods.await.map_err(|e| e.to_string())??;
    reader.await.map_err(|e| e.to_string())??;
    let (dir, file) = mover.await.map_err(|e| e.to_string())??;
    fs.release(h0.fh)
        .await
        .map_err(|e| format!("close h0: {e}"))?;
    fs.release(h1).await.map_err(|e| format!("close h1: {e}"))?;
    sched.note("all closed");

    // The store alone: the bytes at the final name, nothing else.
    let key = format!("{dir}/{file}");
    let want: Vec<u8> = (0..STRIPES).flat_map(stripe).collect();
    let got = mem.get_range(&key, 0..u64::MAX, None).await;
    match got {
        Ok(b) if b[..] == want[..] => {}
        Ok(b) => {
            return Err(format!(
                "{key} holds {} bytes, not the written {}",
                b.len(),
                want.len()
            ));
        }
        Err(e) => return Err(format!("{key}: {e}")),
    }
    let files: Vec<String> = common::file_keys(mem.keys());
    if files != [key.clone()] {
        return Err(format!("the store holds {files:?}, expected only {key}"));
    }
    // A fresh mount reads the last mode from the store.
    let cache2 = tempfile::tempdir().unwrap();
    let fresh = Fs::new(mem.clone(), config(cache2.path())).unwrap();
    let d = fresh
        .lookup(ROOT_INO, dir)
        .await
        .map_err(|e| e.to_string())?;
    let f = fresh.lookup(d.ino, file).await.map_err(|e| e.to_string())?;
    if f.perm != last_mode || f.size != want.len() as u64 {
        return Err(format!(
            "{key}: mode {:o} size {} after a remount, expected mode {last_mode:o} size {}",
            f.perm,
            f.size,
            want.len()
        ));
    }
    Ok(())
}

fn content(name: &str) -> Vec<u8> {
    let seed = name
        .bytes()
        .fold(7u8, |a, b| a.wrapping_mul(31).wrapping_add(b));
    (0..STRIPE * 3 + 5)
        .map(|i| (i as u8).wrapping_mul(29) ^ seed)
        .collect()
}

/// The name the directory has now (the mover flips it between `d0` and `d1`).
async fn dir_ino(fs: &Fs) -> Res<u64> {
    // A rename in one request (HNS) can flip the name between the two lookups: try again.
    for _ in 0..10 {
        for name in ["d0", "d1"] {
            match fs.lookup(ROOT_INO, name).await {
                Ok(a) => return Ok(a.ino),
                Err(blobmount_core::FsError::NotFound) => {}
                Err(e) => return Err(format!("lookup {name}: {e}")),
            }
        }
    }
    Err("the directory is gone".into())
}

/// In a directory renamed back and forth at the root: new files created, written and
/// closed; `src` written and renamed over `dst` while `dst` is open and written (its
/// writes must go nowhere); `gone` unlinked while open and written. At the end the store
/// holds exactly the new files, `dst` with `src`'s bytes, under the directory's final name.
async fn moving_directory(mem: Arc<MemoryBackend>, sched: Arc<Sched>) -> Res<()> {
    let cache = tempfile::tempdir().unwrap();
    let fs = Arc::new(Fs::new(sched.clone(), config(cache.path())).unwrap());
    let d = fs
        .mkdir(ROOT_INO, "d0", 0o755, ME)
        .await
        .map_err(|e| e.to_string())?;
    let mut open = Vec::new();
    for name in ["src", "dst", "gone"] {
        let (a, h) = fs
            .create(d.ino, name, 0o644, libc::O_RDWR, ME)
            .await
            .map_err(|e| format!("create {name}: {e}"))?;
        fs.write(h.fh, 0, b"before")
            .await
            .map_err(|e| e.to_string())?;
        fs.fsync(h.fh).await.map_err(|e| e.to_string())?;
        open.push((a.ino, h.fh));
    }
    let [(_, src), (_, dst), (_, gone)] = open[..] else {
        unreachable!()
    };
    sched.note("setup done");
    let creator = {
        let (fs, sched) = (fs.clone(), sched.clone());
        tokio::spawn(async move {
            for i in 0..3 {
                sched.jitter().await;
                let name = format!("new{i}");
                let dino = dir_ino(&fs).await?;
                let (_, h) = fs
                    .create(dino, &name, 0o644, libc::O_RDWR, ME)
                    .await
                    .map_err(|e| format!("create {name}: {e}"))?;
                let data = content(&name);
                for (k, chunk) in data.chunks(STRIPE).enumerate() {
                    fs.write(h.fh, (k * STRIPE) as u64, chunk)
                        .await
                        .map_err(|e| format!("write {name}: {e}"))?;
                    sched.jitter().await;
                }
                fs.flush(h.fh)
                    .await
                    .map_err(|e| format!("flush {name}: {e}"))?;
                fs.release(h.fh)
                    .await
                    .map_err(|e| format!("close {name}: {e}"))?;
                sched.note(format!("> {name} closed"));
            }
            Ok::<(), String>(())
        })
    };
    let replacer = {
        let (fs, sched) = (fs.clone(), sched.clone());
        tokio::spawn(async move {
            let data = content("src");
            sched.jitter().await;
            fs.write(src, 0, &data)
                .await
                .map_err(|e| format!("write src: {e}"))?;
            sched.jitter().await;
            let dino = dir_ino(&fs).await?;
            fs.rename(dino, "src", dino, "dst", false)
                .await
                .map_err(|e| format!("rename src over dst: {e}"))?;
            sched.note("> src renamed over dst");
            sched.jitter().await;
            fs.release(src).await.map_err(|e| format!("close src: {e}"))
        })
    };
    let doomed = {
        let (fs, sched) = (fs.clone(), sched.clone());
        tokio::spawn(async move {
            for k in 0..3u64 {
                sched.jitter().await;
                // Before or after the replacing rename: never seen in the store either way.
                fs.write(dst, 6 + k * 100, b"old dst")
                    .await
                    .map_err(|e| format!("write old dst: {e}"))?;
                if k == 1 {
                    let dino = dir_ino(&fs).await?;
                    fs.unlink(dino, "gone")
                        .await
                        .map_err(|e| format!("unlink gone: {e}"))?;
                    sched.note("> gone unlinked");
                }
                fs.write(gone, k * 10, b"gone")
                    .await
                    .map_err(|e| format!("write gone: {e}"))?;
            }
            sched.jitter().await;
            // The replaced file's close may report it was replaced; it must not upload.
            let _ = fs.release(dst).await;
            fs.release(gone)
                .await
                .map_err(|e| format!("close gone: {e}"))
        })
    };
    let mover = {
        let (fs, sched) = (fs.clone(), sched.clone());
        tokio::spawn(async move {
            let mut name = "d0";
            for _ in 0..3 {
                sched.jitter().await;
                let to = if name == "d0" { "d1" } else { "d0" };
                fs.rename(ROOT_INO, name, ROOT_INO, to, false)
                    .await
                    .map_err(|e| format!("rename {name} -> {to}: {e}"))?;
                name = to;
                sched.note(format!("> rename dir to {to} done"));
            }
            Ok::<&str, String>(name)
        })
    };
    creator.await.map_err(|e| e.to_string())??;
    replacer.await.map_err(|e| e.to_string())??;
    doomed.await.map_err(|e| e.to_string())??;
    let dir = mover.await.map_err(|e| e.to_string())??;
    sched.note("all closed");

    let mut want: Vec<(String, Vec<u8>)> = (0..3)
        .map(|i| format!("new{i}"))
        .map(|n| (format!("{dir}/{n}"), content(&n)))
        .collect();
    want.push((format!("{dir}/dst"), content("src")));
    want.sort();
    let files: Vec<String> = common::file_keys(mem.keys());
    let names: Vec<&String> = want.iter().map(|(k, _)| k).collect();
    if files.iter().collect::<Vec<_>>() != names {
        return Err(format!("the store holds {files:?}, expected {names:?}"));
    }
    for (key, data) in &want {
        let got = mem
            .get_range(key, 0..u64::MAX, None)
            .await
            .map_err(|e| format!("{key}: {e}"))?;
        if got[..] != data[..] {
            return Err(format!(
                "{key} holds {} bytes that differ from the {} written",
                got.len(),
                data.len()
            ));
        }
    }
    Ok(())
}
