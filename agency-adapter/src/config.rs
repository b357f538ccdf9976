//! The adapter's configuration: the TOML config file and the command-line
//! flags that override or replace it, resolved into the [`GatewaySettings`]
//! a client connects with.
//!
//! The file is refused on any key it does not know, and every error names
//! the file and the field. [`AdapterConfig::load`] requires every field;
//! combined with flags ([`GatewaySettings::resolve`]) the file may leave out
//! what the flags give. Relative paths in the file are relative to the
//! file's own directory; relative paths given as flags are relative to the
//! working directory.
//!
//! This module only reads the file it is given. It must never open a
//! credential file (that is [`liandong_core::tls`]'s job) and never print
//! anything: it reports through [`ConfigError`].
//!
//! `send` and `tail` need only the `[gateway]` table ([`AdapterConfig`]);
//! the daemon (`run`, `status`) reads the whole file, with its top-level
//! `agency` and `signing_key` and its `[outbox]`, `[[source]]`,
//! `[[subscription]]`, `[dead_letter]` and `[status]` tables, into a
//! [`daemon::DaemonConfig`]. Every command checks the whole file's syntax
//! (its serde shape is in `raw`), so one file serves them all.

use std::path::{Path, PathBuf};

use liandong_core::toml_file::{self, FileError};

pub mod daemon;
mod raw;

#[cfg(test)]
mod tests;

/// Where and as whom to reach the gateway.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GatewaySettings {
    /// The gateway's address, `https://host:port`.
    pub url: String,
    /// The name checked against the gateway's certificate, when it differs
    /// from the URL's host (e.g. `localhost` for `https://127.0.0.1:7443`).
    pub server_name: Option<String>,
    /// PEM file of the CA that signed the gateway's certificate.
    pub ca: PathBuf,
    /// PEM file of this agency's client certificate.
    pub cert: PathBuf,
    /// PEM file of this agency's private key.
    pub key: PathBuf,
}

/// The adapter's configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdapterConfig {
    /// The `[gateway]` table.
    pub gateway: GatewaySettings,
}

/// Gateway settings that may be incomplete: the command-line flags, or a
/// config file read leniently so that flags can supply what it lacks.
/// Combine them with [`over`](Self::over) and finish with
/// [`complete`](Self::complete).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartialGateway {
    /// `url` / `--gateway URL`.
    pub url: Option<String>,
    /// `server_name` / `--server-name NAME`.
    pub server_name: Option<String>,
    /// `ca` / `--ca FILE`.
    pub ca: Option<PathBuf>,
    /// `cert` / `--cert FILE`.
    pub cert: Option<PathBuf>,
    /// `key` / `--key FILE`.
    pub key: Option<PathBuf>,
}

