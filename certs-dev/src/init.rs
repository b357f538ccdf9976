//! `liandong-certs init`: writes the whole development PKI (CA, gateway server
//! certificate, and per-agency client certificates and signing keys) to a
//! directory.
//!
//! This module must never overwrite existing files unless asked to (`force`),
//! never leave a half-written file behind (every file is written to a
//! temporary file in the same directory, synced, then renamed into place), and
//! never create a private key file readable by anyone but its owner (mode
//! 0600 on unix).

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use ring::rand::{SecureRandom as _, SystemRandom};

use crate::{Authority, CertError, SigningKey, read_agency_ids};

/// Common name of the development CA written by [`init`].
pub const DEV_CA_COMMON_NAME: &str = "Liandong Development CA";

/// SANs of the gateway server certificate written by [`init`].
pub const GATEWAY_SANS: [&str; 2] = ["localhost", "127.0.0.1"];

/// Subdirectory of the output directory holding agency files.
pub const AGENCIES_DIR: &str = "agencies";

/// What [`init`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitReport {
    /// Every file written, in the order written.
    pub files: Vec<PathBuf>,
    /// The agency ids read from the registry, in registry order.
    pub agency_ids: Vec<String>,
}

/// One file to write.
struct Planned {
    path: PathBuf,
    contents: Vec<u8>,
    secret: bool,
}

/// Paths `init` writes for a given output directory and agency ids, with a
/// flag telling whether each one holds a private key.
fn planned_paths(out: &Path, ids: &[String]) -> Vec<(PathBuf, bool)> {
    let mut paths = vec![
        (out.join("ca.crt"), false),
        (out.join("ca.key"), true),
        (out.join("gateway.crt"), false),
        (out.join("gateway.key"), true),
        (out.join("gateway.signing.pk8"), true),
        (out.join("gateway.signing.pub"), false),
        (out.join("gateway.signing.pem"), true),
        (out.join("gateway.signing.pub.pem"), false),
    ];
    let agencies = out.join(AGENCIES_DIR);
    for id in ids {
        paths.push((agencies.join(format!("{id}.crt")), false));
        paths.push((agencies.join(format!("{id}.key")), true));
        paths.push((agencies.join(format!("{id}.signing.pk8")), true));
        paths.push((agencies.join(format!("{id}.signing.pub")), false));
        paths.push((agencies.join(format!("{id}.signing.pem")), true));
        paths.push((agencies.join(format!("{id}.signing.pub.pem")), false));
    }
    paths.push((out.join(crate::CRL_FILE), false));
    paths
}

