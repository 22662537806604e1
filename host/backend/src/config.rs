//! Store configuration: the store URL, endpoint, credentials and retry/timeout policy.
//!
//! Lives here (not in the daemon) because only the backend interprets it; the daemon embeds
//! [`StoreConfig`] in its YAML config. Secrets are wrapped in [`Secret`], whose `Debug` and
//! `Serialize` never reveal the value, which has no `Display`, and whose memory is wiped
//! when it is dropped.

use std::path::PathBuf;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::error::BackendError;

/// A secret string: never printed, not even in a parse error, and overwritten with zeros
/// when dropped (so a core dump or a later heap reuse does not carry it). Transient copies
/// the backends make (from the environment, a key file, a connection string) are `Secret`s
/// too; only the copy handed to the store client library is out of our hands.
#[derive(Clone, Default, JsonSchema, PartialEq, Eq)]
#[serde(transparent)]
pub struct Secret(String);

impl<'de> Deserialize<'de> for Secret {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Secret;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a quoted string")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Secret, E> {
                Ok(Secret(v.to_string()))
            }
            // Any other type: say what is wrong without repeating the value.
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Secret, E> {
                Err(E::custom(NOT_A_STRING))
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Secret, E> {
                Err(E::custom(NOT_A_STRING))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Secret, E> {
                Err(E::custom(NOT_A_STRING))
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Secret, E> {
                Err(E::custom(NOT_A_STRING))
            }
        }
        d.deserialize_any(V)
    }
}

const NOT_A_STRING: &str = "a secret must be a quoted string (value not shown)";

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

/// Where the objects live and how to reach them.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct StoreConfig {
    /// Store URL: `az://ACCOUNT/CONTAINER[/PREFIX]`, `s3://BUCKET[/PREFIX]`,
    /// `gs://BUCKET[/PREFIX]`, `file:///ABSOLUTE/PATH`, or `mem://` (in-process, for trying out).
    pub url: Option<String>,
    /// Service endpoint override (emulators, S3-compatible stores, sovereign clouds), e.g.
    /// `http://127.0.0.1:10000/devstoreaccount1` or `https://s3.eu-central-003.backblazeb2.com`.
    pub endpoint: Option<String>,
    /// PEM file of certificate authorities to trust besides the system's, for every
    /// request to the store and its credential endpoints (a private CA, a proxy that
    /// inspects TLS, an emulator's self-signed certificate).
    pub ca_file: Option<std::path::PathBuf>,
    #[serde(default)]
    pub azure: AzureConfig,
    #[serde(default)]
    pub s3: S3Config,
    #[serde(default)]
    pub gcs: GcsConfig,
    #[serde(default)]
    pub retry: RetryConfig,
    /// Part size and parts in flight of uploads in parts. Not a key of this section: the
    /// daemon sets it from `write.part-size-mib` and `write.parts-in-flight`, so streamed
    /// and whole-file uploads follow one setting.
    #[serde(skip)]
    pub parts: PartSizes,
    /// Send no checksum with uploads (`write.checksums: false`; see [`crate::checksum`]).
    /// Not a key of this section: the daemon sets it from the write settings.
    #[serde(skip)]
    pub unchecked_uploads: bool,
}

/// Part size and parts in flight of uploads in parts (block lists on Azure, multipart
/// uploads on S3, resumable-session chunks on GCS).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PartSizes {
    /// Bytes per part.
    pub size: usize,
    /// Parts of one upload in flight at once.
    pub in_flight: usize,
}

impl Default for PartSizes {
    fn default() -> Self {
        PartSizes {
            size: 8 * 1024 * 1024,
            in_flight: 4,
        }
    }
}

