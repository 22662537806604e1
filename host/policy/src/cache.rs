//! A small bounded cache of pure plugin answers with a time-to-live.
//!
//! Why so simple: answers are cheap to recompute (a plugin call is well under a microsecond
//! warm in release builds), so the cache only has to make repeated lookups of the same object
//! free. When it is full it is cleared wholesale rather than evicting one by one, which keeps
//! the hit path a single hash probe under one mutex.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub(crate) struct AnswerCache<K, V> {
    map: Mutex<HashMap<K, (V, Instant)>>,
    cap: usize,
    ttl: Duration,
}

impl<K: Hash + Eq, V: Clone> AnswerCache<K, V> {
    pub(crate) fn new(cap: usize, ttl: Duration) -> Self {
        AnswerCache {
            map: Mutex::new(HashMap::new()),
            cap,
            ttl,
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.cap > 0 && !self.ttl.is_zero()
    }

    pub(crate) fn get<Q>(&self, k: &Q) -> Option<V>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        if !self.enabled() {
            return None;
        }
        let map = self.map.lock().ok()?;
        match map.get(k) {
            Some((v, at)) if at.elapsed() < self.ttl => Some(v.clone()),
            _ => None,
        }
    }

    pub(crate) fn put(&self, k: K, v: V) {
        if !self.enabled() {
            return;
        }
        if let Ok(mut map) = self.map.lock() {
            if map.len() >= self.cap {
                map.clear();
            }
            map.insert(k, (v, Instant::now()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_and_expiring() {
        let c = AnswerCache::new(2, Duration::from_millis(50));
        c.put(1, "a");
        c.put(2, "b");
        assert_eq!(c.get(&1), Some("a"));
        c.put(3, "c");
        assert_eq!(c.get(&1), None);
        assert_eq!(c.get(&3), Some("c"));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(c.get(&3), None);
        let off: AnswerCache<i32, i32> = AnswerCache::new(0, Duration::from_secs(1));
        off.put(1, 1);
        assert_eq!(off.get(&1), None);
    }
}
