//! Identity: who is calling. Passwords, access tokens (JWT), refresh tokens, API keys and the
//! login rate limiter live here; *what* a caller may do is decided by guards (permissions)
//! and services (tenant and project scope) from the [`Principal`] built here.

pub mod client_addr;
pub mod password;
pub mod rate_limit;
pub mod shared_limits;
pub mod token;

use sparkwatch_domain::access::{Access, Permission};
use sparkwatch_domain::ids::{ApiKeyId, ProjectId, TenantId, UserId};

use crate::error::{AppError, AppResult};

/// Who performs an operation.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Actor {
    /// A signed-in user.
    User(UserId),
    /// An integrator's API key.
    ApiKey(ApiKeyId),
    /// The server itself or an operator at the command line (CLI import, demo seeding).
    System,
}

/// An authenticated caller with its permissions and scope.
#[derive(Clone, Debug)]
pub struct Principal {
    /// Who it is.
    pub actor: Actor,
    /// How it appears in the operation log (e-mail, phone or key name).
    pub label: String,
    /// What it may do and see.
    pub access: Access,
    /// The sign-in an access token belongs to (none for API keys and the system).
    pub session: Option<uuid::Uuid>,
    /// An API key's permissions held back because the person who issued it no longer holds
    /// them (`Access::capped_by`); empty for everyone else. Kept to say why a request fails.
    pub withheld: std::collections::BTreeSet<Permission>,
}

impl Principal {
    /// A system principal with every permission inside `tenant` (CLI and seeding).
    pub fn system(tenant: TenantId, label: &str) -> Self {
        let permissions = Permission::ALL.into_iter().filter(|p| !p.is_platform()).collect();
        Principal {
            actor: Actor::System,
            label: label.to_owned(),
            access: Access { tenant: Some(tenant), permissions, scope: sparkwatch_domain::access::ProjectScope::All },
            session: None,
            withheld: Default::default(),
        }
    }

    /// A system principal with the platform permissions (CLI tenant and admin creation).
    pub fn platform_system(label: &str) -> Self {
        Principal {
            actor: Actor::System,
            label: label.to_owned(),
            access: Access {
                tenant: None,
                permissions: sparkwatch_domain::access::BuiltinRole::PlatformAdmin.permissions(),
                scope: sparkwatch_domain::access::ProjectScope::All,
            },
            session: None,
            withheld: Default::default(),
        }
    }

    /// The caller's tenant; platform operators have none and cannot touch tenant data.
    pub fn tenant(&self) -> AppResult<TenantId> {
        self.access.tenant.ok_or_else(|| AppError::Forbidden("platform accounts do not act inside a tenant".into()))
    }

    /// Fails with `FORBIDDEN` unless the caller holds `permission`.
    pub fn require(&self, permission: Permission) -> AppResult<()> {
        if self.access.can(permission) {
            Ok(())
        } else if self.withheld.contains(&permission) {
            Err(AppError::NotHeld {
                field: "authorization",
                reason: format!(
                    "this needs the `{permission}` permission: this API key's role holds it, but the person \
                     who issued the key no longer does, and a key never holds more than its issuer"
                ),
            })
        } else {
            Err(AppError::Forbidden(format!("this needs the `{permission}` permission")))
        }
    }

    /// Whether the caller may see the project (tenant already checked by the query).
    pub fn sees_project(&self, project: ProjectId) -> bool {
        self.access.scope.contains(project)
    }

    /// The user id, when the caller is a user.
    pub fn user_id(&self) -> Option<UserId> {
        match self.actor {
            Actor::User(id) => Some(id),
            _ => None,
        }
    }
}

/// The authentication state of one request or WebSocket connection. Keeping "no token" and
/// "bad token" apart lets the API say *why* it refuses (expired vs. missing).
#[derive(Clone, Debug)]
pub enum Auth {
    /// No credentials were presented.
    Anonymous,
    /// Credentials were presented but are not valid; the reason is safe to show.
    Invalid(String),
    /// A valid caller.
    Authenticated(Box<Principal>),
}

impl Auth {
    /// The principal, or `UNAUTHENTICATED` with the reason.
    pub fn principal(&self) -> AppResult<&Principal> {
        match self {
            Auth::Authenticated(p) => Ok(p),
            Auth::Invalid(reason) => Err(AppError::Unauthenticated(reason.clone())),
            Auth::Anonymous => Err(AppError::Unauthenticated(
                "sign in first: send `Authorization: Bearer <accessToken>` (get one with the login mutation)".into(),
            )),
        }
    }
}
