//! Uploads in parts to GCS ([`crate::Backend::start_upload`]): a resumable session fed part
//! by part.
//!
//! Why a module of its own: this is a write-side state machine (parts start concurrently but
//! land strictly in order, a failed part stops the rest, the condition is checked before the
//! request that finalizes), separate from the backend's per-call mapping in the parent module.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::api::{PartUpload, Precondition, PutOutcome, Result};
use crate::checksum;
use crate::error::BackendError;
use crate::gcs::generation::{outcome, precheck};
use crate::gcs::json::{GcsJson, GenCond};
use crate::objstore::ObjectPlane;

/// Where a GCS session's parts have got to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Sent {
    /// Every byte before this offset is in the session.
    Upto(u64),
    /// A part failed; later parts are not sent.
    Failed,
}

/// A GCS resumable upload fed part by part. A session takes its bytes strictly in order, so
/// each part waits for the one before it to land (parts may be started concurrently); the
/// object appears only when the session is finalized, with the condition it was opened with.
pub(crate) struct GcsUpload {
    plane: ObjectPlane,
    gcs: Arc<GcsJson>,
    key: String,
    session: String,
    cond: Precondition,
    gcond: GenCond,
    /// Offset of the next part.
    next: u64,
    state: Arc<tokio::sync::watch::Sender<Sent>>,
    /// The generation, once a short (hence last) part finalized the session.
    generation: Arc<std::sync::Mutex<Option<String>>>,
    /// MD5 of the parts so far (they are handed over in order), sent with the request that
    /// finalizes the object.
    whole: checksum::Running,
}

impl std::fmt::Debug for GcsUpload {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GcsUpload")
            .field("key", &self.key)
            .field("next", &self.next)
            .finish()
    }
}

/// GCS resumable chunks other than the last are multiples of this.
const GCS_QUANTUM: u64 = 256 * 1024;

impl GcsUpload {
    /// Parts of `key` into the open resumable `session`, which was opened under `cond`
    /// (`gcond` in GCS terms).
    pub(crate) fn new(
        plane: ObjectPlane,
        gcs: Arc<GcsJson>,
        key: &str,
        session: String,
        (cond, gcond): (&Precondition, GenCond),
    ) -> Self {
        let (state, _) = tokio::sync::watch::channel(Sent::Upto(0));
        GcsUpload {
            plane,
            gcs,
            key: key.to_string(),
            session,
            cond: cond.clone(),
            gcond,
            next: 0,
            state: Arc::new(state),
            generation: Arc::default(),
            whole: checksum::Running::default(),
        }
    }

    /// Wait until every part before `offset` is in the session.
    async fn wait_for(state: &tokio::sync::watch::Sender<Sent>, offset: u64) -> Result<()> {
        let mut rx = state.subscribe();
        let r = rx
            .wait_for(|s| match s {
                Sent::Upto(n) => *n >= offset,
                Sent::Failed => true,
            })
            .await
            .map(|s| *s);
        match r {
            Ok(Sent::Upto(_)) => Ok(()),
            Ok(Sent::Failed) | Err(_) => Err(BackendError::Other(
                "an earlier part of this upload failed".into(),
            )),
        }
    }
}

#[async_trait]
impl PartUpload for GcsUpload {
    fn put_part(&mut self, data: Bytes) -> futures::future::BoxFuture<'static, Result<()>> {
        let offset = self.next;
        let len = data.len() as u64;
        self.next += len;
        // Parts other than the last are whole multiples of the part size; a short one is
        // the last and finalizes the object.
        let total = (!len.is_multiple_of(GCS_QUANTUM)).then_some(self.next);
        let whole = if self.gcs.checked() {
            self.whole.update(&data);
            total.map(|_| self.whole.clone().finish())
        } else {
            None
        };
        let (gcs, key, session, gcond) = (
            self.gcs.clone(),
            self.key.clone(),
            self.session.clone(),
            self.gcond.clone(),
        );
        let (state, generation) = (self.state.clone(), self.generation.clone());
        let plane = self.plane.clone();
        Box::pin(async move {
            Self::wait_for(&state, offset).await?;
            let checked = match total {
                Some(_) => precheck(&plane, &key, &gcond).await,
                None => Ok(()),
            };
            if let Err(e) = checked {
                state.send_replace(Sent::Failed);
                return Err(e);
            }
            match gcs
                .send_chunk(&key, &session, &gcond, offset, data, total, whole.as_ref())
                .await
            {
                Ok(g) => {
                    if let Some(g) = g {
                        *generation.lock().unwrap_or_else(|p| p.into_inner()) = Some(g);
                    }
                    state.send_replace(Sent::Upto(offset + len));
                    Ok(())
                }
                Err(e) => {
                    state.send_replace(Sent::Failed);
                    Err(e)
                }
            }
        })
    }

    async fn complete(self: Box<Self>, cond: &Precondition) -> Result<PutOutcome> {
        if *cond != self.cond {
            self.gcs.cancel_session(&self.key, &self.session).await;
            return Err(BackendError::Other(format!(
                "GCS {}: the upload was opened under another condition",
                self.key
            )));
        }
        Self::wait_for(&self.state, self.next).await?;
        let done = self
            .generation
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let generation = match done {
            Some(g) => g,
            None => {
                precheck(&self.plane, &self.key, &self.gcond).await?;
                self.gcs
                    .send_chunk(
                        &self.key,
                        &self.session,
                        &self.gcond,
                        self.next,
                        Bytes::new(),
                        Some(self.next),
                        self.gcs
                            .checked()
                            .then(|| self.whole.clone().finish())
                            .as_ref(),
                    )
                    .await?
                    .ok_or_else(|| {
                        BackendError::Other(format!("GCS {}: session not finalized", self.key))
                    })?
            }
        };
        outcome(&self.plane, &self.key, &generation).await
    }

    async fn abort(self: Box<Self>) -> Result<()> {
        self.gcs.cancel_session(&self.key, &self.session).await;
        Ok(())
    }
}
