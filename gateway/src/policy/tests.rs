use std::path::Path;

use liandong_core::domain::{AgencyId, CaseRef, Event, Instant, NotificationId, Region, Role};
use liandong_core::toml_file::FileError;

use super::*;

const REGISTRY: &str = include_str!("../../../deploy/dev/agencies.toml");

fn rules() -> Rules {
    Rules {
        registry: Registry::parse(REGISTRY, Path::new("agencies.toml")).unwrap(),
        policy: Policy::default_policy(),
    }
}

fn agency(rules: &Rules, id: &str) -> Agency {
    rules
        .registry
        .get(&AgencyId::parse("id", id).unwrap())
        .unwrap()
        .clone()
}

fn envelope(
    sender: &str,
    event: pb::EventType,
    level: Confidentiality,
    recipients: &[&str],
) -> Envelope {
    Envelope {
        sender: AgencyId::parse("sender", sender).unwrap(),
        id: NotificationId::parse_field("id", "n").unwrap(),
        case_ref: CaseRef::parse_field("case_ref", "C").unwrap(),
        event: Event::from_wire("event", event as i32).unwrap(),
        confidentiality: level,
        region: Region::parse("region", "140423").unwrap(),
        recipients: recipients
            .iter()
            .map(|r| AgencyId::parse("recipient", r).unwrap())
            .collect(),
        copies: Vec::new(),
    }
}

fn notification(event: &str, level: Confidentiality, recipients: &[&str]) -> Notification {
    Notification::try_from(pb::Notification {
        notification_id: "n".into(),
        case_ref: "C".into(),
        event: event.parse::<Event>().unwrap().to_wire() as i32,
        confidentiality: level.to_wire() as i32,
        recipients: recipients.iter().map(|r| (*r).to_owned()).collect(),
        confidentiality_note: if recipients.is_empty() {
            String::new()
        } else {
            "reason".into()
        },
        region: "140423".into(),
        occurred_at: Some(Instant::now().to_wire()),
        summary: "s".into(),
        ..Default::default()
    })
    .unwrap()
}

#[test]
fn publishing_rights_follow_the_role() {
    let rules = rules();
    let police = agency(&rules, "cz-psb-xiangyuan");
    let n = notification("ARREST_APPROVED", Confidentiality::Internal, &[]);
    assert_eq!(
        check_publish(&rules, &police, &n),
        Err(PublishRefusal::Forbidden(
            "rule publish.POLICE does not allow ARREST_APPROVED".into()
        ))
    );
    let procuratorate = agency(&rules, "cz-procuratorate");
    assert_eq!(check_publish(&rules, &procuratorate, &n), Ok(()));
    let alert = notification("SUPERVISION_ALERT", Confidentiality::Internal, &[]);
    assert!(
        matches!(check_publish(&rules, &procuratorate, &alert), Err(PublishRefusal::Forbidden(r)) if r.contains("gateway only"))
    );
    let observer = agency(&rules, "cz-press-office");
    let announcement = notification("JOINT_ANNOUNCEMENT", Confidentiality::Public, &[]);
    assert!(check_publish(&rules, &observer, &announcement).is_err());
}

#[test]
fn confidential_to_an_uncleared_recipient_is_refused_at_publish() {
    let rules = rules();
    let eeb = agency(&rules, "cz-eeb");
    let n = notification(
        "CASE_TRANSFERRED",
        Confidentiality::Confidential,
        &["cz-psb", "cz-eeb-luzhou"],
    );
    let Err(PublishRefusal::Field(error)) = check_publish(&rules, &eeb, &n) else {
        panic!("must refuse")
    };
    assert_eq!(error.field, "notification.recipients[1]");
    assert!(
        error.reason.contains("cleared only up to RESTRICTED"),
        "{}",
        error.reason
    );
    // A branch cleared to RESTRICTED cannot mark CONFIDENTIAL itself.
    let branch = agency(&rules, "cz-eeb-xiangyuan");
    let n = notification(
        "CASE_TRANSFERRED",
        Confidentiality::Confidential,
        &["cz-psb"],
    );
    assert!(matches!(
        check_publish(&rules, &branch, &n),
        Err(PublishRefusal::Forbidden(_))
    ));
}

