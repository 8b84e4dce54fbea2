//! Who may do what: permissions, the built-in roles (permission bundles) and project scope.
//!
//! A principal (a signed-in user or an integrator's API key) carries a set of permissions
//! and a [`ProjectScope`]. Permissions decide *which operations* it may call; the scope
//! decides *which projects' data* those operations may touch. The tenant boundary is
//! absolute and sits above both.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::ids::{ProjectId, TenantId};

/// One thing a principal may be allowed to do.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Permission {
    /// Create, suspend and list tenants (platform operators only).
    TenantManage,
    /// See usage per tenant: the number of connected devices (the billing figure).
    TenantUsageRead,
    /// Create and change users of the tenant, including their role and project scope.
    UserManage,
    /// Define the tenant's own roles.
    RoleManage,
    /// Issue and revoke API keys for integrators.
    ApiKeyManage,
    /// Read projects, devices, detectors and readings in scope.
    SiteRead,
    /// Create and change projects.
    ProjectManage,
    /// Create and change devices and detectors.
    DeviceManage,
    /// Change alarm set-points at tenant, project and detector level.
    ThresholdManage,
    /// Read hazards and events in scope.
    HazardRead,
    /// Acknowledge, dispatch, verify and close hazards; create, approve and reject work orders.
    HazardManage,
    /// Send remote operations (trip, close, reset, …) to detectors.
    DeviceControl,
    /// Take, work on and complete work orders; do patrols; acknowledge and report hazards.
    FieldWork,
    /// Create patrol checkpoints (and print their labels) and patrol plans.
    PatrolManage,
    /// Read the operation log.
    OperationLogRead,
    /// See every project of the tenant, whatever the user's explicit project list says.
    AllProjects,
}

impl Permission {
    /// Every permission, in a stable order.
    pub const ALL: [Permission; 16] = [
        Permission::TenantManage,
        Permission::TenantUsageRead,
        Permission::UserManage,
        Permission::RoleManage,
        Permission::ApiKeyManage,
        Permission::SiteRead,
        Permission::ProjectManage,
        Permission::DeviceManage,
        Permission::ThresholdManage,
        Permission::HazardRead,
        Permission::HazardManage,
        Permission::DeviceControl,
        Permission::FieldWork,
        Permission::PatrolManage,
        Permission::OperationLogRead,
        Permission::AllProjects,
    ];

    /// The stable text code stored in the database and shown in the API (`device.control`).
    pub const fn code(self) -> &'static str {
        match self {
            Permission::TenantManage => "tenant.manage",
            Permission::TenantUsageRead => "tenant.usage.read",
            Permission::UserManage => "user.manage",
            Permission::RoleManage => "role.manage",
            Permission::ApiKeyManage => "apikey.manage",
            Permission::SiteRead => "site.read",
            Permission::ProjectManage => "project.manage",
            Permission::DeviceManage => "device.manage",
            Permission::ThresholdManage => "threshold.manage",
            Permission::HazardRead => "hazard.read",
            Permission::HazardManage => "hazard.manage",
            Permission::DeviceControl => "device.control",
            Permission::FieldWork => "fieldwork",
            Permission::PatrolManage => "patrol.manage",
            Permission::OperationLogRead => "oplog.read",
            Permission::AllProjects => "project.all",
        }
    }

    /// Whether this permission is reserved for platform operators (never part of a tenant role).
    pub const fn is_platform(self) -> bool {
        matches!(self, Permission::TenantManage | Permission::TenantUsageRead)
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A permission code that names no permission.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown permission `{0}`")]
pub struct UnknownPermission(pub String);

impl FromStr for Permission {
    type Err = UnknownPermission;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Permission::ALL.into_iter().find(|p| p.code() == s).ok_or_else(|| UnknownPermission(s.to_owned()))
    }
}

/// The roles every tenant has without defining them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BuiltinRole {
    /// Operates the hosted platform: manages tenants, sees usage. Belongs to no tenant.
    PlatformAdmin,
    /// Manages everything inside one tenant.
    TenantAdmin,
    /// Safety manager: watches projects in scope, handles hazards, approves work.
    Manager,
    /// Field electrician: patrols, work orders, rectification.
    Electrician,
    /// Read-only, e.g. a regulator or insurer.
    Viewer,
}

