//! Where formatted log lines go, and what every line goes through on its way: secrets
//! redacted (SAS signatures and the like in URLs a library logged), and in the text format
//! control characters escaped, so that an object name such as `a\nFAKE LOG LINE` cannot
//! forge a log line or move the terminal's cursor.
//!
//! Why at the writer: `tracing_subscriber`'s formatter hands its writer one whole event at
//! a time (see [`Lines`]), so this is the one place every line passes, whoever logged it
//! and whichever field carried the bytes. JSON lines need no escaping (serde escapes), but
//! are redacted the same way.
//!
//! Sinks: standard error, the log file ([`LogFile`]: rotation, reopen), or a Unix datagram
//! socket speaking syslog (`/dev/log`, RFC 3164 framing as glibc's `syslog(3)` sends it) or
//! the systemd journal's native protocol (`/run/systemd/journal/socket`). Both protocols
//! are a few lines of framing over `UnixDatagram`; a crate for them would bring its own
//! subscriber layer that bypasses the escaping here and could not be pointed at another
//! socket (containers, tests).

use std::io::{self, Write};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

use crate::logfile::LogFile;

/// The default syslog socket.
pub const SYSLOG_SOCKET: &str = "/dev/log";
/// The default journald socket.
pub const JOURNALD_SOCKET: &str = "/run/systemd/journal/socket";
/// Longest message sent in one datagram (the journal and syslog daemons drop or cut
/// longer ones anyway); cut at a character boundary.
const MAX_DATAGRAM_MESSAGE: usize = 32 * 1024;
/// `SYSLOG_IDENTIFIER` / syslog tag.
const IDENT: &str = "blobmount";

/// Which datagram protocol a socket sink speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Proto {
    Syslog,
    Journald,
}

/// A syslog or journald socket; sent to by path each time, so the new socket of a
/// restarted syslog daemon is found without reconnecting.
#[derive(Debug)]
pub struct Datagram {
    socket: UnixDatagram,
    path: PathBuf,
    proto: Proto,
}

impl Datagram {
    /// An unbound datagram socket that sends to `path`, which must be a socket now: a
    /// wrong path is a configuration error at start, not a silent loss of every line.
    pub fn open(path: &Path, proto: Proto) -> io::Result<Datagram> {
        use std::os::unix::fs::FileTypeExt;
        if !std::fs::metadata(path)?.file_type().is_socket() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "not a socket"));
        }
        let socket = UnixDatagram::unbound()?;
        // A syslog daemon that does not keep up must not stall file-system requests: a
        // line that finds its queue full is dropped instead of waited for.
        socket.set_nonblocking(true)?;
        Ok(Datagram {
            socket,
            path: path.to_path_buf(),
            proto,
        })
    }

    fn send(&self, level: Level, msg: &str) -> io::Result<()> {
        let msg = cut(msg, MAX_DATAGRAM_MESSAGE);
        let packet = match self.proto {
            Proto::Syslog => syslog_packet(level, msg),
            Proto::Journald => journald_packet(level, msg),
        };
        self.socket.send_to(&packet, &self.path).map(|_| ())
    }
}

/// `msg` cut to at most `max` bytes at a character boundary.
fn cut(msg: &str, max: usize) -> &str {
    if msg.len() <= max {
        return msg;
    }
    let mut end = max;
    while !msg.is_char_boundary(end) {
        end -= 1;
    }
    &msg[..end]
}