/// A configuration that cannot be used. Every variant is a usage error
/// (exit code 64).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read, or is not valid TOML, or has a
    /// key this version does not know, or a value of the wrong type (the
    /// error gives its line and column).
    #[error(transparent)]
    File(#[from] FileError),
    /// A required field is absent from the file.
    #[error("{path}: missing field `{field}`")]
    Missing {
        /// The config file.
        path: PathBuf,
        /// Dotted name of the field, e.g. `gateway.ca`.
        field: &'static str,
    },
    /// A field of the file has an unusable value.
    #[error("{path}: `{field}`: {reason}")]
    Invalid {
        /// The config file.
        path: PathBuf,
        /// Dotted name of the field, e.g. `gateway.url`.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A field of the daemon's settings is absent; `field` names the entry,
    /// e.g. `source[1].path`.
    #[error("{path}: missing field `{field}`")]
    MissingEntry {
        /// The config file.
        path: PathBuf,
        /// Dotted name of the field, with the entry's index.
        field: String,
    },
    /// A field of the daemon's settings has an unusable value.
    #[error("{path}: `{field}`: {reason}")]
    InvalidEntry {
        /// The config file.
        path: PathBuf,
        /// Dotted name of the field, with the entry's index.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A command-line flag has an unusable value.
    #[error("{flag}: {reason}")]
    InvalidFlag {
        /// The flag, e.g. `--gateway`.
        flag: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// Neither the flags nor the config file give every required setting.
    #[error("{}", incomplete_message(.missing, .config.as_deref()))]
    Incomplete {
        /// The settings that are missing, in `url, ca, cert, key` order.
        missing: Vec<MissingSetting>,
        /// The config file that was read, if any.
        config: Option<PathBuf>,
    },
}

fn incomplete_message(missing: &[MissingSetting], config: Option<&Path>) -> String {
    let join = |part: fn(&MissingSetting) -> &'static str| {
        missing.iter().map(part).collect::<Vec<_>>().join(", ")
    };
    let settings = join(|m| m.setting);
    let flags = join(|m| m.flag);
    match config {
        Some(path) => {
            let pronoun = if missing.len() == 1 { "it" } else { "them" };
            format!(
                "usage: no {settings} given: pass {flags} or set {pronoun} in {}",
                path.display()
            )
        }
        None => {
            format!("usage: no {settings} given: pass {flags} or a --config file that has them")
        }
    }
}

/// A required gateway setting that was not given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MissingSetting {
    /// Its name in the config file, e.g. `gateway.url`.
    pub setting: &'static str,
    /// The flag that gives it, e.g. `--gateway URL`.
    pub flag: &'static str,
}

/// Checks a gateway URL: `https://` with a host, and acceptable to the
/// transport. Returns what is wrong.
fn check_url(url: &str) -> Result<(), String> {
    let Some(rest) = url.strip_prefix("https://") else {
        return Err(format!(
            "{url:?} must start with https:// (the gateway only speaks mutual TLS)"
        ));
    };
    if rest.is_empty() || rest.starts_with(['/', ':']) {
        return Err(format!("{url:?} has no host"));
    }
    tonic::transport::Endpoint::from_shared(url.to_owned())
        .map(drop)
        .map_err(|e| format!("{url:?} is not a valid URL: {e}"))
}

/// Checks a TLS server name: not empty, no spaces.
fn check_server_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("must not be empty (leave it out to use the URL's host)".into());
    }
    if name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(format!("{name:?} is not a host name"));
    }
    Ok(())
}

impl AdapterConfig {
    /// Reads and checks the config file at `path`; every required field
    /// must be present. Relative paths in it are resolved against the
    /// file's directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        Self::parse(path, &read(path)?)
    }

    /// Checks `text` as the content of the config file at `path` (which
    /// names the file in errors and anchors its relative paths).
    pub fn parse(path: &Path, text: &str) -> Result<Self, ConfigError> {
        let missing = |field| ConfigError::Missing {
            path: path.to_owned(),
            field,
        };
        let gateway = PartialGateway::parse_file(path, text)?.ok_or_else(|| missing("gateway"))?;
        Ok(Self {
            gateway: GatewaySettings {
                url: gateway.url.ok_or_else(|| missing("gateway.url"))?,
                server_name: gateway.server_name,
                ca: gateway.ca.ok_or_else(|| missing("gateway.ca"))?,
                cert: gateway.cert.ok_or_else(|| missing("gateway.cert"))?,
                key: gateway.key.ok_or_else(|| missing("gateway.key"))?,
            },
        })
    }
}

/// Parses the whole file at `path` (named in errors) as TOML, refusing any
/// key this version does not know.
fn parse_raw(path: &Path, text: &str) -> Result<raw::RawConfig, ConfigError> {
    Ok(toml_file::parse(path, text)?)
}

fn read(path: &Path) -> Result<String, ConfigError> {
    Ok(toml_file::read(path, "config")?)
}

