//! BlobFuse v1 command lines and connection files read into the native tree.

use super::*;

fn os(v: &[&str]) -> Vec<OsString> {
    v.iter().map(OsString::from).collect()
}

const KEY: &str = "c2VjcmV0LWtleS12YWx1ZQ==";

fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |v, p| &v[p])
}

fn no_env(_: &str) -> Option<String> {
    None
}

/// `mountv1` with `cfg` as the connection file and `args` after it.
fn run(cfg: &str, args: &[&str]) -> Result<Imported, String> {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("fuse_connection.cfg");
    std::fs::write(&f, cfg).unwrap();
    let mut a = os(&["/mnt/blob"]);
    a.push(format!("--config-file={}", f.display()).into());
    a.extend(os(args));
    convert(parse_args(a)?, &no_env)
}

fn connection() -> String {
    format!(
        "# BlobFuse v1 connection file\naccountName devstoreaccount1\naccountKey {KEY}\nauthType Key\ncontainerName data\nblobEndpoint 127.0.0.1:10000/devstoreaccount1\n"
    )
}

#[test]
fn a_key_auth_file_and_flags_become_native_settings() {
    let i = run(
        &connection(),
        &[
            "--tmp-path=/mnt/blobfusetmp",
            "--use-https=false",
            "--file-cache-timeout-in-seconds=120",
            "--cache-size-mb=2048",
            "--log-level=LOG_WARNING",
            "--max-retry=7",
            "--retry-delay-factor=1.5",
            "--high-disk-threshold=90",
            "-o",
            "attr_timeout=240,entry_timeout=240,negative_timeout=120,allow_other,umask=027,uid=1000",
            "-o",
            "ro",
            "--foreground",
        ],
    )
    .unwrap();
    let t = &i.tree;
    assert_eq!(at(t, "store.url"), "az://devstoreaccount1/data");
    assert_eq!(at(t, "store.azure.account-key"), KEY);
    assert_eq!(at(t, "store.azure.mode"), "key");
    // No scheme in blobEndpoint: --use-https=false picks http, as v1.
    assert_eq!(
        at(t, "store.endpoint"),
        "http://127.0.0.1:10000/devstoreaccount1"
    );
    assert_eq!(at(t, "read.mode"), "file-cache");
    assert_eq!(at(t, "cache.dir"), "/mnt/blobfusetmp");
    assert_eq!(at(t, "cache.file-cache-max-mib"), 2048);
    assert_eq!(at(t, "mount.attr-timeout-secs"), 240);
    assert_eq!(at(t, "cache.negative-ttl-secs"), 120);
    assert_eq!(at(t, "mount.allow-other"), true);
    assert_eq!(at(t, "mount.read-only"), true);
    assert_eq!(at(t, "mount.file-mode"), "0750");
    assert_eq!(at(t, "mount.uid"), 1000);
    assert_eq!(at(t, "logging.level"), "warn");
    assert_eq!(at(t, "store.retry.max-retries"), 7);
    assert_eq!(at(t, "store.retry.initial-backoff-ms"), 1500);
    let w = i.warnings.join("\n");
    assert!(
        w.contains("--file-cache-timeout-in-seconds (BlobFuse2 file_cache.timeout-sec): ignored"),
        "{w}"
    );
    assert!(w.contains("--high-disk-threshold: ignored"), "{w}");
    assert!(!w.contains(KEY));
    // The result is a valid native configuration.
    let cfg = crate::config::Config::load_tree_with(i.tree, &[]).unwrap();
    cfg.validate().unwrap();
}

#[test]
fn flags_win_over_the_file_and_the_rest_is_left_for_blobmount() {
    let v = parse_args(os(&[
        "/mnt/x",
        "--container-name",
        "other",
        "--health-listen",
        "127.0.0.1:9",
        "-d",
    ]))
    .unwrap();
    assert_eq!(v.rest, os(&["/mnt/x", "--health-listen", "127.0.0.1:9"]));
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("c.cfg");
    std::fs::write(&f, connection()).unwrap();
    let mut v = v;
    v.config_file = Some(f);
    let i = convert(v, &no_env).unwrap();
    assert_eq!(at(&i.tree, "store.url"), "az://devstoreaccount1/other");
    assert_eq!(at(&i.tree, "mount.foreground"), true);
    assert_eq!(at(&i.tree, "logging.output"), "stderr");
}

