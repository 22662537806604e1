//! Each source of the GCS chain against a local double of its token endpoint: a service
//! account's signed JWT grant (the signature checked with the key's public half), an
//! authorized user's refresh token, an external account's token exchange (subject token
//! from a file or a URL, with impersonation), the metadata server; the order of the chain,
//! refresh before expiry, and clear errors for bad files.

use std::sync::{Arc, Mutex};

use base64::Engine;

use super::*;
use crate::testdouble::{Double, env_of, form_value};

/// A key made for these tests only (`openssl genpkey -algorithm RSA`); it signs nothing else.
const TEST_KEY: &str = include_str!("testdata/throwaway-test-rsa-key.pem");

async fn bearer(p: &Provider) -> String {
    p.get_credential().await.unwrap().bearer.clone()
}

fn write(dir: &tempfile::TempDir, name: &str, v: serde_json::Value) -> PathBuf {
    let p = dir.path().join(name);
    std::fs::write(&p, v.to_string()).unwrap();
    p
}

#[tokio::test]
async fn service_account_key_signs_a_jwt_grant() {
    let public = rsa_key(TEST_KEY).unwrap().public().as_ref().to_vec();
    let d = Double::start(move |s| {
        let Some(jwt) = form_value(&s.body, "assertion") else {
            return (400, "no assertion".into());
        };
        let parts: Vec<&str> = jwt.split('.').collect();
        let dec = |x: &str| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(x)
                .unwrap()
        };
        let signed = format!("{}.{}", parts[0], parts[1]);
        let key = ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            &public,
        );
        if key.verify(signed.as_bytes(), &dec(parts[2])).is_err() {
            return (401, "bad signature".into());
        }
        let claims: serde_json::Value = serde_json::from_slice(&dec(parts[1])).unwrap();
        let ok = form_value(&s.body, "grant_type").as_deref()
            == Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
            && claims["iss"] == "mount@p.iam.gserviceaccount.com"
            && claims["scope"] == SCOPE
            && claims["aud"]
                .as_str()
                .is_some_and(|a| a.ends_with("/token"));
        if ok {
            (
                200,
                r#"{"access_token":"ya29.sa","expires_in":3599}"#.into(),
            )
        } else {
            (400, format!("claims {claims}"))
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let key = write(
        &dir,
        "sa.json",
        serde_json::json!({
            "type": "service_account",
            "client_email": "mount@p.iam.gserviceaccount.com",
            "private_key": TEST_KEY,
            "token_uri": format!("{}/token", d.url()),
        }),
    );
    let p = find(Some(&key), &env_of(&[])).unwrap();
    assert_eq!(bearer(&p).await, "ya29.sa");
    assert_eq!(bearer(&p).await, "ya29.sa");
    assert_eq!(d.seen().len(), 1, "cached while far from expiry");
    // GOOGLE_APPLICATION_CREDENTIALS names the same file when the config does not.
    let p = find(
        None,
        &env_of(&[("GOOGLE_APPLICATION_CREDENTIALS", key.display().to_string())]),
    )
    .unwrap();
    assert!(format!("{p:?}").contains("service account mount@p"));
}

#[tokio::test]
async fn adc_authorized_user_refreshes_before_expiry() {
    let d = Double::start(|s| {
        if form_value(&s.body, "refresh_token").as_deref() == Some("1//refresh")
            && form_value(&s.body, "client_secret").as_deref() == Some("shh")
        {
            // Inside the 5-minute margin: every use asks again.
            (
                200,
                r#"{"access_token":"ya29.user","expires_in":120}"#.into(),
            )
        } else {
            (400, "invalid_grant".into())
        }
    });
    let home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(home.path().join(".config/gcloud")).unwrap();
    std::fs::write(
        home.path()
            .join(".config/gcloud/application_default_credentials.json"),
        serde_json::json!({
            "type": "authorized_user", "client_id": "cid", "client_secret": "shh",
            "refresh_token": "1//refresh", "token_uri": format!("{}/token", d.url()),
        })
        .to_string(),
    )
    .unwrap();
    let p = find(
        None,
        &env_of(&[("HOME", home.path().display().to_string())]),
    )
    .unwrap();
    assert_eq!(bearer(&p).await, "ya29.user");
    assert_eq!(bearer(&p).await, "ya29.user");
    assert_eq!(d.seen().len(), 2);
    assert!(!format!("{p:?}").contains("shh"));
}

#[tokio::test]
async fn external_account_exchanges_a_subject_token_and_impersonates() {
    let d = Double::start(|s| match s.path.as_str() {
        "/subject" if s.headers.get("metadata") == Some(&"yes".to_string()) => {
            (200, r#"{"id_token":"oidc-from-url"}"#.into())
        }
        "/sts" => {
            let t = form_value(&s.body, "subject_token").unwrap_or_default();
            if form_value(&s.body, "audience").as_deref() == Some("//iam.googleapis.com/pool")
                && (t == "oidc-from-file" || t == "oidc-from-url")
            {
                (
                    200,
                    format!(r#"{{"access_token":"sts-{t}","expires_in":3600}}"#),
                )
            } else {
                (400, format!("bad exchange {}", s.body))
            }
        }
        "/impersonate" => {
            if s.headers.get("authorization").map(String::as_str)
                == Some("Bearer sts-oidc-from-url")
            {
                (
                    200,
                    r#"{"accessToken":"ya29.impersonated","expireTime":"2999-01-01T00:00:00Z"}"#
                        .into(),
                )
            } else {
                (403, "no".into())
            }
        }
        _ => (404, String::new()),
    });
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("oidc");
    std::fs::write(&token, "oidc-from-file\n").unwrap();
    let base = |source: serde_json::Value| {
        serde_json::json!({
            "type": "external_account",
            "audience": "//iam.googleapis.com/pool",
            "subject_token_type": "urn:ietf:params:oauth:token-type:jwt",
            "token_url": format!("{}/sts", d.url()),
            "credential_source": source,
        })
    };
    let f = write(
        &dir,
        "file.json",
        base(serde_json::json!({ "file": token })),
    );
    assert_eq!(
        bearer(&find(Some(&f), &env_of(&[])).unwrap()).await,
        "sts-oidc-from-file"
    );
    let mut v = base(serde_json::json!({
        "url": format!("{}/subject", d.url()),
        "headers": {"Metadata": "yes"},
        "format": {"type": "json", "subject_token_field_name": "id_token"},
    }));
    v["service_account_impersonation_url"] = format!("{}/impersonate", d.url()).into();
    let f = write(&dir, "url.json", v);
    assert_eq!(
        bearer(&find(Some(&f), &env_of(&[])).unwrap()).await,
        "ya29.impersonated"
    );
}

#[tokio::test]
async fn metadata_server_last_and_failures_name_the_source() {
    let fail = Arc::new(Mutex::new(false));
    let f2 = fail.clone();
    let d = Double::start(move |s| {
        if *f2.lock().unwrap() {
            (503, "down".into())
        } else if s.headers.get("metadata-flavor").map(String::as_str) == Some("Google")
            && s.path == "/computeMetadata/v1/instance/service-accounts/default/token"
        {
            (
                200,
                r#"{"access_token":"ya29.gce","expires_in":200}"#.into(),
            )
        } else {
            (400, "no flavor".into())
        }
    });
    let home = tempfile::tempdir().unwrap();
    let env = env_of(&[
        ("HOME", home.path().display().to_string()),
        (
            "GCE_METADATA_HOST",
            format!("127.0.0.1:{}", d.url().rsplit(':').next().unwrap()),
        ),
    ]);
    let p = find(None, &env).unwrap();
    assert_eq!(bearer(&p).await, "ya29.gce");
    *fail.lock().unwrap() = true;
    // Near expiry a refresh is tried; it fails; the still valid token is used.
    assert_eq!(bearer(&p).await, "ya29.gce");
    let p = find(None, &env).unwrap();
    let e = p.get_credential().await.unwrap_err().to_string();
    assert!(e.contains("metadata server") && e.contains("503"), "{e}");
}

#[test]
fn bad_files_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            serde_json::json!({"type": "service_account", "client_email": "x"}),
            "no `private_key`",
        ),
        (
            serde_json::json!({"type": "service_account", "client_email": "x", "private_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----"}),
            "not an RSA PKCS#8 key",
        ),
        (
            serde_json::json!({"type": "impersonated_service_account"}),
            "unsupported credentials type",
        ),
        (
            serde_json::json!({"type": "authorized_user", "client_id": "a", "client_secret": "b", "refresh_token": "c", "token_uri": "http://203.0.113.9/token"}),
            "must be https",
        ),
        (
            serde_json::json!({"type": "external_account", "audience": "a", "subject_token_type": "t", "credential_source": {"environment_id": "aws1"}}),
            "not supported",
        ),
    ];
    for (i, (v, want)) in cases.into_iter().enumerate() {
        let f = write(&dir, &format!("{i}.json"), v);
        let e = find(Some(&f), &env_of(&[])).err().unwrap().to_string();
        assert!(e.contains(want), "case {i}: {e}");
    }
    let missing = dir.path().join("nope.json");
    let e = find(Some(&missing), &env_of(&[]))
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("nope.json"), "{e}");
}
