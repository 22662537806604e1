//! Each Azure token mode against a local double of its endpoint (Entra ID token endpoint,
//! managed identity endpoints, a stand-in `az` program), how the mode is picked, refresh
//! before expiry, and clear errors for what is missing.

use std::sync::{Arc, Mutex};

use super::*;
use crate::testdouble::{Double, decode, env_of, form_value};

const TEST_KEY: &str = include_str!("testdata/throwaway-test-rsa-key.pem");
/// A self-signed certificate for [`TEST_KEY`] (`openssl req -x509`), made for these tests.
const TEST_CERT: &str = include_str!("testdata/throwaway-test-cert.pem");

async fn bearer(p: &Provider) -> String {
    match &*p.get_credential().await.unwrap() {
        AzureCredential::BearerToken(t) => t.clone(),
        other => panic!("not a bearer token: {other:?}"),
    }
}

fn token_json(t: &str, expires_in: u64) -> String {
    format!(r#"{{"token_type":"Bearer","access_token":"{t}","expires_in":{expires_in}}}"#)
}

fn spn(tenant: &str, client: &str) -> AzureConfig {
    AzureConfig {
        tenant_id: Some(tenant.into()),
        client_id: Some(client.into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn service_principal_secret_with_refresh_before_expiry() {
    let d = Double::start(|s| {
        let ok = s.path == "/tenant-1/oauth2/v2.0/token"
            && form_value(&s.body, "grant_type").as_deref() == Some("client_credentials")
            && form_value(&s.body, "client_secret").as_deref() == Some("p@ss&word")
            && form_value(&s.body, "scope").as_deref() == Some(SCOPE);
        if ok {
            (200, token_json("eyJ.secret", 100))
        } else {
            (401, format!("AADSTS7000215 {}", s.body))
        }
    });
    let mut az = spn("tenant-1", "app-1");
    az.client_secret = Some(Secret::new("p@ss&word"));
    az.authority_host = Some(d.url());
    let p = find(&az, &env_of(&[])).unwrap().unwrap();
    assert_eq!(bearer(&p).await, "eyJ.secret");
    // 100 s left is inside the margin: fetched again.
    assert_eq!(bearer(&p).await, "eyJ.secret");
    assert_eq!(d.seen().len(), 2);
    assert!(!format!("{p:?}").contains("p@ss"));
    // No mode named: a secret and a tenant pick spn; the same from the environment.
    let env = env_of(&[
        ("AZURE_TENANT_ID", "tenant-1".into()),
        ("AZURE_CLIENT_ID", "app-1".into()),
        ("AZURE_CLIENT_SECRET", "p@ss&word".into()),
        ("AZURE_AUTHORITY_HOST", d.url()),
    ]);
    let p = find(&AzureConfig::default(), &env).unwrap().unwrap();
    assert_eq!(bearer(&p).await, "eyJ.secret");
}

#[tokio::test]
async fn service_principal_certificate_signs_a_client_assertion() {
    let public = ring::rsa::KeyPair::from_pkcs8(
        &base64::engine::general_purpose::STANDARD
            .decode(
                TEST_KEY
                    .lines()
                    .filter(|l| !l.starts_with("-----"))
                    .collect::<String>(),
            )
            .unwrap(),
    )
    .unwrap()
    .public()
    .as_ref()
    .to_vec();
    let (_, thumb) = {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("both.pem");
        std::fs::write(&f, format!("{TEST_CERT}{TEST_KEY}")).unwrap();
        load_certificate(&f).unwrap()
    };
    // The thumbprint is the SHA-1 of the certificate (`openssl x509 -outform DER | sha1sum`).
    let hex: String = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&thumb)
        .unwrap()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(hex, "30f36f18e3783a2eddcf808a32216775583d1f68");
    let d = Double::start(move |s| {
        let Some(jwt) = form_value(&s.body, "client_assertion") else {
            return (400, "no assertion".into());
        };
        let p: Vec<&str> = jwt.split('.').collect();
        let dec = |x: &str| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(x)
                .unwrap()
        };
        let key = ring::signature::UnparsedPublicKey::new(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            &public,
        );
        if key
            .verify(format!("{}.{}", p[0], p[1]).as_bytes(), &dec(p[2]))
            .is_err()
        {
            return (401, "bad signature".into());
        }
        let h: Value = serde_json::from_slice(&dec(p[0])).unwrap();
        let c: Value = serde_json::from_slice(&dec(p[1])).unwrap();
        let ok = h["x5t"] == thumb.as_str()
            && c["iss"] == "app-2"
            && c["sub"] == "app-2"
            && c["aud"]
                .as_str()
                .is_some_and(|a| a.ends_with("/t2/oauth2/v2.0/token"))
            && form_value(&s.body, "client_assertion_type").as_deref()
                == Some("urn:ietf:params:oauth:client-assertion-type:jwt-bearer");
        if ok {
            (200, token_json("eyJ.cert", 3600))
        } else {
            (400, format!("{h} {c}"))
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let pem = dir.path().join("spn.pem");
    std::fs::write(&pem, format!("{TEST_KEY}{TEST_CERT}")).unwrap();
    let mut az = spn("t2", "app-2");
    az.mode = Some(AzureMode::Spn);
    az.client_cert_path = Some(pem);
    az.authority_host = Some(d.url());
    let p = find(&az, &env_of(&[])).unwrap().unwrap();
    assert_eq!(bearer(&p).await, "eyJ.cert");
    // A file without the key says so.
    let only_cert = dir.path().join("cert.pem");
    std::fs::write(&only_cert, TEST_CERT).unwrap();
    az.client_cert_path = Some(only_cert);
    let e = find(&az, &env_of(&[])).err().unwrap().to_string();
    assert!(e.contains("PRIVATE KEY"), "{e}");
}

#[tokio::test]
async fn workload_identity_sends_the_federated_token() {
    let d = Double::start(|s| {
        if form_value(&s.body, "client_assertion").as_deref() == Some("k8s.sa.jwt")
            && form_value(&s.body, "client_id").as_deref() == Some("app-3")
        {
            (200, token_json("eyJ.wi", 3600))
        } else {
            (401, "AADSTS70021".into())
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("token");
    std::fs::write(&f, "k8s.sa.jwt\n").unwrap();
    // What AKS sets in the pod.
    let env = env_of(&[
        ("AZURE_FEDERATED_TOKEN_FILE", f.display().to_string()),
        ("AZURE_CLIENT_ID", "app-3".into()),
        ("AZURE_TENANT_ID", "t3".into()),
        ("AZURE_AUTHORITY_HOST", format!("{}/", d.url())),
    ]);
    let p = find(&AzureConfig::default(), &env).unwrap().unwrap();
    assert!(format!("{p:?}").contains("workload identity app-3"));
    assert_eq!(bearer(&p).await, "eyJ.wi");
    assert_eq!(d.seen()[0].path, "/t3/oauth2/v2.0/token");
}

#[tokio::test]
async fn managed_identity_system_user_assigned_and_app_service() {
    let d = Double::start(|s| {
        let (path, query) = s.path.split_once('?').unwrap_or((s.path.as_str(), ""));
        let q = |k: &str| {
            query.split('&').find_map(|kv| {
                kv.split_once('=')
                    .filter(|(a, _)| *a == k)
                    .map(|(_, v)| decode(v))
            })
        };
        if q("resource").as_deref() != Some(RESOURCE) {
            return (400, "resource".into());
        }
        match path {
            "/imds" if s.headers.get("metadata").map(String::as_str) == Some("true") => {
                let who = q("client_id")
                    .or_else(|| q("object_id"))
                    .or_else(|| q("msi_res_id"))
                    .unwrap_or_else(|| "system".into());
                // expires_in as a string, as IMDS sends it.
                (
                    200,
                    format!(r#"{{"access_token":"mi-{who}","expires_in":"86399"}}"#),
                )
            }
            "/appservice"
                if s.headers.get("x-identity-header").map(String::as_str) == Some("hdr") =>
            {
                (
                    200,
                    r#"{"access_token":"mi-appservice","expires_on":"4102444800"}"#.into(),
                )
            }
            _ => (400, "no header".into()),
        }
    });
    let msi = |f: &dyn Fn(&mut AzureConfig)| {
        let mut az = AzureConfig {
            mode: Some(AzureMode::Msi),
            msi_endpoint: Some(format!("{}/imds", d.url())),
            ..Default::default()
        };
        f(&mut az);
        az
    };
    let none = env_of(&[]);
    for (az, want) in [
        (msi(&|_| {}), "mi-system"),
        (msi(&|a| a.client_id = Some("cid".into())), "mi-cid"),
        (msi(&|a| a.object_id = Some("oid".into())), "mi-oid"),
        (
            msi(&|a| a.resource_id = Some("/subscriptions/s/rg".into())),
            "mi-/subscriptions/s/rg",
        ),
    ] {
        assert_eq!(bearer(&find(&az, &none).unwrap().unwrap()).await, want);
    }
    let two = msi(&|a| {
        a.client_id = Some("c".into());
        a.object_id = Some("o".into());
    });
    assert!(
        find(&two, &none)
            .err()
            .unwrap()
            .to_string()
            .contains("only one of")
    );
    let app = AzureConfig {
        mode: Some(AzureMode::Msi),
        ..Default::default()
    };
    let env = env_of(&[
        ("IDENTITY_ENDPOINT", format!("{}/appservice", d.url())),
        ("IDENTITY_HEADER", "hdr".into()),
    ]);
    assert_eq!(
        bearer(&find(&app, &env).unwrap().unwrap()).await,
        "mi-appservice"
    );
    // Plain HTTP elsewhere than loopback or the IMDS address is refused.
    let bad = msi(&|a| a.msi_endpoint = Some("http://203.0.113.1/token".into()));
    assert!(find(&bad, &none).is_err());
}

#[tokio::test]
async fn azure_cli_login_and_its_failure() {
    let dir = tempfile::tempdir().unwrap();
    let calls = dir.path().join("calls");
    let az = dir.path().join("az");
    std::fs::write(
        &az,
        format!(
            "#!/bin/sh\necho \"$@\" >> {}\nif [ -e {}/logged-out ]; then echo 'ERROR: Please run az login' >&2; exit 1; fi\necho '{{\"accessToken\":\"eyJ.cli\",\"expires_on\":4102444800,\"tokenType\":\"Bearer\"}}'\n",
            calls.display(),
            dir.path().display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&az, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let cfg = AzureConfig {
        mode: Some(AzureMode::Azcli),
        tenant_id: Some("t9".into()),
        ..Default::default()
    };
    let env = env_of(&[("BLOBMOUNT_AZ_PROGRAM", az.display().to_string())]);
    let p = find(&cfg, &env).unwrap().unwrap();
    assert_eq!(bearer(&p).await, "eyJ.cli");
    let args = std::fs::read_to_string(&calls).unwrap();
    assert!(
        args.contains("account get-access-token")
            && args.contains("--resource https://storage.azure.com/")
            && args.contains("--tenant t9"),
        "{args}"
    );
    std::fs::write(dir.path().join("logged-out"), "").unwrap();
    let p = find(&cfg, &env).unwrap().unwrap();
    let e = p.get_credential().await.unwrap_err().to_string();
    assert!(e.contains("az login"), "{e}");
}

#[test]
fn picking_the_mode_and_what_each_needs() {
    let none = env_of(&[]);
    // Nothing asks for a token: azure.rs keeps key / SAS / system identity.
    assert!(find(&AzureConfig::default(), &none).unwrap().is_none());
    let key = AzureConfig {
        mode: Some(AzureMode::Key),
        ..Default::default()
    };
    assert!(find(&key, &none).unwrap().is_none());
    let cases = [
        (
            AzureConfig {
                mode: Some(AzureMode::Spn),
                client_id: Some("c".into()),
                client_secret: Some(Secret::new("s")),
                ..Default::default()
            },
            "no tenant id",
        ),
        (
            AzureConfig {
                mode: Some(AzureMode::Spn),
                tenant_id: Some("t".into()),
                client_id: Some("c".into()),
                ..Default::default()
            },
            "neither a client secret",
        ),
        (
            AzureConfig {
                mode: Some(AzureMode::WorkloadIdentity),
                tenant_id: Some("t".into()),
                client_id: Some("c".into()),
                ..Default::default()
            },
            "no federated token file",
        ),
        (
            AzureConfig {
                mode: Some(AzureMode::Spn),
                tenant_id: Some("t".into()),
                client_secret: Some(Secret::new("s")),
                ..Default::default()
            },
            "no client id",
        ),
        (
            AzureConfig {
                mode: Some(AzureMode::Spn),
                tenant_id: Some("t".into()),
                client_id: Some("c".into()),
                client_secret: Some(Secret::new("s")),
                authority_host: Some("http://login.example.com".into()),
                ..Default::default()
            },
            "must be https",
        ),
    ];
    for (i, (cfg, want)) in cases.iter().enumerate() {
        let e = find(cfg, &none).err().unwrap().to_string();
        assert!(e.contains(want), "case {i}: {e}");
    }
}

#[tokio::test]
async fn a_failed_refresh_keeps_a_token_that_is_still_valid() {
    let fail = Arc::new(Mutex::new(false));
    let f2 = fail.clone();
    let d = Double::start(move |_| {
        if *f2.lock().unwrap() {
            (503, "busy".into())
        } else {
            (200, token_json("eyJ.keep", 200))
        }
    });
    let mut az = spn("t", "c");
    az.client_secret = Some(Secret::new("s"));
    az.authority_host = Some(d.url());
    let p = find(&az, &env_of(&[])).unwrap().unwrap();
    assert_eq!(bearer(&p).await, "eyJ.keep");
    *fail.lock().unwrap() = true;
    assert_eq!(bearer(&p).await, "eyJ.keep");
    let p = find(&az, &env_of(&[])).unwrap().unwrap();
    let e = p.get_credential().await.unwrap_err().to_string();
    assert!(
        e.contains("service principal c") && e.contains("503"),
        "{e}"
    );
}
