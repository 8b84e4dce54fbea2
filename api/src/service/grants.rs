//! The grants rule applied to users, roles and API keys: nobody grants what they do not hold,
//! nor manages a user (or edits a role) that holds more than they do. The rule itself is
//! [`Access::covers`] in the domain; this module builds the access being granted or managed
//! and turns a refusal into [`AppError::NotHeld`] on the input that asked for it.

use std::collections::BTreeSet;

use sparkwatch_domain::access::{NotHeld, Permission, ProjectScope};
use sparkwatch_domain::ids::{ProjectId, TenantId};

use super::Services;
use crate::auth::Principal;
use crate::error::{AppError, AppResult};
use crate::store::access::{self as st, RoleRef, User};

/// The error of a refused grant on `field`.
fn not_held(field: &'static str, why: NotHeld) -> AppError {
    AppError::NotHeld { field, reason: why.to_string() }
}

/// Fails with [`AppError::NotHeld`] unless `who` holds every permission and project of
/// `permissions`/`scope`; the error names `fields.0` for a permission, `fields.1` for a project.
pub(crate) fn check_covers(
    who: &Principal,
    fields: (&'static str, &'static str),
    permissions: &BTreeSet<Permission>,
    scope: &ProjectScope,
) -> AppResult<()> {
    who.access.covers(permissions, scope).map_err(|why| match why {
        NotHeld::Permission(_) => not_held(fields.0, why),
        NotHeld::Project(_) | NotHeld::AllProjects => not_held(fields.1, why),
    })
}

impl Services {
    /// The permissions a role grants in `tenant`.
    pub(crate) async fn role_permissions(
        &self,
        tenant: Option<TenantId>,
        role: RoleRef,
    ) -> AppResult<BTreeSet<Permission>> {
        Ok(match (role, tenant) {
            (RoleRef::Builtin(b), _) => b.permissions(),
            (RoleRef::Custom(id), Some(t)) => {
                st::role(self.inner.store.db(), t, id).await?.map(|r| r.permissions).unwrap_or_default()
            }
            (RoleRef::Custom(_), None) => BTreeSet::new(),
        })
    }

    /// Fails unless `who` holds everything a holder of `role` limited to `projects` would:
    /// creating a user or changing one's role or projects.
    pub(crate) async fn check_grant(
        &self,
        who: &Principal,
        tenant: Option<TenantId>,
        role: RoleRef,
        projects: &[ProjectId],
    ) -> AppResult<()> {
        let permissions = self.role_permissions(tenant, role).await?;
        let scope = ProjectScope::new(&permissions, projects.iter().copied());
        check_covers(who, ("roleId", "projectIds"), &permissions, &scope)
    }

    /// Fails unless `who` holds everything `user` holds now: a `user.manage` holder cannot
    /// reset the password of, deactivate, rename or re-role someone with more access.
    pub(crate) async fn check_manages(&self, who: &Principal, user: &User) -> AppResult<()> {
        let permissions = self.role_permissions(user.tenant_id, user.role).await?;
        let projects = st::user_projects(self.inner.store.db(), user.id).await?;
        let scope = ProjectScope::new(&permissions, projects);
        check_covers(who, ("id", "id"), &permissions, &scope)
    }

    /// Fails unless `who` holds everything an API key with `role` and `projects` would (a key
    /// without a project list sees what its role sees).
    pub(crate) async fn check_key_grant(
        &self,
        who: &Principal,
        tenant: TenantId,
        role: RoleRef,
        projects: Option<&[ProjectId]>,
    ) -> AppResult<()> {
        let permissions = self.role_permissions(Some(tenant), role).await?;
        let (project_field, scope) = match projects {
            Some(p) => ("projectIds", ProjectScope::Only(p.iter().copied().collect())),
            // Without a list the key sees what its role sees: every project with `project.all`.
            None => ("roleId", ProjectScope::new(&permissions, [])),
        };
        check_covers(who, ("roleId", project_field), &permissions, &scope)
    }
}
