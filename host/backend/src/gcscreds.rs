//! Google Cloud credentials found the way Google's client libraries find them, refreshed
//! before they expire: a credentials file (`store.gcs.service-account-file`, else
//! `GOOGLE_APPLICATION_CREDENTIALS`, else the Application Default Credentials file `gcloud
//! auth application-default login` writes) holding a service-account key, an authorized user
//! (refresh token) or an external account (workload identity federation: a subject token
//! from a file or a URL exchanged at Google's STS, optionally impersonating a service
//! account); else the metadata server (GCE, and GKE Workload Identity).
//!
//! Why our own chain instead of `object_store`'s: it signs service-account tokens itself
//! (fine) but sends refresh tokens to a fixed Google address, has no external accounts at
//! all, and its failures do not say which source failed. Here every token request goes to
//! the address in the credentials file (`token_uri`, `token_url`) or the documented override
//! (`GCE_METADATA_HOST`), so each source is tested against a local double.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::Engine;
use object_store::CredentialProvider;
use object_store::gcp::GcpCredential;
use serde_json::Value;
use tracing::info;

use crate::error::BackendError;
use crate::tokens::{Fetch, Refreshing, http_host, post_form, send};

/// What `object_store` and the signer take.
pub(crate) type Provider = Arc<dyn CredentialProvider<Credential = GcpCredential>>;

const SCOPE: &str = "https://www.googleapis.com/auth/devstorage.full_control";
const GOOGLE_TOKEN_URI: &str = "https://oauth2.googleapis.com/token";
const DEFAULT_METADATA: &str = "169.254.169.254";

/// Reads an environment variable (a closure so tests can give their own environment).
pub(crate) type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Where tokens come from.
enum Source {
    ServiceAccount {
        email: String,
        key: Box<ring::rsa::KeyPair>,
        token_uri: String,
    },
    AuthorizedUser {
        client_id: String,
        client_secret: String,
        refresh_token: String,
        token_uri: String,
    },
    External {
        audience: String,
        subject_token_type: String,
        token_url: String,
        subject: Subject,
        impersonate: Option<String>,
    },
    Metadata {
        host: String,
    },
}

/// Where an external account's subject token is read.
enum Subject {
    File {
        path: PathBuf,
        json_field: Option<String>,
    },
    Url {
        url: String,
        headers: Vec<(String, String)>,
        json_field: Option<String>,
    },
}

impl std::fmt::Debug for Source {
    /// Never prints a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::ServiceAccount {
                email, token_uri, ..
            } => {
                write!(f, "service account {email} via {token_uri}")
            }
            Source::AuthorizedUser { token_uri, .. } => {
                write!(f, "authorized user (refresh token) via {token_uri}")
            }
            Source::External {
                audience,
                token_url,
                ..
            } => {
                write!(f, "external account {audience} via {token_url}")
            }
            Source::Metadata { host } => write!(f, "metadata server at {host}"),
        }
    }
}

/// Find the credentials for a GCS store: `file` (the configured key file), else
/// `GOOGLE_APPLICATION_CREDENTIALS`, else the ADC file, else the metadata server.
pub(crate) fn find(file: Option<&Path>, env: Env) -> Result<Provider, BackendError> {
    let chosen = file
        .map(Path::to_path_buf)
        .or_else(|| env("GOOGLE_APPLICATION_CREDENTIALS").map(PathBuf::from));
    let source = match chosen {
        Some(p) => from_file(&p)?,
        None => {
            let adc = adc_file(env);
            if adc.exists() {
                from_file(&adc)?
            } else {
                Source::Metadata {
                    host: env("GCE_METADATA_HOST").unwrap_or_else(|| DEFAULT_METADATA.into()),
                }
            }
        }
    };
    info!(source = ?source, "GCS credentials");
    Ok(Arc::new(Refreshing::new(source)?))
}

fn adc_file(env: Env) -> PathBuf {
    match env("CLOUDSDK_CONFIG") {
        Some(d) => PathBuf::from(d),
        None => env("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/root"))
            .join(".config/gcloud"),
    }
    .join("application_default_credentials.json")
}

fn bad(path: &Path, why: impl std::fmt::Display) -> BackendError {
    BackendError::Config(format!("GCS credentials file {}: {why}", path.display()))
}

