//! Supervision signals: what needs the procuratorate's attention now.
//!
//! - open breaches: deadlines whose alert fired and whose awaited act has
//!   not come (`deadlines.breached_at` set, `stopped_at` empty);
//! - stuck cases: a case in one open state for longer than the asked number
//!   of days (`cases.state_since`); closed and settled states (judged, not
//!   prosecuted, declined, penalized) are never stuck;
//! - penalty without transfer (以罚代刑): a `PENALTY_DECIDED` whose body
//!   carries a measurement at or above a configured crime threshold, in a
//!   case without any `CASE_TRANSFERRED`;
//! - transfer without filing (有案不立): a case transferred, or whose
//!   transfer was received, without a filing decision yet;
//! - filed without progress (立而不侦): a case filed longer ago than
//!   `[supervision] filed_idle_days` without any later state.
//!
//! Each signal is listed only for a viewer who may see its case (a
//! notification of it, in full or as a stub); a penalty's measurements
//! are body content, so that signal is listed only for a viewer who reads
//! the penalty in full.

use std::collections::BTreeSet;

use prost::Message;
use sqlx::AnyConnection;

use liandong_core::domain::{FieldError, Instant, Region};
use liandong_core::pb;

use super::{Viewer, data, parse_region, visible_cases};
use crate::policy::Rules;
use crate::store::StoreError;

/// Days in one state after which a case counts as stuck when the request
/// says 0.
pub const DEFAULT_STUCK_DAYS: u32 = 30;

/// The most days a request may ask for.
pub const MAX_STUCK_DAYS: u32 = 3650;

/// Days a filed case may go without a later state before it is signalled,
/// unless configured. No statute fixes it; it is the mechanism's choice.
pub const DEFAULT_FILED_IDLE_DAYS: u32 = 60;

const MICROS_PER_DAY: i64 = 86_400_000_000;

/// A crime-level quantity (config `[supervision.crime_thresholds]`): a
/// penalty whose body carries measurement `measurement` with a value at or
/// above `minimum` describes conduct that is a crime and must be
/// transferred. The unit is the last `_`-separated word of the name
/// (`hazardous_waste_tonnes`: tonnes); a measurement whose `unit` field is
/// set to anything else is not compared.
#[derive(Debug, Clone)]
pub struct CrimeThreshold {
    /// The measurement's name, e.g. `hazardous_waste_tonnes`.
    pub measurement: String,
    /// The least value that reaches the threshold.
    pub minimum: f64,
}

impl PartialEq for CrimeThreshold {
    fn eq(&self, other: &Self) -> bool {
        self.measurement == other.measurement && self.minimum.to_bits() == other.minimum.to_bits()
    }
}

impl Eq for CrimeThreshold {}

impl CrimeThreshold {
    /// The unit the name states (its last `_`-separated word).
    pub fn unit(&self) -> &str {
        self.measurement.rsplit('_').next().unwrap_or_default()
    }

    /// The measured value when `measurement` is this threshold's quantity
    /// in its unit and reaches it.
    fn reached_by(&self, measurement: &pb::Measurement) -> Option<f64> {
        if measurement.name != self.measurement {
            return None;
        }
        if !measurement.unit.is_empty() && !measurement.unit.eq_ignore_ascii_case(self.unit()) {
            return None;
        }
        let value: f64 = measurement.value.trim().parse().ok()?;
        (value.is_finite() && value >= self.minimum).then_some(value)
    }
}

/// The default crime thresholds: illegally discharging, dumping or
/// disposing of three tonnes or more of hazardous waste (2023
/// 最高人民法院、最高人民检察院《关于办理环境污染刑事案件适用法律若干问题的解释》
/// 第一条第（二）项: 非法排放、倾倒、处置危险废物三吨以上的).
pub fn default_crime_thresholds() -> Vec<CrimeThreshold> {
    vec![CrimeThreshold {
        measurement: "hazardous_waste_tonnes".into(),
        minimum: 3.0,
    }]
}

