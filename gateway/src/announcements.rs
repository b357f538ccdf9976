//! Joint announcements (联合发布) and simultaneous release (同时发布).
//!
//! A **draft** is a `JOINT_ANNOUNCEMENT` whose `recipients` are its
//! co-signers. Until it is released only its sender and the co-signers see
//! it (`policy::decide`), whatever level it is marked. Each co-signer
//! answers with its own signed `ANNOUNCEMENT_APPROVED` or
//! `ANNOUNCEMENT_REJECTED`, naming the draft in `body.announcement.draft`
//! by sender, id and the SHA-256 of the bytes the drafter signed
//! (SIGNING.md): an approval of another text is refused. Once every
//! co-signer approved (and its `release_at`, if any, has come), the gateway
//! releases it: it emits an `ANNOUNCEMENT_RELEASED` notification of its
//! own, marked `PUBLIC`, carrying the draft's text and the references of
//! the draft and of every approval. A rejected draft is never released.
//!
//! A **simultaneous** draft (`body.announcement.simultaneous`, with a
//! `release_at`) is one agency's own version: every agency of the group
//! (the sender and its recipients) publishes its version under the same
//! `case_ref` and `release_at`, listing the others. Nobody approves; at
//! `release_at`, once every member's version is stored, the gateway
//! releases all versions together, in one transaction.
//!
//! Every check and every state change runs inside the publishing
//! transaction ([`check_in`] before the row is written, [`record_in`] after
//! it), and a release is emitted in the same transaction as the answer
//! or the timer tick that causes it ([`due_in`]): a draft is released once,
//! across restarts and replicas, or not at all.

use std::collections::BTreeSet;

use sqlx::{AnyConnection, Row};

use liandong_core::domain::Instant;
use liandong_core::pb;
use liandong_core::registry::{GATEWAY_SENDER, Registry};
use liandong_core::signing;

use crate::store::{NewNotification, Store, StoreError};
use crate::supervision::{Emitted, GatewayKey, emit_in};

#[cfg(test)]
mod tests;

/// Where an announcement stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Waiting for approvals, versions or its release time.
    Pending,
    /// A co-signer rejected it: never released.
    Rejected,
    /// Released to the public.
    Released,
}

impl State {
    fn column(self) -> &'static str {
        match self {
            Self::Pending => "PENDING",
            Self::Rejected => "REJECTED",
            Self::Released => "RELEASED",
        }
    }

    fn parse(text: &str) -> Result<Self, StoreError> {
        match text {
            "PENDING" => Ok(Self::Pending),
            "REJECTED" => Ok(Self::Rejected),
            "RELEASED" => Ok(Self::Released),
            other => Err(StoreError::Corrupt(format!(
                "announcements.state holds {other:?}"
            ))),
        }
    }
}

/// Why an announcement notification was refused; nothing was stored.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// A field is missing or does not fit (`INVALID_ARGUMENT`).
    #[error("{field}: {reason}")]
    Field {
        /// The field, dotted.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The caller may not answer this draft (`PERMISSION_DENIED`).
    #[error("{0}")]
    NotCosigner(String),
    /// The draft is not in a state that allows it (`FAILED_PRECONDITION`).
    #[error("{0}")]
    State(String),
}

