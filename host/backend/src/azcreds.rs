//! Microsoft Entra ID (Azure AD) tokens for Azure Storage, with BlobFuse2's `mode` names:
//! a service principal with a secret or a certificate (`spn`), a managed identity, system- or
//! user-assigned by client id, object id or resource id (`msi`), the Azure CLI's login
//! (`azcli`) and AKS workload identity, a federated token file (`workloadidentity`); each
//! token refreshed before it expires. Account keys, SAS and connection strings are not
//! tokens and stay in `azure.rs`.
//!
//! Why our own instead of `object_store`'s: it has no certificate credentials, no managed
//! identity by object id, no App Service identity endpoint, and its failures name no
//! source. Every endpoint here takes the override the Azure SDKs document
//! (`AZURE_AUTHORITY_HOST`, `IDENTITY_ENDPOINT`, `MSI_ENDPOINT`) or a config key, so each
//! mode is tested against a local double.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use base64::Engine;
use object_store::CredentialProvider;
use object_store::azure::AzureCredential;
use serde_json::Value;
use tracing::info;

use crate::config::{AzureConfig, AzureMode, Secret};
use crate::error::BackendError;
use crate::tokens::{Fetch, Refreshing, http_host, post_form, send, urlencode};

/// What `object_store` and the signer take.
pub(crate) type Provider = Arc<dyn CredentialProvider<Credential = AzureCredential>>;

const RESOURCE: &str = "https://storage.azure.com/";
const SCOPE: &str = "https://storage.azure.com/.default";
const DEFAULT_AUTHORITY: &str = "https://login.microsoftonline.com";
const DEFAULT_IMDS: &str = "http://169.254.169.254/metadata/identity/oauth2/token";

/// Reads an environment variable (a closure so tests can give their own environment).
pub(crate) type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Which managed identity.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Identity {
    System,
    ClientId(String),
    ObjectId(String),
    ResourceId(String),
}

enum Source {
    Secret {
        token_url: String,
        client_id: String,
        secret: Secret,
    },
    Certificate {
        token_url: String,
        client_id: String,
        key: Box<ring::rsa::KeyPair>,
        /// SHA-1 of the certificate's DER, base64url (the `x5t` header).
        thumbprint: String,
    },
    Federated {
        token_url: String,
        client_id: String,
        token_file: PathBuf,
    },
    Managed {
        endpoint: String,
        /// App Service / Container Apps identity endpoint: its header value.
        header: Option<Secret>,
        identity: Identity,
    },
    Cli {
        program: String,
        tenant: Option<String>,
    },
}

impl std::fmt::Debug for Source {
    /// Never prints a secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Secret {
                client_id,
                token_url,
                ..
            } => {
                write!(f, "service principal {client_id} (secret) via {token_url}")
            }
            Source::Certificate {
                client_id,
                token_url,
                ..
            } => {
                write!(
                    f,
                    "service principal {client_id} (certificate) via {token_url}"
                )
            }
            Source::Federated {
                client_id,
                token_url,
                ..
            } => {
                write!(f, "workload identity {client_id} via {token_url}")
            }
            Source::Managed {
                endpoint, identity, ..
            } => {
                write!(f, "managed identity {identity:?} at {endpoint}")
            }
            Source::Cli { program, .. } => write!(f, "Azure CLI login ({program})"),
        }
    }
}

fn config_err(msg: impl Into<String>) -> BackendError {
    BackendError::Config(msg.into())
}