impl PartSizes {
    /// These sizes, or the defaults where one is 0.
    pub fn or_default(self) -> PartSizes {
        let d = PartSizes::default();
        PartSizes {
            size: if self.size == 0 { d.size } else { self.size },
            in_flight: self.in_flight.max(1),
        }
    }
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct AzureConfig {
    /// Shared account key (env `AZURE_STORAGE_ACCOUNT_KEY` / `AZURE_STORAGE_KEY`).
    pub account_key: Option<Secret>,
    /// File holding the account key (mounted secret).
    pub account_key_file: Option<PathBuf>,
    /// SAS token, with or without the leading `?` (env `AZURE_STORAGE_SAS_TOKEN`).
    pub sas_token: Option<Secret>,
    /// Connection string (env `AZURE_STORAGE_CONNECTION_STRING`); supplies account, key or
    /// SAS and the blob endpoint.
    pub connection_string: Option<Secret>,
    /// Talk to Azurite with its well-known development account and key.
    #[serde(default)]
    pub use_emulator: bool,
    /// How to authenticate, with BlobFuse2's names: `key`, `sas` (the key, SAS or connection
    /// string above), `spn` (service principal: `client-secret` or `client-cert-path`),
    /// `msi` (managed identity), `azcli` (the Azure CLI's login), `workloadidentity` (AKS:
    /// a federated token file). Unset: key or SAS when given, a federated token file or a
    /// client secret/certificate with a tenant when given, else a system-assigned managed
    /// identity (docs/configuration.md, "Azure credentials").
    pub mode: Option<AzureMode>,
    /// Entra ID tenant (env `AZURE_TENANT_ID`) for `spn` and `workloadidentity`.
    pub tenant_id: Option<String>,
    /// Application (client) id (env `AZURE_CLIENT_ID`); with `msi`, a user-assigned identity.
    pub client_id: Option<String>,
    /// Client secret of a service principal (env `AZURE_CLIENT_SECRET`).
    pub client_secret: Option<Secret>,
    /// PEM file with a service principal's certificate and unencrypted PKCS#8 private key
    /// (env `AZURE_CLIENT_CERTIFICATE_PATH`).
    pub client_cert_path: Option<PathBuf>,
    /// `msi`: a user-assigned identity by object (principal) id.
    pub object_id: Option<String>,
    /// `msi`: a user-assigned identity by ARM resource id.
    pub resource_id: Option<String>,
    /// Entra ID authority (env `AZURE_AUTHORITY_HOST`; default
    /// `https://login.microsoftonline.com`; sovereign clouds have their own).
    pub authority_host: Option<String>,
    /// `msi`: the identity endpoint (default: `IDENTITY_ENDPOINT` with `IDENTITY_HEADER` on
    /// App Service, `MSI_ENDPOINT`, else the instance metadata service).
    pub msi_endpoint: Option<String>,
    /// `workloadidentity`: the federated token file (env `AZURE_FEDERATED_TOKEN_FILE`, which
    /// AKS sets).
    pub federated_token_file: Option<PathBuf>,
    /// Hierarchical namespace (ADLS Gen2): `auto` asks the account (Get Account Information), `true` uses the DFS endpoint for renames, directories and access control, `false` never does.
    #[serde(default)]
    pub hns: HnsMode,
    /// DFS endpoint of the account (default: the Blob endpoint with `.blob.` changed to `.dfs.`, e.g. `https://ACCOUNT.dfs.core.windows.net`); required with HNS for emulator-style endpoints such as `http://127.0.0.1:10000/devstoreaccount1`.
    pub dfs_endpoint: Option<String>,
}

/// `store.azure.hns`: `auto`, `true` or `false` (YAML booleans are accepted as well).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum HnsMode {
    #[default]
    #[schemars(rename = "auto")]
    Auto,
    #[schemars(rename = "true")]
    On,
    #[schemars(rename = "false")]
    Off,
}

impl HnsMode {
    pub fn name(self) -> &'static str {
        match self {
            HnsMode::Auto => "auto",
            HnsMode::On => "true",
            HnsMode::Off => "false",
        }
    }
}

impl Serialize for HnsMode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

