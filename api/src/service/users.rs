//! Users, roles, API keys and the operation log of a tenant.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde_json::json;
use sparkwatch_domain::access::{BuiltinRole, Permission, ProjectScope};
use sparkwatch_domain::ids::{ApiKeyId, ProjectId, RoleId, TenantId, UserId};
use sparkwatch_domain::validate;

use super::Services;
use super::grants::check_covers;
use crate::auth::token::{API_KEY_PREFIX, digest, random_token};
use crate::auth::{Actor, Principal, password};
use crate::error::{AppError, AppResult};
use crate::store::access::{self as st, ApiKey, Role, RoleRef, User};
use crate::store::oplog::{Entry, Operation};
use crate::store::{Page, PageRequest, new_id, oplog, sites};

/// Fields of a new user.
#[derive(Clone, Debug, Default)]
pub struct NewUser {
    /// Sign-in e-mail.
    pub email: Option<String>,
    /// Sign-in phone.
    pub phone: Option<String>,
    /// Display name (defaults to the sign-in name).
    pub display_name: Option<String>,
    /// Initial password.
    pub password: String,
    /// `zh-CN` or `en` (default `zh-CN`).
    pub locale: Option<String>,
    /// Role id: a built-in key (`manager`) or a custom role's id.
    pub role: String,
    /// Projects the user may see (ignored for roles that see all projects).
    pub project_ids: Vec<ProjectId>,
}

/// Changes to a user; `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct UserPatch {
    /// New display name.
    pub display_name: Option<String>,
    /// New locale.
    pub locale: Option<String>,
    /// Activate or deactivate.
    pub active: Option<bool>,
    /// New role id.
    pub role: Option<String>,
    /// New project list.
    pub project_ids: Option<Vec<ProjectId>>,
    /// New password (set by an administrator).
    pub password: Option<String>,
}

/// A role as listed to clients: built-in or custom.
#[derive(Clone, Debug)]
pub struct RoleView {
    /// `manager` for built-ins, the UUID for custom roles.
    pub id: String,
    /// Name.
    pub name: String,
    /// Whether it is built in (and so cannot be changed).
    pub builtin: bool,
    /// Permissions granted.
    pub permissions: BTreeSet<Permission>,
}

impl RoleView {
    fn builtin(b: BuiltinRole) -> Self {
        RoleView { id: b.key().to_owned(), name: b.name().to_owned(), builtin: true, permissions: b.permissions() }
    }
    fn custom(r: Role) -> Self {
        RoleView { id: r.id.to_string(), name: r.name, builtin: false, permissions: r.permissions }
    }
}

/// A role carries permissions only; its holders' projects are checked with the holders.
const NO_PROJECTS: ProjectScope = ProjectScope::Only(BTreeSet::new());

fn user_json(u: &User) -> serde_json::Value {
    json!({
        "id": u.id, "tenantId": u.tenant_id, "email": u.email, "phone": u.phone,
        "displayName": u.display_name, "locale": u.locale, "active": u.active,
        "role": match u.role { RoleRef::Builtin(b) => b.key().to_owned(), RoleRef::Custom(id) => id.to_string() },
    })
}

fn permissions_from(codes: &[String]) -> AppResult<BTreeSet<Permission>> {
    codes
        .iter()
        .map(|c| match c.parse::<Permission>() {
            Ok(p) if p.is_platform() => {
                Err(AppError::invalid("permissions", format!("`{c}` is reserved for platform operators")))
            }
            Ok(p) => Ok(p),
            Err(e) => Err(AppError::invalid("permissions", e)),
        })
        .collect()
}

impl Services {
    /// Resolves a role id given by a client within the caller's tenant.
    async fn role_ref(&self, who: &Principal, tenant: Option<TenantId>, id: &str) -> AppResult<RoleRef> {
        if let Some(b) = BuiltinRole::from_key(id) {
            if !b.is_tenant_role() && !who.access.can(Permission::TenantManage) {
                return Err(AppError::Forbidden("only platform operators can grant the platform admin role".into()));
            }
            return Ok(RoleRef::Builtin(b));
        }
        let rid: RoleId =
            id.parse().map_err(|_| AppError::invalid("roleId", "is neither a built-in role key nor a role id"))?;
        let tenant = tenant.ok_or_else(|| AppError::invalid("roleId", "platform accounts cannot hold tenant roles"))?;
        st::role(self.inner.store.db(), tenant, rid).await?.ok_or(AppError::NotFound("role"))?;
        Ok(RoleRef::Custom(rid))
    }

