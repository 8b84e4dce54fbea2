//! Users, roles, project scopes, refresh tokens and API keys.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, Condition, ConnectionTrait, DbErr, EntityTrait, PaginatorTrait, QueryFilter,
    QueryOrder,
};
use sparkwatch_domain::access::{BuiltinRole, Permission};
use sparkwatch_domain::ids::{ApiKeyId, ProjectId, RoleId, TenantId, UserId};
use sparkwatch_entity::{api_key, refresh_token, role, user, user_project_scope};
use uuid::Uuid;

use super::{Page, PageRequest, new_id, page};

/// A user's role: built-in (defined in code) or defined by the tenant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RoleRef {
    /// A built-in role.
    Builtin(BuiltinRole),
    /// A tenant-defined role.
    Custom(RoleId),
}

impl RoleRef {
    fn from_row(key: &str, custom: Option<Uuid>) -> RoleRef {
        match (BuiltinRole::from_key(key), custom) {
            (_, Some(id)) => RoleRef::Custom(id.into()),
            (Some(b), None) => RoleRef::Builtin(b),
            // An unknown key (e.g. written by a newer version) grants the least.
            (None, None) => RoleRef::Builtin(BuiltinRole::Viewer),
        }
    }

    fn to_row(self) -> (String, Option<Uuid>) {
        match self {
            RoleRef::Builtin(b) => (b.key().to_owned(), None),
            RoleRef::Custom(id) => ("custom".to_owned(), Some(id.as_uuid())),
        }
    }
}

/// A person who signs in.
#[derive(Clone, Debug)]
pub struct User {
    /// Id.
    pub id: UserId,
    /// Tenant; none for platform admins.
    pub tenant_id: Option<TenantId>,
    /// Sign-in e-mail.
    pub email: Option<String>,
    /// Sign-in phone.
    pub phone: Option<String>,
    /// Display name.
    pub display_name: String,
    /// argon2id PHC string.
    pub password_hash: String,
    /// `zh-CN` or `en`.
    pub locale: String,
    /// Deactivated users cannot sign in and their tokens stop working.
    pub active: bool,
    /// Role.
    pub role: RoleRef,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last successful sign-in.
    pub last_login_at: Option<DateTime<Utc>>,
}

pub(crate) fn user_from(m: user::Model) -> User {
    User {
        id: m.id.into(),
        tenant_id: m.tenant_id.map(Into::into),
        email: m.email,
        phone: m.phone,
        display_name: m.display_name,
        password_hash: m.password_hash,
        locale: m.locale,
        active: m.active,
        role: RoleRef::from_row(&m.role_key, m.custom_role_id),
        created_at: m.created_at,
        last_login_at: m.last_login_at,
    }
}

fn user_row(u: &User) -> user::ActiveModel {
    let (role_key, custom) = u.role.to_row();
    user::ActiveModel {
        id: Set(u.id.as_uuid()),
        tenant_id: Set(u.tenant_id.map(|t| t.as_uuid())),
        email: Set(u.email.clone()),
        phone: Set(u.phone.clone()),
        display_name: Set(u.display_name.clone()),
        password_hash: Set(u.password_hash.clone()),
        locale: Set(u.locale.clone()),
        active: Set(u.active),
        role_key: Set(role_key),
        custom_role_id: Set(custom),
        created_at: Set(u.created_at),
        last_login_at: Set(u.last_login_at),
    }
}

/// Inserts a user (the id is taken from `u`).
pub async fn insert_user<C: ConnectionTrait>(db: &C, u: &User) -> Result<(), DbErr> {
    user::Entity::insert(user_row(u)).exec_without_returning(db).await.map(|_| ())
}

/// Rewrites a user.
pub async fn update_user<C: ConnectionTrait>(db: &C, u: &User) -> Result<(), DbErr> {
    user::Entity::update(user_row(u)).exec(db).await.map(|_| ())
}

/// A user by id (any tenant; callers check the tenant).
pub async fn user_by_id<C: ConnectionTrait>(db: &C, id: UserId) -> Result<Option<User>, DbErr> {
    Ok(user::Entity::find_by_id(id.as_uuid()).one(db).await?.map(user_from))
}

/// A user by sign-in name (normalised e-mail or phone).
pub async fn user_by_login<C: ConnectionTrait>(db: &C, login: &str) -> Result<Option<User>, DbErr> {
    Ok(user::Entity::find()
        .filter(Condition::any().add(user::Column::Email.eq(login)).add(user::Column::Phone.eq(login)))
        .one(db)
        .await?
        .map(user_from))
}

