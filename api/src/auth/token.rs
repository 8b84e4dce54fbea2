//! Access tokens (short-lived HS256 JWTs), step-up tokens (JWTs of another type, proof of a
//! recent password check), opaque refresh tokens and API keys.
//!
//! Refresh tokens and API keys are random strings shown to the client once; the store keeps
//! only their SHA-256, so a database leak does not leak working credentials.

use argon2::password_hash::rand_core::{OsRng, RngCore};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use sparkwatch_domain::ids::UserId;
use uuid::Uuid;

/// Lifetime of a step-up token (`reauthenticate`).
pub const STEP_UP_TTL: chrono::Duration = chrono::Duration::minutes(5);

/// The `typ` claim of access tokens; step-up tokens carry [`STEP_UP`] instead, so neither is
/// ever accepted as the other.
const ACCESS: &str = "access";
/// The `typ` claim of step-up tokens.
const STEP_UP: &str = "step_up";

/// Prefix that marks a bearer token as an API key rather than a JWT.
pub const API_KEY_PREFIX: &str = "swk_";

/// A URL-safe random string of `bytes` random bytes.
pub fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    OsRng.fill_bytes(&mut buf);
    URL_SAFE_NO_PAD.encode(buf)
}

/// Hex SHA-256 of a token, as stored.
pub fn digest(token: &str) -> String {
    Sha256::digest(token.as_bytes()).iter().map(|b| format!("{b:02x}")).collect()
}

/// The claims of an access token. The token only says *who*; permissions are loaded per
/// request so that deactivating a user or changing a role takes effect immediately.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    sub: String,
    iat: i64,
    exp: i64,
    typ: String,
    /// The sign-in (refresh-token family) the token belongs to; push tokens registered with
    /// it are removed when that sign-in ends.
    #[serde(default)]
    sid: Option<Uuid>,
}

/// What a valid access token says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verified {
    /// The user.
    pub user: UserId,
    /// The sign-in it belongs to.
    pub session: Option<Uuid>,
}

/// Why a token was refused.
enum Refused {
    Invalid,
    OtherType,
    Expired,
}

/// Signs and checks access tokens.
#[derive(Clone)]
pub struct AccessTokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    ttl: chrono::Duration,
}

impl AccessTokens {
    /// Keys from the configured secret.
    pub fn new(secret: &str, ttl: std::time::Duration) -> Self {
        AccessTokens {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            ttl: chrono::Duration::from_std(ttl).unwrap_or(chrono::Duration::minutes(15)),
        }
    }

    /// Issues a token for `user` at `now`; returns it with its expiry.
    pub fn issue(
        &self,
        user: UserId,
        session: Uuid,
        now: DateTime<Utc>,
    ) -> Result<(String, DateTime<Utc>), jsonwebtoken::errors::Error> {
        self.sign(ACCESS, user, session, now, self.ttl)
    }

    /// Issues a step-up token (valid [`STEP_UP_TTL`]) for `user` in the sign-in `session`.
    pub fn issue_step_up(
        &self,
        user: UserId,
        session: Uuid,
        now: DateTime<Utc>,
    ) -> Result<(String, DateTime<Utc>), jsonwebtoken::errors::Error> {
        self.sign(STEP_UP, user, session, now, STEP_UP_TTL)
    }

    fn sign(
        &self,
        typ: &str,
        user: UserId,
        session: Uuid,
        now: DateTime<Utc>,
        ttl: chrono::Duration,
    ) -> Result<(String, DateTime<Utc>), jsonwebtoken::errors::Error> {
        let exp = now + ttl;
        let claims = Claims {
            sub: user.to_string(),
            iat: now.timestamp(),
            exp: exp.timestamp(),
            typ: typ.into(),
            sid: Some(session),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding).map(|t| (t, exp))
    }

    /// Checks signature, type and expiry against `now`; returns the user or a reason to show.
    pub fn verify(&self, token: &str, now: DateTime<Utc>) -> Result<Verified, String> {
        self.check(token, ACCESS, now).map_err(|e| match e {
            Refused::Invalid => "the access token is not valid; sign in again".into(),
            Refused::OtherType => "not an access token".into(),
            Refused::Expired => "the access token has expired; use refreshToken or sign in again".into(),
        })
    }

    /// Checks a step-up token like [`Self::verify`] does an access token.
    pub fn verify_step_up(&self, token: &str, now: DateTime<Utc>) -> Result<Verified, String> {
        self.check(token, STEP_UP, now).map_err(|e| match e {
            Refused::Invalid | Refused::OtherType => "not a step-up token; get one with reauthenticate".into(),
            Refused::Expired => "the step-up token has expired; reauthenticate again".into(),
        })
    }

    fn check(&self, token: &str, typ: &str, now: DateTime<Utc>) -> Result<Verified, Refused> {
        let mut validation = Validation::new(Algorithm::HS256);
        // Expiry is checked below against the injected clock, not the system clock.
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation).map_err(|_| Refused::Invalid)?;
        if data.claims.typ != typ {
            return Err(Refused::OtherType);
        }
        if data.claims.exp <= now.timestamp() {
            return Err(Refused::Expired);
        }
        let user = data.claims.sub.parse().map_err(|_| Refused::Invalid)?;
        Ok(Verified { user, session: data.claims.sid })
    }

    /// When a token (signature checked) expires; `None` for anything else.
    pub fn expiry(&self, token: &str) -> Option<DateTime<Utc>> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_exp = false;
        validation.required_spec_claims.clear();
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation).ok()?;
        DateTime::from_timestamp(data.claims.exp, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn tokens_verify_until_they_expire() {
        let keys = AccessTokens::new(&"k".repeat(32), Duration::from_secs(60));
        let user = UserId::from_uuid(uuid::Uuid::now_v7());
        let t0 = Utc::now();
        let session = uuid::Uuid::now_v7();
        let (token, exp) = keys.issue(user, session, t0).expect("issue");
        assert_eq!(exp, t0 + chrono::Duration::seconds(60));
        assert_eq!(keys.verify(&token, t0), Ok(Verified { user, session: Some(session) }));
        assert_eq!(keys.expiry(&token).map(|e| e.timestamp()), Some(exp.timestamp()));
        assert!(keys.verify(&token, t0 + chrono::Duration::seconds(61)).unwrap_err().contains("expired"));
        let other = AccessTokens::new(&"x".repeat(32), Duration::from_secs(60));
        assert!(other.verify(&token, t0).is_err());
        assert!(keys.verify("garbage", t0).is_err());
    }

    #[test]
    fn step_up_and_access_tokens_are_never_taken_for_each_other() {
        let keys = AccessTokens::new(&"k".repeat(32), Duration::from_secs(900));
        let user = UserId::from_uuid(uuid::Uuid::now_v7());
        let (t0, session) = (Utc::now(), uuid::Uuid::now_v7());
        let (access, _) = keys.issue(user, session, t0).expect("issue");
        let (step_up, exp) = keys.issue_step_up(user, session, t0).expect("issue");
        assert_eq!(exp, t0 + STEP_UP_TTL);
        assert_eq!(keys.verify_step_up(&step_up, t0), Ok(Verified { user, session: Some(session) }));
        assert!(keys.verify(&step_up, t0).is_err());
        assert!(keys.verify_step_up(&access, t0).is_err());
        assert!(keys.verify_step_up(&step_up, t0 + STEP_UP_TTL).unwrap_err().contains("expired"));
    }

    #[test]
    fn digests_are_stable_hex() {
        assert_eq!(digest("abc").len(), 64);
        assert_eq!(digest("abc"), digest("abc"));
        assert_ne!(random_token(32), random_token(32));
    }
}
