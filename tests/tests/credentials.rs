//! The AWS and GCS credential chains through real mounts on the emulators, with local doubles
//! of the credential endpoints (host/backend/src/awscreds.rs and gcscreds.rs; each source is
//! also tested on its own there). S3: a mount with no keys anywhere gets them from the
//! instance metadata service (IMDSv2) and from a profile that names a web identity token
//! file (STS), refreshes them before they expire, and a profile that does not exist stops
//! the mount with a clear error. GCS: the metadata server (GCE, GKE Workload Identity) and
//! Application Default Credentials of an authorized user, and a refused refresh token named
//! in the error.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use blobmount_tests::{Emulator, Kind, Mount, MountSpec, run_cli};

/// A credential endpoint double on 127.0.0.1: answers each request with `handler(method,
/// path, headers, body)` and keeps the request lines.
struct Double {
    port: u16,
    seen: Arc<Mutex<Vec<String>>>,
}

type Handler = dyn Fn(&str, &str, &HashMap<String, String>, &str) -> (u16, String) + Send + Sync;

impl Double {
    fn start(handler: Arc<Handler>) -> Double {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s2 = seen.clone();
        std::thread::spawn(move || {
            for conn in l.incoming() {
                let Ok(mut c) = conn else { return };
                let mut r = BufReader::new(c.try_clone().unwrap());
                let mut line = String::new();
                let _ = r.read_line(&mut line);
                let mut parts = line.split_whitespace();
                let (method, path) = (
                    parts.next().unwrap_or("").to_string(),
                    parts.next().unwrap_or("").to_string(),
                );
                let mut headers = HashMap::new();
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).is_err() || h.trim().is_empty() {
                        break;
                    }
                    if let Some((k, v)) = h.split_once(':') {
                        headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
                    }
                }
                let len = headers
                    .get("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let mut body = vec![0; len];
                let _ = r.read_exact(&mut body);
                let (status, answer) =
                    handler(&method, &path, &headers, &String::from_utf8_lossy(&body));
                s2.lock().unwrap().push(format!("{method} {path}"));
                let _ = write!(
                    c,
                    "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
                    answer.len()
                );
            }
        });
        Double { port, seen }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    fn count(&self, prefix: &str) -> usize {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with(prefix))
            .count()
    }
}

fn expiring_in(secs: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(secs)).to_rfc3339()
}

/// The emulator's spec without its credentials (S3's keys, GCS's `anonymous`; the region
/// stays, S3 needs one), with `HOME` at `home` and `env`.
fn keyless(
    emu: &Emulator,
    bucket: &str,
    home: &std::path::Path,
    env: &[(&str, String)],
) -> MountSpec {
    let mut spec = MountSpec::for_emulator(emu, bucket);
    spec.env = vec![
        ("AWS_REGION".into(), "us-east-1".into()),
        ("HOME".into(), home.display().to_string()),
    ];
    spec.env
        .extend(env.iter().map(|(k, v)| (k.to_string(), v.clone())));
    spec
}

fn write_and_read(m: &Mount, name: &str) {
    std::fs::write(m.p(name), b"signed with fetched credentials").unwrap();
    assert_eq!(
        std::fs::read(m.p(name)).unwrap(),
        b"signed with fetched credentials"
    );
}

