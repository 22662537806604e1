//! The log file (`logging.file`): appended to, rotated by size (`logging.max-size-mib`,
//! keeping `logging.max-files` older files as `FILE.1` … `FILE.N`), and reopened at the
//! configured path on request (SIGHUP, see `shutdown`).
//!
//! Why our own and not a crate: the rotating appenders at hand rotate by time, not size,
//! and none reopens on demand, which logrotate's `create` mode (move the file away, then
//! signal) needs. Rotation is a rename per kept file, under the same lock as the writes,
//! so a line is never split between two files. The file is created mode 0600: log lines
//! carry object names and paths.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

/// An open log file with its rotation limits.
#[derive(Debug)]
pub struct LogFile {
    path: PathBuf,
    /// Rotate before a line would take the file past this many bytes; 0: never.
    max_bytes: u64,
    /// Rotated files kept (`FILE.1` is the newest).
    keep: usize,
    state: Mutex<State>,
}

#[derive(Debug)]
struct State {
    file: File,
    /// Bytes in the file (its length when opened, plus what we wrote).
    size: u64,
}

fn open_append(path: &Path) -> io::Result<(File, u64)> {
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    let size = file.metadata()?.len();
    Ok((file, size))
}

impl LogFile {
    /// Open (or create) `path` for appending.
    pub fn open(path: &Path, max_bytes: u64, keep: usize) -> io::Result<LogFile> {
        let (file, size) = open_append(path)?;
        Ok(LogFile {
            path: path.to_path_buf(),
            max_bytes,
            keep,
            state: Mutex::new(State { file, size }),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A poisoned lock only means a writer panicked mid-line; the file is still usable.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Append one whole line, rotating first if it would not fit.
    pub fn write_line(&self, line: &[u8]) -> io::Result<()> {
        let mut st = self.lock();
        if self.max_bytes > 0 && st.size > 0 && st.size + line.len() as u64 > self.max_bytes {
            // A failed rotation must not lose the line: keep writing to the current file.
            if let Err(e) = self.rotate(&mut st) {
                let note = format!(
                    "blobmount: log rotation of {} failed: {e}\n",
                    self.path.display()
                );
                let _ = st.file.write_all(note.as_bytes());
            }
        }
        st.file.write_all(line)?;
        st.size += line.len() as u64;
        Ok(())
    }

    /// `FILE.{keep-1}` -> `FILE.{keep}`, …, `FILE` -> `FILE.1`, then a new `FILE`.
    fn rotate(&self, st: &mut State) -> io::Result<()> {
        let numbered = |n: usize| {
            let mut p = self.path.clone().into_os_string();
            p.push(format!(".{n}"));
            PathBuf::from(p)
        };
        for n in (1..self.keep).rev() {
            match std::fs::rename(numbered(n), numbered(n + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        std::fs::rename(&self.path, numbered(1))?;
        let (file, size) = open_append(&self.path)?;
        *st = State { file, size };
        Ok(())
    }

    /// Open the configured path again (after logrotate moved the file away): later lines
    /// go to the file now at that path, created if missing.
    pub fn reopen(&self) -> io::Result<()> {
        let (file, size) = open_append(&self.path)?;
        *self.lock() = State { file, size };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_by_size_and_keeps_max_files() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.log");
        let f = LogFile::open(&p, 100, 2).unwrap();
        let line = [b'x'; 39];
        for i in 0..10u8 {
            let mut l = line.to_vec();
            l[0] = b'0' + i;
            l.push(b'\n');
            f.write_line(&l).unwrap();
        }
        // 40-byte lines, two per file: lines 8, 9 in b.log, 6, 7 in .1, 4, 5 in .2.
        let read = |n: &str| std::fs::read_to_string(dir.path().join(n)).unwrap();
        assert_eq!(read("b.log").lines().count(), 2);
        assert!(read("b.log").starts_with('8'));
        assert!(read("b.log.1").starts_with('6'));
        assert!(read("b.log.2").starts_with('4'));
        assert!(!dir.path().join("b.log.3").exists());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&p).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }

    #[test]
    fn no_rotation_with_max_zero_and_reopen_follows_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("b.log");
        let f = LogFile::open(&p, 0, 3).unwrap();
        for _ in 0..100 {
            f.write_line(b"0123456789\n").unwrap();
        }
        assert!(!dir.path().join("b.log.1").exists());
        std::fs::rename(&p, dir.path().join("moved.log")).unwrap();
        f.write_line(b"old\n").unwrap();
        f.reopen().unwrap();
        f.write_line(b"new\n").unwrap();
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "new\n");
        let moved = std::fs::read_to_string(dir.path().join("moved.log")).unwrap();
        assert!(moved.ends_with("old\n"));
    }
}
