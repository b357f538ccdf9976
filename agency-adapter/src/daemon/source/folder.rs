//! The drop-folder source. The agency system writes each notification (the
//! JSON form) as its own file; the adapter scans the folder every
//! `poll_interval_ms`, commits each file to the outbox and then moves it to
//! `done/`, or moves a bad file to `rejected/` with `<name>.error` beside it
//! saying exactly what is wrong.
//!
//! The write-then-rename rule: only regular files whose name ends in
//! `.json` and does not start with `.` are read, so a writer must write
//! under another name (`.n.json`, `n.json.tmp`, `n.json.part`) in the same
//! folder and rename it to `*.json` when complete; a rename within a folder
//! is atomic, so a half-written file is never read. Files are taken in name
//! order.
//!
//! A file read again after a crash (committed, not yet moved) is recognised
//! by its name and digest and not accepted twice. When the outbox is full,
//! files stay where they are and are tried again at the next scan.
//!
//! Whoever can write the drop folder is not trusted with more: `done/` and
//! `rejected/` must be real folders owned by the adapter's user and not
//! writable by others (checked at start and before every move or write,
//! [`check_owned_dir`]), else nothing is moved and the file stays where it
//! is. A ready name that is not UTF-8 or holds a control character
//! (newline, tab, ESC, DEL …) is refused: left in place, logged once with
//! the name escaped, never used to build a path. This module must never
//! delete a file the agency wrote, nor log its content; file names are
//! logged with `?` (escaped), never raw.

use std::collections::HashSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use crate::config::daemon::FolderSource;
use crate::daemon::accept::{AcceptError, Acceptor, Origin};
use crate::daemon::sink::{check_owned_dir, write_atomically};

#[cfg(test)]
mod tests;

/// Sub-folder for files committed to the outbox.
pub const DONE: &str = "done";
/// Sub-folder for refused files and their `.error` files.
pub const REJECTED: &str = "rejected";

/// What one scan did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Files committed (or found committed before) and moved to `done/`.
    pub accepted: Vec<String>,
    /// Files moved to `rejected/`.
    pub rejected: Vec<String>,
    /// Files left in place (outbox full, state unavailable).
    pub deferred: Vec<String>,
    /// Ready files left in place because their name is not UTF-8 or holds
    /// a control character.
    pub refused_names: Vec<OsString>,
}

/// Creates the folder and its `done/` and `rejected/`, and checks that the
/// adapter owns those two.
pub fn prepare(source: &FolderSource) -> std::io::Result<()> {
    std::fs::create_dir_all(source.path.join(DONE))?;
    std::fs::create_dir_all(source.path.join(REJECTED))?;
    check_owned_dir(&source.path.join(DONE))?;
    check_owned_dir(&source.path.join(REJECTED))
}

/// Why a drop-file name is refused, if it is: names that are not UTF-8
/// or that hold a control character could forge log lines or `.error`
/// lines.
pub fn name_problem(name: &std::ffi::OsStr) -> Option<&'static str> {
    match name.to_str() {
        None => Some("the name is not UTF-8"),
        Some(name) if name.chars().any(char::is_control) => {
            Some("the name holds a control character")
        }
        Some(_) => None,
    }
}

/// True for the names the source reads: `*.json`, not hidden.
pub fn is_ready(name: &str) -> bool {
    name.ends_with(".json") && !name.starts_with('.') && name.len() > ".json".len()
}

