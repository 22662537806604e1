//! Write behaviour several stores share, written once over the [`Backend`] trait: checking a
//! precondition with a HEAD where the store cannot make the call itself conditional, a
//! server-side copy through `object_store` under such a check, replacing user metadata by
//! rewriting the object, and reading a file that is small enough for one request.
//!
//! Why over the trait and not over `object_store`: the checks must see the object the way the
//! backend reports it (a `file://` directory marker is a directory on disk, not an object),
//! so they call the backend's own `head`, `get_range` and `put`.

use std::path::Path;

use bytes::Bytes;
use object_store::CopyMode;

use crate::api::{Backend, Precondition, PutMeta, PutOutcome, Result};
use crate::error::BackendError;
use crate::objstore::ObjectPlane;
use crate::upload::SINGLE_PUT_MAX;

/// Check `cond` on `key` with a HEAD through `b`, for calls the store cannot make conditional.
/// A missing object fails `IfMatch` with `PreconditionFailed`, as the stores' own conditional
/// writes do (nothing has the ETag asked for).
pub(crate) async fn check_precondition<B: Backend + ?Sized>(
    b: &B,
    key: &str,
    cond: &Precondition,
) -> Result<()> {
    match cond {
        Precondition::None => Ok(()),
        Precondition::IfNotExists => match b.head(key).await {
            Ok(_) => Err(BackendError::AlreadyExists { key: key.into() }),
            Err(BackendError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        },
        Precondition::IfMatch(e) => match b.head(key).await {
            Ok(info) if info.etag.as_deref() == Some(e.as_str()) => Ok(()),
            Ok(_) | Err(BackendError::NotFound { .. }) => {
                Err(BackendError::PreconditionFailed { key: key.into() })
            }
            Err(e) => Err(e),
        },
    }
}

/// Copy `from` to `to` inside the store, conditional on `cond` about `to`: creation is checked
/// by the store, a replacement by a HEAD through `b` just before (`object_store` copies carry
/// no If-Match).
pub(crate) async fn copy_in_store<B: Backend + ?Sized>(
    b: &B,
    plane: &ObjectPlane,
    from: &str,
    to: &str,
    cond: &Precondition,
) -> Result<PutOutcome> {
    let mode = match cond {
        Precondition::IfNotExists => CopyMode::Create,
        Precondition::None => CopyMode::Overwrite,
        Precondition::IfMatch(_) => {
            check_precondition(b, to, cond).await?;
            CopyMode::Overwrite
        }
    };
    plane.copy(from, to, mode).await
}

/// Replace the user metadata of `key` by writing its bytes again with `meta`, conditional on
/// `if_match` (or on the ETag just read, so a concurrent write is never undone).
pub(crate) async fn rewrite_metadata<B: Backend + ?Sized>(
    b: &B,
    key: &str,
    meta: &PutMeta,
    if_match: Option<&str>,
) -> Result<PutOutcome> {
    let info = b.head(key).await?;
    let etag = if_match.map(str::to_string).or(info.etag.clone());
    let data = b.get_range(key, 0..info.size, etag.as_deref()).await?;
    let cond = match etag {
        Some(e) => Precondition::IfMatch(e),
        None => Precondition::None,
    };
    b.put(key, data, meta, &cond).await
}

/// The bytes of `file` when it is small enough to go up in one request; `None` when it goes
/// up in parts.
pub(crate) async fn small_file(file: &Path) -> Result<Option<Bytes>> {
    let len = tokio::fs::metadata(file).await?.len();
    if len > SINGLE_PUT_MAX {
        return Ok(None);
    }
    Ok(Some(Bytes::from(tokio::fs::read(file).await?)))
}
