//! Command line: `mount`, `mount list`, `unmount`, `config validate|schema`, `plugin check|run`,
//! `version`.
//!
//! Exit codes: 0 success, 1 runtime failure, 2 bad usage or configuration, 3 the store
//! refused the credentials, 4 the store is unreachable, 5 the kernel mount failed.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use crate::config::{Config, LogFormat, ReadMode, parse_mode};
use crate::mount;

pub const EXIT_RUNTIME: u8 = 1;
pub const EXIT_CONFIG: u8 = 2;
pub const EXIT_AUTH: u8 = 3;
pub const EXIT_UNREACHABLE: u8 = 4;
pub const EXIT_MOUNT: u8 = 5;

#[derive(Parser, Debug)]
#[command(
    name = "blobmount",
    version,
    about = "Mount cloud object storage (Azure Blob, S3, GCS) as a Linux directory"
)]
pub struct Cli {
    #[command(subcommand)]
    pub cmd: Cmd,
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
    /// Mount a store: `blobmount mount az://account/container /mnt/data`.
    #[command(args_conflicts_with_subcommands = true, subcommand_negates_reqs = true)]
    Mount {
        #[command(subcommand)]
        sub: Option<MountSub>,
        #[command(flatten)]
        args: Box<MountArgs>,
    },
    /// Unmount a blobmount mount point.
    Unmount {
        mountpoint: PathBuf,
        /// Detach now even if busy (the mount goes away when the last file is closed).
        #[arg(long, short = 'z')]
        lazy: bool,
    },
    /// Read every file under DIR (inside a blobmount mount) in parallel, filling the
    /// mount's cache, with progress on a terminal. Exit 1 if some file could not be read.
    Preload {
        dir: PathBuf,
        /// Files read at once.
        #[arg(long, short = 'j', default_value_t = 8)]
        jobs: usize,
    },
    /// Show how running mounts are doing (all of them, or the one at MOUNTPOINT).
    Status {
        mountpoint: Option<PathBuf>,
        /// Print the daemon's JSON instead of a summary.
        #[arg(long)]
        json: bool,
        /// Seconds to wait for each daemon.
        #[arg(long, default_value_t = 5.0)]
        timeout: f64,
    },
    /// Exit 0 if the mount at MOUNTPOINT (or the only mount) is ready: FUSE answering and the
    /// store reachable; 1 if not, 2 if no such mount is known. For exec probes.
    Health {
        mountpoint: Option<PathBuf>,
        /// Only check that the daemon and its FUSE loop answer (liveness), not the store.
        #[arg(long)]
        live: bool,
        /// Seconds before giving up (a hung FUSE call must not hang the probe).
        #[arg(long, default_value_t = 5.0)]
        timeout: f64,
    },
    /// Privileged helper for unprivileged daemons: mount /dev/fuse on MOUNTPOINT, hand the
    /// descriptor to the daemon started with `--fuse-fd-socket SOCKET`, detach on SIGTERM.
    FuseMounter {
        mountpoint: PathBuf,
        /// Unix socket the daemon connects to.
        #[arg(long)]
        socket: PathBuf,
        /// Owner the kernel checks permissions for without allow_other (default: 0).
        #[arg(long, default_value_t = 0)]
        uid: u32,
        #[arg(long, default_value_t = 0)]
        gid: u32,
        /// Let every user access the mount (for an app container running as another user).
        #[arg(long)]
        allow_other: bool,
        #[arg(long)]
        read_only: bool,
    },
    /// Inspect configuration.
    Config {
        #[command(subcommand)]
        sub: ConfigSub,
    },
    /// Try a WASM policy plugin without mounting (see docs/plugins.md).
    Plugin {
        #[command(subcommand)]
        sub: crate::plugin_cli::PluginSub,
    },
    /// Print the version.
    Version,
}

#[derive(Subcommand, Debug)]
pub enum MountSub {
    /// List active blobmount mounts.
    List,
}

#[derive(Subcommand, Debug)]
pub enum ConfigSub {
    /// Check a config file (plus BLOBMOUNT_* environment overrides) and explain any error.
    Validate { file: Option<PathBuf> },
    /// Print the JSON Schema of the config file.
    Schema,
}

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

fn secs(s: f64) -> std::time::Duration {
    std::time::Duration::from_secs_f64(s.clamp(0.1, 3600.0))
}

