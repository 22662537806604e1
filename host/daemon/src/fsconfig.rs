//! The file-system core's settings ([`FsConfig`]) from the daemon's [`Config`] (stage 2 of a
//! mount).
//!
//! Why one function: the core sees sizes in bytes, durations and resolved defaults (owner,
//! cache directory, key prefix); the config file speaks MiB, seconds and "unset". Every
//! conversion happens here, with checked arithmetic, so a huge value is a configuration
//! error naming its key instead of a wrapped size.

use std::path::PathBuf;
use std::time::Duration;

use blobmount_core::FsConfig;

use crate::config::{Config, ConfigError, mib_bytes};

/// The core's settings for a mount whose cache directory is `cache_dir`.
pub fn fs_config(cfg: &Config, cache_dir: PathBuf) -> Result<FsConfig, ConfigError> {
    let c = &cfg.cache;
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    Ok(FsConfig {
        prefix: prefix(cfg)?,
        read_only: cfg.mount.read_only,
        uid: cfg.mount.uid.unwrap_or(uid),
        gid: cfg.mount.gid.unwrap_or(gid),
        file_mode: cfg.mount.file_mode,
        dir_mode: cfg.mount.dir_mode,
        attr_ttl: cfg.attr_timeout(),
        list_ttl: secs(c.list_ttl_secs),
        negative_ttl: secs(c.negative_ttl_secs),
        list_cache_max_entries: c.list_cache_max_entries,
        poll: blobmount_core::PollConfig {
            interval: secs(c.poll_secs),
            recent: secs(c.poll_recent_secs),
            max_dirs: c.poll_max_dirs,
            max_files: c.poll_max_files,
            max_entries: c.poll_max_entries,
        },
        cache_dir,
        rename_dir_limit: cfg.mount.rename_dir_limit,
        list_page_size: c.list_page_size,
        read_ahead_max: size("cache.read-ahead-max-mib", c.read_ahead_max_mib)?,
        read_block: size("cache.read-block-mib", c.read_block_mib)?,
        read_memory: size("cache.read-memory-mib", c.read_memory_mib)?,
        read_mode: cfg.read.mode.into(),
        verify_reads_min: mib_bytes("read.verify-min-mib", cfg.read.verify_min_mib)?,
        file_cache_max: mib_bytes("cache.file-cache-max-mib", c.file_cache_max_mib)?,
        file_cache_min_free: mib_bytes("cache.file-cache-min-free-mib", c.file_cache_min_free_mib)?,
        file_cache_range_reads: c.file_cache_range_reads,
        passthrough: c.file_cache_passthrough.on(cfg.mount.read_only),
        write_streaming: cfg.write.streaming,
        write_part_size: size("write.part-size-mib", cfg.write.part_size_mib)?,
        write_parts_in_flight: cfg.write.parts_in_flight,
        attr_write_delay: Duration::from_millis(cfg.write.attr_delay_ms),
        close_delay: Duration::from_millis(cfg.write.close_delay_ms),
        content_types: cfg.write.content_types()?,
    })
}

fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}

/// A `*-mib` setting in bytes, as the in-memory size the core takes.
fn size(key: &str, mib: usize) -> Result<usize, ConfigError> {
    let bytes = mib_bytes(key, mib as u64)?;
    usize::try_from(bytes).map_err(|_| ConfigError(format!("{key}: {mib} MiB is too large")))
}

/// The key prefix: the store URL's, with `mount.subdirectory` below it.
fn prefix(cfg: &Config) -> Result<String, ConfigError> {
    let url = cfg
        .store
        .parsed_url()
        .map_err(|e| ConfigError(e.to_string()))?;
    let sub = cfg
        .mount
        .subdirectory
        .as_deref()
        .map(|s| s.trim_matches('/'))
        .filter(|s| !s.is_empty());
    Ok(match sub {
        None => url.prefix,
        Some(sub) if url.prefix.is_empty() => sub.to_string(),
        Some(sub) => format!("{}/{sub}", url.prefix),
    })
}

/// `cache.dir` when unset: per (store, mount point) `id`, under `/var/cache/blobmount` for
/// root and the user's cache directory otherwise.
pub fn default_cache_dir(id: &str) -> PathBuf {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        return PathBuf::from("/var/cache/blobmount").join(id);
    }
    let base = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .unwrap_or_else(std::env::temp_dir);
    base.join("blobmount").join(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> Config {
        let mut c = Config::default();
        c.store.url = Some("mem://".into());
        c
    }

    #[test]
    fn sizes_are_converted_from_mib() {
        let f = fs_config(&cfg(), "/tmp/x".into()).unwrap();
        assert_eq!(f.read_block, 8 << 20);
        assert_eq!(f.read_memory, 512 << 20);
        assert_eq!(f.file_cache_max, 10 << 30);
        assert_eq!(f.write_part_size, 8 << 20);
    }

    #[test]
    fn huge_mib_values_are_config_errors_not_wrapped_sizes() {
        let mut c = cfg();
        c.cache.file_cache_max_mib = u64::MAX / 2;
        let e = fs_config(&c, "/tmp/x".into()).unwrap_err().0;
        assert!(e.starts_with("cache.file-cache-max-mib:"), "{e}");
        let mut c = cfg();
        c.cache.read_ahead_max_mib = usize::MAX;
        let e = fs_config(&c, "/tmp/x".into()).unwrap_err().0;
        assert!(e.starts_with("cache.read-ahead-max-mib:"), "{e}");
        assert!(c.validate().is_err());
    }

    #[test]
    fn subdirectory_goes_below_the_url_prefix() {
        let mut c = cfg();
        c.store.url = Some("s3://bucket/data".into());
        c.mount.subdirectory = Some("/a/b/".into());
        assert_eq!(fs_config(&c, "/tmp/x".into()).unwrap().prefix, "data/a/b");
        c.store.url = Some("s3://bucket".into());
        assert_eq!(fs_config(&c, "/tmp/x".into()).unwrap().prefix, "a/b");
    }
}
