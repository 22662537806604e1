//! POSIX owner, group, permission bits and ACLs of a path, as the DFS API exposes them
//! (`x-ms-owner`, `x-ms-group`, `x-ms-permissions` like `rwxr-x---+`, `x-ms-acl` like
//! `user::rwx,user:UID:r--,group::r-x,mask::r-x,other::---,default:user::rwx,...`),
//! kept in blob metadata (see the keys in `ns`). Permission bits are the truth for the
//! owner, group-class and other entries; with a mask, the group-class bits are the mask's.

use std::collections::BTreeMap;

use super::ns::{ACL_KEY, GROUP_KEY, Kind, OWNER_KEY, PERMS_KEY, R, fail};

/// Owner and group nobody set.
pub const SUPERUSER: &str = "$superuser";

/// One ACL entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub default: bool,
    /// `user`, `group`, `mask` or `other`.
    pub kind: String,
    /// Empty for the owning user/group, mask and other.
    pub id: String,
    pub perms: u16,
}

impl Entry {
    fn render(&self) -> String {
        format!(
            "{}{}:{}:{}",
            if self.default { "default:" } else { "" },
            self.kind,
            self.id,
            rwx(self.perms)
        )
    }

    fn order(&self) -> (bool, u8, String) {
        let rank = match (self.kind.as_str(), self.id.is_empty()) {
            ("user", true) => 0,
            ("user", false) => 1,
            ("group", true) => 2,
            ("group", false) => 3,
            ("mask", _) => 4,
            _ => 5,
        };
        (self.default, rank, self.id.clone())
    }

    fn is_base(&self) -> bool {
        !self.default
            && self.id.is_empty()
            && matches!(self.kind.as_str(), "user" | "group" | "other")
    }
}

fn rwx(p: u16) -> String {
    let c = |bit: u16, ch: char| if p & bit != 0 { ch } else { '-' };
    format!("{}{}{}", c(4, 'r'), c(2, 'w'), c(1, 'x'))
}

fn bits(s: &str) -> Option<u16> {
    let b = s.as_bytes();
    if b.len() != 3 {
        return None;
    }
    let one = |i: usize, ch: u8, v: u16| match b[i] {
        x if x == ch => Some(v),
        b'-' => Some(0),
        _ => None,
    };
    Some(one(0, b'r', 4)? | one(1, b'w', 2)? | one(2, b'x', 1)?)
}

/// Parse `x-ms-acl`.
pub fn parse_acl(s: &str) -> R<Vec<Entry>> {
    let bad = |e: &str| {
        fail(
            400,
            "InvalidAccessControlList",
            &format!("bad ACL entry {e:?}"),
        )
    };
    let mut out: Vec<Entry> = Vec::new();
    for e in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (default, rest) = match e.strip_prefix("default:") {
            Some(r) => (true, r),
            None => (false, e),
        };
        let parts: Vec<&str> = rest.split(':').collect();
        let [kind, id, perms] = parts[..] else {
            return Err(bad(e));
        };
        if !matches!(kind, "user" | "group" | "mask" | "other")
            || (matches!(kind, "mask" | "other") && !id.is_empty())
        {
            return Err(bad(e));
        }
        let perms = bits(perms).ok_or_else(|| bad(e))?;
        out.retain(|x| !(x.default == default && x.kind == kind && x.id == id));
        out.push(Entry {
            default,
            kind: kind.to_string(),
            id: id.to_string(),
            perms,
        });
    }
    Ok(out)
}

/// Parse `x-ms-permissions` / `x-ms-umask`: symbolic (`rwxr-x---`, sticky as `t`/`T`) or
/// octal (`0750`, `750`).
pub fn parse_mode(s: &str) -> R<u16> {
    let bad = || fail(400, "InvalidPermission", &format!("bad permissions {s:?}"));
    let s = s.trim();
    if s.len() <= 4 && !s.is_empty() && s.bytes().all(|b| (b'0'..=b'7').contains(&b)) {
        return u16::from_str_radix(s, 8).map_err(|_| bad());
    }
    let s = s.strip_suffix('+').unwrap_or(s);
    if s.len() != 9 || !s.is_ascii() {
        return Err(bad());
    }
    let (mut other, mut sticky) = (s[6..9].to_string(), 0);
    if other.ends_with('t') || other.ends_with('T') {
        sticky = 0o1000;
        let x = if other.ends_with('t') { "x" } else { "-" };
        other = format!("{}{x}", &other[..2]);
    }
    let u = bits(&s[0..3]).ok_or_else(bad)?;
    let g = bits(&s[3..6]).ok_or_else(bad)?;
    let o = bits(&other).ok_or_else(bad)?;
    Ok(sticky | u << 6 | g << 3 | o)
}

/// The access state of one path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    pub owner: String,
    pub group: String,
    /// Permission bits including sticky (0o1000).
    pub mode: u16,
    /// The stored ACL (empty when only the three base entries).
    pub acl: Vec<Entry>,
}