/// A page of a tenant's users, optionally filtered by a name/e-mail/phone fragment.
pub async fn users<C: ConnectionTrait>(
    db: &C,
    tenant: TenantId,
    search: Option<&str>,
    req: PageRequest,
) -> Result<Page<User>, DbErr> {
    let mut q = user::Entity::find().filter(user::Column::TenantId.eq(tenant.as_uuid()));
    if let Some(s) = search {
        q = q.filter(
            Condition::any()
                .add(user::Column::DisplayName.contains(s))
                .add(user::Column::Email.contains(s))
                .add(user::Column::Phone.contains(s)),
        );
    }
    Ok(page(db, q, user::Column::Id, req).await?.map(user_from))
}

/// The projects a user is explicitly scoped to.
pub async fn user_projects<C: ConnectionTrait>(db: &C, user: UserId) -> Result<Vec<ProjectId>, DbErr> {
    Ok(user_project_scope::Entity::find()
        .filter(user_project_scope::Column::UserId.eq(user.as_uuid()))
        .order_by_asc(user_project_scope::Column::ProjectId)
        .all(db)
        .await?
        .into_iter()
        .map(|m| m.project_id.into())
        .collect())
}

/// Replaces a user's project list.
pub async fn set_user_projects<C: ConnectionTrait>(db: &C, user: UserId, projects: &[ProjectId]) -> Result<(), DbErr> {
    user_project_scope::Entity::delete_many()
        .filter(user_project_scope::Column::UserId.eq(user.as_uuid()))
        .exec(db)
        .await?;
    if projects.is_empty() {
        return Ok(());
    }
    let rows = projects
        .iter()
        .map(|p| user_project_scope::ActiveModel { user_id: Set(user.as_uuid()), project_id: Set(p.as_uuid()) });
    user_project_scope::Entity::insert_many(rows).exec_without_returning(db).await.map(|_| ())
}

// ---- roles ----

/// A tenant-defined role.
#[derive(Clone, Debug)]
pub struct Role {
    /// Id.
    pub id: RoleId,
    /// Tenant.
    pub tenant_id: TenantId,
    /// Name, unique in the tenant.
    pub name: String,
    /// Permissions granted.
    pub permissions: BTreeSet<Permission>,
    /// Created.
    pub created_at: DateTime<Utc>,
}

fn role_from(m: role::Model) -> Role {
    let permissions = serde_json::from_value::<Vec<String>>(m.permissions)
        .unwrap_or_default()
        .iter()
        // Codes this version does not know grant nothing rather than failing the sign-in.
        .filter_map(|c| c.parse().ok())
        .collect();
    Role { id: m.id.into(), tenant_id: m.tenant_id.into(), name: m.name, permissions, created_at: m.created_at }
}

fn role_row(r: &Role) -> role::ActiveModel {
    let codes: Vec<&str> = r.permissions.iter().map(|p| p.code()).collect();
    role::ActiveModel {
        id: Set(r.id.as_uuid()),
        tenant_id: Set(r.tenant_id.as_uuid()),
        name: Set(r.name.clone()),
        permissions: Set(serde_json::json!(codes)),
        created_at: Set(r.created_at),
    }
}

/// Inserts a role.
pub async fn insert_role<C: ConnectionTrait>(db: &C, r: &Role) -> Result<(), DbErr> {
    role::Entity::insert(role_row(r)).exec_without_returning(db).await.map(|_| ())
}

/// Rewrites a role.
pub async fn update_role<C: ConnectionTrait>(db: &C, r: &Role) -> Result<(), DbErr> {
    role::Entity::update(role_row(r)).exec(db).await.map(|_| ())
}

/// Deletes a role (fails while users still hold it).
pub async fn delete_role<C: ConnectionTrait>(db: &C, r: &Role) -> Result<(), DbErr> {
    role::Entity::delete_by_id(r.id.as_uuid()).exec(db).await.map(|_| ())
}

/// A role of the tenant.
pub async fn role<C: ConnectionTrait>(db: &C, tenant: TenantId, id: RoleId) -> Result<Option<Role>, DbErr> {
    Ok(role::Entity::find_by_id(id.as_uuid())
        .filter(role::Column::TenantId.eq(tenant.as_uuid()))
        .one(db)
        .await?
        .map(role_from))
}

/// All roles the tenant defined.
pub async fn roles<C: ConnectionTrait>(db: &C, tenant: TenantId) -> Result<Vec<Role>, DbErr> {
    Ok(role::Entity::find()
        .filter(role::Column::TenantId.eq(tenant.as_uuid()))
        .order_by_asc(role::Column::Id)
        .all(db)
        .await?
        .into_iter()
        .map(role_from)
        .collect())
}