impl BuiltinRole {
    /// All built-in roles.
    pub const ALL: [BuiltinRole; 5] = [
        BuiltinRole::PlatformAdmin,
        BuiltinRole::TenantAdmin,
        BuiltinRole::Manager,
        BuiltinRole::Electrician,
        BuiltinRole::Viewer,
    ];

    /// The stable key stored with users and API keys.
    pub const fn key(self) -> &'static str {
        match self {
            BuiltinRole::PlatformAdmin => "platform_admin",
            BuiltinRole::TenantAdmin => "tenant_admin",
            BuiltinRole::Manager => "manager",
            BuiltinRole::Electrician => "electrician",
            BuiltinRole::Viewer => "viewer",
        }
    }

    /// A human name for lists.
    pub const fn name(self) -> &'static str {
        match self {
            BuiltinRole::PlatformAdmin => "Platform admin",
            BuiltinRole::TenantAdmin => "Tenant admin",
            BuiltinRole::Manager => "Manager",
            BuiltinRole::Electrician => "Electrician",
            BuiltinRole::Viewer => "Viewer",
        }
    }

    /// Looks a built-in role up by its key.
    pub fn from_key(key: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.key() == key)
    }

    /// The permission bundle of this role.
    pub fn permissions(self) -> BTreeSet<Permission> {
        use Permission::*;
        let list: &[Permission] = match self {
            BuiltinRole::PlatformAdmin => &[TenantManage, TenantUsageRead],
            BuiltinRole::TenantAdmin => &[
                UserManage,
                RoleManage,
                ApiKeyManage,
                SiteRead,
                ProjectManage,
                DeviceManage,
                ThresholdManage,
                HazardRead,
                HazardManage,
                DeviceControl,
                PatrolManage,
                OperationLogRead,
                AllProjects,
            ],
            BuiltinRole::Manager => &[SiteRead, HazardRead, HazardManage, PatrolManage],
            BuiltinRole::Electrician => &[SiteRead, HazardRead, FieldWork],
            BuiltinRole::Viewer => &[SiteRead, HazardRead],
        };
        list.iter().copied().collect()
    }

    /// Whether users with this role belong to a tenant.
    pub const fn is_tenant_role(self) -> bool {
        !matches!(self, BuiltinRole::PlatformAdmin)
    }
}

/// Which projects of its tenant a principal may see.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ProjectScope {
    /// Every project of the tenant (tenant admins, or roles with [`Permission::AllProjects`]).
    All,
    /// Only these projects.
    Only(BTreeSet<ProjectId>),
}

impl ProjectScope {
    /// Builds the scope from a permission set and an explicit project list.
    pub fn new(permissions: &BTreeSet<Permission>, projects: impl IntoIterator<Item = ProjectId>) -> Self {
        if permissions.contains(&Permission::AllProjects) {
            ProjectScope::All
        } else {
            ProjectScope::Only(projects.into_iter().collect())
        }
    }

    /// Whether the project is visible.
    pub fn contains(&self, project: ProjectId) -> bool {
        match self {
            ProjectScope::All => true,
            ProjectScope::Only(set) => set.contains(&project),
        }
    }
}

/// The authenticated caller of an operation, as far as rules are concerned.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Access {
    /// The caller's tenant; `None` only for platform operators.
    pub tenant: Option<TenantId>,
    /// What the caller may do.
    pub permissions: BTreeSet<Permission>,
    /// Which projects it may see.
    pub scope: ProjectScope,
}

impl Access {
    /// Whether the caller holds the permission.
    pub fn can(&self, permission: Permission) -> bool {
        self.permissions.contains(&permission)
    }
}

/// Why a grant is refused: the grantor would hand out, or manage someone holding, something
/// it does not hold itself.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum NotHeld {
    /// A permission the grantor lacks.
    #[error("you do not hold the `{0}` permission, so you cannot grant it or manage someone who holds it")]
    Permission(Permission),
    /// A project outside the grantor's scope.
    #[error("project {0} is outside your project scope")]
    Project(ProjectId),
    /// Every project of the tenant, while the grantor sees only some.
    #[error("you do not see every project, so you cannot grant or manage access to every project")]
    AllProjects,
}