    async fn check_projects(&self, tenant: TenantId, projects: &[ProjectId]) -> AppResult<()> {
        for p in projects {
            sites::project(self.inner.store.db(), tenant, &sparkwatch_domain::access::ProjectScope::All, *p)
                .await?
                .ok_or(AppError::NotFound("project"))?;
        }
        Ok(())
    }

    /// Creates a user in the caller's tenant (or a platform admin, for platform operators).
    pub async fn create_user(&self, who: &Principal, input: NewUser) -> AppResult<User> {
        let email =
            input.email.as_deref().filter(|s| !s.trim().is_empty()).map(|e| validate::email("email", e)).transpose()?;
        let phone =
            input.phone.as_deref().filter(|s| !s.trim().is_empty()).map(|p| validate::phone("phone", p)).transpose()?;
        if email.is_none() && phone.is_none() {
            return Err(AppError::invalid("email", "give an e-mail address or a phone number to sign in with"));
        }
        validate::new_password("password", &input.password)?;
        let locale = validate::locale("locale", input.locale.as_deref().unwrap_or("zh-CN"))?;
        let platform = input.role == BuiltinRole::PlatformAdmin.key();
        let tenant = if platform { None } else { Some(who.tenant()?) };
        let role = self.role_ref(who, tenant, &input.role).await?;
        if let Some(t) = tenant {
            self.check_projects(t, &input.project_ids).await?;
        }
        self.check_grant(who, tenant, role, &input.project_ids).await?;
        let display_name = match input.display_name.as_deref() {
            Some(n) => validate::required_text("displayName", n, 100)?,
            None => email.clone().or(phone.clone()).unwrap_or_default(),
        };
        let user = User {
            id: new_id().into(),
            tenant_id: tenant,
            email,
            phone,
            display_name,
            password_hash: password::hash_off_thread(&input.password).await?,
            locale,
            active: true,
            role,
            created_at: self.now(),
            last_login_at: None,
        };
        let db = self.inner.store.db();
        for login in [user.email.as_deref(), user.phone.as_deref()].into_iter().flatten() {
            if st::user_by_login(db, login).await?.is_some() {
                let field = if login.contains('@') { "email" } else { "phone" };
                return Err(AppError::invalid(field, format!("`{login}` is already used by another account")));
            }
        }
        let tx = self.begin().await?;
        st::insert_user(&tx, &user).await?;
        st::set_user_projects(&tx, user.id, &input.project_ids).await?;
        let after = user_json(&user);
        self.log(&tx, who, Entry::new(tenant, "user.create", "user", Some(user.id.to_string())).after(Some(after)))
            .await?;
        tx.commit().await?;
        Ok(user)
    }

    /// A user of the caller's tenant.
    pub async fn user(&self, who: &Principal, id: UserId) -> AppResult<User> {
        let tenant = who.tenant()?;
        st::user_by_id(self.inner.store.db(), id)
            .await?
            .filter(|u| u.tenant_id == Some(tenant))
            .ok_or(AppError::NotFound("user"))
    }

    /// The caller's own account.
    pub async fn me(&self, who: &Principal) -> AppResult<User> {
        let id = who.user_id().ok_or_else(|| AppError::Forbidden("API keys have no user account".into()))?;
        st::user_by_id(self.inner.store.db(), id).await?.ok_or(AppError::NotFound("user"))
    }

    /// The caller's tenant's users.
    pub async fn users(&self, who: &Principal, search: Option<&str>, req: PageRequest) -> AppResult<Page<User>> {
        Ok(st::users(self.inner.store.db(), who.tenant()?, search, req).await?)
    }

    /// Projects a user is scoped to.
    pub async fn user_projects(&self, id: UserId) -> AppResult<Vec<ProjectId>> {
        Ok(st::user_projects(self.inner.store.db(), id).await?)
    }

