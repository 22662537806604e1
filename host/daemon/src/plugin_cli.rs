//! `blobmount plugin check|run|test`: try a policy plugin without mounting anything.
//!
//! Kept in its own module so the CLI's main file only gains one subcommand; the work is
//! done by `blobmount_policy::tool`, which loads the plugin exactly as a mount would
//! (`test`'s fixture handling is in `plugin_test`). Without `--hook`, the hook is the one
//! whose interface the component exports.
//! Exit codes: 0 ok, 2 the plugin (or the input) is unusable, 1 the call itself failed.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use blobmount_policy::Hook;
use blobmount_policy::tool::{self, ToolError};
use clap::Subcommand;

use crate::exit::{EXIT_CONFIG, EXIT_RUNTIME, fail};

#[derive(Subcommand, Debug)]
pub enum PluginSub {
    /// Load a plugin component for a hook and check it implements the hook's WIT world.
    Check {
        /// The component (`.wasm`).
        plugin: PathBuf,
        /// filter, name-conflict, consistency or acl (default: the one the component exports).
        #[arg(long, value_parser = parse_hook)]
        hook: Option<Hook>,
        /// Parameter passed to the plugin's init, KEY=VALUE (repeatable).
        #[arg(long = "param", short = 'p', value_parser = parse_param)]
        params: Vec<(String, String)>,
    },
    /// Call a plugin with JSON input (a file, or `-` for stdin) and print its JSON answer.
    Run {
        plugin: PathBuf,
        /// filter, name-conflict, consistency or acl (default: the one the component exports).
        #[arg(long, value_parser = parse_hook)]
        hook: Option<Hook>,
        /// JSON input (see docs/plugins.md for the shape per hook).
        #[arg(long)]
        input: PathBuf,
        #[arg(long = "param", short = 'p', value_parser = parse_param)]
        params: Vec<(String, String)>,
    },
    /// Run the table of cases in a fixtures file (YAML) against a plugin: PASS/FAIL per case.
    Test {
        plugin: PathBuf,
        /// The fixtures file (see "Test your plugin" in docs/plugins.md).
        fixtures: PathBuf,
    },
    /// Write a ready-to-build plugin project NAME/ (Rust, SDK included; see docs/plugins.md).
    New(crate::plugin_new::NewArgs),
}

/// The hook given with `--hook`, or the one the component exports.
fn hook_of(plugin: &Path, hook: Option<Hook>) -> Result<Hook, ToolError> {
    match hook {
        Some(h) => Ok(h),
        None => tool::detect_hook(plugin),
    }
}

fn parse_hook(s: &str) -> Result<Hook, String> {
    Hook::parse(s)
        .ok_or_else(|| format!("unknown hook {s:?} (filter, name-conflict, consistency, acl)"))
}

fn parse_param(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected KEY=VALUE, got {s:?}"))
}

pub fn main(sub: PluginSub) -> ExitCode {
    match sub {
        PluginSub::New(args) => crate::plugin_new::main(args),
        PluginSub::Check {
            plugin,
            hook,
            params,
        } => {
            let hook = match hook_of(&plugin, hook) {
                Ok(h) => h,
                Err(e) => return fail(EXIT_CONFIG, e),
            };
            match tool::check(&plugin, hook, &params) {
                Ok(msg) => {
                    println!("{msg}");
                    ExitCode::SUCCESS
                }
                Err(e) => fail(EXIT_CONFIG, e),
            }
        }
        PluginSub::Run {
            plugin,
            hook,
            input,
            params,
        } => {
            let text = if input.as_os_str() == "-" {
                let mut s = String::new();
                std::io::Read::read_to_string(&mut std::io::stdin(), &mut s).map(|_| s)
            } else {
                std::fs::read_to_string(&input)
            };
            let text = match text {
                Ok(t) => t,
                Err(e) => return fail(EXIT_CONFIG, format!("{}: {e}", input.display())),
            };
            let hook = match hook_of(&plugin, hook) {
                Ok(h) => h,
                Err(e) => return fail(EXIT_CONFIG, e),
            };
            let policy = match tool::load(&plugin, hook, &params) {
                Ok(p) => p,
                Err(e) => return fail(EXIT_CONFIG, e),
            };
            match tool::run(&policy, hook, &text) {
                Ok(v) => {
                    println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
                    ExitCode::SUCCESS
                }
                Err(
                    e @ (ToolError::Load(_)
                    | ToolError::Inspect { .. }
                    | ToolError::NoHook { .. }
                    | ToolError::ManyHooks { .. }
                    | ToolError::Input(_)),
                ) => fail(EXIT_CONFIG, e),
                Err(e @ ToolError::Call(_)) => fail(EXIT_RUNTIME, e),
            }
        }
        PluginSub::Test { plugin, fixtures } => crate::plugin_test::main(&plugin, &fixtures),
    }
}
