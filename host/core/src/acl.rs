//! POSIX ACLs on a store with POSIX access (ADLS Gen2 HNS): `getfacl` / `setfacl` through
//! `system.posix_acl_access` (the kernel's binary form, which FUSE passes to daemons that do
//! not claim ACL support, on mounts in the initial user namespace), and the same ACL as text,
//! the DFS API's own form (`user::rw-,user:1000:r--,group::r--,mask::r--,other::---`), through
//! `user.blobmount.acl` for tools and kernels that do not pass the former.
//!
//! Why a module of its own: the conversion between the two forms and the rules of an ACL
//! (base entries present, the mode bits it implies) are pure and tested here; `xattr.rs` only
//! routes the names. The store is the truth: each read is one getAccessControl, each write
//! one setAccessControl (`docs/semantics.md`, "ADLS Gen2").

use blobmount_backend::api::parse_permissions;
use blobmount_backend::{AccessUpdate, PathAccess};

use crate::error::{FsError, FsResult};
use crate::fs::Fs;
use crate::inode::ROOT_INO;
use crate::sync::lock;

/// The kernel's name of a file's access ACL.
pub const POSIX_ACL_ACCESS: &str = "system.posix_acl_access";
/// The text form, under blobmount's own namespace (readable and writable).
pub const OWN_ACL: &str = "user.blobmount.acl";

const VERSION: u32 = 2;
const USER_OBJ: u16 = 0x01;
const USER: u16 = 0x02;
const GROUP_OBJ: u16 = 0x04;
const GROUP: u16 = 0x08;
const MASK: u16 = 0x10;
const OTHER: u16 = 0x20;
const UNDEFINED_ID: u32 = u32::MAX;

fn bad(why: &'static str) -> FsError {
    FsError::Invalid(why)
}

fn perm_bits(s: &str) -> FsResult<u16> {
    let b = s.as_bytes();
    if b.len() != 3 {
        return Err(bad("ACL permissions are three characters, rwx"));
    }
    let bit = |c: u8, want: u8, v: u16| match c {
        c if c == want => Ok(v),
        b'-' => Ok(0),
        _ => Err(bad("ACL permissions are r, w, x or -")),
    };
    Ok(bit(b[0], b'r', 4)? | bit(b[1], b'w', 2)? | bit(b[2], b'x', 1)?)
}

fn perm_text(p: u16) -> String {
    let c = |bit: u16, ch: char| if p & bit != 0 { ch } else { '-' };
    [c(4, 'r'), c(2, 'w'), c(1, 'x')].iter().collect()
}

/// The access ACL text (DFS form) as the kernel's `posix_acl_xattr` binary. Default
/// (`default:`) entries are not part of the access ACL; named entries whose id is not a
/// number (an Entra object id) cannot be written in the binary form and are left out.
pub fn text_to_xattr(acl: &str) -> FsResult<Vec<u8>> {
    let mut entries: Vec<(u16, u16, u32)> = Vec::new();
    for e in acl.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        if e.starts_with("default:") {
            continue;
        }
        let mut parts = e.splitn(3, ':');
        let (kind, id, perm) = (
            parts.next().unwrap_or(""),
            parts.next().unwrap_or(""),
            parts.next().ok_or(bad("an ACL entry is TAG:ID:PERMS"))?,
        );
        let p = perm_bits(perm)?;
        let entry = match (kind, id) {
            ("user", "") => (USER_OBJ, p, UNDEFINED_ID),
            ("group", "") => (GROUP_OBJ, p, UNDEFINED_ID),
            ("mask", "") => (MASK, p, UNDEFINED_ID),
            ("other", "") => (OTHER, p, UNDEFINED_ID),
            ("user", id) => match id.parse() {
                Ok(n) => (USER, p, n),
                Err(_) => continue,
            },
            ("group", id) => match id.parse() {
                Ok(n) => (GROUP, p, n),
                Err(_) => continue,
            },
            _ => return Err(bad("an ACL entry's tag is user, group, mask or other")),
        };
        entries.push(entry);
    }
    // The kernel wants them ordered by tag, then id.
    entries.sort_by_key(|&(tag, _, id)| (tag, id));
    let mut out = VERSION.to_le_bytes().to_vec();
    for (tag, perm, id) in entries {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    }
    Ok(out)
}

