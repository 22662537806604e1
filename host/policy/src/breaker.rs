//! The circuit breaker of one plugin: after a run of consecutive failed calls the hook is
//! answered by its failure mode without calling the plugin, for a back-off period; then one
//! trial call decides whether the plugin is called again.
//!
//! Why: a plugin that fails every call (a loop that burns its whole deadline, a trap on
//! every input) costs its deadline on every file-system operation that asks it. With
//! several questions per `create`, 210 small files took over 14 minutes. The failure mode
//! answers the same either way, so once the plugin has shown it fails, asking it again only
//! costs time. One log line when the breaker opens and one when it closes.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::config::Hook;

/// Whether a call may go to the plugin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Closed: call the plugin.
    Call,
    /// The back-off is over: this call is the one trial.
    Trial,
    /// Open: answer with the failure mode without calling.
    Refuse,
}

#[derive(Debug, Default)]
struct BreakerState {
    /// Failed calls since the last success.
    failures: u32,
    /// Set while open: when the back-off ends.
    open_until: Option<Instant>,
    /// The trial call after the back-off is running.
    trial: bool,
}

/// One plugin's breaker. Its state lives under one std mutex, held only for bookkeeping
/// (never across a plugin call).
#[derive(Debug)]
pub(crate) struct Breaker {
    hook: Hook,
    /// Consecutive failures that open it (0: never).
    threshold: u32,
    backoff: Duration,
    state: Mutex<BreakerState>,
    /// Times it opened (for `/metrics`).
    pub(crate) trips: AtomicU64,
    /// Calls answered without the plugin while open (for `/metrics`).
    pub(crate) skipped: AtomicU64,
}

impl Breaker {
    pub(crate) fn new(hook: Hook, threshold: u32, backoff: Duration) -> Breaker {
        Breaker {
            hook,
            threshold,
            backoff,
            state: Mutex::new(BreakerState::default()),
            trips: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, BreakerState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// May a call go to the plugin now?
    pub(crate) fn admit(&self) -> Admit {
        let mut s = self.state();
        let admit = match s.open_until {
            None => Admit::Call,
            Some(t) if Instant::now() < t || s.trial => Admit::Refuse,
            Some(_) => {
                s.trial = true;
                Admit::Trial
            }
        };
        if admit == Admit::Refuse {
            self.skipped.fetch_add(1, Ordering::Relaxed);
        }
        admit
    }

    /// Is it open now (the plugin is kept out)?
    pub(crate) fn is_open(&self) -> bool {
        self.state().open_until.is_some()
    }

    /// A call that reached the plugin produced a usable answer.
    pub(crate) fn success(&self) {
        let mut s = self.state();
        s.failures = 0;
        if s.open_until.take().is_some() {
            s.trial = false;
            tracing::info!(
                hook = self.hook.name(),
                "policy plugin answered again: circuit breaker closed, calls resume"
            );
        }
    }

    /// A call that reached the plugin (or waited for one of its instances) failed.
    pub(crate) fn failure(&self) {
        let mut s = self.state();
        s.failures = s.failures.saturating_add(1);
        if s.trial {
            // The trial failed: keep it open for another back-off.
            s.trial = false;
            s.open_until = Some(Instant::now() + self.backoff);
            tracing::debug!(
                hook = self.hook.name(),
                "trial call failed: breaker stays open"
            );
        } else if s.open_until.is_none() && self.threshold > 0 && s.failures >= self.threshold {
            s.open_until = Some(Instant::now() + self.backoff);
            self.trips.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(
                hook = self.hook.name(),
                failures = s.failures,
                backoff_secs = self.backoff.as_secs_f64(),
                "policy plugin failed {} calls in a row: circuit breaker open, the failure \
                 mode answers without calling it until a trial call succeeds",
                s.failures
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_then_one_trial_closes_it() {
        let b = Breaker::new(Hook::Filter, 3, Duration::from_millis(50));
        for _ in 0..2 {
            assert_eq!(b.admit(), Admit::Call);
            b.failure();
        }
        assert!(!b.is_open());
        assert_eq!(b.admit(), Admit::Call);
        b.failure();
        assert!(b.is_open());
        assert_eq!(b.trips.load(Ordering::Relaxed), 1);
        assert_eq!(b.admit(), Admit::Refuse);
        assert_eq!(b.skipped.load(Ordering::Relaxed), 1);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(b.admit(), Admit::Trial);
        // Only one trial at a time.
        assert_eq!(b.admit(), Admit::Refuse);
        b.failure();
        assert!(b.is_open());
        assert_eq!(b.admit(), Admit::Refuse);
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(b.admit(), Admit::Trial);
        b.success();
        assert!(!b.is_open());
        assert_eq!(b.admit(), Admit::Call);
        // A failed trial does not count as another trip.
        assert_eq!(b.trips.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_success_resets_the_run_and_zero_never_opens() {
        let b = Breaker::new(Hook::Acl, 2, Duration::from_secs(30));
        b.failure();
        b.success();
        b.failure();
        assert!(!b.is_open());
        let never = Breaker::new(Hook::Acl, 0, Duration::from_secs(30));
        for _ in 0..100 {
            never.failure();
        }
        assert!(!never.is_open());
        assert_eq!(never.admit(), Admit::Call);
    }
}
