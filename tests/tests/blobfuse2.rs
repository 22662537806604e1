//! BlobFuse2 users switch by changing the command name: BlobFuse2's own sample configs (file
//! cache, block cache), pointed at Azurite, mount through `blobmount mount DIR
//! --config-file=F` and serve reads and writes; `config import` prints a native file that
//! mounts the same; a refused key stops the mount before anything is mounted, and a secret
//! in the file never reaches stderr.

use std::path::Path;
use std::time::Duration;

use blobmount_tests::{AZURITE_KEY, Emulator, Kind, Mount, MountSpec, is_mounted, run_cli};

/// BlobFuse2's `sampleFileCacheConfig.yaml` with an account, a cache path and Azurite.
fn file_cache_config(emu: &Emulator, container: &str, cache: &Path) -> String {
    format!(
        "logging:\n  type: base\n  level: log_info\n  file-path: {cache}/bf2.log\ncomponents:\n  - libfuse\n  - file_cache\n  - attr_cache\n  - azstorage\nlibfuse:\n  attribute-expiration-sec: 120\n  entry-expiration-sec: 120\n  negative-entry-expiration-sec: 240\nfile_cache:\n  path: {cache}\n  timeout-sec: 120\n  max-size-mb: 4096\nattr_cache:\n  timeout-sec: 7200\nazstorage:\n  type: block\n  account-name: devstoreaccount1\n  account-key: {AZURITE_KEY}\n  mode: key\n  container: {container}\n  endpoint: {}\n",
        emu.endpoint(),
        cache = cache.display()
    )
}

/// BlobFuse2's `sampleBlockCacheConfig.yaml`, likewise.
fn block_cache_config(emu: &Emulator, container: &str) -> String {
    format!(
        "logging:\n  type: syslog\n  level: log_debug\ncomponents:\n  - libfuse\n  - block_cache\n  - attr_cache\n  - azstorage\nlibfuse:\n  attribute-expiration-sec: 120\n  entry-expiration-sec: 120\n  negative-entry-expiration-sec: 240\nblock_cache:\n  block-size-mb: 32\n  mem-size-mb: 4096\n  prefetch: 80\n  parallelism: 128\nattr_cache:\n  timeout-sec: 7200\nazstorage:\n  type: block\n  account-name: devstoreaccount1\n  account-key: {AZURITE_KEY}\n  mode: key\n  container: {container}\n  endpoint: {}\n",
        emu.endpoint()
    )
}

/// A mount started the way BlobFuse2 users start theirs (no store URL argument: the
/// config file names the store), with its cache in `cache`.
fn bf2_mount(args: &[&str], cache: &Path) -> Mount {
    Mount::start(&MountSpec {
        url: String::new(),
        endpoint: None,
        env: vec![],
        args: args.iter().map(|a| a.to_string()).collect(),
        cache: Some(cache.to_path_buf()),
        mountpoint: None,
    })
}

fn reads_and_writes(m: &Mount, emu: &Emulator, container: &str, tag: &str) {
    emu.put_object(container, &format!("{tag}-outside.txt"), b"from the SDK");
    let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    std::fs::write(m.p(&format!("{tag}.bin")), &data)
        .unwrap_or_else(|e| panic!("{e}: {}", m.log_text()));
    assert_eq!(emu.get_object(container, &format!("{tag}.bin")), data);
    assert_eq!(
        std::fs::read(m.p(&format!("{tag}-outside.txt"))).unwrap(),
        b"from the SDK"
    );
    assert_eq!(std::fs::read(m.p(&format!("{tag}.bin"))).unwrap(), data);
}

