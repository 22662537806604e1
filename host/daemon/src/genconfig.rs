//! `blobmount gen-config` (BlobFuse2's `gen-config`): a starting configuration for a read
//! mode, with sizes worked out for this machine, in blobmount's native YAML (BlobFuse2
//! writes a BlobFuse2 file; blobmount reads those too, but a new file should be native).
//!
//! Why generated text and not a serialised `Config`: the file is for people to finish (the
//! store and its credentials are left as comments to fill in), so every value carries a
//! comment saying where it came from; `blobmount config validate` accepts it as written.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::exit::{EXIT_CONFIG, EXIT_RUNTIME, fail};

/// `blobmount gen-config` flags, BlobFuse2's names.
#[derive(clap::Args, Debug, Default)]
pub struct GenConfig {
    /// For the block cache: files read in blocks held in memory, with read-ahead.
    #[arg(long)]
    pub block_cache: bool,
    /// Without caching: every read and lookup goes to the store.
    #[arg(long)]
    pub direct_io: bool,
    /// For the file cache (the default mode), with whole files cached in this directory.
    #[arg(long, value_name = "DIR")]
    pub tmp_path: Option<PathBuf>,
    /// A read-only mount.
    #[arg(long)]
    pub ro: bool,
    /// Where to write it (default ./blobmount.yaml); `console` prints it.
    #[arg(long = "o", short = 'o', value_name = "FILE")]
    pub output: Option<String>,
}

/// `blobmount gen-config`.
pub fn main(g: &GenConfig) -> ExitCode {
    let text = match generate(g, &Machine::this()) {
        Ok(t) => t,
        Err(e) => return fail(EXIT_CONFIG, e),
    };
    match g.output.as_deref() {
        Some("console") => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        out => {
            let path = Path::new(out.unwrap_or("./blobmount.yaml"));
            if let Err(e) = std::fs::write(path, &text) {
                return fail(EXIT_RUNTIME, format!("{}: {e}", path.display()));
            }
            let shown = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
            println!("Generated config file: {}", shown.display());
            ExitCode::SUCCESS
        }
    }
}

/// What the sizes are worked out from.
pub struct Machine {
    /// `MemAvailable`, MiB.
    pub mem_available_mib: u64,
    pub cpus: u64,
    /// Free space where the file cache goes, MiB (`None`: unknown).
    pub disk_free_mib: Option<u64>,
}

impl Machine {
    fn this() -> Machine {
        let mem = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find(|l| l.starts_with("MemAvailable:"))
                    .and_then(|l| l.split_ascii_whitespace().nth(1)?.parse::<u64>().ok())
            })
            .map_or(4096, |kib| kib / 1024);
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get() as u64);
        Machine {
            mem_available_mib: mem,
            cpus,
            disk_free_mib: None,
        }
    }
}

/// Free space of the file system holding `dir` (or its nearest existing parent), MiB.
fn disk_free_mib(dir: &Path) -> Option<u64> {
    let mut p = std::path::absolute(dir).ok()?;
    while !p.exists() {
        p = p.parent()?.to_path_buf();
    }
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).ok()?;
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized out-parameter.
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    Some((st.f_bavail as u64).saturating_mul(st.f_frsize as u64) / (1024 * 1024))
}

const BLOCK_MIB: u64 = 16;