impl<'de> Deserialize<'de> for HnsMode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = HnsMode;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("auto, true or false")
            }
            fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<HnsMode, E> {
                Ok(if v { HnsMode::On } else { HnsMode::Off })
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<HnsMode, E> {
                match v {
                    "auto" => Ok(HnsMode::Auto),
                    "true" => Ok(HnsMode::On),
                    "false" => Ok(HnsMode::Off),
                    other => Err(E::custom(format!(
                        "unknown value {other:?} (expected auto, true or false)"
                    ))),
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// BlobFuse2's `azstorage.mode` values.
#[derive(Clone, Copy, Debug, Deserialize, Serialize, JsonSchema, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum AzureMode {
    Key,
    Sas,
    Spn,
    Msi,
    Azcli,
    #[serde(rename = "workloadidentity")]
    WorkloadIdentity,
}

impl AzureMode {
    pub fn name(self) -> &'static str {
        match self {
            AzureMode::Key => "key",
            AzureMode::Sas => "sas",
            AzureMode::Spn => "spn",
            AzureMode::Msi => "msi",
            AzureMode::Azcli => "azcli",
            AzureMode::WorkloadIdentity => "workloadidentity",
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct S3Config {
    /// Region (env `AWS_REGION` / `AWS_DEFAULT_REGION`); default `us-east-1`.
    pub region: Option<String>,
    /// Access key id (env `AWS_ACCESS_KEY_ID`).
    pub access_key_id: Option<String>,
    /// Secret access key (env `AWS_SECRET_ACCESS_KEY`).
    pub secret_access_key: Option<Secret>,
    /// Session token (env `AWS_SESSION_TOKEN`).
    pub session_token: Option<Secret>,
    /// Profile of the shared AWS files (`~/.aws/credentials`, `~/.aws/config`) to take
    /// credentials and region from (env `AWS_PROFILE`; default `default`). Without keys, the
    /// chain goes on to a web identity token, container credentials and the instance
    /// metadata service (docs/configuration.md, "AWS credentials").
    pub profile: Option<String>,
    /// Use virtual-hosted-style requests (`BUCKET.host`) instead of path style.
    #[serde(default)]
    pub virtual_hosted_style: bool,
    /// The store supports conditional writes (If-Match / If-None-Match on PUT). AWS S3, MinIO
    /// and most emulators do; turn off for stores that reject them (writes become
    /// unconditional).
    #[serde(default = "yes")]
    pub conditional_writes: bool,
}

impl Default for S3Config {
    fn default() -> Self {
        S3Config {
            region: None,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            profile: None,
            virtual_hosted_style: false,
            conditional_writes: true,
        }
    }
}

fn yes() -> bool {
    true
}

#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct GcsConfig {
    /// Service-account JSON key file (env `GOOGLE_APPLICATION_CREDENTIALS`).
    pub service_account_file: Option<PathBuf>,
    /// Send unauthenticated requests (fake-gcs-server and other emulators).
    #[serde(default)]
    pub anonymous: bool,
}

/// Retries (exponential backoff with jitter) and timeouts for every store request.
#[derive(Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct RetryConfig {
    /// Retries of a failed request (5xx, throttling, connection errors); 0 disables.
    pub max_retries: usize,
    /// First backoff delay in milliseconds.
    pub initial_backoff_ms: u64,
    /// Largest backoff delay in milliseconds.
    pub max_backoff_ms: u64,
    /// Give up retrying a request after this many seconds.
    pub retry_timeout_secs: u64,
    /// Timeout of one request, in seconds (a large ranged GET or part upload must fit).
    pub request_timeout_secs: u64,
    /// TCP/TLS connect timeout in seconds.
    pub connect_timeout_secs: u64,
    /// Longest a HEAD, LIST page or delete may take, retries included, in seconds; past it
    /// the call fails (EIO) instead of holding a lookup for the request timeout. 0: only
    /// the request timeout applies.
    pub metadata_timeout_secs: u64,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            max_retries: 5,
            initial_backoff_ms: 100,
            max_backoff_ms: 10_000,
            retry_timeout_secs: 60,
            request_timeout_secs: 120,
            connect_timeout_secs: 5,
            metadata_timeout_secs: 30,
        }
    }
}