impl Access {
    /// Read from metadata; paths without any (written through the Blob API) get the
    /// defaults: `$superuser`, 0640 for files, 0750 for directories.
    pub fn from_meta(meta: &BTreeMap<String, String>, kind: Kind) -> Access {
        let default_mode = if kind == Kind::Dir { 0o750 } else { 0o640 };
        Access {
            owner: meta
                .get(OWNER_KEY)
                .cloned()
                .unwrap_or_else(|| SUPERUSER.into()),
            group: meta
                .get(GROUP_KEY)
                .cloned()
                .unwrap_or_else(|| SUPERUSER.into()),
            mode: meta
                .get(PERMS_KEY)
                .and_then(|p| u16::from_str_radix(p, 8).ok())
                .unwrap_or(default_mode),
            acl: meta
                .get(ACL_KEY)
                .and_then(|a| parse_acl(a).ok())
                .unwrap_or_default(),
        }
    }

    /// Write into metadata (other keys kept).
    pub fn to_meta(&self, meta: &mut BTreeMap<String, String>) {
        meta.insert(OWNER_KEY.into(), self.owner.clone());
        meta.insert(GROUP_KEY.into(), self.group.clone());
        meta.insert(PERMS_KEY.into(), format!("{:04o}", self.mode));
        if self.acl.iter().any(|e| !e.is_base()) {
            meta.insert(ACL_KEY.into(), self.render_acl());
        } else {
            meta.remove(ACL_KEY);
        }
    }

    fn has_mask(&self) -> bool {
        self.acl.iter().any(|e| !e.default && e.kind == "mask")
    }

    /// Named entries or a mask in the access ACL.
    pub fn extended(&self) -> bool {
        self.acl
            .iter()
            .any(|e| !e.default && (e.kind == "mask" || !e.id.is_empty()))
    }

    /// `x-ms-permissions`: `rwxr-x---`, `t`/`T` for sticky, `+` for an extended ACL.
    pub fn permissions(&self) -> String {
        let mut other = rwx(self.mode & 7);
        if self.mode & 0o1000 != 0 {
            let t = if self.mode & 1 != 0 { 't' } else { 'T' };
            other = format!("{}{t}", &other[..2]);
        }
        format!(
            "{}{}{other}{}",
            rwx(self.mode >> 6 & 7),
            rwx(self.mode >> 3 & 7),
            if self.extended() { "+" } else { "" }
        )
    }

    /// The full ACL with the base entries (and the mask) taken from the permission bits.
    pub fn full_acl(&self) -> Vec<Entry> {
        let entry = |kind: &str, perms: u16| Entry {
            default: false,
            kind: kind.into(),
            id: String::new(),
            perms,
        };
        let g = self.mode >> 3 & 7;
        let mut out = vec![
            entry("user", self.mode >> 6 & 7),
            entry("other", self.mode & 7),
        ];
        if self.has_mask() {
            out.push(entry("mask", g));
            let group = self
                .acl
                .iter()
                .find(|e| !e.default && e.kind == "group" && e.id.is_empty())
                .map_or(g, |e| e.perms);
            out.push(entry("group", group));
        } else {
            out.push(entry("group", g));
        }
        out.extend(
            self.acl
                .iter()
                .filter(|e| e.default || (!e.id.is_empty() && e.kind != "mask"))
                .cloned(),
        );
        out.sort_by_key(Entry::order);
        out
    }

