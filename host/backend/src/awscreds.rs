//! AWS credentials found the way the AWS CLI and SDKs find them, refreshed before they
//! expire: keys in the configuration or the environment, a profile in the shared
//! `credentials` / `config` files, a web identity token (EKS IRSA and any OIDC federation,
//! through STS `AssumeRoleWithWebIdentity`), container credentials (ECS task roles and EKS
//! Pod Identity) and the instance metadata service (IMDSv2).
//!
//! Why our own chain instead of `object_store`'s: it reads no profile files, allows STS only
//! over HTTPS at its fixed address and container credentials only at the ECS address, so
//! none of its sources but the environment can be tested against a local double, and a
//! failure names no source. Here each source takes the endpoint override the AWS SDKs
//! document (`AWS_ENDPOINT_URL_STS`, `AWS_CONTAINER_CREDENTIALS_FULL_URI`,
//! `AWS_EC2_METADATA_SERVICE_ENDPOINT`), plain HTTP only where the SDKs allow it (loopback
//! and the link-local container addresses), and the chain says which source it picked.
//! The provider is handed to `object_store` and to our REST signer, so every request signs
//! with the same, fresh credentials.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use object_store::CredentialProvider;
use object_store::aws::AwsCredential;
use tracing::info;

use crate::config::S3Config;
use crate::error::BackendError;
use crate::rest::xml_values;
use crate::tokens::{Fetch, Refreshing, http_host, post_form, send};

/// What `object_store` and the signer take.
pub(crate) type Provider = Arc<dyn CredentialProvider<Credential = AwsCredential>>;

const DEFAULT_IMDS: &str = "http://169.254.169.254";
const ECS_HOST: &str = "http://169.254.170.2";

/// Reads an environment variable (a closure so tests can give their own environment).
pub(crate) type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Where the credentials come from.
#[derive(Clone, PartialEq, Eq)]
enum Source {
    Static(Keys),
    WebIdentity {
        token_file: PathBuf,
        role_arn: String,
        session_name: String,
        sts: String,
    },
    Container {
        url: String,
        token: Option<String>,
        token_file: Option<PathBuf>,
    },
    Imds {
        endpoint: String,
    },
}

#[derive(Clone, PartialEq, Eq)]
struct Keys {
    id: String,
    secret: String,
    token: Option<String>,
}

impl std::fmt::Debug for Source {
    /// Never prints a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Static(k) => write!(f, "static keys (id {})", masked(&k.id)),
            Source::WebIdentity { role_arn, sts, .. } => {
                write!(f, "web identity for {role_arn} at {sts}")
            }
            Source::Container { url, .. } => write!(f, "container credentials at {url}"),
            Source::Imds { endpoint } => write!(f, "instance metadata at {endpoint}"),
        }
    }
}

/// The chain's answer: the provider (its `Debug` names the source, never a secret) and the
/// region the profile names, if any.
pub(crate) struct Found {
    pub provider: Provider,
    pub region: Option<String>,
}

/// Find the credentials for an S3 store, in the AWS SDKs' order: keys in the configuration
/// or the environment; the profile (`s3.profile`, `AWS_PROFILE`, else `default`) in the
/// shared files; a web identity token from the environment; container credentials; the
/// instance metadata service (unless `AWS_EC2_METADATA_DISABLED=true`). `region` is the
/// region already known (for the STS address), else the profile's.
pub(crate) fn find(cfg: &S3Config, region: Option<&str>, env: Env) -> Result<Found, BackendError> {
    let (source, described, profile_region) = pick(cfg, region, env)?;
    let region = region.map(str::to_string).or(profile_region);
    info!(source = %described, "AWS credentials");
    Ok(Found {
        provider: Arc::new(Refreshing::new(source)?),
        region,
    })
}

