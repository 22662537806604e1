//! `blobmount refresh PATH...`: make a mount see at once what another client changed, and
//! the endpoint behind it (`POST /refresh` on the health server).
//!
//! Why through the daemon and not through the mount: the kernel's entry, attribute and page
//! caches can only be dropped by the FUSE server (notifications on its `/dev/fuse`
//! channel), and the core's caches live in the daemon. The command finds the daemon through
//! the registry like `blobmount status`, sends the mount-relative paths, and the daemon
//! drops its own state first (`Fs::refresh`) and then tells the kernel ([`Kernel`]), so a
//! kernel that asks again meanwhile gets the store's answer.
//!
//! The core stays free of FUSE types: it returns [`Invalidation`]s and this module turns them
//! into `fuser::Notifier` calls. The notifier exists only once the session is created, after
//! the health endpoint is bound; until then (and in tests without a kernel) only the core's
//! caches are dropped.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use blobmount_core::{Fs, Invalidation};
use fuser::{INodeNo, Notifier};
use serde::{Deserialize, Serialize};
use tracing::{debug, info, info_span, warn};

use crate::exit::{EXIT_CONFIG, EXIT_RUNTIME, fail};
use crate::health::{self, Registration};

/// Largest `POST /refresh` body accepted.
pub const MAX_BODY: usize = 1 << 20;

/// The way to the kernel's caches of this mount: the session's notifier, once there is one.
#[derive(Default)]
pub struct Kernel {
    notifier: OnceLock<Notifier>,
}

impl Kernel {
    pub fn new() -> Arc<Kernel> {
        Arc::new(Kernel::default())
    }

    /// Called once the FUSE session exists (`session::start`).
    pub fn attach(&self, n: Notifier) {
        if self.notifier.set(n).is_err() {
            debug!("kernel notifier attached twice; keeping the first");
        }
    }

    /// Tell the kernel to forget what `invs` name. Blocking (writes to `/dev/fuse`; an
    /// inode's pages are dropped before the call returns). Returns the failures, described.
    pub fn forget(&self, invs: &[Invalidation]) -> Vec<String> {
        let Some(n) = self.notifier.get() else {
            return vec!["the FUSE session is not running: the kernel was not told".into()];
        };
        let mut errors = Vec::new();
        for inv in invs {
            // fuser already treats ENOENT (nothing cached there) as success.
            let r = match inv {
                Invalidation::Inode { ino, data: true } => n.inval_inode(INodeNo(*ino), 0, 0),
                // A negative offset drops the attributes only.
                Invalidation::Inode { ino, data: false } => n.inval_inode(INodeNo(*ino), -1, 0),
                Invalidation::Entry { parent, name } => {
                    n.inval_entry(INodeNo(*parent), std::ffi::OsStr::new(name))
                }
            };
            if let Err(e) = r {
                warn!(?inv, error = %e, "refresh: kernel invalidation failed");
                errors.push(format!("{inv:?}: {e}"));
            }
        }
        errors
    }
}

/// The body of `POST /refresh`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Request {
    /// Paths relative to the mount point (`""` is the mount's root).
    pub paths: Vec<String>,
    /// Also everything known below a directory.
    #[serde(default)]
    pub recursive: bool,
}

/// The answer of `POST /refresh`: one result per path, in order.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Answer {
    pub results: Vec<PathResult>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct PathResult {
    pub path: String,
    /// Cached nodes dropped.
    pub refreshed: usize,
    /// Nothing was cached for the path beyond its parent's listing.
    pub not_cached: bool,
    /// Open files with changes not uploaded yet, left alone.
    pub skipped: Vec<String>,
    /// Open files whose attributes only were refreshed.
    pub attrs_only: Vec<String>,
    /// Notifications the kernel refused.
    pub kernel_errors: Vec<String>,
    /// Why the path was refused (then nothing was done for it).
    pub error: Option<String>,
}

/// Serve `POST /refresh` (on a blocking thread: notifications write to `/dev/fuse`).
/// Returns the HTTP status and the JSON answer or an error line.
pub fn serve(fs: &Fs, kernel: &Kernel, body: &[u8]) -> (u16, String) {
    let req: Request = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            return (
                400,
                format!("expected {{\"paths\": [\"dir/file\", ...], \"recursive\": false}}: {e}\n"),
            );
        }
    };
    let mut answer = Answer::default();
    for path in req.paths {
        let _span = info_span!("refresh", path = %path, recursive = req.recursive).entered();
        let mut res = PathResult {
            path: path.clone(),
            ..PathResult::default()
        };
        match fs.refresh(&path, req.recursive) {
            Ok(r) => {
                res.kernel_errors = kernel.forget(&r.invalidations);
                info!(
                    nodes = r.nodes,
                    skipped = r.skipped.len(),
                    "refreshed from the store"
                );
                res.refreshed = r.nodes;
                res.not_cached = r.not_cached;
                res.skipped = r.skipped;
                res.attrs_only = r.attrs_only;
            }
            Err(e) => res.error = Some(e.to_string()),
        }
        answer.results.push(res);
    }
    match serde_json::to_string_pretty(&answer) {
        Ok(j) => (200, j + "\n"),
        Err(e) => (500, format!("{e}\n")),
    }
}

