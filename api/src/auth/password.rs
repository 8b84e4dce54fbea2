//! Password hashing with argon2id (the crate's defaults follow the OWASP recommendation).

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

use crate::error::{AppError, AppResult};

/// Hashes a password into a PHC string (`$argon2id$…`).
pub fn hash(password: &str) -> AppResult<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| AppError::Internal(format!("hashing a password: {e}")))
}

/// Whether `password` matches the stored PHC string. A malformed stored hash never matches.
pub fn verify(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored)
        .is_ok_and(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
}

/// Password hashing and checking in flight at once. argon2 takes tens of milliseconds of
/// CPU and 19 MiB each: on the async workers a flood of logins starved ingestion and every
/// other request, so it runs on blocking threads, at most half the cores at once (one on a
/// small machine); the rest wait here without holding a worker.
fn permits() -> std::sync::Arc<tokio::sync::Semaphore> {
    static PERMITS: std::sync::OnceLock<std::sync::Arc<tokio::sync::Semaphore>> = std::sync::OnceLock::new();
    PERMITS
        .get_or_init(|| {
            let cores = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
            std::sync::Arc::new(tokio::sync::Semaphore::new((cores / 2).max(1)))
        })
        .clone()
}

/// Runs `work` on a blocking thread once a permit is free; the permit is held until the
/// work ends, even if the caller gave up waiting (a timed-out request).
async fn off_thread<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> AppResult<T> {
    let permit = permits().acquire_owned().await.map_err(|e| AppError::Internal(format!("password permits: {e}")))?;
    tokio::task::spawn_blocking(move || {
        let out = work();
        drop(permit);
        out
    })
    .await
    .map_err(|e| AppError::Internal(format!("password hashing task: {e}")))
}

/// [`verify`] on a blocking thread, bounded (see [`permits`]).
pub async fn verify_off_thread(password: &str, stored: &str) -> AppResult<bool> {
    let (password, stored) = (password.to_owned(), stored.to_owned());
    off_thread(move || verify(&password, &stored)).await
}

/// [`hash`] on a blocking thread, bounded (see [`permits`]).
pub async fn hash_off_thread(password: &str) -> AppResult<String> {
    let password = password.to_owned();
    off_thread(move || hash(&password)).await?
}

/// A hash that matches nothing, verified against when the account does not exist so that
/// response time does not reveal which logins are registered.
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash("no-such-account-placeholder").unwrap_or_default())
}

#[cfg(test)]
mod tests {
    #[test]
    fn hashes_verify_and_are_salted() {
        let a = super::hash("sparkwatch-demo").expect("hash");
        let b = super::hash("sparkwatch-demo").expect("hash");
        assert!(a.starts_with("$argon2id$"));
        assert_ne!(a, b);
        assert!(super::verify("sparkwatch-demo", &a));
        assert!(!super::verify("sparkwatch-dem0", &a));
        assert!(!super::verify("x", "not a hash"));
    }
}