/// A token provider for `mode`, or `None` when the mode is not a token mode (key, SAS) or,
/// with no mode given, when nothing asks for a token (then `azure.rs` decides as before:
/// key, SAS, else a system-assigned managed identity through `object_store`). With no mode
/// given, a federated token file (AKS workload identity sets `AZURE_FEDERATED_TOKEN_FILE`)
/// or a client secret or certificate picks that mode.
pub(crate) fn find(az: &AzureConfig, env: Env) -> Result<Option<Provider>, BackendError> {
    let client_id = az.client_id.clone().or_else(|| env("AZURE_CLIENT_ID"));
    let tenant = az.tenant_id.clone().or_else(|| env("AZURE_TENANT_ID"));
    let secret = az
        .client_secret
        .clone()
        .or_else(|| env("AZURE_CLIENT_SECRET").map(Secret::new));
    let cert = az
        .client_cert_path
        .clone()
        .or_else(|| env("AZURE_CLIENT_CERTIFICATE_PATH").map(PathBuf::from));
    let fed = az
        .federated_token_file
        .clone()
        .or_else(|| env("AZURE_FEDERATED_TOKEN_FILE").map(PathBuf::from));
    let mode = match az.mode {
        Some(m) => m,
        None if fed.is_some() && client_id.is_some() && tenant.is_some() => {
            AzureMode::WorkloadIdentity
        }
        None if (secret.is_some() || cert.is_some()) && tenant.is_some() => AzureMode::Spn,
        None => return Ok(None),
    };
    let authority = az
        .authority_host
        .clone()
        .or_else(|| env("AZURE_AUTHORITY_HOST"))
        .unwrap_or_else(|| DEFAULT_AUTHORITY.into());
    let token_url = |tenant: &Option<String>| -> Result<String, BackendError> {
        let t = tenant.as_deref().ok_or_else(|| {
            config_err(format!(
                "azure mode {}: no tenant id (store.azure.tenant-id or AZURE_TENANT_ID)",
                mode.name()
            ))
        })?;
        let url = format!("{}/{t}/oauth2/v2.0/token", authority.trim_end_matches('/'));
        checked(&url, "authority host")?;
        Ok(url)
    };
    let need_client = || {
        client_id.clone().ok_or_else(|| {
            config_err(format!(
                "azure mode {}: no client id (store.azure.client-id or AZURE_CLIENT_ID)",
                mode.name()
            ))
        })
    };
    let source = match mode {
        AzureMode::Key | AzureMode::Sas => return Ok(None),
        AzureMode::Spn => match (secret, cert) {
            (Some(secret), _) => Source::Secret {
                token_url: token_url(&tenant)?,
                client_id: need_client()?,
                secret,
            },
            (None, Some(path)) => {
                let (key, thumbprint) = load_certificate(&path)?;
                Source::Certificate {
                    token_url: token_url(&tenant)?,
                    client_id: need_client()?,
                    key: Box::new(key),
                    thumbprint,
                }
            }
            (None, None) => {
                return Err(config_err(
                    "azure mode spn: neither a client secret (store.azure.client-secret, AZURE_CLIENT_SECRET) nor a certificate (store.azure.client-cert-path, AZURE_CLIENT_CERTIFICATE_PATH)",
                ));
            }
        },
        AzureMode::WorkloadIdentity => Source::Federated {
            token_url: token_url(&tenant)?,
            client_id: need_client()?,
            token_file: fed.ok_or_else(|| {
                config_err("azure mode workloadidentity: no federated token file (store.azure.federated-token-file or AZURE_FEDERATED_TOKEN_FILE)")
            })?,
        },
        AzureMode::Msi => managed(az, client_id, env)?,
        AzureMode::Azcli => Source::Cli {
            program: env("BLOBMOUNT_AZ_PROGRAM").unwrap_or_else(|| "az".into()),
            tenant,
        },
    };
    info!(source = ?source, "Azure credentials");
    Ok(Some(Arc::new(Refreshing::new(source)?)))
}

fn managed(az: &AzureConfig, client_id: Option<String>, env: Env) -> Result<Source, BackendError> {
    let chosen = [
        client_id.map(Identity::ClientId),
        az.object_id.clone().map(Identity::ObjectId),
        az.resource_id.clone().map(Identity::ResourceId),
    ];
    let mut given = chosen.into_iter().flatten();
    let identity = given.next().unwrap_or(Identity::System);
    if given.next().is_some() {
        return Err(config_err(
            "azure mode msi: give only one of client-id, object-id and resource-id",
        ));
    }
    // App Service and Container Apps: IDENTITY_ENDPOINT with IDENTITY_HEADER.
    let (endpoint, header) = match (
        az.msi_endpoint.clone(),
        env("IDENTITY_ENDPOINT"),
        env("IDENTITY_HEADER"),
    ) {
        (Some(e), _, _) => (e, None),
        (None, Some(e), Some(h)) => (e, Some(Secret::new(h))),
        _ => (
            env("MSI_ENDPOINT").unwrap_or_else(|| DEFAULT_IMDS.into()),
            None,
        ),
    };
    checked(&endpoint, "managed identity endpoint").or_else(|_| link_local(&endpoint))?;
    Ok(Source::Managed {
        endpoint,
        header,
        identity,
    })
}

/// Tokens go over HTTPS, or plain HTTP to loopback.
fn checked(url: &str, what: &str) -> Result<(), BackendError> {
    if url.starts_with("https://") {
        return Ok(());
    }
    match http_host(url) {
        Some("127.0.0.1" | "localhost" | "[::1]") => Ok(()),
        _ => Err(config_err(format!(
            "{what} must be https (or loopback http): {url}"
        ))),
    }
}