impl Permission {
    /// Whether a holder of `held` may grant this permission. Holding it is enough; and
    /// `hazard.manage` (acknowledge, dispatch, verify, close hazards; create and approve work
    /// orders) dominates `fieldwork` (take and complete work orders, report and acknowledge
    /// hazards), so tenant admins and managers may hand electricians their field work without
    /// holding it themselves.
    pub fn grantable_with(self, held: &BTreeSet<Permission>) -> bool {
        held.contains(&self) || (self == Permission::FieldWork && held.contains(&Permission::HazardManage))
    }
}

impl Access {
    /// The grants rule: `self` may create, change or hand out the access `other` only when it
    /// holds all of it — every permission and every project of its scope. Applied both to what
    /// is granted (a role, a user's new role and projects, an API key) and to whom is managed
    /// (a user's current access), so nobody grants what they do not hold or manages a user who
    /// holds more. Returns the first thing not held.
    pub fn covers(&self, permissions: &BTreeSet<Permission>, scope: &ProjectScope) -> Result<(), NotHeld> {
        if let Some(p) = permissions.iter().find(|p| !p.grantable_with(&self.permissions)) {
            return Err(NotHeld::Permission(*p));
        }
        match (&self.scope, scope) {
            (ProjectScope::All, _) => Ok(()),
            (ProjectScope::Only(_), ProjectScope::All) => Err(NotHeld::AllProjects),
            (ProjectScope::Only(mine), ProjectScope::Only(theirs)) => match theirs.iter().find(|p| !mine.contains(p)) {
                Some(p) => Err(NotHeld::Project(*p)),
                None => Ok(()),
            },
        }
    }
}

