//! BlobFuse2 configurations as users write them, read into the native tree: the two
//! samples BlobFuse2 ships, every key of its documented configuration known to the table,
//! refusals, clamping, and no secret in a warning.

use super::*;

/// BlobFuse2's `sampleFileCacheConfig.yaml`, pointed at an account.
const FILE_CACHE: &str = "
logging:
  type: syslog
  level: log_debug
components:
  - libfuse
  - file_cache
  - attr_cache
  - azstorage
libfuse:
  attribute-expiration-sec: 120
  entry-expiration-sec: 120
  negative-entry-expiration-sec: 240
file_cache:
  path: /mnt/blobfusetmp
  timeout-sec: 120
  max-size-mb: 4096
attr_cache:
  timeout-sec: 7200
azstorage:
  type: block
  account-name: myaccount
  account-key: c2VjcmV0LWtleS12YWx1ZQ==
  mode: key
  container: mycontainer
";

/// BlobFuse2's `sampleBlockCacheConfig.yaml`, with a SAS and a private endpoint.
const BLOCK_CACHE: &str = "
components: [libfuse, block_cache, attr_cache, azstorage]
libfuse:
  attribute-expiration-sec: 120
  entry-expiration-sec: 60
  default-permission: 0644
block_cache:
  block-size-mb: 32
  mem-size-mb: 4096
  prefetch: 80
  parallelism: 128
azstorage:
  account-name: acct
  container: data
  mode: sas
  sas: \"?sv=2021&sig=SECRETSIG\"
  endpoint: https://acct.privatelink.blob.core.windows.net/
  subdirectory: train/2024
  max-retries: 3
  retry-backoff-sec: 2
  max-retry-delay-sec: 30
  tier: cool
";

fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |v, p| &v[p])
}

#[test]
fn the_file_cache_sample() {
    let i = import(FILE_CACHE).unwrap();
    let t = &i.tree;
    assert_eq!(at(t, "store.url"), "az://myaccount/mycontainer");
    assert_eq!(at(t, "store.azure.account-key"), "c2VjcmV0LWtleS12YWx1ZQ==");
    assert_eq!(at(t, "store.azure.mode"), "key");
    assert_eq!(at(t, "read.mode"), "file-cache");
    assert_eq!(at(t, "cache.dir"), "/mnt/blobfusetmp");
    assert_eq!(at(t, "cache.file-cache-max-mib"), 4096);
    assert_eq!(at(t, "mount.attr-timeout-secs"), 7200);
    assert!(
        at(t, "cache.list-ttl-secs").is_null(),
        "listings keep blobmount's TTL"
    );
    assert_eq!(at(t, "cache.negative-ttl-secs"), 240);
    assert_eq!(at(t, "logging.output"), "syslog");
    assert_eq!(at(t, "logging.level"), "trace");
    assert!(
        i.warnings
            .iter()
            .any(|w| w.starts_with("file_cache.timeout-sec: ignored"))
    );
    // The tree is a valid native configuration.
    crate::config::from_tree(i.tree.clone())
        .unwrap()
        .validate()
        .unwrap();
    // No warning repeats a secret.
    for w in &i.warnings {
        assert!(!w.contains("c2VjcmV0"), "{w}");
    }
}