#[test]
fn levels_parties_parents_and_oversight_decide_delivery() {
    let rules = rules();
    let transfer = envelope(
        "cz-eeb-xiangyuan",
        pb::EventType::CaseTransferred,
        Confidentiality::Restricted,
        &["cz-psb-xiangyuan"],
    );
    let decide_for = |id: &str| decide(&rules, &agency(&rules, id), &transfer);
    assert_eq!(
        decide_for("cz-eeb-xiangyuan"),
        Decision::Full("own notification".into())
    );
    assert_eq!(
        decide_for("cz-psb-xiangyuan"),
        Decision::Full("listed recipient".into())
    );
    assert_eq!(
        decide_for("cz-psb"),
        Decision::Full("parent of a party".into())
    );
    assert_eq!(
        decide_for("cz-eeb"),
        Decision::Full("parent of a party".into())
    );
    assert!(
        matches!(decide_for("cz-procuratorate-xiangyuan"), Decision::Withheld(r) if r.starts_with("oversight"))
    );
    assert!(
        matches!(decide_for("cz-procuratorate"), Decision::Withheld(_)),
        "a city contains its counties"
    );
    assert_eq!(decide_for("cz-eeb-luzhou"), Decision::Nothing);
    assert_eq!(decide_for("cz-press-office"), Decision::Nothing);
    assert_eq!(decide_for("cz-ops"), Decision::Nothing);

    let internal = envelope(
        "cz-eeb",
        pb::EventType::ClueShared,
        Confidentiality::Internal,
        &[],
    );
    assert_eq!(
        decide(&rules, &agency(&rules, "cz-eeb-luzhou"), &internal),
        Decision::Full("member agency".into())
    );
    assert_eq!(
        decide(&rules, &agency(&rules, "cz-press-office"), &internal),
        Decision::Nothing
    );
    let public = envelope(
        "cz-eeb",
        pb::EventType::MeetingNotice,
        Confidentiality::Public,
        &[],
    );
    assert_eq!(
        decide(&rules, &agency(&rules, "cz-press-office"), &public),
        Decision::Full("public".into())
    );
}

#[test]
fn confidential_needs_recipient_and_clearance() {
    let mut rules = rules();
    let secret = envelope(
        "cz-eeb",
        pb::EventType::CaseTransferred,
        Confidentiality::Confidential,
        &["cz-psb"],
    );
    assert_eq!(
        decide(&rules, &agency(&rules, "cz-psb"), &secret),
        Decision::Full("listed recipient".into())
    );
    assert_eq!(
        decide(&rules, &agency(&rules, "cz-psb-xiangyuan"), &secret),
        Decision::Nothing,
        "no parent rule for CONFIDENTIAL"
    );
    let mut lowered = agency(&rules, "cz-psb");
    lowered.clearance = Confidentiality::Restricted;
    assert!(
        matches!(decide(&rules, &lowered, &secret), Decision::Withheld(r) if r.contains("clearance RESTRICTED"))
    );
    rules.policy.parent_sees_branch_restricted = false;
    let transfer = envelope(
        "cz-eeb-xiangyuan",
        pb::EventType::CaseTransferred,
        Confidentiality::Restricted,
        &["cz-psb-xiangyuan"],
    );
    assert_eq!(
        decide(&rules, &agency(&rules, "cz-psb"), &transfer),
        Decision::Nothing
    );
}

