//! `blobmount mount` arguments: the typed flags, `-o` options in mount(8) style, and how
//! they are laid over a loaded [`Config`].
//!
//! Why not in `cli`: the mount stages and the command dispatch both need them; here neither
//! has to import the other.

use std::path::PathBuf;

use clap::Args;

use crate::config::{Config, LogFormat, ReadMode, parse_mode};

#[derive(Args, Debug, Default, Clone)]
pub struct MountArgs {
    /// Store URL: az://ACCOUNT/CONTAINER[/PREFIX], s3://BUCKET[/PREFIX], gs://BUCKET[/PREFIX],
    /// file:///PATH or mem://.
    pub store_url: Option<String>,
    /// Directory to mount on.
    pub mountpoint: Option<PathBuf>,
    /// YAML config file (flags override it; BLOBMOUNT_* environment overrides it too).
    #[arg(long, short = 'c', env = "BLOBMOUNT_CONFIG")]
    pub config: Option<PathBuf>,
    /// Stay in the foreground.
    #[arg(long, short = 'f')]
    pub foreground: bool,
    /// Mount read-only.
    #[arg(long)]
    pub read_only: bool,
    /// Allow other users to access the mount.
    #[arg(long)]
    pub allow_other: bool,
    /// Default owner uid.
    #[arg(long)]
    pub uid: Option<u32>,
    /// Default owner gid.
    #[arg(long)]
    pub gid: Option<u32>,
    /// Default file permissions (octal).
    #[arg(long, value_parser = parse_mode)]
    pub file_mode: Option<u16>,
    /// Default directory permissions (octal).
    #[arg(long, value_parser = parse_mode)]
    pub dir_mode: Option<u16>,
    /// Mount only this sub-directory of the store.
    #[arg(long)]
    pub subdirectory: Option<String>,
    /// Store endpoint (emulators, S3-compatible services).
    #[arg(long)]
    pub endpoint: Option<String>,
    /// Cache directory.
    #[arg(long)]
    pub cache_dir: Option<PathBuf>,
    /// Seconds attributes are trusted.
    #[arg(long)]
    pub attr_timeout: Option<f64>,
    /// Serve a FUSE descriptor received on this Unix socket from `blobmount fuse-mounter`
    /// instead of mounting (MOUNTPOINT, if given, is only used for health probes).
    #[arg(long, value_name = "SOCKET")]
    pub fuse_fd_socket: Option<PathBuf>,
    /// Address of the health/metrics endpoint ("" turns it off).
    #[arg(long, value_name = "ADDR")]
    pub health_listen: Option<String>,
    /// Read path: direct, block-cache (default) or file-cache.
    #[arg(long, value_enum)]
    pub read_mode: Option<ReadMode>,
    /// Preload this directory (relative to the mount; "all" or "/" for everything) in the
    /// background after mounting: into the file cache in file-cache mode, metadata
    /// otherwise. Repeatable.
    #[arg(long, value_name = "DIR|all")]
    pub preload: Vec<String>,
    /// Log level or filter.
    #[arg(long)]
    pub log_level: Option<String>,
    /// Log format.
    #[arg(long, value_enum)]
    pub log_format: Option<LogFormat>,
    /// Options in mount(8) style, comma separated (ro, allow_other, uid=N, gid=N,
    /// file_mode=0644, dir_mode=0755, config=FILE, subdirectory=P, endpoint=URL, cache_dir=D,
    /// read_mode=M, preload=DIR).
    #[arg(short = 'o', value_delimiter = ',')]
    pub options: Vec<String>,
    /// `-o rw`: overrides `read-only: true` from the file or environment.
    #[arg(skip)]
    pub read_write: bool,
}

