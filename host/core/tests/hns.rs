//! The core on a store with a hierarchical namespace (ADLS Gen2 HNS), driven over the
//! in-memory store's HNS mode: renames of files and whole directories are one request with
//! no journal, directories are real (mkdir and rmdir one request each, ENOTEMPTY from the
//! store), and the requests each costs are counted (see `common::Kinds`).

use std::sync::Arc;
use std::time::Duration;

use blobmount_backend::memory::MemoryBackend;
use blobmount_backend::{Backend, RenameCond};
use blobmount_core::{Caller, FsError, ROOT_INO};

mod common;
use common::{Kinds, TestFs, put, stored, test_fs_on};

const ME: Caller = Caller {
    uid: 1000,
    gid: 1000,
};

fn mount(mem: Arc<MemoryBackend>) -> TestFs {
    test_fs_on(mem, |c| {
        c.attr_ttl = Duration::from_secs(60);
        c.list_ttl = Duration::from_secs(60);
        c.negative_ttl = Duration::from_secs(60);
        // Far below the directory renamed below: a flat store would refuse it (EXDEV).
        c.rename_dir_limit = 10;
    })
}

fn hns() -> Arc<MemoryBackend> {
    Arc::new(MemoryBackend::new_hns())
}

async fn read_all(t: &TestFs, ino: u64) -> Vec<u8> {
    let h = t.fs.open(ino, libc::O_RDONLY).await.unwrap();
    let d = t.fs.read(h.fh, 0, 1 << 20).await.unwrap();
    t.fs.release(h.fh).await.unwrap();
    d.to_vec()
}

#[tokio::test]
async fn a_file_rename_is_one_request() {
    let mem = hns();
    mem.create_dir("d", None).await.unwrap();
    put(&mem, "d/a", b"data").await;
    let t = mount(mem);
    let d = t.fs.lookup(ROOT_INO, "d").await.unwrap().ino;
    let a = t.fs.lookup(d, "a").await.unwrap().ino;
    assert_eq!(t.fs.lookup(d, "b").await, Err(FsError::NotFound));
    let before = t.c.kinds();
    t.fs.rename(d, "a", d, "b", false).await.unwrap();
    let k = t.c.kinds() - before;
    assert_eq!(
        k,
        Kinds {
            rename: 1,
            ..Default::default()
        }
    );
    assert_eq!(stored(&*t.mem, "d/b").await.unwrap(), b"data");
    assert_eq!(stored(&*t.mem, "d/a").await, None);
    assert_eq!(read_all(&t, a).await, b"data");
}

#[tokio::test]
async fn a_directory_of_500_files_renames_in_one_request_without_a_journal() {
    let mem = hns();
    mem.create_dir("big", None).await.unwrap();
    for i in 0..500 {
        put(&mem, &format!("big/sub{}/f{i}", i % 5), b"x").await;
    }
    let t = mount(mem);
    let big = t.fs.lookup(ROOT_INO, "big").await.unwrap().ino;
    assert_eq!(t.fs.lookup(ROOT_INO, "moved").await, Err(FsError::NotFound));
    let before = t.c.kinds();
    t.fs.rename(ROOT_INO, "big", ROOT_INO, "moved", false)
        .await
        .unwrap();
    let k = t.c.kinds() - before;
    assert_eq!(
        k,
        Kinds {
            rename: 1,
            ..Default::default()
        }
    );
    let journal = t.dir.path().join("journal");
    let entries = std::fs::read_dir(&journal).map(|d| d.count()).unwrap_or(0);
    assert_eq!(entries, 0, "no journal entry for a native rename");
    let keys = t.mem.keys();
    assert_eq!(keys.iter().filter(|k| k.starts_with("moved/")).count(), 500);
    assert!(!keys.iter().any(|k| k.starts_with("big")), "{keys:?}");
    // The inode moved with its name; what is inside resolves under the new one.
    let moved = t.fs.lookup(ROOT_INO, "moved").await.unwrap().ino;
    assert_eq!(moved, big);
    let sub = t.fs.lookup(moved, "sub3").await.unwrap().ino;
    let f = t.fs.lookup(sub, "f8").await.unwrap().ino;
    assert_eq!(read_all(&t, f).await, b"x");
}

#[tokio::test]
async fn mkdir_and_rmdir_are_one_request_each() {
    let t = mount(hns());
    let fh = t.fs.opendir(ROOT_INO).await.unwrap();
    t.fs.releasedir(fh);
    let before = t.c.kinds();
    let d = t.fs.mkdir(ROOT_INO, "d", 0o750, ME).await.unwrap();
    assert_eq!(
        t.c.kinds() - before,
        Kinds {
            dirop: 1,
            ..Default::default()
        }
    );
    assert_eq!(d.perm, 0o750);
    assert_eq!(
        t.mem.get_access("d").await.unwrap().permissions,
        "rwxr-x---"
    );
    assert_eq!(
        t.fs.mkdir(ROOT_INO, "d", 0o750, ME).await.map(|_| ()),
        Err(FsError::Exists)
    );
    let before = t.c.kinds();
    t.fs.rmdir(ROOT_INO, "d").await.unwrap();
    assert_eq!(
        t.c.kinds() - before,
        Kinds {
            dirop: 1,
            ..Default::default()
        }
    );
    assert!(t.mem.keys().is_empty());
}