/// The supervision settings (config `[supervision]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupervisionSettings {
    /// Crime-level quantities for the penalty-without-transfer signal.
    pub crime_thresholds: Vec<CrimeThreshold>,
    /// Days a filed case may go without progress before it is signalled.
    pub filed_idle_days: u32,
}

impl Default for SupervisionSettings {
    fn default() -> Self {
        Self {
            crime_thresholds: default_crime_thresholds(),
            filed_idle_days: DEFAULT_FILED_IDLE_DAYS,
        }
    }
}

/// A validated `SignalsRequest`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignalQuery {
    /// The kinds asked for (never empty: an empty request means all).
    pub kinds: BTreeSet<i32>,
    /// Days after which a case counts as stuck.
    pub stuck_days: u32,
    /// Only cases within this region.
    pub region: Option<Region>,
}

const ALL_KINDS: [pb::SignalKind; 5] = [
    pb::SignalKind::OpenBreach,
    pb::SignalKind::StuckCase,
    pb::SignalKind::PenaltyWithoutTransfer,
    pb::SignalKind::TransferWithoutFiling,
    pb::SignalKind::FiledWithoutProgress,
];

impl SignalQuery {
    /// Every kind, with `stuck_days` (0: the default) and no region.
    pub fn all(stuck_days: u32) -> Result<Self, FieldError> {
        Self::try_from(pb::SignalsRequest {
            kinds: Vec::new(),
            stuck_days,
            region: String::new(),
        })
    }
}

impl TryFrom<pb::SignalsRequest> for SignalQuery {
    type Error = FieldError;

    fn try_from(request: pb::SignalsRequest) -> Result<Self, FieldError> {
        let pb::SignalsRequest {
            kinds,
            stuck_days,
            region,
        } = request;
        let mut wanted = BTreeSet::new();
        for (i, kind) in kinds.iter().enumerate() {
            match pb::SignalKind::try_from(*kind) {
                Ok(pb::SignalKind::Unspecified) | Err(_) => {
                    return Err(FieldError::new(
                        format!("kinds[{i}]"),
                        format!("{kind} is not a signal kind"),
                    ));
                }
                Ok(kind) => {
                    wanted.insert(kind as i32);
                }
            }
        }
        if wanted.is_empty() {
            wanted = ALL_KINDS.iter().map(|kind| *kind as i32).collect();
        }
        if stuck_days > MAX_STUCK_DAYS {
            return Err(FieldError::new(
                "stuck_days",
                format!("must be at most {MAX_STUCK_DAYS}"),
            ));
        }
        Ok(Self {
            kinds: wanted,
            stuck_days: if stuck_days == 0 {
                DEFAULT_STUCK_DAYS
            } else {
                stuck_days
            },
            region: parse_region(&region)?,
        })
    }
}

/// States no one is expected to act on any more.
const SETTLED: [pb::CaseState; 4] = [
    pb::CaseState::Judged,
    pb::CaseState::NotProsecuted,
    pb::CaseState::Declined,
    pb::CaseState::Penalized,
];

/// The open states a case can be stuck in.
fn open_states() -> Vec<i32> {
    (1..=16)
        .filter(|state| {
            pb::CaseState::try_from(*state).is_ok_and(|state| !SETTLED.contains(&state))
        })
        .collect()
}

fn state_name(state: i64) -> String {
    i32::try_from(state)
        .ok()
        .and_then(|state| pb::CaseState::try_from(state).ok())
        .map(|state| {
            let name = state.as_str_name();
            name.strip_prefix("CASE_STATE_").unwrap_or(name).to_owned()
        })
        .unwrap_or_else(|| format!("state {state}"))
}

