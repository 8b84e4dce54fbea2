//! Sign-in, token rotation, sign-out, turning a bearer credential into a [`Principal`], and
//! re-authentication (the password again, or a step-up token from `reauthenticate`) for the
//! operations that need it.

use chrono::{DateTime, Utc};
use sparkwatch_domain::access::{Access, BuiltinRole, ProjectScope};
use sparkwatch_domain::ids::UserId;
use sparkwatch_domain::validate;
use uuid::Uuid;

use super::Services;
use crate::auth::token::{API_KEY_PREFIX, digest, random_token};
use crate::auth::{Actor, Auth, Principal, password};
use crate::error::{AppError, AppResult};
use crate::store::access::{self as st, RoleRef, User};
use crate::store::oplog::Entry;
use crate::store::{new_id, tenants};

/// Tokens handed to a client after sign-in or refresh.
#[derive(Clone, Debug)]
pub struct Session {
    /// Short-lived bearer token.
    pub access_token: String,
    /// Single-use token to get the next pair.
    pub refresh_token: String,
    /// When the access token expires.
    pub expires_at: DateTime<Utc>,
    /// Who signed in.
    pub user: User,
}

/// A short-lived proof that the caller just typed their password (or unlocked the phone's
/// biometric prompt guarding it): accepted instead of the password by the operations that
/// need re-authentication, for the same user and sign-in only.
#[derive(Clone, Debug)]
pub struct StepUp {
    /// The token (`SendCommandInput.stepUpToken`).
    pub token: String,
    /// When it stops being accepted.
    pub expires_at: DateTime<Utc>,
}

const BAD_LOGIN: &str = "invalid login or password";

/// Normalises what a person types to sign in: an e-mail (lower-cased) or a phone number.
pub fn normalise_login(login: &str) -> AppResult<String> {
    if login.contains('@') {
        Ok(validate::email("login", login)?)
    } else {
        validate::phone("login", login)
            .map_err(|_| AppError::invalid("login", "must be an e-mail address or a phone number"))
    }
}

impl Services {
    /// Signs in with e-mail or phone and password, rate-limited per account and address.
    pub async fn login(&self, login: &str, password_text: &str, client_addr: &str) -> AppResult<Session> {
        let now = self.now();
        let login = normalise_login(login)?;
        let limiter = &self.inner.limiter;
        limiter
            .check_everywhere(&login, client_addr, now)
            .await
            .map_err(|retry_after_s| AppError::RateLimited { retry_after_s })?;
        let db = self.inner.store.db();
        let user = st::user_by_login(db, &login).await?;
        // Verify against a dummy hash for unknown accounts so timing does not reveal them.
        let hash = user.as_ref().map_or(password::dummy_hash(), |u| u.password_hash.as_str());
        let password_ok = password::verify_off_thread(password_text, hash).await?;
        let user = match user {
            Some(u) if password_ok => u,
            _ => {
                limiter.failed_everywhere(&login, now).await;
                tracing::info!(%login, addr = client_addr, "failed sign-in");
                return Err(AppError::Unauthenticated(BAD_LOGIN.into()));
            }
        };
        self.check_active(&user).await?;
        limiter.succeeded_everywhere(&login).await;
        let mut user = user;
        user.last_login_at = Some(now);
        st::update_user(db, &user).await?;
        self.issue(user, new_id(), now).await
    }

    async fn check_active(&self, user: &User) -> AppResult<()> {
        if !user.active {
            return Err(AppError::Unauthenticated("this account is deactivated; ask your administrator".into()));
        }
        if let Some(t) = user.tenant_id {
            let active = tenants::get(self.inner.store.db(), t).await?.is_some_and(|t| t.active);
            if !active {
                return Err(AppError::Unauthenticated("this organisation's account is suspended".into()));
            }
        }
        Ok(())
    }

