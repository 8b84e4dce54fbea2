//! Permission guards. Every resolver that needs a permission declares it with
//! `#[graphql(guard = "Require(Permission::…)")]`; tenant and project scope are then applied
//! by the service from the same [`Principal`].

use async_graphql::{Context, Guard, Result};
use sparkwatch_domain::access::Permission;

use crate::auth::{Auth, Principal};
use crate::error::{ApiError, AppError};
use crate::service::Services;

/// The request's principal, or `UNAUTHENTICATED`.
pub fn principal<'a>(ctx: &'a Context<'_>) -> Result<&'a Principal, AppError> {
    match ctx.data_opt::<Auth>() {
        Some(auth) => auth.principal(),
        None => Auth::Anonymous.principal(),
    }
}

/// The services and the principal of the request.
pub fn caller<'a>(ctx: &'a Context<'_>) -> Result<(&'a Services, &'a Principal), AppError> {
    let services = ctx.data::<Services>().map_err(|_| AppError::Internal("services missing from the schema".into()))?;
    Ok((services, principal(ctx)?))
}

/// Requires a signed-in caller holding a permission.
pub struct Require(pub Permission);

impl Guard for Require {
    async fn check(&self, ctx: &Context<'_>) -> Result<()> {
        principal(ctx).and_then(|p| p.require(self.0)).map_err(|e| ApiError(e).into())
    }
}

/// Requires a signed-in caller holding at least one of the permissions (e.g. acknowledging a
/// hazard is for managers and for electricians alike).
pub struct RequireAny(pub &'static [Permission]);

impl Guard for RequireAny {
    async fn check(&self, ctx: &Context<'_>) -> Result<()> {
        let who = principal(ctx).map_err(ApiError)?;
        if self.0.iter().any(|p| who.access.can(*p)) {
            return Ok(());
        }
        if let [one] = self.0 {
            return who.require(*one).map_err(|e| ApiError(e).into());
        }
        let names: Vec<String> = self.0.iter().map(|p| format!("`{p}`")).collect();
        Err(ApiError(AppError::Forbidden(format!("this needs one of the permissions {}", names.join(", ")))).into())
    }
}

/// Requires any signed-in caller.
pub struct SignedIn;

impl Guard for SignedIn {
    async fn check(&self, ctx: &Context<'_>) -> Result<()> {
        principal(ctx).map(|_| ()).map_err(|e| ApiError(e).into())
    }
}