/// The instance metadata service answers over plain HTTP at its link-local address.
fn link_local(url: &str) -> Result<(), BackendError> {
    if url.starts_with("http://169.254.169.254/") {
        Ok(())
    } else {
        Err(config_err(format!(
            "managed identity endpoint must be https, loopback or the instance metadata address: {url}"
        )))
    }
}

/// The private key and the certificate's thumbprint from a PEM file holding both (as
/// BlobFuse2's `clientcert` and `AZURE_CLIENT_CERTIFICATE_PATH` do; PKCS#8 key, unencrypted).
fn load_certificate(path: &std::path::Path) -> Result<(ring::rsa::KeyPair, String), BackendError> {
    let bad = |why: &str| {
        config_err(format!(
            "azure client certificate {}: {why}",
            path.display()
        ))
    };
    let text = std::fs::read_to_string(path).map_err(|e| bad(&e.to_string()))?;
    let block = |label: &str| -> Option<Vec<u8>> {
        let begin = format!("-----BEGIN {label}-----");
        let start = text.find(&begin)? + begin.len();
        let end = start + text[start..].find("-----END")?;
        let b64: String = text[start..end].split_whitespace().collect();
        base64::engine::general_purpose::STANDARD.decode(b64).ok()
    };
    let der_cert = block("CERTIFICATE").ok_or_else(|| bad("no CERTIFICATE block"))?;
    let der_key = block("PRIVATE KEY").ok_or_else(|| {
        bad("no unencrypted PKCS#8 PRIVATE KEY block (convert a PFX with `openssl pkcs12 -nodes`)")
    })?;
    let key = ring::rsa::KeyPair::from_pkcs8(&der_key)
        .map_err(|e| bad(&format!("not an RSA key: {e}")))?;
    let sha1 = ring::digest::digest(&ring::digest::SHA1_FOR_LEGACY_USE_ONLY, &der_cert);
    let thumbprint = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(sha1.as_ref());
    Ok((key, thumbprint))
}

#[async_trait]
impl Fetch for Source {
    type Credential = AzureCredential;
    const NAME: &'static str = "Azure";
    const STORE: &'static str = "MicrosoftAzure";

    async fn fetch(
        &self,
        http: &reqwest::Client,
    ) -> Result<(AzureCredential, Option<SystemTime>), String> {
        let (token, expires) = fetch(self, http).await?;
        Ok((AzureCredential::BearerToken(token), Some(expires)))
    }
}

type Token = (String, SystemTime);

async fn fetch(source: &Source, http: &reqwest::Client) -> Result<Token, String> {
    match source {
        Source::Secret {
            token_url,
            client_id,
            secret,
        } => {
            let form = [
                ("grant_type", "client_credentials"),
                ("client_id", client_id.as_str()),
                ("client_secret", secret.expose()),
                ("scope", SCOPE),
            ];
            token_answer(&send(post_form(http, token_url, &form)).await?)
        }
        Source::Certificate {
            token_url,
            client_id,
            key,
            thumbprint,
        } => {
            let assertion = client_assertion(client_id, token_url, key, thumbprint)?;
            assertion_grant(http, token_url, client_id, &assertion).await
        }
        Source::Federated {
            token_url,
            client_id,
            token_file,
        } => {
            let assertion = std::fs::read_to_string(token_file)
                .map_err(|e| format!("federated token file {}: {e}", token_file.display()))?;
            assertion_grant(http, token_url, client_id, assertion.trim()).await
        }
        Source::Managed {
            endpoint,
            header,
            identity,
        } => {
            let (version, id_param) = match header {
                Some(_) => ("2019-08-01", "client_id"),
                None => ("2018-02-01", "client_id"),
            };
            let mut url = format!(
                "{endpoint}?api-version={version}&resource={}",
                urlencode(RESOURCE)
            );
            match identity {
                Identity::System => {}
                Identity::ClientId(c) => url.push_str(&format!("&{id_param}={}", urlencode(c))),
                Identity::ObjectId(o) => url.push_str(&format!("&object_id={}", urlencode(o))),
                Identity::ResourceId(r) => {
                    let name = if header.is_some() {
                        "mi_res_id"
                    } else {
                        "msi_res_id"
                    };
                    url.push_str(&format!("&{name}={}", urlencode(r)));
                }
            }
            let mut req = http.get(url);
            req = match header {
                Some(h) => req.header("X-IDENTITY-HEADER", h.expose()),
                None => req.header("Metadata", "true"),
            };
            token_answer(&send(req).await?)
        }
        Source::Cli { program, tenant } => {
            let mut cmd = tokio::process::Command::new(program);
            cmd.args([
                "account",
                "get-access-token",
                "--output",
                "json",
                "--resource",
                RESOURCE,
            ]);
            if let Some(t) = tenant {
                cmd.args(["--tenant", t]);
            }
            let out = tokio::time::timeout(Duration::from_secs(30), cmd.output())
                .await
                .map_err(|_| format!("`{program} account get-access-token` took over 30 s"))?
                .map_err(|e| {
                    format!("running `{program}`: {e} (is the Azure CLI installed and on PATH?)")
                })?;
            if !out.status.success() {
                let err = String::from_utf8_lossy(&out.stderr);
                return Err(format!(
                    "`{program} account get-access-token` failed ({}): {} (run `az login`)",
                    out.status,
                    err.trim().chars().take(300).collect::<String>()
                ));
            }
            cli_answer(&String::from_utf8_lossy(&out.stdout))
        }
    }
}

