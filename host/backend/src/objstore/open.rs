//! Building an [`ObjectStoreBackend`] from the store configuration: credentials from the
//! config, the environment or an Azure connection string, endpoints (emulators, S3-compatible
//! stores), `object_store`'s client and retry options, and the REST clients for what the crate
//! does not do (listings, Azure block commits, GCS JSON writes).
//!
//! Why a module of its own: this is start-up only, and the longest part of the adapter;
//! the parent module keeps the per-call behaviour.

use super::*;

fn env(names: &[&str]) -> Option<String> {
    names
        .iter()
        .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
}

fn secret_or_env(s: &Option<Secret>, names: &[&str]) -> Option<String> {
    s.as_ref()
        .map(|s| s.expose().to_string())
        .or_else(|| env(names))
}

/// Fields of an Azure connection string.
#[derive(Default)]
struct ConnString {
    account: Option<String>,
    key: Option<String>,
    sas: Option<String>,
    blob_endpoint: Option<String>,
}

fn parse_conn_string(s: &str) -> Result<ConnString> {
    let mut c = ConnString::default();
    for part in s.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').ok_or_else(|| {
            BackendError::Config("azure connection string: expected KEY=VALUE pairs".into())
        })?;
        match k {
            "AccountName" => c.account = Some(v.to_string()),
            "AccountKey" => c.key = Some(v.to_string()),
            "SharedAccessSignature" => c.sas = Some(v.to_string()),
            "BlobEndpoint" => c.blob_endpoint = Some(v.trim_end_matches('/').to_string()),
            _ => {}
        }
    }
    Ok(c)
}

fn client_options(cfg: &StoreConfig, endpoint: Option<&str>) -> ClientOptions {
    let r = &cfg.retry;
    let mut o = ClientOptions::new()
        .with_timeout(Duration::from_secs(r.request_timeout_secs.max(1)))
        .with_connect_timeout(Duration::from_secs(r.connect_timeout_secs.max(1)));
    if endpoint.map(|e| e.starts_with("http://")).unwrap_or(false) {
        o = o.with_allow_http(true);
    }
    o
}

fn retry_config(cfg: &StoreConfig) -> RetryConfig {
    let r = &cfg.retry;
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(r.initial_backoff_ms),
            max_backoff: Duration::from_millis(r.max_backoff_ms.max(r.initial_backoff_ms)),
            base: 2.0,
        },
        max_retries: r.max_retries,
        retry_timeout: Duration::from_secs(r.retry_timeout_secs),
    }
}

fn build_err(e: object_store::Error) -> BackendError {
    BackendError::Config(redact(&e.to_string()))
}

