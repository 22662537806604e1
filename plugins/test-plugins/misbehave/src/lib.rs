//! Test-only filter plugin that misbehaves on purpose, to prove the host's limits. Never use
//! it in a mount. Parameter `mode`:
//! - `loop`      every call spins forever (the host's fuel/deadline must stop it)
//! - `alloc`     every call allocates without bound (the host's memory cap must stop it)
//! - `trap`      every call panics, which aborts (a wasm trap)
//! - `garbage`   `filter-batch` returns one verdict too many (a bad return)
//! - `read-file` tries to read the host file named by parameter `path`; shows the object
//!   only if that succeeded (so a visible verdict means the sandbox leaked)
//! - `init-fail` refuses its parameters
//! - `trap-once` traps on keys containing `boom`, behaves otherwise (re-instantiation test)

use blobmount_plugin_sdk::filter::{Filter, ObjectInfo, Verdict};
use blobmount_plugin_sdk::{log, Level, Params};

struct Misbehave {
    mode: String,
    path: String,
}

impl Filter for Misbehave {
    fn new(p: Params) -> Result<Self, String> {
        let mode = p.get("mode").unwrap_or("").to_string();
        if mode == "init-fail" {
            return Err("misbehave: refusing parameters as asked (mode=init-fail)".into());
        }
        Ok(Misbehave {
            mode,
            path: p.get("path").unwrap_or("/etc/hostname").to_string(),
        })
    }

    fn filter(&self, obj: &ObjectInfo, _now_secs: i64) -> Verdict {
        match self.mode.as_str() {
            "loop" => {
                let mut i: u64 = 0;
                loop {
                    i = std::hint::black_box(i.wrapping_add(1));
                }
            }
            "alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "trap" => panic!("misbehave: trap as asked"),
            "trap-once" if obj.key.contains("boom") => panic!("misbehave: boom"),
            "read-file" => match std::fs::read(&self.path) {
                Ok(bytes) if !bytes.is_empty() => Verdict::Visible,
                Ok(_) => Verdict::Hidden,
                Err(e) => {
                    log(Level::Info, &format!("read {}: {e}", self.path));
                    Verdict::Hidden
                }
            },
            _ => Verdict::Visible,
        }
    }

    fn filter_batch(&self, objs: &[ObjectInfo], now_secs: i64) -> Vec<Verdict> {
        let mut v: Vec<Verdict> = objs.iter().map(|o| self.filter(o, now_secs)).collect();
        if self.mode == "garbage" {
            v.push(Verdict::Hidden);
        }
        v
    }
}

blobmount_plugin_sdk::filter_plugin!(Misbehave);
