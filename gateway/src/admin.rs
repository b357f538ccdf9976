//! `liandong-gateway admin …`: the operators' command line over the
//! `liandong.v1.Operations` service, with an operator certificate.
//!
//! Tables for people, `--json` for scripts. Exit codes: 0 done; 64 bad
//! usage or unreadable certificate files; 65 `audit-verify` found a
//! problem; 69 the gateway cannot be reached or is unavailable; 77 the
//! certificate is not an operator's (`PERMISSION_DENIED`,
//! `UNAUTHENTICATED`); 1 anything else the gateway refused (its status
//! and message are printed).
//!
//! - [`view`]: `status`, `agencies`, `subscriptions`, `breaches`,
//!   `audit-verify`.
//! - [`control`]: `disable`, `enable`, `seek`.
//! - [`output`]: tables, times and sizes for people; proto3 JSON.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use tonic::transport::Channel;

use liandong_core::pb::operations_client::OperationsClient;
use liandong_core::tls::ClientCredentials;

pub mod control;
pub mod output;
pub mod view;

/// Exit code: bad usage or configuration.
pub const EX_USAGE: u8 = 64;
/// Exit code: the check found a problem.
pub const EX_DATAERR: u8 = 65;
/// Exit code: the gateway is unreachable or unavailable.
pub const EX_UNAVAILABLE: u8 = 69;
/// Exit code: the certificate may not do this.
pub const EX_NOPERM: u8 = 77;

/// `liandong-gateway admin`: where the gateway is and the operator's
/// certificate.
#[derive(Debug, Args)]
pub struct AdminArgs {
    /// The gateway's gRPC address.
    #[arg(
        long,
        env = "LIANDONG_ADMIN_GATEWAY",
        default_value = "https://127.0.0.1:7443",
        global = true
    )]
    pub gateway: String,
    /// The CA bundle that signed the gateway's certificate.
    #[arg(long, env = "LIANDONG_ADMIN_CA", global = true)]
    pub ca: Option<PathBuf>,
    /// The operator's client certificate (PEM).
    #[arg(long, env = "LIANDONG_ADMIN_CERT", global = true)]
    pub cert: Option<PathBuf>,
    /// The operator's private key (PEM).
    #[arg(long, env = "LIANDONG_ADMIN_KEY", global = true)]
    pub key: Option<PathBuf>,
    /// The name the gateway's certificate carries, when it differs from
    /// the address's host.
    #[arg(long, env = "LIANDONG_ADMIN_SERVER_NAME", global = true)]
    pub server_name: Option<String>,
    /// Print JSON (for scripts) instead of tables; no progress bars.
    #[arg(long, global = true)]
    pub json: bool,
    /// What to do.
    #[command(subcommand)]
    pub command: AdminCommand,
}

/// The admin commands.
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Version, uptime, store, sequence high-water mark, certificates,
    /// audit chain.
    Status,
    /// Every registered agency: connections, last publish, last refusal,
    /// disabled or not.
    Agencies,
    /// Every subscription with its position and lag.
    Subscriptions {
        /// Only subscriptions behind by at least this many notifications
        /// (`--lagging` alone: 1).
        #[arg(long, num_args = 0..=1, default_missing_value = "1")]
        lagging: Option<u64>,
        /// Only this owner's.
        #[arg(long)]
        owner: Option<String>,
    },
    /// Refuses an agency's connections and publishes and closes its
    /// streams, until `enable` (survives restarts; audited).
    Disable {
        /// The agency id.
        agency: String,
        /// Why (kept in the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Lets a disabled agency connect and publish again (audited).
    Enable {
        /// The agency id.
        agency: String,
        /// Why (kept in the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Moves a subscription's acknowledged position (audited); the
    /// subscription must not be connected.
    Seek {
        /// The owning agency.
        owner: String,
        /// The subscription's name.
        name: String,
        /// The new acknowledged position: delivery resumes after it.
        #[arg(long)]
        to: u64,
        /// Why (kept in the audit log).
        #[arg(long)]
        reason: String,
    },
    /// Open deadline breaches.
    Breaches {
        /// Only cases within this region (six digits).
        #[arg(long, default_value = "")]
        region: String,
    },
    /// Walks the audit chain on the gateway (progress bar); exits 65 on a
    /// problem.
    AuditVerify,
}

/// Runs an admin command; returns the process exit code.
pub async fn run(args: AdminArgs) -> ExitCode {
    let mut client = match connect(&args).await {
        Ok(client) => client,
        Err(code) => return code,
    };
    let json = args.json;
    match args.command {
        AdminCommand::Status => view::status(&mut client, json).await,
        AdminCommand::Agencies => view::agencies(&mut client, json).await,
        AdminCommand::Subscriptions { lagging, owner } => {
            view::subscriptions(&mut client, json, lagging, owner).await
        }
        AdminCommand::Breaches { region } => view::breaches(&mut client, json, region).await,
        AdminCommand::AuditVerify => view::audit_verify(&mut client, json).await,
        AdminCommand::Disable { agency, reason } => {
            control::disable(&mut client, json, agency, reason).await
        }
        AdminCommand::Enable { agency, reason } => {
            control::enable(&mut client, json, agency, reason).await
        }
        AdminCommand::Seek {
            owner,
            name,
            to,
            reason,
        } => control::seek(&mut client, json, owner, name, to, reason).await,
    }
}

/// The Operations client over mutual TLS, or the exit code of why not
/// (printed).
async fn connect(args: &AdminArgs) -> Result<OperationsClient<Channel>, ExitCode> {
    let (Some(ca), Some(cert), Some(key)) = (&args.ca, &args.cert, &args.key) else {
        eprintln!(
            "liandong-gateway admin: --ca, --cert and --key (or LIANDONG_ADMIN_CA, _CERT, _KEY) name the operator's certificate"
        );
        return Err(ExitCode::from(EX_USAGE));
    };
    let credentials = ClientCredentials::from_files(ca, cert, key).map_err(|error| {
        eprintln!("liandong-gateway admin: {error}");
        ExitCode::from(EX_USAGE)
    })?;
    let channel = credentials
        .connect(&args.gateway, args.server_name.as_deref())
        .await
        .map_err(|error| {
            eprintln!(
                "liandong-gateway admin: cannot reach {}: {error}",
                args.gateway
            );
            ExitCode::from(EX_UNAVAILABLE)
        })?;
    Ok(OperationsClient::new(channel))
}

/// Prints a refusal and returns its exit code.
pub fn refused(status: &tonic::Status) -> ExitCode {
    eprintln!(
        "liandong-gateway admin: {:?}: {}",
        status.code(),
        status.message()
    );
    ExitCode::from(match status.code() {
        tonic::Code::PermissionDenied | tonic::Code::Unauthenticated => EX_NOPERM,
        tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => EX_UNAVAILABLE,
        tonic::Code::InvalidArgument => EX_USAGE,
        _ => 1,
    })
}
