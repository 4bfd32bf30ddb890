//! Per-object retry delays: a reconcile that keeps failing (an RBAC error, an
//! API server that refuses a write) is retried ever less often, so a broken
//! object costs a bounded trickle of requests, while a transient failure is
//! retried quickly.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// The first retry comes after this...
const FIRST: Duration = Duration::from_secs(1);
/// ...each following one after twice the previous, up to this.
const MAX: Duration = Duration::from_secs(300);

/// Consecutive failures by object.
#[derive(Debug, Default)]
pub struct Backoff {
    failures: Mutex<HashMap<String, u32>>,
}

impl Backoff {
    /// Counts a failure of `key` and returns how long to wait before the retry.
    pub fn failed(&self, key: &str) -> Duration {
        let mut failures = self
            .failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = failures.entry(key.to_owned()).or_insert(0);
        let delay = delay(*count);
        *count = count.saturating_add(1);
        delay
    }

    /// Forgets the failures of `key`: its next failure is retried quickly.
    pub fn succeeded(&self, key: &str) {
        self.failures
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(key);
    }
}

/// The delay after `previous` consecutive failures.
fn delay(previous: u32) -> Duration {
    FIRST
        .saturating_mul(2u32.saturating_pow(previous.min(16)))
        .min(MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_reset_on_success() {
        let backoff = Backoff::default();
        let delays: Vec<u64> = (0..12).map(|_| backoff.failed("a").as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
        assert_eq!(
            backoff.failed("b").as_secs(),
            1,
            "objects are counted apart"
        );
        backoff.succeeded("a");
        assert_eq!(backoff.failed("a").as_secs(), 1);
    }
}
