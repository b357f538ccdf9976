//! The story `liandong-demo` plays: one hazardous-waste case in Xiangyuan
//! county (襄垣县, 140423), from the environment bureau's first clue to the
//! joint public announcement its three co-signers approve, as the
//! notifications each agency publishes, and how each agency's case system
//! hands them to its adapter daemon.
//!
//! Names, identity numbers and phone numbers of people and companies are
//! fictitious.

use liandong_core::pb::{self, Confidentiality as Level, EventType as Event};

use crate::demo_adapters::Source;

/// The case every step belongs to.
pub const CASE_REF: &str = "CZ-XY-2026-HW-0042";

/// Xiangyuan county's GB/T 2260 code.
pub const REGION: &str = "140423";

/// The durable subscription every subscribing agency opens.
pub const SUBSCRIPTION: &str = "demo-inbox";

/// The environment bureau's Xiangyuan branch, which finds and transfers the case.
pub const EEB: &str = "cz-eeb-xiangyuan";
/// The Xiangyuan county police.
pub const PSB: &str = "cz-psb-xiangyuan";
/// The Xiangyuan county procuratorate.
pub const PROCURATORATE: &str = "cz-procuratorate-xiangyuan";
/// The municipal procuratorate, which supervises the whole city.
pub const CITY_PROCURATORATE: &str = "cz-procuratorate";
/// An environment bureau branch of another district: no party to the case.
pub const BYSTANDER: &str = "cz-eeb-luzhou";
/// The city's press office: an observer.
pub const PRESS: &str = "cz-press-office";

/// Who co-signs the county bureau's joint announcement: the county
/// police, the county procuratorate and the municipal procuratorate. The
/// draft reaches only them (and the bureau); the gateway releases it to
/// everyone once all three approved it.
pub const COSIGNERS: [&str; 3] = [PSB, PROCURATORATE, CITY_PROCURATORATE];

/// The agencies that run an adapter daemon and subscribe, in the order
/// they start (and are reported).
pub const SUBSCRIBERS: [&str; 6] = [
    PSB,
    PROCURATORATE,
    CITY_PROCURATORATE,
    BYSTANDER,
    PRESS,
    EEB,
];

/// The deadline rule the demo shows breached: the police decide whether to
/// file within 3 days of receiving a transferred case (the 2017 measures).
pub const DRILL_RULE: &str = "police-filing-decision";

/// The drill period of [`DRILL_RULE`] in the demo, in seconds: the demo's
/// gateway counts the rule's 3 days as this many seconds of its clock, so
/// that a filing decision can come late while one watches.
pub const DRILL_SECONDS: u32 = 3;

/// The deadline rules file the demo's gateway runs with (`[mechanism]
/// deadlines`, docs/CASES.md): the police filing rule of the 2017
/// measures, with its period shortened to [`DRILL_SECONDS`] seconds for a
/// drill. A rules file replaces the built-in set, so the demo's gateway
/// keeps no other deadline.
pub fn drill_deadlines() -> String {
    format!(
        "# Drill: the police filing rule of the 2017 measures with its 3 days\n\
         # counted as {DRILL_SECONDS} seconds, to show a late decision and its alert.\n\
         [[deadline]]\n\
         name = \"{DRILL_RULE}\"\n\
         legal_basis = \"《环境保护行政执法与刑事司法衔接工作办法》（2017）：公安机关自接受案件之日起3日内\
         作出立案或者不予立案的决定（演练：{DRILL_SECONDS}秒 drill: {DRILL_SECONDS} seconds）\"\n\
         starts_on = [\"TRANSFER_RECEIVED\"]\n\
         stops_on = [\"CASE_FILED\", \"FILING_DECLINED\"]\n\
         period = {{ amount = {DRILL_SECONDS}, unit = \"seconds\" }}\n\
         roll_to_working_day = false\n\
         late = \"starter\"\n\
         supervisor = \"procuratorate\"\n\
         alert = true\n"
    )
}

/// How `agency`'s case system hands notifications to its adapter: the
/// environment bureau's older system drops files, the police's and the
/// procuratorates' post to the local endpoint; the others only receive.
pub fn source_of(agency: &str) -> Source {
    match agency {
        EEB => Source::DropFolder,
        PSB | PROCURATORATE | CITY_PROCURATORATE => Source::Http,
        _ => Source::None,
    }
}

