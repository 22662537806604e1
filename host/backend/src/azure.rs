//! Azure Blob Storage (`az://ACCOUNT/CONTAINER`): reads, single-request writes, copies and
//! deletes through the shared data plane ([`ObjectPlane`]); listings and Content-MD5 over
//! REST ([`RawLister`], Azure dialect); uploads in parts, large files and appends as block
//! uploads whose commit carries the precondition ([`AzureBlocks`]).
//!
//! Why a type of its own: Azure paths cannot end in `/`, so this store has no `dir/` markers
//! (directories use the BlobFuse2 convention, a blob `dir` with metadata
//! `hdi_isfolder=true`, which the core writes), and it is the one store whose committed blocks
//! can be reused for an append. Building the client resolves credentials from the config, the
//! environment or a connection string, and knows Azurite's well-known development account.

use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use object_store::azure::{MicrosoftAzure, MicrosoftAzureBuilder};

use crate::adls::Dfs;
use crate::api::{
    ACCESS_GROUP, ACCESS_OWNER, ACCESS_PERMISSIONS, AccessUpdate, PathAccess, RenameCond,
};
use crate::api::{
    AppendBase, Backend, Capabilities, ListPage, ObjectInfo, PartUpload, Precondition, PutMeta,
    PutOutcome, Result,
};
use crate::azblocks::AzureBlocks;
use crate::checksum::{ChecksumKind, StoredSum};
use crate::config::PartSizes;
use crate::config::{AzureMode, HnsMode, Secret, StoreConfig, StoreUrl};
use crate::connect::{build_err, client_options, env, retry_config, secret_or_env};
use crate::error::BackendError;
use crate::listing::{Dialect, RawLister};
use crate::objstore::ObjectPlane;
use crate::rest::{Rest, Signer, encode_segment, keyed, percent_decode, status_error, xml_values};
use crate::upload::upload_in_parts;
use crate::writes::{copy_in_store, small_file};

/// The well-known Azurite development account key (public, documented by Microsoft).
pub const AZURITE_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// Azure's limit of blocks per blob, times our block size: what our uploads reach.
/// Blocks in one blob.
const MAX_BLOCKS: u64 = 50_000;

/// One Azure container.
pub struct AzureBackend {
    plane: ObjectPlane,
    lister: RawLister,
    blocks: Arc<AzureBlocks>,
    /// Signed requests the data plane library makes differently (Delete Blob).
    rest: Rest,
    container_url: String,
    account_url: String,
    /// Block size and blocks in flight of uploads in parts.
    parts: PartSizes,
    description: String,
    /// The account has a hierarchical namespace: renames, directories and access go
    /// through the DFS API ([`Dfs`]; `None` when no DFS endpoint is known).
    hns: bool,
    dfs: Option<Dfs>,
}

impl std::fmt::Debug for AzureBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AzureBackend")
            .field("store", &self.description)
            .finish()
    }
}

/// Fields of an Azure connection string.
#[derive(Default)]
struct ConnString {
    account: Option<String>,
    key: Option<Secret>,
    sas: Option<Secret>,
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
            "AccountKey" => c.key = Some(Secret::new(v)),
            "SharedAccessSignature" => c.sas = Some(Secret::new(v)),
            "BlobEndpoint" => c.blob_endpoint = Some(v.trim_end_matches('/').to_string()),
            _ => {}
        }
    }
    Ok(c)
}

/// Account, credentials and endpoint, from the config, the environment and a connection
/// string (in that order of precedence).
struct Access {
    account: String,
    key: Option<Secret>,
    sas: Option<Secret>,
    /// An explicit endpoint (`…/ACCOUNT`), if any.
    endpoint: Option<String>,
    /// URL of the account, for the REST calls.
    account_url: String,
}