/// Kind of store named by a URL.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    Azure,
    S3,
    Gcs,
    File,
    Memory,
}

/// A parsed store URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreUrl {
    pub kind: StoreKind,
    /// Azure account; empty for other kinds.
    pub account: String,
    /// Container or bucket; the directory path for `file://`.
    pub bucket: String,
    /// Key prefix the mount is limited to: no leading or trailing `/`, may be empty.
    pub prefix: String,
    /// The host of an `abfs://` / `abfss://` URL (`ACCOUNT.dfs.core.windows.net`): the
    /// account's DFS endpoint, and a hierarchical namespace forced on.
    pub dfs_host: Option<String>,
}

impl StoreUrl {
    pub fn parse(s: &str) -> Result<StoreUrl, BackendError> {
        let bad = |why: &str| {
            BackendError::Config(format!(
                "store url {s:?}: {why} (expected az://ACCOUNT/CONTAINER[/PREFIX], \
                 abfss://CONTAINER@ACCOUNT.dfs.core.windows.net[/PREFIX], \
                 s3://BUCKET[/PREFIX], gs://BUCKET[/PREFIX], file:///PATH or mem://)"
            ))
        };
        let (scheme, rest) = s.split_once("://").ok_or_else(|| bad("missing scheme"))?;
        let trim = |p: &str| p.trim_matches('/').to_string();
        match scheme {
            "mem" | "memory" => Ok(StoreUrl {
                kind: StoreKind::Memory,
                account: String::new(),
                bucket: trim(rest),
                prefix: String::new(),
                dfs_host: None,
            }),
            "file" => {
                if !rest.starts_with('/') {
                    return Err(bad("file:// needs an absolute path (file:///data/store)"));
                }
                Ok(StoreUrl {
                    kind: StoreKind::File,
                    account: String::new(),
                    bucket: rest.trim_end_matches('/').to_string(),
                    prefix: String::new(),
                    dfs_host: None,
                })
            }
            "az" | "azure" => {
                let mut it = rest.splitn(3, '/');
                let account = it.next().unwrap_or("").to_string();
                let container = it.next().unwrap_or("").to_string();
                if account.is_empty() {
                    return Err(bad("missing storage account"));
                }
                if container.len() < 3 {
                    return Err(bad("missing or too short container name (3-63 characters)"));
                }
                Ok(StoreUrl {
                    kind: StoreKind::Azure,
                    account,
                    bucket: container,
                    prefix: trim(it.next().unwrap_or("")),
                    dfs_host: None,
                })
            }
            // Hadoop's ABFS form: the container before `@`, the DFS host after it. Both
            // schemes use HTTPS (an `http://` DFS endpoint can be configured).
            "abfs" | "abfss" => {
                let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
                let (container, host) = authority
                    .split_once('@')
                    .ok_or_else(|| bad("abfs URLs are CONTAINER@ACCOUNT.dfs.core.windows.net"))?;
                let account = host.split('.').next().unwrap_or("").to_string();
                if account.is_empty() || !host.contains(".dfs.") {
                    return Err(bad(
                        "abfs URLs name the DFS host (ACCOUNT.dfs.core.windows.net)",
                    ));
                }
                if container.len() < 3 {
                    return Err(bad("missing or too short container name (3-63 characters)"));
                }
                Ok(StoreUrl {
                    kind: StoreKind::Azure,
                    account,
                    bucket: container.to_string(),
                    prefix: trim(path),
                    dfs_host: Some(host.to_string()),
                })
            }
            "s3" | "gs" | "gcs" => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(bad("missing bucket"));
                }
                Ok(StoreUrl {
                    kind: if scheme == "s3" {
                        StoreKind::S3
                    } else {
                        StoreKind::Gcs
                    },
                    account: String::new(),
                    bucket: bucket.to_string(),
                    prefix: trim(prefix),
                    dfs_host: None,
                })
            }
            other => Err(bad(&format!("unknown scheme {other:?}"))),
        }
    }
}