fn from_file(path: &Path) -> Result<Source, BackendError> {
    let text = std::fs::read_to_string(path).map_err(|e| bad(path, e))?;
    let v: Value = serde_json::from_str(&text).map_err(|e| bad(path, format!("not JSON: {e}")))?;
    let s = |k: &str| v.get(k).and_then(Value::as_str).map(str::to_string);
    let need = |k: &str| s(k).ok_or_else(|| bad(path, format!("no `{k}`")));
    let token_uri = s("token_uri").unwrap_or_else(|| GOOGLE_TOKEN_URI.into());
    match s("type").as_deref() {
        Some("service_account") => {
            let pem = need("private_key")?;
            Ok(Source::ServiceAccount {
                email: need("client_email")?,
                key: Box::new(rsa_key(&pem).map_err(|e| bad(path, e))?),
                token_uri: checked(&token_uri).map_err(|e| bad(path, e))?,
            })
        }
        Some("authorized_user") => Ok(Source::AuthorizedUser {
            client_id: need("client_id")?,
            client_secret: need("client_secret")?,
            refresh_token: need("refresh_token")?,
            token_uri: checked(&token_uri).map_err(|e| bad(path, e))?,
        }),
        Some("external_account") => {
            let cs = v
                .get("credential_source")
                .ok_or_else(|| bad(path, "no `credential_source`"))?;
            let field = cs
                .get("format")
                .filter(|f| f.get("type").and_then(Value::as_str) == Some("json"))
                .and_then(|f| f.get("subject_token_field_name"))
                .and_then(Value::as_str)
                .map(str::to_string);
            let subject = if let Some(f) = cs.get("file").and_then(Value::as_str) {
                Subject::File {
                    path: f.into(),
                    json_field: field,
                }
            } else if let Some(u) = cs.get("url").and_then(Value::as_str) {
                let headers = cs
                    .get("headers")
                    .and_then(Value::as_object)
                    .map(|h| {
                        h.iter()
                            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_string())))
                            .collect()
                    })
                    .unwrap_or_default();
                Subject::Url {
                    url: u.to_string(),
                    headers,
                    json_field: field,
                }
            } else {
                return Err(bad(
                    path,
                    "external account credential_source is neither `file` nor `url` (AWS- and executable-sourced tokens are not supported)",
                ));
            };
            let token_url =
                s("token_url").unwrap_or_else(|| "https://sts.googleapis.com/v1/token".into());
            Ok(Source::External {
                audience: need("audience")?,
                subject_token_type: need("subject_token_type")?,
                token_url: checked(&token_url).map_err(|e| bad(path, e))?,
                subject,
                impersonate: s("service_account_impersonation_url")
                    .map(|u| checked(&u))
                    .transpose()
                    .map_err(|e| bad(path, e))?,
            })
        }
        other => Err(bad(
            path,
            format!(
                "unsupported credentials type {}; expected service_account, authorized_user or external_account",
                other.unwrap_or("(none)")
            ),
        )),
    }
}

/// Tokens go over HTTPS, or plain HTTP to loopback (local doubles and proxies).
fn checked(url: &str) -> Result<String, String> {
    if url.starts_with("https://") {
        return Ok(url.to_string());
    }
    match http_host(url) {
        Some("127.0.0.1" | "localhost" | "[::1]") => Ok(url.to_string()),
        _ => Err(format!(
            "token address must be https (or loopback http): {url}"
        )),
    }
}

fn rsa_key(pem: &str) -> Result<ring::rsa::KeyPair, String> {
    let b64: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .collect::<Vec<_>>()
        .concat();
    let der = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .map_err(|e| format!("private_key is not PEM: {e}"))?;
    ring::rsa::KeyPair::from_pkcs8(&der)
        .map_err(|e| format!("private_key is not an RSA PKCS#8 key: {e}"))
}

#[async_trait]
impl Fetch for Source {
    type Credential = GcpCredential;
    const NAME: &'static str = "GCS";
    const STORE: &'static str = "GCS";

    async fn fetch(
        &self,
        http: &reqwest::Client,
    ) -> Result<(GcpCredential, Option<SystemTime>), String> {
        let (bearer, expires) = fetch(self, http).await?;
        Ok((GcpCredential { bearer }, Some(expires)))
    }
}