#[test]
fn bad_files_and_flags_are_errors_naming_the_key() {
    let e = run(&format!("{}acountKey x\n", connection()), &[]).unwrap_err();
    assert!(e.contains("line 7") && e.contains("\"acountKey\""), "{e}");
    let e = run(
        &connection().replace("authType Key", "authType Kerberos"),
        &[],
    )
    .unwrap_err();
    assert!(e.contains("authType") && e.contains("Kerberos"), "{e}");
    let e = run(
        &connection().replace(&format!("accountKey {KEY}"), "accountKey"),
        &[],
    )
    .unwrap_err();
    assert!(e.contains("accountKey has no value"), "{e}");
    let e = run(&connection().replace("containerName data\n", ""), &[]).unwrap_err();
    assert!(e.contains("containerName is missing"), "{e}");
    let e = run(&connection(), &["--cache-size-mb=lots"]).unwrap_err();
    assert!(e.contains("--cache-size-mb") && e.contains("lots"), "{e}");
    let e = run(&connection(), &["-o", "frobnicate"]).unwrap_err();
    assert!(e.contains("-o frobnicate"), "{e}");
    let e = run(&connection(), &["--use-https=maybe"]).unwrap_err();
    assert!(e.contains("--use-https"), "{e}");
    let e = run(&connection(), &["--log-level=LOUD"]).unwrap_err();
    assert!(e.contains("--log-level"), "{e}");
    // ADLS accounts map as BlobFuse2's `type: adls` does: a hierarchical namespace.
    for (cfg, flags) in [
        (connection(), vec!["--use-adls=true"]),
        (format!("{}accountType adls\n", connection()), vec![]),
    ] {
        let Imported { tree, .. } = run(&cfg, &flags).unwrap();
        assert_eq!(tree["store"]["azure"]["hns"], "true", "{tree}");
    }
    // No secret in any of them.
    for args in [&["--cache-size-mb=x"][..], &["-o", "umask=999"]] {
        let e = run(&connection(), args).unwrap_err();
        assert!(!e.contains(KEY), "{e}");
    }
}

#[test]
fn environment_variables_without_a_file_as_v1() {
    let env = |k: &str| -> Option<String> {
        match k {
            "AZURE_STORAGE_ACCOUNT" => Some("acct".into()),
            "AZURE_STORAGE_SAS_TOKEN" => Some("?sv=1&sig=S".into()),
            "AZURE_STORAGE_BLOB_ENDPOINT" => Some("https://acct.blob.example.net".into()),
            "MSI_SECRET" => Some("s".into()),
            _ => None,
        }
    };
    let v = parse_args(os(&["/m", "--container-name=c"])).unwrap();
    let i = convert(v, &env).unwrap();
    assert_eq!(at(&i.tree, "store.url"), "az://acct/c");
    assert_eq!(at(&i.tree, "store.azure.sas-token"), "?sv=1&sig=S");
    assert_eq!(at(&i.tree, "store.azure.mode"), "sas");
    assert_eq!(
        at(&i.tree, "store.endpoint"),
        "https://acct.blob.example.net"
    );
    assert!(i.warnings.join("\n").contains("MSI_SECRET"));
    let e = convert(parse_args(os(&["/m"])).unwrap(), &no_env).unwrap_err();
    assert!(e.contains("AZURE_STORAGE_ACCOUNT"), "{e}");
}

#[test]
fn managed_identity_is_inferred_first_and_msi_endpoint_kept() {
    let cfg = "accountName a\ncontainerName c\naccountKey k\nidentityClientId 1234\nmsiEndpoint http://127.0.0.1:9/token\n";
    let i = run(cfg, &[]).unwrap();
    assert_eq!(at(&i.tree, "store.azure.mode"), "msi");
    assert_eq!(at(&i.tree, "store.azure.client-id"), "1234");
    assert_eq!(
        at(&i.tree, "store.azure.msi-endpoint"),
        "http://127.0.0.1:9/token"
    );
}

#[test]
fn streaming_is_the_block_cache() {
    let i = run(
        &connection(),
        &[
            "--streaming=true",
            "--block-size-mb=32",
            "--max-blocks-per-file=4",
            "--stream-cache-mb=1024",
            "--cache-size-mb=10",
        ],
    )
    .unwrap();
    assert_eq!(at(&i.tree, "read.mode"), "block-cache");
    assert_eq!(at(&i.tree, "cache.read-block-mib"), 32);
    assert_eq!(at(&i.tree, "cache.read-ahead-max-mib"), 128);
    assert_eq!(at(&i.tree, "cache.read-memory-mib"), 1024);
    let w = i.warnings.join("\n");
    assert!(
        w.contains("--cache-size-mb: ignored (only used with --streaming=false"),
        "{w}"
    );
}

#[test]
fn the_guide_lists_every_v1_key_flag_and_variable() {
    let guide = include_str!("../../../docs/migrating-from-blobfuse2.md");
    let v1 = &guide[guide.find("## BlobFuse v1").expect("a BlobFuse v1 section")..];
    for (k, _) in KEYS {
        assert!(v1.contains(&format!("| `{k}` |")), "no row for {k}");
    }
    for (f, _) in FLAGS {
        assert!(v1.contains(&format!("`--{f}`")), "no row for --{f}");
    }
    for (e, _) in ENV {
        assert!(v1.contains(&format!("`{e}`")), "no mention of {e}");
    }
    for o in FUSE_IGNORED {
        assert!(v1.contains(&format!("`{o}")), "no mention of -o {o}");
    }
}
