//! Micro-benchmark of a warm filter call (target: median <= 2 us), with the glob-filter
//! example plugin, against the built-in filter doing the same work.
//! Run: `bash plugins/build.sh && cargo bench -p blobmount-policy --bench filter_call`.

use std::path::PathBuf;
use std::time::Instant;

use blobmount_policy::{Hook, PluginConfig, PluginsConfig, WasmPolicy};
use blobmount_policy_api::{Builtin, BuiltinConfig, FilterConfig, ObjectInfo, Policy};

fn median_ns(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(|a, b| a.total_cmp(b));
    samples[samples.len() / 2]
}

/// Median over 200 rounds of the per-call time of `per_round` calls.
fn measure(per_round: usize, mut f: impl FnMut(usize)) -> f64 {
    for i in 0..per_round {
        f(i);
    }
    let samples = (0..200)
        .map(|_| {
            let t = Instant::now();
            for i in 0..per_round {
                f(i);
            }
            t.elapsed().as_nanos() as f64 / per_round as f64
        })
        .collect();
    median_ns(samples)
}

fn main() {
    let dir = std::env::var_os("BLOBMOUNT_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../plugins/dist"));
    let wasm = dir.join("glob-filter.wasm");
    assert!(
        wasm.is_file(),
        "{} missing: run `bash plugins/build.sh` first",
        wasm.display()
    );
    let mut pc = PluginConfig::new(&wasm)
        .param("exclude", "*.tmp")
        .param("exclude", ".*")
        .param("max-size", "1073741824");
    pc.cache_entries = 0; // measure the plugin call itself
    let cfg = PluginsConfig {
        filter: Some(pc),
        ..Default::default()
    };
    let t = Instant::now();
    let p = WasmPolicy::load(&cfg, Builtin::default()).expect("load");
    println!("load (compile + 2 instances + init): {:?}", t.elapsed());
    println!(
        "first instantiate + init: {:?}",
        p.instantiate_time(Hook::Filter).unwrap_or_default()
    );

    let objs: Vec<ObjectInfo> = (0..1024)
        .map(|i| ObjectInfo {
            key: format!("bucket/dir{}/sub/object-{i:06}.parquet", i % 17),
            size: i as u64 * 1000,
            mtime_secs: 1_700_000_000,
            ..Default::default()
        })
        .collect();
    let single = measure(1000, |i| {
        std::hint::black_box(p.try_filter(&objs[i & 1023], 1_700_000_100).ok());
    });
    println!("wasm filter, one call per object: median {single:.0} ns/call");
    let batch = measure(1, |_| {
        std::hint::black_box(p.try_filter_batch(&objs, 1_700_000_100).ok());
    }) / objs.len() as f64;
    println!("wasm filter-batch of 1024: median {batch:.0} ns/object");

    let builtin = Builtin::new(BuiltinConfig {
        filter: FilterConfig {
            exclude: vec!["*.tmp".into(), ".*".into()],
            max_size: Some(1 << 30),
            ..Default::default()
        },
        ..Default::default()
    })
    .expect("builtin");
    let native = measure(1000, |i| {
        std::hint::black_box(builtin.filter(&objs[i & 1023], 1_700_000_100));
    });
    println!("built-in filter: median {native:.0} ns/call");

    let mut cached = PluginConfig::new(&wasm).param("exclude", "*.tmp");
    cached.prewarm = 1;
    let p = WasmPolicy::load(
        &PluginsConfig {
            filter: Some(cached),
            ..Default::default()
        },
        Builtin::default(),
    )
    .expect("load");
    let hit = measure(1000, |i| {
        std::hint::black_box(p.filter(&objs[i & 1023], 1_700_000_100));
    });
    println!("wasm filter through the verdict cache (hits): median {hit:.0} ns/call");
    if single > 2000.0 {
        println!("WARNING: median warm call {single:.0} ns is above the 2 us target");
    }
}