/// The kernel's binary access ACL as DFS text.
pub fn xattr_to_text(v: &[u8]) -> FsResult<String> {
    if v.len() < 4 || !(v.len() - 4).is_multiple_of(8) {
        return Err(bad("not a POSIX ACL"));
    }
    if u32::from_le_bytes([v[0], v[1], v[2], v[3]]) != VERSION {
        return Err(bad("unknown POSIX ACL version"));
    }
    let mut out = Vec::new();
    for e in v[4..].chunks_exact(8) {
        let tag = u16::from_le_bytes([e[0], e[1]]);
        let p = perm_text(u16::from_le_bytes([e[2], e[3]]));
        let id = u32::from_le_bytes([e[4], e[5], e[6], e[7]]);
        out.push(match tag {
            USER_OBJ => format!("user::{p}"),
            USER => format!("user:{id}:{p}"),
            GROUP_OBJ => format!("group::{p}"),
            GROUP => format!("group:{id}:{p}"),
            MASK => format!("mask::{p}"),
            OTHER => format!("other::{p}"),
            _ => return Err(bad("unknown POSIX ACL entry tag")),
        });
    }
    Ok(out.join(","))
}

/// Check an access ACL and give the mode bits it implies: the owner's, the mask's (else
/// the owning group's) and the others' permissions.
pub fn mode_of(acl: &str) -> FsResult<u16> {
    let mut base = [None::<u16>; 4];
    for e in acl.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let slot = match e.rsplit_once(':').map(|(h, _)| h) {
            Some("user:") => 0,
            Some("group:") => 1,
            Some("mask:") => 2,
            Some("other:") => 3,
            _ => continue,
        };
        base[slot] = Some(perm_bits(e.rsplit(':').next().unwrap_or(""))?);
    }
    let (Some(u), Some(g), Some(o)) = (base[0], base[1], base[3]) else {
        return Err(bad("an ACL needs user::, group:: and other:: entries"));
    };
    Ok(u << 6 | base[2].unwrap_or(g) << 3 | o)
}

/// The ACL with only the base entries of `mode`.
fn base_acl(mode: u16) -> String {
    format!(
        "user::{},group::{},other::{}",
        perm_text(mode >> 6 & 7),
        perm_text(mode >> 3 & 7),
        perm_text(mode & 7)
    )
}

/// The store key of `ino` for an ACL call, or why it has none.
fn acl_key(fs: &Fs, ino: u64) -> FsResult<String> {
    if !fs.backend.capabilities().posix_access {
        return Err(FsError::NotSupported(
            "POSIX ACLs need a store with a hierarchical namespace",
        ));
    }
    if ino == ROOT_INO && fs.ns.key_of(ino)?.is_empty() {
        return Err(FsError::NotSupported("the container root has no ACL here"));
    }
    fs.ns.key_of(ino)
}

/// getxattr of [`POSIX_ACL_ACCESS`] (`binary`) or [`OWN_ACL`].
pub(crate) async fn get_acl(fs: &Fs, ino: u64, binary: bool) -> FsResult<Vec<u8>> {
    let key = acl_key(fs, ino)?;
    let PathAccess {
        acl, permissions, ..
    } = fs.backend.get_access(&key).await?;
    // A store that reports no ACL: the one the permissions are.
    let acl = match (acl.is_empty(), parse_permissions(&permissions)) {
        (true, Some(p)) => base_acl(p),
        _ => acl,
    };
    match binary {
        // As on a local file system: an ACL that only restates the mode bits is no extended
        // attribute (`ls -l` shows no `+`, `getfacl` prints the mode's entries).
        true if is_minimal(&acl) => Err(FsError::NoAttr),
        true => text_to_xattr(&acl),
        false => Ok(acl.into_bytes()),
    }
}

/// Whether an ACL's access entries are only `user::`, `group::` and `other::`.
fn is_minimal(acl: &str) -> bool {
    acl.split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty() && !e.starts_with("default:"))
        .all(|e| e.starts_with("user::") || e.starts_with("group::") || e.starts_with("other::"))
}