impl PartialGateway {
    /// The `[gateway]` table of the config file at `path`, where any field
    /// may be absent (an absent table gives no field). The file is checked
    /// as strictly as by [`AdapterConfig::load`] otherwise.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        Ok(Self::parse_file(path, &read(path)?)?.unwrap_or_default())
    }

    /// Parses and checks a config file; `None` when it has no `[gateway]`.
    fn parse_file(path: &Path, text: &str) -> Result<Option<Self>, ConfigError> {
        Self::from_raw(path, parse_raw(path, text)?.gateway)
    }

    /// Checks the `[gateway]` table of the file at `path`; `None` when the
    /// file has none.
    fn from_raw(
        path: &Path,
        gateway: Option<raw::RawGateway>,
    ) -> Result<Option<Self>, ConfigError> {
        let Some(gateway) = gateway else {
            return Ok(None);
        };
        let invalid = |field, reason| ConfigError::Invalid {
            path: path.to_owned(),
            field,
            reason,
        };
        if let Some(url) = &gateway.url {
            check_url(url).map_err(|reason| invalid("gateway.url", reason))?;
        }
        if let Some(name) = &gateway.server_name {
            check_server_name(name).map_err(|reason| invalid("gateway.server_name", reason))?;
        }
        let base = path.parent().unwrap_or(Path::new(""));
        let file = |value: Option<PathBuf>, field| match value {
            Some(value) if value.as_os_str().is_empty() => {
                Err(invalid(field, "must not be empty".into()))
            }
            value => Ok(value.map(|value| base.join(value))),
        };
        Ok(Some(Self {
            url: gateway.url,
            server_name: gateway.server_name,
            ca: file(gateway.ca, "gateway.ca")?,
            cert: file(gateway.cert, "gateway.cert")?,
            key: file(gateway.key, "gateway.key")?,
        }))
    }

    /// These settings, with each one that is unset taken from `base`
    /// (flags `over` the config file).
    pub fn over(self, base: PartialGateway) -> PartialGateway {
        PartialGateway {
            url: self.url.or(base.url),
            server_name: self.server_name.or(base.server_name),
            ca: self.ca.or(base.ca),
            cert: self.cert.or(base.cert),
            key: self.key.or(base.key),
        }
    }

    /// Checks these settings as command-line flags: every one that is set
    /// must be usable, and errors name the flag.
    pub fn check_flags(&self) -> Result<(), ConfigError> {
        if let Some(url) = &self.url {
            check_url(url).map_err(|reason| ConfigError::InvalidFlag {
                flag: "--gateway",
                reason,
            })?;
        }
        if let Some(name) = &self.server_name {
            check_server_name(name).map_err(|reason| ConfigError::InvalidFlag {
                flag: "--server-name",
                reason,
            })?;
        }
        for (flag, value) in [
            ("--ca", &self.ca),
            ("--cert", &self.cert),
            ("--key", &self.key),
        ] {
            if value.as_ref().is_some_and(|p| p.as_os_str().is_empty()) {
                return Err(ConfigError::InvalidFlag {
                    flag,
                    reason: "must not be empty".into(),
                });
            }
        }
        Ok(())
    }

    /// The complete settings, or [`ConfigError::Incomplete`] naming every
    /// required setting (url, ca, cert, key) that is unset; `config` is the
    /// config file these settings were partly read from, named in the error.
    pub fn complete(self, config: Option<&Path>) -> Result<GatewaySettings, ConfigError> {
        let mut missing = Vec::new();
        let mut need = |present: bool, setting, flag| {
            if !present {
                missing.push(MissingSetting { setting, flag });
            }
        };
        need(self.url.is_some(), "gateway.url", "--gateway URL");
        need(self.ca.is_some(), "gateway.ca", "--ca FILE");
        need(self.cert.is_some(), "gateway.cert", "--cert FILE");
        need(self.key.is_some(), "gateway.key", "--key FILE");
        match self {
            PartialGateway {
                url: Some(url),
                server_name,
                ca: Some(ca),
                cert: Some(cert),
                key: Some(key),
            } => Ok(GatewaySettings {
                url,
                server_name,
                ca,
                cert,
                key,
            }),
            _ => Err(ConfigError::Incomplete {
                missing,
                config: config.map(Path::to_owned),
            }),
        }
    }
}

impl From<GatewaySettings> for PartialGateway {
    fn from(settings: GatewaySettings) -> Self {
        Self {
            url: Some(settings.url),
            server_name: settings.server_name,
            ca: Some(settings.ca),
            cert: Some(settings.cert),
            key: Some(settings.key),
        }
    }
}

impl GatewaySettings {
    /// The settings to use: the command-line `flags` over the `[gateway]`
    /// table of the `config` file (when given, read leniently: the flags may
    /// supply what it lacks). Fails naming an unusable flag or file field,
    /// or every required setting that neither gives.
    pub fn resolve(config: Option<&Path>, flags: PartialGateway) -> Result<Self, ConfigError> {
        flags.check_flags()?;
        let file = match config {
            Some(path) => PartialGateway::from_file(path)?,
            None => PartialGateway::default(),
        };
        flags.over(file).complete(config)
    }
}
