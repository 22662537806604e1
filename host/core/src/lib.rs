//! blobmount's file-system core: POSIX-like semantics over an object store.
//!
//! Why it is separate from the FUSE adapter: every behaviour (inode numbers, directories
//! from prefixes and markers, name conflicts, staged writes with preconditions, errno
//! mapping) is decided here and tested without a kernel; the adapter only translates
//! requests. This crate must not depend on FUSE types or on a particular store: it talks to
//! storage only through `blobmount_backend::Backend`.

pub mod acl;
pub mod attr;
mod attrwrite;
mod blocking;
pub mod blockpool;
pub mod budget;
pub mod checked;
pub mod config;
pub mod contenttype;
mod direct;
mod dirops;
pub mod error;
pub mod filecache;
mod fileops;
mod files;
pub mod fs;
pub mod inode;
mod journal;
pub mod names;
mod namespace;
pub mod passthrough;
pub mod policy;
pub mod poller;
pub mod preload;
pub mod readahead;
pub mod readpath;
pub mod refresh;
mod rename;
mod renamegate;
mod staging;
mod sync;
mod types;
mod verify;
mod writestream;
pub mod xattr;

pub use attr::{Attr, Kind};
pub use checked::AsCaller;
pub use config::FsConfig;
pub use error::{FsError, FsResult};
pub use fs::{Caller, DirEntry, Fs, LOOKUP_CONCURRENCY, OpenReply, SetAttr, StatFs};
pub use inode::ROOT_INO;
pub use journal::RenameOutcome;
pub use policy::{NodePolicy, open_access};
pub use poller::{PollConfig, PollReport};
pub use preload::PreloadProgress;
pub use readpath::ReadMode;
pub use refresh::{Invalidation, Refresh};
pub use staging::{Recovery, RecoveryReport};
