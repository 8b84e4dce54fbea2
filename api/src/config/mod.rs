//! Configuration: one struct, filled from flags, `SPARKWATCH_*` environment variables and
//! an optional TOML file (in that order of precedence), validated before anything starts.
//!
//! Every message names the flag, its environment variable and what a valid value looks
//! like. Secrets (the JWT secret, passwords inside URLs) never appear in `Debug` output.
//!
//! Layout: [`Cli`] and its commands (in `cli`); [`Settings`] (raw, all optional) with the
//! [`PushSettings`] group (`[push]` table in the file); [`Settings::resolve`] → [`Config`].

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Args;
use serde::Deserialize;

mod cli;
pub mod limits;

pub use cli::{ClaimsCommand, Cli, Command, DevicesCommand, ImportCommand, TenantCommand, UserCommand};

/// Raw settings as given by flags, environment or file; all optional until validated.
#[derive(Debug, Default, Clone, Args, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct Settings {
    /// TOML file with any of these settings (kebab-case keys); flags and environment win.
    #[arg(long, global = true, env = "SPARKWATCH_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// Address the HTTP server binds to [default: 127.0.0.1:8080].
    #[arg(long, global = true, env = "SPARKWATCH_LISTEN")]
    pub listen: Option<String>,
    /// Directory for the SQLite database and generated secrets [default: ./sparkwatch-data].
    #[arg(long, global = true, env = "SPARKWATCH_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// `sqlite://PATH` or `postgres://USER@HOST/DB` [default: SQLite in the data dir].
    #[arg(long, global = true, env = "SPARKWATCH_DATABASE_URL")]
    pub database_url: Option<String>,
    /// `redis://HOST:PORT` for the shared bus and cache of a multi-instance deployment.
    #[arg(long, global = true, env = "SPARKWATCH_REDIS_URL")]
    pub redis_url: Option<String>,
    /// `mqtt://HOST:PORT` of an external broker (Mosquitto, EMQX) instead of the embedded one.
    #[arg(long, global = true, env = "SPARKWATCH_MQTT_URL")]
    pub mqtt_url: Option<String>,
    /// Address of the embedded MQTT broker [default: 127.0.0.1:1883].
    #[arg(long, global = true, env = "SPARKWATCH_MQTT_LISTEN")]
    pub mqtt_listen: Option<String>,
    /// MQTT client id of this instance; keep it stable so the broker keeps its session.
    #[arg(long, global = true, env = "SPARKWATCH_MQTT_CLIENT_ID")]
    pub mqtt_client_id: Option<String>,
    /// Subscribe through the shared-subscription group `sparkwatch` so instances split the load.
    #[arg(long, global = true, env = "SPARKWATCH_MQTT_SHARED")]
    #[serde(default)]
    pub mqtt_shared: bool,
    /// MQTT topic prefix of the device contract [default: sw].
    #[arg(long, global = true, env = "SPARKWATCH_MQTT_PREFIX")]
    pub mqtt_prefix: Option<String>,
    /// Let the embedded broker's plain MQTT listener (`--mqtt-listen`) bind beyond loopback.
    /// Devices send their secrets in clear text there: only for a trusted network.
    #[arg(long, global = true, env = "SPARKWATCH_MQTT_ALLOW_PLAIN")]
    #[serde(default)]
    pub mqtt_allow_plain: bool,
    /// TLS listener of the embedded broker for devices [default: 0.0.0.0:8883 when a certificate is given].
    #[arg(long, global = true, env = "SPARKWATCH_MQTT_TLS_LISTEN")]
    pub mqtt_tls_listen: Option<String>,
    /// PEM certificate chain (leaf first) of the embedded broker's TLS listener.
    #[arg(long, global = true, env = "SPARKWATCH_MQTT_TLS_CERT")]
    pub mqtt_tls_cert: Option<PathBuf>,
    /// PEM private key of the embedded broker's TLS listener.
    #[arg(long, global = true, env = "SPARKWATCH_MQTT_TLS_KEY")]
    pub mqtt_tls_key: Option<PathBuf>,
    /// The external broker is Mosquitto with the dynamic-security plugin and the `--mqtt-url`
    /// account may administer it: Sparkwatch creates one client and role per device.
    #[arg(long, global = true, env = "SPARKWATCH_MQTT_DYNSEC")]
    #[serde(default)]
    pub mqtt_dynsec: bool,
    /// User name of the dynamic-security administrator, when it is not the `--mqtt-url`
    /// account (implies `--mqtt-dynsec`; Sparkwatch then gives the `--mqtt-url` account the
    /// server role, creating it if needed).
    #[arg(long, global = true, env = "SPARKWATCH_MQTT_DYNSEC_ADMIN_USER")]
    pub mqtt_dynsec_admin_user: Option<String>,
    /// Password of `--mqtt-dynsec-admin-user`.
    #[arg(long, global = true, env = "SPARKWATCH_MQTT_DYNSEC_ADMIN_PASSWORD", hide_env_values = true)]
    pub mqtt_dynsec_admin_password: Option<String>,
    /// Shared secret of the EMQX HTTP authentication/authorisation hooks (`POST /mqtt/auth`,
    /// `POST /mqtt/acl`); the hooks are off without it.
    #[arg(long, global = true, env = "SPARKWATCH_MQTT_HOOK_SECRET", hide_env_values = true)]
    pub mqtt_hook_secret: Option<String>,
    /// Networks Modbus gateways may be polled in: comma-separated CIDR networks and addresses,
    /// `any` or `none` [default: any on SQLite (a small site), none on PostgreSQL (hosted)].
    #[arg(long, global = true, env = "SPARKWATCH_MODBUS_ALLOW_NETWORKS")]
    pub modbus_allow_networks: Option<String>,
    /// Devices are registered by serial plus the claim code from their label, checked against
    /// the pool loaded by the platform admin (`claims load`); meant for hosted deployments.
    #[arg(long, global = true, env = "SPARKWATCH_SERIAL_CLAIMING")]
    #[serde(default)]
    pub serial_claiming: bool,
    /// Days raw readings are kept (per-minute/hour/day rollups are kept regardless) [default: 90; 0 = forever].
    #[arg(long, global = true, env = "SPARKWATCH_RAW_RETENTION_DAYS")]
    pub raw_retention_days: Option<u32>,
    /// Secret for signing access tokens (≥ 32 characters) [default: generated into the data dir].
    #[arg(long, global = true, env = "SPARKWATCH_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Lifetime of access tokens in seconds [default: 900].
    #[arg(long, global = true, env = "SPARKWATCH_ACCESS_TOKEN_TTL_S")]
    pub access_token_ttl_s: Option<u64>,
    /// Lifetime of refresh tokens in seconds [default: 2592000, 30 days].
    #[arg(long, global = true, env = "SPARKWATCH_REFRESH_TOKEN_TTL_S")]
    pub refresh_token_ttl_s: Option<u64>,
    /// Remote commands one person or API key may send per minute [default: 10].
    #[arg(long, global = true, env = "SPARKWATCH_COMMANDS_PER_MINUTE")]
    pub commands_per_minute: Option<u32>,
    /// Reverse proxies whose `X-Forwarded-For`/`Forwarded` headers name the client, as
    /// comma-separated addresses or CIDR blocks (e.g. `10.0.0.0/8,127.0.0.1`) [default: none:
    /// the peer address is the client].
    #[arg(long, global = true, env = "SPARKWATCH_TRUSTED_PROXIES")]
    pub trusted_proxies: Option<String>,
    /// The sites' UTC offset, which cuts patrol periods into local days, weeks and months [default: +08:00].
    #[arg(long, global = true, env = "SPARKWATCH_PATROL_UTC_OFFSET")]
    pub patrol_utc_offset: Option<String>,
    /// Where attachments (photos) are stored: `s3://bucket/prefix` for an S3-compatible bucket
    /// (endpoint, region and credentials from the standard `AWS_*` variables, e.g.
    /// AWS_ENDPOINT, AWS_DEFAULT_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
    /// AWS_ALLOW_HTTP) or `file:///dir` [default: the data dir's `attachments` directory].
    #[arg(long, global = true, env = "SPARKWATCH_ATTACHMENTS_URL")]
    pub attachments_url: Option<String>,
    /// Largest attachment accepted by `POST /attachments`, in bytes [default: 10485760, 10 MiB].
    #[arg(long, global = true, env = "SPARKWATCH_ATTACHMENT_MAX_BYTES")]
    pub attachment_max_bytes: Option<u64>,
    /// Push-notification credentials and endpoints (the `[push]` table in the file).
    #[command(flatten)]
    #[serde(default)]
    pub push: PushSettings,
    /// Request and connection limits, `/metrics` exposure, dead-letter retention (the
    /// `[limits]` table in the file).
    #[command(flatten)]
    #[serde(default)]
    pub limits: limits::LimitSettings,
}

