//! The DFS client against a local double of an account's endpoints: the requests it sends
//! (method, path, query, headers) for each operation, continuation tokens followed, DFS
//! error codes classified, and `store.azure.hns: auto` settled by Get Account Information.

use super::*;
use crate::api::{Backend, RenameCond};
use crate::azure::AzureBackend;
use crate::config::{HnsMode, StoreConfig};
use crate::testdouble::{Double, Reply, Seen};

fn reply(status: u16, headers: &[(&str, &str)], body: &str) -> Reply {
    Reply {
        status,
        headers: (headers.iter())
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
        body: body.into(),
    }
}

fn config(d: &Double, hns: HnsMode, dfs: bool) -> StoreConfig {
    let mut cfg = StoreConfig {
        url: Some("az://devstoreaccount1/cont".into()),
        endpoint: Some(format!("{}/devstoreaccount1", d.url())),
        ..Default::default()
    };
    cfg.azure.use_emulator = true;
    cfg.azure.hns = hns;
    if dfs {
        cfg.azure.dfs_endpoint = Some(format!("{}/devstoreaccount1", d.url()));
    }
    cfg.retry.max_retries = 0;
    cfg
}

async fn backend(d: &Double, hns: HnsMode, dfs: bool) -> crate::Result<AzureBackend> {
    crate::install_crypto_provider();
    let cfg = config(d, hns, dfs);
    AzureBackend::connect(&cfg.parsed_url().unwrap(), &cfg).await
}

fn signed(s: &Seen) -> bool {
    s.headers
        .get("authorization")
        .is_some_and(|a| a.starts_with("SharedKey devstoreaccount1:"))
}

#[tokio::test]
async fn rename_is_one_put_with_the_source_and_follows_continuations() {
    let d = Double::start_full(|s| {
        if s.path.contains("continuation=tok%2F1") {
            reply(201, &[("etag", "\"0x2\"")], "")
        } else {
            reply(201, &[("x-ms-continuation", "tok/1")], "")
        }
    });
    let b = backend(&d, HnsMode::On, true).await.unwrap();
    assert!(b.capabilities().native_rename && b.capabilities().posix_access);
    let cond = RenameCond {
        source_etag: Some("\"0x1\"".into()),
        no_replace: true,
    };
    let out = b.rename("a b/x", "d/y", &cond).await.unwrap();
    assert_eq!(out.etag.as_deref(), Some("\"0x2\""));
    let seen = d.seen();
    assert_eq!(seen.len(), 2, "{seen:?}");
    let first = &seen[0];
    assert_eq!(first.method, "PUT");
    assert_eq!(first.path, "/devstoreaccount1/cont/d/y");
    assert_eq!(
        first.headers.get("x-ms-rename-source").map(String::as_str),
        Some("/cont/a%20b/x")
    );
    assert_eq!(
        first.headers.get("if-none-match").map(String::as_str),
        Some("*")
    );
    assert_eq!(
        first
            .headers
            .get("x-ms-source-if-match")
            .map(String::as_str),
        Some("\"0x1\"")
    );
    assert!(signed(first), "{first:?}");
    assert_eq!(
        seen[1].path,
        "/devstoreaccount1/cont/d/y?continuation=tok%2F1"
    );
}

