//! Azure mounts that hold no account key: an account SAS only (from the environment and
//! from `mode: sas` in the config), a connection string only (with a key, and with a SAS and
//! its own blob endpoint), and a SAS without write permission, whose refused upload reaches
//! `close` as EACCES and loses nothing. Until now only the parsing of these was tested.

use base64::Engine;
use blobmount_tests::AZURITE_KEY as AZURITE_KEY_B64;
use blobmount_tests::{Emulator, Kind, Mount, MountSpec, block_on, sh};

/// An account SAS for the Blob service signed with Azurite's key (string-to-sign of
/// version 2020-12-06 and later).
fn account_sas(permissions: &str) -> String {
    let (sv, ss, srt, se, spr) = (
        "2021-08-06",
        "b",
        "sco",
        "2099-01-01T00:00:00Z",
        "https,http",
    );
    let to_sign =
        format!("devstoreaccount1\n{permissions}\n{ss}\n{srt}\n\n{se}\n\n{spr}\n{sv}\n\n");
    let key = base64::engine::general_purpose::STANDARD
        .decode(AZURITE_KEY_B64)
        .unwrap();
    let k = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &key);
    let sig = base64::engine::general_purpose::STANDARD
        .encode(ring::hmac::sign(&k, to_sign.as_bytes()).as_ref());
    let sig: String = sig
        .bytes()
        .map(|b| match b {
            b'+' => "%2B".to_string(),
            b'/' => "%2F".to_string(),
            b'=' => "%3D".to_string(),
            b => (b as char).to_string(),
        })
        .collect();
    format!("sv={sv}&ss={ss}&srt={srt}&sp={permissions}&se={se}&spr={spr}&sig={sig}")
}

/// Everything a mount should do, through one that has only `env` (no account key).
/// `d` names a directory of its own per call.
fn works(emu: &Emulator, bucket: &str, spec: MountSpec, d: &str) {
    let m = Mount::start(&spec);
    let log = |e: std::io::Error| panic!("{e}\n{}", m.log_text());
    std::fs::create_dir(m.p(d)).unwrap_or_else(log);
    std::fs::write(m.p(&format!("{d}/a.txt")), b"alpha").unwrap_or_else(log);
    // A mode held after close goes up with the rename's copy (Copy Blob, whose source the
    // store reads under the same credential: a SAS must be given with the source too).
    std::fs::set_permissions(
        m.p(&format!("{d}/a.txt")),
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .unwrap_or_else(log);
    std::fs::rename(m.p(&format!("{d}/a.txt")), m.p(&format!("{d}/b.txt"))).unwrap_or_else(log);
    assert_eq!(std::fs::read(m.p(&format!("{d}/b.txt"))).unwrap(), b"alpha");
    let stored = block_on(emu.backend(bucket).head(&format!("{d}/b.txt"))).unwrap();
    let mode = stored.metadata.unwrap_or_default().get("mode").cloned();
    assert_eq!(mode.as_deref(), Some("33152"), "mode 0o100600 in the store");
    assert_eq!(sh(m.path(), &format!("ls {d}")), "b.txt\n");
    assert_eq!(emu.get_object(bucket, &format!("{d}/b.txt")), b"alpha");
    std::fs::remove_file(m.p(&format!("{d}/b.txt"))).unwrap();
    assert!(emu.get_object_opt(bucket, &format!("{d}/b.txt")).is_none());
}

fn keyless(emu: &Emulator, bucket: &str, env: &[(&str, String)], args: &[String]) -> MountSpec {
    let mut spec = MountSpec::for_emulator(emu, bucket);
    spec.env = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    spec.args = args.to_vec();
    spec
}

#[test]
fn sas_only_from_the_environment_and_the_config() {
    let emu = Emulator::start(Kind::Azure);
    let bucket = emu.create_bucket();
    let sas = account_sas("rwdlacup");
    works(
        &emu,
        &bucket,
        keyless(
            &emu,
            &bucket,
            &[("AZURE_STORAGE_SAS_TOKEN", format!("?{sas}"))],
            &[],
        ),
        "env",
    );
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("c.yaml");
    std::fs::write(
        &cfg,
        format!("store:\n  azure:\n    mode: sas\n    sas-token: \"{sas}\"\n"),
    )
    .unwrap();
    works(
        &emu,
        &bucket,
        keyless(
            &emu,
            &bucket,
            &[],
            &["--config".into(), cfg.display().to_string()],
        ),
        "config",
    );
}

#[test]
fn connection_string_only_with_a_key_and_with_a_sas() {
    let emu = Emulator::start(Kind::Azure);
    let bucket = emu.create_bucket();
    let endpoint = emu.endpoint();
    let with_key = format!(
        "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey={AZURITE_KEY_B64};BlobEndpoint={endpoint};"
    );
    let mut spec = keyless(
        &emu,
        &bucket,
        &[("AZURE_STORAGE_CONNECTION_STRING", with_key)],
        &[],
    );
    spec.endpoint = None; // the connection string's BlobEndpoint
    works(&emu, &bucket, spec, "d1");
    let with_sas = format!(
        "BlobEndpoint={endpoint};SharedAccessSignature={}",
        account_sas("rwdlacup")
    );
    let mut spec = keyless(
        &emu,
        &bucket,
        &[("AZURE_STORAGE_CONNECTION_STRING", with_sas)],
        &[],
    );
    spec.endpoint = None;
    works(&emu, &bucket, spec, "d2");
}

#[test]
fn a_read_only_sas_refuses_writes_at_close_and_keeps_reading() {
    let emu = Emulator::start(Kind::Azure);
    let bucket = emu.create_bucket();
    emu.put_object(&bucket, "old.txt", b"readable");
    let spec = keyless(
        &emu,
        &bucket,
        &[("AZURE_STORAGE_SAS_TOKEN", account_sas("rl"))],
        &[],
    );
    let m = Mount::start(&spec);
    assert_eq!(std::fs::read(m.p("old.txt")).unwrap(), b"readable");
    // `std::fs::write` drops the file without looking at what close says: close by hand.
    let mut f = std::fs::File::create(m.p("new.txt")).unwrap();
    std::io::Write::write_all(&mut f, b"refused").unwrap();
    let fd = std::os::fd::IntoRawFd::into_raw_fd(f);
    // SAFETY: `fd` is a descriptor we own and close once.
    let rc = unsafe { libc::close(fd) };
    let errno = std::io::Error::last_os_error().raw_os_error();
    assert_eq!(
        (rc, errno),
        (-1, Some(libc::EACCES)),
        "close reports the refusal"
    );
    assert!(emu.get_object_opt(&bucket, "new.txt").is_none());
    // Nothing is lost: the refused upload is kept in the cache directory.
    let kept = blobmount_tests::kept_within(&m.cache, std::time::Duration::from_secs(10));
    assert!(
        kept.iter()
            .any(|p| std::fs::read(p).is_ok_and(|d| d == b"refused")),
        "the refused data is kept: {kept:?}"
    );
}