    /// Changes a user of the caller's tenant.
    pub async fn update_user(&self, who: &Principal, id: UserId, patch: UserPatch) -> AppResult<User> {
        let tenant = who.tenant()?;
        let before = self.user(who, id).await?;
        // Whatever the change, the caller must hold all the user holds now (no resetting an
        // administrator's password) and all it would hold afterwards (no self-promotion).
        self.check_manages(who, &before).await?;
        let mut user = before.clone();
        if let Some(n) = patch.display_name.as_deref() {
            user.display_name = validate::required_text("displayName", n, 100)?;
        }
        if let Some(l) = patch.locale.as_deref() {
            user.locale = validate::locale("locale", l)?;
        }
        if let Some(a) = patch.active {
            if !a && who.user_id() == Some(id) {
                return Err(AppError::invalid("active", "you cannot deactivate your own account"));
            }
            user.active = a;
        }
        if let Some(r) = patch.role.as_deref() {
            user.role = self.role_ref(who, Some(tenant), r).await?;
        }
        if let Some(p) = patch.password.as_deref() {
            validate::new_password("password", p)?;
            user.password_hash = password::hash_off_thread(p).await?;
        }
        if let Some(projects) = &patch.project_ids {
            self.check_projects(tenant, projects).await?;
        }
        if patch.role.is_some() || patch.project_ids.is_some() {
            let projects = match &patch.project_ids {
                Some(p) => p.clone(),
                None => st::user_projects(self.inner.store.db(), id).await?,
            };
            self.check_grant(who, Some(tenant), user.role, &projects).await?;
        }
        let tx = self.begin().await?;
        st::update_user(&tx, &user).await?;
        // A password set by an administrator or a deactivation ends every sign-in of the user.
        if patch.password.is_some() || !user.active {
            st::revoke_user_families(&tx, id, None, self.now()).await?;
        }
        if let Some(projects) = &patch.project_ids {
            st::set_user_projects(&tx, id, projects).await?;
        }
        let mut after = user_json(&user);
        if let Some(p) = &patch.project_ids {
            after["projectIds"] = json!(p);
        }
        self.log(
            &tx,
            who,
            Entry::new(Some(tenant), "user.update", "user", Some(id.to_string()))
                .before(Some(user_json(&before)))
                .after(Some(after)),
        )
        .await?;
        tx.commit().await?;
        self.access_changed(tenant);
        Ok(user)
    }

    /// Changes the caller's own password after checking the current one.
    pub async fn change_password(&self, who: &Principal, current: &str, new: &str) -> AppResult<bool> {
        let mut user = self.me(who).await?;
        if !password::verify_off_thread(current, &user.password_hash).await? {
            return Err(AppError::invalid("currentPassword", "is not your current password"));
        }
        validate::new_password("newPassword", new)?;
        user.password_hash = password::hash_off_thread(new).await?;
        let tx = self.begin().await?;
        st::update_user(&tx, &user).await?;
        // Every other sign-in ends (its refresh and access tokens); this one goes on.
        st::revoke_user_families(&tx, user.id, who.session, self.now()).await?;
        self.log(&tx, who, Entry::new(user.tenant_id, "user.change_password", "user", Some(user.id.to_string())))
            .await?;
        tx.commit().await?;
        if let Some(tenant) = user.tenant_id {
            self.access_changed(tenant);
        }
        Ok(true)
    }

    // ---- roles ----

    /// Built-in roles followed by the tenant's own.
    pub async fn roles(&self, who: &Principal) -> AppResult<Vec<RoleView>> {
        let mut list: Vec<RoleView> =
            BuiltinRole::ALL.into_iter().filter(|r| r.is_tenant_role()).map(RoleView::builtin).collect();
        list.extend(st::roles(self.inner.store.db(), who.tenant()?).await?.into_iter().map(RoleView::custom));
        Ok(list)
    }

    /// The role of a user, for display.
    pub async fn role_view(&self, role: RoleRef, tenant: Option<TenantId>) -> AppResult<RoleView> {
        match (role, tenant) {
            (RoleRef::Builtin(b), _) => Ok(RoleView::builtin(b)),
            (RoleRef::Custom(id), Some(t)) => {
                st::role(self.inner.store.db(), t, id).await?.map(RoleView::custom).ok_or(AppError::NotFound("role"))
            }
            (RoleRef::Custom(_), None) => Err(AppError::NotFound("role")),
        }
    }