fn pick(
    cfg: &S3Config,
    region: Option<&str>,
    env: Env,
) -> Result<(Source, String, Option<String>), BackendError> {
    let id = cfg
        .access_key_id
        .clone()
        .or_else(|| env("AWS_ACCESS_KEY_ID"));
    let secret = cfg
        .secret_access_key
        .as_ref()
        .map(|s| s.expose().to_string())
        .or_else(|| env("AWS_SECRET_ACCESS_KEY"));
    let token = cfg
        .session_token
        .as_ref()
        .map(|s| s.expose().to_string())
        .or_else(|| env("AWS_SESSION_TOKEN"));
    match (id, secret) {
        (Some(id), Some(secret)) => {
            let d = format!(
                "access key {} from the configuration or environment",
                masked(&id)
            );
            return Ok((Source::Static(Keys { id, secret, token }), d, None));
        }
        (Some(_), None) => {
            return Err(BackendError::Config(
                "an AWS access key id is set but no secret access key (s3.secret-access-key or AWS_SECRET_ACCESS_KEY)".into(),
            ));
        }
        (None, Some(_)) => {
            return Err(BackendError::Config(
                "an AWS secret access key is set but no access key id (s3.access-key-id or AWS_ACCESS_KEY_ID)".into(),
            ));
        }
        (None, None) => {}
    }
    let named = cfg.profile.clone().or_else(|| env("AWS_PROFILE"));
    let profile_name = named.clone().unwrap_or_else(|| "default".into());
    let profile = load_profile(&profile_name, env)?;
    if profile.is_none() && named.is_some() {
        return Err(BackendError::Config(format!(
            "AWS profile '{profile_name}' is in neither {} nor {}",
            credentials_file(env).display(),
            config_file(env).display()
        )));
    }
    let profile = profile.unwrap_or_default();
    let profile_region = profile.get("region").cloned();
    let region = region.map(str::to_string).or(profile_region.clone());
    if let Some(s) = from_profile(&profile_name, &profile, region.clone(), env)? {
        let d = format!("AWS profile '{profile_name}': {s:?}");
        return Ok((s, d, profile_region));
    }
    if let (Some(file), Some(role)) = (env("AWS_WEB_IDENTITY_TOKEN_FILE"), env("AWS_ROLE_ARN")) {
        let s = web_identity(file.into(), role, env("AWS_ROLE_SESSION_NAME"), region, env)?;
        return Ok((s.clone(), format!("{s:?}"), profile_region));
    }
    if let Some(s) = container(env)? {
        return Ok((s.clone(), format!("{s:?}"), profile_region));
    }
    if env("AWS_EC2_METADATA_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
        return Err(BackendError::Config(
            "no AWS credentials found: none in the configuration or environment, no profile with keys, no web identity token, no container credentials, and the instance metadata service is disabled (AWS_EC2_METADATA_DISABLED)".into(),
        ));
    }
    let endpoint = env("AWS_EC2_METADATA_SERVICE_ENDPOINT")
        .unwrap_or_else(|| DEFAULT_IMDS.into())
        .trim_end_matches('/')
        .to_string();
    let s = Source::Imds { endpoint };
    Ok((s.clone(), format!("{s:?}"), profile_region))
}

/// The credentials a profile section gives, if it gives any; an error for a way of getting
/// credentials we do not implement (rather than silently using another source).
fn from_profile(
    name: &str,
    p: &BTreeMap<String, String>,
    region: Option<String>,
    env: Env,
) -> Result<Option<Source>, BackendError> {
    match (p.get("aws_access_key_id"), p.get("aws_secret_access_key")) {
        (Some(id), Some(secret)) => {
            return Ok(Some(Source::Static(Keys {
                id: id.clone(),
                secret: secret.clone(),
                token: p.get("aws_session_token").cloned(),
            })));
        }
        (Some(_), None) | (None, Some(_)) => {
            return Err(BackendError::Config(format!(
                "AWS profile '{name}' has only one of aws_access_key_id and aws_secret_access_key"
            )));
        }
        (None, None) => {}
    }
    if let (Some(file), Some(role)) = (p.get("web_identity_token_file"), p.get("role_arn")) {
        let session = p.get("role_session_name").cloned();
        return web_identity(file.into(), role.clone(), session, region, env).map(Some);
    }
    for unsupported in [
        "source_profile",
        "credential_source",
        "credential_process",
        "sso_session",
        "sso_start_url",
    ] {
        if p.contains_key(unsupported) {
            return Err(BackendError::Config(format!(
                "AWS profile '{name}' gets its credentials through `{unsupported}`, which blobmount does not support; give keys, a web identity token file, or use container or instance credentials"
            )));
        }
    }
    Ok(None)
}

