//! Preload from the daemon (`--preload`, `read.preload`) and from the `blobmount preload`
//! command, with one progress display: a redrawn line on a terminal, log lines otherwise.
//!
//! Why two entry points: at mount time the daemon walks the store itself (it knows sizes
//! and ETags and fills the file cache without the kernel in between); `blobmount preload
//! DIR` works on a mount that is already running, from any shell, by reading the files
//! through the mount, which fills whatever cache the mount uses.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use blobmount_core::{Fs, PreloadProgress};
use tracing::{info, warn};

const LOG_EVERY: Duration = Duration::from_secs(5);

fn human(b: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

/// One line describing the progress.
pub fn progress_line(p: &PreloadProgress, elapsed: Duration) -> String {
    let (fd, ff, bd, bf) = p.snapshot();
    let pct = (bd * 100).checked_div(bf).unwrap_or(100);
    let rate = bd as f64 / elapsed.as_secs_f64().max(0.001);
    let listing = if p.listed.load(Ordering::Acquire) {
        ""
    } else {
        " (still listing)"
    };
    format!(
        "preload: {fd}/{ff} files, {}/{} ({pct}%), {}/s, {} skipped, {} failed{listing}",
        human(bd),
        human(bf),
        human(rate as u64),
        p.skipped.load(Ordering::Relaxed),
        p.failed.load(Ordering::Relaxed),
    )
}

/// Show progress until `p.finished`: redraw one line on a terminal, log every few seconds
/// otherwise. Ends with a summary line either way.
pub fn report(p: &PreloadProgress, tty: bool) {
    let start = Instant::now();
    let mut last_log = start;
    loop {
        let done = p.finished.load(Ordering::Acquire);
        let line = progress_line(p, start.elapsed());
        if tty {
            eprint!("\r\x1b[2K{line}");
            let _ = std::io::stderr().flush();
        } else if !done && last_log.elapsed() >= LOG_EVERY {
            info!("{line}");
            last_log = Instant::now();
        }
        if done {
            if tty {
                eprintln!();
            } else {
                info!(secs = start.elapsed().as_secs_f64(), "{line} (done)");
            }
            return;
        }
        std::thread::sleep(if tty {
            Duration::from_millis(200)
        } else {
            Duration::from_millis(250)
        });
    }
}

/// Start the configured preloads of a mount in the background.
pub fn spawn_for_mount(
    rt: &tokio::runtime::Handle,
    fs: Arc<Fs>,
    dirs: Vec<String>,
    jobs: usize,
    p: Arc<PreloadProgress>,
) {
    if dirs.is_empty() {
        return;
    }
    let tty = std::io::stderr().is_terminal();
    let shown = p.clone();
    let reporter = std::thread::spawn(move || report(&shown, tty));
    rt.spawn(async move {
        for d in &dirs {
            let dir = if d == "all" { "" } else { d.as_str() };
            if let Err(e) = fs.preload(dir, jobs, &p).await {
                warn!(dir = d, error = %e, "preload: cannot walk this directory");
                p.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
        p.listed.store(true, Ordering::Release);
        p.finished.store(true, Ordering::Release);
        let _ = tokio::task::spawn_blocking(move || reporter.join()).await;
    });
}

/// `blobmount preload DIR`: read every file under `dir` through the mount with `jobs`
/// threads, showing progress. Returns the number of files that could not be read.
pub fn through_mount(dir: &Path, jobs: usize) -> std::io::Result<u64> {
    let meta = std::fs::metadata(dir)?;
    if !meta.is_dir() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::NotADirectory,
            format!("{} is not a directory", dir.display()),
        ));
    }
    let p = Arc::new(PreloadProgress::default());
    let tty = std::io::stderr().is_terminal();
    let shown = p.clone();
    let reporter = std::thread::spawn(move || report(&shown, tty));
    let mut files: Vec<PathBuf> = Vec::new();
    let mut dirs = vec![dir.to_path_buf()];
    while let Some(d) = dirs.pop() {
        p.dirs.fetch_add(1, Ordering::Relaxed);
        let rd = match std::fs::read_dir(&d) {
            Ok(r) => r,
            Err(e) => {
                warn!(dir = %d.display(), error = %e, "preload: cannot list");
                p.failed.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        for e in rd.flatten() {
            match e.file_type() {
                Ok(t) if t.is_dir() => dirs.push(e.path()),
                Ok(t) if t.is_file() => {
                    let size = e.metadata().map(|m| m.len()).unwrap_or(0);
                    p.files_found.fetch_add(1, Ordering::Relaxed);
                    p.bytes_found.fetch_add(size, Ordering::Relaxed);
                    files.push(e.path());
                }
                _ => {}
            }
        }
    }
    p.listed.store(true, Ordering::Release);
    let queue = Mutex::new(files);
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| {
                let mut buf = vec![0u8; 1 << 20];
                loop {
                    let next = queue.lock().unwrap_or_else(|e| e.into_inner()).pop();
                    let Some(path) = next else { return };
                    match read_all(&path, &mut buf, &p) {
                        Ok(()) => {
                            p.files_done.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(e) => {
                            warn!(file = %path.display(), error = %e, "preload: read failed");
                            p.failed.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
    });
    p.finished.store(true, Ordering::Release);
    let _ = reporter.join();
    Ok(p.failed.load(Ordering::Relaxed))
}

fn read_all(path: &Path, buf: &mut [u8], p: &PreloadProgress) -> std::io::Result<()> {
    let mut f = std::fs::File::open(path)?;
    loop {
        let n = f.read(buf)?;
        if n == 0 {
            return Ok(());
        }
        p.bytes_done.fetch_add(n as u64, Ordering::Relaxed);
    }
}