    /// Defines a tenant role from permission codes.
    pub async fn create_role(&self, who: &Principal, name: &str, permissions: &[String]) -> AppResult<RoleView> {
        let tenant = who.tenant()?;
        let role = Role {
            id: new_id().into(),
            tenant_id: tenant,
            name: validate::required_text("name", name, 100)?,
            permissions: permissions_from(permissions)?,
            created_at: self.now(),
        };
        check_covers(who, ("permissions", "permissions"), &role.permissions, &NO_PROJECTS)?;
        if BuiltinRole::ALL.iter().any(|b| b.name().eq_ignore_ascii_case(&role.name) || b.key() == role.name) {
            return Err(AppError::invalid("name", "is the name of a built-in role"));
        }
        let tx = self.begin().await?;
        st::insert_role(&tx, &role).await.map_err(|e| conflict_or(e, "a role with this name already exists"))?;
        let after = json!({"name": role.name, "permissions": permissions});
        self.log(
            &tx,
            who,
            Entry::new(Some(tenant), "role.create", "role", Some(role.id.to_string())).after(Some(after)),
        )
        .await?;
        tx.commit().await?;
        Ok(RoleView::custom(role))
    }

    /// Renames a tenant role or replaces its permissions.
    pub async fn update_role(
        &self,
        who: &Principal,
        id: RoleId,
        name: Option<&str>,
        permissions: Option<&[String]>,
    ) -> AppResult<RoleView> {
        let tenant = who.tenant()?;
        let tx = self.begin().await?;
        let before = st::role(&tx, tenant, id).await?.ok_or(AppError::NotFound("role"))?;
        // A role holding more than the caller is out of its reach, and so is adding to one.
        check_covers(who, ("id", "id"), &before.permissions, &NO_PROJECTS)?;
        let mut role = before.clone();
        if let Some(n) = name {
            role.name = validate::required_text("name", n, 100)?;
        }
        if let Some(p) = permissions {
            role.permissions = permissions_from(p)?;
            check_covers(who, ("permissions", "permissions"), &role.permissions, &NO_PROJECTS)?;
        }
        st::update_role(&tx, &role).await.map_err(|e| conflict_or(e, "a role with this name already exists"))?;
        let codes = |r: &Role| r.permissions.iter().map(|p| p.code()).collect::<Vec<_>>();
        self.log(
            &tx,
            who,
            Entry::new(Some(tenant), "role.update", "role", Some(id.to_string()))
                .before(Some(json!({"name": before.name, "permissions": codes(&before)})))
                .after(Some(json!({"name": role.name, "permissions": codes(&role)}))),
        )
        .await?;
        tx.commit().await?;
        self.access_changed(tenant);
        Ok(RoleView::custom(role))
    }

    /// Deletes a tenant role nobody holds.
    pub async fn delete_role(&self, who: &Principal, id: RoleId) -> AppResult<bool> {
        let tenant = who.tenant()?;
        let tx = self.begin().await?;
        let role = st::role(&tx, tenant, id).await?.ok_or(AppError::NotFound("role"))?;
        check_covers(who, ("id", "id"), &role.permissions, &NO_PROJECTS)?;
        let holders = st::role_holders(&tx, id).await?;
        if holders > 0 {
            return Err(AppError::Conflict(format!(
                "{holders} user(s) still hold this role; give them another role first"
            )));
        }
        st::delete_role(&tx, &role).await?;
        self.log(
            &tx,
            who,
            Entry::new(Some(tenant), "role.delete", "role", Some(id.to_string()))
                .before(Some(json!({"name": role.name}))),
        )
        .await?;
        tx.commit().await?;
        self.access_changed(tenant);
        Ok(true)
    }

    // ---- API keys ----