#[tokio::test]
async fn rmdir_of_a_non_empty_directory_is_enotempty_from_the_store() {
    let mem = hns();
    mem.create_dir("d", None).await.unwrap();
    let t = mount(mem.clone());
    t.fs.lookup(ROOT_INO, "d").await.unwrap();
    // Another client writes into it after the mount looked.
    put(&mem, "d/late", b"x").await;
    let before = t.c.kinds();
    let r = t.fs.rmdir(ROOT_INO, "d").await;
    assert_eq!(r.map_err(|e| e.errno()), Err(libc::ENOTEMPTY));
    assert_eq!(
        t.c.kinds() - before,
        Kinds {
            dirop: 1,
            ..Default::default()
        }
    );
    assert!(mem.keys().contains(&"d/late".to_string()));
}

#[tokio::test]
async fn rename_noreplace_and_onto_a_non_empty_directory() {
    let mem = hns();
    put(&mem, "a", b"1").await;
    put(&mem, "b", b"2").await;
    mem.create_dir("x", None).await.unwrap();
    mem.create_dir("y", None).await.unwrap();
    put(&mem, "y/z", b"3").await;
    let t = mount(mem.clone());
    let r = t.fs.rename(ROOT_INO, "a", ROOT_INO, "b", true).await;
    assert_eq!(r, Err(FsError::Exists));
    let r = t.fs.rename(ROOT_INO, "x", ROOT_INO, "y", false).await;
    assert_eq!(r.map_err(|e| e.errno()), Err(libc::ENOTEMPTY));
    // A file replaces a file.
    t.fs.rename(ROOT_INO, "a", ROOT_INO, "b", false)
        .await
        .unwrap();
    assert_eq!(stored(&*mem, "b").await.unwrap(), b"1");
    assert_eq!(stored(&*mem, "a").await, None);
}

/// A file open for writing inside a directory renamed under it: its changes are uploaded
/// before the move, go with it, and its later writes land under the new name.
#[tokio::test]
async fn an_open_file_moves_with_its_directory() {
    let mem = hns();
    mem.create_dir("d", None).await.unwrap();
    put(&mem, "d/f", b"old").await;
    let t = mount(mem.clone());
    let d = t.fs.lookup(ROOT_INO, "d").await.unwrap().ino;
    let f = t.fs.lookup(d, "f").await.unwrap().ino;
    let h = t.fs.open(f, libc::O_RDWR).await.unwrap();
    t.fs.write(h.fh, 0, b"new").await.unwrap();
    t.fs.rename(ROOT_INO, "d", ROOT_INO, "e", false)
        .await
        .unwrap();
    assert_eq!(stored(&*mem, "e/f").await.unwrap(), b"new");
    t.fs.write(h.fh, 3, b"+more").await.unwrap();
    t.fs.flush(h.fh).await.unwrap();
    t.fs.release(h.fh).await.unwrap();
    assert_eq!(stored(&*mem, "e/f").await.unwrap(), b"new+more");
    assert!(!mem.keys().iter().any(|k| k.starts_with("d")));
    // Conditions of the store hold for the next writer too.
    let stale = RenameCond {
        source_etag: Some("\"nope\"".into()),
        no_replace: false,
    };
    assert!(mem.rename("e/f", "e/g", &stale).await.is_err());
}

fn setattr_perm(perm: u16) -> blobmount_core::SetAttr {
    blobmount_core::SetAttr {
        perm: Some(perm),
        ..Default::default()
    }
}