/// Writes the whole development PKI for the agencies of `registry` into
/// `out`:
///
/// - `ca.crt`, `ca.key` (the CA key, so more certificates can be issued),
/// - `gateway.crt`, `gateway.key` (SANs `localhost`, `127.0.0.1`),
/// - `gateway.signing.pk8` (the Ed25519 PKCS#8 DER key with which the
///   gateway signs the notifications it emits itself) and
///   `gateway.signing.pub` (its lower-case hex public key and a newline,
///   for receivers that verify them), and the same key as
///   `gateway.signing.pem` (PKCS#8 v1 PEM, which OpenSSL and Python's
///   `cryptography` load) and `gateway.signing.pub.pem`
///   (SubjectPublicKeyInfo PEM),
/// - for every agency id: `agencies/<id>.crt`, `agencies/<id>.key`,
///   `agencies/<id>.signing.pk8` (Ed25519 PKCS#8 v2 DER),
///   `agencies/<id>.signing.pub` (lower-case hex public key and a newline),
///   `agencies/<id>.signing.pem` (the same key as PKCS#8 v1 PEM) and
///   `agencies/<id>.signing.pub.pem` (SubjectPublicKeyInfo PEM).
/// - `ca.crl`: the CA's certificate revocation list, empty, CRL number 1,
///   nextUpdate in 30 days (`liandong-certs revoke` and `crl` re-issue it).
///
/// Private key files get mode 0600 on unix. Unless `force`, nothing is
/// written when any of these files already exists. Directories are created
/// as needed and each file is replaced atomically.
pub fn init(registry: &Path, out: &Path, force: bool) -> Result<InitReport, CertError> {
    let ids = read_agency_ids(registry)?;
    let paths = planned_paths(out, &ids);

    if !force {
        let mut existing = Vec::new();
        for (path, _) in &paths {
            match path.symlink_metadata() {
                Ok(_) => existing.push(path.clone()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(CertError::Io {
                        path: path.clone(),
                        source,
                    });
                }
            }
        }
        if !existing.is_empty() {
            return Err(CertError::WouldOverwrite { paths: existing });
        }
    }

    // Generate everything in memory first so that a failure writes nothing.
    let ca = Authority::new(DEV_CA_COMMON_NAME)?;
    let gateway = ca.server(&GATEWAY_SANS)?;
    let gateway_signing = SigningKey::generate()?;
    let mut contents: Vec<Vec<u8>> = vec![
        ca.cert_pem().into_bytes(),
        ca.key_pem().into_bytes(),
        gateway.cert_pem.into_bytes(),
        gateway.key_pem.into_bytes(),
        gateway_signing.pkcs8_der().to_vec(),
        format!("{}\n", gateway_signing.public_key_hex()).into_bytes(),
        gateway_signing.pkcs8_v1_pem()?.into_bytes(),
        gateway_signing.public_key_pem()?.into_bytes(),
    ];
    for id in &ids {
        let cert = ca.agency(id)?;
        let signing = SigningKey::generate()?;
        contents.push(cert.cert_pem.into_bytes());
        contents.push(cert.key_pem.into_bytes());
        contents.push(signing.pkcs8_der().to_vec());
        contents.push(format!("{}\n", signing.public_key_hex()).into_bytes());
        contents.push(signing.pkcs8_v1_pem()?.into_bytes());
        contents.push(signing.public_key_pem()?.into_bytes());
    }
    contents.push(crate::initial_crl(&ca, crate::DEFAULT_CRL_DAYS)?.into_bytes());
    let plan: Vec<Planned> = paths
        .into_iter()
        .zip(contents)
        .map(|((path, secret), contents)| Planned {
            path,
            contents,
            secret,
        })
        .collect();

    for dir in [out.to_path_buf(), out.join(AGENCIES_DIR)] {
        fs::create_dir_all(&dir).map_err(|source| CertError::Io { path: dir, source })?;
    }

    let mut files = Vec::with_capacity(plan.len());
    for file in plan {
        write_atomic(&file.path, &file.contents, file.secret)?;
        files.push(file.path);
    }
    Ok(InitReport {
        files,
        agency_ids: ids,
    })
}

/// Writes `contents` to `path` atomically: a temporary file with a random
/// name in the same directory is created (never over an existing file),
/// written, synced and renamed over `path`. Secret files get
/// mode 0600 (unix), others 0644 (minus umask).
pub(crate) fn write_atomic(path: &Path, contents: &[u8], secret: bool) -> Result<(), CertError> {
    let io_err = |source| CertError::Io {
        path: path.to_owned(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io_err(io::Error::other("path has no file name")))?
        .to_string_lossy()
        .into_owned();

    let random = SystemRandom::new();
    let (tmp, mut file) = loop {
        // Unpredictable, so nobody can plant a file at the name in advance;
        // `create_new` refuses to follow or reuse anything already there.
        let mut suffix = [0u8; 8];
        random
            .fill(&mut suffix)
            .map_err(|_| io_err(io::Error::other("the system random source failed")))?;
        let tmp = dir.join(format!(".{name}.tmp-{}", hex::encode(suffix)));
        let mut opts = OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(if secret { 0o600 } else { 0o644 });
        }
        match opts.open(&tmp) {
            Ok(f) => break (tmp, f),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(source) => return Err(CertError::Io { path: tmp, source }),
        }
    };

    let result = (|| -> io::Result<()> {
        #[cfg(unix)]
        if secret {
            // Do not rely on the umask: make sure the key is owner-only.
            use std::os::unix::fs::PermissionsExt;
            file.set_permissions(fs::Permissions::from_mode(0o600))?;
        }
        file.write_all(contents)?;
        file.sync_all()?;
        drop(file);
        fs::rename(&tmp, path)
    })();
    if let Err(source) = result {
        let _ = fs::remove_file(&tmp);
        return Err(io_err(source));
    }

    // Make the rename durable. Some filesystems cannot sync directories;
    // the file itself is already complete, so this is best effort.
    #[cfg(unix)]
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}