impl Access {
    fn resolve(url: &StoreUrl, cfg: &StoreConfig) -> Result<Access> {
        let az = &cfg.azure;
        let conn = match secret_or_env(&az.connection_string, &["AZURE_STORAGE_CONNECTION_STRING"])
        {
            Some(s) => parse_conn_string(s.expose())?,
            None => ConnString::default(),
        };
        let key_from_file = match &az.account_key_file {
            Some(p) => {
                let text = Secret::new(std::fs::read_to_string(p).map_err(|e| {
                    BackendError::Config(format!(
                        "store.azure.account-key-file {}: {e}",
                        p.display()
                    ))
                })?);
                Some(Secret::new(text.expose().trim()))
            }
            None => None,
        };
        let key = secret_or_env(
            &az.account_key,
            &["AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_KEY"],
        )
        .or(key_from_file)
        .or(conn.key);
        let sas = secret_or_env(&az.sas_token, &["AZURE_STORAGE_SAS_TOKEN"]).or(conn.sas);
        let endpoint = cfg.endpoint.clone().or(conn.blob_endpoint);
        let account = conn.account.unwrap_or_else(|| url.account.clone());
        let account_url = match (&endpoint, &url.dfs_host) {
            (Some(e), _) => e.trim_end_matches('/').to_string(),
            // abfss://C@A.dfs.HOST: the Blob endpoint is A.blob.HOST.
            (None, Some(h)) => format!("https://{}", h.replacen(".dfs.", ".blob.", 1)),
            (None, None) if az.use_emulator => format!(
                "{}/{account}",
                env(&["AZURITE_BLOB_STORAGE_URL"])
                    .unwrap_or_else(|| "http://127.0.0.1:10000".into())
                    .trim_end_matches('/')
            ),
            (None, None) => format!("https://{account}.blob.core.windows.net"),
        };
        Ok(Access {
            account,
            key,
            sas,
            endpoint,
            account_url,
        })
    }

    /// The `object_store` client of container `container`.
    fn client(&self, container: &str, cfg: &StoreConfig) -> Result<MicrosoftAzure> {
        let use_emulator = cfg.azure.use_emulator;
        let mut b = MicrosoftAzureBuilder::new()
            .with_account(&self.account)
            .with_container_name(container)
            .with_retry(retry_config(cfg))
            .with_client_options(client_options(cfg, self.endpoint.as_deref()));
        if use_emulator && self.endpoint.is_none() {
            b = b.with_use_emulator(true);
        }
        if let Some(e) = &self.endpoint {
            b = b.with_endpoint(e.clone());
        }
        let mode = cfg.azure.mode;
        // A key or SAS given wins when no mode is named (as before modes existed).
        let token = match mode {
            Some(AzureMode::Key | AzureMode::Sas) => None,
            None if self.key.is_some() || self.sas.is_some() => None,
            _ => crate::azcreds::find(&cfg.azure, &|k| env(&[k]))?,
        };
        if let Some(p) = token {
            b = b.with_credentials(p);
        } else if mode == Some(AzureMode::Key) && self.key.is_none() {
            return Err(BackendError::Config(
                "azure mode key: no account key (store.azure.account-key, account-key-file, AZURE_STORAGE_ACCOUNT_KEY or a connection string)".into(),
            ));
        } else if mode == Some(AzureMode::Sas) && self.sas.is_none() {
            return Err(BackendError::Config(
                "azure mode sas: no SAS token (store.azure.sas-token, AZURE_STORAGE_SAS_TOKEN or a connection string)".into(),
            ));
        } else if let Some(k) = self.key.as_ref().filter(|_| mode != Some(AzureMode::Sas)) {
            b = b.with_access_key(k.expose());
        } else if let Some(s) = &self.sas {
            let pairs = s
                .expose()
                .trim_start_matches('?')
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), percent_decode(v, false)))
                .collect::<Vec<_>>();
            b = b.with_sas_authorization(pairs);
        } else if use_emulator {
            b = b.with_access_key(AZURITE_KEY);
        }
        b.build().map_err(build_err)
    }
}