#[test]
fn blobfuse2_sample_configs_mount_and_serve() {
    let emu = Emulator::start(Kind::Azure);
    let container = emu.create_bucket();
    let work = tempfile::tempdir().unwrap();
    // File cache sample.
    let fc_cache = work.path().join("fc");
    std::fs::create_dir_all(&fc_cache).unwrap();
    let fc = work.path().join("fc.yaml");
    std::fs::write(&fc, file_cache_config(&emu, &container, &fc_cache)).unwrap();
    let arg = format!("--config-file={}", fc.display());
    {
        let m = bf2_mount(&[&arg], &fc_cache);
        reads_and_writes(&m, &emu, &container, "fc");
        let out = m.log_text();
        assert!(out.contains("file_cache.timeout-sec: ignored"), "{out}");
        assert!(!out.contains(AZURITE_KEY), "the key reached the output");
        // The file cache holds the file read (read mode file-cache).
        let log = std::fs::read_to_string(fc_cache.join("bf2.log")).unwrap_or_default();
        assert!(
            log.contains("mounted"),
            "logging.type base writes the log file: {log}"
        );
    }
    // Block cache sample.
    let bc_cache = work.path().join("bc");
    std::fs::create_dir_all(&bc_cache).unwrap();
    let bc = work.path().join("bc.yaml");
    // The container comes from BlobFuse2's --container-name flag, as BlobFuse2 users often
    // give it, and the file has none.
    let text =
        block_cache_config(&emu, &container).replace(&format!("  container: {container}\n"), "");
    assert!(!text.contains("container:"));
    std::fs::write(&bc, text).unwrap();
    let arg = format!("--config-file={}", bc.display());
    let name = format!("--container-name={container}");
    {
        let m = bf2_mount(
            &[&arg, &name, "--attr-timeout", "5", "--use-https=false"],
            &bc_cache,
        );
        reads_and_writes(&m, &emu, &container, "bc");
        assert!(m.log_text().contains("block_cache.parallelism: ignored"));
    }
    // `config import` prints a native file that mounts the same container.
    let r = run_cli(
        &[
            "config",
            "import",
            "--from",
            "blobfuse2",
            fc.to_str().unwrap(),
        ],
        &[],
        Duration::from_secs(30),
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        r.stdout
            .contains("# warning: file_cache.timeout-sec: ignored")
    );
    let native = work.path().join("native.yaml");
    std::fs::write(&native, &r.stdout).unwrap();
    let nat_cache = work.path().join("nat");
    std::fs::create_dir_all(&nat_cache).unwrap();
    let cfg_arg = format!("--config={}", native.display());
    let m = bf2_mount(&[&cfg_arg], &nat_cache);
    assert_eq!(
        std::fs::read(m.p("fc-outside.txt")).unwrap(),
        b"from the SDK"
    );
}

#[test]
fn a_refused_key_stops_the_mount_and_secrets_stay_out_of_errors() {
    let emu = Emulator::start(Kind::Azure);
    let container = emu.create_bucket();
    let work = tempfile::tempdir().unwrap();
    // (`type: adls` is no longer refused: it is `store.azure.hns: true`.)
    let cfg = work.path().join("cpk.yaml");
    std::fs::write(
        &cfg,
        format!(
            "components: [libfuse, azstorage]\nazstorage:\n  cpk-enabled: true\n  account-name: devstoreaccount1\n  account-key: {AZURITE_KEY}\n  container: {container}\n"
        ),
    )
    .unwrap();
    let mnt = tempfile::tempdir().unwrap();
    let r = run_cli(
        &[
            "mount",
            mnt.path().to_str().unwrap(),
            &format!("--config-file={}", cfg.display()),
            "--foreground",
        ],
        &[],
        Duration::from_secs(30),
    );
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(
        r.stderr.contains("azstorage.cpk-enabled: refused"),
        "{}",
        r.stderr
    );
    assert!(!r.stderr.contains(AZURITE_KEY));
    assert!(!is_mounted(mnt.path()));
}

