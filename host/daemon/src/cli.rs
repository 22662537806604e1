//! Command line: `mount`, `mount list`, `mount all`, `unmount [all]`, `config validate|schema|import`, `plugin new|check|run|test`,
//! `version`, `preload`, `refresh`, `status`, `health`, `fuse-mounter`.
//!
//! Why this module is only a dispatcher: each subcommand is one function here that hands the
//! work to the module owning it (`mount`, `config`, `status`, ...); exit codes live in
//! [`crate::exit`] and the mount flags in [`crate::args`].

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::args::MountArgs;
use crate::config::{Config, LoggingConfig};
use crate::exit::{EXIT_CONFIG, EXIT_MOUNT, EXIT_RUNTIME, fail};
use crate::mount;
use crate::policy::Source;

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
    /// Unmount a blobmount mount point (`all`: every blobmount mount, as BlobFuse2's
    /// `unmount all`).
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
    /// Make a running mount forget what it cached for each PATH (a file or directory inside
    /// it: attributes, listing, absent names, cached data, and the kernel's entries and
    /// pages), so the next access sees what another client changed. Open files with changes
    /// not uploaded yet are skipped with a message. Exit 2 for a path outside every mount.
    Refresh {
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Also everything the mount knows below a directory.
        #[arg(long, short = 'r')]
        recursive: bool,
        /// Seconds to wait for the daemon.
        #[arg(long, default_value_t = 10.0)]
        timeout: f64,
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
    /// Mount with a BlobFuse v1 command line and connection file:
    /// `blobmount mountv1 DIR --config-file=fuse_connection.cfg --tmp-path=/mnt/cache [-o
    /// allow_other] [v1 flags] [blobmount mount flags]`; with `--convert-config-only=true
    /// --output-file=F` only write the equivalent native config (docs/migrating-from-blobfuse2.md).
    #[command(disable_help_flag = true)]
    Mountv1 {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<std::ffi::OsString>,
    },
    /// Write a starting config (native YAML) for a read mode, as BlobFuse2's `gen-config`.
    GenConfig(crate::genconfig::GenConfig),
    /// Encrypt, decrypt, read or change an encrypted config file (BlobFuse2's `secure`).
    Secure {
        #[command(subcommand)]
        sub: crate::secure::SecureCmd,
    },
    /// Print the version.
    Version,
}

