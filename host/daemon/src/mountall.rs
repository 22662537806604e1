//! BlobFuse2's `mount all` and `unmount all`: every container of an Azure account mounted
//! under one directory (`DIR/CONTAINER`, each by its own background daemon, as BlobFuse2
//! does), filtered by the config file's `mountall.container-allowlist` / `-denylist`; and
//! every blobmount mount of this machine unmounted.
//!
//! Why separate daemons rather than one mount of many containers: each container then has
//! its own cache, health endpoint and lifetime, exactly as if it were mounted by hand, and
//! one failing does not take the others down.

use std::path::Path;
use std::process::{Command, ExitCode, Stdio};

use crate::config::Config;
use crate::exit::{EXIT_CONFIG, EXIT_RUNTIME, fail};

/// `blobmount mount all DIR --config-file=F [FLAGS]`: list the account's containers and
/// mount each at `DIR/NAME` with the same file and flags. Exit 1 when any mount failed.
pub fn mount_all(dir: &Path, config_file: &Path, flags: &[String]) -> ExitCode {
    let (names, cache) = match containers(config_file) {
        Ok(n) => n,
        Err(e) => return fail(EXIT_CONFIG, e),
    };
    if names.is_empty() {
        return fail(
            EXIT_RUNTIME,
            "no container to mount (none in the account, or none left by the allow/deny lists)",
        );
    }
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return fail(EXIT_RUNTIME, format!("cannot find own executable: {e}")),
    };
    let mut failed = 0;
    for (url, name) in names {
        let mp = dir.join(&name);
        if let Err(e) = std::fs::create_dir_all(&mp) {
            eprintln!("blobmount: {}: {e}", mp.display());
            failed += 1;
            continue;
        }
        let mut cmd = Command::new(&exe);
        cmd.arg("mount")
            .arg(&url)
            .arg(&mp)
            .arg(format!("--config-file={}", config_file.display()));
        // One cache directory per container, below the file's (as BlobFuse2 does).
        if let Some(c) = &cache {
            cmd.arg("--cache-dir").arg(Path::new(c).join(&name));
        }
        let st = cmd.args(flags).stdin(Stdio::null()).status();
        match st {
            Ok(s) if s.success() => println!("mounted {url} on {}", mp.display()),
            Ok(s) => {
                eprintln!("blobmount: mounting {url} on {} failed ({s})", mp.display());
                failed += 1;
            }
            Err(e) => {
                eprintln!("blobmount: mounting {url}: {e}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        fail(
            EXIT_RUNTIME,
            format!("{failed} container(s) could not be mounted"),
        )
    } else {
        ExitCode::SUCCESS
    }
}

/// What `mount all` mounts: the store URL and name of each container (the account's
/// containers, the allowlist when given keeping only its names, the denylist removing its
/// names), and the cache directory the file names, if any.
type Plan = (Vec<(String, String)>, Option<String>);

fn containers(config_file: &Path) -> Result<Plan, String> {
    let text = std::fs::read_to_string(config_file)
        .map_err(|e| format!("blobfuse2 config {}: {e}", config_file.display()))?;
    let mut imported = crate::blobfuse2::import(&text)?;
    let url = imported.tree["store"]["url"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let account = url
        .strip_prefix("az://")
        .and_then(|r| r.split('/').next())
        .filter(|a| !a.is_empty())
        .ok_or("mount all: azstorage.account-name is missing")?
        .to_string();
    let cache = imported.tree["cache"]["dir"].as_str().map(str::to_string);
    // The account is what is listed; any container name opens it.
    imported.tree["store"]["url"] = format!("az://{account}/mount-all").into();
    let cfg = Config::load_tree_with(imported.tree, &[]).map_err(|e| e.to_string())?;
    let store_url = cfg.store.parsed_url().map_err(|e| e.to_string())?;
    blobmount_backend::install_crypto_provider();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let all = rt
        .block_on(blobmount_backend::azure::list_containers(
            &store_url, &cfg.store,
        ))
        .map_err(|e| format!("listing the containers of {account}: {e}"))?;
    let keep = |n: &String| {
        (imported.allow.is_empty() || imported.allow.contains(n)) && !imported.deny.contains(n)
    };
    let names = all
        .into_iter()
        .filter(keep)
        .map(|n| (format!("az://{account}/{n}"), n))
        .collect();
    Ok((names, cache))
}

/// `blobmount unmount all`: every blobmount mount of this machine; exit 1 when one could not
/// be unmounted (busy ones are named; `--lazy` detaches them).
pub fn unmount_all(lazy: bool) -> ExitCode {
    let mounts = match crate::mountpoint::list() {
        Ok(m) => m,
        Err(e) => return fail(EXIT_RUNTIME, e),
    };
    let mut failed = 0;
    for (src, mp) in mounts {
        match crate::mountpoint::unmount(Path::new(&mp), lazy) {
            Ok(()) => println!("unmounted {src} from {mp}"),
            Err(e) => {
                eprintln!("blobmount: {e}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        fail(
            EXIT_RUNTIME,
            format!("{failed} mount(s) could not be unmounted"),
        )
    } else {
        ExitCode::SUCCESS
    }
}