    /// Issues an API key; the secret is returned once and only its digest is kept. A key for
    /// control commands (`controlCommands`) asks its issuer to re-authenticate, as sending a
    /// control command does: the key will send them without anyone's password.
    pub async fn create_api_key(&self, who: &Principal, new: NewApiKey<'_>) -> AppResult<(ApiKey, String)> {
        let NewApiKey { name, role, project_ids, expires_at, control_commands, password, step_up_token } = new;
        let tenant = who.tenant()?;
        let role = self.role_ref(who, Some(tenant), role).await?;
        if role == RoleRef::Builtin(BuiltinRole::TenantAdmin) {
            return Err(AppError::invalid(
                "roleId",
                "API keys cannot hold the tenant admin role; pick a narrower role",
            ));
        }
        if let Some(p) = &project_ids {
            self.check_projects(tenant, p).await?;
        }
        self.check_key_grant(who, tenant, role, project_ids.as_deref()).await?;
        if control_commands && !self.role_permissions(Some(tenant), role).await?.contains(&Permission::DeviceControl) {
            return Err(AppError::invalid("controlCommands", "the key's role does not hold `device.control`"));
        }
        if expires_at.is_some_and(|e| e <= self.now()) {
            return Err(AppError::invalid("expiresAt", "must be in the future"));
        }
        if control_commands {
            match who.actor {
                Actor::User(user) => {
                    let what = "issuing an API key for control commands";
                    self.check_reauthentication(who, user, what, password, step_up_token).await?;
                }
                Actor::ApiKey(_) => {
                    return Err(AppError::Forbidden(
                        "only a person who re-authenticates may issue an API key for control commands".into(),
                    ));
                }
                // The CLI and tests act as the system, which has nobody to re-authenticate.
                Actor::System => {}
            }
        }
        // A key issued by a key answers to the person behind that one: a key never escapes
        // the cap of a person's current rights by issuing another.
        let created_by = match who.actor {
            Actor::ApiKey(id) => st::key(self.inner.store.db(), tenant, id).await?.and_then(|k| k.created_by),
            _ => who.user_id(),
        };
        let secret = format!("{API_KEY_PREFIX}{}", random_token(32));
        let key = ApiKey {
            id: new_id().into(),
            tenant_id: tenant,
            name: validate::required_text("name", name, 100)?,
            prefix: secret.chars().take(API_KEY_PREFIX.len() + 6).collect(),
            role,
            project_ids,
            created_by,
            created_at: self.now(),
            expires_at,
            revoked_at: None,
            control_commands,
        };
        let tx = self.begin().await?;
        st::insert_key(&tx, &key, &digest(&secret)).await?;
        let after = json!({
            "name": key.name, "prefix": key.prefix, "projectIds": key.project_ids,
            "controlCommands": key.control_commands,
        });
        self.log(
            &tx,
            who,
            Entry::new(Some(tenant), "apikey.create", "api_key", Some(key.id.to_string())).after(Some(after)),
        )
        .await?;
        tx.commit().await?;
        Ok((key, secret))
    }

    /// The tenant's API keys.
    pub async fn api_keys(&self, who: &Principal) -> AppResult<Vec<ApiKey>> {
        Ok(st::keys(self.inner.store.db(), who.tenant()?).await?)
    }

    /// Revokes an API key of the tenant.
    pub async fn revoke_api_key(&self, who: &Principal, id: ApiKeyId) -> AppResult<ApiKey> {
        let tenant = who.tenant()?;
        let tx = self.begin().await?;
        st::key(&tx, tenant, id).await?.ok_or(AppError::NotFound("API key"))?;
        st::revoke_key(&tx, id, self.now()).await?;
        self.log(&tx, who, Entry::new(Some(tenant), "apikey.revoke", "api_key", Some(id.to_string()))).await?;
        let key = st::key(&tx, tenant, id).await?.ok_or(AppError::NotFound("API key"))?;
        tx.commit().await?;
        self.access_changed(tenant);
        Ok(key)
    }

    /// The tenant's operation log.
    pub async fn operation_log(&self, who: &Principal, req: PageRequest) -> AppResult<Page<Operation>> {
        // Entries carry no project: a caller limited to projects sees its own operations only,
        // which cannot reveal another project's devices, users or hazards.
        let only_actor = match who.access.scope {
            ProjectScope::All => None,
            ProjectScope::Only(_) => Some(&who.actor),
        };
        Ok(oplog::list(self.inner.store.db(), who.tenant()?, only_actor, req).await?)
    }
}

/// Maps a unique-constraint violation to a conflict with a specific message.
pub fn conflict_or(err: sea_orm::DbErr, message: &str) -> AppError {
    match AppError::from(err) {
        AppError::Conflict(_) => AppError::Conflict(message.to_owned()),
        other => other,
    }
}

/// An API key to issue ([`Services::create_api_key`]).
pub struct NewApiKey<'a> {
    /// What it is for.
    pub name: &'a str,
    /// The role granting its permissions (not `tenant_admin`).
    pub role: &'a str,
    /// Limit it to these projects.
    pub project_ids: Option<Vec<ProjectId>>,
    /// When it stops working.
    pub expires_at: Option<DateTime<Utc>>,
    /// Whether it may send control commands.
    pub control_commands: bool,
    /// The issuer's password, needed with `control_commands` unless `step_up_token` is given.
    pub password: Option<&'a str>,
    /// A step-up token from `reauthenticate`, instead of the password.
    pub step_up_token: Option<&'a str>,
}
