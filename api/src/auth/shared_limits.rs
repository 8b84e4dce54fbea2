//! Sign-in counters shared by every instance through Redis (with `--redis-url`), so that a
//! scaled deployment limits a guesser once, not once per instance.
//!
//! Keys are namespaced by a digest of the database URL: the instances of one deployment share
//! its database, and two deployments (or two test servers) sharing a Redis never count each
//! other's attempts.
//!
//! Fixed windows: a key per account holds its failed attempts (expiring one account window
//! after the first failure), a key per client address its attempts (expiring one address
//! window after the first). One round trip per check; each call has a short deadline, and
//! when Redis does not answer the instance's own limiter (always applied as well) is what
//! limits, with a warning — sign-in never waits for a cache.

use std::time::Duration;

use redis::aio::ConnectionManager;

use super::rate_limit::Limits;

/// How long a Redis call of the limiter may take.
const WAIT: Duration = Duration::from_millis(250);

/// The shared counters.
#[derive(Clone)]
pub struct SharedLimits {
    conn: ConnectionManager,
    namespace: String,
}

impl std::fmt::Debug for SharedLimits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SharedLimits(Redis)")
    }
}

fn millis(d: chrono::Duration) -> i64 {
    d.num_milliseconds().max(1)
}

/// Seconds to wait for a key expiring in `pttl` ms (at least one).
fn seconds(pttl: i64) -> u64 {
    (pttl.max(1) as u64).div_ceil(1000)
}

impl SharedLimits {
    /// Connects to Redis; `deployment` names what the instances share (the database URL).
    pub async fn connect(url: &str, deployment: &str) -> anyhow::Result<SharedLimits> {
        use sha2::Digest as _;
        let client = redis::Client::open(url)?;
        let conn = tokio::time::timeout(Duration::from_secs(10), ConnectionManager::new(client))
            .await
            .map_err(|_| anyhow::anyhow!("Redis did not answer within 10 s"))??;
        let digest = sha2::Sha256::digest(deployment.as_bytes());
        let namespace = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        Ok(SharedLimits { conn, namespace })
    }

    fn account_key(&self, account: &str) -> String {
        format!("sw:login:{}:account:{account}", self.namespace)
    }

    fn address_key(&self, address: &str) -> String {
        format!("sw:login:{}:address:{address}", self.namespace)
    }

    async fn run<T: redis::FromRedisValue>(&self, pipe: &redis::Pipeline) -> Option<T> {
        let mut conn = self.conn.clone();
        match tokio::time::timeout(WAIT, pipe.query_async::<T>(&mut conn)).await {
            Ok(Ok(v)) => Some(v),
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "sign-in limits: Redis failed; this instance's own limits apply");
                None
            }
            Err(_) => {
                tracing::warn!("sign-in limits: Redis did not answer in time; this instance's own limits apply");
                None
            }
        }
    }

    /// Counts an attempt from `address` for `account`; the seconds to wait when the
    /// account's failures or the address's attempts are used up across all instances.
    pub async fn check(&self, limits: &Limits, account: &str, address: &str) -> Result<(), u64> {
        let (account, address) = (self.account_key(account), self.address_key(address));
        let mut pipe = redis::pipe();
        pipe.get(&account)
            .pttl(&account)
            .incr(&address, 1)
            .cmd("PEXPIRE")
            .arg(&address)
            .arg(millis(limits.address_window))
            .arg("NX")
            .ignore()
            .pttl(&address);
        let Some((failures, account_ttl, attempts, address_ttl)) =
            self.run::<(Option<u64>, i64, u64, i64)>(&pipe).await
        else {
            return Ok(());
        };
        if failures.unwrap_or(0) >= limits.account_failures as u64 {
            return Err(seconds(account_ttl));
        }
        if attempts > limits.address_attempts as u64 {
            return Err(seconds(address_ttl));
        }
        Ok(())
    }

    /// Counts a failed attempt for `account`.
    pub async fn failed(&self, limits: &Limits, account: &str) {
        let key = self.account_key(account);
        let mut pipe = redis::pipe();
        pipe.incr(&key, 1).ignore().cmd("PEXPIRE").arg(&key).arg(millis(limits.account_window)).arg("NX").ignore();
        let _: Option<()> = self.run(&pipe).await;
    }

    /// Forgets `account`'s failures after a successful sign-in.
    pub async fn succeeded(&self, account: &str) {
        let mut pipe = redis::pipe();
        pipe.del(self.account_key(account)).ignore();
        let _: Option<()> = self.run(&pipe).await;
    }
}