/// chmod, chown and chgrp are each one set-access on the path (no metadata write), stat
/// shows them at once, and another mount reads them from the store.
#[tokio::test]
async fn chmod_and_chown_are_one_set_access_each() {
    let mem = hns();
    put(&mem, "f", b"data").await;
    mem.create_dir("d", None).await.unwrap();
    let t = mount(mem.clone());
    let f = t.fs.lookup(ROOT_INO, "f").await.unwrap();
    assert_eq!(f.perm, 0o640, "the store's default permissions");
    let before = t.c.kinds();
    let a = t.fs.setattr(f.ino, setattr_perm(0o755)).await.unwrap();
    assert_eq!(a.perm, 0o755);
    tokio::time::sleep(t.fs.config().attr_write_delay * 3).await;
    assert_eq!(
        t.c.kinds() - before,
        Kinds {
            access: 1,
            ..Default::default()
        }
    );
    assert_eq!(mem.get_access("f").await.unwrap().permissions, "rwxr-xr-x");
    let before = t.c.kinds();
    let chown = blobmount_core::SetAttr {
        uid: Some(1234),
        gid: Some(99),
        ..Default::default()
    };
    let a = t.fs.setattr(f.ino, chown).await.unwrap();
    assert_eq!((a.uid, a.gid), (1234, 99));
    assert_eq!((t.c.kinds() - before).access, 1);
    let acc = mem.get_access("f").await.unwrap();
    assert_eq!((acc.owner.as_str(), acc.group.as_str()), ("1234", "99"));
    // A directory too.
    let d = t.fs.lookup(ROOT_INO, "d").await.unwrap();
    t.fs.setattr(d.ino, setattr_perm(0o700)).await.unwrap();
    assert_eq!(mem.get_access("d").await.unwrap().permissions, "rwx------");
    // Another mount sees what the store has.
    let other = mount(mem.clone());
    let f2 = other.fs.lookup(ROOT_INO, "f").await.unwrap();
    assert_eq!((f2.perm, f2.uid, f2.gid), (0o755, 1234, 99));
    let d2 = other.fs.lookup(ROOT_INO, "d").await.unwrap();
    assert_eq!(d2.perm, 0o700);
    // The access pseudo-keys are neither metadata nor extended attributes.
    let names = other.fs.listxattr(f2.ino).await.unwrap();
    assert!(
        !String::from_utf8_lossy(&names).contains("x-ms"),
        "{names:?}"
    );
}

/// getfacl / setfacl: `system.posix_acl_access` (binary) and `user.blobmount.acl` (text)
/// are the path's ACL, one request each; the mode follows the ACL.
#[tokio::test]
async fn acls_read_and_set_through_extended_attributes() {
    use blobmount_core::acl::{OWN_ACL, POSIX_ACL_ACCESS, text_to_xattr, xattr_to_text};
    let mem = hns();
    put(&mem, "f", b"data").await;
    let t = mount(mem.clone());
    let f = t.fs.lookup(ROOT_INO, "f").await.unwrap().ino;
    let before = t.c.kinds();
    let text = t.fs.getxattr(f, OWN_ACL).await.unwrap();
    assert_eq!(text, b"user::rw-,group::r--,other::---");
    assert_eq!((t.c.kinds() - before).access, 1);
    // An ACL that only restates the mode is no extended attribute (`ls -l` shows no `+`).
    assert_eq!(
        t.fs.getxattr(f, POSIX_ACL_ACCESS)
            .await
            .unwrap_err()
            .errno(),
        libc::ENODATA
    );
    // setfacl -m u:1000:rwx f
    let acl = "user::rw-,user:1000:rwx,group::r--,mask::rwx,other::---";
    let before = t.c.kinds();
    t.fs.setxattr(f, POSIX_ACL_ACCESS, &text_to_xattr(acl).unwrap(), 0)
        .await
        .unwrap();
    assert_eq!(
        t.c.kinds() - before,
        Kinds {
            access: 1,
            ..Default::default()
        }
    );
    let stored = mem.get_access("f").await.unwrap();
    assert_eq!(stored.acl, acl);
    assert_eq!(stored.permissions, "rw-rwx---+");
    let bin = t.fs.getxattr(f, POSIX_ACL_ACCESS).await.unwrap();
    assert_eq!(xattr_to_text(&bin).unwrap(), acl);
    assert_eq!(t.fs.getattr(f).await.unwrap().perm, 0o670);
    // The text form is writable too; a bad ACL is EINVAL and changes nothing.
    let r = t.fs.setxattr(f, OWN_ACL, b"user::rwx,other::---", 0).await;
    assert_eq!(r.map_err(|e| e.errno()), Err(libc::EINVAL));
    assert_eq!(mem.get_access("f").await.unwrap().acl, acl);
    t.fs.setxattr(f, OWN_ACL, b"user::rwx,group::r-x,other::r--", 0)
        .await
        .unwrap();
    assert_eq!(t.fs.getattr(f).await.unwrap().perm, 0o754);
    // setfacl -b: the base entries of the mode stay.
    t.fs.removexattr(f, POSIX_ACL_ACCESS).await.unwrap();
    assert_eq!(
        mem.get_access("f").await.unwrap().acl,
        "user::rwx,group::r-x,other::r--"
    );
}

/// On a flat store the ACL names are not supported (ENOTSUP), without a request.
#[tokio::test]
async fn a_flat_store_has_no_acls() {
    let mem = Arc::new(MemoryBackend::new());
    put(&mem, "f", b"data").await;
    let t = mount(mem);
    let f = t.fs.lookup(ROOT_INO, "f").await.unwrap().ino;
    let before = t.c.kinds();
    let r =
        t.fs.getxattr(f, blobmount_core::acl::POSIX_ACL_ACCESS)
            .await;
    assert_eq!(r.map_err(|e| e.errno()), Err(libc::ENOTSUP));
    assert_eq!((t.c.kinds() - before).total(), 0);
}
