//! A retry budget per upstream, so retries cannot amplify a brown-out: every
//! first attempt deposits a fifth of a retry, every retry withdraws a whole
//! one, and a retry without funds is not made. Retries thus add at most ~20%
//! load, plus a small reserve so a quiet upstream can still retry. Model:
//! Finagle's `RetryBudget` (Twitter) and Envoy's `retry_budget`.
//!
//! Only retries of attempts that reached a server pay: a connection that was
//! refused or timed out put no load on any server, so retrying it elsewhere
//! adds none (the service decides; see `proxy::service`).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// A retry costs 1,000; a request earns 200 (20%).
const COST: i64 = 1_000;
const DEPOSIT: i64 = 200;
/// At most 100 retries banked, so a long quiet spell cannot fund a storm.
const CAP: i64 = 100 * COST;
/// Retries available from the start.
const RESERVE: i64 = 10 * COST;

#[derive(Debug)]
pub struct RetryBudget {
    balance: AtomicI64,
    retries: AtomicU64,
    exhausted: AtomicU64,
}

impl Default for RetryBudget {
    fn default() -> Self {
        RetryBudget {
            balance: AtomicI64::new(RESERVE),
            retries: AtomicU64::new(0),
            exhausted: AtomicU64::new(0),
        }
    }
}

impl RetryBudget {
    /// A first attempt was made.
    #[inline]
    pub fn deposit(&self) {
        // A racing overshoot of the cap by a few deposits is harmless.
        if self.balance.load(Ordering::Relaxed) < CAP {
            self.balance.fetch_add(DEPOSIT, Ordering::Relaxed);
        }
    }

    /// True (and paid for) if a retry may be made now.
    pub fn try_withdraw(&self) -> bool {
        let paid = self
            .balance
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |balance| {
                (balance >= COST).then_some(balance - COST)
            })
            .is_ok();
        if paid {
            self.retries.fetch_add(1, Ordering::Relaxed);
        } else {
            self.exhausted.fetch_add(1, Ordering::Relaxed);
        }
        paid
    }

    /// Retries made since start.
    pub fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Retries refused for want of budget since start.
    pub fn exhausted(&self) -> u64 {
        self.exhausted.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_stay_within_a_fifth_of_requests_plus_the_reserve() {
        let budget = RetryBudget::default();
        let mut retries = 0;
        for _ in 0..1_000 {
            budget.deposit();
            if budget.try_withdraw() {
                retries += 1;
            }
        }
        assert_eq!(retries, 200 + 10);
        assert_eq!(budget.retries(), 210);
        assert_eq!(budget.exhausted(), 790);
    }
}
