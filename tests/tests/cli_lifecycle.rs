//! The quick-start path through the real binary: `blobmount mount` without `--foreground`
//! returns once the mount is live, keeps the terminal clean (its log goes to the cache
//! directory), shows up in `mount list`, and `blobmount unmount` stops it cleanly.

use std::time::{Duration, Instant};

use blobmount_tests::{is_mounted, run_cli};

const LIMIT: Duration = Duration::from_secs(60);

#[test]
fn background_mount_of_a_local_store_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let (store, mp, cache) = (
        tmp.path().join("store"),
        tmp.path().join("mnt"),
        tmp.path().join("cache"),
    );
    std::fs::create_dir(&mp).unwrap();
    let url = format!("file://{}", store.display());
    let mp_s = mp.to_str().unwrap();
    let r = run_cli(
        &["mount", &url, mp_s, "--cache-dir", cache.to_str().unwrap()],
        &[],
        LIMIT,
    );
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(is_mounted(&mp), "mount returned before the mount was live");
    let log = cache.join("blobmount.log");
    assert_eq!(
        r.stderr.trim(),
        format!(
            "blobmount: mounted {url} on {mp_s} (log: {})",
            log.display()
        )
    );
    std::fs::write(mp.join("hello.txt"), b"hello").unwrap();
    assert_eq!(std::fs::read(store.join("hello.txt")).unwrap(), b"hello");
    let list = run_cli(&["mount", "list"], &[], LIMIT);
    assert!(list.stdout.contains(mp_s), "{list:?}");

    let r = run_cli(&["unmount", mp_s], &[], LIMIT);
    assert_eq!(r.code, Some(0), "{r:?}");
    assert!(!is_mounted(&mp));
    // The daemon notices and exits; its log says so and holds no warning about it.
    let t = Instant::now();
    let text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.contains("exited cleanly") || t.elapsed() > Duration::from_secs(20) {
            break text;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(text.contains("exited cleanly"), "{text}");
    assert!(!text.contains("WARN") && !text.contains("ERROR"), "{text}");
}