#[test]
fn the_block_cache_sample() {
    let i = import(BLOCK_CACHE).unwrap();
    let t = &i.tree;
    assert_eq!(at(t, "read.mode"), "block-cache");
    assert_eq!(at(t, "cache.read-block-mib"), 32);
    assert_eq!(at(t, "cache.read-memory-mib"), 4096);
    // 80 blocks of 32 MiB ahead.
    assert_eq!(at(t, "cache.read-ahead-max-mib"), 2560);
    assert_eq!(at(t, "store.azure.sas-token"), "?sv=2021&sig=SECRETSIG");
    assert_eq!(
        at(t, "store.endpoint"),
        "https://acct.privatelink.blob.core.windows.net"
    );
    assert_eq!(at(t, "mount.subdirectory"), "train/2024");
    assert_eq!(at(t, "mount.file-mode"), "0644");
    assert_eq!(at(t, "mount.dir-mode"), "0644");
    assert_eq!(
        at(t, "mount.attr-timeout-secs"),
        60,
        "the smaller libfuse expiration"
    );
    assert_eq!(at(t, "store.retry.max-retries"), 3);
    assert_eq!(at(t, "store.retry.initial-backoff-ms"), 2000);
    assert_eq!(at(t, "store.retry.max-backoff-ms"), 30000);
    for want in [
        "block_cache.parallelism: ignored",
        "azstorage.tier: ignored",
        "expirations differ",
    ] {
        assert!(
            i.warnings.iter().any(|w| w.contains(want)),
            "{want}: {:?}",
            i.warnings
        );
    }
    assert!(i.warnings.iter().all(|w| !w.contains("SECRETSIG")));
    crate::config::from_tree(i.tree.clone())
        .unwrap()
        .validate()
        .unwrap();
}

/// `type: adls` is an ADLS Gen2 mount: `store.azure.hns: true`, and the DFS endpoint from
/// the endpoint given, whichever of the two it is.
#[test]
fn adls_is_a_hierarchical_namespace() {
    let base = "azstorage:\n  account-name: a\n  container: box\n  type: adls\n";
    let i = import(base).unwrap();
    assert_eq!(i.tree["store"]["azure"]["hns"], "true");
    let dfs = import(&format!(
        "{base}  endpoint: https://a.dfs.core.windows.net/\n"
    ))
    .unwrap();
    assert_eq!(
        dfs.tree["store"]["endpoint"],
        "https://a.blob.core.windows.net"
    );
    assert_eq!(
        dfs.tree["store"]["azure"]["dfs-endpoint"],
        "https://a.dfs.core.windows.net"
    );
    let emu = import(&format!("{base}  endpoint: http://127.0.0.1:9/a\n")).unwrap();
    assert_eq!(
        emu.tree["store"]["azure"]["dfs-endpoint"],
        "http://127.0.0.1:9/a"
    );
    crate::config::from_tree(emu.tree.clone())
        .unwrap()
        .validate()
        .unwrap();
    let block = import("azstorage:\n  account-name: a\n  container: c\n").unwrap();
    assert!(block.tree["store"]["azure"].get("hns").is_none());
}

#[test]
fn refusals_say_why() {
    let base = "azstorage:\n  account-name: a\n  container: c\n";
    for (extra, want) in [
        ("  cpk-enabled: true\n", "customer-provided"),
        ("  workload-identity-token: abc\n", "federated-token-file"),
    ] {
        let e = import(&format!("{base}{extra}")).unwrap_err();
        assert!(e.contains("refused") && e.contains(want), "{e}");
        assert!(!e.contains("abc"), "{e}");
    }
    let both = format!("components: [libfuse, file_cache, block_cache, azstorage]\n{base}");
    assert!(import(&both).unwrap_err().contains("cannot both"));
    let loopback = format!("components: [libfuse, loopbackfs]\n{base}");
    assert!(import(&loopback).unwrap_err().contains("loopbackfs"));
    let ext = format!("libfuse:\n  extension: /x.so\n{base}");
    assert!(import(&ext).unwrap_err().contains("extension"));
    assert!(
        import("components: [libfuse]\n")
            .unwrap_err()
            .contains("azstorage is missing")
    );
}