impl AzureBackend {
    /// [`AzureBackend::open`], then decide whether the account has a hierarchical namespace
    /// (`store.azure.hns`; `auto` asks the account once, see [`AzureBackend::detect_hns`]).
    pub async fn connect(url: &StoreUrl, cfg: &StoreConfig) -> Result<Self> {
        let mut b = Self::open(url, cfg)?;
        if cfg.azure.hns == HnsMode::Auto && url.dfs_host.is_none() {
            b.detect_hns().await;
        }
        Ok(b)
    }

    /// `store.azure.hns: auto`: Get Account Information on the Blob endpoint. A missing
    /// `x-ms-is-hns-enabled` header (emulators) or a failed request means a flat namespace;
    /// an HNS account without a known DFS endpoint is used flat too. Logged once.
    pub async fn detect_hns(&mut self) {
        let found = crate::adls::detect_hns(&self.rest, &self.account_url).await;
        self.hns = match (found, &self.dfs) {
            (Some(true), Some(_)) => true,
            (Some(true), None) => {
                tracing::warn!(store = %self.description, "the account has a hierarchical namespace, but no DFS endpoint is known for it (set store.azure.dfs-endpoint); using it as a flat namespace");
                false
            }
            (Some(false) | None, _) => false,
        };
        self.lister = RawLister::new(self.rest.clone(), &self.container_url, dialect(self.hns));
        tracing::info!(
            store = %self.description,
            hns = self.hns,
            answered = found.is_some(),
            "hierarchical namespace (store.azure.hns: auto)"
        );
    }

    /// Connect to the container `url` names (nothing is sent until the first call). The
    /// namespace is hierarchical when `store.azure.hns` is `true` or the URL is an `abfs`
    /// one; `auto` is settled by [`AzureBackend::connect`].
    pub fn open(url: &StoreUrl, cfg: &StoreConfig) -> Result<Self> {
        let access = Access::resolve(url, cfg)?;
        let store = Arc::new(access.client(&url.bucket, cfg)?);
        let rest = Rest::new(
            cfg.retry.clone(),
            Signer::Azure {
                creds: store.credentials().clone(),
                account: access.account.clone(),
            },
        )?;
        let container_url = format!("{}/{}", access.account_url, encode_segment(&url.bucket));
        let dfs_endpoint = cfg
            .azure
            .dfs_endpoint
            .clone()
            .or_else(|| url.dfs_host.as_ref().map(|h| format!("https://{h}")))
            .or_else(|| crate::adls::dfs_endpoint_of(&access.account_url));
        let forced = url.dfs_host.is_some() || cfg.azure.hns == HnsMode::On;
        if forced && dfs_endpoint.is_none() {
            return Err(BackendError::Config(format!(
                "store.azure.hns is true but no DFS endpoint follows from the endpoint {} (set store.azure.dfs-endpoint, e.g. http://127.0.0.1:PORT/{})",
                access.account_url, access.account
            )));
        }
        let dfs = dfs_endpoint.map(|e| Dfs::new(rest.clone(), &e, &url.bucket));
        Ok(AzureBackend {
            plane: ObjectPlane::new(store),
            blocks: AzureBlocks::new(rest.clone(), &container_url, !cfg.unchecked_uploads),
            lister: RawLister::new(rest.clone(), &container_url, dialect(forced)),
            rest,
            container_url,
            account_url: access.account_url.clone(),
            parts: cfg.parts.or_default(),
            description: format!("az://{}/{}", access.account, url.bucket),
            hns: forced,
            dfs,
        })
    }
}

/// Listings of an HNS account carry each path's access (`include=permissions`).
fn dialect(hns: bool) -> Dialect {
    match hns {
        true => Dialect::AzureHns,
        false => Dialect::Azure,
    }
}

impl AzureBackend {
    /// Give the copy `to` (just made, `copied`) the type `content_type` (Get and Set Blob
    /// Properties). The copy is made: a type that could not be set leaves the source's, not
    /// a failed rename with both names in the store.
    async fn type_the_copy(&self, to: &str, content_type: &str, copied: PutOutcome) -> PutOutcome {
        match self.blocks.set_content_type(to, content_type).await {
            Ok(etag) => PutOutcome { etag },
            Err(e) => {
                tracing::warn!(key = to, error = %e, "could not set the content type of a copy; it keeps the source's");
                copied
            }
        }
    }