/// Push notifications: FCM HTTP v1 for Android, APNs for iOS. A platform without
/// credentials is in log-only mode (notifications are logged, not sent). The key files are
/// read and checked at start-up; their contents are never printed.
#[derive(Debug, Default, Clone, PartialEq, Eq, Args, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
#[command(next_help_heading = "Push notifications")]
pub struct PushSettings {
    /// Firebase service-account key (JSON with project_id, client_email, private_key,
    /// token_uri) allowed to send through FCM; without it Android pushes are only logged.
    #[arg(long, global = true, env = "SPARKWATCH_FCM_CREDENTIALS")]
    pub fcm_credentials: Option<PathBuf>,
    /// OAuth2 token endpoint for FCM [default: the key file's token_uri].
    #[arg(long, global = true, env = "SPARKWATCH_FCM_TOKEN_URL")]
    pub fcm_token_url: Option<String>,
    /// FCM API base URL [default: https://fcm.googleapis.com].
    #[arg(long, global = true, env = "SPARKWATCH_FCM_BASE_URL")]
    pub fcm_base_url: Option<String>,
    /// APNs authentication key (.p8, token-based auth); without it iOS pushes are only logged.
    #[arg(long, global = true, env = "SPARKWATCH_APNS_KEY_FILE")]
    pub apns_key_file: Option<PathBuf>,
    /// Key ID of the .p8 key (10 characters, shown next to the key at developer.apple.com).
    #[arg(long, global = true, env = "SPARKWATCH_APNS_KEY_ID")]
    pub apns_key_id: Option<String>,
    /// Apple developer Team ID the key belongs to (10 characters).
    #[arg(long, global = true, env = "SPARKWATCH_APNS_TEAM_ID")]
    pub apns_team_id: Option<String>,
    /// APNs base URL [default: https://api.push.apple.com; development builds of the app
    /// need https://api.sandbox.push.apple.com].
    #[arg(long, global = true, env = "SPARKWATCH_APNS_BASE_URL")]
    pub apns_base_url: Option<String>,
}

