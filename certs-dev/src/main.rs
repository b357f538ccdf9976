//! `liandong-certs`: command-line front end of the development PKI.
//!
//! Parses the command line, calls the library and reports the result. It must
//! never print private key material and never contain PKI logic of its own.
//! Exit codes: 0 success, 64 usage or configuration error, 1 anything else.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};

/// Exit code for usage and configuration errors (BSD `EX_USAGE`).
const EXIT_USAGE: u8 = 64;

/// Development PKI for Liandong.
#[derive(Parser)]
#[command(name = "liandong-certs", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a fresh development PKI (CA, gateway certificate, agency
    /// certificates and signing keys) for every agency in the registry.
    Init {
        /// Agency registry (TOML with [[agency]] entries).
        #[arg(long, value_name = "FILE")]
        registry: PathBuf,
        /// Output directory (created if missing).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
        /// Also write each agency's signing public key
        /// (`signing_public_keys`) and the gateway's (`[gateway]`) into the
        /// registry, keeping its comments and layout.
        #[arg(long)]
        register_keys: bool,
    },
    /// Start a signing key rollover for an agency: a new key becomes
    /// current, the old one is kept as <id>.signing.previous.{pk8,pem},
    /// and the registry lists both (new first).
    RotateKey {
        /// The PKI directory `init` wrote.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Agency registry to update.
        #[arg(long, value_name = "FILE")]
        registry: PathBuf,
        /// The agency whose key is rotated.
        #[arg(long, value_name = "ID")]
        agency: String,
    },
    /// End a rollover: the registry lists only the agency's current key,
    /// and the previous key files are deleted.
    RetireKey {
        /// Agency registry to update.
        #[arg(long, value_name = "FILE")]
        registry: PathBuf,
        /// The agency whose old keys are retired.
        #[arg(long, value_name = "ID")]
        agency: String,
        /// The PKI directory holding the agency's current key.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
    },
    /// Revoke an agency's certificate: add its serial number to the CA's
    /// revocation list (`ca.crl`), keeping earlier revocations, and write
    /// the list again atomically. Reload the gateway (SIGHUP) or let it see
    /// the file change.
    Revoke {
        /// The PKI directory written by `init` (holds ca.crt, ca.key,
        /// ca.crl and agencies/).
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// The agency whose certificate (agencies/<id>.crt) is revoked.
        #[arg(long, value_name = "ID")]
        agency: String,
        /// Why (RFC 5280 reason: keyCompromise, superseded,
        /// cessationOfOperation, affiliationChanged, …).
        #[arg(long)]
        reason: Option<String>,
        /// Days until the list's nextUpdate; after that relying parties
        /// refuse every certificate of the CA until it is re-issued.
        #[arg(long, value_name = "N", default_value_t = liandong_certs::DEFAULT_CRL_DAYS)]
        next_update_days: u32,
    },
    /// Re-issue the CA's revocation list with the same entries and a fresh
    /// nextUpdate (run from cron well before the current one passes).
    Crl {
        /// The PKI directory written by `init`.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Days until the list's nextUpdate.
        #[arg(long, value_name = "N", default_value_t = liandong_certs::DEFAULT_CRL_DAYS)]
        next_update_days: u32,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help / --version
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(EXIT_USAGE);
        }
    };
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("liandong-certs: error: {e:#}");
            let usage = e
                .downcast_ref::<liandong_certs::CertError>()
                .is_some_and(liandong_certs::CertError::is_usage_error);
            ExitCode::from(if usage { EXIT_USAGE } else { 1 })
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Init {
            registry,
            out,
            force,
            register_keys,
        } => {
            let report = liandong_certs::init(&registry, &out, force)
                .with_context(|| format!("init of {} failed", out.display()))?;
            for file in &report.files {
                println!("{}", file.display());
            }
            println!(
                "wrote {} files to {}: CA, gateway server certificate and signing key, and {} agencies ({})",
                report.files.len(),
                out.display(),
                report.agency_ids.len(),
                report.agency_ids.join(", ")
            );
            if register_keys {
                liandong_certs::register_keys(&registry, &out).with_context(|| {
                    format!("writing the signing keys into {}", registry.display())
                })?;
                println!(
                    "registered the signing keys of the gateway and {} agencies in {}",
                    report.agency_ids.len(),
                    registry.display()
                );
            }
            Ok(())
        }
        Command::RotateKey {
            out,
            registry,
            agency,
        } => {
            let rotation = liandong_certs::rotate_key(&registry, &out, &agency)
                .with_context(|| format!("rotating the signing key of {agency}"))?;
            for file in &rotation.files {
                println!("{}", file.display());
            }
            println!(
                "{agency}: new key {} is current; {} stays valid until retire-key (both registered in {})",
                rotation.new_key,
                rotation.old_key,
                registry.display()
            );
            Ok(())
        }
        Command::RetireKey {
            registry,
            agency,
            out,
        } => {
            let retirement = liandong_certs::retire_key(&registry, &out, &agency)
                .with_context(|| format!("retiring the old signing keys of {agency}"))?;
            for file in &retirement.deleted {
                println!("deleted {}", file.display());
            }
            println!(
                "{agency}: only {} is registered in {}; retired: {}",
                retirement.kept,
                registry.display(),
                if retirement.retired.is_empty() {
                    "none".to_owned()
                } else {
                    retirement.retired.join(", ")
                }
            );
            Ok(())
        }
        Command::Revoke {
            out,
            agency,
            reason,
            next_update_days,
        } => {
            let reason = reason
                .as_deref()
                .map(liandong_certs::parse_reason)
                .transpose()?;
            let report = liandong_certs::revoke(&out, &agency, reason, next_update_days)?;
            println!(
                "{}: {} revoked; CRL number {}, {} revoked in all, next update {}",
                report.path.display(),
                if report.newly_revoked {
                    format!("certificate of {agency}")
                } else {
                    format!("certificate of {agency} was already")
                },
                report.number,
                report.revoked,
                report.next_update.date()
            );
            Ok(())
        }
        Command::Crl {
            out,
            next_update_days,
        } => {
            let report = liandong_certs::refresh_crl(&out, next_update_days)?;
            println!(
                "{}: re-issued; CRL number {}, {} revoked, next update {}",
                report.path.display(),
                report.number,
                report.revoked,
                report.next_update.date()
            );
            Ok(())
        }
    }
}
