//! Test harness: start emulators (Azurite, moto, fake-gcs-server) on loopback and stop
//! them by PID, create buckets, mount the real `blobmount` binary on a temp directory and
//! unmount it, and give tests an independent SDK client (object_store) to the same bucket.
//!
//! Emulator binaries come from `tests/scripts/install-deps.sh` (under
//! `$BLOBMOUNT_TEST_TOOLS`, default `/opt/blobmount-test`). Tests fail, not skip, when
//! they are missing: CI must run them.

pub mod http;
pub mod proxy;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::{ObjectStore, ObjectStoreExt};

pub const AZURITE_ACCOUNT: &str = "devstoreaccount1";
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Azure,
    S3,
    Gcs,
}

pub fn tools_dir() -> PathBuf {
    std::env::var_os("BLOBMOUNT_TEST_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/opt/blobmount-test"))
}

fn tool(name: &str) -> PathBuf {
    let p = tools_dir().join("bin").join(name);
    assert!(
        p.exists(),
        "{} not found: run tests/scripts/install-deps.sh first",
        p.display()
    );
    p
}

pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

fn wait_port(port: u16, child: &mut Child, what: &str) {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(60) {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(st)) = child.try_wait() {
            panic!("{what} exited during start-up: {st}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("{what} did not listen on 127.0.0.1:{port} within 60 s");
}

/// A running emulator; stopped by PID on drop.
pub struct Emulator {
    pub kind: Kind,
    pub port: u16,
    child: Option<Child>,
    /// The ADLS Gen2 endpoint in front of this Azurite ([`as_adls`]).
    pub dfs: Option<dfs::DfsEndpoint>,
    _dir: tempfile::TempDir,
}

thread_local! {
    static ADLS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Run `f` with every Azurite started by [`Emulator::start`] fronted by the DFS test
/// endpoint (`dfs/`), and mounts of it ([`MountSpec::for_emulator`]) made with a
/// hierarchical namespace through it: the same test body on ADLS Gen2.
pub fn as_adls<T>(f: impl FnOnce() -> T) -> T {
    ADLS.with(|a| a.set(true));
    let r = f();
    ADLS.with(|a| a.set(false));
    r
}

impl Emulator {
    pub fn start(kind: Kind) -> Emulator {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let mut cmd = match kind {
            Kind::Azure => {
                let mut c = Command::new(tool("azurite-blob"));
                c.args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
                    .args([
                        "--loose",
                        "--skipApiVersionCheck",
                        "--disableTelemetry",
                        "--silent",
                    ])
                    .arg("--location")
                    .arg(dir.path());
                c
            }
            Kind::S3 => {
                let mut c = Command::new(tool("moto_server"));
                c.args(["-H", "127.0.0.1", "-p", &port.to_string()]);
                c
            }
            Kind::Gcs => {
                let mut c = Command::new(tool("fake-gcs-server"));
                let host = format!("127.0.0.1:{port}");
                c.args([
                    "-scheme",
                    "http",
                    "-host",
                    "127.0.0.1",
                    "-port",
                    &port.to_string(),
                    "-backend",
                    "memory",
                ])
                .args([
                    "-public-host",
                    &host,
                    "-external-url",
                    &format!("http://{host}"),
                    "-log-level",
                    "error",
                ]);
                c
            }
        };
        cmd.current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting {kind:?} emulator: {e}"));
        wait_port(port, &mut child, &format!("{kind:?} emulator"));
        Emulator {
            kind,
            port,
            child: Some(child),
            dfs: (kind == Kind::Azure && ADLS.with(std::cell::Cell::get))
                .then(|| dfs::DfsEndpoint::start(port)),
            _dir: dir,
        }
    }

    pub fn endpoint(&self) -> String {
        self.endpoint_on(self.port)
    }

    /// The endpoint as seen through something listening on `port` (a proxy).
    pub fn endpoint_on(&self, port: u16) -> String {
        match self.kind {
            Kind::Azure => format!("http://127.0.0.1:{port}/{AZURITE_ACCOUNT}"),
            Kind::S3 | Kind::Gcs => format!("http://127.0.0.1:{port}"),
        }
    }

    /// Create a container/bucket with a unique name and return it.
    pub fn create_bucket(&self) -> String {
        let name = format!("bm{:08x}", rand::random::<u32>());
        let (status, body) = match self.kind {
            Kind::Azure => http::azure_create_container(self.port, &name),
            Kind::S3 => http::request(self.port, "PUT", &format!("/{name}"), &[], b""),
            Kind::Gcs => http::request(
                self.port,
                "POST",
                "/storage/v1/b?project=test",
                &[("Content-Type", "application/json")],
                format!("{{\"name\":\"{name}\"}}").as_bytes(),
            ),
        };
        assert!(
            (200..300).contains(&status),
            "creating bucket on {:?}: {status} {body}",
            self.kind
        );
        name
    }

    pub fn store_url(&self, bucket: &str) -> String {
        match self.kind {
            Kind::Azure => format!("az://{AZURITE_ACCOUNT}/{bucket}"),
            Kind::S3 => format!("s3://{bucket}"),
            Kind::Gcs => format!("gs://{bucket}"),
        }
    }

    /// Environment the daemon needs for this emulator (credentials).
    pub fn env(&self) -> Vec<(String, String)> {
        let v: Vec<(&str, &str)> = match self.kind {
            Kind::Azure => vec![("AZURE_STORAGE_ACCOUNT_KEY", AZURITE_KEY)],
            Kind::S3 => vec![
                ("AWS_ACCESS_KEY_ID", "testing"),
                ("AWS_SECRET_ACCESS_KEY", "testing"),
                ("AWS_REGION", "us-east-1"),
            ],
            Kind::Gcs => vec![("BLOBMOUNT_STORE__GCS__ANONYMOUS", "true")],
        };
        v.into_iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    /// blobmount's own backend for `bucket` (what the daemon would open), for tests of the
    /// storage seam against the real emulator.
    pub fn backend(&self, bucket: &str) -> Arc<dyn blobmount_backend::Backend> {
        blobmount_backend::install_crypto_provider();
        let mut cfg = serde_json::json!({
            "url": self.store_url(bucket),
            "endpoint": self.endpoint(),
        });
        match self.kind {
            Kind::Azure => cfg["azure"] = serde_json::json!({ "account-key": AZURITE_KEY }),
            Kind::S3 => {
                cfg["s3"] = serde_json::json!({
                    "access-key-id": "testing",
                    "secret-access-key": "testing",
                    "region": "us-east-1",
                })
            }
            Kind::Gcs => cfg["gcs"] = serde_json::json!({ "anonymous": true }),
        }
        let cfg: blobmount_backend::config::StoreConfig =
            serde_json::from_value(cfg).expect("a valid store config");
        block_on(blobmount_backend::open(&cfg)).expect("open the backend")
    }

    /// Write an object from outside the mount: the SDK on Azure/S3; the JSON API on GCS
    /// (fake-gcs-server has no XML-API upload, which is what the SDK would use).
    pub fn put_object(&self, bucket: &str, key: &str, data: &[u8]) {
        if self.kind == Kind::Gcs {
            let path = format!(
                "/upload/storage/v1/b/{bucket}/o?uploadType=media&name={}",
                blobmount_backend::gcs::encode_segment(key)
            );
            let (status, body) = http::request(self.port, "POST", &path, &[], data);
            assert_eq!(status, 200, "GCS upload of {key}: {body}");
            return;
        }
        let s = self.sdk(bucket);
        let p = object_store::path::Path::parse(key).expect("sdk key");
        block_on(async { s.put(&p, data.to_vec().into()).await.expect("sdk put") });
    }

    /// Write an object with a content type from outside the mount (as another tool
    /// would): the SDK on Azure/S3, the JSON API's media upload on GCS.
    pub fn put_object_typed(&self, bucket: &str, key: &str, data: &[u8], content_type: &str) {
        if self.kind == Kind::Gcs {
            let path = format!(
                "/upload/storage/v1/b/{bucket}/o?uploadType=media&name={}",
                blobmount_backend::gcs::encode_segment(key)
            );
            let h = [("Content-Type", content_type)];
            let (status, body) = http::request(self.port, "POST", &path, &h, data);
            assert_eq!(status, 200, "GCS upload of {key}: {body}");
            return;
        }
        let s = self.sdk(bucket);
        let p = object_store::path::Path::parse(key).expect("sdk key");
        let mut attrs = object_store::Attributes::new();
        attrs.insert(
            object_store::Attribute::ContentType,
            content_type.to_string().into(),
        );
        let opts = object_store::PutOptions {
            attributes: attrs,
            ..Default::default()
        };
        block_on(async {
            s.put_opts(&p, data.to_vec().into(), opts)
                .await
                .expect("sdk put")
        });
    }

    /// The content type the store holds for an object (read through the SDK, not a mount);
    /// `None` when it reports none.
    pub fn content_type(&self, bucket: &str, key: &str) -> Option<String> {
        let s = self.sdk(bucket);
        let p = object_store::path::Path::parse(key).expect("sdk key");
        block_on(async {
            let r = s.get(&p).await.expect("sdk get");
            r.attributes
                .get(&object_store::Attribute::ContentType)
                .map(|v| v.as_ref().to_string())
        })
    }

    /// Write an object with any key the store accepts (`a//b`, `x/./y`, `dir/` markers),
    /// over raw HTTP, bypassing SDK key validation.
    pub fn put_raw(&self, bucket: &str, key: &str, data: &[u8]) {
        let (status, body) = match self.kind {
            Kind::Gcs => return self.put_object(bucket, key, data),
            Kind::S3 => http::request(
                self.port,
                "PUT",
                &format!("/{bucket}/{}", http::encode_key(key)),
                &[],
                data,
            ),
            Kind::Azure => http::azure_signed(
                self.port,
                "PUT",
                &format!("/{AZURITE_ACCOUNT}/{bucket}/{}", http::encode_key(key)),
                &[],
                &[("x-ms-blob-type", "BlockBlob")],
                data,
            ),
        };
        assert!(
            (200..300).contains(&status),
            "raw PUT of {key:?} on {:?}: {status} {body}",
            self.kind
        );
    }

    /// Read an object from outside the mount.
    pub fn get_object(&self, bucket: &str, key: &str) -> Vec<u8> {
        let s = self.sdk(bucket);
        let p = object_store::path::Path::parse(key).expect("sdk key");
        block_on(async {
            s.get(&p)
                .await
                .expect("sdk get")
                .bytes()
                .await
                .expect("sdk body")
                .to_vec()
        })
    }

    /// The object's bytes, or `None` if it does not exist (yet).
    pub fn get_object_opt(&self, bucket: &str, key: &str) -> Option<Vec<u8>> {
        let s = self.sdk(bucket);
        let p = object_store::path::Path::parse(key).expect("sdk key");
        block_on(async {
            match s.get(&p).await {
                Ok(r) => Some(r.bytes().await.expect("sdk body").to_vec()),
                Err(object_store::Error::NotFound { .. }) => None,
                Err(e) => panic!("sdk get {key}: {e}"),
            }
        })
    }

    /// An independent client to the same bucket (the "SDK" of the tests).
    pub fn sdk(&self, bucket: &str) -> Arc<dyn ObjectStore> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let opts = object_store::ClientOptions::new().with_allow_http(true);
        match self.kind {
            Kind::Azure => Arc::new(
                object_store::azure::MicrosoftAzureBuilder::new()
                    .with_account(AZURITE_ACCOUNT)
                    .with_access_key(AZURITE_KEY)
                    .with_container_name(bucket)
                    .with_endpoint(self.endpoint())
                    .with_client_options(opts)
                    .build()
                    .expect("azure client"),
            ),
            Kind::S3 => Arc::new(
                object_store::aws::AmazonS3Builder::new()
                    .with_bucket_name(bucket)
                    .with_endpoint(self.endpoint())
                    .with_region("us-east-1")
                    .with_access_key_id("testing")
                    .with_secret_access_key("testing")
                    .with_client_options(opts)
                    .build()
                    .expect("s3 client"),
            ),
            Kind::Gcs => Arc::new(
                object_store::gcp::GoogleCloudStorageBuilder::new()
                    .with_bucket_name(bucket)
                    .with_base_url(&self.endpoint())
                    .with_skip_signature(true)
                    // Uploads ask for a token even when signing is skipped (object_store 0.14).
                    .with_credentials(Arc::new(object_store::StaticCredentialProvider::new(
                        object_store::gcp::GcpCredential {
                            bearer: "anonymous".into(),
                        },
                    )))
                    .with_client_options(opts)
                    .build()
                    .expect("gcs client"),
            ),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Stop the emulator now (SIGKILL by PID) and wait for it.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Path of the blobmount binary built for this test run.
pub fn blobmount_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("BLOBMOUNT_BIN") {
        return PathBuf::from(p);
    }
    // target/<profile>/deps/<test-exe> -> target/<profile>/blobmount
    let exe = std::env::current_exe().expect("current exe");
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let p = dir.join("blobmount");
    assert!(
        p.exists(),
        "{} not built: run `cargo build --workspace` before the tests",
        p.display()
    );
    p
}

pub fn is_mounted(mp: &Path) -> bool {
    !mount_ids(mp).is_empty()
}

/// IDs (/proc/self/mountinfo) of the mounts at `mp`, bottom first.
pub fn mount_ids(mp: &Path) -> Vec<u64> {
    mount_ids_in("self", mp)
}

/// IDs of the mounts at `mp` in the mount namespace of process `pid` ("self" for ours).
pub fn mount_ids_in(pid: &str, mp: &Path) -> Vec<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap_or_default();
    let want = mp.display().to_string().replace(' ', "\\040");
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(4) == Some(&want.as_str()))
                .then(|| f[0].parse().ok())
                .flatten()
        })
        .collect()
}

/// A mounted blobmount daemon; unmounted (SIGTERM, then lazily) on drop.
pub struct Mount {
    mountpoint: PathBuf,
    /// The temporary mount point, when the spec named none.
    _dir: Option<tempfile::TempDir>,
    pub cache: PathBuf,
    /// The cache directory was made for this mount (removed with it).
    own_cache: bool,
    child: Option<Child>,
    pub log: PathBuf,
}

pub struct MountSpec {
    /// The store URL argument; empty: none (the store comes from a config file, as with
    /// BlobFuse2's `mount DIR --config-file=F`).
    pub url: String,
    pub endpoint: Option<String>,
    pub env: Vec<(String, String)>,
    pub args: Vec<String>,
    pub cache: Option<PathBuf>,
    /// Mount here (an existing directory) instead of on a new temporary directory.
    pub mountpoint: Option<PathBuf>,
}

impl MountSpec {
    pub fn for_emulator(e: &Emulator, bucket: &str) -> MountSpec {
        if let Some(d) = &e.dfs {
            return dfs::adls_mount_spec(d, bucket);
        }
        MountSpec {
            url: e.store_url(bucket),
            endpoint: Some(e.endpoint()),
            env: e.env(),
            args: vec![],
            cache: None,
            mountpoint: None,
        }
    }
}

/// Command for `blobmount` with a clean environment for stores.
pub fn blobmount_cmd() -> Command {
    let mut c = Command::new(blobmount_bin());
    // This machine sets AWS_CA_BUNDLE and similar; the daemon must not depend on them.
    for v in [
        "AWS_CA_BUNDLE",
        "AWS_PROFILE",
        "AWS_ENDPOINT_URL",
        "STORAGE_EMULATOR_HOST",
        "AZURE_STORAGE_CONNECTION_STRING",
    ] {
        c.env_remove(v);
    }
    c.stdin(Stdio::null());
    c
}

impl Mount {
    pub fn start(spec: &MountSpec) -> Mount {
        Self::try_start(spec).unwrap_or_else(|e| panic!("{e}"))
    }

    pub fn try_start(spec: &MountSpec) -> Result<Mount, String> {
        let (mountpoint, dir) = match &spec.mountpoint {
            Some(p) => (p.clone(), None),
            None => {
                let d = tempfile::Builder::new()
                    .prefix("bm-mnt-")
                    .tempdir()
                    .expect("mount dir");
                (d.path().to_path_buf(), Some(d))
            }
        };
        let cache = spec.cache.clone().unwrap_or_else(|| {
            std::env::temp_dir().join(format!("bm-cache-{:08x}", rand::random::<u32>()))
        });
        let log = std::env::temp_dir().join(format!("bm-log-{:08x}.log", rand::random::<u32>()));
        let mut cmd = blobmount_cmd();
        cmd.arg("mount");
        if !spec.url.is_empty() {
            cmd.arg(&spec.url);
        }
        cmd.arg(&mountpoint)
            .arg("--foreground")
            .arg("--cache-dir")
            .arg(&cache);
        if let Some(e) = &spec.endpoint {
            cmd.arg("--endpoint").arg(e);
        }
        cmd.args(&spec.args).env("RUST_LOG", "info");
        // The spec's environment comes last, so a test may set its own RUST_LOG.
        cmd.envs(spec.env.iter().cloned());
        let logf = std::fs::File::create(&log).expect("log file");
        cmd.stdout(logf.try_clone().expect("dup")).stderr(logf);
        // A dead mount left at a given mount point is listed too, and the new mount may get
        // its ID once it is detached: then wait for the daemon to say it has mounted.
        let stale = is_mounted(&mountpoint);
        let mut child = cmd.spawn().map_err(|e| format!("spawn blobmount: {e}"))?;
        let t = Instant::now();
        let log_path = log.clone();
        let mounted = || {
            is_mounted(&mountpoint)
                && (!stale
                    || std::fs::read_to_string(&log_path)
                        .unwrap_or_default()
                        .contains("mounted store="))
        };
        while !mounted() {
            if let Ok(Some(st)) = child.try_wait() {
                let text = std::fs::read_to_string(&log).unwrap_or_default();
                return Err(format!("blobmount exited ({st}) before mounting:\n{text}"));
            }
            if t.elapsed() > Duration::from_secs(60) {
                let _ = child.kill();
                return Err("blobmount did not mount within 60 s".into());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Mount {
            mountpoint,
            _dir: dir,
            cache,
            own_cache: spec.cache.is_none(),
            child: Some(child),
            log,
        })
    }

    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    pub fn p(&self, rel: &str) -> PathBuf {
        self.mountpoint.join(rel)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// PID of the (foreground) daemon.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGTERM the daemon and wait for it to unmount and exit; returns its exit code.
    pub fn stop(&mut self) -> Option<i32> {
        let mut child = self.child.take()?;
        // SAFETY: kill(2) on our own child's PID.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let t = Instant::now();
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return st.code();
            }
            if t.elapsed() > Duration::from_secs(30) {
                let _ = child.kill();
                let _ = child.wait();
                lazy_unmount(&self.mountpoint);
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

pub fn lazy_unmount(p: &Path) {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).expect("path");
    // SAFETY: valid C string.
    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
}

impl Drop for Mount {
    fn drop(&mut self) {
        self.stop();
        if is_mounted(&self.mountpoint) {
            lazy_unmount(&self.mountpoint);
        }
        // A cache directory the spec named is the test's (a later mount may reuse it).
        if self.own_cache {
            let _ = std::fs::remove_dir_all(&self.cache);
        }
        let _ = std::fs::remove_file(&self.log);
    }
}

/// The files in `<cache>/conflicts/`, waiting up to `limit` for at least one: a failed
/// upload is kept there by the release that follows `close`, after it tried once more.
pub fn kept_within(cache: &Path, limit: Duration) -> Vec<PathBuf> {
    let t = Instant::now();
    loop {
        let kept: Vec<PathBuf> = std::fs::read_dir(cache.join("conflicts"))
            .map(|rd| rd.flatten().map(|e| e.path()).collect())
            .unwrap_or_default();
        if !kept.is_empty() || t.elapsed() > limit {
            return kept;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Run a shell command in `dir`, panicking with its output on failure.
pub fn sh(dir: &Path, script: &str) -> String {
    let out = Command::new("bash")
        .arg("-ec")
        .arg(script)
        .current_dir(dir)
        .output()
        .expect("bash");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "command failed: {script}\n{text}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A small current-thread runtime for SDK calls from synchronous tests.
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(f)
}

/// Result of one CLI run.
#[derive(Debug)]
pub struct CliRun {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// Run `blobmount ARGS` with extra environment; kill it and fail the test if it runs longer
/// than `limit` (a hang is a bug: bad input must give an error promptly).
pub fn run_cli(args: &[&str], env: &[(&str, &str)], limit: Duration) -> CliRun {
    let out_dir = tempfile::tempdir().expect("tmp");
    let (o, e) = (out_dir.path().join("out"), out_dir.path().join("err"));
    let mut c = blobmount_cmd();
    c.args(args)
        .envs(env.iter().map(|(k, v)| (k.to_string(), v.to_string())))
        .stdout(std::fs::File::create(&o).expect("out"))
        .stderr(std::fs::File::create(&e).expect("err"));
    let start = Instant::now();
    let mut child = c.spawn().expect("spawn blobmount");
    let code = loop {
        if let Some(st) = child.try_wait().expect("wait") {
            break st.code();
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "blobmount {args:?} still running after {limit:?}: {}",
                std::fs::read_to_string(&e).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    CliRun {
        code,
        stdout: std::fs::read_to_string(&o).unwrap_or_default(),
        stderr: std::fs::read_to_string(&e).unwrap_or_default(),
        elapsed: start.elapsed(),
    }
}

/// Run each named test body (`fn name(kind: Kind)`) on Azurite, moto and fake-gcs-server,
/// as `azurite::name`, `moto_s3::name` and `fake_gcs::name`.
#[macro_export]
macro_rules! per_backend {
    ($($name:ident),* $(,)?) => {
        mod azurite { $( #[test] fn $name() { super::$name($crate::Kind::Azure) } )* }
        mod moto_s3 { $( #[test] fn $name() { super::$name($crate::Kind::S3) } )* }
        mod fake_gcs { $( #[test] fn $name() { super::$name($crate::Kind::Gcs) } )* }
    };
}

/// [`per_backend!`], and each body once more on ADLS Gen2 (Azurite behind the DFS test
/// endpoint, mounted with a hierarchical namespace; see [`as_adls`]).
#[macro_export]
macro_rules! per_backend_and_adls {
    ($($name:ident),* $(,)?) => {
        $crate::per_backend!($($name),*);
        mod adls_dfs {
            $( #[test] fn $name() { $crate::as_adls(|| super::$name($crate::Kind::Azure)) } )*
        }
    };
}

/// `GET path` from the daemon's health server on 127.0.0.1:`port`: status code and body.
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("connect to the health server");
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).expect("answer");
    let (head, body) = out.split_once("\r\n\r\n").expect("an HTTP answer");
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("a status code");
    (code, body.to_string())
}

/// The value of the first metric line of `page` starting with `line_start`.
pub fn metric(page: &str, line_start: &str) -> f64 {
    page.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {line_start} in\n{page}"))
}

/// The example plugin component `name` built by `plugins/build.sh` (in `plugins/dist/`, or
/// `BLOBMOUNT_PLUGIN_DIR`), as a path string; panics with how to build it when missing.
pub fn plugin_component(name: &str) -> String {
    let dir = std::env::var_os("BLOBMOUNT_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plugins/dist"));
    let p = dir.join(format!("{name}.wasm"));
    assert!(
        p.is_file(),
        "{} is missing: run `bash plugins/build.sh` first (tests/run-all.sh does)",
        p.display()
    );
    p.to_string_lossy().into_owned()
}
pub mod dfs;