impl MountArgs {
    /// Fold `-o` options into the typed flags (idempotent: the options are consumed).
    pub fn absorb_options(&mut self) -> Result<(), String> {
        for o in std::mem::take(&mut self.options) {
            let (k, v) = o
                .split_once('=')
                .map(|(k, v)| (k, Some(v)))
                .unwrap_or((o.as_str(), None));
            let need =
                |v: Option<&str>| v.map(str::to_string).ok_or(format!("-o {k} needs a value"));
            match k {
                "ro" => {
                    self.read_only = true;
                    self.read_write = false;
                }
                "rw" => {
                    self.read_only = false;
                    self.read_write = true;
                }
                "allow_other" => self.allow_other = true,
                "foreground" => self.foreground = true,
                "uid" => {
                    self.uid = Some(
                        need(v)?
                            .parse()
                            .map_err(|_| format!("-o uid: not a number: {o}"))?,
                    )
                }
                "gid" => {
                    self.gid = Some(
                        need(v)?
                            .parse()
                            .map_err(|_| format!("-o gid: not a number: {o}"))?,
                    )
                }
                "file_mode" => self.file_mode = Some(parse_mode(&need(v)?)?),
                "dir_mode" => self.dir_mode = Some(parse_mode(&need(v)?)?),
                "config" => self.config = Some(need(v)?.into()),
                "subdirectory" => self.subdirectory = Some(need(v)?),
                "endpoint" => self.endpoint = Some(need(v)?),
                "cache_dir" => self.cache_dir = Some(need(v)?.into()),
                "read_mode" => {
                    let v = need(v)?;
                    self.read_mode = Some(
                        <ReadMode as clap::ValueEnum>::from_str(&v, false).map_err(|_| {
                            format!("-o read_mode: expected direct, block-cache or file-cache, got {v:?}")
                        })?,
                    )
                }
                "preload" => self.preload.push(need(v)?),
                // Accepted for fstab compatibility; the kernel or mount(8) handles them.
                "defaults" | "auto" | "noauto" | "user" | "nouser" | "_netdev" | "nofail"
                | "dev" | "nodev" | "suid" | "nosuid" | "exec" | "noexec" => {}
                other => return Err(format!("unknown mount option -o {other}")),
            }
        }
        Ok(())
    }

    /// Apply the flags over a loaded config.
    pub fn apply(mut self, cfg: &mut Config) -> Result<(), String> {
        self.absorb_options()?;
        if let Some(u) = self.store_url {
            cfg.store.url = Some(u);
        }
        if let Some(m) = self.mountpoint {
            cfg.mount.mountpoint = Some(m);
        }
        cfg.mount.foreground |= self.foreground;
        if self.read_write {
            cfg.mount.read_only = false;
        }
        cfg.mount.read_only |= self.read_only;
        cfg.mount.allow_other |= self.allow_other;
        if self.uid.is_some() {
            cfg.mount.uid = self.uid;
        }
        if self.gid.is_some() {
            cfg.mount.gid = self.gid;
        }
        if let Some(m) = self.file_mode {
            cfg.mount.file_mode = m;
        }
        if let Some(m) = self.dir_mode {
            cfg.mount.dir_mode = m;
        }
        if self.subdirectory.is_some() {
            cfg.mount.subdirectory = self.subdirectory;
        }
        if self.endpoint.is_some() {
            cfg.store.endpoint = self.endpoint;
        }
        if self.cache_dir.is_some() {
            cfg.cache.dir = self.cache_dir;
        }
        if let Some(t) = self.attr_timeout {
            cfg.mount.attr_timeout_secs = t;
        }
        if let Some(m) = self.read_mode {
            cfg.read.mode = m;
        }
        if self.fuse_fd_socket.is_some() {
            cfg.mount.fuse_fd_socket = self.fuse_fd_socket;
        }
        if let Some(h) = self.health_listen {
            cfg.health.listen = h;
        }
        if !self.preload.is_empty() {
            cfg.read.preload = self.preload;
        }
        if let Some(l) = self.log_level {
            cfg.logging.level = l;
        }
        if let Some(f) = self.log_format {
            cfg.logging.format = f;
        }
        Ok(())
    }
}
