//! `blobmount mountv1`: the command around [`crate::blobfuse_v1`]: read the v1 command
//! line, then either write the converted configuration (`--convert-config-only`) or mount
//! with it, blobmount's own `mount` flags (and the mount point) applied over it.
//!
//! Why apart from the conversion: the conversion is pure (tested key by key without a
//! mount); this is the part that touches files, the environment and the mount stages.

use crate::blobfuse_v1::{convert, parse_args};
use crate::blobfuse2::Imported;
use crate::secure::write_private;
use std::ffi::OsString;

/// The native YAML of a converted v1 configuration, the warnings as comments on top.
pub fn to_yaml(i: &Imported) -> Result<String, String> {
    let body = serde_saphyr::to_string(&i.tree).map_err(|e| e.to_string())?;
    let mut out = String::from(
        "# blobmount's native configuration, converted from a BlobFuse v1 configuration by\n\
         # `blobmount mountv1 --convert-config-only` (BlobFuse2's mountv1 writes a BlobFuse2 file\n\
         # instead). Mount it with `blobmount mount DIR --config FILE`.\n",
    );
    for w in &i.warnings {
        out.push_str(&format!("# warning: {w}\n"));
    }
    out.push_str(&body);
    Ok(out)
}

const USAGE: &str = "Usage: blobmount mountv1 DIR --config-file=fuse_connection.cfg [--tmp-path=DIR] [-o OPT,...] [v1 flags] [blobmount mount flags]
       blobmount mountv1 --config-file=F --convert-config-only=true [--output-file=config.yaml]
BlobFuse v1's connection file, environment variables and flags (docs/migrating-from-blobfuse2.md).";

/// `blobmount mountv1 ARGS`.
pub fn main(args: Vec<OsString>) -> std::process::ExitCode {
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return std::process::ExitCode::SUCCESS;
    }
    run(args).unwrap_or_else(|e| crate::exit::fail(crate::exit::EXIT_CONFIG, e))
}

fn run(args: Vec<OsString>) -> Result<std::process::ExitCode, String> {
    use crate::cli::{Cli, Cmd};
    use clap::Parser;
    let v1 = parse_args(args)?;
    let (convert_only, output, rest) = (v1.convert_only, v1.output_file.clone(), v1.rest.clone());
    let mut imported = convert(v1, &|k| std::env::var(k).ok())?;
    // Converted or mounted, the file says what a mount here does.
    crate::blobfuse2::syslog_fallback(&mut imported);
    if convert_only {
        let out = output.unwrap_or_else(|| "config.yaml".into());
        for w in &imported.warnings {
            eprintln!("blobmount: blobfuse v1 config: {w}");
        }
        write_private(&out, &to_yaml(&imported)?).map_err(|e| format!("--output-file {e}"))?;
        println!("wrote {}", out.display());
        return Ok(std::process::ExitCode::SUCCESS);
    }
    for w in &imported.warnings {
        eprintln!("blobmount: blobfuse v1 config: {w}");
    }
    if let Some(out) = &output {
        // BlobFuse2's mountv1 writes the converted file before mounting too.
        write_private(out, &to_yaml(&imported)?).map_err(|e| format!("--output-file {e}"))?;
    }
    // The mount point and blobmount's own flags.
    let mut argv: Vec<OsString> = vec!["blobmount".into(), "mount".into()];
    argv.extend(rest);
    let cli = Cli::try_parse_from(argv).map_err(|e| {
        let first = e.to_string();
        let first = first
            .lines()
            .next()
            .unwrap_or_default()
            .trim_start_matches("error: ");
        format!("mountv1: {first} (neither a BlobFuse v1 flag nor a `blobmount mount` one)")
    })?;
    let Cmd::Mount { sub: None, args } = cli.cmd else {
        return Err("mountv1: unexpected arguments".into());
    };
    let mut args = *args;
    args.absorb_options()?;
    args.lone_positional_is_the_mountpoint();
    let cfg = crate::config::Config::load_tree_with(imported.tree, &args.overrides())
        .map_err(|e| e.to_string())?;
    cfg.validate().map_err(|e| e.to_string())?;
    if cfg.mount.mountpoint.is_none() && cfg.mount.fuse_fd_socket.is_none() {
        return Err("mountv1: no mount point (give it as the first argument)".into());
    }
    Ok(
        if cfg.mount.foreground || std::env::var_os(crate::mount::READY_ENV).is_some() {
            let source = crate::policy::Source::new(None, args.overrides());
            crate::mount::run(cfg, source)
        } else {
            crate::mount::daemonize()
        },
    )
}