    async fn issue(&self, user: User, family: Uuid, now: DateTime<Utc>) -> AppResult<Session> {
        let (access_token, expires_at) = self
            .inner
            .tokens
            .issue(user.id, family, now)
            .map_err(|e| AppError::Internal(format!("signing a token: {e}")))?;
        let refresh_token = random_token(32);
        st::insert_refresh(
            self.inner.store.db(),
            user.id,
            family,
            &digest(&refresh_token),
            now + self.inner.refresh_ttl,
            now,
        )
        .await?;
        Ok(Session { access_token, refresh_token, expires_at, user })
    }

    /// Exchanges a refresh token for a new pair. Each token works once; presenting a token
    /// that was already exchanged means it was copied, so its whole family is revoked.
    pub async fn refresh(&self, token: &str) -> AppResult<Session> {
        let now = self.now();
        let db = self.inner.store.db();
        let invalid = || AppError::Unauthenticated("the refresh token is not valid; sign in again".into());
        let stored = st::refresh_by_digest(db, &digest(token)).await?.ok_or_else(invalid)?;
        if stored.revoked_at.is_some() || stored.expires_at <= now {
            return Err(invalid());
        }
        if stored.replaced_at.is_some() || !st::mark_replaced(db, stored.id, now).await? {
            tracing::warn!(user = %stored.user_id, "refresh token reused; revoking the session family");
            st::revoke_family(db, stored.family_id, now).await?;
            return Err(invalid());
        }
        let user = st::user_by_id(db, stored.user_id).await?.ok_or_else(invalid)?;
        self.check_active(&user).await?;
        self.issue(user, stored.family_id, now).await
    }