#[tokio::test]
async fn directories_and_access_use_the_documented_requests() {
    let d = Double::start_full(|s| match (s.method.as_str(), s.path.as_str()) {
        ("PUT", p) if p.ends_with("/taken?resource=directory") => reply(
            409,
            &[("x-ms-error-code", "PathAlreadyExists")],
            r#"{"error":{"code":"PathAlreadyExists","message":"The specified path already exists."}}"#,
        ),
        ("PUT", _) => reply(201, &[], ""),
        ("DELETE", p) if p.contains("/full?") => reply(
            409,
            &[],
            r#"{"error":{"code":"DirectoryNotEmpty","message":"The recursive query parameter value must be true to delete a non-empty directory."}}"#,
        ),
        ("DELETE", _) => reply(200, &[], ""),
        ("HEAD", _) => reply(
            200,
            &[
                ("x-ms-owner", "1000"),
                ("x-ms-group", "100"),
                ("x-ms-permissions", "rwxr-x---+"),
                (
                    "x-ms-acl",
                    "user::rwx,user:7:r-x,group::r-x,mask::r-x,other::---",
                ),
            ],
            "",
        ),
        ("PATCH", _) => reply(200, &[], ""),
        _ => reply(400, &[], ""),
    });
    let b = backend(&d, HnsMode::On, true).await.unwrap();
    b.create_dir("new", Some(0o750)).await.unwrap();
    let taken = b.create_dir("taken", None).await;
    assert!(
        matches!(taken, Err(BackendError::AlreadyExists { .. })),
        "{taken:?}"
    );
    let full = b.delete_dir("full", false).await;
    assert!(
        matches!(full, Err(BackendError::NotEmpty { .. })),
        "{full:?}"
    );
    b.delete_dir("gone", true).await.unwrap();
    let a = b.get_access("f").await.unwrap();
    assert_eq!(
        (a.owner.as_str(), a.permissions.as_str()),
        ("1000", "rwxr-x---+")
    );
    assert!(a.acl.contains("user:7:r-x"));
    let u = AccessUpdate {
        owner: Some("0".into()),
        permissions: Some("rw-r-----".into()),
        ..Default::default()
    };
    b.set_access("f", &u).await.unwrap();
    let seen = d.seen();
    let paths: Vec<String> = seen
        .iter()
        .map(|s| format!("{} {}", s.method, s.path))
        .collect();
    assert_eq!(
        paths,
        [
            "PUT /devstoreaccount1/cont/new?resource=directory",
            "PUT /devstoreaccount1/cont/taken?resource=directory",
            "DELETE /devstoreaccount1/cont/full?recursive=false",
            "DELETE /devstoreaccount1/cont/gone?recursive=true",
            "HEAD /devstoreaccount1/cont/f?action=getAccessControl&upn=false",
            "PATCH /devstoreaccount1/cont/f?action=setAccessControl",
        ]
    );
    let mk = &seen[0];
    assert_eq!(
        mk.headers.get("if-none-match").map(String::as_str),
        Some("*")
    );
    assert_eq!(
        mk.headers.get("x-ms-permissions").map(String::as_str),
        Some("0750")
    );
    assert_eq!(
        mk.headers.get("x-ms-umask").map(String::as_str),
        Some("0000")
    );
    let set = &seen[5];
    assert_eq!(set.headers.get("x-ms-owner").map(String::as_str), Some("0"));
    assert_eq!(
        set.headers.get("x-ms-permissions").map(String::as_str),
        Some("rw-r-----")
    );
    assert!(!set.headers.contains_key("x-ms-group"));
    assert!(seen.iter().all(signed));
}

#[tokio::test]
async fn auto_asks_the_account_once() {
    let hns = Double::start_full(|s| match s.path.as_str() {
        "/devstoreaccount1/?restype=account&comp=properties" => {
            reply(200, &[("x-ms-is-hns-enabled", "true")], "")
        }
        _ => reply(400, &[], ""),
    });
    let b = backend(&hns, HnsMode::Auto, true).await.unwrap();
    assert!(b.capabilities().native_rename);
    assert_eq!(hns.seen().len(), 1);
    // Azurite answers without the header: flat.
    let flat = Double::start_full(|_| reply(200, &[], ""));
    let b = backend(&flat, HnsMode::Auto, true).await.unwrap();
    assert!(!b.capabilities().native_rename && !b.capabilities().real_dirs);
    // An HNS account without a DFS endpoint for it is used flat; `false` asks nothing.
    let b = backend(&hns, HnsMode::Auto, false).await.unwrap();
    assert!(!b.capabilities().native_rename);
    let before = hns.seen().len();
    let b = backend(&hns, HnsMode::Off, true).await.unwrap();
    assert!(!b.capabilities().native_rename);
    assert_eq!(hns.seen().len(), before);
    let r = b.rename("a", "b", &RenameCond::default()).await;
    assert!(matches!(r, Err(BackendError::NotSupported(_))), "{r:?}");
}

#[tokio::test]
async fn hns_on_an_emulator_endpoint_needs_the_dfs_endpoint() {
    let d = Double::start_full(|_| reply(200, &[], ""));
    let e = backend(&d, HnsMode::On, false)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("store.azure.dfs-endpoint"), "{e}");
}

#[tokio::test]
async fn a_failed_no_replace_is_an_existing_destination_and_a_stale_source_is_stale() {
    let d = Double::start_full(|s| {
        if s.headers.contains_key("x-ms-source-if-match") {
            reply(412, &[("x-ms-error-code", "SourceConditionNotMet")], "")
        } else {
            reply(412, &[("x-ms-error-code", "ConditionNotMet")], "")
        }
    });
    let b = backend(&d, HnsMode::On, true).await.unwrap();
    let no_replace = RenameCond {
        no_replace: true,
        ..Default::default()
    };
    let r = b.rename("a", "b", &no_replace).await;
    assert!(
        matches!(r, Err(BackendError::AlreadyExists { .. })),
        "{r:?}"
    );
    let stale = RenameCond {
        source_etag: Some("\"0x1\"".into()),
        no_replace: true,
    };
    let r = b.rename("a", "b", &stale).await;
    assert!(
        matches!(r, Err(BackendError::PreconditionFailed { .. })),
        "{r:?}"
    );
}