impl StoreConfig {
    /// Drop (and so wipe) every secret held here, once the store client has been built
    /// with them: the daemon keeps its config for the life of the mount, the secrets need
    /// not stay in it.
    pub fn forget_secrets(&mut self) {
        let a = &mut self.azure;
        a.account_key = None;
        a.sas_token = None;
        a.connection_string = None;
        a.client_secret = None;
        self.s3.secret_access_key = None;
        self.s3.session_token = None;
    }

    pub fn parsed_url(&self) -> Result<StoreUrl, BackendError> {
        let url = self
            .url
            .as_deref()
            .ok_or_else(|| BackendError::Config("store.url is not set".into()))?;
        StoreUrl::parse(url)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let u = StoreUrl::parse("az://acct/cont/a/b/").unwrap();
        assert_eq!(
            (
                u.kind,
                u.account.as_str(),
                u.bucket.as_str(),
                u.prefix.as_str()
            ),
            (StoreKind::Azure, "acct", "cont", "a/b")
        );
        let u = StoreUrl::parse("s3://bkt").unwrap();
        assert_eq!(
            (u.kind, u.bucket.as_str(), u.prefix.as_str()),
            (StoreKind::S3, "bkt", "")
        );
        let u = StoreUrl::parse("gs://bkt/p").unwrap();
        assert_eq!((u.kind, u.prefix.as_str()), (StoreKind::Gcs, "p"));
        assert_eq!(StoreUrl::parse("file:///tmp/x/").unwrap().bucket, "/tmp/x");
        assert_eq!(StoreUrl::parse("mem://").unwrap().kind, StoreKind::Memory);
        let u = StoreUrl::parse("abfss://data@acct.dfs.core.windows.net/a/b").unwrap();
        assert_eq!(
            (
                u.kind,
                u.account.as_str(),
                u.bucket.as_str(),
                u.prefix.as_str(),
                u.dfs_host.as_deref()
            ),
            (
                StoreKind::Azure,
                "acct",
                "data",
                "a/b",
                Some("acct.dfs.core.windows.net")
            )
        );
        assert!(StoreUrl::parse("abfs://data@acct.dfs.core.windows.net").is_ok());
    }

    #[test]
    fn hns_takes_words_and_booleans() {
        for (v, want) in [
            (serde_json::json!("auto"), HnsMode::Auto),
            (serde_json::json!(true), HnsMode::On),
            (serde_json::json!("false"), HnsMode::Off),
        ] {
            assert_eq!(serde_json::from_value::<HnsMode>(v).unwrap(), want);
        }
        assert!(serde_json::from_value::<HnsMode>(serde_json::json!("yes")).is_err());
        assert_eq!(serde_json::to_value(HnsMode::On).unwrap(), "true");
    }

    #[test]
    fn rejects_bad_urls() {
        for bad in [
            "nope",
            "ftp://x/y",
            "az://acct",
            "az://acct/ab",
            "abfss://acct.dfs.core.windows.net/x",
            "abfss://ab@acct.dfs.core.windows.net",
            "s3://",
            "file://rel/x",
        ] {
            let e = StoreUrl::parse(bad).unwrap_err().to_string();
            assert!(e.contains("store url"), "{bad}: {e}");
        }
    }

    #[test]
    fn forget_secrets_clears_every_secret_field() {
        let mut c: StoreConfig = serde_json::from_value(serde_json::json!({
            "azure": {"account-key": "k", "sas-token": "s", "connection-string": "c"},
            "s3": {"secret-access-key": "x", "session-token": "t", "access-key-id": "id"},
        }))
        .unwrap();
        c.forget_secrets();
        let v = serde_json::to_value(&c).unwrap();
        assert!(!v.to_string().contains("redacted"), "{v}");
        assert_eq!(c.s3.access_key_id.as_deref(), Some("id"));
    }

    #[test]
    fn secrets_are_not_printed() {
        let mut c = StoreConfig::default();
        c.azure.account_key = Some(Secret::new("supersecret"));
        assert!(!format!("{c:?}").contains("supersecret"));
    }
}
