//! SeaORM models of the Sparkwatch store: one module per table, no rules, no API types.
//!
//! The schema itself is owned by `sparkwatch-migration`; keep both in step. Columns are
//! documented there, so the generated models are exempt from `missing_docs`.

#![allow(missing_docs)]

pub mod api_key;
pub mod command;
pub mod dead_letter;
pub mod detector;
pub mod device;
pub mod episode;
pub mod event;
pub mod hazard;
pub mod hazard_transition;
pub mod notification;
pub mod notification_preference;
pub mod operation_log;
pub mod project;
pub mod push_token;
pub mod reading;
pub mod reading_rollup;
pub mod refresh_token;
pub mod reminder;
pub mod role;
pub mod tenant;
pub mod threshold;
pub mod user;
pub mod user_project_scope;