/// setxattr of [`POSIX_ACL_ACCESS`] (`binary`) or [`OWN_ACL`]: one setAccessControl;
/// the mode bits follow the ACL, as in POSIX.
pub(crate) async fn set_acl(fs: &Fs, ino: u64, value: &[u8], binary: bool) -> FsResult<()> {
    fs.ns.check_node_writable(ino)?;
    let key = acl_key(fs, ino)?;
    let acl = match binary {
        true => xattr_to_text(value)?,
        false => std::str::from_utf8(value)
            .map_err(|_| bad("an ACL is text"))?
            .trim()
            .to_string(),
    };
    let mode = mode_of(&acl)?;
    let (local_only, perm) = lock(&fs.ns.table)
        .get(ino)
        .map(|n| (n.local_only, (n.perm & 0o7000) | mode))
        .ok_or(FsError::NotFound)?;
    if local_only && is_minimal(&acl) {
        // A file not in the store yet has no ACL but its mode's: an ACL of the mode's
        // entries only is a chmod that joins its upload (`cp -a` sets one on each copy it
        // has just created), as on a local file system.
        let req = crate::types::SetAttr {
            perm: Some(perm),
            ..Default::default()
        };
        return fs.setattr(ino, req).await.map(|_| ());
    }
    // A named entry or a mask needs the path in the store: a new file goes up first.
    if local_only && let Some(e) = fs.files.entry(ino) {
        let mut st = e.state.lock().await;
        fs.files.upload_locked(ino, &e, &mut st).await?;
    }
    let _scope = fs.files.enter_gate(&[ino]).await;
    let update = AccessUpdate {
        acl: Some(acl),
        ..Default::default()
    };
    let after = fs.backend.set_access(&key, &update).await?;
    match fs.files.entry(ino) {
        Some(e) => {
            let mut st = e.state.lock().await;
            fs.files.own_new_version(ino, Some(&mut st), after);
        }
        None => fs.files.own_new_version(ino, None, after),
    }
    if let Some(n) = lock(&fs.ns.table).get_mut(ino) {
        n.perm = (n.perm & 0o7000) | mode;
        n.ctime = std::time::SystemTime::now();
    }
    Ok(())
}

/// removexattr of the ACL: only the base entries stay (from the current mode).
pub(crate) async fn remove_acl(fs: &Fs, ino: u64) -> FsResult<()> {
    let perm = lock(&fs.ns.table)
        .get(ino)
        .map(|n| n.perm)
        .ok_or(FsError::NotFound)?;
    set_acl(fs, ino, base_acl(perm).as_bytes(), false).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_and_text_round_trip() {
        let text = "user::rw-,user:1000:r-x,group::r--,group:7:rw-,mask::rwx,other::---";
        let bin = text_to_xattr(text).unwrap();
        assert_eq!(bin.len(), 4 + 6 * 8);
        assert_eq!(&bin[..4], &2u32.to_le_bytes());
        // user::rw- first: tag 1, perm 6, undefined id.
        assert_eq!(&bin[4..12], &[1, 0, 6, 0, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(xattr_to_text(&bin).unwrap(), text);
        // Default entries and non-numeric ids are not in the access ACL's binary form.
        let with_default = "user::rwx,user:4f0c-aa:r--,group::r-x,other::---,default:user::rwx";
        let t = xattr_to_text(&text_to_xattr(with_default).unwrap()).unwrap();
        assert_eq!(t, "user::rwx,group::r-x,other::---");
    }

    #[test]
    fn the_mode_follows_the_acl() {
        assert_eq!(mode_of("user::rwx,group::r-x,other::---").unwrap(), 0o750);
        assert_eq!(
            mode_of("user::rw-,user:7:rwx,group::r--,mask::rw-,other::r--").unwrap(),
            0o664
        );
        assert!(mode_of("user::rwx,other::---").is_err());
        assert!(mode_of("user::rwz,group::r--,other::---").is_err());
        assert!(xattr_to_text(&[1, 0, 0, 0]).is_err());
        assert!(xattr_to_text(&[2, 0, 0, 0, 1]).is_err());
    }
}
