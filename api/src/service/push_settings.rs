//! Push settings people and administrators manage: the caller's phones (push tokens) and
//! notification preferences, the tenant's escalation policy, and the delivery log. Who is
//! told about what, the queue and escalation are in [`super::notify`].

use sparkwatch_domain::ids::{TenantId, UserId};
use sparkwatch_domain::notify::{EscalationPolicy, Locale, Preferences};

use super::notify::platform_code;
use super::{Services, snapshot};
use crate::auth::Principal;
use crate::error::{AppError, AppResult};
use crate::push::PushPlatform;
use crate::store::notify::{self as st, NewPushToken, Notification, NotificationFilter, PushToken};
use crate::store::oplog::Entry;
use crate::store::{Page, PageRequest, access, tenants};

impl Services {
    // ---- tokens and preferences (the caller's own) ----

    fn own_user(who: &Principal) -> AppResult<(TenantId, UserId)> {
        let user = who
            .user_id()
            .ok_or_else(|| AppError::Forbidden("only people signed in on a phone have push tokens".into()))?;
        Ok((who.tenant()?, user))
    }

    /// Registers the caller's phone for push notifications (again: the same token moves to
    /// the caller). Signing out of this sign-in removes it.
    pub async fn register_push_token(
        &self,
        who: &Principal,
        platform: PushPlatform,
        token: &str,
        app_id: &str,
        locale: Option<&str>,
    ) -> AppResult<PushToken> {
        let (tenant, user) = Self::own_user(who)?;
        let token = token.trim();
        if token.is_empty() || token.len() > 4096 || token.chars().any(char::is_whitespace) {
            return Err(AppError::invalid("token", "must be the push token the platform gave the app (no spaces)"));
        }
        let app_id = sparkwatch_domain::validate::required_text("appId", app_id, 200)?;
        let locale = match locale {
            Some(l) => Locale::from_tag(l),
            None => {
                let u = access::user_by_id(self.inner.store.db(), user).await?.ok_or(AppError::NotFound("user"))?;
                Locale::from_tag(&u.locale)
            }
        };
        let now = self.now();
        let tx = self.begin().await?;
        // A token registered by another tenant's user stays there: moving it would send this
        // tenant's alarms to a phone signed in elsewhere (or take that phone's away). The phone
        // signs out there first, which removes the token.
        if st::token_tenant(&tx, token).await?.is_some_and(|t| t != tenant) {
            return Err(AppError::Conflict(
                "this push token is registered to another organisation's account; sign out there first".into(),
            ));
        }
        let new = NewPushToken {
            tenant,
            user,
            session: who.session,
            platform: platform_code(platform),
            token,
            app_id: &app_id,
            locale: locale.tag(),
        };
        let stored = st::upsert_token(&tx, &new, now).await?;
        let entry =
            Entry::new(Some(tenant), "push_token.register", "push_token", Some(stored.id.to_string())).after(snapshot(
                &serde_json::json!({"platform": stored.platform, "appId": stored.app_id, "locale": stored.locale}),
            ));
        self.log(&tx, who, entry).await?;
        tx.commit().await?;
        Ok(stored)
    }

    /// Removes one of the caller's push tokens; false when it was not registered.
    pub async fn unregister_push_token(&self, who: &Principal, token: &str) -> AppResult<bool> {
        let (tenant, user) = Self::own_user(who)?;
        let tx = self.begin().await?;
        let removed = st::delete_token(&tx, user, token.trim()).await?;
        if removed {
            let entry = Entry::new(Some(tenant), "push_token.unregister", "push_token", None);
            self.log(&tx, who, entry).await?;
        }
        tx.commit().await?;
        Ok(removed)
    }

    /// The caller's registered phones.
    pub async fn push_tokens(&self, who: &Principal) -> AppResult<Vec<PushToken>> {
        let (_, user) = Self::own_user(who)?;
        Ok(st::tokens_of(self.inner.store.db(), user).await?)
    }

    /// The caller's notification preferences.
    pub async fn notification_preferences(&self, who: &Principal) -> AppResult<Preferences> {
        let (_, user) = Self::own_user(who)?;
        Ok(st::preferences(self.inner.store.db(), user).await?)
    }

    /// Replaces the caller's notification preferences.
    pub async fn update_notification_preferences(&self, who: &Principal, p: Preferences) -> AppResult<Preferences> {
        let (tenant, user) = Self::own_user(who)?;
        let now = self.now();
        let tx = self.begin().await?;
        let before = st::preferences(&tx, user).await?;
        st::save_preferences(&tx, tenant, user, &p, now).await?;
        let entry = Entry::new(Some(tenant), "notification_preferences.update", "user", Some(user.to_string()))
            .before(snapshot(&before))
            .after(snapshot(&p));
        self.log(&tx, who, entry).await?;
        tx.commit().await?;
        Ok(p)
    }

    // ---- tenant policy and delivery log (administrators) ----

    /// The caller's tenant's escalation policy.
    pub async fn escalation_policy(&self, who: &Principal) -> AppResult<EscalationPolicy> {
        let tenant = who.tenant()?;
        let t = tenants::get(self.inner.store.db(), tenant).await?.ok_or(AppError::NotFound("tenant"))?;
        Ok(t.escalation)
    }

    /// Changes when unacknowledged alarms are escalated (applies to alarms raised from now on
    /// and to the next repeat of those already waiting).
    pub async fn update_escalation_policy(&self, who: &Principal, p: EscalationPolicy) -> AppResult<EscalationPolicy> {
        let tenant = who.tenant()?;
        let p = EscalationPolicy::new(p.after_min, p.every_min)?;
        let tx = self.begin().await?;
        let mut t = tenants::get(&tx, tenant).await?.ok_or(AppError::NotFound("tenant"))?;
        let before = t.escalation;
        t.escalation = p;
        tenants::update(&tx, &t).await?;
        let entry = Entry::new(Some(tenant), "escalation_policy.update", "tenant", Some(tenant.to_string()))
            .before(snapshot(&before))
            .after(snapshot(&p));
        self.log(&tx, who, entry).await?;
        tx.commit().await?;
        // Ingestion caches the policy with the site data.
        self.sites_changed();
        Ok(p)
    }

    /// The tenant's delivery log, newest first.
    pub async fn notifications(
        &self,
        who: &Principal,
        filter: &NotificationFilter,
        req: PageRequest,
    ) -> AppResult<Page<Notification>> {
        Ok(st::notifications(self.inner.store.db(), who.tenant()?, &who.access.scope, filter, req).await?)
    }
}