#[test]
fn instance_metadata_credentials_refreshed_before_expiry() {
    let emu = Emulator::start(Kind::S3);
    let bucket = emu.create_bucket();
    let home = tempfile::tempdir().unwrap();
    // Credentials that expire in 302 s: inside the 5-minute margin 2 s later, so the mount
    // must fetch again instead of signing with ones about to expire.
    let imds = Double::start(Arc::new(|method, path, headers, _body| {
        let token_ok = headers.get("x-aws-ec2-metadata-token").map(String::as_str) == Some("t0k");
        match (method, path) {
            ("PUT", "/latest/api/token") => (200, "t0k".into()),
            _ if !token_ok => (401, "IMDSv2 token required".into()),
            ("GET", "/latest/meta-data/iam/security-credentials/") => (200, "mount-role".into()),
            ("GET", "/latest/meta-data/iam/security-credentials/mount-role") => (
                200,
                format!(
                    r#"{{"Code":"Success","AccessKeyId":"ASIAIMDSDOUBLE","SecretAccessKey":"s","Token":"t","Expiration":"{}"}}"#,
                    expiring_in(302)
                ),
            ),
            _ => (404, String::new()),
        }
    }));
    let spec = keyless(
        &emu,
        &bucket,
        home.path(),
        &[("AWS_EC2_METADATA_SERVICE_ENDPOINT", imds.url())],
    );
    let m = Mount::start(&spec);
    write_and_read(&m, "imds.txt");
    let first = imds.count("GET /latest/meta-data/iam/security-credentials/mount-role");
    assert!(first >= 1, "the mount asked the metadata service");
    assert_eq!(
        emu.get_object(&bucket, "imds.txt"),
        b"signed with fetched credentials"
    );
    std::thread::sleep(Duration::from_secs(3));
    write_and_read(&m, "imds2.txt");
    assert!(
        imds.count("GET /latest/meta-data/iam/security-credentials/mount-role") > first,
        "credentials within 5 minutes of expiry are fetched again"
    );
    assert!(
        m.log_text().contains("instance metadata at"),
        "the log names the source"
    );
}

#[test]
fn profile_with_a_web_identity_token_file() {
    let emu = Emulator::start(Kind::S3);
    let bucket = emu.create_bucket();
    let home = tempfile::tempdir().unwrap();
    let sts = Double::start(Arc::new(|method, _path, _headers, body| {
        if method == "POST" && body.contains("WebIdentityToken=oidc.jwt.value") {
            (
                200,
                format!(
                    "<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>ASIASTSDOUBLE</AccessKeyId><SecretAccessKey>s</SecretAccessKey><SessionToken>t</SessionToken><Expiration>{}</Expiration></Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>",
                    expiring_in(3600)
                ),
            )
        } else {
            (400, "InvalidIdentityToken".into())
        }
    }));
    let token = home.path().join("token");
    std::fs::write(&token, "oidc.jwt.value").unwrap();
    std::fs::create_dir_all(home.path().join(".aws")).unwrap();
    std::fs::write(
        home.path().join(".aws/config"),
        format!(
            "[profile irsa]\nrole_arn = arn:aws:iam::123456789012:role/mount\nweb_identity_token_file = {}\nregion = us-east-1\n",
            token.display()
        ),
    )
    .unwrap();
    let spec = keyless(
        &emu,
        &bucket,
        home.path(),
        &[
            ("AWS_PROFILE", "irsa".into()),
            ("AWS_ENDPOINT_URL_STS", sts.url()),
        ],
    );
    let m = Mount::start(&spec);
    write_and_read(&m, "sts.txt");
    assert_eq!(
        sts.count("POST /"),
        1,
        "one AssumeRoleWithWebIdentity, then cached"
    );
    assert!(m.log_text().contains("AWS profile 'irsa'"));
}

#[test]
fn a_missing_profile_stops_the_mount_with_a_clear_error() {
    let emu = Emulator::start(Kind::S3);
    let bucket = emu.create_bucket();
    let home = tempfile::tempdir().unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let t = Instant::now();
    let r = run_cli(
        &[
            "mount",
            &emu.store_url(&bucket),
            mnt.path().to_str().unwrap(),
            "--foreground",
            "--endpoint",
            &emu.endpoint(),
        ],
        &[
            ("AWS_PROFILE", "nosuch"),
            ("HOME", home.path().to_str().unwrap()),
            ("AWS_REGION", "us-east-1"),
        ],
        Duration::from_secs(60),
    );
    assert_ne!(r.code, Some(0));
    assert!(
        r.stderr.contains("AWS profile 'nosuch' is in neither"),
        "{}",
        r.stderr
    );
    assert!(t.elapsed() < Duration::from_secs(30));
}

