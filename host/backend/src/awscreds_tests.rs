//! Each source of the AWS chain against a local double of its endpoint (IMDSv2, STS, the
//! container credential endpoint), the profile files, the order of the chain, and refresh
//! before expiry.

use std::sync::{Arc, Mutex};

use super::*;
use crate::testdouble::{Double, env_of};

fn in_secs(s: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(s)).to_rfc3339()
}

fn creds_json(id: &str, expires_in: i64) -> String {
    format!(
        r#"{{"AccessKeyId":"{id}","SecretAccessKey":"s-{id}","Token":"t-{id}","Expiration":"{}"}}"#,
        in_secs(expires_in)
    )
}

async fn key_id(f: &Found) -> String {
    f.provider.get_credential().await.unwrap().key_id.clone()
}

fn no_home() -> (&'static str, String) {
    ("HOME", "/nonexistent-home".into())
}

#[tokio::test]
async fn imds_v2_with_its_token_and_refresh_before_expiry() {
    let expires_in = Arc::new(Mutex::new(3600i64));
    let e2 = expires_in.clone();
    let d = Double::start(move |s| match (s.method.as_str(), s.path.as_str()) {
        ("PUT", "/latest/api/token") => (200, "imds-token".into()),
        (_, p)
            if s.headers
                .get("x-aws-ec2-metadata-token")
                .map(String::as_str)
                != Some("imds-token") =>
        {
            (401, format!("no token for {p}"))
        }
        ("GET", "/latest/meta-data/iam/security-credentials/") => (200, "role-a\n".into()),
        ("GET", "/latest/meta-data/iam/security-credentials/role-a") => {
            (200, creds_json("ASIAIMDS", *e2.lock().unwrap()))
        }
        _ => (404, String::new()),
    });
    let (k, v) = no_home();
    let env = env_of(&[("AWS_EC2_METADATA_SERVICE_ENDPOINT", d.url()), (k, v)]);
    let f = find(&S3Config::default(), Some("eu-west-1"), &env).unwrap();
    let described = format!("{:?}", f.provider);
    assert!(described.contains("instance metadata"), "{described}");
    assert_eq!(key_id(&f).await, "ASIAIMDS");
    let c = f.provider.get_credential().await.unwrap();
    assert_eq!(c.token.as_deref(), Some("t-ASIAIMDS"));
    assert_eq!(d.seen().len(), 3, "cached while far from expiry");
    // Credentials that expire within the margin are fetched again before use.
    *expires_in.lock().unwrap() = 120;
    let f = find(&S3Config::default(), None, &env).unwrap();
    key_id(&f).await;
    key_id(&f).await;
    assert_eq!(d.seen().len(), 9, "fetched again each time near expiry");
}

#[tokio::test]
async fn a_failed_refresh_keeps_credentials_that_have_not_expired() {
    let fail = Arc::new(Mutex::new(false));
    let f2 = fail.clone();
    let d = Double::start(move |_| {
        if *f2.lock().unwrap() {
            (500, "down".into())
        } else {
            (200, creds_json("ASIAC", 200))
        }
    });
    let env = env_of(&[(
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        format!("{}/creds", d.url()),
    )]);
    let f = find(&S3Config::default(), None, &env).unwrap();
    assert_eq!(key_id(&f).await, "ASIAC");
    *fail.lock().unwrap() = true;
    // Within the margin: a refresh is tried, fails, and the still valid ones are used.
    assert_eq!(key_id(&f).await, "ASIAC");
    assert_eq!(d.seen().len(), 2);
    // With nothing valid cached, the failure is reported with its source.
    let f = find(&S3Config::default(), None, &env).unwrap();
    let e = f.provider.get_credential().await.unwrap_err().to_string();
    assert!(
        e.contains("container credentials") && e.contains("500"),
        "{e}"
    );
}