/// The file's text for the flags `g` on machine `m`.
pub fn generate(g: &GenConfig, m: &Machine) -> Result<String, String> {
    if !g.block_cache && !g.direct_io && g.tmp_path.is_none() {
        return Err("gen-config: the file cache (the default mode) needs --tmp-path DIR; or give --block-cache or --direct-io".into());
    }
    let mode = if g.direct_io {
        "direct"
    } else if g.block_cache {
        "block-cache"
    } else {
        "file-cache"
    };
    let mut o = format!(
        "# blobmount configuration for read mode {mode}, from `blobmount gen-config` (BlobFuse2's\n\
         # gen-config writes a BlobFuse2 file; this is blobmount's native format, docs/configuration.md).\n\
         # Fill in the store, then: blobmount mount DIR --config THIS-FILE\n\
         #store:\n\
         #  url: az://ACCOUNT/CONTAINER        # or s3://BUCKET, gs://BUCKET\n\
         #  azure:\n\
         #    mode: key                       # key | sas | spn | msi | azcli | workloadidentity\n\
         #    account-key: <storage account key>   # or sas-token, client-id, tenant-id, ...\n\n\
         mount:\n  read-only: {}\n",
        g.ro
    );
    // BlobFuse2's gen-config keeps names and attributes 120 s (0 with direct-io).
    let ttl = if g.direct_io { 0 } else { 120 };
    o.push_str(&format!(
        "  # Seconds a file's attributes are trusted (BlobFuse2's gen-config value; blobmount's\n  \
         # default is 1, so changes by others show sooner).\n  attr-timeout-secs: {ttl}\n"
    ));
    o.push_str(&format!("read:\n  mode: {mode}\ncache:\n"));
    o.push_str(&format!(
        "  list-ttl-secs: {ttl}\n  negative-ttl-secs: {ttl}\n"
    ));
    if let Some(dir) = g.tmp_path.as_ref().filter(|_| !g.direct_io) {
        o.push_str(&format!(
            "  dir: {}\n",
            yaml_string(&dir.display().to_string())
        ));
    }
    if mode == "file-cache" {
        let free = m
            .disk_free_mib
            .or_else(|| g.tmp_path.as_deref().and_then(disk_free_mib));
        let max = free.map_or(10_240, |f| (f * 8 / 10).max(1));
        o.push_str(&format!(
            "  # 80% of the free space under the cache directory now ({}).\n  file-cache-max-mib: {max}\n",
            free.map_or("unknown: the default".to_string(), |f| format!("{f} MiB free"))
        ));
    }
    if mode != "direct" {
        // Half of the memory available now, as BlobFuse2 sizes its block pool from free memory.
        let mem = (m.mem_available_mib / 2).clamp(BLOCK_MIB, 1_048_576);
        let mut prefetch = (2 * m.cpus).clamp(11, 4096 / BLOCK_MIB);
        if prefetch * BLOCK_MIB > mem {
            prefetch = (mem / BLOCK_MIB).max(1);
        }
        o.push_str(&format!(
            "  # Read blocks of {BLOCK_MIB} MiB; {prefetch} ahead of a sequential reader (2 per CPU, at least 11,\n  \
             # as BlobFuse2's prefetch); half of the {} MiB of memory available now.\n  \
             read-block-mib: {BLOCK_MIB}\n  read-ahead-max-mib: {}\n  read-memory-mib: {mem}\n",
            m.mem_available_mib,
            prefetch * BLOCK_MIB,
        ));
    }
    Ok(o)
}

/// `s` as a YAML scalar that stays a string.
fn yaml_string(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn machine() -> Machine {
        Machine {
            mem_available_mib: 8192,
            cpus: 8,
            disk_free_mib: Some(1000),
        }
    }

    fn validated(text: &str) -> crate::config::Config {
        let tree = crate::config::parse_yaml(text).unwrap();
        let cfg = crate::config::from_tree(tree).unwrap_or_else(|e| panic!("{e}\n{text}"));
        cfg.validate().unwrap_or_else(|e| panic!("{e}\n{text}"));
        cfg
    }

    #[test]
    fn every_mode_gives_a_valid_file() {
        let fc = GenConfig {
            tmp_path: Some("/mnt/blob cache".into()),
            ..Default::default()
        };
        let c = validated(&generate(&fc, &machine()).unwrap());
        assert_eq!(c.read.mode, crate::config::ReadMode::FileCache);
        assert_eq!(c.cache.dir.as_deref(), Some(Path::new("/mnt/blob cache")));
        assert_eq!(c.cache.file_cache_max_mib, 800);
        assert_eq!(c.mount.attr_timeout_secs, 120.0);
        let bc = GenConfig {
            block_cache: true,
            ro: true,
            ..Default::default()
        };
        let c = validated(&generate(&bc, &machine()).unwrap());
        assert_eq!(c.read.mode, crate::config::ReadMode::BlockCache);
        assert!(c.mount.read_only);
        assert_eq!(
            (c.cache.read_block_mib, c.cache.read_memory_mib),
            (16, 4096)
        );
        assert_eq!(c.cache.read_ahead_max_mib, 16 * 16);
        let dio = GenConfig {
            direct_io: true,
            ..Default::default()
        };
        let c = validated(&generate(&dio, &machine()).unwrap());
        assert_eq!(c.read.mode, crate::config::ReadMode::Direct);
        assert_eq!(
            (c.mount.attr_timeout_secs, c.cache.list_ttl_secs),
            (0.0, 0.0)
        );
        // A small machine: the read-ahead fits in the memory.
        let tiny = Machine {
            mem_available_mib: 100,
            cpus: 64,
            disk_free_mib: None,
        };
        let c = validated(&generate(&bc, &tiny).unwrap());
        assert!(c.cache.read_ahead_max_mib <= c.cache.read_memory_mib);
    }

    #[test]
    fn the_file_cache_needs_its_directory() {
        let e = generate(&GenConfig::default(), &machine()).unwrap_err();
        assert!(e.contains("--tmp-path"), "{e}");
    }
}