/// syslog(3) severity of a tracing level.
fn severity(level: Level) -> u8 {
    match level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// `<PRI>blobmount[PID]: MSG` with facility `daemon` (3); the receiving daemon adds the
/// time and host.
pub fn syslog_packet(level: Level, msg: &str) -> Vec<u8> {
    let pri = 3 * 8 + severity(level);
    format!("<{pri}>{IDENT}[{}]: {msg}", std::process::id()).into_bytes()
}

/// The journal's native datagram: `FIELD=value` lines, `MESSAGE` in the length-prefixed
/// form (which allows any bytes in the value).
pub fn journald_packet(level: Level, msg: &str) -> Vec<u8> {
    let mut p = format!(
        "PRIORITY={}\nSYSLOG_IDENTIFIER={IDENT}\nSYSLOG_PID={}\n",
        severity(level),
        std::process::id()
    )
    .into_bytes();
    p.extend_from_slice(b"MESSAGE\n");
    p.extend_from_slice(&(msg.len() as u64).to_le_bytes());
    p.extend_from_slice(msg.as_bytes());
    p.push(b'\n');
    p
}

/// Where lines go.
#[derive(Debug)]
pub enum Sink {
    Stderr,
    File(Arc<LogFile>),
    Socket(Datagram),
}

impl Sink {
    /// Emit one finished line (without its newline).
    fn emit(&self, level: Level, line: &str) -> io::Result<()> {
        match self {
            Sink::Stderr => {
                let mut e = io::stderr().lock();
                e.write_all(line.as_bytes())?;
                e.write_all(b"\n")
            }
            Sink::File(f) => {
                let mut l = Vec::with_capacity(line.len() + 1);
                l.extend_from_slice(line.as_bytes());
                l.push(b'\n');
                f.write_line(&l)
            }
            Sink::Socket(d) => d.send(level, line),
        }
    }
}

/// Which control characters a line gets escaped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Escape {
    /// None (JSON: serde escapes them).
    None,
    /// Every one (text).
    All,
    /// Every one but ESC (text on a colour terminal, where the formatter writes colour
    /// codes itself).
    KeepEsc,
}

/// The formatter's writer factory: one [`Line`] per event, finished when it is dropped.
#[derive(Clone, Debug)]
pub struct Lines {
    sink: Arc<Sink>,
    escape: Escape,
}

impl Lines {
    pub fn new(sink: Arc<Sink>, escape: Escape) -> Lines {
        Lines { sink, escape }
    }
}

impl<'a> MakeWriter<'a> for Lines {
    type Writer = Line;

    fn make_writer(&'a self) -> Line {
        Line {
            lines: self.clone(),
            level: Level::INFO,
            buf: Vec::new(),
        }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Line {
        Line {
            lines: self.clone(),
            level: *meta.level(),
            buf: Vec::new(),
        }
    }
}

/// One event's bytes as the formatter writes them; sent on drop, after [`finish`].
pub struct Line {
    lines: Lines,
    level: Level,
    buf: Vec<u8>,
}

impl Write for Line {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Line {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let line = finish(&self.buf, self.lines.escape);
        // A log line that cannot be written has nowhere else to go.
        let _ = self.lines.sink.emit(self.level, &line);
    }
}

/// One formatted event as it may be written: the trailing newline removed, secrets
/// redacted, and control characters (as `escape` says) written as escapes: `\n`, `\r`,
/// `\t`, `\e` for ESC, else `\xHH` (C1 controls `\u{HH}`).
pub fn finish(buf: &[u8], escape: Escape) -> String {
    let text = String::from_utf8_lossy(buf);
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let text = blobmount_backend::error::redact(text);
    if escape == Escape::None {
        return text;
    }
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\x1b' if escape == Escape::KeepEsc => out.push(c),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\x1b' => out.push_str("\\e"),
            c if (c as u32) < 0x20 || c == '\x7f' => out.push_str(&format!("\\x{:02x}", c as u32)),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped_and_secrets_redacted() {
        let s = finish(b"a\nFAKE LOG LINE\r\x1b[2J\x07\t\xc2\x85 ok\n", Escape::All);
        assert_eq!(s, "a\\nFAKE LOG LINE\\r\\e[2J\\x07\\t\\u{85} ok");
        let s = finish(b"a\nB\x1b[1m\n", Escape::KeepEsc);
        assert_eq!(s, "a\\nB\x1b[1m");
        let s = finish(b"GET http://h/c?sv=1&sig=SECRET x\n", Escape::None);
        assert!(!s.contains("SECRET"), "{s}");
        assert_eq!(
            finish(b"{\"a\":\"b\\nc\"}\n", Escape::None),
            "{\"a\":\"b\\nc\"}"
        );
    }

    #[test]
    fn datagram_framing() {
        let p = syslog_packet(Level::WARN, "hi");
        assert_eq!(
            String::from_utf8(p).unwrap(),
            format!("<28>blobmount[{}]: hi", std::process::id())
        );
        let p = journald_packet(Level::ERROR, "a\nb");
        let text = String::from_utf8_lossy(&p);
        assert!(text.starts_with("PRIORITY=3\nSYSLOG_IDENTIFIER=blobmount\n"));
        assert!(p.ends_with(b"MESSAGE\n\x03\0\0\0\0\0\0\0a\nb\n"));
        assert_eq!(cut("aé", 2), "a");
    }
}