/// Scans the folder every `poll_interval` until `shutdown`.
pub async fn run(source: FolderSource, acceptor: Acceptor, shutdown: CancellationToken) {
    tracing::info!(source.path = ?source.path, "watching the drop folder");
    let mut refused = HashSet::new();
    let mut last_error: Option<String> = None;
    loop {
        let outcome = scan_remembering(&source.path, &acceptor, &mut refused).await;
        if outcome.is_ok() {
            last_error = None;
        }
        match outcome {
            Ok(scan) if !scan.deferred.is_empty() => {
                tracing::debug!(
                    deferred = scan.deferred.len(),
                    "files left for the next scan"
                );
            }
            Ok(_) => {}
            Err(error) => {
                // Once per distinct failure, not at every scan.
                let text = error.to_string();
                if last_error.as_ref() != Some(&text) {
                    tracing::error!(
                        source.path = ?source.path,
                        error = ?text,
                        "cannot scan the drop folder"
                    );
                    last_error = Some(text);
                }
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(source.poll_interval) => {}
        }
    }
}

/// One pass over the folder.
pub async fn scan(folder: &Path, acceptor: &Acceptor) -> std::io::Result<Scan> {
    scan_remembering(folder, acceptor, &mut HashSet::new()).await
}

/// One pass over the folder; `refused` holds the refused names already
/// logged (so each is logged once while it stays).
pub async fn scan_remembering(
    folder: &Path,
    acceptor: &Acceptor,
    refused: &mut HashSet<OsString>,
) -> std::io::Result<Scan> {
    check_owned_dir(&folder.join(DONE))?;
    check_owned_dir(&folder.join(REJECTED))?;
    let mut names = Vec::new();
    let mut scan = Scan::default();
    for entry in std::fs::read_dir(folder)? {
        let entry = entry?;
        let os_name = entry.file_name();
        if !is_ready(&os_name.to_string_lossy()) || !entry.file_type()?.is_file() {
            continue;
        }
        match name_problem(&os_name) {
            None => names.push(os_name.to_string_lossy().into_owned()),
            Some(problem) => {
                if !refused.contains(&os_name) {
                    tracing::warn!(
                        file = ?os_name,
                        problem,
                        "drop file refused and left in place; rename it"
                    );
                }
                scan.refused_names.push(os_name);
            }
        }
    }
    refused.clear();
    refused.extend(scan.refused_names.iter().cloned());
    names.sort();
    let mut stop = false;
    for name in names {
        if stop {
            scan.deferred.push(name);
            continue;
        }
        let path = folder.join(&name);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            // Taken away meanwhile: nothing to do.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let outcome = match std::str::from_utf8(&bytes) {
            Ok(text) => {
                let key = format!("folder:{name}:{}", hex::encode(Sha256::digest(&bytes)));
                acceptor.accept_json(text, Origin::Folder { key }).await
            }
            Err(e) => {
                reject(
                    folder,
                    &name,
                    &format!("{name}: the file is not UTF-8 text: {e}"),
                )?;
                scan.rejected.push(name);
                continue;
            }
        };
        match outcome {
            Ok(accepted) => {
                let done = folder.join(DONE);
                check_owned_dir(&done)?;
                let target = free_name(&done, &name, accepted.local_id);
                std::fs::rename(&path, &target)?;
                tracing::info!(
                    file = ?name,
                    notification.id = %accepted.notification_id,
                    outbox.local_id = accepted.local_id,
                    "drop file accepted"
                );
                scan.accepted.push(name);
            }
            Err(error) if error.is_input_error() => {
                tracing::info!(file = ?name, error = %error.log_text(), "drop file rejected");
                reject(folder, &name, &format!("{name}: {error}"))?;
                scan.rejected.push(name);
            }
            Err(error @ (AcceptError::Full { .. } | AcceptError::Store(_))) => {
                tracing::warn!(file = ?name, error = %error.log_text(), "drop file left for later");
                scan.deferred.push(name);
                stop = true;
            }
            Err(error) => {
                tracing::warn!(file = ?name, error = %error.log_text(), "drop file left for later");
                scan.deferred.push(name);
            }
        }
    }
    Ok(scan)
}

/// Moves `name` to `rejected/` with `<name>.error` (written first, so a
/// rejected file always has its reason) holding `reason`.
fn reject(folder: &Path, name: &str, reason: &str) -> std::io::Result<()> {
    let rejected = folder.join(REJECTED);
    check_owned_dir(&rejected)?;
    let target = free_name(&rejected, name, 0);
    let error_file = PathBuf::from(format!("{}.error", target.display()));
    let text = format!("{reason}\n");
    write_atomically(&error_file, text.as_bytes())
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    check_owned_dir(&rejected)?;
    std::fs::rename(folder.join(name), &target)
}

/// `dir/name`, or when that is taken (by anything, a dangling symbolic
/// link included) `dir/<stem>.<n>.json` with the first free `n` from
/// `hint`.
fn free_name(dir: &Path, name: &str, hint: i64) -> PathBuf {
    let taken = |path: &Path| std::fs::symlink_metadata(path).is_ok();
    let candidate = dir.join(name);
    if !taken(&candidate) {
        return candidate;
    }
    let stem = name.strip_suffix(".json").unwrap_or(name);
    let mut n = hint.max(1);
    loop {
        let candidate = dir.join(format!("{stem}.{n}.json"));
        if !taken(&candidate) {
            return candidate;
        }
        n += 1;
    }
}