    /// The DFS client, on an account with a hierarchical namespace.
    fn dfs(&self) -> Result<&Dfs> {
        self.dfs.as_ref().filter(|_| self.hns).ok_or_else(|| {
            BackendError::NotSupported(format!(
                "{}: no hierarchical namespace (store.azure.hns)",
                self.description
            ))
        })
    }
}

/// Every container of an account (List Containers, all pages), for `blobmount mount all`:
/// `url` names the account (its container part is not used).
pub async fn list_containers(url: &StoreUrl, cfg: &StoreConfig) -> Result<Vec<String>> {
    let b = AzureBackend::open(url, cfg)?;
    let mut names = Vec::new();
    let mut marker: Option<String> = None;
    loop {
        let mut list = format!("{}/?comp=list&maxresults=5000", b.account_url);
        if let Some(m) = &marker {
            list.push_str(&format!("&marker={}", encode_segment(m)));
        }
        let what = "List Containers";
        let r = b
            .rest
            .send(what, http::Method::GET, &list, &[], Bytes::new())
            .await?;
        if !r.status().is_success() {
            return Err(status_error(what, false, r).await);
        }
        let xml = r
            .text()
            .await
            .map_err(|e| BackendError::Unavailable(format!("{what}: {e}")))?;
        names.extend(xml_values(&xml, "Name"));
        marker = xml_values(&xml, "NextMarker")
            .into_iter()
            .next()
            .filter(|m| !m.is_empty());
        if marker.is_none() {
            return Ok(names);
        }
    }
}