impl PushSettings {
    /// Each value from `self`, else from `file`.
    fn or(self, file: PushSettings) -> PushSettings {
        PushSettings {
            fcm_credentials: self.fcm_credentials.or(file.fcm_credentials),
            fcm_token_url: self.fcm_token_url.or(file.fcm_token_url),
            fcm_base_url: self.fcm_base_url.or(file.fcm_base_url),
            apns_key_file: self.apns_key_file.or(file.apns_key_file),
            apns_key_id: self.apns_key_id.or(file.apns_key_id),
            apns_team_id: self.apns_team_id.or(file.apns_team_id),
            apns_base_url: self.apns_base_url.or(file.apns_base_url),
        }
    }
}

/// A secret string that prints as `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    /// The secret itself; call only where it is used.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// Where MQTT traffic comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Broker {
    /// Run the embedded broker on this address.
    Embedded(SocketAddr),
    /// Use an external broker at this URL.
    External(String),
}

/// The embedded broker's TLS listener for devices.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MqttTls {
    /// Where it listens.
    pub listen: SocketAddr,
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// Validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Database URL (printed with its password removed).
    pub database_url: Secret,
    /// Redis URL, when configured.
    pub redis_url: Option<Secret>,
    /// MQTT broker.
    pub broker: Broker,
    /// MQTT client id.
    pub mqtt_client_id: String,
    /// Shared-subscription group, when enabled.
    pub mqtt_shared_group: Option<String>,
    /// Topic prefix.
    pub mqtt_prefix: String,
    /// TLS listener of the embedded broker, when configured.
    pub mqtt_tls: Option<MqttTls>,
    /// Provision device accounts in Mosquitto's dynamic-security plugin.
    pub mqtt_dynsec: bool,
    /// The dynamic-security administrator's login, when not the `--mqtt-url` account.
    pub mqtt_dynsec_admin: Option<(String, Secret)>,
    /// Shared secret of the EMQX hooks, when enabled.
    pub mqtt_hook_secret: Option<Secret>,
    /// Where Modbus gateways may be (registration and every poller connection).
    pub modbus_allow_networks: crate::ingest::modbus::network::AllowedNetworks,
    /// Whether the configuration chose the networks (a demo on PostgreSQL adds loopback
    /// only when it did not).
    pub modbus_allow_networks_set: bool,
    /// Register devices by serial plus claim code only.
    pub serial_claiming: bool,
    /// How long raw readings are kept.
    pub raw_retention: Option<chrono::Duration>,
    /// Access-token signing secret.
    pub jwt_secret: Secret,
    /// Access-token lifetime.
    pub access_token_ttl: Duration,
    /// Refresh-token lifetime.
    pub refresh_token_ttl: Duration,
    /// Remote commands per caller per minute.
    pub commands_per_minute: std::num::NonZeroU32,
    /// Proxies trusted to name the client in `X-Forwarded-For`/`Forwarded`.
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// The sites' UTC offset (patrol periods are local days, weeks and months).
    pub patrol_utc_offset: chrono::FixedOffset,
    /// Attachment storage URL; `None` = `<data dir>/attachments` (see [`crate::objects`]).
    pub attachments_url: Option<String>,
    /// Largest attachment accepted, in bytes.
    pub attachment_max_bytes: u64,
    /// Push settings; the key files named there were readable and valid at start-up.
    /// Build the clients with [`crate::push::Push::from_settings`].
    pub push: PushSettings,
    /// Request and connection limits, `/metrics` exposure, dead-letter retention.
    pub limits: limits::ServerLimits,
}