#[test]
fn pipelines_logging_and_unknown_keys() {
    let base = "azstorage:\n  account-name: a\n  container: c\n";
    let direct = import(&format!(
        "components: [libfuse, attr_cache, azstorage]\n{base}"
    ))
    .unwrap();
    assert_eq!(at(&direct.tree, "read.mode"), "direct");
    let xload = import(&format!(
        "components: [libfuse, xload, azstorage]\nxload:\n  path: /x\n{base}"
    ))
    .unwrap();
    assert_eq!(at(&xload.tree, "read.mode"), "file-cache");
    assert_eq!(at(&xload.tree, "read.preload"), &serde_json::json!([""]));
    assert_eq!(at(&xload.tree, "cache.dir"), "/x");
    let dio = import(&format!(
        "libfuse:\n  direct-io: true\n  attribute-expiration-sec: 9\n{base}"
    ))
    .unwrap();
    assert_eq!(at(&dio.tree, "mount.attr-timeout-secs"), 0);
    let logs = import(&format!("logging:\n  type: base\n  file-path: /var/log/bf2.log\n  level: log_warning\n  max-file-size-mb: 10\n  file-count: 3\n{base}")).unwrap();
    assert_eq!(at(&logs.tree, "logging.output"), "file");
    assert_eq!(at(&logs.tree, "logging.file"), "/var/log/bf2.log");
    assert_eq!(at(&logs.tree, "logging.level"), "warn");
    assert_eq!(at(&logs.tree, "logging.max-files"), 3);
    let silent = import(&format!(
        "logging:\n  type: silent\n  level: log_debug\n{base}"
    ))
    .unwrap();
    assert_eq!(at(&silent.tree, "logging.level"), "off");
    let odd = import(&format!("no-such-key: 1\nfile_cache:\n  path: /c\n{base}")).unwrap();
    assert!(
        odd.warnings
            .iter()
            .any(|w| w.starts_with("no-such-key: not a BlobFuse2 key"))
    );
    assert!(odd.warnings.iter().any(|w| w.contains("not in components")));
    let all = import(&format!(
        "mountall:\n  container-allowlist: [a, b]\n  container-denylist: [c]\n{base}"
    ))
    .unwrap();
    assert_eq!(
        (all.allow.clone(), all.deny.clone()),
        (
            vec!["a".to_string(), "b".to_string()],
            vec!["c".to_string()]
        )
    );
    // Beyond blobmount's ranges: clamped, with a warning naming both keys.
    let big = import(&format!("block_cache:\n  block-size-mb: 128\n  prefetch: 100\ncomponents: [libfuse, block_cache, azstorage]\n{base}")).unwrap();
    assert_eq!(at(&big.tree, "cache.read-block-mib"), 64);
    assert_eq!(at(&big.tree, "cache.read-ahead-max-mib"), 4096);
    assert!(big.warnings.iter().any(|w| {
        w.contains("block_cache.block-size-mb: 128 is outside cache.read-block-mib's range")
    }));
    let http = import("azstorage:\n  account-name: a\n  container: c\n  use-http: true\n").unwrap();
    assert_eq!(
        at(&http.tree, "store.endpoint"),
        "http://a.blob.core.windows.net"
    );
}