/// One step of the story: a notification and who publishes it.
#[derive(Debug, Clone)]
pub struct Step {
    /// The publishing agency.
    pub sender: &'static str,
    /// The step's short name (`01-clue`), in story order: the drop file's
    /// name and the end of the notification id.
    pub name: String,
    /// When it happened (Beijing time, `YYYY-MM-DD`), for display.
    pub date: String,
    /// What is published.
    pub notification: pb::Notification,
}

/// The steps, in the order they are published.
pub fn steps() -> Vec<Step> {
    let mut steps = vec![
        step(
            EEB,
            "01-clue",
            (2026, 3, 2, 9, 30),
            Event::ClueShared,
            Level::Internal,
            &[],
            "",
            "王桥镇一废弃煤场发现大量非法倾倒的废矿物油，疑似危险废物，现场已封控取样",
            Some(clue_body()),
        ),
        step(
            EEB,
            "02-transfer",
            (2026, 3, 9, 16, 0),
            Event::CaseTransferred,
            Level::Restricted,
            &[PSB],
            "涉案人员尚未到案，内容公开可能导致证据灭失、串供 \
             (suspects not yet in custody; disclosure could destroy evidence)",
            "涉嫌污染环境罪：非法倾倒危险废物（废矿物油，HW08）约12.6吨，移送襄垣县公安局",
            Some(transfer_body()),
        ),
        step(
            PSB,
            "03-received",
            (2026, 3, 10, 10, 0),
            Event::TransferReceived,
            Level::Restricted,
            &[EEB, PROCURATORATE],
            "侦查阶段，防止串供 (investigation under way)",
            "已接收襄环移〔2026〕3号移送材料及现场检测报告",
            None,
        ),
        step(
            PSB,
            "04-filed",
            (2026, 3, 16, 15, 0),
            Event::CaseFiled,
            Level::Restricted,
            &[EEB, PROCURATORATE],
            "侦查阶段，防止串供 (investigation under way)",
            "以涉嫌污染环境罪立案侦查（襄公环立字〔2026〕12号）",
            None,
        ),
        step(
            PSB,
            "05-arrest-requested",
            (2026, 4, 8, 11, 0),
            Event::ArrestRequested,
            Level::Restricted,
            &[PROCURATORATE],
            "逮捕决定作出前不得扩散 (not to be shared before the decision)",
            "提请批准逮捕犯罪嫌疑人张某某",
            None,
        ),
        step(
            PROCURATORATE,
            "06-arrest-approved",
            (2026, 4, 15, 17, 0),
            Event::ArrestApproved,
            Level::Restricted,
            &[PSB, EEB],
            "逮捕执行前不得公开 (not public before the arrest is made)",
            "批准逮捕犯罪嫌疑人张某某（襄检捕〔2026〕9号）",
            None,
        ),
        step(
            PROCURATORATE,
            "07-prosecution",
            (2026, 6, 20, 10, 0),
            Event::ProsecutionFiled,
            Level::Internal,
            &[],
            "",
            "以污染环境罪对长治某化工贸易有限公司及张某某向襄垣县人民法院提起公诉",
            None,
        ),
        step(
            PROCURATORATE,
            "08-judgment",
            (2026, 9, 18, 15, 30),
            Event::JudgmentRecorded,
            Level::Internal,
            &[],
            "",
            "一审判决：被告单位犯污染环境罪，判处罚金；被告人张某某判处有期徒刑一年六个月，\
             并承担应急处置及生态修复费用",
            None,
        ),
    ];
    let draft = step(
        EEB,
        "09-announcement",
        (2026, 9, 25, 10, 0),
        Event::JointAnnouncement,
        Level::Public,
        &COSIGNERS,
        "",
        "襄垣县生态环境、公安、检察机关联合通报：一起非法倾倒危险废物案已依法判决",
        Some(announcement_body()),
    );
    let approvals = [
        (PSB, "10-approved-psb", (2026, 9, 25, 16, 0)),
        (
            PROCURATORATE,
            "11-approved-procuratorate",
            (2026, 9, 27, 9, 0),
        ),
        (CITY_PROCURATORATE, "12-approved-city", (2026, 9, 28, 11, 0)),
    ]
    .map(|(cosigner, name, at)| approval(cosigner, name, at, &draft.notification));
    steps.push(draft);
    steps.extend(approvals);
    steps
}