#[derive(Subcommand, Debug)]
pub enum MountSub {
    /// List active blobmount mounts.
    List,
    /// Mount every container of an Azure account at DIR/CONTAINER (BlobFuse2's `mount all`),
    /// each by its own background daemon; `mountall.container-allowlist` / `-denylist` in the
    /// file choose which.
    All {
        dir: PathBuf,
        /// The BlobFuse2 config file naming the account and its credentials.
        #[arg(long = "config-file")]
        config_file: PathBuf,
        /// Further `blobmount mount` flags, given to every mount.
        #[arg(last = true)]
        flags: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
pub enum ConfigSub {
    /// Check a config file (plus BLOBMOUNT_* environment overrides) and explain any error.
    Validate { file: Option<PathBuf> },
    /// Print the JSON Schema of the config file.
    Schema,
    /// Convert another tool's config file to blobmount's YAML on stdout (warnings for what
    /// is not carried over go there too, as comments, and to stderr).
    Import {
        /// The tool that wrote FILE.
        #[arg(long, value_parser = ["blobfuse2"])]
        from: String,
        file: PathBuf,
    },
}

pub fn main() -> ExitCode {
    // BlobFuse2's own mount flags, on a BlobFuse2 command line (`blobfuse2_flags.rs`).
    let args = match crate::blobfuse2_flags::take(std::env::args_os().collect()) {
        Ok(a) => a,
        Err(e) => return fail(EXIT_CONFIG, e),
    };
    match Cli::parse_from(args).cmd {
        Cmd::Version => {
            println!("blobmount {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Cmd::Config { sub } => config(sub),
        Cmd::Mount {
            sub: Some(MountSub::List),
            ..
        } => mount_list(),
        Cmd::Mount {
            sub:
                Some(MountSub::All {
                    dir,
                    config_file,
                    flags,
                }),
            ..
        } => crate::mountall::mount_all(&dir, &config_file, &flags),
        Cmd::Mount { sub: None, args } => mount(*args),
        Cmd::Preload { dir, jobs } => preload(&dir, jobs),
        Cmd::Refresh {
            paths,
            recursive,
            timeout,
        } => crate::refresh::command(&paths, recursive, secs(timeout)),
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
        } => fuse_mounter(&crate::fdpass::MountRequest {
            mountpoint: &mountpoint,
            socket: &socket,
            uid,
            gid,
            allow_other,
            read_only,
        }),
        Cmd::Plugin { sub } => crate::plugin_cli::main(sub),
        Cmd::Secure { sub } => crate::secure::main(sub),
        Cmd::Mountv1 { args } => crate::mountv1::main(args),
        Cmd::GenConfig(g) => crate::genconfig::main(&g),
        // BlobFuse2's `unmount all`, unless a mount point is really called `all`.
        Cmd::Unmount { mountpoint, lazy }
            if mountpoint.as_os_str() == "all"
                && !mount::list()
                    .unwrap_or_default()
                    .iter()
                    .any(|(_, mp)| Path::new(mp) == Path::new("all")) =>
        {
            crate::mountall::unmount_all(lazy)
        }
        Cmd::Unmount { mountpoint, lazy } => match mount::unmount(&mountpoint, lazy) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(EXIT_RUNTIME, e),
        },
    }
}

fn secs(s: f64) -> std::time::Duration {
    std::time::Duration::from_secs_f64(s.clamp(0.1, 3600.0))
}

/// `blobmount config schema|validate`.
fn config(sub: ConfigSub) -> ExitCode {
    match sub {
        ConfigSub::Schema => {
            println!(
                "{}",
                serde_json::to_string_pretty(&Config::schema()).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        ConfigSub::Import { from: _, file } => {
            let text = match std::fs::read_to_string(&file) {
                Ok(t) => t,
                Err(e) => return fail(EXIT_CONFIG, format!("{}: {e}", file.display())),
            };
            match crate::blobfuse2::import(&text).and_then(|i| {
                for w in &i.warnings {
                    eprintln!("blobmount: blobfuse2 config: {w}");
                }
                crate::blobfuse2::to_yaml(&i)
            }) {
                Ok(yaml) => {
                    print!("{yaml}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(EXIT_CONFIG, e),
            }
        }
        ConfigSub::Validate { file } => {
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
    }
}

/// `blobmount mount list`.
fn mount_list() -> ExitCode {
    match mount::list() {
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
    }
}

/// `blobmount mount STORE MOUNTPOINT`: the settings from file, environment and flags, then
/// the mount itself (in this process with `--foreground`, else in a background copy).
fn mount(args: MountArgs) -> ExitCode {
    let (cfg, source) = match mount_config(args) {
        Ok(c) => c,
        Err(e) => return fail(EXIT_CONFIG, e),
    };
    if cfg.mount.foreground || std::env::var_os(mount::READY_ENV).is_some() {
        mount::run(cfg, source)
    } else {
        mount::daemonize()
    }
}

/// The mount's settings and where they came from (for a reload), or the configuration
/// error to report (exit code 2).
fn mount_config(mut args: MountArgs) -> Result<(Config, Source), String> {
    // `-o config=FILE` must be known before the file is loaded.
    args.absorb_options()?;
    args.lone_positional_is_the_mountpoint();
    let cfg = match args.blobfuse2.clone() {
        Some(file) => blobfuse2_config(&args, &file)?,
        None => Config::load_with(args.config.as_deref(), &args.overrides())
            .map_err(|e| e.to_string())?,
    };
    cfg.validate().map_err(|e| e.to_string())?;
    if cfg.store.url.is_none() {
        return Err(
            "no store URL (give it as the first argument or store.url in the config)".into(),
        );
    }
    if cfg.mount.mountpoint.is_none() && cfg.mount.fuse_fd_socket.is_none() {
        return Err("no mount point (give it as the second argument or mount.mountpoint)".into());
    }
    Ok((cfg, Source::new(args.config.clone(), args.overrides())))
}

/// The settings of `blobmount mount DIR --config-file=BLOBFUSE2.yaml`: the file converted
/// (its warnings printed once each), then environment and flags over it as for a native
/// file.
fn blobfuse2_config(args: &MountArgs, file: &Path) -> Result<Config, String> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| format!("blobfuse2 config {}: {e}", file.display()))?;
    let text = match crate::blobfuse2_flags::secure() {
        Some(pass) => crate::secure::decrypt(&text, &pass.get()?)
            .map_err(|e| format!("blobfuse2 config {}: {e}", file.display()))?,
        None if crate::secure::is_sealed(&text) => {
            return Err(format!(
                "blobfuse2 config {} is encrypted: give --secure-config and the passphrase",
                file.display()
            ));
        }
        None => zeroize::Zeroizing::new(text),
    };
    let mut imported = crate::blobfuse2::import_with(&text, crate::blobfuse2_flags::given())?;
    crate::blobfuse2::syslog_fallback(&mut imported);
    for w in &imported.warnings {
        eprintln!("blobmount: blobfuse2 config: {w}");
    }
    Config::load_tree_with(imported.tree, &args.overrides()).map_err(|e| e.to_string())
}

/// `blobmount preload DIR`.
fn preload(dir: &Path, jobs: usize) -> ExitCode {
    if let Err(e) = crate::logging::init(&LoggingConfig::default()) {
        return fail(EXIT_CONFIG, e);
    }
    match crate::preload::through_mount(dir, jobs) {
        Ok(0) => ExitCode::SUCCESS,
        Ok(n) => fail(
            EXIT_RUNTIME,
            format!("{n} files or directories could not be read"),
        ),
        Err(e) => fail(EXIT_RUNTIME, format!("preload {}: {e}", dir.display())),
    }
}

/// `blobmount fuse-mounter`.
fn fuse_mounter(req: &crate::fdpass::MountRequest) -> ExitCode {
    if let Err(e) = crate::logging::init(&LoggingConfig::default()) {
        return fail(EXIT_CONFIG, e);
    }
    match crate::fdpass::mounter(req) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => fail(EXIT_MOUNT, e),
    }
}