#[test]
fn gcs_metadata_server_token() {
    let emu = Emulator::start(Kind::Gcs);
    let bucket = emu.create_bucket();
    let home = tempfile::tempdir().unwrap();
    let md = Double::start(Arc::new(|_method, path, headers, _body| {
        let flavor = headers.get("metadata-flavor").map(String::as_str) == Some("Google");
        if flavor && path == "/computeMetadata/v1/instance/service-accounts/default/token" {
            (200, r#"{"access_token":"ya29.from-metadata-double","expires_in":3599,"token_type":"Bearer"}"#.into())
        } else {
            (400, "Missing Metadata-Flavor".into())
        }
    }));
    let host = format!("127.0.0.1:{}", md.port);
    let m = Mount::start(&keyless(
        &emu,
        &bucket,
        home.path(),
        &[("GCE_METADATA_HOST", host)],
    ));
    write_and_read(&m, "gce.txt");
    assert_eq!(
        emu.get_object(&bucket, "gce.txt"),
        b"signed with fetched credentials"
    );
    assert_eq!(md.count("GET /computeMetadata"), 1, "one token, cached");
    assert!(m.log_text().contains("metadata server at"));
}

#[test]
fn gcs_application_default_credentials_of_a_user() {
    let emu = Emulator::start(Kind::Gcs);
    let bucket = emu.create_bucket();
    let home = tempfile::tempdir().unwrap();
    let token = Double::start(Arc::new(|method, _path, _headers, body| {
        if method == "POST"
            && body.contains("grant_type=refresh_token")
            && body.contains("refresh_token=1%2F%2Fuser")
        {
            (
                200,
                r#"{"access_token":"ya29.user","expires_in":3599}"#.into(),
            )
        } else {
            (400, r#"{"error":"invalid_grant"}"#.into())
        }
    }));
    let adc = home.path().join(".config/gcloud");
    std::fs::create_dir_all(&adc).unwrap();
    std::fs::write(
        adc.join("application_default_credentials.json"),
        format!(
            r#"{{"type":"authorized_user","client_id":"c","client_secret":"s","refresh_token":"1//user","token_uri":"{}/token"}}"#,
            token.url()
        ),
    )
    .unwrap();
    let m = Mount::start(&keyless(&emu, &bucket, home.path(), &[]));
    write_and_read(&m, "adc.txt");
    assert_eq!(token.count("POST /token"), 1);
    // A refresh token the endpoint refuses stops nothing at mount but fails the first
    // request with an error naming the source.
    drop(m);
    std::fs::write(
        adc.join("application_default_credentials.json"),
        format!(
            r#"{{"type":"authorized_user","client_id":"c","client_secret":"s","refresh_token":"revoked","token_uri":"{}/token"}}"#,
            token.url()
        ),
    )
    .unwrap();
    let r = Mount::try_start(&keyless(&emu, &bucket, home.path(), &[]));
    let text = match r {
        Ok(m) => {
            let e = std::fs::write(m.p("denied.txt"), b"x");
            assert!(e.is_err(), "a write without a token must fail");
            m.log_text()
        }
        Err(e) => e,
    };
    assert!(text.contains("authorized user"), "{text}");
}

/// A JWT Azurite's `--oauth basic` accepts (it checks issuer, audience and lifetime, not
/// the signature), valid for an hour.
fn azure_access_token() -> String {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s);
    let now = chrono::Utc::now().timestamp();
    let claims = format!(
        r#"{{"aud":"https://storage.azure.com","iss":"https://sts.windows.net/test-tenant/","iat":{now},"nbf":{},"exp":{},"oid":"blobmount-test"}}"#,
        now - 60,
        now + 3600
    );
    format!(
        "{}.{}.c2lnbmF0dXJl",
        b64(r#"{"alg":"RS256","typ":"JWT"}"#),
        b64(&claims)
    )
}

/// A real OAuth mount: Azurite over HTTPS with `--oauth basic` (its certificate
/// self-signed, trusted through `store.ca-file`), no account key anywhere, a service
/// principal's secret exchanged for a token at a local double of the authority host. The
/// same mount without the CA file fails on the certificate, clearly.
#[test]
fn azure_service_principal_token_over_https_with_a_private_ca() {
    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let (ca, cert, key) = (p("ca.pem"), p("cert.pem"), p("key.pem"));
    std::fs::write(
        p("ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    // A private CA, and the server's certificate signed by it.
    for args in [
        "req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=blobmount-test-ca -keyout ca.key -out ca.pem",
        "req -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -keyout key.pem -out server.csr",
        "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 -extfile ext -out cert.pem",
    ] {
        let ok = std::process::Command::new("openssl")
            .args(args.split(' '))
            .current_dir(dir.path())
            .stderr(std::process::Stdio::null())
            .status()
            .unwrap();
        assert!(ok.success(), "openssl {args}");
    }
    let port = blobmount_tests::free_port();
    let data = dir.path().join("azurite");
    std::fs::create_dir_all(&data).unwrap();
    let azurite = std::process::Command::new(blobmount_tests::tools_dir().join("bin/azurite-blob"))
        .args(["--blobHost", "127.0.0.1", "--blobPort", &port.to_string()])
        .args([
            "--loose",
            "--skipApiVersionCheck",
            "--disableTelemetry",
            "--silent",
        ])
        .args(["--oauth", "basic"])
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .arg("--location")
        .arg(&data)
        .current_dir(&data)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Stopped by PID however the test ends.
    let _azurite = StopOnDrop(azurite);
    let t = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(60),
            "Azurite did not listen"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let token = azure_access_token();
    // The container, created with the same kind of token.
    let created = std::process::Command::new("curl")
        .args(["-sS", "--fail", "--cacert"])
        .arg(&ca)
        .args(["-X", "PUT", "-H", "x-ms-version: 2021-08-06", "-H"])
        .arg(format!("Authorization: Bearer {token}"))
        .arg(format!(
            "https://127.0.0.1:{port}/devstoreaccount1/oauthdata?restype=container"
        ))
        .status()
        .unwrap();
    assert!(
        created.success(),
        "creating the container with a bearer token"
    );

    let tok = token.clone();
    let authority = Double::start(Arc::new(move |method, path, _h, body| {
        if method == "POST"
            && path == "/test-tenant/oauth2/v2.0/token"
            && body.contains("client_secret=s3cret")
        {
            let answer =
                format!(r#"{{"token_type":"Bearer","expires_in":3599,"access_token":"{tok}"}}"#);
            (200, answer)
        } else {
            (400, r#"{"error":"invalid_client"}"#.into())
        }
    }));
    let spec = |trusted: bool| {
        let mut env = vec![
            ("BLOBMOUNT_STORE__AZURE__MODE", "spn".to_string()),
            ("BLOBMOUNT_STORE__AZURE__TENANT_ID", "test-tenant".into()),
            ("BLOBMOUNT_STORE__AZURE__CLIENT_ID", "app".into()),
            ("BLOBMOUNT_STORE__AZURE__CLIENT_SECRET", "s3cret".into()),
            ("BLOBMOUNT_STORE__AZURE__AUTHORITY_HOST", authority.url()),
        ];
        if trusted {
            env.push(("BLOBMOUNT_STORE__CA_FILE", ca.display().to_string()));
        }
        MountSpec {
            url: "az://devstoreaccount1/oauthdata".into(),
            endpoint: Some(format!("https://127.0.0.1:{port}/devstoreaccount1")),
            env: env.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
            args: vec![],
            cache: None,
            mountpoint: None,
        }
    };
    let refused = Mount::try_start(&spec(false)).err().unwrap_or_default();
    assert!(
        refused.to_lowercase().contains("certificate"),
        "without the CA file: {refused}"
    );
    let m = Mount::start(&spec(true));
    write_and_read(&m, "over-https.txt");
    assert!(authority.count("POST /test-tenant/oauth2/v2.0/token") >= 1);
    drop(m);
}

/// A child process killed (by PID) and reaped when dropped, also when a test panics.
struct StopOnDrop(std::process::Child);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