async fn fetch(source: &Source, http: &reqwest::Client) -> Result<(String, SystemTime), String> {
    match source {
        Source::ServiceAccount {
            email,
            key,
            token_uri,
        } => {
            let jwt = signed_jwt(email, key, token_uri)?;
            let form = [
                ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
                ("assertion", jwt.as_str()),
            ];
            token_answer(send(post_form(http, token_uri, &form)).await?)
        }
        Source::AuthorizedUser {
            client_id,
            client_secret,
            refresh_token,
            token_uri,
        } => {
            let form = [
                ("grant_type", "refresh_token"),
                ("client_id", client_id.as_str()),
                ("client_secret", client_secret.as_str()),
                ("refresh_token", refresh_token.as_str()),
            ];
            token_answer(send(post_form(http, token_uri, &form)).await?)
        }
        Source::External {
            audience,
            subject_token_type,
            token_url,
            subject,
            impersonate,
        } => {
            let subject_token = subject_token(subject, http).await?;
            let form = [
                (
                    "grant_type",
                    "urn:ietf:params:oauth:grant-type:token-exchange",
                ),
                ("audience", audience.as_str()),
                ("scope", "https://www.googleapis.com/auth/cloud-platform"),
                (
                    "requested_token_type",
                    "urn:ietf:params:oauth:token-type:access_token",
                ),
                ("subject_token_type", subject_token_type.as_str()),
                ("subject_token", subject_token.as_str()),
            ];
            let sts = token_answer(send(post_form(http, token_url, &form)).await?)?;
            let Some(url) = impersonate else {
                return Ok(sts);
            };
            let body = serde_json::json!({ "scope": [SCOPE], "lifetime": "3600s" });
            let answer = send(
                http.post(url)
                    .bearer_auth(&sts.0)
                    .header("Content-Type", "application/json")
                    .body(body.to_string()),
            )
            .await?;
            let v: Value = serde_json::from_str(&answer).map_err(|e| format!("not JSON: {e}"))?;
            let token = v
                .get("accessToken")
                .and_then(Value::as_str)
                .ok_or("impersonation answered without accessToken")?;
            let expires = v
                .get("expireTime")
                .and_then(Value::as_str)
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(SystemTime::from)
                .unwrap_or_else(|| SystemTime::now() + Duration::from_secs(3600));
            Ok((token.to_string(), expires))
        }
        Source::Metadata { host } => {
            let url =
                format!("http://{host}/computeMetadata/v1/instance/service-accounts/default/token");
            token_answer(send(http.get(url).header("Metadata-Flavor", "Google")).await?)
        }
    }
}

async fn subject_token(s: &Subject, http: &reqwest::Client) -> Result<String, String> {
    let (text, field) = match s {
        Subject::File { path, json_field } => (
            std::fs::read_to_string(path)
                .map_err(|e| format!("subject token {}: {e}", path.display()))?,
            json_field,
        ),
        Subject::Url {
            url,
            headers,
            json_field,
        } => {
            let mut req = http.get(url);
            for (k, v) in headers {
                req = req.header(k, v);
            }
            (send(req).await?, json_field)
        }
    };
    match field {
        None => Ok(text.trim().to_string()),
        Some(f) => serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v.get(f).and_then(Value::as_str).map(str::to_string))
            .ok_or_else(|| format!("subject token has no field `{f}`")),
    }
}

/// An RS256 JWT asking `token_uri` for a storage token as `email`.
fn signed_jwt(email: &str, key: &ring::rsa::KeyPair, token_uri: &str) -> Result<String, String> {
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs();
    let header = b64(br#"{"alg":"RS256","typ":"JWT"}"#);
    let claims = serde_json::json!({
        "iss": email, "scope": SCOPE, "aud": token_uri, "iat": now, "exp": now + 3600,
    });
    let signing = format!("{header}.{}", b64(claims.to_string().as_bytes()));
    let mut sig = vec![0; key.public().modulus_len()];
    key.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        signing.as_bytes(),
        &mut sig,
    )
    .map_err(|e| format!("signing the token request: {e}"))?;
    Ok(format!("{signing}.{}", b64(&sig)))
}

/// An OAuth token answer: `access_token` and `expires_in` seconds (default one hour).
fn token_answer(body: String) -> Result<(String, SystemTime), String> {
    let v: Value =
        serde_json::from_str(&body).map_err(|e| format!("token answer is not JSON: {e}"))?;
    let token = v
        .get("access_token")
        .and_then(Value::as_str)
        .ok_or("token answer has no access_token")?;
    let secs = v.get("expires_in").and_then(Value::as_u64).unwrap_or(3600);
    Ok((
        token.to_string(),
        SystemTime::now() + Duration::from_secs(secs),
    ))
}

#[cfg(test)]
#[path = "gcscreds_tests.rs"]
mod tests;