#[test]
fn mount_all_and_unmount_all_on_three_containers() {
    let emu = Emulator::start(Kind::Azure);
    let names: Vec<String> = (0..4).map(|_| emu.create_bucket()).collect();
    for n in &names {
        emu.put_object(n, "hello.txt", n.as_bytes());
    }
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("cache");
    let cfg = work.path().join("all.yaml");
    // The fourth container is denied.
    std::fs::write(
        &cfg,
        format!(
            "components: [libfuse, file_cache, azstorage]\nfile_cache:\n  path: {}\nazstorage:\n  account-name: devstoreaccount1\n  account-key: {AZURITE_KEY}\n  endpoint: {}\nmountall:\n  container-denylist: [{}]\n",
            cache.display(),
            emu.endpoint(),
            names[3]
        ),
    )
    .unwrap();
    let root = work.path().join("mnt");
    // `unmount all` unmounts every blobmount mount it can see: run the whole story in a
    // mount namespace of its own, so the mounts of tests running beside this one are not
    // among them (there they are copies, and unmounting a copy leaves the original alone).
    let bin = blobmount_tests::blobmount_bin();
    let mut checks = String::new();
    for n in &names[..3] {
        checks.push_str(&format!(
            "test \"$(cat {root}/{n}/hello.txt)\" = {n} || {{ echo BAD-READ {n}; exit 1; }}\ntest -d {cache}/{n} || {{ echo NO-CACHE {n}; exit 1; }}\n",
            root = root.display(),
            cache = cache.display()
        ));
    }
    let script = format!(
        "set -u\ntrap '{bin} unmount all --lazy >/dev/null 2>&1' EXIT\n{bin} mount all {root} --config-file={cfg} || exit 1\n{checks}mountpoint -q {root}/{denied} && {{ echo DENIED-MOUNTED; exit 1; }}\n{bin} unmount all || exit 1\nfor n in {live}; do mountpoint -q {root}/$n && {{ echo STILL-MOUNTED $n; exit 1; }}; done\necho ALL-GOOD\n",
        bin = bin.display(),
        root = root.display(),
        cfg = cfg.display(),
        denied = names[3],
        live = names[..3].join(" "),
    );
    let out = std::process::Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .env_remove("AWS_CA_BUNDLE")
        .output()
        .expect("unshare (util-linux)");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success() && text.contains("ALL-GOOD"), "{text}");
    for n in &names[..3] {
        assert!(
            text.contains(&format!("mounted az://devstoreaccount1/{n} on")),
            "{text}"
        );
        let gone = format!("from {}", root.join(n).display());
        assert!(text.contains(&gone), "unmount all unmounted {n}: {text}");
    }
    // Nothing leaked into this namespace.
    for n in &names {
        assert!(!is_mounted(&root.join(n)));
    }
}

#[test]
fn an_encrypted_config_mounts_with_the_right_passphrase_only() {
    let emu = Emulator::start(Kind::Azure);
    let container = emu.create_bucket();
    emu.put_object(&container, "s.txt", b"sealed");
    let work = tempfile::tempdir().unwrap();
    let cache = work.path().join("c");
    std::fs::create_dir_all(&cache).unwrap();
    let plain = work.path().join("plain.yaml");
    std::fs::write(
        &plain,
        block_cache_config(&emu, &container).replace("type: syslog", "type: silent"),
    )
    .unwrap();
    let sealed = work.path().join("sealed.yaml");
    let enc = run_cli(
        &[
            "secure",
            "encrypt",
            &format!("--config-file={}", plain.display()),
            "--passphrase=correct horse battery",
            &format!("--output-file={}", sealed.display()),
        ],
        &[],
        Duration::from_secs(60),
    );
    assert_eq!(enc.code, Some(0), "{}", enc.stderr);
    let on_disk = std::fs::read_to_string(&sealed).unwrap();
    assert!(!on_disk.contains(AZURITE_KEY) && !on_disk.contains("azstorage"));
    // `secure get` reads one key back.
    let get = run_cli(
        &[
            "secure",
            "get",
            &format!("--config-file={}", sealed.display()),
            "--key=azstorage.container",
        ],
        &[("BLOBMOUNT_SECURE_PASSPHRASE", "correct horse battery")],
        Duration::from_secs(60),
    );
    assert_eq!(
        (get.code, get.stdout.trim()),
        (Some(0), container.as_str()),
        "{}",
        get.stderr
    );
    let arg = format!("--config-file={}", sealed.display());
    {
        let m = bf2_mount(
            &[
                &arg,
                "--secure-config",
                "--passphrase=correct horse battery",
            ],
            &cache,
        );
        assert_eq!(std::fs::read(m.p("s.txt")).unwrap(), b"sealed");
    }
    let mnt = tempfile::tempdir().unwrap();
    let mp = mnt.path().to_str().unwrap().to_string();
    for (extra, want) in [
        (
            vec!["--secure-config", "--passphrase=wrong horse battery"],
            "wrong passphrase",
        ),
        (vec![], "is encrypted"),
    ] {
        let mut args = vec!["mount", mp.as_str(), arg.as_str(), "--foreground"];
        args.extend(extra);
        let r = run_cli(&args, &[], Duration::from_secs(60));
        assert_eq!(r.code, Some(2), "{}", r.stderr);
        assert!(r.stderr.contains(want), "{}", r.stderr);
        assert!(!r.stderr.contains(AZURITE_KEY) && !r.stderr.contains("azstorage:"));
        assert!(!is_mounted(mnt.path()));
    }
}