fn field(field: &str, reason: impl Into<String>) -> Refusal {
    Refusal::Field {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// What [`check_in`] found, for [`record_in`] to write once the row has
/// its sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Checked {
    /// Not an announcement notification: nothing to do.
    Unrelated,
    /// A new draft or simultaneous version.
    Draft {
        /// Who must approve (joint) or publish a version (simultaneous,
        /// the sender included), sorted.
        cosigners: Vec<String>,
        /// Hex SHA-256 of the bytes its sender signed.
        digest: String,
        /// Release no earlier than this.
        release_at: Option<Instant>,
        /// One version of a simultaneous release.
        simultaneous: bool,
    },
    /// An approval or a rejection of the draft stored at `draft_sequence`.
    Answer {
        /// The draft's sequence.
        draft_sequence: u64,
        /// True for an approval.
        approved: bool,
        /// Hex SHA-256 of the bytes the answering agency signed.
        digest: String,
    },
}

/// A release to emit: the draft (or version) and what released it.
#[derive(Debug, Clone, PartialEq)]
pub struct Release {
    /// The draft's sequence.
    pub draft_sequence: u64,
    /// The draft as its sender published it.
    pub draft: pb::Notification,
    /// The draft, by reference.
    pub draft_ref: pb::NotificationRef,
    /// The approvals (joint) or the other versions (simultaneous).
    pub approvals: Vec<pb::NotificationRef>,
}

impl Release {
    /// The `ANNOUNCEMENT_RELEASED` notification the gateway publishes for
    /// it (unsigned: the emitter signs it): `PUBLIC`, the draft's case,
    /// region, summary and body, with the draft and approvals referenced.
    pub fn notification(&self, released_at: Instant) -> pb::Notification {
        let mut body = self.draft.body.clone().unwrap_or_default();
        body.announcement = Some(pb::Announcement {
            release_at: None,
            simultaneous: false,
            draft: Some(self.draft_ref.clone()),
            approvals: self.approvals.clone(),
        });
        pb::Notification {
            notification_id: format!(
                "release-{}-{}",
                self.draft_sequence,
                released_at.unix_micros()
            ),
            case_ref: self.draft.case_ref.clone(),
            event: pb::EventType::AnnouncementReleased as i32,
            confidentiality: pb::Confidentiality::Public as i32,
            region: self.draft.region.clone(),
            occurred_at: Some(released_at.to_wire()),
            summary: self.draft.summary.clone(),
            body: Some(body),
            sender: GATEWAY_SENDER.to_owned(),
            contact: self.draft.contact.clone(),
            ..Default::default()
        }
    }
}

/// The digest that pins a notification: hex SHA-256 of the bytes its
/// sender signed.
pub fn digest(notification: &pb::Notification, sender: &str) -> String {
    signing::signed_digest(notification, sender)
}

/// Checks an announcement notification about to be stored, inside the
/// publishing transaction; `Ok(Err(_))` refuses it with nothing written.
pub async fn check_in(
    conn: &mut AnyConnection,
    registry: &Registry,
    new: &NewNotification,
) -> Result<Result<Checked, Refusal>, StoreError> {
    let event = new.envelope.event.to_wire();
    // Only announcements carry `body.announcement` (checked with the rest
    // of the notification's form): nothing else needs decoding here.
    if !matches!(
        event,
        pb::EventType::JointAnnouncement
            | pb::EventType::AnnouncementApproved
            | pb::EventType::AnnouncementRejected
    ) {
        return Ok(Ok(Checked::Unrelated));
    }
    let wire = &decode(&new.payload, 0)?;
    let sender = new.envelope.sender.as_str();
    let announcement = wire.body.as_ref().and_then(|b| b.announcement.as_ref());
    match event {
        pb::EventType::JointAnnouncement => Ok(check_draft(conn, registry, new, wire).await?),
        pb::EventType::AnnouncementApproved | pb::EventType::AnnouncementRejected => {
            let Some(draft) = announcement.and_then(|a| a.draft.as_ref()) else {
                return Ok(Err(field(
                    "notification.body.announcement.draft",
                    "is required: name the draft by sender, notification_id and sha256",
                )));
            };
            let approved = event == pb::EventType::AnnouncementApproved;
            Ok(check_answer(conn, new, draft, approved)
                .await?
                .map(|draft_sequence| Checked::Answer {
                    draft_sequence,
                    approved,
                    digest: digest(wire, sender),
                }))
        }
        _ => Ok(Ok(Checked::Unrelated)),
    }
}

async fn check_draft(
    conn: &mut AnyConnection,
    registry: &Registry,
    new: &NewNotification,
    wire: &pb::Notification,
) -> Result<Result<Checked, Refusal>, StoreError> {
    let sender = new.envelope.sender.as_str();
    let announcement = wire
        .body
        .as_ref()
        .and_then(|b| b.announcement.clone())
        .unwrap_or_default();
    if announcement.draft.is_some() || !announcement.approvals.is_empty() {
        return Ok(Err(field(
            "notification.body.announcement",
            "a draft names no draft or approvals; those are for answers and releases",
        )));
    }
    if new.envelope.recipients.is_empty() {
        return Ok(Err(field(
            "notification.recipients",
            "a joint announcement lists its co-signers here; none are listed",
        )));
    }
    for (i, cosigner) in new.envelope.recipients.iter().enumerate() {
        let member = registry
            .get(cosigner)
            .is_some_and(|agency| agency.role.is_member());
        if !member {
            return Ok(Err(field(
                &format!("notification.recipients[{i}]"),
                format!("{cosigner} is not a member agency and cannot co-sign"),
            )));
        }
    }
    // Checked for form with the rest of the notification.
    let release_at = announcement
        .release_at
        .and_then(|at| Instant::from_wire("release_at", Some(at)).ok());
    let mut cosigners: BTreeSet<String> = new
        .envelope
        .recipients
        .iter()
        .map(ToString::to_string)
        .collect();
    if announcement.simultaneous {
        let Some(release_at) = release_at else {
            return Ok(Err(field(
                "notification.body.announcement.release_at",
                "is required for a simultaneous release: the time all versions go out",
            )));
        };
        cosigners.insert(sender.to_owned());
        // Every version of one release names the same group.
        let others = sqlx::query(
            "SELECT sender, cosigners, state FROM announcements \
             WHERE case_ref = $1 AND simultaneous = 1 AND release_at = $2",
        )
        .bind(new.envelope.case_ref.as_str())
        .bind(release_at.unix_micros())
        .fetch_all(&mut *conn)
        .await?;
        for row in others {
            let group: String = row.try_get("cosigners")?;
            let state = State::parse(&row.try_get::<String, _>("state")?)?;
            let version_of: String = row.try_get("sender")?;
            if state != State::Pending {
                return Ok(Err(Refusal::State(format!(
                    "the simultaneous release of case {} at {release_at} is already {}",
                    new.envelope.case_ref,
                    state.column().to_lowercase()
                ))));
            }
            if version_of == sender {
                return Ok(Err(Refusal::State(format!(
                    "{sender} already published its version of the simultaneous release of case {} at {release_at}",
                    new.envelope.case_ref
                ))));
            }
            let expected: BTreeSet<String> = group.split(' ').map(str::to_owned).collect();
            if expected != cosigners {
                return Ok(Err(field(
                    "notification.recipients",
                    format!(
                        "the other versions of this simultaneous release name the group {}; this one names {}",
                        join(&expected),
                        join(&cosigners)
                    ),
                )));
            }
        }
    }
    Ok(Ok(Checked::Draft {
        cosigners: cosigners.into_iter().collect(),
        digest: digest(wire, sender),
        release_at,
        simultaneous: announcement.simultaneous,
    }))
}

fn join(set: &BTreeSet<String>) -> String {
    set.iter().cloned().collect::<Vec<_>>().join(", ")
}

/// The draft's sequence when `new` may answer it.
async fn check_answer(
    conn: &mut AnyConnection,
    new: &NewNotification,
    draft: &pb::NotificationRef,
    approved: bool,
) -> Result<Result<u64, Refusal>, StoreError> {
    let answerer = new.envelope.sender.as_str();
    let row = sqlx::query(
        "SELECT sequence, case_ref, cosigners, digest, simultaneous, state FROM announcements \
         WHERE sender = $1 AND notification_id = $2",
    )
    .bind(&draft.sender)
    .bind(&draft.notification_id)
    .fetch_optional(&mut *conn)
    .await?;
    let name = format!("{}/{}", draft.sender, draft.notification_id);
    let Some(row) = row else {
        return Ok(Err(Refusal::State(format!(
            "no draft announcement {name} is stored"
        ))));
    };
    let sequence = crate::store::to_u64(row.try_get("sequence")?, "sequence")?;
    let case_ref: String = row.try_get("case_ref")?;
    let cosigners: String = row.try_get("cosigners")?;
    let stored_digest: String = row.try_get("digest")?;
    let simultaneous: i64 = row.try_get("simultaneous")?;
    let state = State::parse(&row.try_get::<String, _>("state")?)?;
    if case_ref != new.envelope.case_ref.as_str() {
        return Ok(Err(field(
            "notification.case_ref",
            format!("the draft {name} belongs to case {case_ref}"),
        )));
    }
    if !cosigners.split(' ').any(|c| c == answerer) {
        return Ok(Err(Refusal::NotCosigner(format!(
            "{answerer} is not a co-signer of the draft {name} (co-signers: {})",
            cosigners.replace(' ', ", ")
        ))));
    }
    if simultaneous != 0 {
        return Ok(Err(Refusal::State(format!(
            "the draft {name} is a simultaneous release: each agency publishes its own version instead of answering"
        ))));
    }
    if stored_digest != draft.sha256 {
        return Ok(Err(Refusal::State(format!(
            "the draft {name} has digest {stored_digest}; this {} names {}, another text",
            if approved { "approval" } else { "rejection" },
            draft.sha256
        ))));
    }
    if state != State::Pending {
        return Ok(Err(Refusal::State(format!(
            "the draft {name} is already {}",
            state.column().to_lowercase()
        ))));
    }
    let answered: Option<i64> = sqlx::query_scalar(
        "SELECT approved FROM announcement_answers WHERE draft_sequence = $1 AND agency = $2",
    )
    .bind(crate::store::to_i64(sequence))
    .bind(answerer)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some(previous) = answered {
        return Ok(Err(Refusal::State(format!(
            "{answerer} already {} the draft {name}",
            if previous != 0 {
                "approved"
            } else {
                "rejected"
            }
        ))));
    }
    Ok(Ok(sequence))
}

/// Records what [`check_in`] found, now that the notification is stored
/// at `sequence`, and returns the releases it makes due at `now`: the
/// caller emits each and marks it with [`mark_released_in`], in the same
/// transaction.
pub async fn record_in(
    conn: &mut AnyConnection,
    new: &NewNotification,
    checked: &Checked,
    sequence: u64,
    now: Instant,
) -> Result<Vec<Release>, StoreError> {
    match checked {
        Checked::Unrelated => Ok(Vec::new()),
        Checked::Draft {
            cosigners,
            digest,
            release_at,
            simultaneous,
        } => {
            sqlx::query(
                "INSERT INTO announcements (sequence, sender, notification_id, case_ref, \
                 cosigners, digest, release_at, simultaneous, state) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 'PENDING')",
            )
            .bind(crate::store::to_i64(sequence))
            .bind(new.envelope.sender.as_str())
            .bind(new.envelope.id.as_str())
            .bind(new.envelope.case_ref.as_str())
            .bind(cosigners.join(" "))
            .bind(digest)
            .bind(release_at.map(Instant::unix_micros))
            .bind(i64::from(*simultaneous))
            .execute(&mut *conn)
            .await?;
            if *simultaneous {
                due_group_in(
                    conn,
                    new.envelope.case_ref.as_str(),
                    release_at.as_ref(),
                    now,
                )
                .await
            } else {
                Ok(Vec::new())
            }
        }
        Checked::Answer {
            draft_sequence,
            approved,
            digest,
        } => {
            sqlx::query(
                "INSERT INTO announcement_answers (draft_sequence, agency, approved, sequence, \
                 notification_id, digest) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(crate::store::to_i64(*draft_sequence))
            .bind(new.envelope.sender.as_str())
            .bind(i64::from(*approved))
            .bind(crate::store::to_i64(sequence))
            .bind(new.envelope.id.as_str())
            .bind(digest)
            .execute(&mut *conn)
            .await?;
            if !approved {
                sqlx::query("UPDATE announcements SET state = 'REJECTED' WHERE sequence = $1")
                    .bind(crate::store::to_i64(*draft_sequence))
                    .execute(&mut *conn)
                    .await?;
                return Ok(Vec::new());
            }
            Ok(joint_release_in(conn, *draft_sequence, now)
                .await?
                .into_iter()
                .collect())
        }
    }
}

/// Every release due at `now` that no publish triggered: joint drafts
/// fully approved whose `release_at` has come, and simultaneous groups
/// complete at their time. Run by the gateway's timer, in a transaction.
pub async fn due_in(conn: &mut AnyConnection, now: Instant) -> Result<Vec<Release>, StoreError> {
    let rows = sqlx::query(
        "SELECT sequence, case_ref, release_at, simultaneous FROM announcements \
         WHERE state = 'PENDING' AND release_at IS NOT NULL AND release_at <= $1 \
         ORDER BY sequence",
    )
    .bind(now.unix_micros())
    .fetch_all(&mut *conn)
    .await?;
    let mut releases = Vec::new();
    let mut groups_seen = BTreeSet::new();
    for row in rows {
        let sequence = crate::store::to_u64(row.try_get("sequence")?, "sequence")?;
        let simultaneous: i64 = row.try_get("simultaneous")?;
        if simultaneous == 0 {
            releases.extend(joint_release_in(conn, sequence, now).await?);
            continue;
        }
        let case_ref: String = row.try_get("case_ref")?;
        let release_at: i64 = row.try_get("release_at")?;
        if groups_seen.insert((case_ref.clone(), release_at)) {
            let at = crate::store::instant(release_at)?;
            releases.extend(due_group_in(conn, &case_ref, Some(&at), now).await?);
        }
    }
    Ok(releases)
}

/// The earliest `release_at` of a pending announcement (unix
/// microseconds), for the timer: a read.
pub async fn next_release(store: &Store) -> Result<Option<i64>, StoreError> {
    let mut conn = store.read_connection().await?;
    Ok(sqlx::query_scalar(
        "SELECT MIN(release_at) FROM announcements WHERE state = 'PENDING' AND release_at IS NOT NULL",
    )
    .fetch_one(&mut *conn)
    .await?)
}

/// Emits `release` as the gateway's `ANNOUNCEMENT_RELEASED` notification
/// and marks its draft released, in the open transaction (whose caller
/// holds the publish lock).
pub async fn release_in(
    conn: &mut AnyConnection,
    key: &GatewayKey,
    release: &Release,
    now: Instant,
) -> Result<Emitted, StoreError> {
    let emitted = emit_in(conn, key, release.notification(now)).await?;
    if !mark_released_in(conn, release.draft_sequence, emitted.receipt.sequence, now).await? {
        return Err(StoreError::Corrupt(format!(
            "the announcement stored at sequence {} was released twice",
            release.draft_sequence
        )));
    }
    tracing::info!(
        case.ref = %release.draft.case_ref,
        announcement.sequence = release.draft_sequence,
        notification.sequence = emitted.receipt.sequence,
        "joint announcement released to the public"
    );
    Ok(emitted)
}

/// Marks a release emitted as the notification at `release_sequence`.
/// Guarded: a draft already released is left alone and `false` returned,
/// so the caller can roll back a duplicate emission.
pub async fn mark_released_in(
    conn: &mut AnyConnection,
    draft_sequence: u64,
    release_sequence: u64,
    at: Instant,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "UPDATE announcements SET state = 'RELEASED', released_at = $1, release_sequence = $2 \
         WHERE sequence = $3 AND state = 'PENDING'",
    )
    .bind(at.unix_micros())
    .bind(crate::store::to_i64(release_sequence))
    .bind(crate::store::to_i64(draft_sequence))
    .execute(&mut *conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The release of the joint draft at `draft_sequence` when every
/// co-signer approved it and its time has come.
async fn joint_release_in(
    conn: &mut AnyConnection,
    draft_sequence: u64,
    now: Instant,
) -> Result<Option<Release>, StoreError> {
    let row = sqlx::query(
        "SELECT a.cosigners, a.release_at, a.state, a.sender, a.notification_id, a.digest, \
                n.payload \
         FROM announcements a JOIN notifications n ON n.sequence = a.sequence \
         WHERE a.sequence = $1",
    )
    .bind(crate::store::to_i64(draft_sequence))
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    if State::parse(&row.try_get::<String, _>("state")?)? != State::Pending {
        return Ok(None);
    }
    let release_at: Option<i64> = row.try_get("release_at")?;
    if release_at.is_some_and(|at| at > now.unix_micros()) {
        return Ok(None);
    }
    let cosigners: String = row.try_get("cosigners")?;
    let answers = sqlx::query(
        "SELECT agency, approved, sequence, notification_id, digest FROM announcement_answers \
         WHERE draft_sequence = $1 ORDER BY sequence",
    )
    .bind(crate::store::to_i64(draft_sequence))
    .fetch_all(&mut *conn)
    .await?;
    let mut approvals = Vec::new();
    let mut approvers = BTreeSet::new();
    for answer in answers {
        let approved: i64 = answer.try_get("approved")?;
        if approved == 0 {
            return Ok(None);
        }
        let agency: String = answer.try_get("agency")?;
        approvers.insert(agency.clone());
        approvals.push(pb::NotificationRef {
            sender: agency,
            notification_id: answer.try_get("notification_id")?,
            sha256: answer.try_get("digest")?,
            sequence: crate::store::to_u64(answer.try_get("sequence")?, "sequence")?,
        });
    }
    if !cosigners.split(' ').all(|c| approvers.contains(c)) {
        return Ok(None);
    }
    let draft = decode(&row.try_get::<Vec<u8>, _>("payload")?, draft_sequence)?;
    Ok(Some(Release {
        draft_sequence,
        draft,
        draft_ref: pb::NotificationRef {
            sender: row.try_get("sender")?,
            notification_id: row.try_get("notification_id")?,
            sha256: row.try_get("digest")?,
            sequence: draft_sequence,
        },
        approvals,
    }))
}

/// The releases of the simultaneous group (case, time) when its time has
/// come and every member's version is stored: one per version.
async fn due_group_in(
    conn: &mut AnyConnection,
    case_ref: &str,
    release_at: Option<&Instant>,
    now: Instant,
) -> Result<Vec<Release>, StoreError> {
    let Some(release_at) = release_at else {
        return Ok(Vec::new());
    };
    if release_at.unix_micros() > now.unix_micros() {
        return Ok(Vec::new());
    }
    let rows = sqlx::query(
        "SELECT a.sequence, a.sender, a.notification_id, a.digest, a.cosigners, a.state, \
                n.payload \
         FROM announcements a JOIN notifications n ON n.sequence = a.sequence \
         WHERE a.case_ref = $1 AND a.simultaneous = 1 AND a.release_at = $2 \
         ORDER BY a.sequence",
    )
    .bind(case_ref)
    .bind(release_at.unix_micros())
    .fetch_all(&mut *conn)
    .await?;
    let mut versions = Vec::new();
    let mut group = BTreeSet::new();
    for row in &rows {
        if State::parse(&row.try_get::<String, _>("state")?)? != State::Pending {
            return Ok(Vec::new());
        }
        let cosigners: String = row.try_get("cosigners")?;
        group.extend(cosigners.split(' ').map(str::to_owned));
        let sequence = crate::store::to_u64(row.try_get("sequence")?, "sequence")?;
        versions.push((
            pb::NotificationRef {
                sender: row.try_get("sender")?,
                notification_id: row.try_get("notification_id")?,
                sha256: row.try_get("digest")?,
                sequence,
            },
            row.try_get::<Vec<u8>, _>("payload")?,
        ));
    }
    let published: BTreeSet<String> = versions.iter().map(|(r, _)| r.sender.clone()).collect();
    if versions.is_empty() || published != group {
        return Ok(Vec::new());
    }
    let refs: Vec<pb::NotificationRef> = versions.iter().map(|(r, _)| r.clone()).collect();
    versions
        .into_iter()
        .map(|(draft_ref, payload)| {
            Ok(Release {
                draft_sequence: draft_ref.sequence,
                draft: decode(&payload, draft_ref.sequence)?,
                approvals: refs
                    .iter()
                    .filter(|r| r.sequence != draft_ref.sequence)
                    .cloned()
                    .collect(),
                draft_ref,
            })
        })
        .collect()
}

/// The notification encoded in `payload` (stored at `sequence`, or about
/// to be stored when 0).
fn decode(payload: &[u8], sequence: u64) -> Result<pb::Notification, StoreError> {
    use prost::Message;
    pb::Notification::decode(payload).map_err(|error| {
        StoreError::Corrupt(format!(
            "the announcement at sequence {sequence} does not decode: {error}"
        ))
    })
}
