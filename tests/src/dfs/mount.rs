//! What a blobmount ADLS Gen2 mount through the DFS test endpoint is configured with: the
//! Blob API on the endpoint's forwarder, the DFS API on its DFS listener, and the keys
//! `store.azure.hns` / `store.azure.dfs-endpoint` the ADLS backend reads (the daemon owns
//! those keys; this only writes them).

use super::DfsEndpoint;
use crate::{AZURITE_ACCOUNT, AZURITE_KEY};

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