/// `path` made absolute the way the registry records mount points: its parent
/// canonicalised, its last component as given (it may be gone from the store already).
fn absolute(path: &Path) -> Option<PathBuf> {
    health::canonical_parent(path).or_else(|| std::fs::canonicalize(path).ok())
}

/// The registration of the mount holding `abs` (the innermost, if mounts nest) and the
/// path relative to its mount point.
fn owner(regs: &[Registration], abs: &Path) -> Option<(usize, String)> {
    regs.iter()
        .enumerate()
        .filter_map(|(i, r)| Some((i, abs.strip_prefix(&r.mountpoint).ok()?)))
        .max_by_key(|(i, _)| regs[*i].mountpoint.as_os_str().len())
        .and_then(|(i, rel)| Some((i, rel.to_str()?.to_string())))
}

/// `blobmount refresh [--recursive] PATH...`: exit 0 when every path was refreshed (open
/// files with local changes are skipped with a message), 2 for a path outside every
/// mount, 1 when a daemon could not be asked or refused a path.
pub fn command(paths: &[PathBuf], recursive: bool, timeout: Duration) -> ExitCode {
    let regs = health::registrations();
    let mut per_mount: BTreeMap<usize, Vec<String>> = BTreeMap::new();
    for p in paths {
        let Some(abs) = absolute(p) else {
            return fail(
                EXIT_CONFIG,
                format!("{}: no such file or directory", p.display()),
            );
        };
        match owner(&regs, &abs) {
            Some((i, rel)) => per_mount.entry(i).or_default().push(rel),
            None => {
                return fail(
                    EXIT_CONFIG,
                    format!(
                        "{} is not inside a running blobmount mount (registry: {})",
                        p.display(),
                        health::registry_dir().display()
                    ),
                );
            }
        }
    }
    let mut bad = false;
    for (i, rels) in per_mount {
        let r = &regs[i];
        match ask(r, &rels, recursive, timeout) {
            Ok(answer) => bad |= report(&r.mountpoint, &answer),
            Err(e) => {
                bad = true;
                eprintln!("blobmount: {}: {e}", r.mountpoint.display());
            }
        }
    }
    if bad {
        ExitCode::from(EXIT_RUNTIME)
    } else {
        ExitCode::SUCCESS
    }
}

fn ask(
    r: &Registration,
    rels: &[String],
    recursive: bool,
    timeout: Duration,
) -> Result<Answer, String> {
    if !health::alive(r.pid) {
        return Err(format!("daemon pid {} is not running (stale entry)", r.pid));
    }
    let Some(addr) = &r.health else {
        return Err(
            "the health endpoint is off (health.listen: \"\"), so refresh cannot reach the daemon"
                .into(),
        );
    };
    let body = serde_json::to_string(&Request {
        paths: rels.to_vec(),
        recursive,
    })
    .map_err(|e| e.to_string())?;
    let (code, text) = health::request(addr, "POST", "/refresh", Some(&body), timeout)?;
    if code != 200 {
        return Err(format!("HTTP {code}: {}", text.trim()));
    }
    serde_json::from_str(&text).map_err(|e| format!("unreadable answer: {e}"))
}

/// Print what happened to each path; whether anything failed.
fn report(mp: &Path, a: &Answer) -> bool {
    let mut bad = false;
    for r in &a.results {
        let shown = mp.join(&r.path);
        if let Some(e) = &r.error {
            bad = true;
            eprintln!("blobmount: {}: {e}", shown.display());
            continue;
        }
        for s in &r.skipped {
            eprintln!(
                "blobmount: skipped {}: open with changes not uploaded yet (they are kept)",
                mp.join(s).display()
            );
        }
        for s in &r.attrs_only {
            println!(
                "{}: open; attributes refreshed, open handles keep the version they opened",
                mp.join(s).display()
            );
        }
        for e in &r.kernel_errors {
            bad = true;
            eprintln!("blobmount: {}: {e}", shown.display());
        }
        if r.not_cached {
            println!(
                "{}: not cached; its directory will be listed again",
                shown.display()
            );
        } else {
            println!(
                "{}: refreshed ({} cached entries dropped)",
                shown.display(),
                r.refreshed
            );
        }
    }
    bad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reg(mp: &str) -> Registration {
        Registration {
            mountpoint: PathBuf::from(mp),
            pid: 1,
            health: None,
            store: "mem://".into(),
            cache_dir: PathBuf::from("/tmp/c"),
        }
    }

    #[test]
    fn a_path_belongs_to_the_innermost_mount_holding_it() {
        let regs = [reg("/mnt/a"), reg("/mnt/a/inner"), reg("/mnt/ab")];
        let at = |p: &str| owner(&regs, Path::new(p));
        assert_eq!(at("/mnt/a/d/f"), Some((0, "d/f".into())));
        assert_eq!(at("/mnt/a"), Some((0, String::new())));
        assert_eq!(at("/mnt/a/inner/x"), Some((1, "x".into())));
        assert_eq!(at("/mnt/ab/x"), Some((2, "x".into())));
        assert_eq!(
            at("/mnt/abc"),
            None,
            "a prefix of the name is not the mount"
        );
        assert_eq!(at("/elsewhere"), None);
    }
}
