//! Login rate limiting, per account and per client address.
//!
//! Failed attempts per account are limited (guessing one password), and all attempts per
//! address are limited (spraying many accounts). The address is the client's as
//! [`super::client_addr`] finds it (behind `--trusted-proxies`, from the forwarding headers),
//! so clients behind one proxy are limited apart. Addresses go through `governor`'s keyed GCRA
//! limiter; both maps are bounded: past [`MAX_KEYS`] entries, idle ones are evicted. With
//! `--redis-url` the same limits are also counted across instances
//! ([`super::shared_limits`]); the in-process counters always apply, so a Redis outage
//! leaves every instance limiting on its own.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use chrono::{DateTime, Duration, Utc};

/// Limits and windows.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Failed attempts allowed per account within `account_window`.
    pub account_failures: usize,
    /// Window for account failures.
    pub account_window: Duration,
    /// Attempts allowed per client address within `address_window`.
    pub address_attempts: usize,
    /// Window for address attempts.
    pub address_window: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            account_failures: 5,
            account_window: Duration::minutes(15),
            address_attempts: 30,
            address_window: Duration::minutes(1),
        }
    }
}

/// Entries each map keeps before idle ones are evicted (a flood of made-up accounts or
/// addresses must not grow memory without bound).
pub const MAX_KEYS: usize = 100_000;

/// Sliding-window failure counters per account; a GCRA limiter per address; optionally the
/// counters shared through Redis.
pub struct LoginLimiter {
    limits: Limits,
    accounts: Mutex<HashMap<String, VecDeque<DateTime<Utc>>>>,
    addresses: governor::DefaultKeyedRateLimiter<String>,
    shared: Option<super::shared_limits::SharedLimits>,
}

impl std::fmt::Debug for LoginLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginLimiter").field("limits", &self.limits).finish_non_exhaustive()
    }
}

impl Default for LoginLimiter {
    fn default() -> Self {
        LoginLimiter::new(Limits::default())
    }
}

fn prune(q: &mut VecDeque<DateTime<Utc>>, now: DateTime<Utc>, window: Duration) {
    while q.front().is_some_and(|t| *t <= now - window) {
        q.pop_front();
    }
}

fn wait(q: &VecDeque<DateTime<Utc>>, max: usize, now: DateTime<Utc>, window: Duration) -> Option<u64> {
    (q.len() >= max).then(|| {
        let oldest = q.front().copied().unwrap_or(now);
        ((oldest + window - now).num_seconds().max(1)) as u64
    })
}

impl LoginLimiter {
    /// A limiter with the given limits.
    pub fn new(limits: Limits) -> Self {
        let burst = std::num::NonZeroU32::new(limits.address_attempts.clamp(1, u32::MAX as usize) as u32)
            .unwrap_or(std::num::NonZeroU32::MIN);
        let period = (limits.address_window.to_std().unwrap_or(std::time::Duration::from_secs(60)) / burst.get())
            .max(std::time::Duration::from_nanos(1));
        let quota = governor::Quota::with_period(period)
            .unwrap_or_else(|| governor::Quota::per_minute(burst))
            .allow_burst(burst);
        LoginLimiter {
            limits,
            accounts: Mutex::default(),
            addresses: governor::RateLimiter::keyed(quota),
            shared: None,
        }
    }

    /// The same limiter, also counting across instances through Redis.
    pub fn shared(mut self, shared: Option<super::shared_limits::SharedLimits>) -> Self {
        self.shared = shared;
        self
    }

    /// [`LoginLimiter::check`] here and, with Redis, across instances.
    pub async fn check_everywhere(&self, account: &str, address: &str, now: DateTime<Utc>) -> Result<(), u64> {
        self.check(account, address, now)?;
        match &self.shared {
            Some(shared) => shared.check(&self.limits, account, address).await,
            None => Ok(()),
        }
    }

    /// [`LoginLimiter::failed`] here and, with Redis, across instances.
    pub async fn failed_everywhere(&self, account: &str, now: DateTime<Utc>) {
        self.failed(account, now);
        if let Some(shared) = &self.shared {
            shared.failed(&self.limits, account).await;
        }
    }

    /// [`LoginLimiter::succeeded`] here and, with Redis, across instances.
    pub async fn succeeded_everywhere(&self, account: &str) {
        self.succeeded(account);
        if let Some(shared) = &self.shared {
            shared.succeeded(account).await;
        }
    }

    /// Records an attempt from `address` for `account`; returns the seconds to wait when
    /// either limit is exhausted (the attempt is then not evaluated at all).
    pub fn check(&self, account: &str, address: &str, now: DateTime<Utc>) -> Result<(), u64> {
        let l = self.limits;
        {
            let mut accounts = self.accounts.lock().unwrap_or_else(|e| e.into_inner());
            if accounts.len() > MAX_KEYS {
                accounts.retain(|_, q| q.back().is_some_and(|t| *t > now - l.account_window));
            }
            if let Some(q) = accounts.get_mut(account) {
                prune(q, now, l.account_window);
                if let Some(s) = wait(q, l.account_failures, now, l.account_window) {
                    return Err(s);
                }
            }
        }
        if self.addresses.len() > MAX_KEYS {
            self.addresses.retain_recent();
            self.addresses.shrink_to_fit();
        }
        self.addresses.check_key(&address.to_owned()).map_err(|not_until| {
            use governor::clock::Clock as _;
            let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
            wait.as_secs_f64().ceil().max(1.0) as u64
        })
    }

    /// Records a failed attempt for `account`.
    pub fn failed(&self, account: &str, now: DateTime<Utc>) {
        let mut accounts = self.accounts.lock().unwrap_or_else(|e| e.into_inner());
        let q = accounts.entry(account.to_owned()).or_default();
        prune(q, now, self.limits.account_window);
        q.push_back(now);
    }

    /// Forgets an account's failures after a successful sign-in.
    pub fn succeeded(&self, account: &str) {
        self.accounts.lock().unwrap_or_else(|e| e.into_inner()).remove(account);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_failures_lock_until_the_window_passes() {
        let limiter = LoginLimiter::new(Limits::default());
        let t0 = Utc::now();
        for i in 0..5 {
            assert_eq!(limiter.check("a@x.cn", &format!("10.0.0.{i}"), t0), Ok(()));
            limiter.failed("a@x.cn", t0);
        }
        let wait = limiter.check("a@x.cn", "10.0.1.1", t0).expect_err("locked");
        assert_eq!(wait, 15 * 60);
        assert_eq!(limiter.check("b@x.cn", "10.0.1.1", t0), Ok(()), "other accounts are unaffected");
        assert_eq!(limiter.check("a@x.cn", "10.0.1.1", t0 + Duration::minutes(16)), Ok(()));
    }

    #[test]
    fn addresses_are_limited_across_accounts() {
        let limiter = LoginLimiter::new(Limits { address_attempts: 3, ..Limits::default() });
        let t0 = Utc::now();
        for i in 0..3 {
            assert_eq!(limiter.check(&format!("u{i}"), "1.2.3.4", t0), Ok(()));
        }
        assert!(limiter.check("u9", "1.2.3.4", t0).is_err());
        assert_eq!(limiter.check("u9", "1.2.3.5", t0), Ok(()));
    }

    #[test]
    fn success_clears_failures() {
        let limiter = LoginLimiter::new(Limits::default());
        let t0 = Utc::now();
        for _ in 0..4 {
            limiter.failed("a", t0);
        }
        limiter.succeeded("a");
        for _ in 0..4 {
            limiter.failed("a", t0);
        }
        assert_eq!(limiter.check("a", "x", t0), Ok(()));
    }
}
