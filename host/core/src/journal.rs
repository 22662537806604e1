//! The directory-rename journal: an interrupted directory rename is rolled back or finished
//! by the next mount, never left half-done.
//!
//! Why: object stores have no directory rename. Renaming a directory copies every object
//! below it and then deletes the originals; a crash (or a store failure) in the middle would
//! leave some objects under each name. Before the first copy the core writes the plan
//! (`<cache>/journal/rename-*.json`: source and target prefixes, every key) and removes it
//! when done. Whoever finds a plan decides from the store alone: if every source object still
//! exists, nothing was deleted yet and the rename is rolled back (copies removed); otherwise
//! the deletes had started and it is finished (remaining objects copied, then deleted). Both
//! steps are idempotent, so a crash during recovery is recovered the same way.

use std::fs::File;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use blobmount_backend::{Backend, BackendError, Precondition};
use serde::{Deserialize, Serialize};
use tracing::{error, info, warn};

use crate::error::{FsResult, ignore_missing};

/// The plan of one directory rename.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct RenamePlan {
    /// Source and target directory keys (no trailing `/`).
    pub from: String,
    pub to: String,
    /// Every object below `from/`, as listed before the first copy.
    pub keys: Vec<String>,
    /// The directory has a folder marker object at `from` itself.
    pub folder_marker: bool,
}

impl RenamePlan {
    fn target(&self, key: &str) -> String {
        format!("{}/{}", self.to, &key[self.from.len() + 1..])
    }
}

/// How a recovered rename ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenameOutcome {
    RolledBack { from: String, to: String },
    Finished { from: String, to: String },
}

/// The journal directory and the store its plans are carried out on.
pub(crate) struct Journal {
    dir: PathBuf,
    backend: Arc<dyn Backend>,
}

impl Journal {
    /// The journal in `<cache_dir>/journal`.
    pub(crate) fn new(cache_dir: &Path, backend: Arc<dyn Backend>) -> Journal {
        Journal {
            dir: cache_dir.join("journal"),
            backend,
        }
    }

    /// Write the plan before the first copy; returns where (remove it with
    /// [`Journal::done`]).
    pub(crate) fn begin(&self, plan: &RenamePlan) -> FsResult<PathBuf> {
        // Written and fsynced (file and directory): off the async workers.
        crate::blocking::run(|| self.write_plan(plan))
    }

    fn write_plan(&self, plan: &RenamePlan) -> FsResult<PathBuf> {
        let dir = &self.dir;
        std::fs::create_dir_all(dir)?;
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let path = dir.join(format!(
            "rename-{}.{:09}-{}.json",
            now.as_secs(),
            now.subsec_nanos(),
            std::process::id()
        ));
        let tmp = path.with_extension("tmp");
        let body = serde_json::to_vec(plan).map_err(std::io::Error::other)?;
        {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
        }
        std::fs::rename(&tmp, &path)?;
        // The plan must outlive a power loss as well as a crash: the copies that follow are
        // in the store for good.
        sync_dir_of(&path)?;
        Ok(path)
    }

    pub(crate) fn done(&self, path: &Path) {
        let removed =
            crate::blocking::run(|| std::fs::remove_file(path).and_then(|()| sync_dir_of(path)));
        if let Err(e) = removed {
            warn!(journal = %path.display(), error = %e, "could not remove a finished rename's journal");
        }
    }

    /// Run (or re-run) the copy and delete steps of a plan.
    pub(crate) async fn run(&self, plan: &RenamePlan) -> FsResult<()> {
        for k in &plan.keys {
            self.backend
                .copy(k, &plan.target(k), &Precondition::None)
                .await?;
        }
        if plan.folder_marker {
            self.backend
                .copy(&plan.from, &plan.to, &Precondition::None)
                .await?;
        }
        // Children before their parents' markers: a marker is gone only once its directory is.
        for k in plan.keys.iter().rev() {
            ignore_missing(self.backend.delete(k).await)?;
        }
        if plan.folder_marker {
            ignore_missing(self.backend.delete(&plan.from).await)?;
        }
        Ok(())
    }

    /// Roll back or finish one interrupted rename (see the module doc).
    pub(crate) async fn settle(&self, plan: &RenamePlan) -> Result<RenameOutcome, BackendError> {
        let mut all_sources = true;
        for k in &plan.keys {
            match self.backend.head(k).await {
                Ok(_) => {}
                Err(BackendError::NotFound { .. }) => {
                    all_sources = false;
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        let (from, to) = (plan.from.clone(), plan.to.clone());
        if all_sources {
            for k in &plan.keys {
                match self.backend.delete(&plan.target(k)).await {
                    Ok(()) | Err(BackendError::NotFound { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            return Ok(RenameOutcome::RolledBack { from, to });
        }
        // Deletes had started: every source that is left still has to move.
        for k in &plan.keys {
            match self.backend.head(k).await {
                Ok(_) => {
                    self.backend
                        .copy(k, &plan.target(k), &Precondition::None)
                        .await?;
                    match self.backend.delete(k).await {
                        Ok(()) | Err(BackendError::NotFound { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                Err(BackendError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if plan.folder_marker && self.backend.head(&plan.from).await.is_ok() {
            self.backend
                .copy(&plan.from, &plan.to, &Precondition::None)
                .await?;
            match self.backend.delete(&plan.from).await {
                Ok(()) | Err(BackendError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(RenameOutcome::Finished { from, to })
    }

    /// Settle every rename a previous daemon (or a failed rename) left in the journal.
    pub(crate) async fn recover(&self) -> Vec<RenameOutcome> {
        let mut out = Vec::new();
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return out;
        };
        let mut paths: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
        paths.sort();
        for path in paths {
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                let _ = std::fs::remove_file(&path); // a plan cut short before it was in place
                continue;
            }
            let plan: Option<RenamePlan> = std::fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice(&b).ok());
            let Some(plan) = plan else {
                error!(journal = %path.display(), "unreadable rename journal left in place");
                continue;
            };
            match self.settle(&plan).await {
                Ok(o) => {
                    info!(outcome = ?o, "interrupted directory rename settled");
                    let _ = std::fs::remove_file(&path);
                    out.push(o);
                }
                Err(e) => {
                    error!(from = plan.from, to = plan.to, error = %e, "could not settle an interrupted directory rename; retried at the next mount");
                }
            }
        }
        out
    }
}

/// Sync the directory holding `path`, so a rename or creation in it survives a power loss.
pub(crate) fn sync_dir_of(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(dir) => File::open(dir)?.sync_all(),
        None => Ok(()),
    }
}