/// Number of users holding a role.
pub async fn role_holders<C: ConnectionTrait>(db: &C, id: RoleId) -> Result<u64, DbErr> {
    user::Entity::find().filter(user::Column::CustomRoleId.eq(id.as_uuid())).count(db).await
}

// ---- refresh tokens ----

/// A stored refresh token (its secret is not stored).
#[derive(Clone, Debug)]
pub struct RefreshToken {
    /// Id.
    pub id: Uuid,
    /// Owner.
    pub user_id: UserId,
    /// Rotation family: all tokens descending from one sign-in.
    pub family_id: Uuid,
    /// Expiry.
    pub expires_at: DateTime<Utc>,
    /// Set on logout or theft detection.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Set when the token was exchanged for a new one.
    pub replaced_at: Option<DateTime<Utc>>,
}

/// Stores a refresh token's digest.
pub async fn insert_refresh<C: ConnectionTrait>(
    db: &C,
    user: UserId,
    family: Uuid,
    digest: &str,
    expires_at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    let row = refresh_token::ActiveModel {
        id: Set(new_id()),
        user_id: Set(user.as_uuid()),
        family_id: Set(family),
        token_hash: Set(digest.to_owned()),
        expires_at: Set(expires_at),
        revoked_at: Set(None),
        replaced_at: Set(None),
        created_at: Set(now),
    };
    refresh_token::Entity::insert(row).exec_without_returning(db).await.map(|_| ())
}

/// A refresh token by digest.
pub async fn refresh_by_digest<C: ConnectionTrait>(db: &C, digest: &str) -> Result<Option<RefreshToken>, DbErr> {
    Ok(refresh_token::Entity::find().filter(refresh_token::Column::TokenHash.eq(digest)).one(db).await?.map(|m| {
        RefreshToken {
            id: m.id,
            user_id: m.user_id.into(),
            family_id: m.family_id,
            expires_at: m.expires_at,
            revoked_at: m.revoked_at,
            replaced_at: m.replaced_at,
        }
    }))
}

/// Marks a token as exchanged; returns false when it already was (a concurrent refresh won).
pub async fn mark_replaced<C: ConnectionTrait>(db: &C, id: Uuid, now: DateTime<Utc>) -> Result<bool, DbErr> {
    let res = refresh_token::Entity::update_many()
        .col_expr(refresh_token::Column::ReplacedAt, sea_orm::sea_query::Expr::value(now))
        .filter(refresh_token::Column::Id.eq(id))
        .filter(refresh_token::Column::ReplacedAt.is_null())
        .exec(db)
        .await?;
    Ok(res.rows_affected == 1)
}

/// Revokes every live token of a family.
pub async fn revoke_family<C: ConnectionTrait>(db: &C, family: Uuid, now: DateTime<Utc>) -> Result<(), DbErr> {
    refresh_token::Entity::update_many()
        .col_expr(refresh_token::Column::RevokedAt, sea_orm::sea_query::Expr::value(now))
        .filter(refresh_token::Column::FamilyId.eq(family))
        .filter(refresh_token::Column::RevokedAt.is_null())
        .exec(db)
        .await
        .map(|_| ())
}

/// Whether the sign-in `family` of `user` is still open: some refresh token of it is not
/// revoked. One indexed lookup per request (`refresh_tokens_family`), next to the user row
/// the request reads anyway, so logout and password changes end access tokens at once on
/// every instance without a cache to invalidate.
pub async fn sign_in_open<C: ConnectionTrait>(db: &C, user: UserId, family: Uuid) -> Result<bool, DbErr> {
    let open = refresh_token::Entity::find()
        .filter(refresh_token::Column::FamilyId.eq(family))
        .filter(refresh_token::Column::UserId.eq(user.as_uuid()))
        .filter(refresh_token::Column::RevokedAt.is_null())
        .count(db)
        .await?;
    Ok(open > 0)
}

/// Revokes every sign-in of `user` except `keep` (the caller's own, on a password change).
pub async fn revoke_user_families<C: ConnectionTrait>(
    db: &C,
    user: UserId,
    keep: Option<Uuid>,
    now: DateTime<Utc>,
) -> Result<(), DbErr> {
    let mut update = refresh_token::Entity::update_many()
        .col_expr(refresh_token::Column::RevokedAt, sea_orm::sea_query::Expr::value(now))
        .filter(refresh_token::Column::UserId.eq(user.as_uuid()))
        .filter(refresh_token::Column::RevokedAt.is_null());
    if let Some(keep) = keep {
        update = update.filter(refresh_token::Column::FamilyId.ne(keep));
    }
    update.exec(db).await.map(|_| ())
}