#[tokio::test]
async fn container_credentials_send_the_token_file() {
    let d = Double::start(|s| {
        if s.headers.get("authorization").map(String::as_str) == Some("pod-token") {
            (200, creds_json("ASIAPOD", 3600))
        } else {
            (403, "bad token".into())
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let tf = dir.path().join("token");
    std::fs::write(&tf, "pod-token\n").unwrap();
    let env = env_of(&[
        (
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            format!("{}/v1/credentials", d.url()),
        ),
        (
            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
            tf.display().to_string(),
        ),
    ]);
    let f = find(&S3Config::default(), None, &env).unwrap();
    assert_eq!(key_id(&f).await, "ASIAPOD");
    assert_eq!(d.seen()[0].path, "/v1/credentials");
    // Plain HTTP to anywhere but loopback and the container addresses is refused.
    let env = env_of(&[(
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "http://203.0.113.5/creds".into(),
    )]);
    let e = find(&S3Config::default(), None, &env)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("plain HTTP"), "{e}");
    let env = env_of(&[(
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "http://169.254.170.23/v1/credentials".into(),
    )]);
    assert!(find(&S3Config::default(), None, &env).is_ok());
}

#[tokio::test]
async fn web_identity_assumes_the_role_with_the_token_file() {
    let d = Double::start(|s| {
        let ok = s.method == "POST"
            && s.body.contains("Action=AssumeRoleWithWebIdentity")
            && s.body.contains("WebIdentityToken=jwt.from.file")
            && s.body.contains("RoleArn=arn%3Aaws%3Aiam%3A%3A1%3Arole%2Fr");
        if ok {
            let x = format!(
                "<AssumeRoleWithWebIdentityResponse><AssumeRoleWithWebIdentityResult><Credentials><AccessKeyId>ASIAWEB</AccessKeyId><SecretAccessKey>s&amp;x</SecretAccessKey><SessionToken>tok</SessionToken><Expiration>{}</Expiration></Credentials></AssumeRoleWithWebIdentityResult></AssumeRoleWithWebIdentityResponse>",
                in_secs(3600)
            );
            (200, x)
        } else {
            (400, format!("bad request: {}", s.body))
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let tf = dir.path().join("token");
    std::fs::write(&tf, "jwt.from.file").unwrap();
    let (k, v) = no_home();
    let env = env_of(&[
        ("AWS_WEB_IDENTITY_TOKEN_FILE", tf.display().to_string()),
        ("AWS_ROLE_ARN", "arn:aws:iam::1:role/r".into()),
        ("AWS_ENDPOINT_URL_STS", d.url()),
        (k, v),
    ]);
    let f = find(&S3Config::default(), None, &env).unwrap();
    let c = f.provider.get_credential().await.unwrap();
    assert_eq!(
        (c.key_id.as_str(), c.secret_key.as_str()),
        ("ASIAWEB", "s&x")
    );
    assert_eq!(c.token.as_deref(), Some("tok"));
    // STS over plain HTTP elsewhere than loopback is refused.
    let env = env_of(&[
        ("AWS_WEB_IDENTITY_TOKEN_FILE", tf.display().to_string()),
        ("AWS_ROLE_ARN", "arn:aws:iam::1:role/r".into()),
        ("AWS_ENDPOINT_URL_STS", "http://sts.example.com".into()),
    ]);
    assert!(find(&S3Config::default(), None, &env).is_err());
}

#[tokio::test]
async fn profiles_from_the_shared_files() {
    let dir = tempfile::tempdir().unwrap();
    let creds = dir.path().join("credentials");
    let config = dir.path().join("config");
    std::fs::write(
        &creds,
        "[default]\naws_access_key_id = AKIADEFAULT\naws_secret_access_key = d\n\n# a comment\n[dev]\naws_access_key_id=AKIADEV\naws_secret_access_key=x\naws_session_token = st\n[half]\naws_access_key_id = AKIAHALF\n",
    )
    .unwrap();
    std::fs::write(
        &config,
        "[profile dev]\nregion = eu-central-1\ns3 =\n  addressing_style = path\n[profile chained]\nrole_arn = arn:aws:iam::1:role/x\nsource_profile = dev\n[profile regiononly]\nregion = ap-south-1\n",
    )
    .unwrap();
    let files = |profile: Option<&str>| {
        let mut v = vec![
            ("AWS_SHARED_CREDENTIALS_FILE", creds.display().to_string()),
            ("AWS_CONFIG_FILE", config.display().to_string()),
            ("AWS_EC2_METADATA_DISABLED", "true".to_string()),
        ];
        if let Some(p) = profile {
            v.push(("AWS_PROFILE", p.to_string()));
        }
        env_of(&v)
    };
    let f = find(&S3Config::default(), None, &files(None)).unwrap();
    assert_eq!(key_id(&f).await, "AKIADEFAULT");
    let f = find(&S3Config::default(), None, &files(Some("dev"))).unwrap();
    let c = f.provider.get_credential().await.unwrap();
    assert_eq!(
        (c.key_id.as_str(), c.token.as_deref()),
        ("AKIADEV", Some("st"))
    );
    assert_eq!(f.region.as_deref(), Some("eu-central-1"));
    // s3.profile in the configuration names it too, and wins over AWS_PROFILE.
    let cfg = S3Config {
        profile: Some("dev".into()),
        ..Default::default()
    };
    let f = find(&cfg, Some("us-west-2"), &files(Some("default"))).unwrap();
    assert_eq!(key_id(&f).await, "AKIADEV");
    assert_eq!(
        f.region.as_deref(),
        Some("us-west-2"),
        "a known region wins"
    );
    for (p, want) in [
        ("missing", "is in neither"),
        ("half", "only one of"),
        ("chained", "source_profile"),
        ("regiononly", "no AWS credentials found"),
    ] {
        let e = find(&S3Config::default(), None, &files(Some(p)))
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains(want), "{p}: {e}");
    }
}

#[tokio::test]
async fn keys_in_the_environment_come_first_and_must_be_complete() {
    let env = env_of(&[
        ("AWS_ACCESS_KEY_ID", "AKIAENV".into()),
        ("AWS_SECRET_ACCESS_KEY", "s".into()),
        ("AWS_PROFILE", "nonexistent".into()),
        (
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            "http://127.0.0.1:1/x".into(),
        ),
    ]);
    let f = find(&S3Config::default(), None, &env).unwrap();
    assert_eq!(key_id(&f).await, "AKIAENV");
    assert!(!format!("{:?}", f.provider).contains("\"s\""));
    let env = env_of(&[("AWS_ACCESS_KEY_ID", "AKIAENV".into())]);
    let e = find(&S3Config::default(), None, &env)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("no secret access key"), "{e}");
}

#[test]
fn ini_sections_and_nested_blocks() {
    let t = "[a]\nx = 1\n  nested = no\n[ profile  b ]\ny=2\n";
    assert_eq!(
        ini_section(t, "a").unwrap().get("x").map(String::as_str),
        Some("1")
    );
    assert!(!ini_section(t, "a").unwrap().contains_key("nested"));
    assert_eq!(ini_section(t, "profile b").unwrap()["y"], "2");
    assert!(ini_section(t, "c").is_none());
}