async fn assertion_grant(
    http: &reqwest::Client,
    token_url: &str,
    client_id: &str,
    assertion: &str,
) -> Result<Token, String> {
    let form = [
        ("grant_type", "client_credentials"),
        ("client_id", client_id),
        (
            "client_assertion_type",
            "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        ),
        ("client_assertion", assertion),
        ("scope", SCOPE),
    ];
    token_answer(&send(post_form(http, token_url, &form)).await?)
}

/// The JWT a certificate credential signs (RS256, `x5t` = the certificate's SHA-1).
fn client_assertion(
    client_id: &str,
    token_url: &str,
    key: &ring::rsa::KeyPair,
    thumbprint: &str,
) -> Result<String, String> {
    let b64 = |b: &[u8]| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?
        .as_secs();
    let header = serde_json::json!({ "alg": "RS256", "typ": "JWT", "x5t": thumbprint });
    let jti: u128 = rand::random();
    let claims = serde_json::json!({
        "aud": token_url, "iss": client_id, "sub": client_id,
        "jti": format!("{jti:032x}"), "nbf": now, "exp": now + 600,
    });
    let signing = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let mut sig = vec![0; key.public().modulus_len()];
    key.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &ring::rand::SystemRandom::new(),
        signing.as_bytes(),
        &mut sig,
    )
    .map_err(|e| format!("signing the client assertion: {e}"))?;
    Ok(format!("{signing}.{}", b64(&sig)))
}

/// Entra ID and managed identity answers: `access_token` with `expires_in` (seconds, a
/// number or a string) or `expires_on` (epoch seconds).
fn token_answer(body: &str) -> Result<Token, String> {
    let v: Value =
        serde_json::from_str(body).map_err(|e| format!("token answer is not JSON: {e}"))?;
    let token = v
        .get("access_token")
        .and_then(Value::as_str)
        .ok_or("token answer has no access_token")?;
    let num = |k: &str| {
        v.get(k).and_then(|x| {
            x.as_u64()
                .or_else(|| x.as_str().and_then(|s| s.trim().parse().ok()))
        })
    };
    let expires = match (num("expires_in"), num("expires_on")) {
        (Some(s), _) => SystemTime::now() + Duration::from_secs(s),
        (None, Some(at)) => UNIX_EPOCH + Duration::from_secs(at),
        (None, None) => SystemTime::now() + Duration::from_secs(3600),
    };
    Ok((token.to_string(), expires))
}

/// `az account get-access-token -o json`: `accessToken` and `expires_on` (epoch seconds;
/// older CLIs give only a local-time `expiresOn`, taken as one hour).
fn cli_answer(body: &str) -> Result<Token, String> {
    let v: Value =
        serde_json::from_str(body).map_err(|e| format!("Azure CLI answer is not JSON: {e}"))?;
    let token = v
        .get("accessToken")
        .and_then(Value::as_str)
        .ok_or("Azure CLI answer has no accessToken")?;
    let expires = v
        .get("expires_on")
        .and_then(|x| x.as_u64().or_else(|| x.as_str()?.parse().ok()))
        .map(|at| UNIX_EPOCH + Duration::from_secs(at))
        .unwrap_or_else(|| SystemTime::now() + Duration::from_secs(3600));
    Ok((token.to_string(), expires))
}

#[cfg(test)]
#[path = "azcreds_tests.rs"]
mod tests;
