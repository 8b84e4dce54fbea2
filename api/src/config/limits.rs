//! Limits and exposure of the HTTP server (the `[limits]` table in the file): request and
//! connection caps, WebSocket connections per user, where `/metrics` is served and who may
//! read it, and how long dead letters are kept. Issue 16; README "Limits".

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

use super::{ConfigError, Secret, bad, parse_addr};
use crate::http::HttpLimits;

/// Raw limit settings; all optional until resolved.
#[derive(Debug, Default, Clone, PartialEq, Eq, Args, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[command(next_help_heading = "Limits and exposure")]
pub struct LimitSettings {
    /// Largest `POST /graphql` body in bytes; larger ones get 413 [default: 1048576, 1 MiB].
    #[arg(long, global = true, env = "SPARKWATCH_GRAPHQL_BODY_MAX_BYTES")]
    pub graphql_body_max_bytes: Option<usize>,
    /// Most operations in one batched `POST /graphql` [default: 20].
    #[arg(long, global = true, env = "SPARKWATCH_GRAPHQL_BATCH_MAX")]
    pub graphql_batch_max: Option<usize>,
    /// Seconds a request may take, reading its body included; 408 after [default: 30].
    #[arg(long, global = true, env = "SPARKWATCH_REQUEST_TIMEOUT_S")]
    pub request_timeout_s: Option<u64>,
    /// Seconds a connection may go without a request: to send a request head, and between
    /// keep-alive requests; then it is closed (slowloris, idle sockets) [default: 10].
    #[arg(long, global = true, env = "SPARKWATCH_HEADER_READ_TIMEOUT_S")]
    pub header_read_timeout_s: Option<u64>,
    /// HTTP connections (WebSockets included) open at once [default: 20000].
    #[arg(long, global = true, env = "SPARKWATCH_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// HTTP connections open at once from one peer address [default: 256].
    #[arg(long, global = true, env = "SPARKWATCH_MAX_CONNECTIONS_PER_ADDRESS")]
    pub max_connections_per_address: Option<usize>,
    /// WebSocket connections one user or API key may hold open [default: 32].
    #[arg(long, global = true, env = "SPARKWATCH_WS_MAX_PER_USER")]
    pub ws_max_per_user: Option<usize>,
    /// Serve `/metrics` on this address instead of the API's (e.g. 127.0.0.1:9090).
    #[arg(long, global = true, env = "SPARKWATCH_METRICS_LISTEN")]
    pub metrics_listen: Option<String>,
    /// Bearer token `/metrics` asks for (≥ 16 characters) [default: none, open].
    #[arg(long, global = true, env = "SPARKWATCH_METRICS_TOKEN", hide_env_values = true)]
    pub metrics_token: Option<String>,
    /// Days rejected device input (dead letters) is kept [default: 30; 0 = forever].
    #[arg(long, global = true, env = "SPARKWATCH_DEAD_LETTER_RETENTION_DAYS")]
    pub dead_letter_retention_days: Option<u32>,
}

impl LimitSettings {
    /// Each value from `self`, else from `file`.
    pub(super) fn or(self, file: LimitSettings) -> LimitSettings {
        LimitSettings {
            graphql_body_max_bytes: self.graphql_body_max_bytes.or(file.graphql_body_max_bytes),
            graphql_batch_max: self.graphql_batch_max.or(file.graphql_batch_max),
            request_timeout_s: self.request_timeout_s.or(file.request_timeout_s),
            header_read_timeout_s: self.header_read_timeout_s.or(file.header_read_timeout_s),
            max_connections: self.max_connections.or(file.max_connections),
            max_connections_per_address: self.max_connections_per_address.or(file.max_connections_per_address),
            ws_max_per_user: self.ws_max_per_user.or(file.ws_max_per_user),
            metrics_listen: self.metrics_listen.or(file.metrics_listen),
            metrics_token: self.metrics_token.or(file.metrics_token),
            dead_letter_retention_days: self.dead_letter_retention_days.or(file.dead_letter_retention_days),
        }
    }

    /// Validates and fills defaults.
    pub(super) fn resolve(self) -> Result<ServerLimits, ConfigError> {
        let d = HttpLimits::default();
        let seconds = |s: Option<u64>| s.map(|s| usize::try_from(s).unwrap_or(usize::MAX));
        let within = |flag: &str, v: Option<usize>, default: usize, min: usize, max: usize| match v {
            None => Ok(default),
            Some(n) if (min..=max).contains(&n) => Ok(n),
            Some(_) => Err(bad(flag, format!("must be between {min} and {max}"))),
        };
        let http = HttpLimits {
            graphql_body_max_bytes: within(
                "--graphql-body-max-bytes",
                self.graphql_body_max_bytes,
                d.graphql_body_max_bytes,
                1024,
                64 * 1024 * 1024,
            )?,
            graphql_batch_max: within("--graphql-batch-max", self.graphql_batch_max, d.graphql_batch_max, 1, 1000)?,
            request_timeout: Duration::from_secs(within(
                "--request-timeout-s",
                seconds(self.request_timeout_s),
                30,
                1,
                3600,
            )? as u64),
            header_read_timeout: Duration::from_secs(within(
                "--header-read-timeout-s",
                seconds(self.header_read_timeout_s),
                d.header_read_timeout.as_secs() as usize,
                1,
                3600,
            )? as u64),
            max_connections: within("--max-connections", self.max_connections, d.max_connections, 1, 1_000_000)?,
            max_connections_per_address: within(
                "--max-connections-per-address",
                self.max_connections_per_address,
                d.max_connections_per_address,
                1,
                1_000_000,
            )?,
        };
        let ws_max_per_user = within(
            "--ws-max-per-user",
            self.ws_max_per_user,
            crate::ws::WsLimits::default().max_sockets_per_user,
            1,
            1_000_000,
        )?;
        let metrics_listen = self.metrics_listen.as_deref().map(|a| parse_addr("--metrics-listen", a)).transpose()?;
        let metrics_token = match self.metrics_token {
            Some(t) if t.len() >= 16 => Some(Secret::new(t)),
            Some(_) => return Err(bad("--metrics-token", "must be at least 16 characters")),
            None => None,
        };
        let dead_letter_retention = match self.dead_letter_retention_days.unwrap_or(30) {
            0 => None,
            d if d <= 36_500 => Some(chrono::Duration::days(i64::from(d))),
            _ => return Err(bad("--dead-letter-retention-days", "must be at most 36500; 0 keeps them forever")),
        };
        Ok(ServerLimits { http, ws_max_per_user, metrics_listen, metrics_token, dead_letter_retention })
    }
}

/// Validated limits.
#[derive(Clone, Debug)]
pub struct ServerLimits {
    /// Request and connection limits.
    pub http: HttpLimits,
    /// WebSocket connections per user or API key.
    pub ws_max_per_user: usize,
    /// Separate address of `/metrics`, when configured.
    pub metrics_listen: Option<SocketAddr>,
    /// Bearer token of `/metrics`, when configured.
    pub metrics_token: Option<Secret>,
    /// How long dead letters are kept; `None` = forever.
    pub dead_letter_retention: Option<chrono::Duration>,
}

impl ServerLimits {
    /// The WebSocket limits these settings give.
    pub fn ws(&self) -> crate::ws::WsLimits {
        crate::ws::WsLimits { max_sockets_per_user: self.ws_max_per_user, ..Default::default() }
    }
}