/// The text the county bureau drafts and its co-signers approve.
pub fn announcement_body() -> pb::CaseBody {
    pb::CaseBody {
        title: "襄垣县王桥镇非法倾倒危险废物案办理情况联合通报".to_owned(),
        description: "2026年3月，襄垣县生态环境分局在王桥镇一废弃煤场发现非法倾倒的废矿物油约12.6吨，\
                      依法移送县公安局。经侦查、审查起诉，襄垣县人民法院一审以污染环境罪判处被告单位罚金，\
                      判处被告人有期徒刑一年六个月，并判令承担应急处置及生态修复费用。"
            .to_owned(),
        location: "山西省长治市襄垣县".to_owned(),
        ..Default::default()
    }
}

/// `cosigner`'s ANNOUNCEMENT_APPROVED of `draft`: naming it by sender, id
/// and the digest of the bytes its sender signed ([`digest_as_signed`]),
/// RESTRICTED to the drafter and the other co-signers until the release.
fn approval(
    cosigner: &'static str,
    name: &str,
    at: (i64, i64, i64, i64, i64),
    draft: &pb::Notification,
) -> Step {
    let others: Vec<&str> = std::iter::once(draft.sender.as_str())
        .chain(COSIGNERS)
        .filter(|agency| *agency != cosigner)
        .collect();
    let mut step = step(
        cosigner,
        name,
        at,
        Event::AnnouncementApproved,
        Level::Restricted,
        &others,
        "联合通报发布前不得公开 (not public before the joint release)",
        "同意联合通报稿",
        None,
    );
    step.notification.body = Some(pb::CaseBody {
        announcement: Some(pb::Announcement {
            draft: Some(pb::NotificationRef {
                sender: draft.sender.clone(),
                notification_id: draft.notification_id.clone(),
                sha256: digest_as_signed(draft),
                sequence: 0,
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    step
}

/// The digest that names `notification` (SIGNING.md): the SHA-256 of the
/// bytes its sender's adapter signs. The adapter signs the notification in
/// the form it checked it (`liandong_core::domain::Notification`), with
/// `sender` set, so the digest is taken of that form; a notification that
/// does not pass the check is digested as it is.
pub fn digest_as_signed(notification: &pb::Notification) -> String {
    let checked = liandong_core::domain::Notification::try_from(notification.clone())
        .map_or_else(|_| notification.clone(), pb::Notification::from);
    liandong_core::signing::signed_digest(&checked, &notification.sender)
}

/// The structured content of the clue. The suspect's identity number and
/// phone and the informant are marked CONFIDENTIAL in the contract
/// (`liandong.v1.sensitivity`): bureaus cleared only to RESTRICTED receive
/// the clue without them.
pub fn clue_body() -> pb::CaseBody {
    pb::CaseBody {
        title: "王桥镇废弃煤场疑似非法倾倒危险废物线索".to_owned(),
        description: "群众举报：近一周夜间有罐车进出王桥镇一废弃煤场。\
                      执法人员现场发现大量黑色油状废液，已封控现场并取样送检。"
            .to_owned(),
        location: "山西省长治市襄垣县王桥镇某村废弃煤场".to_owned(),
        parties: vec![pb::Party {
            role: "suspect".to_owned(),
            name: "张某某".to_owned(),
            identifier: "140423198001010000".to_owned(),
            contact: "13900000000".to_owned(),
        }],
        informant: Some(pb::Informant {
            name: "李某".to_owned(),
            contact: "13800000000".to_owned(),
        }),
        ..Default::default()
    }
}

/// The structured content of the transfer.
pub fn transfer_body() -> pb::CaseBody {
    pb::CaseBody {
        title: "襄垣县王桥镇废弃煤场非法倾倒废矿物油案".to_owned(),
        description: "2026年3月2日，执法人员在王桥镇一废弃煤场发现非法倾倒的废矿物油。\
                      经采样检测属《国家危险废物名录》HW08类危险废物，数量约12.6吨。\
                      初步查明系长治某化工贸易有限公司委托无危险废物经营许可证的张某某运输倾倒。"
            .to_owned(),
        location: "山西省长治市襄垣县王桥镇某村废弃煤场".to_owned(),
        legal_basis: "《中华人民共和国刑法》第三百三十八条；法释〔2023〕7号第一条第（二）项；\
                      《行政执法机关移送涉嫌犯罪案件的规定》第三条"
            .to_owned(),
        document_number: "襄环移〔2026〕3号".to_owned(),
        parties: vec![
            pb::Party {
                role: "company".to_owned(),
                name: "长治某化工贸易有限公司".to_owned(),
                ..Default::default()
            },
            pb::Party {
                role: "suspect".to_owned(),
                name: "张某某".to_owned(),
                ..Default::default()
            },
        ],
        measurements: vec![
            pb::Measurement {
                name: "waste_oil_tonnes".to_owned(),
                value: "12.6".to_owned(),
                unit: "t".to_owned(),
            },
            pb::Measurement {
                name: "contaminated_area".to_owned(),
                value: "380".to_owned(),
                unit: "m2".to_owned(),
            },
        ],
        ..Default::default()
    }
}

#[allow(clippy::too_many_arguments)]
fn step(
    sender: &'static str,
    id: &str,
    (year, month, day, hour, minute): (i64, i64, i64, i64, i64),
    event: Event,
    level: Level,
    recipients: &[&str],
    note: &str,
    summary: &str,
    body: Option<pb::CaseBody>,
) -> Step {
    Step {
        sender,
        name: id.to_owned(),
        date: format!("{year:04}-{month:02}-{day:02}"),
        notification: pb::Notification {
            notification_id: format!("{sender}:{CASE_REF}:{id}"),
            case_ref: CASE_REF.to_owned(),
            event: event as i32,
            confidentiality: level as i32,
            recipients: recipients.iter().map(|r| (*r).to_owned()).collect(),
            confidentiality_note: note.to_owned(),
            region: REGION.to_owned(),
            occurred_at: Some(beijing_time(year, month, day, hour, minute)),
            summary: summary.to_owned(),
            body,
            sender: sender.to_owned(),
            ..Default::default()
        },
    }
}

/// A Beijing-time (UTC+8) wall-clock time as a protobuf timestamp.
pub fn beijing_time(
    year: i64,
    month: i64,
    day: i64,
    hour: i64,
    minute: i64,
) -> prost_types::Timestamp {
    // Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
    // `days_from_civil`).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    prost_types::Timestamp {
        seconds: days * 86_400 + (hour - 8) * 3_600 + minute * 60,
        nanos: 0,
    }
}

/// `CASE_TRANSFERRED` for `EVENT_TYPE_CASE_TRANSFERRED`.
pub fn event_name(event: i32) -> String {
    Event::try_from(event).map_or_else(
        |_| format!("EVENT_{event}"),
        |e| e.as_str_name().trim_start_matches("EVENT_TYPE_").to_owned(),
    )
}

/// `RESTRICTED` for `CONFIDENTIALITY_RESTRICTED`.
pub fn level_name(level: i32) -> String {
    Level::try_from(level).map_or_else(
        |_| format!("LEVEL_{level}"),
        |l| {
            l.as_str_name()
                .trim_start_matches("CONFIDENTIALITY_")
                .to_owned()
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn beijing_time_is_utc_plus_8() {
        // 2026-03-02T09:30:00+08:00 = 2026-03-02T01:30:00Z.
        assert_eq!(beijing_time(2026, 3, 2, 9, 30).seconds, 1_772_415_000);
        assert_eq!(beijing_time(1970, 1, 1, 8, 0).seconds, 0);
    }

    #[test]
    fn every_step_is_a_valid_notification() {
        for step in steps() {
            liandong_core::domain::Notification::try_from(step.notification.clone())
                .unwrap_or_else(|e| panic!("{}: {e}", step.notification.notification_id));
        }
    }

    #[test]
    fn the_drill_rules_time_the_police_filing_decision_in_seconds() {
        let event = |e: Event| liandong_core::domain::Event::from_wire("event", e as i32).unwrap();
        let rules = liandong_gateway::supervision::DeadlineRules::parse(
            &drill_deadlines(),
            std::path::Path::new("drill-deadlines.toml"),
        )
        .unwrap();
        let names: Vec<&str> = rules.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, [DRILL_RULE]);
        let started: Vec<&str> = rules
            .started_by(event(Event::TransferReceived))
            .map(|r| r.name.as_str())
            .collect();
        assert_eq!(started, [DRILL_RULE]);
        assert_eq!(rules.stopped_by(event(Event::CaseFiled)).count(), 1);
        let rule = rules.get(DRILL_RULE).unwrap();
        assert!(rule.legal_basis.contains("drill"), "{}", rule.legal_basis);
        // Three seconds after a receipt it is due, not before.
        let period = rule.period_for(false, false);
        let calendar = liandong_gateway::supervision::Calendar::built_in();
        let zone = jiff::tz::TimeZone::fixed(jiff::tz::offset(8));
        let start = jiff::Timestamp::from_second(1_772_415_000).unwrap();
        let due = period.end(start, &zone, &calendar, false).unwrap();
        assert_eq!(
            due.as_second() - start.as_second(),
            i64::from(DRILL_SECONDS)
        );
    }

    #[test]
    fn each_cosigner_approves_the_draft_as_the_bureau_s_adapter_signs_it() {
        let all = steps();
        let draft = &all
            .iter()
            .find(|s| s.notification.event == Event::JointAnnouncement as i32)
            .unwrap()
            .notification;
        assert_eq!(draft.recipients, COSIGNERS);
        // What the bureau's adapter signs: the drop file's JSON, checked
        // and signed by `prepare`, as the daemon does.
        let key = liandong_certs::SigningKey::generate().unwrap();
        let agency = liandong_core::domain::AgencyId::parse("agency", EEB).unwrap();
        let signer = liandong_adapter::signer::Signer::from_pkcs8(agency, key.pkcs8_der()).unwrap();
        let handed: pb::Notification =
            liandong_core::json::from_json(&liandong_core::json::to_json(draft).to_string())
                .unwrap();
        let prepared = liandong_adapter::daemon::accept::prepare(&signer, handed).unwrap();
        let signed = liandong_core::signing::signed_digest(&prepared.signed, EEB);
        assert_eq!(digest_as_signed(draft), signed);

        let approvals: Vec<&pb::Notification> = all
            .iter()
            .map(|s| &s.notification)
            .filter(|n| n.event == Event::AnnouncementApproved as i32)
            .collect();
        let approvers: Vec<&str> = approvals.iter().map(|n| n.sender.as_str()).collect();
        assert_eq!(approvers, COSIGNERS);
        for approval in approvals {
            let named = approval
                .body
                .as_ref()
                .and_then(|b| b.announcement.as_ref())
                .and_then(|a| a.draft.clone())
                .unwrap();
            assert_eq!(
                named,
                pb::NotificationRef {
                    sender: EEB.to_owned(),
                    notification_id: draft.notification_id.clone(),
                    sha256: signed.clone(),
                    sequence: 0,
                }
            );
            assert_eq!(approval.case_ref, CASE_REF);
            assert!(!approval.recipients.iter().any(|r| r == &approval.sender));
            assert!(approval.recipients.iter().any(|r| r == EEB));
        }
    }

    #[test]
    fn the_story_follows_the_case_lifecycle() {
        use liandong_gateway::cases::machine::{self, Step as Move};
        let mut states = std::collections::BTreeMap::new();
        for step in steps() {
            let n = &step.notification;
            let event = liandong_core::domain::Event::from_wire("event", n.event).unwrap();
            let state = states.get(&n.case_ref).copied();
            match machine::step(state, event) {
                Move::Moves { to, .. } => {
                    states.insert(n.case_ref.clone(), to);
                }
                Move::NotCaseEvent => {}
                Move::Refused => panic!("{}: {event} refused in {state:?}", step.name),
            }
        }
        assert_eq!(
            states.get(CASE_REF).copied(),
            Some(liandong_core::pb::CaseState::Judged)
        );
    }
}