#[test]
fn every_documented_key_is_in_the_table_and_every_target_is_a_setting() {
    // The keys of BlobFuse2's advancedConfig.yaml (v2.5): each must have a rule.
    let documented = "foreground allow-other nonempty disable-kernel-cache dynamic-profile profiler-port profiler-ip \
        logging.type logging.level logging.file-path logging.max-file-size-mb logging.file-count logging.goroutine-id logging.compress \
        components libfuse.default-permission libfuse.attribute-expiration-sec libfuse.entry-expiration-sec \
        libfuse.negative-entry-expiration-sec libfuse.fuse-trace libfuse.extension libfuse.direct-io \
        libfuse.kernel-list-cache-expiration-sec entry_cache.timeout-sec xload.block-size-mb xload.path \
        xload.export-progress xload.validate-md5 xload.cleanup-on-start block_cache.block-size-mb block_cache.mem-size-mb \
        block_cache.path block_cache.disk-size-mb block_cache.disk-timeout-sec block_cache.prefetch block_cache.parallelism \
        block_cache.cleanup-on-start file_cache.path file_cache.timeout-sec file_cache.max-size-mb file_cache.allow-non-empty-temp \
        file_cache.cleanup-on-start file_cache.sync-to-flush file_cache.refresh-sec file_cache.ignore-sync file_cache.hard-limit \
        attr_cache.timeout-sec attr_cache.no-symlinks attr_cache.max-size-mb loopbackfs.path azstorage.type azstorage.account-name \
        azstorage.container azstorage.endpoint azstorage.mode azstorage.account-key azstorage.sas azstorage.appid azstorage.resid \
        azstorage.objid azstorage.tenantid azstorage.clientid azstorage.clientsecret azstorage.oauth-token-path \
        azstorage.workload-identity-token azstorage.use-http azstorage.aadendpoint azstorage.subdirectory azstorage.block-size-mb \
        azstorage.max-concurrency azstorage.tier azstorage.block-list-on-mount-sec azstorage.max-retries \
        azstorage.max-retry-timeout-sec azstorage.retry-backoff-sec azstorage.max-retry-delay-sec azstorage.http-proxy \
        azstorage.https-proxy azstorage.fail-unsupported-op azstorage.auth-resource azstorage.update-md5 azstorage.validate-md5 \
        azstorage.disable-compression azstorage.telemetry azstorage.honour-acl azstorage.cpk-enabled azstorage.cpk-encryption-key \
        azstorage.cpk-encryption-key-sha256 azstorage.preserve-acl azstorage.cap-mbps-read azstorage.cap-iops \
        mountall.container-allowlist mountall.container-denylist health_monitor.enable-monitoring \
        health_monitor.stats-poll-interval-sec health_monitor.process-monitor-interval-sec health_monitor.output-path \
        health_monitor.monitor-disable-list";
    for k in documented.split_whitespace() {
        assert!(RULES.iter().any(|(r, _)| *r == k), "no rule for {k}");
    }
    for (k, r) in RULES {
        if let Rule::To(t) | Rule::SecsToMillis(t) = r {
            let known = SETTINGS.iter().any(|s| s.key == *t) || t.starts_with("store.azure.");
            assert!(known, "{k} maps to {t}, which is no setting");
        }
    }
    // And the migration guide lists every key of the table.
    let guide = include_str!("../../../docs/migrating-from-blobfuse2.md");
    for (k, _) in RULES {
        assert!(
            guide.contains(&format!("`{k}`")),
            "docs/migrating-from-blobfuse2.md lacks `{k}`"
        );
    }
}

#[test]
fn the_health_monitor_section_becomes_the_monitor() {
    let text = format!(
        "{FILE_CACHE}health_monitor:\n  enable-monitoring: true\n  stats-poll-interval-sec: 5\n  process-monitor-interval-sec: 30\n  output-path: /var/log/bf\n  monitor-disable-list: [file_cache_monitor, memory_profiler, blobfuse_stats, network_profiler, bogus]\n"
    );
    let i = import(&text).unwrap();
    assert_eq!(at(&i.tree, "monitor.enabled"), &Value::Bool(true));
    assert_eq!(at(&i.tree, "monitor.interval-secs"), &Value::from(5));
    assert_eq!(
        at(&i.tree, "monitor.output"),
        &Value::from("/var/log/bf/monitor_{pid}.jsonl")
    );
    assert_eq!(
        at(&i.tree, "monitor.disable"),
        &serde_json::json!(["file-cache", "memory", "ops", "network"])
    );
    let w = i.warnings.join("\n");
    assert!(w.contains("process-monitor-interval-sec"), "{w}");
    assert!(w.contains("\"bogus\""), "{w}");
    // The result is a valid native configuration.
    let cfg = crate::config::Config::load_tree_with(i.tree, &[]).unwrap();
    cfg.validate().unwrap();
    assert_eq!(cfg.monitor.interval_secs, 5.0);
    // Only the process interval: it is the one interval.
    let i = import(&format!(
        "{FILE_CACHE}health_monitor:\n  enable-monitoring: true\n  process-monitor-interval-sec: 0\n"
    ))
    .unwrap();
    assert_eq!(at(&i.tree, "monitor.interval-secs"), &Value::from(1));
    assert!(i.warnings.join("\n").contains("range"));
}
