//! The command line: [`Cli`], its commands and their subcommands.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use super::Settings;

/// Sparkwatch — electrical-fire early warning: detectors in, hazards out.
#[derive(Debug, Parser)]
#[command(name = "sparkwatch", version, about, long_about = None)]
pub struct Cli {
    /// Settings shared by every command.
    #[command(flatten)]
    pub settings: Settings,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The commands of the `sparkwatch` binary.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server (GraphQL API, explorer, health and metrics endpoints).
    Serve {
        /// Seed the demo tenants once and say loudly that demo passwords are in use.
        #[arg(long, env = "SPARKWATCH_DEMO")]
        demo: bool,
    },
    /// Apply database migrations and exit.
    Migrate,
    /// Print the GraphQL schema (SDL) to standard output.
    PrintSchema,
    /// Manage users.
    #[command(subcommand)]
    User(UserCommand),
    /// Manage tenants.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Bulk-import data.
    #[command(subcommand)]
    Import(ImportCommand),
    /// Manage devices.
    #[command(subcommand)]
    Devices(DevicesCommand),
    /// Manage the serial claim pool (`--serial-claiming`).
    #[command(subcommand)]
    Claims(ClaimsCommand),
    /// Run simulated devices against the broker (`--mqtt-url`, or the embedded broker's
    /// `--mqtt-listen` address).
    Simulate {
        /// Number of simulated MQTT devices (serials SIM-0001, SIM-0002, …).
        #[arg(long, default_value_t = 10)]
        devices: u32,
        /// Detectors per device.
        #[arg(long, default_value_t = 2)]
        detectors: u8,
        /// normal, leak-creep, overheat, sensor-open, offline, flapping, malformed — or `mixed`.
        #[arg(long, default_value = "mixed")]
        scenario: String,
        /// Seconds between messages of one device.
        #[arg(long, default_value_t = 5)]
        interval_s: u64,
        /// Register the simulated devices in this tenant first (project "Simulated site").
        #[arg(long)]
        tenant: Option<String>,
        /// Also run a simulated Modbus TCP gateway (register map of the device contract) on
        /// this address, with one unit per detector; with `--tenant` it is registered as SIM-GW-1.
        #[arg(long)]
        modbus_listen: Option<std::net::SocketAddr>,
    },
}

/// `sparkwatch user …`
#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Create a user. The password is read from SPARKWATCH_USER_PASSWORD or standard input.
    Create {
        /// E-mail address used to sign in.
        #[arg(long)]
        email: Option<String>,
        /// Phone number used to sign in.
        #[arg(long)]
        phone: Option<String>,
        /// Display name (defaults to the e-mail or phone).
        #[arg(long)]
        name: Option<String>,
        /// Tenant name; omit only for platform admins.
        #[arg(long)]
        tenant: Option<String>,
        /// Built-in role: platform_admin, tenant_admin, manager, electrician or viewer.
        #[arg(long, default_value = "tenant_admin")]
        role: String,
        /// Locale for notifications: zh-CN or en.
        #[arg(long, default_value = "zh-CN")]
        locale: String,
    },
}

/// `sparkwatch tenant …`
#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant.
    Create {
        /// The tenant's name, unique on the platform.
        name: String,
    },
}

/// `sparkwatch import …`
#[derive(Debug, Subcommand)]
pub enum ImportCommand {
    /// Onboard devices and their detectors from a CSV export (one row per detector).
    /// Either every row is imported or none is.
    Devices {
        /// The CSV file.
        file: PathBuf,
        /// The tenant the devices belong to.
        #[arg(long)]
        tenant: String,
        /// Issue MQTT credentials for the imported MQTT devices and write them to this new
        /// CSV file (`serial,username,password,issued_at`, readable by the owner only).
        #[arg(long)]
        credentials_out: Option<PathBuf>,
    },
}

/// `sparkwatch claims …`
#[derive(Debug, Subcommand)]
pub enum ClaimsCommand {
    /// Load a manufacturer's list of serials and claim codes (CSV with the header
    /// `serial,claim_code`) into the pool; only a digest of each code is stored, and a
    /// serial already in the pool gets the new code.
    Load {
        /// The CSV file.
        file: PathBuf,
    },
}

/// `sparkwatch devices …`
#[derive(Debug, Subcommand)]
pub enum DevicesCommand {
    /// Issue (or rotate) MQTT credentials of existing devices and write them to a new CSV
    /// file (`serial,username,password,issued_at`, readable by the owner only). Devices
    /// registered before device identity existed need this once before they can connect.
    Credentials {
        /// The tenant the devices belong to.
        #[arg(long)]
        tenant: String,
        /// A device serial; repeat for several. Issuing again rotates the secret.
        #[arg(long = "serial")]
        serials: Vec<String>,
        /// Every MQTT device of the tenant that has no credentials yet.
        #[arg(long, conflicts_with = "serials")]
        without_credentials: bool,
        /// The CSV file to create.
        #[arg(long)]
        out: PathBuf,
    },
}
