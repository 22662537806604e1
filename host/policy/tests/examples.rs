//! Each example plugin in plugins/examples, loaded from its real built component, decides as
//! its documentation says.

mod common;

use blobmount_policy::{Hook, PluginConfig};
use blobmount_policy_api::{
    Access, Caller, ConflictEntry, ConflictKind, Policy, Resolution, Ttl, Verdict,
};
use common::{component, obj, policy};

#[test]
fn glob_filter_hides_protects_and_limits() {
    let cfg = PluginConfig::new(component("glob-filter"))
        .param("include", "*.csv")
        .param("include", "keep/**")
        .param("exclude", "*.tmp")
        .param("exclude", "secret")
        .param("read-only", "archive/**")
        .param("max-size", "100")
        .param("max-age-secs", "3600")
        .param("hide-content-type", "video/");
    let p = policy(Hook::Filter, cfg);
    let now = 1_000_000;
    let cases = [
        (obj("a/b.csv", 5, now), Verdict::Visible),
        (obj("a/b.txt", 5, now), Verdict::Hidden),
        (obj("keep/x/y.bin", 5, now), Verdict::Visible),
        (obj("a/b.tmp", 5, now), Verdict::Hidden),
        (obj("x/secret/", 0, 0), Verdict::Hidden),
        (obj("x/other/", 0, 0), Verdict::Visible),
        (obj("big.csv", 101, now), Verdict::Hidden),
        (obj("old.csv", 1, now - 3601), Verdict::Hidden),
        (obj("archive/2020.csv", 5, now), Verdict::VisibleReadOnly),
    ];
    for (o, want) in &cases {
        assert_eq!(p.filter(o, now), *want, "{}", o.key);
    }
    let mut movie = obj("m.csv", 5, now);
    movie.content_type = Some("video/mp4".into());
    assert_eq!(p.filter(&movie, now), Verdict::Hidden);
    // The batch path gives the same answers in one call.
    let objs: Vec<_> = cases.iter().map(|(o, _)| o.clone()).collect();
    let want: Vec<_> = cases.iter().map(|(_, v)| *v).collect();
    assert_eq!(p.try_filter_batch(&objs, now).unwrap(), want);
    assert_eq!(p.filter_batch(&objs, now), want);
}

#[test]
fn glob_filter_rejects_unknown_parameters_at_load() {
    let cfg = PluginConfig::new(component("glob-filter")).param("exclud", "*.tmp");
    let e = common::try_policy(Hook::Filter, cfg)
        .err()
        .expect("must fail");
    let msg = e.to_string();
    assert!(
        msg.contains("refused its parameters") && msg.contains("exclud"),
        "{msg}"
    );
}

#[test]
fn tenant_acl_maps_prefixes_to_owners() {
    let cfg = PluginConfig::new(component("tenant-acl"))
        .param("tenant", "tenants/alice/:1001:1001:0750")
        .param("tenant", "tenants/bob/:1002:1002:0700")
        .param("default", "0:0:0755");
    let p = policy(Hook::Acl, cfg);
    let alice = Caller {
        uid: 1001,
        gid: 1001,
    };
    let bob = Caller {
        uid: 1002,
        gid: 1002,
    };
    let d = p.acl(&obj("tenants/alice/data.csv", 1, 0), alice);
    assert_eq!((d.uid, d.gid, d.mode), (1001, 1001, 0o640));
    assert_eq!(d.allow, Access::ALL);
    let d = p.acl(&obj("tenants/alice/", 0, 0), bob);
    assert_eq!((d.uid, d.mode), (1001, 0o750));
    assert_eq!(d.allow, Access::NONE);
    let d = p.acl(&obj("shared/readme", 1, 0), bob);
    assert_eq!((d.uid, d.gid, d.mode), (0, 0, 0o644));
    assert_eq!(
        d.allow,
        Access {
            read: true,
            write: false,
            execute: true
        }
    );
    let root = p.acl(&obj("tenants/bob/x", 1, 0), Caller { uid: 0, gid: 0 });
    assert_eq!(root.allow, Access::ALL);
}

