//! Detaching into the background: `blobmount mount` without `--foreground` starts a copy of
//! itself in a new session and returns once that copy has mounted (or failed), printing what
//! it reported.
//!
//! Why a handshake over a pipe instead of forking: the parent can only tell success from
//! failure once the child has mounted, and a fork of a process that may already hold threads
//! is unsafe; re-executing with [`READY_ENV`] set is simple and keeps the exit codes.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};

use crate::exit::{EXIT_RUNTIME, fail};

/// Set in the environment of the background child; it reports readiness on stdout.
pub const READY_ENV: &str = "BLOBMOUNT_DAEMON_CHILD";
const READY_LINE: &str = "BLOBMOUNT-READY";

/// Whether this process is the background child of a `blobmount mount`.
pub fn is_child() -> bool {
    std::env::var_os(READY_ENV).is_some()
}

/// Start a background copy of this command and return once it has mounted (or failed).
pub fn daemonize() -> ExitCode {
    let exe = match std::env::current_exe() {
        Ok(e) => e,
        Err(e) => return fail(EXIT_RUNTIME, format!("cannot find own executable: {e}")),
    };
    let mut cmd = Command::new(exe);
    cmd.args(std::env::args_os().skip(1))
        .env(READY_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    // SAFETY: setsid is async-signal-safe and only detaches the child from our session.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return fail(EXIT_RUNTIME, format!("cannot start background daemon: {e}")),
    };
    let Some(stdout) = child.stdout.take() else {
        return fail(EXIT_RUNTIME, "no pipe to daemon");
    };
    let mut line = String::new();
    let _ = BufReader::new(stdout).read_line(&mut line);
    if let Some(message) = line.trim_end().strip_prefix(READY_LINE) {
        eprintln!("blobmount: {}", message.trim());
        return ExitCode::SUCCESS;
    }
    match child.wait() {
        Ok(st) => ExitCode::from(st.code().unwrap_or(EXIT_RUNTIME as i32) as u8),
        Err(e) => fail(EXIT_RUNTIME, format!("background daemon: {e}")),
    }
}

/// Tell the foreground parent we are mounted (and what to print), then stop using the pipe,
/// and the stderr inherited from whoever started us: a caller reading our output to its end
/// (`blobmount mount ... 2>&1 | tail`, `$(...)`) would otherwise wait as long as the mount
/// lives. What still reaches stderr (a panic message) goes to the log file.
pub fn signal_ready(message: &str, log: Option<&Path>) {
    use std::os::fd::AsRawFd;
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{READY_LINE} {message}");
    let _ = out.flush();
    let open = |p: &Path| std::fs::OpenOptions::new().append(true).open(p);
    if let Ok(null) = open(Path::new("/dev/null")) {
        // SAFETY: both descriptors are valid; replacing stdout with /dev/null.
        unsafe { libc::dup2(null.as_raw_fd(), 1) };
    }
    if let Ok(f) = log.map_or_else(|| open(Path::new("/dev/null")), open) {
        // SAFETY: both descriptors are valid; replacing stderr.
        unsafe { libc::dup2(f.as_raw_fd(), 2) };
    }
}