/// A configuration problem, phrased for the person starting the server.
#[derive(Debug, thiserror::Error)]
#[error("configuration: {0}")]
pub struct ConfigError(pub String);

pub(crate) fn bad(flag: &str, msg: impl fmt::Display) -> ConfigError {
    let env = format!("SPARKWATCH_{}", flag.trim_start_matches("--").replace('-', "_").to_uppercase());
    ConfigError(format!("{flag} ({env}): {msg}"))
}

impl Settings {
    /// Fills unset values from the TOML file named by `--config`, if any.
    pub fn with_file(self) -> Result<Settings, ConfigError> {
        let Some(path) = self.config.clone() else { return Ok(self) };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| bad("--config", format!("cannot read {}: {e}", path.display())))?;
        let file: Settings =
            toml::from_str(&text).map_err(|e| bad("--config", format!("{} is not valid: {e}", path.display())))?;
        Ok(Settings {
            config: self.config,
            listen: self.listen.or(file.listen),
            data_dir: self.data_dir.or(file.data_dir),
            database_url: self.database_url.or(file.database_url),
            redis_url: self.redis_url.or(file.redis_url),
            mqtt_url: self.mqtt_url.or(file.mqtt_url),
            mqtt_listen: self.mqtt_listen.or(file.mqtt_listen),
            mqtt_client_id: self.mqtt_client_id.or(file.mqtt_client_id),
            mqtt_shared: self.mqtt_shared || file.mqtt_shared,
            mqtt_prefix: self.mqtt_prefix.or(file.mqtt_prefix),
            mqtt_allow_plain: self.mqtt_allow_plain || file.mqtt_allow_plain,
            mqtt_tls_listen: self.mqtt_tls_listen.or(file.mqtt_tls_listen),
            mqtt_tls_cert: self.mqtt_tls_cert.or(file.mqtt_tls_cert),
            mqtt_tls_key: self.mqtt_tls_key.or(file.mqtt_tls_key),
            mqtt_dynsec: self.mqtt_dynsec || file.mqtt_dynsec,
            mqtt_dynsec_admin_user: self.mqtt_dynsec_admin_user.or(file.mqtt_dynsec_admin_user),
            mqtt_dynsec_admin_password: self.mqtt_dynsec_admin_password.or(file.mqtt_dynsec_admin_password),
            mqtt_hook_secret: self.mqtt_hook_secret.or(file.mqtt_hook_secret),
            modbus_allow_networks: self.modbus_allow_networks.or(file.modbus_allow_networks),
            serial_claiming: self.serial_claiming || file.serial_claiming,
            raw_retention_days: self.raw_retention_days.or(file.raw_retention_days),
            jwt_secret: self.jwt_secret.or(file.jwt_secret),
            access_token_ttl_s: self.access_token_ttl_s.or(file.access_token_ttl_s),
            refresh_token_ttl_s: self.refresh_token_ttl_s.or(file.refresh_token_ttl_s),
            commands_per_minute: self.commands_per_minute.or(file.commands_per_minute),
            trusted_proxies: self.trusted_proxies.or(file.trusted_proxies),
            patrol_utc_offset: self.patrol_utc_offset.or(file.patrol_utc_offset),
            attachments_url: self.attachments_url.or(file.attachments_url),
            attachment_max_bytes: self.attachment_max_bytes.or(file.attachment_max_bytes),
            push: self.push.or(file.push),
            limits: self.limits.or(file.limits),
        })
    }

    /// Validates everything and resolves defaults. Creates the data directory and, when no
    /// JWT secret is given, generates one there (kept across restarts so sessions survive).
    pub fn resolve(self) -> Result<Config, ConfigError> {
        let s = self.with_file()?;
        let listen = parse_addr("--listen", s.listen.as_deref().unwrap_or("127.0.0.1:8080"))?;
        let data_dir = s.data_dir.unwrap_or_else(|| PathBuf::from("sparkwatch-data"));
        create_private_dir(&data_dir)?;

        let database_url = match s.database_url {
            Some(url)
                if url.starts_with("sqlite:") || url.starts_with("postgres://") || url.starts_with("postgresql://") =>
            {
                url
            }
            Some(_) => {
                return Err(bad(
                    "--database-url",
                    "must start with sqlite: or postgres://, e.g. postgres://sparkwatch@127.0.0.1/sparkwatch",
                ));
            }
            None => format!("sqlite://{}?mode=rwc", data_dir.join("sparkwatch.db").display()),
        };
        let redis_url = match s.redis_url {
            Some(url) if url.starts_with("redis://") || url.starts_with("rediss://") => Some(Secret(url)),
            Some(_) => return Err(bad("--redis-url", "must look like redis://127.0.0.1:6379")),
            None => None,
        };
        let broker = match (s.mqtt_url, s.mqtt_listen) {
            (Some(_), Some(_)) => {
                return Err(bad(
                    "--mqtt-url",
                    "give either --mqtt-url (external broker) or --mqtt-listen (embedded broker), not both",
                ));
            }
            (Some(url), None) => {
                let rest = url
                    .strip_prefix("mqtt://")
                    .or_else(|| url.strip_prefix("mqtts://"))
                    .ok_or_else(|| bad("--mqtt-url", "must look like mqtt://127.0.0.1:1883"))?;
                let hostport = rest.rsplit('@').next().unwrap_or(rest).trim_end_matches('/');
                if hostport.rsplit_once(':').is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err()) {
                    return Err(bad("--mqtt-url", "must name a host and port, e.g. mqtt://127.0.0.1:1883"));
                }
                Broker::External(url)
            }
            (None, listen) => {
                Broker::Embedded(parse_addr("--mqtt-listen", listen.as_deref().unwrap_or("127.0.0.1:1883"))?)
            }
        };
        let mqtt_tls = match (s.mqtt_tls_cert, s.mqtt_tls_key, &broker) {
            (None, None, _) => None,
            (Some(_), Some(_), Broker::External(_)) => {
                return Err(bad(
                    "--mqtt-tls-cert",
                    "TLS for devices is set up in the external broker; --mqtt-tls-cert/--mqtt-tls-key are for the \
                     embedded one",
                ));
            }
            (Some(cert), Some(key), Broker::Embedded(_)) => Some(MqttTls {
                listen: parse_addr("--mqtt-tls-listen", s.mqtt_tls_listen.as_deref().unwrap_or("0.0.0.0:8883"))?,
                cert,
                key,
            }),
            (Some(_), None, _) => return Err(bad("--mqtt-tls-key", "is needed with --mqtt-tls-cert")),
            (None, Some(_), _) => return Err(bad("--mqtt-tls-cert", "is needed with --mqtt-tls-key")),
        };
        if let Broker::Embedded(addr) = &broker
            && !addr.ip().is_loopback()
            && !s.mqtt_allow_plain
        {
            return Err(bad(
                "--mqtt-listen",
                "a plain MQTT listener beyond loopback sends device secrets in clear text; give devices the TLS \
                 listener (--mqtt-tls-cert, --mqtt-tls-key) and keep --mqtt-listen on 127.0.0.1, or pass \
                 --mqtt-allow-plain for a trusted network",
            ));
        }
        let mqtt_dynsec_admin = match (s.mqtt_dynsec_admin_user, s.mqtt_dynsec_admin_password) {
            (Some(u), Some(p)) if !u.is_empty() && !p.is_empty() => Some((u, Secret(p))),
            (Some(_), Some(_)) => return Err(bad("--mqtt-dynsec-admin-user", "and its password must not be empty")),
            (Some(_), None) => {
                return Err(bad("--mqtt-dynsec-admin-password", "is needed with --mqtt-dynsec-admin-user"));
            }
            (None, Some(_)) => {
                return Err(bad("--mqtt-dynsec-admin-user", "is needed with --mqtt-dynsec-admin-password"));
            }
            (None, None) => None,
        };
        let mqtt_dynsec = s.mqtt_dynsec || mqtt_dynsec_admin.is_some();
        if mqtt_dynsec && !matches!(broker, Broker::External(_)) {
            return Err(bad("--mqtt-dynsec", "needs --mqtt-url: it provisions an external Mosquitto"));
        }
        let mqtt_hook_secret = match s.mqtt_hook_secret {
            Some(secret) if secret.len() >= 32 => Some(Secret(secret)),
            Some(_) => return Err(bad("--mqtt-hook-secret", "must be at least 32 characters")),
            None => None,
        };
        let mqtt_client_id = s.mqtt_client_id.unwrap_or_else(|| "sparkwatch".to_owned());
        if mqtt_client_id.is_empty() || mqtt_client_id.len() > 64 || mqtt_client_id.contains(['/', '+', '#']) {
            return Err(bad("--mqtt-client-id", "must be 1–64 characters without '/', '+' or '#'"));
        }
        let mqtt_prefix = s.mqtt_prefix.unwrap_or_else(|| "sw".to_owned());
        if mqtt_prefix.is_empty() || mqtt_prefix.contains(['+', '#']) || mqtt_prefix.ends_with('/') {
            return Err(bad("--mqtt-prefix", "must be a topic level like `sw`, without wildcards or a trailing '/'"));
        }
        let jwt_secret = match s.jwt_secret {
            Some(secret) if secret.len() >= 32 => Secret(secret),
            Some(_) => {
                return Err(bad("--jwt-secret", "must be at least 32 characters; or omit it to have one generated"));
            }
            None => load_or_create_secret(&data_dir.join("jwt-secret"))?,
        };
        let access_token_ttl = ttl("--access-token-ttl-s", s.access_token_ttl_s.unwrap_or(900), 30, 86_400)?;
        let refresh_token_ttl =
            ttl("--refresh-token-ttl-s", s.refresh_token_ttl_s.unwrap_or(30 * 86_400), 300, 366 * 86_400)?;
        let commands_per_minute = s
            .commands_per_minute
            .unwrap_or(sparkwatch_domain::command::COMMANDS_PER_MINUTE)
            .try_into()
            .map_err(|_| bad("--commands-per-minute", "must be at least 1"))?;
        let trusted_proxies = parse_proxies(s.trusted_proxies.as_deref().unwrap_or(""))?;
        let attachments_url = match s.attachments_url {
            Some(url) if (url.starts_with("s3://") && url.len() > 5) || url.starts_with("file:///") => Some(url),
            Some(_) => return Err(bad("--attachments-url", "must look like s3://bucket/prefix or file:///directory")),
            None => None,
        };
        let attachment_max_bytes = match s.attachment_max_bytes.unwrap_or(10 * 1024 * 1024) {
            n @ 1024..=1_073_741_824 => n,
            _ => return Err(bad("--attachment-max-bytes", "must be between 1024 and 1073741824 (1 GiB)")),
        };
        let modbus_allow_networks = match &s.modbus_allow_networks {
            Some(list) => crate::ingest::modbus::network::AllowedNetworks::parse(list).map_err(|e| {
                bad("--modbus-allow-networks", format!("{e}; give e.g. 10.20.0.0/16,192.168.1.10, any or none"))
            })?,
            // A small site polls its own LAN; a hosted platform must not poll its own
            // network on a tenant's behalf until the operator says which networks are sites.
            None if database_url.starts_with("sqlite:") => crate::ingest::modbus::network::AllowedNetworks::any(),
            None => crate::ingest::modbus::network::AllowedNetworks::none(),
        };
        // Checked here, not when the first alarm is pushed: a bad key must stop the start.
        crate::push::check_settings(&s.push)?;
        let limits = s.limits.resolve()?;
        Ok(Config {
            listen,
            data_dir,
            database_url: Secret(database_url),
            redis_url,
            broker,
            mqtt_client_id,
            mqtt_shared_group: s.mqtt_shared.then(|| "sparkwatch".to_owned()),
            mqtt_prefix,
            mqtt_tls,
            mqtt_dynsec,
            mqtt_dynsec_admin,
            mqtt_hook_secret,
            modbus_allow_networks,
            modbus_allow_networks_set: s.modbus_allow_networks.is_some(),
            serial_claiming: s.serial_claiming,
            raw_retention: match s.raw_retention_days.unwrap_or(90) {
                0 => None,
                d if d <= 36_500 => Some(chrono::Duration::days(i64::from(d))),
                _ => {
                    return Err(bad(
                        "--raw-retention-days",
                        "must be at most 36500 (100 years); 0 keeps readings forever",
                    ));
                }
            },
            jwt_secret,
            access_token_ttl,
            refresh_token_ttl,
            commands_per_minute,
            trusted_proxies,
            patrol_utc_offset: parse_offset(s.patrol_utc_offset.as_deref().unwrap_or("+08:00"))?,
            attachments_url,
            attachment_max_bytes,
            push: s.push,
            limits,
        })
    }
}