// ---- API keys ----

/// An integrator's API key (the secret is shown once at creation and not stored).
#[derive(Clone, Debug)]
pub struct ApiKey {
    /// Id.
    pub id: ApiKeyId,
    /// Tenant.
    pub tenant_id: TenantId,
    /// What it is for, e.g. "BMS integration".
    pub name: String,
    /// First characters of the key, to recognise it in lists.
    pub prefix: String,
    /// Role granting its permissions.
    pub role: RoleRef,
    /// Projects it may see; `None` = as its role allows.
    pub project_ids: Option<Vec<ProjectId>>,
    /// Creator.
    pub created_by: Option<UserId>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Optional expiry.
    pub expires_at: Option<DateTime<Utc>>,
    /// Revocation time.
    pub revoked_at: Option<DateTime<Utc>>,
    /// Whether it may send control commands (trip, close, reset, silence, set-points).
    pub control_commands: bool,
}

fn key_from(m: api_key::Model) -> ApiKey {
    ApiKey {
        id: m.id.into(),
        tenant_id: m.tenant_id.into(),
        name: m.name,
        prefix: m.prefix,
        role: RoleRef::from_row(&m.role_key, m.custom_role_id),
        project_ids: m.project_ids.and_then(|v| serde_json::from_value::<Vec<ProjectId>>(v).ok()),
        created_by: m.created_by.map(Into::into),
        created_at: m.created_at,
        expires_at: m.expires_at,
        revoked_at: m.revoked_at,
        control_commands: m.control_commands,
    }
}

/// Stores a key with its digest.
pub async fn insert_key<C: ConnectionTrait>(db: &C, k: &ApiKey, digest: &str) -> Result<(), DbErr> {
    let (role_key, custom) = k.role.to_row();
    let row = api_key::ActiveModel {
        id: Set(k.id.as_uuid()),
        tenant_id: Set(k.tenant_id.as_uuid()),
        name: Set(k.name.clone()),
        prefix: Set(k.prefix.clone()),
        key_hash: Set(digest.to_owned()),
        role_key: Set(role_key),
        custom_role_id: Set(custom),
        project_ids: Set(k.project_ids.as_ref().map(|p| serde_json::json!(p))),
        created_by: Set(k.created_by.map(|u| u.as_uuid())),
        created_at: Set(k.created_at),
        expires_at: Set(k.expires_at),
        revoked_at: Set(None),
        last_used_at: Set(None),
        control_commands: Set(k.control_commands),
    };
    api_key::Entity::insert(row).exec_without_returning(db).await.map(|_| ())
}

/// A key by digest.
pub async fn key_by_digest<C: ConnectionTrait>(db: &C, digest: &str) -> Result<Option<ApiKey>, DbErr> {
    Ok(api_key::Entity::find().filter(api_key::Column::KeyHash.eq(digest)).one(db).await?.map(key_from))
}

/// A key of the tenant.
pub async fn key<C: ConnectionTrait>(db: &C, tenant: TenantId, id: ApiKeyId) -> Result<Option<ApiKey>, DbErr> {
    Ok(api_key::Entity::find_by_id(id.as_uuid())
        .filter(api_key::Column::TenantId.eq(tenant.as_uuid()))
        .one(db)
        .await?
        .map(key_from))
}

/// The tenant's keys.
pub async fn keys<C: ConnectionTrait>(db: &C, tenant: TenantId) -> Result<Vec<ApiKey>, DbErr> {
    Ok(api_key::Entity::find()
        .filter(api_key::Column::TenantId.eq(tenant.as_uuid()))
        .order_by_asc(api_key::Column::Id)
        .all(db)
        .await?
        .into_iter()
        .map(key_from)
        .collect())
}

/// Revokes a key.
pub async fn revoke_key<C: ConnectionTrait>(db: &C, id: ApiKeyId, now: DateTime<Utc>) -> Result<(), DbErr> {
    api_key::Entity::update_many()
        .col_expr(api_key::Column::RevokedAt, sea_orm::sea_query::Expr::value(now))
        .filter(api_key::Column::Id.eq(id.as_uuid()))
        .filter(api_key::Column::RevokedAt.is_null())
        .exec(db)
        .await
        .map(|_| ())
}
