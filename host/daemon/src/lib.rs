//! blobmount daemon: CLI, configuration, FUSE adapter, mount lifecycle.
//!
//! Why a library behind a thin binary: tests reach every module directly, and the mount is
//! a sequence of stages (`mount`) each in its own module; a mount's state (counters, policy)
//! is owned by the mount, the log subscriber being the only process-wide thing.
//!
//! Owns process concerns (arguments, config files, logging, signals, mounting and
//! unmounting, detaching into the background). It must not contain file-system semantics:
//! those belong to `blobmount_core`, and storage access to `blobmount_backend`.

pub mod args;
pub mod background;
pub mod blobfuse2;
pub mod blobfuse2_flags;
pub mod blobfuse_v1;
pub mod cli;
pub mod config;
pub mod exit;
pub mod fdpass;
pub mod fsconfig;
pub mod fuse;
pub mod genconfig;
pub mod health;
pub mod logfile;
pub mod logging;
pub mod logsink;
pub mod manifest;
pub mod metrics;
pub mod monitor;
pub mod mount;
pub mod mountall;
pub mod mountpoint;
pub mod mountv1;
pub mod opstats;
pub mod plugin_cli;
pub mod plugin_limits;
pub mod plugin_new;
pub mod plugin_test;
pub mod policy;
pub mod poll;
pub mod preload;
pub mod procstat;
pub mod refresh;
pub mod reply;
pub mod secure;
pub mod session;
pub mod setting;
pub mod settings;
#[cfg(test)]
mod settings_check;
pub mod shutdown;
pub mod status;
pub mod store;
pub mod values;