/// Creates the data directory readable by its owner only (0700): it holds the database,
/// the generated JWT secret and the attachments. An existing directory keeps its mode.
fn create_private_dir(dir: &Path) -> Result<(), ConfigError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir).map_err(|e| bad("--data-dir", format!("cannot create {}: {e}", dir.display())))
}

fn parse_addr(flag: &str, value: &str) -> Result<SocketAddr, ConfigError> {
    value.parse().map_err(|_| bad(flag, format!("`{value}` is not an address like 127.0.0.1:8080")))
}

/// `10.0.0.0/8, 127.0.0.1` → networks; a bare address is a network of one.
fn parse_proxies(value: &str) -> Result<Vec<ipnet::IpNet>, ConfigError> {
    value
        .split(',')
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|v| {
            v.parse::<ipnet::IpNet>()
                .or_else(|_| v.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| bad("--trusted-proxies", format!("`{v}` is neither an address nor a CIDR block")))
        })
        .collect()
}

fn parse_offset(value: &str) -> Result<chrono::FixedOffset, ConfigError> {
    let bad_offset = || bad("--patrol-utc-offset", format!("`{value}` is not a UTC offset like +08:00 or -05:30"));
    let (sign, rest) = match value.trim().split_at_checked(1) {
        Some(("+", rest)) => (1, rest),
        Some(("-", rest)) => (-1, rest),
        _ => return Err(bad_offset()),
    };
    let (h, m) = rest.split_once(':').ok_or_else(bad_offset)?;
    let (h, m): (i32, i32) = (h.parse().map_err(|_| bad_offset())?, m.parse().map_err(|_| bad_offset())?);
    if !(0..=14).contains(&h) || !(0..60).contains(&m) {
        return Err(bad_offset());
    }
    chrono::FixedOffset::east_opt(sign * (h * 3600 + m * 60)).ok_or_else(bad_offset)
}