#[async_trait]
impl Backend for AzureBackend {
    fn describe(&self) -> String {
        self.description.clone()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            dir_markers: false,
            native_metadata_update: false,
            conditional_writes: true,
            append_uploads: true,
            native_rename: self.hns,
            real_dirs: self.hns,
            posix_access: self.hns,
            max_object_size: Some(MAX_BLOCKS * self.parts.size as u64),
            metadata: crate::api::MetadataRules {
                kept: true,
                names: crate::api::MetaNames::CIdentifier,
                ascii_values: true,
                max_total: 8 * 1024,
            },
        }
    }

    /// On an HNS account, the path's owner, group and permissions come with it (a
    /// getAccessControl sent alongside the Blob HEAD; see [`ACCESS_OWNER`]).
    async fn head(&self, key: &str) -> Result<ObjectInfo> {
        let Some(dfs) = self.dfs.as_ref().filter(|_| self.hns) else {
            return self.plane.head(key).await;
        };
        let (info, access) = tokio::join!(self.plane.head(key), dfs.get_access(key));
        let mut info = info?;
        match access {
            Ok(a) => {
                let m = info.metadata.get_or_insert_with(Default::default);
                m.insert(ACCESS_OWNER.into(), a.owner);
                m.insert(ACCESS_GROUP.into(), a.group);
                m.insert(ACCESS_PERMISSIONS.into(), a.permissions);
            }
            Err(e) => tracing::debug!(key, error = %e, "no access control for a path"),
        }
        Ok(info)
    }

    async fn get_range(
        &self,
        key: &str,
        range: Range<u64>,
        if_match: Option<&str>,
    ) -> Result<Bytes> {
        self.plane.get_range(key, range, if_match).await
    }

    async fn put(
        &self,
        key: &str,
        data: Bytes,
        meta: &PutMeta,
        cond: &Precondition,
    ) -> Result<PutOutcome> {
        self.blocks.put_blob(key, data, meta, cond).await
    }

    async fn put_file(
        &self,
        key: &str,
        file: &Path,
        meta: &PutMeta,
        cond: &Precondition,
    ) -> Result<PutOutcome> {
        let Some(data) = small_file(file).await? else {
            return upload_in_parts(self.blocks.start(key, meta), key, file, self.parts, cond)
                .await;
        };
        let r = self.put(key, data, meta, cond).await;
        // A blob nobody can read but that holds uncommitted blocks (a streaming upload of it
        // was abandoned) refuses a Put Blob on absence; a block list commit on absence is
        // accepted.
        let refused = matches!(
            r,
            Err(BackendError::AlreadyExists { .. } | BackendError::PreconditionFailed { .. })
        );
        if refused
            && *cond == Precondition::IfNotExists
            && self.head(key).await.is_err_and(|e| e.is_not_found())
        {
            return upload_in_parts(self.blocks.start(key, meta), key, file, self.parts, cond)
                .await;
        }
        r
    }

    async fn list_page(&self, prefix: &str, token: Option<String>, max: usize) -> Result<ListPage> {
        self.lister.list_page(prefix, token, max).await
    }

    async fn list_under(&self, prefix: &str, max: usize) -> Result<ListPage> {
        self.lister.list_under(prefix, max).await
    }

    /// One Delete Blob. `object_store` sends every delete as a blob batch, which Azurite
    /// answers with 500 when the request is authorized by a SAS (tests/tests/azure_auth.rs);
    /// a single delete is one request as well and works with every credential.
    async fn delete(&self, key: &str) -> Result<()> {
        let path: Vec<String> = key.split('/').map(encode_segment).collect();
        let url = format!("{}/{}", self.container_url, path.join("/"));
        let what = "Delete Blob";
        let r = self
            .rest
            .send(what, http::Method::DELETE, &url, &[], Bytes::new())
            .await?;
        if r.status().is_success() {
            Ok(())
        } else {
            Err(keyed(status_error(what, false, r).await, key))
        }
    }

    async fn copy(&self, from: &str, to: &str, cond: &Precondition) -> Result<PutOutcome> {
        copy_in_store(self, &self.plane, from, to, cond).await
    }

    /// Copy Blob keeps the source's properties and takes none (Put Blob From URL would, but
    /// Azurite does not implement it): the type is set by Set Blob Properties after.
    async fn copy_typed(
        &self,
        from: &str,
        to: &str,
        content_type: &str,
        cond: &Precondition,
    ) -> Result<PutOutcome> {
        let copied = copy_in_store(self, &self.plane, from, to, cond).await?;
        Ok(self.type_the_copy(to, content_type, copied).await)
    }

    /// One Copy Blob carrying the metadata (and the source's version as its condition);
    /// Get and Set Blob Properties after it only when the type changes, as for
    /// [`Backend::copy_typed`].
    async fn copy_as(
        &self,
        from: &str,
        to: &str,
        meta: &PutMeta,
        source_etag: Option<&str>,
        stored_type: Option<&str>,
        cond: &Precondition,
    ) -> Result<PutOutcome> {
        crate::objstore::key_to_path(to)?;
        let etag = self
            .blocks
            .copy_blob(from, to, &meta.metadata, source_etag, cond)
            .await?;
        let copied = PutOutcome { etag };
        match &meta.content_type {
            Some(ct) if stored_type != Some(ct.as_str()) => {
                Ok(self.type_the_copy(to, ct, copied).await)
            }
            Some(_) | None => Ok(copied),
        }
    }

    fn checksum_kind(&self) -> ChecksumKind {
        ChecksumKind::Md5
    }

    async fn content_checksum(
        &self,
        key: &str,
        etag: &str,
        kind: ChecksumKind,
    ) -> Result<Option<StoredSum>> {
        self.lister.content_checksum(key, etag, kind).await
    }

    async fn set_metadata(
        &self,
        key: &str,
        meta: &PutMeta,
        if_match: Option<&str>,
    ) -> Result<PutOutcome> {
        // Set Blob Metadata changes the metadata in place (no data moves). Its content type
        // is a property set apart: a Get Blob Properties first tells whether it changes (and
        // gives the version to hold the update to when none is given); Set Blob Properties
        // only when it does. Two requests for a chmod or a setxattr, not a rewrite.
        let info = self.plane.head(key).await?;
        if if_match.is_some() && info.etag.as_deref() != if_match {
            return Err(BackendError::PreconditionFailed { key: key.into() });
        }
        let version = if_match.map(str::to_string).or(info.etag.clone());
        let mut etag = self
            .blocks
            .set_metadata(key, &meta.metadata, version.as_deref())
            .await?;
        if let Some(ct) = &meta.content_type
            && info.content_type.as_deref() != Some(ct.as_str())
        {
            etag = self.blocks.set_content_type(key, ct).await?;
        }
        Ok(PutOutcome { etag })
    }

    async fn set_metadata_over(
        &self,
        key: &str,
        meta: &PutMeta,
        if_match: Option<&str>,
        stored_type: Option<&str>,
    ) -> Result<PutOutcome> {
        // The version and its type are known: Set Blob Metadata alone, conditional on the
        // version (a changed blob answers 412 as the read-first path would find).
        let same_type = meta.content_type.is_none() || meta.content_type.as_deref() == stored_type;
        match if_match {
            Some(v) if same_type => {
                let etag = self
                    .blocks
                    .set_metadata(key, &meta.metadata, Some(v))
                    .await?;
                Ok(PutOutcome { etag })
            }
            Some(_) | None => self.set_metadata(key, meta, if_match).await,
        }
    }

    async fn put_appended(
        &self,
        key: &str,
        base: &AppendBase,
        file: &Path,
        meta: &PutMeta,
        cond: &Precondition,
    ) -> Result<Option<PutOutcome>> {
        let read_old = |range| self.plane.get_range(key, range, Some(&base.etag));
        let sizes = (self.parts.size, self.parts.in_flight);
        self.blocks
            .append(key, base, file, meta, cond, sizes, read_old)
            .await
    }

    async fn start_upload(
        self: Arc<Self>,
        key: &str,
        meta: &PutMeta,
        _cond: &Precondition,
    ) -> Result<Option<Box<dyn PartUpload>>> {
        // The condition travels with the commit (Put Block List).
        Ok(Some(self.blocks.start(key, meta)))
    }

    async fn rename(&self, from: &str, to: &str, cond: &RenameCond) -> Result<PutOutcome> {
        self.dfs()?.rename(from, to, cond).await
    }

    async fn create_dir(&self, key: &str, mode: Option<u16>) -> Result<()> {
        self.dfs()?.create_dir(key, mode).await
    }

    async fn delete_dir(&self, key: &str, recursive: bool) -> Result<()> {
        self.dfs()?.delete_dir(key, recursive).await
    }

    async fn get_access(&self, key: &str) -> Result<PathAccess> {
        self.dfs()?.get_access(key).await
    }

    async fn set_access(&self, key: &str, update: &AccessUpdate) -> Result<Option<String>> {
        self.dfs()?.set_access(key, update).await
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
        assert_eq!(c.key.as_ref().map(Secret::expose), Some("abc=="));
        assert_eq!(
            c.blob_endpoint.as_deref(),
            Some("http://127.0.0.1:10000/devstoreaccount1")
        );
    }

    /// `write.part-size-mib` reaches the store: it sizes uploads in parts and with them the
    /// largest blob (50,000 blocks).
    #[test]
    fn the_part_size_sets_the_largest_blob() {
        crate::install_crypto_provider();
        let mut cfg = StoreConfig {
            url: Some("az://devstoreaccount1/box".into()),
            endpoint: Some("http://127.0.0.1:9/devstoreaccount1".into()),
            ..Default::default()
        };
        cfg.azure.use_emulator = true;
        let url = cfg.parsed_url().unwrap();
        let default = AzureBackend::open(&url, &cfg).unwrap();
        assert_eq!(
            default.capabilities().max_object_size,
            Some(50_000 * (8 << 20))
        );
        cfg.parts = PartSizes {
            size: 64 << 20,
            in_flight: 2,
        };
        let big = AzureBackend::open(&url, &cfg).unwrap();
        assert_eq!(
            big.capabilities().max_object_size,
            Some(50_000 * (64 << 20))
        );
        assert_eq!(big.parts.in_flight, 2);
    }
}
