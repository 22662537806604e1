//! What a rename right after a chmod and a touch costs on GCS (issue 18), through a real
//! mount on fake-gcs-server with the requests counted at the wire.
//!
//! Why: `rsync -a` writes a temporary file, sets its mode and times, and renames it. The mount
//! holds the mode and times and the rename carries them in the copy itself
//! (`Backend::copy_as`). On GCS that is one rewrite whose body is the copy's resource (after
//! one HEAD of the source for its generation, and the HEAD that reads the copy's ETag), not
//! a metadata PATCH of the source (HEAD, PATCH, HEAD) and then a copy (rewrite, HEAD). This
//! test checks the mode and times arrive in the store and that the source is never written.

use std::collections::BTreeMap;

use blobmount_tests::proxy::CountingProxy;
use blobmount_tests::{Emulator, Kind, Mount, MountSpec, http};

/// The user metadata of `key` as the JSON API reports it.
fn store_meta(emu: &Emulator, bucket: &str, key: &str) -> BTreeMap<String, String> {
    let path = format!(
        "/storage/v1/b/{bucket}/o/{}",
        blobmount_backend::gcs::encode_segment(key)
    );
    let (status, body) = http::request(emu.port(), "GET", &path, &[], b"");
    assert_eq!(status, 200, "GCS GET of {key}: {body}");
    let json = &body[body.find('{').unwrap()..=body.rfind('}').unwrap()];
    let v: serde_json::Value = serde_json::from_str(json).unwrap();
    v["metadata"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                .collect()
        })
        .unwrap_or_default()
}

fn sh(dir: &std::path::Path, script: &str) {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{script}: {out:?}");
}

#[test]
fn rename_after_chmod_is_one_rewrite_and_never_writes_the_source() {
    let emu = Emulator::start(Kind::Gcs);
    let bucket = emu.create_bucket();
    let proxy = CountingProxy::start(emu.port());
    let mut spec = MountSpec::for_emulator(&emu, &bucket);
    spec.endpoint = Some(emu.endpoint_on(proxy.port()));
    let m = Mount::start(&spec);
    let d = m.p("");
    let n = 5;
    let mut per_file = Vec::new();
    for i in 0..n {
        sh(&d, &format!("printf 'data {i}' > .f{i}.tmp"));
        proxy.take();
        sh(
            &d,
            &format!(
                "chmod 640 .f{i}.tmp && touch -c -m -d @1500000000 .f{i}.tmp && mv .f{i}.tmp f{i}"
            ),
        );
        let sent = proxy.take();
        println!(
            "rename after chmod and touch of f{i}: {} requests: {sent:?}",
            sent.len()
        );
        let rewrites: Vec<&String> = sent.iter().filter(|l| l.contains("/rewriteTo/")).collect();
        let patches: Vec<&String> = sent.iter().filter(|l| l.starts_with("PATCH ")).collect();
        let uploads: Vec<&String> = sent.iter().filter(|l| l.contains("/upload/")).collect();
        let deletes: Vec<&String> = sent.iter().filter(|l| l.starts_with("DELETE ")).collect();
        assert_eq!(rewrites.len(), 1, "one copy: {sent:?}");
        assert!(
            rewrites[0].contains("ifSourceGenerationMatch="),
            "the copy is of the version the mount knows: {sent:?}"
        );
        assert!(patches.is_empty(), "no metadata PATCH: {sent:?}");
        assert!(uploads.is_empty(), "nothing uploaded again: {sent:?}");
        assert_eq!(deletes.len(), 1, "the old name goes: {sent:?}");
        per_file.push(sent.len());

        let sm = store_meta(&emu, &bucket, &format!("f{i}"));
        assert_eq!(sm.get("mode").map(String::as_str), Some("33184"), "{sm:?}");
        assert!(
            sm.get("mtime").is_some_and(|t| t.starts_with("1500000000")),
            "{sm:?}"
        );
        assert!(emu.get_object_opt(&bucket, &format!(".f{i}.tmp")).is_none());
        assert_eq!(
            emu.get_object(&bucket, &format!("f{i}")),
            format!("data {i}").as_bytes()
        );
    }
    println!("requests per rename after chmod and touch: {per_file:?}");
    // HEAD of the source (its generation), the rewrite, the HEAD reading the copy's ETag,
    // the delete (the trait's default, before: HEAD, PATCH and HEAD of the source, then the
    // rewrite, the HEAD of the copy and the delete).
    assert!(
        per_file.iter().all(|&c| c <= 4),
        "requests per rename: {per_file:?}"
    );
}