fn ttl(flag: &str, secs: u64, min: u64, max: u64) -> Result<Duration, ConfigError> {
    if (min..=max).contains(&secs) {
        Ok(Duration::from_secs(secs))
    } else {
        Err(bad(flag, format!("must be between {min} and {max} seconds")))
    }
}

fn load_or_create_secret(path: &Path) -> Result<Secret, ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(s) if s.trim().len() >= 32 => Ok(Secret(s.trim().to_owned())),
        Ok(_) => Err(bad(
            "--jwt-secret",
            format!("{} is shorter than 32 characters; delete it to regenerate", path.display()),
        )),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let secret = crate::auth::token::random_token(48);
            write_private(path, &secret)
                .map_err(|e| bad("--data-dir", format!("cannot write {}: {e}", path.display())))?;
            tracing::info!(path = %path.display(), "generated a new JWT signing secret");
            Ok(Secret(secret))
        }
        Err(e) => Err(bad("--jwt-secret", format!("cannot read {}: {e}", path.display()))),
    }
}

fn write_private(path: &Path, content: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    options.open(path)?.write_all(content.as_bytes())
}

impl Config {
    /// The database URL with any password replaced, for logs.
    pub fn database_url_for_log(&self) -> String {
        redact_url(self.database_url.expose())
    }
}

/// Replaces the password in `scheme://user:password@host` with `***`.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://")
        && let Some((userinfo, host)) = rest.split_once('@')
        && let Some((user, _)) = userinfo.split_once(':')
    {
        return format!("{scheme}://{user}:***@{host}");
    }
    url.to_owned()
}

#[cfg(test)]
mod tests;
