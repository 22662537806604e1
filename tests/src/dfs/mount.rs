//! What a blobmount ADLS Gen2 mount through the DFS test endpoint is configured with: the
//! Blob API on the endpoint's forwarder, the DFS API on its DFS listener, and the keys
//! `store.azure.hns` / `store.azure.dfs-endpoint` the ADLS backend reads (the daemon owns
//! those keys; this only writes them).

use super::DfsEndpoint;
use crate::{AZURITE_ACCOUNT, AZURITE_KEY, MountSpec};

/// The config (as a JSON value; YAML is a superset) of a blobmount mount of `container`
/// through `ep` with hierarchical namespace on.
pub fn adls_mount_config(ep: &DfsEndpoint, container: &str) -> serde_json::Value {
    serde_json::json!({
        "store": {
            "url": format!("az://{AZURITE_ACCOUNT}/{container}"),
            "endpoint": ep.blob_endpoint(),
            "azure": {
                "account-key": AZURITE_KEY,
                "hns": true,
                "dfs-endpoint": ep.dfs_endpoint(),
            }
        }
    })
}

/// The same mount as a [`MountSpec`]: store URL and `--endpoint` as for Azurite, the account
/// key and the two ADLS keys as `BLOBMOUNT_STORE__AZURE__*` environment overrides (so no
/// config file is needed and `args` stay free for the test).
pub fn adls_mount_spec(ep: &DfsEndpoint, container: &str) -> MountSpec {
    MountSpec {
        url: format!("az://{AZURITE_ACCOUNT}/{container}"),
        endpoint: Some(ep.blob_endpoint()),
        env: vec![
            ("AZURE_STORAGE_ACCOUNT_KEY".into(), AZURITE_KEY.into()),
            ("BLOBMOUNT_STORE__AZURE__HNS".into(), "true".into()),
            (
                "BLOBMOUNT_STORE__AZURE__DFS_ENDPOINT".into(),
                ep.dfs_endpoint(),
            ),
        ],
        args: vec![],
        cache: None,
        mountpoint: None,
    }
}