fn web_identity(
    token_file: PathBuf,
    role_arn: String,
    session: Option<String>,
    region: Option<String>,
    env: Env,
) -> Result<Source, BackendError> {
    let sts = match env("AWS_ENDPOINT_URL_STS") {
        Some(e) => e.trim_end_matches('/').to_string(),
        None => format!(
            "https://sts.{}.amazonaws.com",
            region.as_deref().unwrap_or("us-east-1")
        ),
    };
    check_http(&sts, "AWS_ENDPOINT_URL_STS", false)?;
    Ok(Source::WebIdentity {
        token_file,
        role_arn,
        session_name: session.unwrap_or_else(|| "blobmount".into()),
        sts,
    })
}

fn container(env: Env) -> Result<Option<Source>, BackendError> {
    let url = if let Some(rel) = env("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI") {
        format!("{ECS_HOST}{rel}")
    } else if let Some(full) = env("AWS_CONTAINER_CREDENTIALS_FULL_URI") {
        check_http(&full, "AWS_CONTAINER_CREDENTIALS_FULL_URI", true)?;
        full
    } else {
        return Ok(None);
    };
    Ok(Some(Source::Container {
        url,
        token: env("AWS_CONTAINER_AUTHORIZATION_TOKEN"),
        token_file: env("AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE").map(PathBuf::from),
    }))
}

/// Plain HTTP only to loopback (and, for container credentials, the ECS and EKS Pod
/// Identity link-local addresses), as the AWS SDKs allow.
fn check_http(url: &str, what: &str, container: bool) -> Result<(), BackendError> {
    let Some(host) = http_host(url) else {
        return if url.starts_with("https://") {
            Ok(())
        } else {
            Err(BackendError::Config(format!(
                "{what}: not an http(s) URL: {url}"
            )))
        };
    };
    let loopback = host == "localhost"
        || host == "[::1]"
        || host
            .parse::<std::net::Ipv4Addr>()
            .is_ok_and(|a| a.is_loopback());
    let link_local =
        container && ["169.254.170.2", "169.254.170.23", "[fd00:ec2::23]"].contains(&host);
    if loopback || link_local {
        Ok(())
    } else {
        Err(BackendError::Config(format!(
            "{what}: plain HTTP is allowed only to loopback{}; use https: {url}",
            if container {
                " or the container credential addresses"
            } else {
                ""
            }
        )))
    }
}

/// An access key id shortened for logs (`AKIA…WXYZ`): enough to tell keys apart.
fn masked(id: &str) -> String {
    if id.len() <= 8 || !id.is_ascii() {
        return "…".into();
    }
    format!("{}…{}", &id[..4], &id[id.len() - 4..])
}

fn home(env: Env) -> PathBuf {
    env("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
}

fn credentials_file(env: Env) -> PathBuf {
    env("AWS_SHARED_CREDENTIALS_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| home(env).join(".aws/credentials"))
}

fn config_file(env: Env) -> PathBuf {
    env("AWS_CONFIG_FILE")
        .map(PathBuf::from)
        .unwrap_or_else(|| home(env).join(".aws/config"))
}

/// The profile's keys from both files (the credentials file wins); `None` when neither
/// file has the profile.
fn load_profile(name: &str, env: Env) -> Result<Option<BTreeMap<String, String>>, BackendError> {
    let mut found = None::<BTreeMap<String, String>>;
    // In the config file a profile other than `default` is `[profile NAME]`.
    let config_section = if name == "default" {
        "default".to_string()
    } else {
        format!("profile {name}")
    };
    for (file, section) in [
        (config_file(env), config_section),
        (credentials_file(env), name.to_string()),
    ] {
        let text = match std::fs::read_to_string(&file) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(BackendError::Config(format!("{}: {e}", file.display())));
            }
        };
        if let Some(keys) = ini_section(&text, &section) {
            found.get_or_insert_with(BTreeMap::new).extend(keys);
        }
    }
    Ok(found)
}

/// The `key = value` pairs of `[section]` in an AWS-style INI file (comments `#`/`;`; the
/// indented sub-keys of a nested block such as `s3 =` are skipped).
fn ini_section(text: &str, section: &str) -> Option<BTreeMap<String, String>> {
    let mut out = None::<BTreeMap<String, String>>;
    let mut inside = false;
    for line in text.lines() {
        if line.starts_with([' ', '\t']) {
            continue;
        }
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') || l.starts_with(';') {
            continue;
        }
        if let Some(s) = l.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            inside = s.split_whitespace().collect::<Vec<_>>().join(" ") == section;
            if inside {
                out.get_or_insert_with(BTreeMap::new);
            }
            continue;
        }
        if inside && let Some((k, v)) = l.split_once('=') {
            out.get_or_insert_with(BTreeMap::new)
                .insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    out
}

