//! SeaORM models of the Sparkwatch store: one module per table, no rules, no API types.
//!
//! The schema itself is owned by `sparkwatch-migration`; keep both in step. Columns are
//! documented there, so the generated models are exempt from `missing_docs`.

#![allow(missing_docs)]

pub mod tenant;
pub mod role;
pub mod user;
pub mod user_project_scope;
pub mod project;
pub mod device;
pub mod detector;
pub mod threshold;
pub mod refresh_token;
pub mod api_key;
pub mod operation_log;