    /// Ends the session the refresh token belongs to. Unknown tokens are not an error, so
    /// that logging out twice is harmless.
    pub async fn logout(&self, token: &str) -> AppResult<bool> {
        let db = self.inner.store.db();
        match st::refresh_by_digest(db, &digest(token)).await? {
            Some(stored) => {
                st::revoke_family(db, stored.family_id, self.now()).await?;
                // The phone signed out: it must not receive this account's alarms any more.
                crate::store::notify::delete_session_tokens(db, stored.family_id).await?;
                // Open subscriptions of that sign-in re-check now and end (WebSockets 4403).
                if let Some(tenant) = st::user_by_id(db, stored.user_id).await?.and_then(|u| u.tenant_id) {
                    self.access_changed(tenant);
                }
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// `reauthenticate`: checks the signed-in caller's password again and issues a step-up
    /// token bound to the caller and its sign-in. API keys cannot (`FORBIDDEN`); a wrong
    /// password is `FORBIDDEN` on `password`, failures limited like sign-ins.
    pub async fn step_up(&self, who: &Principal, password_text: &str) -> AppResult<StepUp> {
        let (Actor::User(user), Some(session)) = (&who.actor, who.session) else {
            return Err(AppError::Forbidden("only a person signed in with a password can re-authenticate".into()));
        };
        self.check_password(*user, password_text).await?;
        let now = self.now();
        let (token, expires_at) = self
            .inner
            .tokens
            .issue_step_up(*user, session, now)
            .map_err(|e| AppError::Internal(format!("signing a token: {e}")))?;
        let tx = self.begin().await?;
        let after = serde_json::json!({"session": session, "expiresAt": expires_at});
        let entry =
            Entry::new(who.access.tenant, "auth.reauthenticate", "user", Some(user.to_string())).after(Some(after));
        self.log(&tx, who, entry).await?;
        tx.commit().await?;
        tracing::info!(%user, "re-authenticated; step-up token issued");
        Ok(StepUp { token, expires_at })
    }

    /// Asks the person `user` (the caller `who`) for a fresh proof of identity before `what`:
    /// a step-up token, when given, decides (`FORBIDDEN` on `stepUpToken` if it is not
    /// valid); otherwise the password (`FORBIDDEN` on `password` when missing or wrong). One
    /// rule for control commands and for issuing API keys that may send them.
    pub(crate) async fn check_reauthentication(
        &self,
        who: &Principal,
        user: UserId,
        what: &str,
        password: Option<&str>,
        step_up: Option<&str>,
    ) -> AppResult<()> {
        if let Some(token) = step_up {
            return self.check_step_up(who, token);
        }
        let Some(given) = password.filter(|p| !p.is_empty()) else {
            return Err(AppError::Reauthenticate(format!("{what} needs your password (or a stepUpToken)")));
        };
        self.check_password(user, given).await
    }

    /// Checks `user`'s password again. Failures are limited like sign-ins, under a per-user
    /// key of their own, so the check cannot be used to guess passwords.
    pub(crate) async fn check_password(&self, user: UserId, given: &str) -> AppResult<()> {
        let now = self.now();
        let account = format!("user:{user}");
        let limiter = &self.inner.limiter;
        limiter
            .check_everywhere(&account, &account, now)
            .await
            .map_err(|retry_after_s| AppError::RateLimited { retry_after_s })?;
        let stored = st::user_by_id(self.inner.store.db(), user).await?.ok_or(AppError::NotFound("user"))?;
        if password::verify_off_thread(given, &stored.password_hash).await? {
            limiter.succeeded_everywhere(&account).await;
            Ok(())
        } else {
            limiter.failed_everywhere(&account, now).await;
            tracing::info!(%user, "failed re-authentication");
            Err(AppError::Reauthenticate("the password is not correct".into()))
        }
    }

    /// Checks a step-up token presented by `who`: issued to the same user in the same
    /// sign-in, and not expired (`FORBIDDEN` on `stepUpToken` otherwise).
    pub(crate) fn check_step_up(&self, who: &Principal, token: &str) -> AppResult<()> {
        let verified = self.inner.tokens.verify_step_up(token, self.now()).map_err(AppError::StepUp)?;
        if who.user_id() == Some(verified.user) && verified.session.is_some() && verified.session == who.session {
            Ok(())
        } else {
            Err(AppError::StepUp("this step-up token was issued to another sign-in; reauthenticate".into()))
        }
    }

    /// Resolves an `Authorization` header value (`Bearer …`) into the request's [`Auth`].
    pub async fn authenticate(&self, header: Option<&str>) -> Auth {
        let Some(header) = header.map(str::trim).filter(|h| !h.is_empty()) else { return Auth::Anonymous };
        let Some(token) = header.strip_prefix("Bearer ").or_else(|| header.strip_prefix("bearer ")).map(str::trim)
        else {
            return Auth::Invalid("the Authorization header must be `Bearer <token>`".into());
        };
        let result = if token.starts_with(API_KEY_PREFIX) {
            self.principal_for_key(token).await
        } else {
            self.principal_for_jwt(token).await
        };
        match result {
            Ok(p) => Auth::Authenticated(Box::new(p)),
            Err(AppError::Unauthenticated(reason)) => Auth::Invalid(reason),
            Err(other) => {
                tracing::warn!(error = %other, "could not check credentials");
                Auth::Invalid("credentials could not be checked right now; try again".into())
            }
        }
    }

    /// When the credentials of an `Authorization` value stop being valid by themselves
    /// (access tokens expire; API keys are revoked instead, which the bus announces).
    pub fn credentials_expire_at(&self, header: Option<&str>) -> Option<DateTime<Utc>> {
        let token = header?.trim();
        let token = token.strip_prefix("Bearer ").or_else(|| token.strip_prefix("bearer "))?.trim();
        self.inner.tokens.expiry(token)
    }

    async fn principal_for_jwt(&self, token: &str) -> AppResult<Principal> {
        let verified = self.inner.tokens.verify(token, self.now()).map_err(AppError::Unauthenticated)?;
        let user = st::user_by_id(self.inner.store.db(), verified.user)
            .await?
            .ok_or_else(|| AppError::Unauthenticated("this account no longer exists".into()))?;
        self.check_active(&user).await?;
        // The sign-in must still be open: logout and password changes end it at once.
        if let Some(session) = verified.session
            && !st::sign_in_open(self.inner.store.db(), user.id, session).await?
        {
            return Err(AppError::Unauthenticated("this sign-in has ended; sign in again".into()));
        }
        let label = user.email.clone().or(user.phone.clone()).unwrap_or_else(|| user.display_name.clone());
        let access = self.access_for(user.tenant_id, user.role, Some(user.id), None).await?;
        Ok(Principal {
            actor: Actor::User(user.id),
            label,
            access,
            session: verified.session,
            withheld: Default::default(),
        })
    }

    async fn principal_for_key(&self, token: &str) -> AppResult<Principal> {
        let now = self.now();
        let invalid = || AppError::Unauthenticated("the API key is not valid".into());
        let key = st::key_by_digest(self.inner.store.db(), &digest(token)).await?.ok_or_else(invalid)?;
        if key.revoked_at.is_some() {
            return Err(AppError::Unauthenticated("the API key was revoked".into()));
        }
        if key.expires_at.is_some_and(|e| e <= now) {
            return Err(AppError::Unauthenticated("the API key has expired".into()));
        }
        let access = self.access_for(Some(key.tenant_id), key.role, None, key.project_ids.clone()).await?;
        let (access, withheld) = match key.created_by {
            Some(issuer) => access.capped_by(&self.issuer_access(issuer).await?),
            // Issued by the system (CLI, seeding): nobody's rights to follow.
            None => (access, Default::default()),
        };
        let label = format!("api key {} ({})", key.name, key.prefix);
        Ok(Principal { actor: Actor::ApiKey(key.id), label, access, session: None, withheld })
    }

    /// What the person who issued an API key holds now (read per request, like the key):
    /// the key is capped by it. A deactivated issuer (or suspended organisation, or a missing
    /// account) stops the key altogether; reactivating the issuer restores it.
    async fn issuer_access(&self, issuer: UserId) -> AppResult<Access> {
        let user = st::user_by_id(self.inner.store.db(), issuer).await?.ok_or_else(|| {
            AppError::Unauthenticated("the person who issued this API key no longer has an account".into())
        })?;
        if !user.active {
            return Err(AppError::Unauthenticated(
                "the person who issued this API key is deactivated, so the key does not work until they are \
                 reactivated; ask your administrator for a key of your own"
                    .into(),
            ));
        }
        self.check_active(&user).await?;
        self.access_for(user.tenant_id, user.role, Some(user.id), None).await
    }

    /// Permissions and scope of a role holder.
    async fn access_for(
        &self,
        tenant: Option<sparkwatch_domain::ids::TenantId>,
        role: RoleRef,
        user: Option<sparkwatch_domain::ids::UserId>,
        key_projects: Option<Vec<sparkwatch_domain::ids::ProjectId>>,
    ) -> AppResult<Access> {
        let db = self.inner.store.db();
        let permissions = match (role, tenant) {
            (RoleRef::Builtin(b), _) => b.permissions(),
            (RoleRef::Custom(id), Some(t)) => st::role(db, t, id).await?.map(|r| r.permissions).unwrap_or_default(),
            (RoleRef::Custom(_), None) => Default::default(),
        };
        let scope = match (user, key_projects) {
            // A key limited to projects stays limited even when its role sees every project.
            (_, Some(projects)) => ProjectScope::Only(projects.into_iter().collect()),
            (Some(u), None) => ProjectScope::new(&permissions, st::user_projects(db, u).await?),
            (None, None) => ProjectScope::new(&permissions, []),
        };
        let tenant = if role == RoleRef::Builtin(BuiltinRole::PlatformAdmin) { None } else { tenant };
        Ok(Access { tenant, permissions, scope })
    }
}