    pub fn render_acl(&self) -> String {
        self.full_acl()
            .iter()
            .map(Entry::render)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Replace the ACL (setAccessControl with `x-ms-acl`): the permission bits follow its
    /// owner, mask-or-group and other entries; a missing mask is computed when named
    /// entries need one.
    pub fn set_acl(&mut self, mut entries: Vec<Entry>) -> R<()> {
        let find = |es: &[Entry], kind: &str| {
            es.iter()
                .find(|e| !e.default && e.kind == kind && e.id.is_empty())
                .map(|e| e.perms)
        };
        let missing = || {
            fail(
                400,
                "InvalidAccessControlList",
                "the ACL needs user::, group:: and other:: entries",
            )
        };
        let u = find(&entries, "user").ok_or_else(missing)?;
        let g = find(&entries, "group").ok_or_else(missing)?;
        let o = find(&entries, "other").ok_or_else(missing)?;
        let named = entries.iter().any(|e| !e.default && !e.id.is_empty());
        let mut mask = find(&entries, "mask");
        if mask.is_none() && named {
            let m = entries
                .iter()
                .filter(|e| {
                    !e.default && (e.kind == "group" || (e.kind == "user" && !e.id.is_empty()))
                })
                .fold(0, |a, e| a | e.perms);
            entries.push(Entry {
                default: false,
                kind: "mask".into(),
                id: String::new(),
                perms: m,
            });
            mask = Some(m);
        }
        self.mode = (self.mode & 0o1000) | u << 6 | mask.unwrap_or(g) << 3 | o;
        self.acl = entries;
        Ok(())
    }

    /// The default ACL entries, if any (inherited by new children).
    pub fn defaults(&self) -> Vec<Entry> {
        self.acl.iter().filter(|e| e.default).cloned().collect()
    }

    /// The access of a new path: `requested` mode (`x-ms-permissions`, else 0777 / 0666)
    /// restricted by `umask` (`x-ms-umask`, else 0027), or, under a parent with a default
    /// ACL, that ACL (as access entries, and as default entries too for a directory)
    /// restricted by the requested mode, as the REST reference describes.
    pub fn new_path(
        kind: Kind,
        owner: String,
        group: String,
        requested: Option<u16>,
        umask: Option<u16>,
        parent_defaults: &[Entry],
    ) -> Access {
        let p = requested.unwrap_or(if kind == Kind::Dir { 0o777 } else { 0o666 });
        let mut a = Access {
            owner,
            group,
            mode: p & !umask.unwrap_or(0o027) & 0o1777,
            acl: Vec::new(),
        };
        if !parent_defaults.is_empty() {
            let mut entries: Vec<Entry> = parent_defaults
                .iter()
                .map(|e| Entry {
                    default: false,
                    ..e.clone()
                })
                .collect();
            for e in &mut entries {
                let cap = match (e.kind.as_str(), e.id.is_empty()) {
                    ("user", true) => p >> 6 & 7,
                    ("other", _) => p & 7,
                    ("mask", _) => p >> 3 & 7,
                    ("group", true) if !parent_defaults.iter().any(|d| d.kind == "mask") => {
                        p >> 3 & 7
                    }
                    _ => 7,
                };
                e.perms &= cap;
            }
            if kind == Kind::Dir {
                entries.extend(parent_defaults.iter().cloned());
            }
            if a.set_acl(entries).is_ok() {
                a.mode &= 0o777;
            }
        }
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_symbolic_and_octal() {
        assert_eq!(parse_mode("0750").unwrap(), 0o750);
        assert_eq!(parse_mode("750").unwrap(), 0o750);
        assert_eq!(parse_mode("1777").unwrap(), 0o1777);
        assert_eq!(parse_mode("rwxr-x---").unwrap(), 0o750);
        assert_eq!(parse_mode("rwxr-x---+").unwrap(), 0o750);
        assert_eq!(parse_mode("rwxrwxrwt").unwrap(), 0o1777);
        assert_eq!(parse_mode("rwxrwxrwT").unwrap(), 0o1776);
        for bad in ["", "0800", "rwx", "rwxr-x-ü", "rwxrwxrwz", "12345"] {
            assert!(parse_mode(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn permissions_render_with_sticky_and_plus() {
        let mut a = Access::from_meta(&BTreeMap::new(), Kind::Dir);
        assert_eq!(a.permissions(), "rwxr-x---");
        a.mode = 0o1776;
        assert_eq!(a.permissions(), "rwxrwxrwT");
        a.set_acl(parse_acl("user::rwx,user:u1:rw-,group::r--,other::---").unwrap())
            .unwrap();
        // A named entry gets a computed mask (the union of the group class), shown as the
        // group bits.
        assert_eq!(a.permissions(), "rwxrw---T+");
        assert_eq!(
            a.render_acl(),
            "user::rwx,user:u1:rw-,group::r--,mask::rw-,other::---"
        );
    }

    #[test]
    fn new_paths_follow_umask_or_the_parents_default_acl() {
        let su = || SUPERUSER.to_string();
        let a = Access::new_path(Kind::File, su(), su(), None, None, &[]);
        assert_eq!(a.permissions(), "rw-r-----");
        let a = Access::new_path(Kind::Dir, su(), su(), Some(0o777), Some(0o022), &[]);
        assert_eq!(a.permissions(), "rwxr-xr-x");
        let defaults = parse_acl("default:user::rwx,default:user:u2:r-x,default:group::r-x,default:mask::rwx,default:other::r--").unwrap();
        let f = Access::new_path(Kind::File, su(), su(), None, None, &defaults);
        assert_eq!(
            f.render_acl(),
            "user::rw-,user:u2:r-x,group::r-x,mask::rw-,other::r--"
        );
        let d = Access::new_path(Kind::Dir, su(), su(), None, None, &defaults);
        assert!(
            d.render_acl().contains("default:user:u2:r-x"),
            "{}",
            d.render_acl()
        );
    }

    #[test]
    fn bad_acls_are_refused() {
        for bad in ["user::rwx,bogus", "mask:x:rwx", "user::rwz", "other:o:r--"] {
            assert!(parse_acl(bad).is_err(), "{bad:?}");
        }
        let mut a = Access::from_meta(&BTreeMap::new(), Kind::File);
        assert!(a.set_acl(parse_acl("user::rwx").unwrap()).is_err());
    }
}
