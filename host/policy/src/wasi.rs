//! WASI preview 2 for plugins whose component imports it, with nothing granted.
//!
//! Why: componentize-py always imports WASI (and so do Rust `wasm32-wasip2` builds), even for
//! a pure filter, so a Python plugin cannot load on a host without it. WASI is linked only
//! for components that import a `wasi:` interface (checked at load), and its context grants
//! nothing that reaches outside the sandbox:
//!
//! - no preopened directories (every `wasi:filesystem` call finds no file system), no
//!   environment variables, no arguments, stdin closed;
//! - sockets: TCP, UDP and name lookup refused (`allow_tcp/udp/ip_name_lookup(false)`, and
//!   the address check denies every address);
//! - stdout and stderr are captured into the daemon's log, line by line, with the
//!   `plugin=<stem>` tag and the same per-instance line cap and per-line length cap as
//!   `host.log` (stdout at `info`, stderr at `warn`); at most [`MAX_OUTPUT_BYTES`] are kept
//!   between two drains;
//! - wall clock, monotonic clock and random numbers are allowed (they reach nothing; a
//!   filter that reads the clock is no longer pure, which is the author's problem, as it is
//!   with `now-secs`);
//! - sleeping is not: `monotonic-clock.subscribe-duration` and `subscribe-instant` trap,
//!   because a host-side wait is invisible to fuel and the epoch deadline, which only
//!   interrupt running WebAssembly.
//!
//! Fuel, the epoch deadline, the memory cap, `max-instances` and the breaker apply exactly as
//! for plugins without WASI.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use wasmtime::Engine;
use wasmtime::component::{Component, Linker, Resource, ResourceTable};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{DynPollable, OutputStream, Pollable, StreamResult};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::bindings::HostState;

/// Most bytes of stdout plus stderr kept from one call (or one instantiation); the rest is
/// dropped and counted.
pub(crate) const MAX_OUTPUT_BYTES: usize = 64 * 1024;

/// The monotonic-clock interface wasmtime-wasi 48 links (guests built against any 0.2.x
/// match it by semver).
const MONOTONIC_CLOCK: &str = "wasi:clocks/monotonic-clock@0.2.12";

/// Does `component` import any WASI interface?
pub(crate) fn imports_wasi(engine: &Engine, component: &Component) -> bool {
    component
        .component_type()
        .imports(engine)
        .any(|(n, _)| n.starts_with("wasi:"))
}

/// Link WASI p2 (synchronous) into `linker`, with sleeping replaced by a trap.
pub(crate) fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_sync(linker)?;
    linker.allow_shadowing(true);
    let mut clock = linker.instance(MONOTONIC_CLOCK)?;
    clock.func_wrap(
        "subscribe-duration",
        |_, (_,): (u64,)| -> wasmtime::Result<(Resource<DynPollable>,)> {
            Err(wasmtime::Error::msg(
                "plugins may not sleep (wasi:clocks/monotonic-clock.subscribe-duration)",
            ))
        },
    )?;
    clock.func_wrap(
        "subscribe-instant",
        |_, (_,): (u64,)| -> wasmtime::Result<(Resource<DynPollable>,)> {
            Err(wasmtime::Error::msg(
                "plugins may not sleep (wasi:clocks/monotonic-clock.subscribe-instant)",
            ))
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

/// The WASI state of one instance.
pub(crate) struct WasiParts {
    ctx: WasiCtx,
    table: ResourceTable,
    stdout: LogPipe,
    stderr: LogPipe,
}

impl WasiParts {
    /// A context that grants nothing (see the module doc).
    pub(crate) fn deny_all() -> WasiParts {
        let stdout = LogPipe::default();
        let stderr = LogPipe::default();
        let ctx = WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        WasiParts {
            ctx,
            table: ResourceTable::new(),
            stdout,
            stderr,
        }
    }

    /// What the guest wrote since the last drain: (level, line) pairs, stdout at `info` (2),
    /// stderr at `warn` (3), plus a notice when output was dropped.
    pub(crate) fn drain(&self) -> Vec<(u8, String)> {
        let mut out = Vec::new();
        for (pipe, level, name) in [(&self.stdout, 2, "stdout"), (&self.stderr, 3, "stderr")] {
            let (bytes, dropped) = pipe.take();
            let text = String::from_utf8_lossy(&bytes);
            out.extend(
                text.lines()
                    .filter(|l| !l.trim().is_empty())
                    .map(|l| (level, format!("{name}: {l}"))),
            );
            if dropped > 0 {
                out.push((3, format!("{name}: {dropped} more bytes dropped")));
            }
        }
        out
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        // Only components that import WASI are linked with it, and their instances get
        // their parts when created; a fresh deny-all context is the safe answer otherwise.
        let w = self
            .wasi
            .get_or_insert_with(|| Box::new(WasiParts::deny_all()));
        WasiCtxView {
            ctx: &mut w.ctx,
            table: &mut w.table,
        }
    }
}

/// An output stream that keeps what the guest writes, up to [`MAX_OUTPUT_BYTES`], for the
/// host to log. Writes never fail and never block: excess bytes are counted and dropped.
#[derive(Clone, Default)]
pub(crate) struct LogPipe(Arc<Mutex<Captured>>);

#[derive(Default)]
struct Captured {
    buf: Vec<u8>,
    dropped: usize,
}

impl LogPipe {
    fn push(&self, bytes: &[u8]) {
        let mut c = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let room = MAX_OUTPUT_BYTES.saturating_sub(c.buf.len());
        let keep = bytes.len().min(room);
        c.buf.extend_from_slice(&bytes[..keep]);
        c.dropped = c.dropped.saturating_add(bytes.len() - keep);
    }

    fn take(&self) -> (Vec<u8>, usize) {
        let mut c = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let dropped = std::mem::take(&mut c.dropped);
        (std::mem::take(&mut c.buf), dropped)
    }
}

impl IsTerminal for LogPipe {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogPipe {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for LogPipe {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }
    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(MAX_OUTPUT_BYTES)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LogPipe {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for LogPipe {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn captured_output_is_capped_and_drained_as_lines() {
        let w = WasiParts::deny_all();
        w.stdout.push(b"one\n\ntwo");
        w.stderr.push(&vec![b'x'; MAX_OUTPUT_BYTES + 10]);
        let lines = w.drain();
        assert_eq!(lines[0], (2, "stdout: one".to_string()));
        assert_eq!(lines[1], (2, "stdout: two".to_string()));
        assert_eq!(lines[2].0, 3);
        assert_eq!(lines[2].1.len(), "stderr: ".len() + MAX_OUTPUT_BYTES);
        assert_eq!(lines[3], (3, "stderr: 10 more bytes dropped".to_string()));
        assert!(w.drain().is_empty(), "a drain empties the pipes");
    }
}