fn fail(code: u8, msg: impl std::fmt::Display) -> ExitCode {
    eprintln!("blobmount: {msg}");
    ExitCode::from(code)
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Version => {
            println!("blobmount {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Cmd::Config {
            sub: ConfigSub::Schema,
        } => {
            println!(
                "{}",
                serde_json::to_string_pretty(&Config::schema()).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Cmd::Config {
            sub: ConfigSub::Validate { file },
        } => {
            let file = file.or_else(|| std::env::var_os("BLOBMOUNT_CONFIG").map(PathBuf::from));
            match Config::load(file.as_deref()).and_then(|c| c.validate().map(|_| c)) {
                Ok(c) => {
                    println!(
                        "ok: store {} , mountpoint {}",
                        c.store.url.as_deref().unwrap_or("(not set)"),
                        c.mount
                            .mountpoint
                            .as_ref()
                            .map(|p| p.display().to_string())
                            .unwrap_or("(not set)".into())
                    );
                    ExitCode::SUCCESS
                }
                Err(e) => fail(EXIT_CONFIG, e),
            }
        }
        Cmd::Mount {
            sub: Some(MountSub::List),
            ..
        } => match mount::list() {
            Ok(mounts) => {
                if mounts.is_empty() {
                    println!("no blobmount mounts");
                }
                for (src, dir) in mounts {
                    println!("{src} on {dir}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(EXIT_RUNTIME, e),
        },
        Cmd::Mount {
            sub: None,
            mut args,
        } => {
            // `-o config=FILE` must be known before the file is loaded.
            if let Err(e) = args.absorb_options() {
                return fail(EXIT_CONFIG, e);
            }
            let config_file = args.config.clone();
            let mut cfg = match Config::load(config_file.as_deref()) {
                Ok(c) => c,
                Err(e) => return fail(EXIT_CONFIG, e),
            };
            let daemon_args = (*args).clone();
            if let Err(e) = args.apply(&mut cfg) {
                return fail(EXIT_CONFIG, e);
            }
            if let Err(e) = cfg.validate() {
                return fail(EXIT_CONFIG, e);
            }
            if cfg.store.url.is_none() {
                return fail(
                    EXIT_CONFIG,
                    "no store URL (give it as the first argument or store.url in the config)",
                );
            }
            if cfg.mount.mountpoint.is_none() && cfg.mount.fuse_fd_socket.is_none() {
                return fail(
                    EXIT_CONFIG,
                    "no mount point (give it as the second argument or mount.mountpoint)",
                );
            }
            if cfg.mount.foreground || std::env::var_os(mount::READY_ENV).is_some() {
                mount::run(cfg)
            } else {
                mount::daemonize(&daemon_args)
            }
        }
        Cmd::Preload { dir, jobs } => {
            if let Err(e) = crate::logging::init(&crate::config::LoggingConfig::default()) {
                return fail(EXIT_CONFIG, e);
            }
            match crate::preload::through_mount(&dir, jobs) {
                Ok(0) => ExitCode::SUCCESS,
                Ok(n) => fail(
                    EXIT_RUNTIME,
                    format!("{n} files or directories could not be read"),
                ),
                Err(e) => fail(EXIT_RUNTIME, format!("preload {}: {e}", dir.display())),
            }
        }
        Cmd::Status {
            mountpoint,
            json,
            timeout,
        } => crate::status::status(mountpoint.as_deref(), json, secs(timeout)),
        Cmd::Health {
            mountpoint,
            live,
            timeout,
        } => crate::status::health(mountpoint.as_deref(), live, secs(timeout)),
        Cmd::FuseMounter {
            mountpoint,
            socket,
            uid,
            gid,
            allow_other,
            read_only,
        } => {
            if let Err(e) = crate::logging::init(&crate::config::LoggingConfig::default()) {
                return fail(EXIT_CONFIG, e);
            }
            match crate::fdpass::mounter(&crate::fdpass::MountRequest {
                mountpoint: &mountpoint,
                socket: &socket,
                uid,
                gid,
                allow_other,
                read_only,
            }) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => fail(EXIT_MOUNT, e),
            }
        }
        Cmd::Plugin { sub } => crate::plugin_cli::main(sub),
        Cmd::Unmount { mountpoint, lazy } => match mount::unmount(&mountpoint, lazy) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(EXIT_RUNTIME, e),
        },
    }
}