impl ObjectStoreBackend {
    pub fn new(url: &StoreUrl, cfg: &StoreConfig) -> Result<Self> {
        let endpoint = cfg.endpoint.clone();
        let retry = retry_config(cfg);
        let mut gcs = None;
        let mut lister = None;
        let mut local_root = None;
        let mut local_fs = None;
        let mut azure_blocks = None;
        let mut s3_parts = None;
        let (store, description): (Arc<dyn ObjectStore>, String) = match url.kind {
            StoreKind::Azure => {
                let az = &cfg.azure;
                let conn = match secret_or_env(
                    &az.connection_string,
                    &["AZURE_STORAGE_CONNECTION_STRING"],
                ) {
                    Some(s) => parse_conn_string(&s)?,
                    None => ConnString::default(),
                };
                let key_from_file = match &az.account_key_file {
                    Some(p) => Some(
                        std::fs::read_to_string(p)
                            .map_err(|e| {
                                BackendError::Config(format!(
                                    "store.azure.account-key-file {}: {e}",
                                    p.display()
                                ))
                            })?
                            .trim()
                            .to_string(),
                    ),
                    None => None,
                };
                let key = secret_or_env(
                    &az.account_key,
                    &["AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_KEY"],
                )
                .or(key_from_file)
                .or(conn.key);
                let sas = secret_or_env(&az.sas_token, &["AZURE_STORAGE_SAS_TOKEN"]).or(conn.sas);
                let endpoint = endpoint.or(conn.blob_endpoint);
                let account = conn.account.unwrap_or_else(|| url.account.clone());
                let account_url = match &endpoint {
                    Some(e) => e.trim_end_matches('/').to_string(),
                    None if az.use_emulator => format!(
                        "{}/{account}",
                        env(&["AZURITE_BLOB_STORAGE_URL"])
                            .unwrap_or_else(|| "http://127.0.0.1:10000".into())
                            .trim_end_matches('/')
                    ),
                    None => format!("https://{account}.blob.core.windows.net"),
                };
                let mut b = MicrosoftAzureBuilder::new()
                    .with_account(&account)
                    .with_container_name(&url.bucket)
                    .with_retry(retry)
                    .with_client_options(client_options(cfg, endpoint.as_deref()));
                if az.use_emulator && endpoint.is_none() {
                    b = b.with_use_emulator(true);
                }
                if let Some(e) = &endpoint {
                    b = b.with_endpoint(e.clone());
                }
                if let Some(k) = key {
                    b = b.with_access_key(k);
                } else if let Some(s) = sas {
                    let pairs = s
                        .trim_start_matches('?')
                        .split('&')
                        .filter_map(|kv| kv.split_once('='))
                        .map(|(k, v)| (k.to_string(), percent_decode(v, false)))
                        .collect::<Vec<_>>();
                    b = b.with_sas_authorization(pairs);
                } else if az.use_emulator {
                    b = b.with_access_key(AZURITE_KEY);
                }
                let s = Arc::new(b.build().map_err(build_err)?);
                let rest = Rest::new(
                    cfg.retry.clone(),
                    Signer::Azure {
                        creds: s.credentials().clone(),
                        account: account.clone(),
                    },
                )?;
                let container_url = format!("{account_url}/{}", encode_segment(&url.bucket));
                azure_blocks = Some(AzureBlocks::new(rest.clone(), &container_url));
                lister = Some(RawLister::new(rest, &container_url, Dialect::Azure));
                let d = format!("az://{account}/{}", url.bucket);
                (s, d)
            }
            StoreKind::S3 => {
                let s3 = &cfg.s3;
                let endpoint =
                    endpoint.or_else(|| env(&["AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"]));
                let region = s3
                    .region
                    .clone()
                    .or_else(|| env(&["AWS_REGION", "AWS_DEFAULT_REGION"]))
                    .unwrap_or_else(|| "us-east-1".into());
                let mut b = AmazonS3Builder::new()
                    .with_bucket_name(&url.bucket)
                    .with_region(region.clone())
                    .with_virtual_hosted_style_request(s3.virtual_hosted_style)
                    .with_retry(retry)
                    .with_client_options(client_options(cfg, endpoint.as_deref()));
                if let Some(e) = &endpoint {
                    b = b.with_endpoint(e.clone());
                }
                if let Some(k) = s3
                    .access_key_id
                    .clone()
                    .or_else(|| env(&["AWS_ACCESS_KEY_ID"]))
                {
                    b = b.with_access_key_id(k);
                }
                if let Some(k) = secret_or_env(&s3.secret_access_key, &["AWS_SECRET_ACCESS_KEY"]) {
                    b = b.with_secret_access_key(k);
                }
                if let Some(t) = secret_or_env(&s3.session_token, &["AWS_SESSION_TOKEN"]) {
                    b = b.with_token(t);
                }
                let s = Arc::new(b.build().map_err(build_err)?);
                let bucket = &url.bucket;
                let bucket_url = match (&endpoint, s3.virtual_hosted_style) {
                    (Some(e), true) => e.trim_end_matches('/').to_string(),
                    (Some(e), false) => format!("{}/{bucket}", e.trim_end_matches('/')),
                    (None, true) => format!("https://{bucket}.s3.{region}.amazonaws.com"),
                    (None, false) => format!("https://s3.{region}.amazonaws.com/{bucket}"),
                };
                let signer = Signer::Aws {
                    creds: s.credentials().clone(),
                    region,
                };
                let rest = Rest::new(cfg.retry.clone(), signer)?;
                s3_parts = Some(S3Parts::new(
                    rest.clone(),
                    &bucket_url,
                    bucket,
                    s3.conditional_writes,
                ));
                lister = Some(RawLister::new(rest, &bucket_url, Dialect::S3));
                let d = format!("s3://{}", url.bucket);
                (s, d)
            }
            StoreKind::Gcs => {
                let g = &cfg.gcs;
                let endpoint = endpoint.or_else(|| {
                    env(&["STORAGE_EMULATOR_HOST"]).map(|h| {
                        if h.contains("://") {
                            h
                        } else {
                            format!("http://{h}")
                        }
                    })
                });
                let mut b = GoogleCloudStorageBuilder::new()
                    .with_bucket_name(&url.bucket)
                    .with_retry(retry)
                    .with_client_options(client_options(cfg, endpoint.as_deref()));
                if let Some(e) = &endpoint {
                    b = b.with_base_url(e.trim_end_matches('/'));
                }
                let sa = g
                    .service_account_file
                    .clone()
                    .map(|p| p.display().to_string())
                    .or_else(|| env(&["GOOGLE_APPLICATION_CREDENTIALS"]));
                if g.anonymous {
                    // object_store 0.14 skips signing on reads but still asks for a token on
                    // uploads (gcp/client.rs `Request::send`), which would hit the metadata
                    // server; a static placeholder token keeps anonymous mode anonymous.
                    b = b.with_skip_signature(true).with_credentials(Arc::new(
                        object_store::StaticCredentialProvider::new(
                            object_store::gcp::GcpCredential {
                                bearer: "anonymous".to_string(),
                            },
                        ),
                    ));
                } else if let Some(p) = sa {
                    b = b.with_service_account_path(p);
                }
                let s = Arc::new(b.build().map_err(build_err)?);
                let creds = (!g.anonymous).then(|| s.credentials().clone());
                let json = GcsJson::new(
                    endpoint.as_deref(),
                    &url.bucket,
                    creds,
                    cfg.retry.clone(),
                    PART_SIZE,
                )?;
                // Listings go over the XML API with the JSON client's credentials and pool.
                lister = Some(RawLister::new(
                    json.rest().clone(),
                    &json.xml_bucket_url(),
                    Dialect::S3,
                ));
                gcs = Some(Arc::new(json));
                let d = format!("gs://{}", url.bucket);
                (s, d)
            }
            StoreKind::File => {
                let root = std::path::PathBuf::from(&url.bucket);
                std::fs::create_dir_all(&root).map_err(|e| {
                    BackendError::Config(format!("file store {}: {e}", root.display()))
                })?;
                let s = Arc::new(LocalFileSystem::new_with_prefix(&root).map_err(build_err)?);
                local_root = Some(root);
                local_fs = Some(s.clone());
                (s, format!("file://{}", url.bucket))
            }
            StoreKind::Memory => {
                return Err(BackendError::Config(
                    "mem:// is served by MemoryBackend".into(),
                ));
            }
        };
        let conditional_writes = match url.kind {
            StoreKind::S3 => cfg.s3.conditional_writes,
            _ => true,
        };
        Ok(ObjectStoreBackend {
            store,
            kind: url.kind,
            description,
            conditional_writes,
            gcs,
            lister,
            local_root,
            local_fs,
            azure_blocks,
            s3_parts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conn_string() {
        let c = parse_conn_string(
            "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=abc==;BlobEndpoint=http://127.0.0.1:10000/devstoreaccount1/;",
        )
        .unwrap();
        assert_eq!(c.account.as_deref(), Some("devstoreaccount1"));
        assert_eq!(c.key.as_deref(), Some("abc=="));
        assert_eq!(
            c.blob_endpoint.as_deref(),
            Some("http://127.0.0.1:10000/devstoreaccount1")
        );
    }
}