#[test]
fn stub_keeps_no_content() {
    let full = pb::Notification {
        notification_id: "n".into(),
        case_ref: "C".into(),
        summary: "CANARY".into(),
        confidentiality_note: "CANARY".into(),
        contact: "CANARY".into(),
        recipients: vec!["cz-psb".into()],
        body: Some(pb::CaseBody {
            description: "CANARY".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let stub = withheld_stub(&full, "办公室 0355-1234567");
    assert!(!format!("{stub:?}").contains("CANARY"));
    assert_eq!(stub.contact, "办公室 0355-1234567");
}

#[test]
fn marked_fields_are_stripped_below_their_level() {
    assert!(
        redact::marked_count() >= 4,
        "the contract marks sensitive fields"
    );
    let mut n = pb::Notification {
        summary: "kept".into(),
        body: Some(pb::CaseBody {
            description: "kept".into(),
            parties: vec![
                pb::Party {
                    role: "suspect".into(),
                    name: "张某".into(),
                    identifier: "1404xxxx".into(),
                    contact: "138".into(),
                },
                pb::Party {
                    role: "company".into(),
                    name: "某公司".into(),
                    ..Default::default()
                },
            ],
            informant: Some(pb::Informant {
                name: "李某".into(),
                contact: "139".into(),
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut restricted = n.clone();
    let removed = redact::strip_above(&mut restricted, Confidentiality::Restricted);
    assert_eq!(
        removed,
        vec![
            "body.parties.identifier",
            "body.parties.contact",
            "body.informant"
        ]
    );
    let body = restricted.body.as_ref().unwrap();
    assert_eq!(body.parties[0].name, "张某");
    assert!(body.parties[0].identifier.is_empty() && body.informant.is_none());
    let removed = redact::strip_above(&mut n, Confidentiality::Internal);
    assert!(removed.contains(&"body.parties.name".to_owned()));
    assert_eq!(n.body.as_ref().unwrap().parties[1].role, "company");
    assert_eq!(n.summary, "kept");
    let mut untouched = pb::Notification {
        summary: "x".into(),
        ..Default::default()
    };
    assert!(redact::strip_above(&mut untouched, Confidentiality::Public).is_empty());
}

#[test]
fn policy_errors_name_the_entry_and_field() {
    let path = Path::new("policy.toml");
    let bad = DEFAULT_POLICY.replace("\"ARREST_REQUESTED\",", "\"ARREST_REQUESTD\",");
    let error = Policy::parse(&bad, path).unwrap_err().to_string();
    assert!(
        error.starts_with("policy.toml: publish.POLICE[7]: unknown event type \"ARREST_REQUESTD\""),
        "{error}"
    );
    let bad = DEFAULT_POLICY.replace("OPERATOR = []", "OPERATOR = [\"STATISTICS_REPORT\"]");
    let error = Policy::parse(&bad, path).unwrap_err().to_string();
    assert!(
        error.contains("publish.OPERATOR[0]: STATISTICS_REPORT is emitted by the gateway only"),
        "{error}"
    );
    let bad = DEFAULT_POLICY.replace("role = \"PROCURATORATE\"", "role = \"OBSERVER\"");
    let error = Policy::parse(&bad, path).unwrap_err().to_string();
    assert!(error.contains("oversight[0].role"), "{error}");
    let bad = DEFAULT_POLICY.replace("parent_sees_branch_restricted", "parent_sees_branches");
    assert!(matches!(
        Policy::parse(&bad, path),
        Err(PolicyError::File(FileError::Syntax { .. }))
    ));
}

#[test]
fn the_example_policy_is_the_built_in_one() {
    assert_eq!(
        include_str!("../../../deploy/dev/policy.toml"),
        DEFAULT_POLICY
    );
    let _ = (Role::Police, Region::parse("r", "140400"));
}

use rules::DEFAULT_POLICY;

fn filing_declined(region: &str) -> Notification {
    let mut wire = pb::Notification::from(notification(
        "FILING_DECLINED",
        Confidentiality::Restricted,
        &["cz-eeb-xiangyuan"],
    ));
    wire.region = region.into();
    Notification::try_from(wire).unwrap()
}

#[test]
fn region_outside_the_sender_s_jurisdiction_is_refused() {
    let mut rules = rules();
    let police = agency(&rules, "cz-psb-xiangyuan");
    // Another province (Sichuan, Chengdu).
    assert_eq!(
        check_publish(&rules, &police, &filing_declined("510100")),
        Err(PublishRefusal::Forbidden(
            "region 510100 lies outside the jurisdiction of cz-psb-xiangyuan: not within its registered region 140423".into()
        ))
    );
    // Its own county, and a city agency for one of its counties, pass.
    assert_eq!(
        check_publish(&rules, &police, &filing_declined("140423")),
        Ok(())
    );
    let city_police = agency(&rules, "cz-psb");
    assert_eq!(
        check_publish(&rules, &city_police, &filing_declined("140423")),
        Ok(())
    );
    // A neighbouring county of the same city: refused unless the policy
    // accepts the parent agency's region.
    let neighbour = filing_declined("140403");
    assert!(matches!(
        check_publish(&rules, &police, &neighbour),
        Err(PublishRefusal::Forbidden(reason)) if reason.contains("region 140403")
    ));
    rules.policy.allow_parent_region = true;
    assert_eq!(check_publish(&rules, &police, &neighbour), Ok(()));
    assert_eq!(
        check_publish(&rules, &police, &filing_declined("510100")),
        Err(PublishRefusal::Forbidden(
            "region 510100 lies outside the jurisdiction of cz-psb-xiangyuan: not within its registered region 140423, nor its parent cz-psb's registered region 140400".into()
        ))
    );
}

#[test]
fn the_jurisdiction_setting_is_read_from_the_file() {
    let path = Path::new("policy.toml");
    assert!(!Policy::default_policy().allow_parent_region);
    let allowed =
        DEFAULT_POLICY.replace("allow_parent_region = false", "allow_parent_region = true");
    assert!(Policy::parse(&allowed, path).unwrap().allow_parent_region);
    let misspelt = DEFAULT_POLICY.replace("allow_parent_region", "allow_parent_regions");
    let error = Policy::parse(&misspelt, path).unwrap_err();
    assert!(
        matches!(error, PolicyError::File(FileError::Syntax { .. })),
        "{error}"
    );
    assert!(
        error.to_string().contains("allow_parent_regions"),
        "{error}"
    );
}

fn copy(agency: &str, rule: &str) -> StatutoryCopy {
    StatutoryCopy {
        agency: AgencyId::parse("agency", agency).unwrap(),
        rule: liandong_core::domain::RuleName::parse("rule", rule).unwrap(),
    }
}

/// Runs `f` with log lines captured; returns its value and the lines.
fn with_logs<T>(f: impl FnOnce() -> T) -> (T, String) {
    use std::sync::{Arc, Mutex};
    #[derive(Clone)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);
    impl std::io::Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let buffer = Buffer(Arc::new(Mutex::new(Vec::new())));
    let writer = buffer.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_max_level(tracing::Level::WARN)
        .with_writer(move || writer.clone())
        .finish();
    let value = tracing::subscriber::with_default(subscriber, f);
    let logs = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
    (value, logs)
}

#[test]
fn transfer_is_copied_to_the_same_level_procuratorate() {
    let rules = rules();
    let bureau = agency(&rules, "cz-eeb-xiangyuan");
    let transfer = envelope(
        "cz-eeb-xiangyuan",
        pb::EventType::CaseTransferred,
        Confidentiality::Restricted,
        &["cz-psb-xiangyuan"],
    );
    assert_eq!(
        statutory_copies(&rules, &bureau, &transfer, None),
        vec![copy(
            "cz-procuratorate-xiangyuan",
            "transfer-copied-to-procuratorate"
        )]
    );
    // Same level means the sender's registered region: the city bureau's
    // transfer goes to the city procuratorate.
    let city = agency(&rules, "cz-eeb");
    let city_transfer = envelope(
        "cz-eeb",
        pb::EventType::CaseTransferred,
        Confidentiality::Restricted,
        &["cz-psb"],
    );
    assert_eq!(
        statutory_copies(&rules, &city, &city_transfer, None),
        vec![copy("cz-procuratorate", "transfer-copied-to-procuratorate")]
    );
    // A sender that listed the procuratorate itself gets no copy added.
    let listed = envelope(
        "cz-eeb-xiangyuan",
        pb::EventType::CaseTransferred,
        Confidentiality::Restricted,
        &["cz-psb-xiangyuan", "cz-procuratorate-xiangyuan"],
    );
    assert!(statutory_copies(&rules, &bureau, &listed, None).is_empty());
    // Events no copy rule names get none.
    let clue = envelope(
        "cz-eeb-xiangyuan",
        pb::EventType::ClueShared,
        Confidentiality::Internal,
        &[],
    );
    assert!(statutory_copies(&rules, &bureau, &clue, None).is_empty());
}

#[test]
fn filing_decision_is_copied_to_the_transferor_and_the_procuratorate() {
    let rules = rules();
    let police = agency(&rules, "cz-psb-xiangyuan");
    let bureau = AgencyId::parse("id", "cz-eeb-xiangyuan").unwrap();
    assert!(
        rules
            .policy
            .needs_transferor(Event::from_wire("e", pb::EventType::CaseFiled as i32).unwrap())
    );
    assert!(
        !rules.policy.needs_transferor(
            Event::from_wire("e", pb::EventType::CaseTransferred as i32).unwrap()
        )
    );
    for event in [pb::EventType::CaseFiled, pb::EventType::FilingDeclined] {
        let decision = envelope(
            "cz-psb-xiangyuan",
            event,
            Confidentiality::Restricted,
            &["cz-psb"],
        );
        assert_eq!(
            statutory_copies(&rules, &police, &decision, Some(&bureau)),
            vec![
                copy(
                    "cz-eeb-xiangyuan",
                    "filing-decision-to-bureau-and-procuratorate"
                ),
                copy(
                    "cz-procuratorate-xiangyuan",
                    "filing-decision-to-bureau-and-procuratorate"
                ),
            ]
        );
    }
    // The bureau already listed: only the procuratorate is added.
    let addressed = envelope(
        "cz-psb-xiangyuan",
        pb::EventType::CaseFiled,
        Confidentiality::Restricted,
        &["cz-eeb-xiangyuan"],
    );
    assert_eq!(
        statutory_copies(&rules, &police, &addressed, Some(&bureau)),
        vec![copy(
            "cz-procuratorate-xiangyuan",
            "filing-decision-to-bureau-and-procuratorate"
        )]
    );
}

#[test]
fn missing_competent_agency_leaves_the_copy_out_with_a_warning() {
    let rules = rules();
    // No procuratorate is registered for Luzhou (140403), and the case has
    // no transfer on record.
    let luzhou = agency(&rules, "cz-eeb-luzhou");
    let transfer = envelope(
        "cz-eeb-luzhou",
        pb::EventType::CaseTransferred,
        Confidentiality::Restricted,
        &["cz-psb"],
    );
    let (copies, logs) = with_logs(|| statutory_copies(&rules, &luzhou, &transfer, None));
    assert!(copies.is_empty());
    assert!(
        logs.contains("WARN")
            && logs.contains("policy.rule=transfer-copied-to-procuratorate")
            && logs.contains("agency.id=cz-eeb-luzhou")
            && logs.contains("copy.target=\"same_level_procuratorate\""),
        "{logs}"
    );
    let police = agency(&rules, "cz-psb-xiangyuan");
    let filing = envelope(
        "cz-psb-xiangyuan",
        pb::EventType::CaseFiled,
        Confidentiality::Restricted,
        &["cz-psb"],
    );
    let (copies, logs) = with_logs(|| statutory_copies(&rules, &police, &filing, None));
    assert_eq!(
        copies,
        vec![copy(
            "cz-procuratorate-xiangyuan",
            "filing-decision-to-bureau-and-procuratorate"
        )]
    );
    assert!(
        logs.contains("policy.rule=filing-decision-to-bureau-and-procuratorate")
            && logs.contains("agency.id=cz-psb-xiangyuan")
            && logs.contains("copy.target=\"case_transferor\""),
        "{logs}"
    );
    // A transferor no longer registered is no competent agency either.
    let gone = AgencyId::parse("id", "cz-eeb-gone").unwrap();
    let (copies, logs) = with_logs(|| statutory_copies(&rules, &police, &filing, Some(&gone)));
    assert_eq!(copies.len(), 1);
    assert!(logs.contains("copy.target=\"case_transferor\""), "{logs}");
}

#[test]
fn statutory_copy_is_treated_as_a_listed_recipient() {
    let rules = rules();
    let mut transfer = envelope(
        "cz-eeb-xiangyuan",
        pb::EventType::CaseTransferred,
        Confidentiality::Restricted,
        &["cz-psb-xiangyuan"],
    );
    transfer.copies = vec![copy(
        "cz-procuratorate-xiangyuan",
        "transfer-copied-to-procuratorate",
    )];
    let county = agency(&rules, "cz-procuratorate-xiangyuan");
    assert_eq!(
        decide(&rules, &county, &transfer),
        Decision::Full("statutory copy (transfer-copied-to-procuratorate)".into())
    );
    // Clearance rules still apply to a copy.
    let mut lowered = county.clone();
    lowered.clearance = Confidentiality::Internal;
    assert!(matches!(
        decide(&rules, &lowered, &transfer),
        Decision::Withheld(reason) if reason.contains("clearance INTERNAL")
    ));
    // The parent rule extends the sender's own parties only: the city
    // procuratorate keeps its oversight stub.
    assert!(matches!(
        decide(&rules, &agency(&rules, "cz-procuratorate"), &transfer),
        Decision::Withheld(reason) if reason.starts_with("oversight")
    ));
    // At CONFIDENTIAL, and at INTERNAL where the rule is named too.
    transfer.confidentiality = Confidentiality::Confidential;
    assert_eq!(
        decide(&rules, &county, &transfer),
        Decision::Full("statutory copy (transfer-copied-to-procuratorate)".into())
    );
    transfer.confidentiality = Confidentiality::Internal;
    assert_eq!(
        decide(&rules, &county, &transfer),
        Decision::Full("statutory copy (transfer-copied-to-procuratorate)".into())
    );
    assert_eq!(
        decide(&rules, &agency(&rules, "cz-psb-xiangyuan"), &transfer),
        Decision::Full("member agency".into())
    );
}

#[test]
fn oversight_follows_the_sender_s_registered_region() {
    let rules = rules();
    // A transfer whose region field names another province: the county
    // procuratorate still oversees it, through the sender's registered
    // region (140423).
    let mut elsewhere = envelope(
        "cz-eeb-xiangyuan",
        pb::EventType::CaseTransferred,
        Confidentiality::Restricted,
        &["cz-psb-xiangyuan"],
    );
    elsewhere.region = Region::parse("region", "510100").unwrap();
    for supervisor in ["cz-procuratorate-xiangyuan", "cz-procuratorate"] {
        assert!(
            matches!(
                decide(&rules, &agency(&rules, supervisor), &elsewhere),
                Decision::Withheld(reason) if reason.starts_with("oversight (procuratorate-supervises-transfers-and-filing)")
            ),
            "{supervisor}"
        );
    }
    // A sender elsewhere (Luzhou) naming Xiangyuan: the Xiangyuan
    // procuratorate oversees it through the notification's region.
    let mut into_county = envelope(
        "cz-eeb-luzhou",
        pb::EventType::CaseTransferred,
        Confidentiality::Restricted,
        &["cz-psb"],
    );
    into_county.region = Region::parse("region", "140423").unwrap();
    assert!(matches!(
        decide(
            &rules,
            &agency(&rules, "cz-procuratorate-xiangyuan"),
            &into_county
        ),
        Decision::Withheld(_)
    ));
    // Neither region within the reader's: nothing.
    into_county.region = Region::parse("region", "140403").unwrap();
    assert_eq!(
        decide(
            &rules,
            &agency(&rules, "cz-procuratorate-xiangyuan"),
            &into_county
        ),
        Decision::Nothing
    );
}

#[test]
fn copy_rule_errors_name_the_entry_and_field() {
    let path = Path::new("policy.toml");
    let cases = [
        (
            DEFAULT_POLICY.replace(
                "to = [\"same_level_procuratorate\"]",
                "to = [\"same_level_court\"]",
            ),
            "policy.toml: copy[0].to[0]: unknown target \"same_level_court\" (expected same_level_procuratorate or case_transferor)",
        ),
        (
            DEFAULT_POLICY.replace("to = [\"same_level_procuratorate\"]", "to = []"),
            "policy.toml: copy[0].to: lists no target",
        ),
        (
            DEFAULT_POLICY.replace(
                "to = [\"case_transferor\", \"same_level_procuratorate\"]",
                "to = [\"case_transferor\", \"case_transferor\"]",
            ),
            "policy.toml: copy[1].to[1]: case_transferor is listed twice",
        ),
        (
            DEFAULT_POLICY.replace(
                "events = [\"CASE_FILED\", \"FILING_DECLINED\"]",
                "events = [\"CASE_FILED\", \"FILING_DECLIND\"]",
            ),
            "policy.toml: copy[1].events[1]: unknown event type \"FILING_DECLIND\"",
        ),
        (
            DEFAULT_POLICY.replace("events = [\"CASE_TRANSFERRED\"]\nto", "events = []\nto"),
            "policy.toml: copy[0].events: lists no event",
        ),
        (
            DEFAULT_POLICY.replace(
                "name = \"filing-decision-to-bureau-and-procuratorate\"",
                "name = \"transfer-copied-to-procuratorate\"",
            ),
            "policy.toml: copy[1].name: \"transfer-copied-to-procuratorate\" is used twice",
        ),
        (
            DEFAULT_POLICY.replace(
                "name = \"transfer-copied-to-procuratorate\"",
                "name = \"Transfer copied\"",
            ),
            "policy.toml: copy[0].name: may only contain a-z, 0-9 and '-'",
        ),
    ];
    for (text, expected) in cases {
        assert_ne!(
            text, DEFAULT_POLICY,
            "the case changes the policy: {expected}"
        );
        let error = Policy::parse(&text, path).unwrap_err().to_string();
        assert_eq!(error, expected);
    }
    let unknown_key = DEFAULT_POLICY.replace(
        "to = [\"same_level_procuratorate\"]",
        "to = [\"same_level_procuratorate\"]\ncc = [\"cz-ops\"]",
    );
    let error = Policy::parse(&unknown_key, path).unwrap_err();
    assert!(
        matches!(error, PolicyError::File(FileError::Syntax { .. })),
        "{error}"
    );
    let policy = Policy::default_policy();
    assert_eq!(
        policy
            .copy
            .iter()
            .map(|rule| (rule.name.as_str(), rule.to.clone()))
            .collect::<Vec<_>>(),
        vec![
            (
                "transfer-copied-to-procuratorate",
                vec![CopyTarget::SameLevelProcuratorate]
            ),
            (
                "filing-decision-to-bureau-and-procuratorate",
                vec![
                    CopyTarget::CaseTransferor,
                    CopyTarget::SameLevelProcuratorate
                ]
            ),
        ]
    );
}

#[test]
fn a_draft_announcement_reaches_only_its_cosigners() {
    let rules = rules();
    let draft = envelope(
        "cz-eeb",
        pb::EventType::JointAnnouncement,
        Confidentiality::Public,
        &["cz-psb", "cz-procuratorate"],
    );
    for cosigner in ["cz-psb", "cz-procuratorate"] {
        assert_eq!(
            decide(&rules, &agency(&rules, cosigner), &draft),
            Decision::Full(Cow::Borrowed("co-signer of the draft"))
        );
    }
    assert_eq!(
        decide(&rules, &agency(&rules, "cz-eeb"), &draft),
        Decision::Full(Cow::Borrowed("own notification"))
    );
    // Marked PUBLIC, yet neither the public nor other members see a draft.
    for other in ["cz-press-office", "cz-psb-xiangyuan", "cz-eeb-luzhou"] {
        assert_eq!(
            decide(&rules, &agency(&rules, other), &draft),
            Decision::Nothing,
            "{other}"
        );
    }
}