/// The agency expected to act on a case in `state`: the police while a
/// transfer, a reconsideration or a filed case waits on them; nobody known
/// otherwise.
fn expected_agency(state: i64, police: Option<&str>) -> String {
    use pb::CaseState as S;
    let waits_on_police = i32::try_from(state)
        .ok()
        .and_then(|state| S::try_from(state).ok())
        .is_some_and(|state| {
            matches!(
                state,
                S::Transferred
                    | S::TransferReceived
                    | S::Filed
                    | S::Reconsideration
                    | S::FilingSupervised
            )
        });
    if waits_on_police {
        police.unwrap_or_default().to_owned()
    } else {
        String::new()
    }
}

fn days_since(now: Instant, since: i64) -> i64 {
    (now.unix_micros() - since) / MICROS_PER_DAY
}

fn timestamp(micros: i64) -> Option<prost_types::Timestamp> {
    Instant::from_unix_micros(micros).map(Instant::to_wire)
}

/// The signals `query` asks for as `viewer` may see them under `rules`,
/// at `now`, ordered by kind, then since when, then case.
pub async fn signals(
    conn: &mut AnyConnection,
    rules: &Rules,
    viewer: &Viewer,
    settings: &SupervisionSettings,
    query: &SignalQuery,
    now: Instant,
) -> Result<Vec<pb::Signal>, StoreError> {
    use pb::SignalKind as K;
    let wants = |kind: K| query.kinds.contains(&(kind as i32));
    let mut found = Vec::new();

    if wants(K::OpenBreach) {
        for breach in data::deadlines(
            conn,
            "d.breached_at IS NOT NULL AND d.stopped_at IS NULL",
            &[],
        )
        .await?
        {
            found.push(pb::Signal {
                kind: K::OpenBreach as i32,
                case_ref: breach.case_ref,
                state: breach
                    .state
                    .and_then(|s| i32::try_from(s).ok())
                    .unwrap_or(0),
                since: timestamp(breach.due_at),
                region: breach.region.unwrap_or_default(),
                agency: breach.late_agency.clone(),
                rule: breach.rule,
                detail: format!(
                    "due {}, {} days ago; {} has not acted; supervised by {}",
                    Instant::from_unix_micros(breach.due_at)
                        .map(|at| at.to_string())
                        .unwrap_or_default(),
                    days_since(now, breach.due_at),
                    breach.late_agency,
                    breach.supervisor
                ),
            });
        }
    }
    if wants(K::StuckCase) {
        let before = now.unix_micros() - i64::from(query.stuck_days) * MICROS_PER_DAY;
        for case in data::cases_in(conn, &open_states(), before).await? {
            found.push(pb::Signal {
                kind: K::StuckCase as i32,
                state: i32::try_from(case.state).unwrap_or(0),
                since: timestamp(case.state_since),
                agency: expected_agency(case.state, case.police.as_deref()),
                rule: format!("stuck_days = {}", query.stuck_days),
                detail: format!(
                    "{} for {} days",
                    state_name(case.state),
                    days_since(now, case.state_since)
                ),
                case_ref: case.case_ref,
                region: case.region,
            });
        }
    }
    if wants(K::TransferWithoutFiling) {
        let states = [
            pb::CaseState::Transferred as i32,
            pb::CaseState::TransferReceived as i32,
        ];
        for case in data::cases_in(conn, &states, i64::MAX).await? {
            found.push(pb::Signal {
                kind: K::TransferWithoutFiling as i32,
                state: i32::try_from(case.state).unwrap_or(0),
                since: timestamp(case.state_since),
                agency: case.police.clone().unwrap_or_default(),
                rule: "a transfer awaits the police's filing decision".into(),
                detail: format!(
                    "{} for {} days; transferred by {}",
                    state_name(case.state),
                    days_since(now, case.state_since),
                    case.transferor.as_deref().unwrap_or("an unrecorded agency")
                ),
                case_ref: case.case_ref,
                region: case.region,
            });
        }
    }
    if wants(K::FiledWithoutProgress) {
        let before = now.unix_micros() - i64::from(settings.filed_idle_days) * MICROS_PER_DAY;
        for case in data::cases_in(conn, &[pb::CaseState::Filed as i32], before).await? {
            found.push(pb::Signal {
                kind: K::FiledWithoutProgress as i32,
                state: i32::try_from(case.state).unwrap_or(0),
                since: timestamp(case.state_since),
                agency: case.police.clone().unwrap_or_default(),
                rule: format!("filed_idle_days = {}", settings.filed_idle_days),
                detail: format!(
                    "filed {} days ago without a later step",
                    days_since(now, case.state_since)
                ),
                case_ref: case.case_ref,
                region: case.region,
            });
        }
    }

    // Every signal so far concerns a case the viewer must be able to see.
    let visible = visible_cases(conn, rules, viewer, found.iter().map(|s| &s.case_ref)).await?;
    found.retain(|signal| visible.visible(&signal.case_ref));

    if wants(K::PenaltyWithoutTransfer) {
        found.extend(penalties_without_transfer(conn, rules, viewer, settings).await?);
    }

    found.retain(|signal| match &query.region {
        None => true,
        Some(filter) => {
            Region::parse("region", &signal.region).is_ok_and(|region| filter.contains(&region))
        }
    });
    found.sort_by(|a, b| {
        (a.kind, a.since.map(|t| (t.seconds, t.nanos)), &a.case_ref).cmp(&(
            b.kind,
            b.since.map(|t| (t.seconds, t.nanos)),
            &b.case_ref,
        ))
    });
    Ok(found)
}

