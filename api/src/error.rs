//! The one error type of the service layer and its one mapping to GraphQL errors.
//!
//! Clients see a stable `extensions.code` (and `extensions.field` for validation); internal
//! details (SQL errors, I/O) are logged with an incident id and never sent.

use sparkwatch_domain::ValidationError;

/// What went wrong in a use case, in terms a client can act on.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The object does not exist *for this caller* (other tenants' objects look absent).
    #[error("{0} not found")]
    NotFound(&'static str),
    /// No valid credentials were presented.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller is known but may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// The operation needs the caller's password again, and it was missing or wrong
    /// (`FORBIDDEN` with `extensions.field = "password"`).
    #[error("{0}")]
    Reauthenticate(String),
    /// A step-up token (from `reauthenticate`) was presented but is not valid for this caller
    /// (`FORBIDDEN` with `extensions.field = "stepUpToken"`).
    #[error("{0}")]
    StepUp(String),
    /// The caller would grant, or manage someone holding, a permission or project it does not
    /// hold itself (`FORBIDDEN` with `extensions.field` naming the input that asks for it).
    #[error("{reason}")]
    NotHeld {
        /// The input field (`roleId`, `permissions`, `projectIds`, `id`).
        field: &'static str,
        /// What is not held, safe to show.
        reason: String,
    },
    /// An input value breaks a rule.
    #[error(transparent)]
    Validation(#[from] ValidationError),
    /// The change clashes with existing data (duplicate serial, name, address…).
    #[error("{0}")]
    Conflict(String),
    /// The platform refuses a registration: a gateway address that belongs to another tenant,
    /// an address outside the networks that may be polled, a serial without a valid claim.
    /// `REFUSED` with `extensions.field` and `extensions.reason`; the message says what to do
    /// and never whose the gateway or serial is.
    #[error("{message}")]
    Refused {
        /// Stable reason, e.g. `GATEWAY_TAKEN`, `NETWORK_NOT_ALLOWED`, `CLAIM_INVALID`.
        reason: &'static str,
        /// The input field at fault (`host`, `serial`, `claimCode`).
        field: &'static str,
        /// What the caller may read.
        message: String,
    },
    /// Too many attempts; retry after the given number of seconds.
    #[error("too many attempts; try again in {retry_after_s} s")]
    RateLimited {
        /// Seconds until another attempt is allowed.
        retry_after_s: u64,
    },
    /// A subscriber fell so far behind that events were skipped; it must subscribe again
    /// (and may reload what it missed with a query).
    #[error("this subscription fell {missed} events behind and was ended; subscribe again")]
    SlowConsumer {
        /// Events it missed.
        missed: u64,
    },
    /// The request is larger than the server accepts (a body, a batch, a WebSocket
    /// message); `field` names what was too large.
    #[error("{field} too large: {reason}")]
    TooLarge {
        /// What was too large (`body`, `batch`, …).
        field: &'static str,
        /// The limit it broke, for the person reading the error.
        reason: String,
    },
    /// A dependency (database, broker) is not reachable right now.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an unexpected failure; details are in the server log only.
    #[error("internal error: {0}")]
    Internal(String),
}

/// Result of a use case.
pub type AppResult<T> = Result<T, AppError>;

impl AppError {
    /// The `extensions.code` clients switch on.
    pub fn code(&self) -> &'static str {
        match self {
            AppError::NotFound(_) => "NOT_FOUND",
            AppError::Unauthenticated(_) => "UNAUTHENTICATED",
            AppError::Forbidden(_) | AppError::Reauthenticate(_) | AppError::StepUp(_) | AppError::NotHeld { .. } => {
                "FORBIDDEN"
            }
            AppError::Validation(_) => "VALIDATION",
            AppError::Conflict(_) => "CONFLICT",
            AppError::Refused { .. } => "REFUSED",
            AppError::RateLimited { .. } => "RATE_LIMITED",
            AppError::SlowConsumer { .. } => "SLOW_CONSUMER",
            AppError::TooLarge { .. } => "TOO_LARGE",
            AppError::Unavailable(_) => "UNAVAILABLE",
            AppError::Internal(_) => "INTERNAL",
        }
    }

    /// A validation error on `field`.
    pub fn invalid(field: &str, reason: impl std::fmt::Display) -> Self {
        AppError::Validation(ValidationError::new(field, reason))
    }
}

impl From<sea_orm::DbErr> for AppError {
    fn from(err: sea_orm::DbErr) -> Self {
        use sea_orm::SqlErr;
        match err.sql_err() {
            // Unique constraints are the race-free guard for "already exists"; callers that can
            // say *what* clashed map it themselves before it gets here.
            Some(SqlErr::UniqueConstraintViolation(_)) => AppError::Conflict("already exists".into()),
            Some(SqlErr::ForeignKeyConstraintViolation(_)) => {
                AppError::Conflict("still referenced by other records".into())
            }
            _ => match err {
                sea_orm::DbErr::ConnectionAcquire(e) => AppError::Unavailable(format!("database unavailable: {e}")),
                sea_orm::DbErr::Conn(e) => AppError::Unavailable(format!("database unavailable: {e}")),
                other => AppError::Internal(other.to_string()),
            },
        }
    }
}

/// An [`AppError`] on its way to a GraphQL client. It deliberately has no `Display`, so the
/// blanket `From<Display>` conversion of async-graphql (which would drop the code) cannot
/// apply: every resolver error goes through the mapping below.
pub struct ApiError(pub AppError);

impl From<AppError> for ApiError {
    fn from(err: AppError) -> Self {
        ApiError(err)
    }
}

impl From<ValidationError> for ApiError {
    fn from(err: ValidationError) -> Self {
        ApiError(AppError::Validation(err))
    }
}

impl From<ApiError> for async_graphql::Error {
    fn from(ApiError(err): ApiError) -> Self {
        use async_graphql::ErrorExtensions;
        let message = match &err {
            AppError::Internal(detail) => {
                let incident = uuid::Uuid::now_v7();
                tracing::error!(%incident, %detail, "internal error");
                format!("internal error (incident {incident}); the details are in the server log")
            }
            AppError::Unavailable(detail) => {
                tracing::warn!(%detail, "dependency unavailable");
                "a backing service is unavailable; try again shortly".to_owned()
            }
            other => other.to_string(),
        };
        let code = err.code();
        let e = async_graphql::Error::new(message).extend_with(|_, ext| ext.set("code", code));
        match err {
            AppError::Validation(v) => e.extend_with(|_, ext| ext.set("field", v.field.clone())),
            AppError::Reauthenticate(_) => e.extend_with(|_, ext| ext.set("field", "password")),
            AppError::StepUp(_) => e.extend_with(|_, ext| ext.set("field", "stepUpToken")),
            AppError::TooLarge { field, .. } => e.extend_with(|_, ext| ext.set("field", field)),
            AppError::NotHeld { field, .. } => e.extend_with(|_, ext| ext.set("field", field)),
            AppError::RateLimited { retry_after_s } => e.extend_with(|_, ext| ext.set("retryAfter", retry_after_s)),
            AppError::Refused { reason, field, .. } => e.extend_with(|_, ext| {
                ext.set("field", field);
                ext.set("reason", reason);
            }),
            _ => e,
        }
    }
}
