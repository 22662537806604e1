//! Integrity of uploads: the MD5 every write sends so the store can refuse bytes that were
//! damaged on the way, the one rule that recognises such a refusal in a store's reply, the
//! one repeat a refused upload gets, and the counters the metrics endpoint shows. Also the
//! kinds of checksum a store keeps for what it holds ([`ChecksumKind`], [`StoredSum`]) and
//! the running hash of each ([`RunningSum`]) that reads are verified with.
//!
//! Why a module of its own: every store module sends a checksum in its own header (Azure
//! `Content-MD5` and `x-ms-blob-content-md5`, S3 `Content-MD5`, GCS `md5Hash` /
//! `X-Goog-Hash`), but what a mismatch is, how often it is retried and how it is counted must
//! be the same everywhere. The digest is computed from the bytes as they are about to be sent
//! (in memory already), never by reading a file a second time.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use md5::Digest;

use crate::api::Result;
use crate::error::BackendError;

/// An MD5 digest.
pub type Md5 = [u8; 16];

/// Process-wide counts of checked uploads (for `/metrics`; tests compare differences).
#[derive(Debug, Default)]
pub struct UploadChecks {
    /// Requests that carried a checksum the store (or our comparison with its reply) accepted.
    pub verified: AtomicU64,
    /// Requests whose bytes the store refused as not matching their checksum (each one, the
    /// repeated one too).
    pub mismatches: AtomicU64,
}

/// The counters of this process.
pub static UPLOAD_CHECKS: UploadChecks = UploadChecks {
    verified: AtomicU64::new(0),
    mismatches: AtomicU64::new(0),
};

/// MD5 of `data`.
pub fn md5(data: &[u8]) -> Md5 {
    md5::Md5::digest(data).into()
}

/// MD5 of `data`, computed on the blocking pool when it is large (8 MiB take ~16 ms of CPU,
/// too long to hold a runtime worker that serves FUSE requests).
pub async fn md5_async(data: &bytes::Bytes) -> Result<Md5> {
    if data.len() < 1 << 20 {
        return Ok(md5(data));
    }
    let d = data.clone();
    tokio::task::spawn_blocking(move || md5(&d))
        .await
        .map_err(|e| BackendError::Other(format!("computing an MD5: {e}")))
}

/// An MD5 as the `Content-MD5` header spells it (base64).
pub fn md5_base64(d: &Md5) -> String {
    BASE64.encode(d)
}

/// An MD5 as S3 ETags spell it (lower-case hex).
pub fn md5_hex(d: &Md5) -> String {
    d.iter().map(|b| format!("{b:02x}")).collect()
}

/// The MD5 of a whole content fed piece by piece, in order, as it passes.
#[derive(Clone, Debug, Default)]
pub struct Running(md5::Md5);

impl Running {
    pub fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    pub fn finish(self) -> Md5 {
        self.0.finalize().into()
    }
}

/// A kind of checksum a store keeps for the content of an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ChecksumKind {
    /// MD5 (Azure `Content-MD5`, S3 single-part ETags, GCS `md5=`, memory).
    Md5,
    /// CRC32C (Castagnoli), as GCS keeps for every object (`x-goog-hash: crc32c=`); about a
    /// hundredth of MD5's CPU cost with SSE4.2.
    Crc32c,
}

impl ChecksumKind {
    /// The name log lines use.
    pub fn name(self) -> &'static str {
        match self {
            ChecksumKind::Md5 => "MD5",
            ChecksumKind::Crc32c => "CRC32C",
        }
    }
}

/// A checksum a store reports for an object's content.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoredSum {
    Md5(Md5),
    /// The CRC32C as a number (GCS sends the big-endian bytes in base64).
    Crc32c(u32),
}

impl StoredSum {
    pub fn kind(&self) -> ChecksumKind {
        match self {
            StoredSum::Md5(_) => ChecksumKind::Md5,
            StoredSum::Crc32c(_) => ChecksumKind::Crc32c,
        }
    }
}

impl std::fmt::Display for StoredSum {
    /// Lower-case hex (the CRC32C as 8 digits, big-endian like GCS's bytes).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StoredSum::Md5(d) => f.write_str(&md5_hex(d)),
            StoredSum::Crc32c(c) => write!(f, "{c:08x}"),
        }
    }
}

/// CRC32C of `data` (hardware-accelerated where the CPU has it).
pub fn crc32c(data: &[u8]) -> u32 {
    ::crc32c::crc32c(data)
}