#[test]
fn prefix_consistency_per_prefix() {
    let cfg = PluginConfig::new(component("prefix-consistency"))
        .param("immutable", "datasets/")
        .param("revalidate", "logs/")
        .param("default-ttl-ms", "2500");
    let p = policy(Hook::Consistency, cfg);
    let d = p.consistency("datasets/imagenet/train/0001.jpg", false);
    assert_eq!(
        (d.stat_ttl, d.data_ttl, d.list_ttl),
        (Ttl::Forever, Ttl::Forever, Ttl::Forever)
    );
    assert!(!d.revalidate_on_open && d.cacheable);
    let d = p.consistency("logs/app.log", false);
    assert_eq!((d.stat_ttl, d.data_ttl), (Ttl::None, Ttl::None));
    assert!(d.revalidate_on_open && !d.cacheable);
    let d = p.consistency("other/", true);
    assert_eq!(d.list_ttl, Ttl::For(std::time::Duration::from_millis(2500)));
    assert!(d.revalidate_on_open);
}

fn pair() -> Vec<ConflictEntry> {
    vec![
        ConflictEntry {
            name: "foo".into(),
            key: "d/foo".into(),
            is_dir: false,
            size: 3,
        },
        ConflictEntry {
            name: "foo".into(),
            key: "d/foo/".into(),
            is_dir: true,
            size: 0,
        },
    ]
}

#[test]
fn conflict_resolver_renames_files_and_escapes_names() {
    let p = policy(
        Hook::NameConflict,
        PluginConfig::new(component("conflict-resolver")),
    );
    assert_eq!(
        p.resolve_conflict("d/", ConflictKind::FileAndDirectory, &pair()),
        vec![Resolution::Rename("foo.file".into()), Resolution::Keep]
    );
    let invalid: Vec<ConflictEntry> = ["", ".", "..", &"x".repeat(300)]
        .iter()
        .map(|n| ConflictEntry {
            name: n.to_string(),
            key: format!("d/{n}"),
            is_dir: false,
            size: 1,
        })
        .collect();
    let r = p.resolve_conflict("d/", ConflictKind::InvalidName, &invalid);
    assert_eq!(r[0], Resolution::Rename("%empty".into()));
    assert_eq!(r[1], Resolution::Rename("%2E".into()));
    assert_eq!(r[2], Resolution::Rename("%2E%2E".into()));
    match &r[3] {
        Resolution::Rename(n) => assert!(n.len() <= 255 && n.starts_with("xxx"), "{n}"),
        other => panic!("{other:?}"),
    }
    let hide = policy(
        Hook::NameConflict,
        PluginConfig::new(component("conflict-resolver")).param("hide-files", "true"),
    );
    assert_eq!(
        hide.resolve_conflict("d/", ConflictKind::FileAndDirectory, &pair()),
        vec![Resolution::Hide, Resolution::Keep]
    );
}

#[test]
fn a_hook_without_plugin_uses_the_builtin() {
    let p = policy(Hook::Acl, PluginConfig::new(component("tenant-acl")));
    assert_eq!(p.filter(&obj("a/.x", 1, 0), 0), Verdict::Visible);
    assert_eq!(
        p.resolve_conflict("d/", ConflictKind::FileAndDirectory, &pair()),
        vec![Resolution::Rename("foo.~file".into()), Resolution::Keep]
    );
}

#[test]
fn compiled_components_are_cached_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = blobmount_policy::PluginsConfig {
        cache_dir: Some(dir.path().join("cache")),
        ..Default::default()
    };
    cfg.filter = Some(PluginConfig::new(component("glob-filter")).param("exclude", "*.tmp"));
    let t = std::time::Instant::now();
    let _ = blobmount_policy::WasmPolicy::load(&cfg, Default::default()).unwrap();
    let cold = t.elapsed();
    let files: Vec<_> = std::fs::read_dir(dir.path().join("cache"))
        .unwrap()
        .collect();
    assert_eq!(files.len(), 1, "one .cwasm artifact");
    let t = std::time::Instant::now();
    let p = blobmount_policy::WasmPolicy::load(&cfg, Default::default()).unwrap();
    let warm = t.elapsed();
    eprintln!("load cold {cold:?}, from cache {warm:?}");
    assert_eq!(p.filter(&obj("a.tmp", 1, 0), 0), Verdict::Hidden);
}
