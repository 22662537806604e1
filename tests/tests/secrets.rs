//! Secrets never leak: every error path of loading the configuration and of starting a
//! mount is run through the real binary with a known value in every secret field (Azure
//! account key, SAS token, connection string, key file; S3 secret key and session token;
//! GCS service-account JSON), given in the YAML file and in the environment, and all of
//! stdout, stderr and the log file are searched for each value.
//!
//! Why one file for all of them: a leak is usually found by someone pasting an error into
//! a ticket; the paths that print are many (YAML parser, serde, clap, `-o`, the store
//! client, the log), and a new one should fail here without anyone having to think of it.

use std::path::PathBuf;
use std::time::Duration;

use blobmount_tests::{AZURITE_ACCOUNT, CliRun, Emulator, Kind, free_port, is_mounted, run_cli};

const LIMIT: Duration = Duration::from_secs(60);

/// Valid base64 (object_store decodes account keys), unique enough to grep for.
const AZ_KEY: &str = "QVpLRVlTRUNSRVRhemtleXNlY3JldGF6a2V5c2VjcmV0MDE=";
const SAS_SIG: &str = "SASSECRETSIGNATURE02";
const CONN_KEY: &str = "Q09OTktFWVNFQ1JFVGNvbm5rZXlzZWNyZXQwMw==";
const S3_SECRET: &str = "S3SECRETACCESSKEY04wJalrXUtnFEMI";
const S3_TOKEN: &str = "S3SESSIONTOKENSECRET05";
const GCS_KEY: &str = "GCSPRIVATEKEYSECRET06";
const KEY_FILE_SECRET: &str = "S0VZRklMRVNFQ1JFVDA3a2V5ZmlsZXNlY3JldA==";

const ALL: [&str; 7] = [
    AZ_KEY,
    SAS_SIG,
    CONN_KEY,
    S3_SECRET,
    S3_TOKEN,
    GCS_KEY,
    KEY_FILE_SECRET,
];

fn sas() -> String {
    format!("sv=2022-11-02&ss=b&srt=co&sp=rl&se=2030-01-01T00:00:00Z&sig={SAS_SIG}")
}

fn conn(endpoint: &str) -> String {
    format!(
        "DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={CONN_KEY};BlobEndpoint={endpoint}"
    )
}

/// A scratch directory with the secret files (account key file, service-account JSON), a
/// log file path and a mount point.
struct Scene {
    dir: tempfile::TempDir,
    mp: tempfile::TempDir,
}

impl Scene {
    fn new() -> Scene {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("account.key"),
            format!("{KEY_FILE_SECRET}\n"),
        )
        .unwrap();
        let sa = serde_json::json!({
            "type": "service_account",
            "project_id": "p",
            "private_key_id": "k1",
            "private_key": format!("-----BEGIN PRIVATE KEY-----\n{GCS_KEY}\n-----END PRIVATE KEY-----\n"),
            "client_email": "bm@p.iam.gserviceaccount.com",
            "token_uri": "http://127.0.0.1:1/token",
        });
        std::fs::write(dir.path().join("sa.json"), sa.to_string()).unwrap();
        // Not JSON: a truncated copy, secret included.
        std::fs::write(
            dir.path().join("sa-broken.json"),
            format!("{{\"type\": \"service_account\", \"private_key\": \"{GCS_KEY}"),
        )
        .unwrap();
        let mp = tempfile::Builder::new()
            .prefix("bm-sec-")
            .tempdir()
            .unwrap();
        Scene { dir, mp }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn mp(&self) -> &str {
        self.mp.path().to_str().unwrap()
    }

    fn log(&self) -> PathBuf {
        self.path("blobmount.log")
    }