/// 以罚代刑: per case without a transfer, its first penalty the viewer reads
/// in full whose measurements reach a crime threshold.
async fn penalties_without_transfer(
    conn: &mut AnyConnection,
    rules: &Rules,
    viewer: &Viewer,
    settings: &SupervisionSettings,
) -> Result<Vec<pb::Signal>, StoreError> {
    let penalties = data::notices(
        conn,
        "event = $1 AND case_ref NOT IN (SELECT case_ref FROM notifications WHERE event = $2)",
        &[
            i64::from(pb::EventType::PenaltyDecided as i32),
            i64::from(pb::EventType::CaseTransferred as i32),
        ],
    )
    .await?;
    let mut flagged = BTreeSet::new();
    let mut found = Vec::new();
    for penalty in penalties {
        let case_ref = penalty.envelope.case_ref.to_string();
        if flagged.contains(&case_ref) || !viewer.reads(rules, &penalty.envelope) {
            continue;
        }
        let Some(payload) = data::checked_payload(conn, penalty.sequence).await? else {
            continue;
        };
        let Ok(notification) = pb::Notification::decode(payload.as_slice()) else {
            tracing::warn!(
                notification.sequence = penalty.sequence,
                "penalty payload does not decode; left out of supervision signals"
            );
            continue;
        };
        let measurements = notification
            .body
            .map(|body| body.measurements)
            .unwrap_or_default();
        let reached = settings.crime_thresholds.iter().find_map(|threshold| {
            measurements
                .iter()
                .find_map(|m| threshold.reached_by(m))
                .map(|value| (threshold, value))
        });
        let Some((threshold, value)) = reached else {
            continue;
        };
        flagged.insert(case_ref.clone());
        let state = data::case_state(conn, &case_ref).await?;
        found.push(pb::Signal {
            kind: pb::SignalKind::PenaltyWithoutTransfer as i32,
            case_ref,
            state: state.and_then(|s| i32::try_from(s).ok()).unwrap_or(0),
            since: timestamp(penalty.received_at),
            region: penalty.envelope.region.to_string(),
            agency: penalty.envelope.sender.to_string(),
            rule: format!(
                "crime_thresholds.{} = {}",
                threshold.measurement, threshold.minimum
            ),
            detail: format!(
                "penalty {} records {} {} {}, at or above the threshold {}, and the case has no transfer",
                penalty.envelope.id,
                threshold.measurement,
                value,
                threshold.unit(),
                threshold.minimum
            ),
        });
    }
    Ok(found)
}
