//! Object-store backends for blobmount, behind one trait.
//!
//! Why this crate exists: the file-system core must never see a vendor type. Everything it needs
//! from a store (HEAD, ranged GET pinned to an ETag, conditional PUT, multipart upload, paged
//! delimiter listing, copy, delete, user metadata) is expressed by [`Backend`] (in [`api`]),
//! with one error enum ([`BackendError`]) that the core maps to errno. One type per store:
//! - [`memory::MemoryBackend`] (`mem://`): a faithful in-process store used by unit tests and the
//!   zero-setup quick start. Accepts any key, including ones cloud SDKs reject.
//! - [`azure::AzureBackend`] (`az://`), [`s3::S3Backend`] (`s3://`), [`gcs::GcsBackend`]
//!   (`gs://`) and [`local::LocalBackend`] (`file://`): all on the `object_store` crate's data
//!   plane ([`objstore`]), with retries (exponential backoff with jitter) and request timeouts
//!   configured from [`StoreConfig`] (module `connect`), plus signed REST calls ([`rest`]) for what
//!   the crate lacks: listings that accept every key ([`listing`]), Azure block commits that
//!   carry the precondition ([`azblocks`]), S3 multipart uploads with part copy ([`s3parts`])
//!   and GCS writes over the JSON API ([`gcs::GcsJson`]). Behaviour several stores share (checks
//!   of preconditions by HEAD, metadata replacement by rewrite, uploads in parts) lives once in
//!   module `writes` and in [`upload`].
//!
//! - [`adls`]: the DFS endpoint of ADLS Gen2 accounts with a hierarchical namespace (native
//!   rename, real directories, POSIX access control), used by the Azure store when the account
//!   has one.
//!
//! Only [`open`] looks at the kind of store; every other call goes through the trait.
//! This crate must not know about inodes, FUSE or caches.

pub mod adls;
pub mod api;
pub mod azblocks;
pub mod azure;
pub mod checksum;
pub mod config;
pub mod deadline;
pub mod error;
pub mod gcs;
pub mod listing;
pub mod local;
pub mod localdir;
pub mod memory;
pub mod metered;
pub mod objstore;
pub mod rest;
pub mod s3;
pub mod s3parts;
pub mod upload;

mod awscreds;
mod azcreds;
mod connect;
mod gcscreds;
#[cfg(test)]
mod testdouble;
mod tokens;
mod writes;

use std::sync::Arc;

pub use api::{AccessUpdate, PathAccess, RenameCond};
pub use api::{
    AppendBase, Backend, Capabilities, ListPage, ObjectInfo, PartUpload, Precondition, PutMeta,
    PutOutcome, Result, UserMetadata, prefixes_as_objects,
};
pub use api::{MetaNames, MetadataRules};
pub use config::{PartSizes, StoreConfig, StoreKind, StoreUrl};
pub use error::BackendError;

/// Build a backend from configuration: the one place that picks a type by store kind.
pub async fn open(cfg: &StoreConfig) -> Result<Arc<dyn Backend>> {
    let url = cfg.parsed_url()?;
    connect::trust_ca_file(cfg)?;
    let limit = std::time::Duration::from_secs(cfg.retry.metadata_timeout_secs);
    let backend: Arc<dyn Backend> = match url.kind {
        StoreKind::Memory => Arc::new(memory::MemoryBackend::new()),
        StoreKind::Azure => Arc::new(azure::AzureBackend::connect(&url, cfg).await?),
        StoreKind::S3 => Arc::new(s3::S3Backend::open(&url, cfg)?),
        StoreKind::Gcs => Arc::new(gcs::GcsBackend::open(&url, cfg)?),
        StoreKind::File => Arc::new(local::LocalBackend::open(&url, cfg)?),
    };
    // Metadata requests (HEAD, LIST, delete, copy, metadata) get seconds, not the data
    // requests' timeout (`deadline.rs`).
    Ok(deadline::Deadlines::wrap(backend, limit))
}

/// Install the process-wide TLS crypto provider (ring). Idempotent.
pub fn install_crypto_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}