    /// A YAML file with every secret field set (and `extra` appended), returned as a path.
    fn yaml(&self, name: &str, url: &str, endpoint: &str, extra: &str) -> String {
        let text = format!(
            "store:\n  url: {url}\n  endpoint: {endpoint}\n  azure:\n    account-key: \"{AZ_KEY}\"\n    \
             account-key-file: {keyfile}\n    sas-token: \"{sas}\"\n    connection-string: \"{conn}\"\n  \
             s3:\n    access-key-id: AKIDNOTSECRET\n    secret-access-key: \"{S3_SECRET}\"\n    \
             session-token: \"{S3_TOKEN}\"\n  gcs:\n    service-account-file: {sa}\n  retry:\n    \
             max-retries: 0\nlogging:\n  file: {log}\n  level: trace\n{extra}",
            keyfile = self.path("account.key").display(),
            sas = sas(),
            conn = conn(endpoint),
            sa = self.path("sa.json").display(),
            log = self.log().display(),
        );
        let p = self.path(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    }

    /// Fail if any secret is in the run's output or in the log file; the log is then
    /// removed so the next case starts without it.
    fn assert_clean(&self, case: &str, r: &CliRun) {
        let log = std::fs::read_to_string(self.log()).unwrap_or_default();
        for s in ALL {
            for (name, text) in [("stdout", &r.stdout), ("stderr", &r.stderr), ("log", &log)] {
                assert!(
                    !text.contains(s),
                    "{case}: secret {s} in {name}:\n{text}\n(exit {:?})",
                    r.code
                );
            }
        }
        let _ = std::fs::remove_file(self.log());
        assert!(!is_mounted(self.mp.path()), "{case}: left a mount");
    }
}

/// The environment variables of every secret field, and the store ones.
fn secret_env(endpoint: &str, scene: &Scene) -> Vec<(String, String)> {
    [
        ("AZURE_STORAGE_ACCOUNT_KEY", AZ_KEY.to_string()),
        ("AZURE_STORAGE_SAS_TOKEN", sas()),
        ("AZURE_STORAGE_CONNECTION_STRING", conn(endpoint)),
        ("AWS_ACCESS_KEY_ID", "AKIDNOTSECRET".into()),
        ("AWS_SECRET_ACCESS_KEY", S3_SECRET.into()),
        ("AWS_SESSION_TOKEN", S3_TOKEN.into()),
        ("AWS_REGION", "us-east-1".into()),
        (
            "GOOGLE_APPLICATION_CREDENTIALS",
            scene.path("sa.json").display().to_string(),
        ),
        ("BLOBMOUNT_STORE__AZURE__ACCOUNT_KEY", AZ_KEY.into()),
        ("BLOBMOUNT_STORE__AZURE__SAS_TOKEN", sas()),
        ("BLOBMOUNT_STORE__S3__SECRET_ACCESS_KEY", S3_SECRET.into()),
        ("BLOBMOUNT_STORE__RETRY__MAX_RETRIES", "0".into()),
        ("BLOBMOUNT_LOGGING__FILE", scene.log().display().to_string()),
        ("BLOBMOUNT_LOGGING__LEVEL", "trace".into()),
        ("BLOBMOUNT_MOUNT__MOUNTPOINT", scene.mp().to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn run(args: &[&str], env: &[(String, String)]) -> CliRun {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    run_cli(args, &env, LIMIT)
}

fn dead_endpoint() -> String {
    format!("http://127.0.0.1:{}/{AZURITE_ACCOUNT}", free_port())
}

/// Configuration errors (exit 2) of every kind, secrets in the file and in the
/// environment: YAML syntax errors next to each secret, unknown keys, wrong types, bad
/// URLs, key files missing or unreadable, bad environment values, bad flags and `-o`
/// options, through `config validate` and `mount`.
#[test]
fn config_errors_do_not_print_secrets() {
    let s = Scene::new();
    let ep = dead_endpoint();
    let env = secret_env(&ep, &s);
    let url = "az://devstoreaccount1/cont";
    let good = s.yaml("good.yaml", url, &ep, "");
    let text = std::fs::read_to_string(&good).unwrap();
    let mut files: Vec<(String, String)> = Vec::new();
    // A syntax error on, before and after each secret line.
    for (i, line) in text.lines().enumerate() {
        if !ALL.iter().any(|sec| line.contains(sec)) {
            continue;
        }
        let lines: Vec<&str> = text.lines().collect();
        let broken = [
            line.replacen(": \"", ": \"[", 1)
                .trim_end_matches('"')
                .to_string(),
            line.replacen(": \"", ": [", 1),
            format!("{line}: x"),
            format!("{line}\n  - oops"),
            format!("\t{line}"),
            format!("{line}\n{{"),
        ];
        for (j, b) in broken.iter().enumerate() {
            let mut l = lines.clone();
            l[i] = b;
            files.push((format!("syntax line {i} #{j}"), l.join("\n")));
        }
    }
    let extras = [
        ("unknown key", "mount:\n  bogus: 1\n"),
        ("unknown section", "bogus:\n  x: 1\n"),
        ("wrong type", "mount:\n  threads: lots\n"),
        ("out of range", "mount:\n  threads: 1000\n"),
        ("negative ttl", "cache:\n  list-ttl-secs: -1\n"),
    ];
    for (name, extra) in extras {
        let p = s.yaml("extra.yaml", url, &ep, extra);
        files.push((name.into(), std::fs::read_to_string(p).unwrap()));
    }
    // Secrets of the wrong shape, under misspelt keys, or next to a bad URL.
    for (name, from, to) in [
        ("secret as a list", "account-key: \"", "account-key: [\""),
        ("secret as a map", "sas-token: \"", "sas-token: {x: \""),
        (
            "misspelt secret key",
            "secret-access-key:",
            "secret-acess-key:",
        ),
        (
            "misspelt azure key",
            "connection-string:",
            "conection-string:",
        ),
        ("bad url", url, "ftp://nowhere"),
    ] {
        let t = text.replacen(from, to, 1);
        let t = if name.starts_with("secret as") {
            t.replacen(&format!("{AZ_KEY}\"\n"), &format!("{AZ_KEY}\"]\n"), 1)
                .replacen(&format!("{SAS_SIG}\"\n"), &format!("{SAS_SIG}\"}}\n"), 1)
        } else {
            t
        };
        files.push((name.into(), t));
    }
    for (name, yaml) in &files {
        let p = s.path("case.yaml");
        std::fs::write(&p, yaml).unwrap();
        let p = p.to_str().unwrap();
        for args in [
            vec!["config", "validate", p],
            vec!["mount", "-c", p, "--foreground"],
        ] {
            let r = run(&args, &env);
            assert_eq!(r.code, Some(2), "{name} {args:?}: {r:?}");
            assert_eq!(
                r.stderr.contains("store url"),
                *name == "bad url",
                "{name} {args:?}: {}",
                r.stderr
            );
            s.assert_clean(&format!("{name} {args:?}"), &r);
        }
    }
    // Bad environment values and misspelt variables, bad flags and options, with the
    // secrets in the file and the environment.
    let bad_env: [(&str, &str); 5] = [
        ("BLOBMOUNT_MOUNT__THREADS", "lots"),
        ("BLOBMOUNT_STORE__AZURE__ACCOUNT_KEYS", AZ_KEY),
        ("BLOBMOUNT_STORE__S3__SECRET_ACCESS_KEY_X", S3_SECRET),
        ("BLOBMOUNT_STROE__AZURE__SAS_TOKEN", SAS_SIG),
        ("BLOBMOUNT_STORE__RETRY__MAX_RETRIES", "-1"),
    ];
    for (k, v) in bad_env {
        let mut env = env.clone();
        env.push((k.into(), v.into()));
        for args in [
            vec!["config", "validate", good.as_str()],
            vec!["mount", "-c", good.as_str(), "--foreground"],
        ] {
            let r = run(&args, &env);
            assert_eq!(r.code, Some(2), "{k} {args:?}: {r:?}");
            assert!(!r.stderr.contains("store url"), "{k}: {}", r.stderr);
            s.assert_clean(&format!("env {k} {args:?}"), &r);
        }
    }
    let flags: [&[&str]; 8] = [
        &["--bogus"],
        &["--uid", "x"],
        &["--threads", "2"],
        &["-o", "bogus"],
        &["-o", "uid=x"],
        &["-o", "account_key=x"],
        &["--attr-timeout", "-5"],
        &["--read-mode", "fast"],
    ];
    for f in flags {
        let mut args = vec!["mount", "-c", good.as_str(), "--foreground"];
        args.extend_from_slice(f);
        let r = run(&args, &env);
        assert_eq!(r.code, Some(2), "{f:?}: {r:?}");
        assert!(!r.stderr.contains("store url"), "{f:?}: {}", r.stderr);
        s.assert_clean(&format!("flag {f:?}"), &r);
    }
    // Key files: missing, unreadable (a directory), not JSON.
    for (name, from, to) in [
        ("missing key file", "account.key", "missing.key"),
        ("key file is a directory", "account.key", ""),
        ("missing service account", "sa.json", "missing.json"),
        ("broken service account", "sa.json", "sa-broken.json"),
    ] {
        let t = text.replacen(from, to, 1);
        let p = s.path("case.yaml");
        std::fs::write(&p, t).unwrap();
        for u in [url, "gs://bkt"] {
            let args = [
                "mount",
                "-c",
                p.to_str().unwrap(),
                "--foreground",
                u,
                s.mp(),
            ];
            let r = run(&args, &env);
            assert_ne!(r.code, Some(0), "{name} {u}: {r:?}");
            s.assert_clean(&format!("{name} {u}"), &r);
        }
    }
    // A valid file: `config validate` prints a summary, and `config schema` the schema.
    for args in [
        vec!["config", "validate", good.as_str()],
        vec!["config", "schema"],
    ] {
        let r = run(&args, &env);
        assert_eq!(r.code, Some(0), "{args:?}: {r:?}");
        s.assert_clean(&format!("{args:?}"), &r);
    }
}

/// Mounts that fail at the store, for each kind of store and credential: nobody listening
/// (exit 4) or a client that cannot be built; foreground and background, log at trace level
/// into a file.
#[test]
fn unreachable_store_does_not_print_secrets() {
    let s = Scene::new();
    let ep = dead_endpoint();
    let env = secret_env(&ep, &s);
    let plain = format!("http://127.0.0.1:{}", free_port());
    let urls = [
        ("az://devstoreaccount1/cont", ep.as_str()),
        ("s3://bkt", plain.as_str()),
        ("gs://bkt", plain.as_str()),
    ];
    for (url, endpoint) in urls {
        // Every field set in the file.
        let y = s.yaml("m.yaml", url, endpoint, "");
        for fg in [true, false] {
            let mut args = vec!["mount", "-c", y.as_str(), url, s.mp()];
            if fg {
                args.push("--foreground");
            }
            let r = run(&args, &env);
            assert_ne!(r.code, Some(0), "{url}: {r:?}");
            if fg {
                // The log file was written (the failure at least), so searching it means
                // something.
                let log = std::fs::read_to_string(s.log()).unwrap_or_default();
                assert!(log.contains("ERROR"), "{url}: log: {log}");
            }
            s.assert_clean(&format!("{url} fg={fg}"), &r);
        }
        // Only one credential at a time, from the environment (each is used then).
        for only in [
            "AZURE_STORAGE_ACCOUNT_KEY",
            "AZURE_STORAGE_SAS_TOKEN",
            "AZURE_STORAGE_CONNECTION_STRING",
            "AWS_SECRET_ACCESS_KEY",
            "GOOGLE_APPLICATION_CREDENTIALS",
        ] {
            let env: Vec<(String, String)> = env
                .iter()
                .filter(|(k, _)| {
                    k == only
                        || k.starts_with("BLOBMOUNT_LOGGING")
                        || k.starts_with("BLOBMOUNT_STORE__RETRY")
                        || k.starts_with("AWS_REGION")
                        || k.starts_with("AWS_ACCESS_KEY_ID")
                        || (only == "AWS_SECRET_ACCESS_KEY" && k == "AWS_SESSION_TOKEN")
                })
                .cloned()
                .collect();
            let args = ["mount", url, s.mp(), "--endpoint", endpoint, "--foreground"];
            let r = run(&args, &env);
            assert_ne!(r.code, Some(0), "{url} {only}: {r:?}");
            s.assert_clean(&format!("{url} {only}"), &r);
        }
    }
}

/// Credentials the store refuses (Azurite): a wrong key, a wrong SAS, a connection string
/// with a wrong key: exit 3, and the value is nowhere.
#[test]
fn refused_credentials_do_not_print_secrets() {
    let emu = Emulator::start(Kind::Azure);
    let bucket = emu.create_bucket();
    let s = Scene::new();
    let url = format!("az://{AZURITE_ACCOUNT}/{bucket}");
    let log = s.log().display().to_string();
    let base = [
        ("BLOBMOUNT_LOGGING__FILE", log.as_str()),
        ("BLOBMOUNT_LOGGING__LEVEL", "trace"),
        ("BLOBMOUNT_STORE__RETRY__MAX_RETRIES", "0"),
    ];
    let sas = sas();
    let conn = conn(&emu.endpoint());
    for (k, v) in [
        ("AZURE_STORAGE_ACCOUNT_KEY", AZ_KEY),
        ("AZURE_STORAGE_SAS_TOKEN", sas.as_str()),
        ("AZURE_STORAGE_CONNECTION_STRING", conn.as_str()),
    ] {
        let env: Vec<(String, String)> = base
            .iter()
            .chain([&(k, v)])
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let ep = emu.endpoint();
        let mut args = vec!["mount", url.as_str(), s.mp(), "--foreground"];
        if k != "AZURE_STORAGE_CONNECTION_STRING" {
            args.extend(["--endpoint", ep.as_str()]);
        }
        let r = run(&args, &env);
        assert_eq!(r.code, Some(3), "{k}: {r:?}");
        s.assert_clean(k, &r);
    }
}