impl Access {
    /// What an API key may do now: its own access (`self`) capped by what its issuer
    /// (`issuer`) holds *now* under the grants rule — each permission the issuer could still
    /// grant, and the projects both see. A key never holds more than its issuer, at issue
    /// and afterwards: demoting the issuer, or removing a permission from the issuer's role,
    /// narrows the key at once, and restoring it restores the key. Returns the capped access
    /// and the key's permissions withheld because the issuer no longer holds them.
    pub fn capped_by(&self, issuer: &Access) -> (Access, BTreeSet<Permission>) {
        let (permissions, withheld) = self.permissions.iter().partition(|p| p.grantable_with(&issuer.permissions));
        let scope = match (&self.scope, &issuer.scope) {
            (mine, ProjectScope::All) => mine.clone(),
            (ProjectScope::All, theirs) => theirs.clone(),
            (ProjectScope::Only(mine), ProjectScope::Only(theirs)) => {
                ProjectScope::Only(mine.intersection(theirs).copied().collect())
            }
        };
        (Access { tenant: self.tenant, permissions, scope }, withheld)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn a_key_is_capped_by_what_its_issuer_holds_now() {
        let (a, b) = (ProjectId::from_uuid(Uuid::from_u128(1)), ProjectId::from_uuid(Uuid::from_u128(2)));
        let set = |ps: &[Permission]| ps.iter().copied().collect::<BTreeSet<_>>();
        let key = Access {
            tenant: None,
            permissions: set(&[Permission::SiteRead, Permission::DeviceControl, Permission::FieldWork]),
            scope: ProjectScope::Only([a, b].into()),
        };
        let issuer = Access {
            tenant: None,
            permissions: set(&[Permission::SiteRead, Permission::HazardManage]),
            scope: ProjectScope::Only([a].into()),
        };
        let (capped, withheld) = key.capped_by(&issuer);
        // fieldwork stays: hazard.manage may grant it (the grants rule).
        assert_eq!(capped.permissions, set(&[Permission::SiteRead, Permission::FieldWork]));
        assert_eq!(withheld, set(&[Permission::DeviceControl]));
        assert_eq!(capped.scope, ProjectScope::Only([a].into()));
        // An issuer who sees every project leaves the key's projects alone, and the other way round.
        let everywhere = Access { scope: ProjectScope::All, ..issuer.clone() };
        assert_eq!(key.capped_by(&everywhere).0.scope, key.scope);
        let all_key = Access { scope: ProjectScope::All, ..key.clone() };
        assert_eq!(all_key.capped_by(&issuer).0.scope, issuer.scope);
    }

    #[test]
    fn permission_codes_round_trip_and_are_unique() {
        let mut seen = BTreeSet::new();
        for p in Permission::ALL {
            assert_eq!(p.code().parse::<Permission>(), Ok(p));
            assert!(seen.insert(p.code()), "duplicate code {}", p.code());
        }
        assert!("device.explode".parse::<Permission>().is_err());
    }

    #[test]
    fn builtin_bundles_follow_the_domain_guide() {
        let cases = [
            (BuiltinRole::PlatformAdmin, Permission::TenantManage, true),
            (BuiltinRole::PlatformAdmin, Permission::SiteRead, false),
            (BuiltinRole::TenantAdmin, Permission::UserManage, true),
            (BuiltinRole::TenantAdmin, Permission::TenantManage, false),
            (BuiltinRole::Manager, Permission::HazardManage, true),
            (BuiltinRole::Manager, Permission::DeviceManage, false),
            (BuiltinRole::Electrician, Permission::FieldWork, true),
            (BuiltinRole::Electrician, Permission::HazardManage, false),
            (BuiltinRole::Viewer, Permission::SiteRead, true),
            (BuiltinRole::Viewer, Permission::HazardManage, false),
        ];
        for (role, permission, expected) in cases {
            assert_eq!(role.permissions().contains(&permission), expected, "{role:?} {permission:?}");
        }
        for role in BuiltinRole::ALL {
            assert_eq!(BuiltinRole::from_key(role.key()), Some(role));
            let platform_only = role.permissions().iter().any(|p| p.is_platform());
            assert_eq!(platform_only, !role.is_tenant_role(), "{role:?}");
        }
    }

    #[test]
    fn scope_all_only_with_the_all_projects_permission() {
        let p = ProjectId::from_uuid(Uuid::from_u128(1));
        let q = ProjectId::from_uuid(Uuid::from_u128(2));
        let manager = ProjectScope::new(&BuiltinRole::Manager.permissions(), [p]);
        assert!(manager.contains(p));
        assert!(!manager.contains(q));
        let admin = ProjectScope::new(&BuiltinRole::TenantAdmin.permissions(), []);
        assert!(admin.contains(q));
    }

    #[test]
    fn nobody_covers_more_than_they_hold() {
        let (p, q) = (ProjectId::from_uuid(Uuid::from_u128(1)), ProjectId::from_uuid(Uuid::from_u128(2)));
        let only = |ps: &[ProjectId]| ProjectScope::Only(ps.iter().copied().collect());
        let user_manager = Access {
            tenant: None,
            permissions: [Permission::UserManage, Permission::SiteRead].into_iter().collect(),
            scope: only(&[p]),
        };
        let admin = BuiltinRole::TenantAdmin.permissions();
        assert_eq!(user_manager.covers(&admin, &ProjectScope::All), Err(NotHeld::Permission(Permission::RoleManage)));
        let viewer = BuiltinRole::Viewer.permissions();
        assert_eq!(user_manager.covers(&viewer, &only(&[p])), Err(NotHeld::Permission(Permission::HazardRead)));
        let site = [Permission::SiteRead].into_iter().collect();
        assert_eq!(user_manager.covers(&site, &only(&[p])), Ok(()));
        assert_eq!(user_manager.covers(&site, &only(&[p, q])), Err(NotHeld::Project(q)));
        assert_eq!(user_manager.covers(&site, &ProjectScope::All), Err(NotHeld::AllProjects));
        let tenant_admin = Access { tenant: None, permissions: admin.clone(), scope: ProjectScope::All };
        let everything = Permission::ALL.into_iter().filter(|p| !p.is_platform()).collect();
        assert_eq!(tenant_admin.covers(&everything, &ProjectScope::All), Ok(()), "field work is dominated");
        for role in BuiltinRole::ALL.into_iter().filter(|r| r.is_tenant_role()) {
            assert_eq!(tenant_admin.covers(&role.permissions(), &ProjectScope::All), Ok(()), "{role:?}");
        }
        let platform = BuiltinRole::PlatformAdmin.permissions();
        assert!(tenant_admin.covers(&platform, &ProjectScope::All).is_err());
    }
}
