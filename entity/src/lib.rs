//! SeaORM models of the Sparkwatch store: one module per table, no rules, no API types.
//!
//! The schema itself is owned by `sparkwatch-migration`; keep both in step. Columns are
//! documented there, so the generated models are exempt from `missing_docs`.

#![allow(missing_docs)]

pub mod api_key;
pub mod attachment;
pub mod check_in;
pub mod check_in_hazard;
pub mod checkpoint;
pub mod command;
pub mod dead_letter;
pub mod detector;
pub mod device;
pub mod device_credential;
pub mod episode;
pub mod event;
pub mod field_operation;
pub mod gateway_owner;
pub mod hazard;
pub mod hazard_transition;
pub mod notification;
pub mod notification_preference;
pub mod operation_log;
pub mod patrol_plan;
pub mod patrol_plan_assignee;
pub mod patrol_plan_checkpoint;
pub mod patrol_task;
pub mod project;
pub mod push_token;
pub mod reading;
pub mod reading_rollup;
pub mod refresh_token;
pub mod reminder;
pub mod role;
pub mod serial_claim;
pub mod tenant;
pub mod threshold;
pub mod user;
pub mod user_project_scope;
pub mod work_order;
pub mod work_order_transition;
