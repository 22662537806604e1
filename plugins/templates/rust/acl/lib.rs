//! An ACL plugin (hook `acl`): owner, group and mode per key prefix, and access granted the
//! POSIX way from that mode. Parameters:
//! - `owner=PREFIX:UID:GID:MODE` (repeatable; the longest matching prefix wins; `MODE` is
//!   octal, e.g. `0750`);
//! - `default=UID:GID:MODE` (default `0:0:0755`): for every other key.
//!
//! Access: root (uid 0) gets everything; otherwise the owner bits of the mode apply when the
//! caller's uid is the owner, the group bits when its gid is the group, else the other bits.
//! To make it yours, change `decide`, then add cases to `fixtures.yaml`.

use blobmount_plugin_sdk::acl::{Access, Acl, Caller, Decision, ObjectInfo};
use blobmount_plugin_sdk::{parse_mode, Params};

#[derive(Clone, Copy)]
struct Owner {
    uid: u32,
    gid: u32,
    mode: u32,
}

struct PrefixOwner {
    /// (prefix, owner), longest prefix first.
    rules: Vec<(String, Owner)>,
    default: Owner,
}

/// `UID:GID:MODE`.
fn parse_owner(key: &str, v: &str) -> Result<Owner, String> {
    let bad = || format!("parameter {key}: {v:?} is not UID:GID:MODE");
    let mut it = v.split(':');
    let (Some(uid), Some(gid), Some(mode), None) = (it.next(), it.next(), it.next(), it.next())
    else {
        return Err(bad());
    };
    Ok(Owner {
        uid: uid.trim().parse().map_err(|_| bad())?,
        gid: gid.trim().parse().map_err(|_| bad())?,
        mode: parse_mode(mode)?,
    })
}

impl Acl for PrefixOwner {
    /// Called once per instance with `plugins.acl.params` from the mount config. An `Err`
    /// stops the mount with that message.
    fn new(params: Params) -> Result<Self, String> {
        params.only(&["owner", "default"])?; // CHANGE: the parameter names you accept
        let mut rules = Vec::new();
        for rule in params.all("owner") {
            // PREFIX:UID:GID:MODE — the prefix may itself contain ':'.
            let mut parts = rule.rsplitn(4, ':');
            let (Some(mode), Some(gid), Some(uid), Some(prefix)) =
                (parts.next(), parts.next(), parts.next(), parts.next())
            else {
                return Err(format!(
                    "parameter owner: {rule:?} is not PREFIX:UID:GID:MODE"
                ));
            };
            let owner = parse_owner("owner", &format!("{uid}:{gid}:{mode}"))?;
            rules.push((prefix.to_string(), owner));
        }
        rules.sort_by(|a, b| b.0.len().cmp(&a.0.len()));
        let default = match params.get("default") {
            Some(v) => parse_owner("default", v)?,
            None => Owner {
                uid: 0,
                gid: 0,
                mode: 0o755,
            },
        };
        Ok(PrefixOwner { rules, default })
    }

    /// `who` is the calling process's uid and gid.
    fn decide(&self, obj: &ObjectInfo, who: Caller) -> Decision {
        // CHANGE: your rule.
        let owner = self
            .rules
            .iter()
            .find(|(prefix, _)| obj.key.starts_with(prefix.as_str()))
            .map_or(self.default, |(_, o)| *o);
        let bits = if who.uid == 0 {
            0o7
        } else if who.uid == owner.uid {
            (owner.mode >> 6) & 0o7
        } else if who.gid == owner.gid {
            (owner.mode >> 3) & 0o7
        } else {
            owner.mode & 0o7
        };
        let mut allow = Access::empty();
        if bits & 0o4 != 0 {
            allow = allow | Access::READ;
        }
        if bits & 0o2 != 0 {
            allow = allow | Access::WRITE;
        }
        if bits & 0o1 != 0 {
            allow = allow | Access::EXECUTE;
        }
        Decision {
            uid: owner.uid,
            gid: owner.gid,
            mode: owner.mode,
            allow,
        }
    }
}

blobmount_plugin_sdk::acl_plugin!(PrefixOwner);