#[async_trait]
impl Fetch for Source {
    type Credential = AwsCredential;
    const NAME: &'static str = "AWS";
    const STORE: &'static str = "S3";

    async fn fetch(&self, http: &reqwest::Client) -> Result<Fetched, String> {
        fetch(self, http).await
    }
}

type Fetched = (AwsCredential, Option<SystemTime>);

async fn fetch(source: &Source, http: &reqwest::Client) -> Result<Fetched, String> {
    match source {
        Source::Static(k) => Ok((
            AwsCredential {
                key_id: k.id.clone(),
                secret_key: k.secret.clone(),
                token: k.token.clone(),
            },
            None,
        )),
        Source::WebIdentity {
            token_file,
            role_arn,
            session_name,
            sts,
        } => assume_role(http, sts, token_file, role_arn, session_name).await,
        Source::Container {
            url,
            token,
            token_file,
        } => {
            let mut req = http.get(url);
            let auth = match token_file {
                Some(f) => Some(read_token(f)?),
                None => token.clone(),
            };
            if let Some(a) = auth {
                req = req.header("Authorization", a);
            }
            json_credentials(send(req).await?)
        }
        Source::Imds { endpoint } => {
            let token = send(
                http.put(format!("{endpoint}/latest/api/token"))
                    .header("X-aws-ec2-metadata-token-ttl-seconds", "21600")
                    .timeout(Duration::from_secs(2)),
            )
            .await?;
            let base = format!("{endpoint}/latest/meta-data/iam/security-credentials/");
            let roles = send(http.get(&base).header("X-aws-ec2-metadata-token", &token)).await?;
            let role = roles
                .lines()
                .next()
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .ok_or("the instance has no IAM role")?;
            let body = send(
                http.get(format!("{base}{role}"))
                    .header("X-aws-ec2-metadata-token", &token),
            )
            .await?;
            json_credentials(body)
        }
    }
}

fn read_token(f: &Path) -> Result<String, String> {
    std::fs::read_to_string(f)
        .map(|t| t.trim().to_string())
        .map_err(|e| format!("token file {}: {e}", f.display()))
}

/// The JSON the container endpoints and IMDS answer.
fn json_credentials(body: String) -> Result<Fetched, String> {
    let v: serde_json::Value =
        serde_json::from_str(&body).map_err(|e| format!("not JSON credentials: {e}"))?;
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    let (Some(key_id), Some(secret_key)) = (s("AccessKeyId"), s("SecretAccessKey")) else {
        return Err("the answer has no AccessKeyId/SecretAccessKey".into());
    };
    Ok((
        AwsCredential {
            key_id,
            secret_key,
            token: s("Token"),
        },
        s("Expiration").as_deref().and_then(parse_time),
    ))
}

async fn assume_role(
    http: &reqwest::Client,
    sts: &str,
    token_file: &Path,
    role_arn: &str,
    session_name: &str,
) -> Result<Fetched, String> {
    let token = read_token(token_file)?;
    let form = [
        ("Action", "AssumeRoleWithWebIdentity"),
        ("Version", "2011-06-15"),
        ("RoleArn", role_arn),
        ("RoleSessionName", session_name),
        ("WebIdentityToken", token.as_str()),
    ];
    let xml = send(post_form(http, &format!("{sts}/"), &form)).await?;
    // STS answers are small and flat: the first element of each name.
    let t = |tag: &str| {
        xml_values(&xml, tag)
            .into_iter()
            .next()
            .map(|v| v.trim().to_string())
    };
    let (Some(key_id), Some(secret_key)) = (t("AccessKeyId"), t("SecretAccessKey")) else {
        return Err("STS answered without credentials".into());
    };
    Ok((
        AwsCredential {
            key_id,
            secret_key,
            token: t("SessionToken"),
        },
        t("Expiration").as_deref().and_then(parse_time),
    ))
}

fn parse_time(s: &str) -> Option<SystemTime> {
    chrono::DateTime::parse_from_rfc3339(s.trim())
        .ok()
        .map(SystemTime::from)
}

#[cfg(test)]
#[path = "awscreds_tests.rs"]
mod tests;
