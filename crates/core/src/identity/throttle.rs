//! Sign-in throttling, per account and per source address, with exponential back-off,
//! and the hard cap after which an account is locked until an administrator unlocks it
//! (or its owner resets the password).
//!
//! The per-account state lives in the database (so every node agrees and a restart does
//! not reset it) and attempts are *reserved* atomically before a password is evaluated, so
//! concurrent guessing cannot overshoot the cap. The per-address state is in memory on
//! each node: it only sheds load early and answers 429, which reveals nothing about any
//! account.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use crate::clock::Timestamp;

/// Failed attempts an account may accumulate in [`ACCOUNT_WINDOW`] before it is locked.
pub const ACCOUNT_MAX_FAILURES: u32 = 100;
/// The window the cap counts over.
pub const ACCOUNT_WINDOW: Duration = Duration::from_secs(3600);
/// Consecutive failures on an account before back-off starts.
pub const ACCOUNT_FREE_FAILURES: u32 = 5;
/// Failures from one address (over any accounts) before back-off starts.
pub const ADDRESS_FREE_FAILURES: u32 = 20;
/// The longest back-off for one account. Short on purpose: a long per-account delay would
/// let anyone keep a patient out of their own account; the hard cap is what stops guessing
/// (with this cap a guesser reaches [`ACCOUNT_MAX_FAILURES`] within the hour, and the
/// account locks).
pub const ACCOUNT_MAX_BACKOFF: Duration = Duration::from_secs(30);
/// The longest back-off for one network address.
pub const ADDRESS_MAX_BACKOFF: Duration = Duration::from_secs(15 * 60);
/// How many addresses the in-memory table tracks before forgetting the stalest.
const ADDRESS_TABLE_CAP: usize = 100_000;

/// Exponential back-off: nothing for the first `free` failures, then 1 s, 2 s, 4 s ...
/// up to `cap`.
pub fn backoff(failures: u32, free: u32, cap: Duration) -> Duration {
    if failures < free {
        return Duration::ZERO;
    }
    let exp = (failures - free).min(20);
    Duration::from_secs(1u64 << exp).min(cap)
}

/// When an account with `failures` consecutive failures, the last at `last`, may try again.
pub fn account_retry_at(failures: u32, last: Timestamp) -> Timestamp {
    last.plus(backoff(failures, ACCOUNT_FREE_FAILURES, ACCOUNT_MAX_BACKOFF))
}

#[derive(Debug, Clone, Copy)]
struct AddressState {
    failures: u32,
    last_failure: Timestamp,
}

/// Per-address failure counts, in memory.
#[derive(Debug, Default)]
pub struct AddressThrottle {
    table: Mutex<HashMap<IpAddr, AddressState>>,
}

impl AddressThrottle {
    /// `Some(retry_at)` when `addr` must wait before trying again.
    pub fn blocked_until(&self, addr: Option<IpAddr>, now: Timestamp) -> Option<Timestamp> {
        let addr = addr?;
        let table = self.table.lock().ok()?;
        let s = table.get(&addr)?;
        let until =
            s.last_failure.plus(backoff(s.failures, ADDRESS_FREE_FAILURES, ADDRESS_MAX_BACKOFF));
        (until > now).then_some(until)
    }

    pub fn record_failure(&self, addr: Option<IpAddr>, now: Timestamp) {
        let Some(addr) = addr else { return };
        let Ok(mut table) = self.table.lock() else {
            return;
        };
        if table.len() >= ADDRESS_TABLE_CAP && !table.contains_key(&addr) {
            // Forget whatever has been quiet longest.
            if let Some(stalest) = table.iter().min_by_key(|(_, s)| s.last_failure).map(|(a, _)| *a)
            {
                table.remove(&stalest);
            }
        }
        let s = table.entry(addr).or_insert(AddressState { failures: 0, last_failure: now });
        // Failures older than the window no longer count.
        if now.since(s.last_failure) >= ACCOUNT_WINDOW {
            s.failures = 0;
        }
        s.failures = s.failures.saturating_add(1);
        s.last_failure = now;
    }

    pub fn record_success(&self, addr: Option<IpAddr>) {
        if let (Some(addr), Ok(mut table)) = (addr, self.table.lock()) {
            table.remove(&addr);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_after_the_free_attempts_and_is_capped() {
        let cap = ADDRESS_MAX_BACKOFF;
        assert_eq!(backoff(4, 5, cap), Duration::ZERO);
        assert_eq!(backoff(5, 5, cap), Duration::from_secs(1));
        assert_eq!(backoff(6, 5, cap), Duration::from_secs(2));
        assert_eq!(backoff(10, 5, cap), Duration::from_secs(32));
        assert_eq!(backoff(99, 5, cap), cap);
        assert_eq!(backoff(99, 5, ACCOUNT_MAX_BACKOFF), Duration::from_secs(30));
    }

    #[test]
    fn an_address_is_blocked_after_its_free_failures_and_released_by_time() {
        let t = AddressThrottle::default();
        let a: IpAddr = "203.0.113.9".parse().unwrap();
        let now = Timestamp::from_unix_millis(1_000_000);
        for _ in 0..ADDRESS_FREE_FAILURES - 1 {
            t.record_failure(Some(a), now);
        }
        assert_eq!(t.blocked_until(Some(a), now), None);
        t.record_failure(Some(a), now);
        assert_eq!(t.blocked_until(Some(a), now), Some(now.plus(Duration::from_secs(1))));
        assert_eq!(t.blocked_until(Some(a), now.plus(Duration::from_secs(1))), None);
        assert_eq!(t.blocked_until(Some("203.0.113.10".parse().unwrap()), now), None);
        t.record_success(Some(a));
        assert_eq!(t.blocked_until(Some(a), now), None);
    }
}
