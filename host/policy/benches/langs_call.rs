//! The same filter policy in Rust, JavaScript and Python: compile time (cold, and from the
//! on-disk cache), instantiate + init time, warm call cost (one call per object, and per
//! object in a batch of 1024), the smallest `memory-mib` the plugin runs under, and the
//! resident memory one loaded plugin adds. Figures go to docs/benchmarks.md.
//! Run: `bash plugins/build.sh && bash plugins/build-langs.sh &&
//! cargo bench -p blobmount-policy --bench langs_call`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use blobmount_policy::{Hook, PluginConfig, PluginsConfig, WasmPolicy};
use blobmount_policy_api::{Builtin, ObjectInfo};

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn config(wasm: &Path, params: &[(&str, &str)], cache: &Path, memory_mib: u64) -> PluginsConfig {
    let mut pc = PluginConfig::new(wasm);
    for (k, v) in params {
        pc = pc.param(k, v);
    }
    pc.cache_entries = 0; // measure the plugin call itself
    pc.prewarm = 1;
    pc.memory_mib = memory_mib;
    PluginsConfig {
        cache_dir: Some(cache.to_path_buf()),
        filter: Some(pc),
        ..Default::default()
    }
}

fn load(cfg: &PluginsConfig) -> (Result<WasmPolicy, String>, Duration) {
    let t = Instant::now();
    let p = WasmPolicy::load(cfg, Builtin::default()).map_err(|e| e.to_string());
    (p, t.elapsed())
}

/// Language, component file in plugins/dist, plugin parameters.
type Case = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
);

fn main() {
    let dir = std::env::var_os("BLOBMOUNT_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../plugins/dist"));
    let objs: Vec<ObjectInfo> = (0..1024)
        .map(|i| ObjectInfo {
            key: format!("bucket/dir{}/sub/object-{i:06}.parquet", i % 17),
            size: i as u64 * 1000,
            mtime_secs: 1_700_000_000,
            ..Default::default()
        })
        .collect();
    let plugins: [Case; 3] = [
        (
            "Rust",
            "glob-filter.wasm",
            &[("exclude", "*.tmp"), ("max-size", "1073741824")],
        ),
        (
            "JavaScript",
            "glob-filter-js.wasm",
            &[("exclude-suffix", ".tmp"), ("max-size", "1073741824")],
        ),
        (
            "Python",
            "glob-filter-py.wasm",
            &[("exclude-suffix", ".tmp"), ("max-size", "1073741824")],
        ),
    ];
    println!(
        "| plugin | component | compile (cold) | load from cache | instantiate + init | warm call | batch, per object | least memory-mib | RSS added |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    for (lang, file, params) in plugins {
        let wasm = dir.join(file);
        if !wasm.is_file() {
            println!("| {lang} | {} missing | | | | | | | |", wasm.display());
            continue;
        }
        let size = std::fs::metadata(&wasm).map(|m| m.len()).unwrap_or(0);
        let cache = tempfile::tempdir().expect("tmp");
        let (cold, cold_t) = load(&config(&wasm, params, cache.path(), 16));
        drop(cold.expect("load"));
        // What a plugin loaded from the cache keeps resident (the mapped artifact, its
        // instance's memory); the cold compile's own heap is not counted.
        let rss0 = rss_kib();
        let (p, warm_t) = load(&config(&wasm, params, cache.path(), 16));
        let p = p.expect("load from cache");
        p.try_filter(&objs[0], 1_700_000_100).ok();
        let rss1 = rss_kib();
        let inst = p.instantiate_time(Hook::Filter).unwrap_or_default();

        let mut failures = 0u64;
        let mut first_error = None;
        let mut one = |i: usize| {
            if let Err(e) = p.try_filter(&objs[i & 1023], 1_700_000_100) {
                failures += 1;
                first_error.get_or_insert(e.to_string());
            }
        };
        for i in 0..2000 {
            one(i);
        }
        let single = median(
            (0..100)
                .map(|_| {
                    let t = Instant::now();
                    for i in 0..1000 {
                        one(i);
                    }
                    t.elapsed().as_nanos() as f64 / 1000.0
                })
                .collect(),
        );
        let batch = median(
            (0..30)
                .map(|_| {
                    let t = Instant::now();
                    if let Err(e) = p.try_filter_batch(&objs, 1_700_000_100) {
                        failures += 1;
                        first_error.get_or_insert(e.to_string());
                    }
                    t.elapsed().as_nanos() as f64 / objs.len() as f64
                })
                .collect(),
        );
        // The smallest linear-memory cap the plugin loads and answers under.
        let least = [1u64, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64]
            .into_iter()
            .find(|&mib| {
                let (q, _) = load(&config(&wasm, params, cache.path(), mib));
                q.is_ok_and(|q| {
                    q.try_filter_batch(&objs, 1_700_000_100).is_ok()
                        && q.try_filter(&objs[1], 1_700_000_100).is_ok()
                })
            })
            .map_or("> 64".to_string(), |m| m.to_string());
        // Sustained load: failed calls in 100,000 single calls plus 30 batches of 1024, per
        // memory cap (a garbage-collected heap grows until it is collected).
        let sustained: Vec<String> = [16u64, 32, 64]
            .into_iter()
            .map(|mib| {
                let (q, _) = load(&config(&wasm, params, cache.path(), mib));
                let Ok(q) = q else {
                    return format!("{mib}: load failed");
                };
                let mut n = 0;
                for i in 0..100_000 {
                    n += u32::from(q.try_filter(&objs[i & 1023], 1_700_000_100).is_err());
                }
                for _ in 0..30 {
                    n += u32::from(q.try_filter_batch(&objs, 1_700_000_100).is_err());
                }
                format!("{mib} MiB: {n}")
            })
            .collect();
        println!(
            "{lang}: failed calls under sustained load: {}",
            sustained.join(", ")
        );
        println!(
            "| {lang} | {:.1} MB | {:.2} s | {:.1} ms | {:.2} ms | {:.2} us | {:.2} us | {least} | {} MiB |{}",
            size as f64 / 1e6,
            cold_t.as_secs_f64(),
            warm_t.as_secs_f64() * 1000.0,
            inst.as_secs_f64() * 1000.0,
            single / 1000.0,
            batch / 1000.0,
            rss1.saturating_sub(rss0) / 1024,
            match (p.stats(Hook::Filter), first_error) {
                (Some(st), Some(e)) =>
                    format!(" {failures} of {} calls failed, first: {e}", st.calls),
                _ => String::new(),
            }
        );
    }
}
