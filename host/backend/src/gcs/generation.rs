//! From ETags (what the core speaks) to GCS generations (what GCS checks atomically) and
//! back, for every conditional write of the GCS backend.
//!
//! Why a module of its own: the backend's writes and its resumable uploads both resolve a
//! precondition before they write and read the result's ETag after; both need exactly the
//! same rules, and neither may depend on the other.

use crate::api::{Precondition, PutOutcome, Result};
use crate::error::BackendError;
use crate::gcs::json::GenCond;
use crate::objstore::ObjectPlane;

/// Resolve a precondition to a GCS generation condition (one HEAD for `IfMatch`). A missing
/// object or another ETag fails `IfMatch` with `PreconditionFailed`.
pub(crate) async fn resolve(
    plane: &ObjectPlane,
    key: &str,
    cond: &Precondition,
) -> Result<GenCond> {
    match cond {
        Precondition::None => Ok(GenCond::None),
        Precondition::IfNotExists => Ok(GenCond::Absent),
        Precondition::IfMatch(e) => {
            let stale = || BackendError::PreconditionFailed { key: key.into() };
            let (info, generation) = match plane.head_versioned(key).await {
                Ok(x) => x,
                Err(BackendError::NotFound { .. }) => return Err(stale()),
                Err(err) => return Err(err),
            };
            if info.etag.as_deref() != Some(e.as_str()) {
                return Err(stale());
            }
            generation.map(GenCond::Generation).ok_or_else(|| {
                BackendError::Other(format!("GCS {key}: HEAD returned no generation"))
            })
        }
    }
}

/// The ETag of what we just wrote as `generation`. If another writer replaced it already, a
/// token that matches nothing is returned, so our next conditional write or pinned read
/// reports the conflict instead of trusting someone else's object.
pub(crate) async fn outcome(
    plane: &ObjectPlane,
    key: &str,
    generation: &str,
) -> Result<PutOutcome> {
    let superseded = || PutOutcome {
        etag: Some(format!("superseded-generation-{generation}")),
    };
    match plane.head_versioned(key).await {
        Ok((info, Some(g))) if g == generation => Ok(PutOutcome { etag: info.etag }),
        Ok(_) => Ok(superseded()),
        Err(BackendError::NotFound { .. }) => Ok(superseded()),
        Err(e) => Err(e),
    }
}

/// Check `gcond` against the object as it is now, just before the request that finalizes a
/// resumable upload. GCS itself enforces the condition given when the session opened;
/// fake-gcs-server ignores it, and one HEAD per upload is cheap insurance against
/// overwriting another client's write.
pub(crate) async fn precheck(plane: &ObjectPlane, key: &str, gcond: &GenCond) -> Result<()> {
    let now = match plane.head_versioned(key).await {
        Ok((_, g)) => Some(g),
        Err(BackendError::NotFound { .. }) => None,
        Err(e) => return Err(e),
    };
    match (gcond, now) {
        (GenCond::None, _) | (GenCond::Absent, None) => Ok(()),
        (GenCond::Absent, Some(_)) => Err(BackendError::AlreadyExists { key: key.into() }),
        (GenCond::Generation(want), Some(Some(g))) if *want == g => Ok(()),
        (GenCond::Generation(_), _) => Err(BackendError::PreconditionFailed { key: key.into() }),
    }
}
