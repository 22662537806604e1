//! `blobmount status` and `blobmount health`: ask running daemons (found through the
//! registry written at mount time) over their health endpoint, with a deadline.
//!
//! Why over HTTP and not through the mount: a hung FUSE loop must not hang the probe; the
//! daemon's endpoint answers even then, and says so.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use crate::exit::{EXIT_CONFIG, EXIT_RUNTIME};
use crate::health::{self, Registration, Status};

fn human(b: u64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

fn summary(s: &Status) -> String {
    let state = if s.ready {
        "ready".to_string()
    } else if s.healthy {
        format!("NOT READY: {}", s.problems.join("; "))
    } else {
        format!("UNHEALTHY: {}", s.problems.join("; "))
    };
    let mut out = format!(
        "{}  {}  pid {}  up {}s  {}\n  ops {} ({} failed), read {}, written {}, fetched from store {}\n  read mode {}, read-ahead memory {} of {}",
        s.mountpoint,
        s.store,
        s.pid,
        s.uptime_secs as u64,
        state,
        s.ops,
        s.op_errors,
        human(s.read_bytes),
        human(s.written_bytes),
        human(s.backend_read_bytes),
        s.read_mode,
        human(s.read_memory_bytes),
        human(s.read_memory_limit_bytes),
    );
    if let (Some(b), Some(l), Some(n)) = (
        s.file_cache_bytes,
        s.file_cache_limit_bytes,
        s.file_cache_objects,
    ) {
        out += &format!("\n  file cache {} of {} in {n} objects", human(b), human(l));
    }
    if s.upload_conflicts + s.upload_errors > 0 {
        out += &format!(
            "\n  uploads: {} conflicts, {} errors (data kept in the cache's conflicts/)",
            s.upload_conflicts, s.upload_errors
        );
    }
    for p in &s.plugins {
        out += &format!(
            "\n  plugin {}: {} calls ({:.2} ms mean, {} fuel), {} cache hits, {} failed, {} answered by the failure mode",
            p.hook, p.calls, p.mean_call_ms, p.fuel_used, p.cache_hits, p.failures, p.fallbacks
        );
    }
    if !s.breakers_open.is_empty() {
        out += &format!(
            "\n  circuit breaker open (plugin not called, failure mode answers): {}",
            s.breakers_open.join(", ")
        );
    }
    if let Some(p) = &s.preload {
        out += &format!(
            "\n  preload {}/{} files, {} of {}, {} failed{}",
            p.files_done,
            p.files_total,
            human(p.bytes_done),
            human(p.bytes_total),
            p.failed,
            if p.finished { " (done)" } else { "" }
        );
    }
    out
}

/// The registrations asked about: the one for `mp`, or all.
fn targets(mp: Option<&Path>) -> Result<Vec<Registration>, String> {
    match mp {
        Some(p) => health::registration_for(p).map(|r| vec![r]).ok_or_else(|| {
            format!(
                "no blobmount daemon is registered for {} (registry: {})",
                p.display(),
                health::registry_dir().display()
            )
        }),
        None => Ok(health::registrations()),
    }
}

pub fn status(mp: Option<&Path>, json: bool, timeout: Duration) -> ExitCode {
    let regs = match targets(mp) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("blobmount: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    if regs.is_empty() {
        println!("no blobmount mounts are running");
        return ExitCode::SUCCESS;
    }
    let mut bad = false;
    for r in regs {
        let answer = match (&r.health, health::alive(r.pid)) {
            (_, false) => Err(format!("daemon pid {} is not running (stale entry)", r.pid)),
            (None, true) => Err("the health endpoint is off (health.listen: \"\")".into()),
            (Some(a), true) => health::get(a, "/status", timeout).and_then(|(code, body)| {
                if code == 200 {
                    Ok(body)
                } else {
                    Err(format!("HTTP {code}: {}", body.trim()))
                }
            }),
        };
        match answer {
            Ok(body) if json => print!("{body}"),
            Ok(body) => match serde_json::from_str::<Status>(&body) {
                Ok(s) => {
                    bad |= !s.ready;
                    println!("{}", summary(&s));
                }
                Err(e) => {
                    bad = true;
                    println!("{}  unreadable status: {e}", r.mountpoint.display());
                }
            },
            Err(e) => {
                bad = true;
                println!("{}  {}  {e}", r.mountpoint.display(), r.store);
            }
        }
    }
    if bad {
        ExitCode::from(EXIT_RUNTIME)
    } else {
        ExitCode::SUCCESS
    }
}

pub fn health(mp: Option<&Path>, live: bool, timeout: Duration) -> ExitCode {
    let regs = match targets(mp) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("blobmount: {e}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let r = match regs.as_slice() {
        [r] => r,
        [] => {
            eprintln!("blobmount: no blobmount mounts are running");
            return ExitCode::from(EXIT_CONFIG);
        }
        _ => {
            eprintln!("blobmount: several mounts are running; name the mount point");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let Some(addr) = &r.health else {
        eprintln!(
            "blobmount: the health endpoint of {} is off",
            r.mountpoint.display()
        );
        return ExitCode::from(EXIT_CONFIG);
    };
    let path = if live { "/healthz" } else { "/readyz" };
    match health::get(addr, path, timeout) {
        Ok((200, _)) => {
            println!(
                "{}: {}",
                r.mountpoint.display(),
                if live { "live" } else { "ready" }
            );
            ExitCode::SUCCESS
        }
        Ok((code, body)) => {
            println!(
                "{}: not {} (HTTP {code}): {}",
                r.mountpoint.display(),
                if live { "live" } else { "ready" },
                body.trim()
            );
            ExitCode::from(EXIT_RUNTIME)
        }
        Err(e) => {
            println!("{}: {e}", r.mountpoint.display());
            ExitCode::from(EXIT_RUNTIME)
        }
    }
}