/// A CRC32C as GCS spells it (`x-goog-hash: crc32c=`, JSON `crc32c`): base64 of the four
/// big-endian bytes; `None` if it is not that.
pub fn crc32c_from_base64(s: &str) -> Option<u32> {
    let b = BASE64.decode(s.trim()).ok()?;
    Some(u32::from_be_bytes(b.as_slice().try_into().ok()?))
}

/// Process-wide bytes hashed by [`RunningSum`] to verify reads, by kind (for `/metrics`:
/// where the CPU of read checks goes; tests compare differences).
#[derive(Debug, Default)]
pub struct ReadSums {
    pub md5_bytes: AtomicU64,
    pub crc32c_bytes: AtomicU64,
}

/// The counters of this process.
pub static READ_SUMS: ReadSums = ReadSums {
    md5_bytes: AtomicU64::new(0),
    crc32c_bytes: AtomicU64::new(0),
};

/// The checksum of one kind of a whole content fed piece by piece, in order (what reads
/// are verified with; the bytes are counted in [`READ_SUMS`]).
#[derive(Clone, Debug)]
pub enum RunningSum {
    Md5(Running),
    Crc32c(u32),
}

impl RunningSum {
    pub fn new(kind: ChecksumKind) -> Self {
        match kind {
            ChecksumKind::Md5 => RunningSum::Md5(Running::default()),
            ChecksumKind::Crc32c => RunningSum::Crc32c(0),
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        let n = data.len() as u64;
        match self {
            RunningSum::Md5(r) => {
                r.update(data);
                READ_SUMS.md5_bytes.fetch_add(n, Ordering::Relaxed);
            }
            RunningSum::Crc32c(c) => {
                *c = ::crc32c::crc32c_append(*c, data);
                READ_SUMS.crc32c_bytes.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    pub fn finish(self) -> StoredSum {
        match self {
            RunningSum::Md5(r) => StoredSum::Md5(r.finish()),
            RunningSum::Crc32c(c) => StoredSum::Crc32c(c),
        }
    }
}

/// Whether a store's error reply (status and body, lower-cased) says the bytes did not
/// match the checksum sent with them: Azure `Md5Mismatch` (Azurite: "Provided contentMD5
/// doesn't match"), S3 `BadDigest` / `InvalidDigest` / checksum errors, GCS "Provided MD5
/// hash … doesn't match calculated MD5 hash".
pub(crate) fn names_mismatch(status: u16, lower: &str) -> bool {
    status == 400
        && [
            "md5mismatch",
            "contentmd5 doesn't match",
            "baddigest",
            "invaliddigest",
            "xamzcontentchecksummismatch",
            "badchecksum",
            "invalidchecksum",
            "doesn't match calculated",
            "does not match calculated",
        ]
        .iter()
        .any(|c| lower.contains(c))
}

/// The store reported `got` for bytes whose MD5 we computed as `want`: a mismatch is
/// counted and returned as [`BackendError::ChecksumMismatch`].
pub(crate) fn compare(key: &str, what: &str, want: &Md5, got: Option<&Md5>) -> Result<()> {
    match got {
        Some(g) if g != want => {
            tracing::warn!(
                key,
                what,
                sent = md5_hex(want),
                stored = md5_hex(g),
                "the store holds other bytes than were sent"
            );
            Err(BackendError::ChecksumMismatch { key: key.into() })
        }
        _ => Ok(()),
    }
}

/// Run one upload request `send`; when the store refuses its bytes as not matching their
/// checksum (damaged on the way), run it once more (`send` builds the request again from
/// its source). A second refusal is the caller's error, logged here.
pub(crate) async fn once_more<T, F, Fut>(key: &str, what: &str, send: F) -> Result<T>
where
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    match note(key, what, send().await) {
        Err(BackendError::ChecksumMismatch { .. }) => {
            tracing::warn!(
                key,
                what,
                "the store refused the upload's bytes as damaged; sending them once more"
            );
            let r = note(key, what, send().await);
            if let Err(BackendError::ChecksumMismatch { .. }) = &r {
                tracing::error!(
                    key,
                    what,
                    "the store refused the upload's bytes twice as damaged; the write fails"
                );
            }
            r
        }
        r => r,
    }
}

/// Count the outcome of one checked request.
pub(crate) fn note<T>(_key: &str, _what: &str, r: Result<T>) -> Result<T> {
    match &r {
        Ok(_) => UPLOAD_CHECKS.verified.fetch_add(1, Ordering::Relaxed),
        Err(BackendError::ChecksumMismatch { .. }) => {
            UPLOAD_CHECKS.mismatches.fetch_add(1, Ordering::Relaxed)
        }
        Err(_) => 0,
    };
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_and_their_spellings() {
        let d = md5(b"The quick brown fox jumps over the lazy dog");
        assert_eq!(md5_hex(&d), "9e107d9d372bb6826bd81d3542a419d6");
        assert_eq!(md5_base64(&d), "nhB9nTcrtoJr2B01QqQZ1g==");
        let mut r = Running::default();
        r.update(b"The quick brown fox ");
        r.update(b"jumps over the lazy dog");
        assert_eq!(r.finish(), d);
    }

    #[test]
    fn crc32c_running_and_spelled_like_gcs() {
        // GCS's documented example: CRC32C of "hello world" is yZRlqg== (0xc99465aa).
        assert_eq!(crc32c(b"hello world"), 0xc994_65aa);
        assert_eq!(crc32c_from_base64("yZRlqg=="), Some(0xc994_65aa));
        assert_eq!(crc32c_from_base64("yZRl"), None);
        let mut r = RunningSum::new(ChecksumKind::Crc32c);
        r.update(b"hello ");
        r.update(b"world");
        assert_eq!(r.finish(), StoredSum::Crc32c(0xc994_65aa));
        assert_eq!(StoredSum::Crc32c(0xc994_65aa).to_string(), "c99465aa");
        let mut m = RunningSum::new(ChecksumKind::Md5);
        m.update(b"hello world");
        assert_eq!(m.finish(), StoredSum::Md5(md5(b"hello world")));
    }

    /// Not a test: MD5 and CRC32C throughput of the read check's hasher on this machine
    /// (`cargo test --release -p blobmount-backend --lib md5_throughput -- --ignored
    /// --nocapture`).
    #[test]
    #[ignore]
    fn md5_throughput() {
        // CPU time of this thread: the machine may be busy with other work.
        fn cpu() -> f64 {
            let mut t = libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            };
            // SAFETY: `t` is a valid timespec for the call to fill.
            unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
            t.tv_sec as f64 + t.tv_nsec as f64 / 1e9
        }
        // Random-ish bytes, fed in 128 KiB reads as the read check feeds them.
        let data: Vec<u8> = (0..256u32 << 20)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let gib = data.len() as f64 / f64::from(1u32 << 30);
        for kind in [ChecksumKind::Md5, ChecksumKind::Crc32c] {
            let (t, c) = (std::time::Instant::now(), cpu());
            let mut r = RunningSum::new(kind);
            for piece in data.chunks(128 << 10) {
                r.update(piece);
            }
            let d = r.finish();
            let (s, cs) = (t.elapsed().as_secs_f64(), cpu() - c);
            println!(
                "{} of 256 MiB: wall {s:.3} s, CPU {cs:.3} s, {:.3} ns/byte, {:.2} s of CPU per GiB, {:.0} MB/s ({d})",
                kind.name(),
                cs * 1e9 / data.len() as f64,
                cs / gib,
                data.len() as f64 / cs / 1e6,
            );
        }
    }

    #[test]
    fn refusals_are_recognised() {
        assert!(names_mismatch(
            400,
            "<code>invalidoperation</code><message>provided contentmd5 doesn't match."
        ));
        assert!(names_mismatch(400, "<code>md5mismatch</code>"));
        assert!(names_mismatch(400, "<code>baddigest</code>"));
        assert!(!names_mismatch(500, "<code>baddigest</code>"));
        assert!(!names_mismatch(400, "<code>invalidargument</code>"));
    }

    #[tokio::test]
    async fn a_refusal_is_sent_once_more_and_no_more() {
        let calls = AtomicU64::new(0);
        let r: Result<()> = once_more("k", "PUT", || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(BackendError::ChecksumMismatch { key: "k".into() }) }
        })
        .await;
        assert!(matches!(r, Err(BackendError::ChecksumMismatch { .. })));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        let calls = AtomicU64::new(0);
        let r = once_more("k", "PUT", || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    Err(BackendError::ChecksumMismatch { key: "k".into() })
                } else {
                    Ok(7)
                }
            }
        })
        .await;
        assert_eq!(r, Ok(7));
        let calls = AtomicU64::new(0);
        let r: Result<()> = once_more("k", "PUT", || {
            calls.fetch_add(1, Ordering::SeqCst);
            async { Err(BackendError::Other("no".into())) }
        })
        .await;
        assert!(r.is_err());
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
