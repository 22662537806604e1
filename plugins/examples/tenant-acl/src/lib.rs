//! Example ACL plugin: each tenant owns a key prefix.
//!
//! Parameters:
//! - `tenant=PREFIX:UID:GID:MODE` (repeatable; the longest matching prefix wins), e.g.
//!   `tenant=tenants/alice/:1001:1001:0750`
//! - `default=UID:GID:MODE` for keys outside every tenant prefix (default `0:0:0755`)
//!
//! Access: the owning uid (and root) gets read+write+execute; members of the tenant's gid get
//! read+execute; everyone else gets nothing inside a tenant prefix, and read+execute outside.
//! Regular files get the mode without execute bits.

use blobmount_plugin_sdk::acl::{Access, Acl, Caller, Decision, ObjectInfo};
use blobmount_plugin_sdk::{parse_mode, Params};

struct Owner {
    uid: u32,
    gid: u32,
    mode: u32,
}

struct TenantAcl {
    tenants: Vec<(String, Owner)>,
    default: Owner,
}

fn parse_owner(s: &str) -> Result<Owner, String> {
    let mut it = s.split(':');
    let (Some(u), Some(g), Some(m), None) = (it.next(), it.next(), it.next(), it.next()) else {
        return Err(format!("expected UID:GID:MODE, got {s:?}"));
    };
    Ok(Owner {
        uid: u.parse().map_err(|_| format!("bad uid in {s:?}"))?,
        gid: g.parse().map_err(|_| format!("bad gid in {s:?}"))?,
        mode: parse_mode(m)?,
    })
}

impl Acl for TenantAcl {
    fn new(p: Params) -> Result<Self, String> {
        p.only(&["tenant", "default"])?;
        let mut tenants = Vec::new();
        for t in p.all("tenant") {
            let (prefix, rest) = t
                .split_once(':')
                .ok_or_else(|| format!("tenant: expected PREFIX:UID:GID:MODE, got {t:?}"))?;
            tenants.push((prefix.to_string(), parse_owner(rest)?));
        }
        // Longest prefix first, so nested tenants work.
        tenants.sort_by(|a, b| b.0.len().cmp(&a.0.len()));
        let default = match p.get("default") {
            Some(d) => parse_owner(d)?,
            None => Owner {
                uid: 0,
                gid: 0,
                mode: 0o755,
            },
        };
        Ok(TenantAcl { tenants, default })
    }

    fn decide(&self, obj: &ObjectInfo, who: Caller) -> Decision {
        let tenant = self.tenants.iter().find(|(prefix, _)| {
            obj.key.starts_with(prefix.as_str()) || obj.key == prefix.trim_end_matches('/')
        });
        let (owner, inside) = match tenant {
            Some((_, o)) => (o, true),
            None => (&self.default, false),
        };
        let mode = if obj.is_dir {
            owner.mode
        } else {
            owner.mode & !0o111
        };
        let allow = if who.uid == 0 || who.uid == owner.uid {
            Access::READ | Access::WRITE | Access::EXECUTE
        } else if who.gid == owner.gid || !inside {
            Access::READ | Access::EXECUTE
        } else {
            Access::empty()
        };
        Decision {
            uid: owner.uid,
            gid: owner.gid,
            mode,
            allow,
        }
    }
}

blobmount_plugin_sdk::acl_plugin!(TenantAcl);
