//! The lifecycle, pair by pair: every (state, event) with the result
//! written out here independently of `machine::TRANSITIONS`, so that a
//! change of the table fails until this test says the same; and the
//! refusal messages.

use liandong_core::domain::{CaseRef, Event};
use liandong_core::pb::{CaseState, EventType};

use super::CaseRefusal;
use super::machine::{self, Stage, Step};
use super::page::{self, PageRequest};

use CaseState as S;

/// Every stage a case can be at: no case, then every state.
fn stages() -> Vec<Stage> {
    let mut all = vec![None];
    all.extend((1..=16).map(|n| Some(CaseState::try_from(n).expect("a state of the contract"))));
    assert_eq!(
        CaseState::try_from(17).ok(),
        None,
        "a new state needs rows here"
    );
    all
}

fn events() -> Vec<Event> {
    let all: Vec<Event> = (1..=29)
        .map(|n| Event::from_wire("event", n).expect("an event of the contract"))
        .collect();
    assert!(
        Event::from_wire("event", 30).is_err(),
        "a new event needs rows here"
    );
    all
}

/// What each event should do, as the mechanism describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expect {
    NotCase,
    Refused,
    To(CaseState),
    Stay,
}

/// The expected result of `event` at `stage`, written out by hand.
fn expected(stage: Stage, event: EventType) -> Expect {
    use EventType as E;
    use Expect::*;
    let closed = matches!(stage, Some(S::Judged | S::NotProsecuted));
    let criminal = matches!(
        stage,
        Some(
            S::TransferRecommended
                | S::Transferred
                | S::DetentionReferred
                | S::TransferReceived
                | S::Filed
                | S::Declined
                | S::Reconsideration
                | S::FilingSupervised
                | S::ArrestRequested
                | S::ArrestApproved
                | S::ArrestDenied
                | S::Prosecuted
        )
    );
    match event {
        E::JointAnnouncement
        | E::AnnouncementApproved
        | E::AnnouncementRejected
        | E::AnnouncementReleased
        | E::MeetingNotice
        | E::TrainingNotice
        | E::StatisticsReport
        | E::SupervisionAlert => NotCase,
        E::ClueShared | E::JointInvestigationRequested => match stage {
            None | Some(S::Clue) => To(S::Clue),
            _ => Refused,
        },
        E::PenaltyDecided => match stage {
            None | Some(S::Clue) | Some(S::Penalized) => To(S::Penalized),
            _ if criminal => Stay,
            _ => Refused,
        },
        E::TransferRecommended => match stage {
            None | Some(S::Clue) | Some(S::Penalized) => To(S::TransferRecommended),
            _ => Refused,
        },
        E::CaseTransferred => match stage {
            None
            | Some(S::Clue)
            | Some(S::Penalized)
            | Some(S::TransferRecommended)
            | Some(S::DetentionReferred) => To(S::Transferred),
            _ => Refused,
        },
        E::DetentionReferred => match stage {
            None | Some(S::Clue) | Some(S::Penalized) | Some(S::TransferRecommended) => {
                To(S::DetentionReferred)
            }
            _ => Refused,
        },
        E::TransferReceived => match stage {
            Some(S::Transferred) => To(S::TransferReceived),
            _ => Refused,
        },
        E::CaseFiled => match stage {
            Some(S::Transferred)
            | Some(S::TransferReceived)
            | Some(S::Reconsideration)
            | Some(S::FilingSupervised) => To(S::Filed),
            _ => Refused,
        },
        E::FilingDeclined => match stage {
            Some(S::Transferred) | Some(S::TransferReceived) | Some(S::Reconsideration) => {
                To(S::Declined)
            }
            _ => Refused,
        },
        E::DeadlineExtended => match stage {
            Some(S::Transferred) | Some(S::TransferReceived) => Stay,
            _ => Refused,
        },
        E::ReconsiderationRequested => match stage {
            Some(S::Declined) => To(S::Reconsideration),
            _ => Refused,
        },
        E::FilingSupervision => match stage {
            Some(S::Transferred)
            | Some(S::TransferReceived)
            | Some(S::Declined)
            | Some(S::Reconsideration) => To(S::FilingSupervised),
            _ => Refused,
        },
        E::ArrestRequested => match stage {
            Some(S::Filed) | Some(S::ArrestDenied) => To(S::ArrestRequested),
            _ => Refused,
        },
        E::ArrestApproved => match stage {
            Some(S::ArrestRequested) => To(S::ArrestApproved),
            _ => Refused,
        },
        E::ArrestDenied => match stage {
            Some(S::ArrestRequested) => To(S::ArrestDenied),
            _ => Refused,
        },
        E::ProsecutionFiled | E::NonProsecutionDecided => match stage {
            Some(S::Filed)
            | Some(S::ArrestRequested)
            | Some(S::ArrestApproved)
            | Some(S::ArrestDenied) => {
                if event == E::ProsecutionFiled {
                    To(S::Prosecuted)
                } else {
                    To(S::NotProsecuted)
                }
            }
            _ => Refused,
        },
        E::JudgmentRecorded => match stage {
            Some(S::Prosecuted) => To(S::Judged),
            _ => Refused,
        },
        E::EarlyIntervention | E::TechnicalAssistanceRequested | E::TechnicalAssistanceProvided => {
            match stage {
                None => Refused,
                _ if closed => Refused,
                _ => Stay,
            }
        }
        E::Unspecified => unreachable!("never an Event"),
    }
}

#[test]
fn every_state_and_event_pair_does_what_the_mechanism_says() {
    let mut checked = 0;
    for stage in stages() {
        for event in events() {
            let want = expected(stage, event.to_wire());
            let got = machine::step(stage, event);
            let got = match got {
                Step::NotCaseEvent => Expect::NotCase,
                Step::Refused => Expect::Refused,
                Step::Moves { from, to } => {
                    assert_eq!(from, stage, "{event} at {stage:?} reports another start");
                    if Some(to) == stage && !matches!(want, Expect::To(_)) {
                        Expect::Stay
                    } else {
                        Expect::To(to)
                    }
                }
            };
            assert_eq!(got, want, "{event} at {stage:?}");
            assert_eq!(
                machine::is_case_event(event),
                want != Expect::NotCase,
                "{event} is a case event"
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 17 * 29);
}

#[test]
fn closed_cases_accept_no_case_event() {
    for state in machine::CLOSED {
        for event in events().into_iter().filter(|e| machine::is_case_event(*e)) {
            assert_eq!(machine::step(Some(*state), event), Step::Refused, "{event}");
        }
    }
}

fn refusal(case: &str, event: EventType, state: Stage) -> String {
    CaseRefusal {
        case_ref: CaseRef::parse_field("case_ref", case).unwrap(),
        event: Event::from_wire("event", event as i32).unwrap(),
        state,
    }
    .to_string()
}

#[test]
fn refusals_name_the_case_its_state_and_what_the_event_needs() {
    assert_eq!(
        refusal("CZ-1", EventType::CaseFiled, Some(S::Clue)),
        "case CZ-1 is CLUE; CASE_FILED needs TRANSFERRED, TRANSFER_RECEIVED, \
         RECONSIDERATION or FILING_SUPERVISED"
    );
    assert_eq!(
        refusal("CZ-1", EventType::CaseFiled, None),
        "case CZ-1 does not exist; CASE_FILED needs TRANSFERRED, TRANSFER_RECEIVED, \
         RECONSIDERATION or FILING_SUPERVISED"
    );
    assert_eq!(
        refusal("CZ-2", EventType::JudgmentRecorded, Some(S::Judged)),
        "case CZ-2 is JUDGED, which is closed; JUDGMENT_RECORDED needs PROSECUTED"
    );
    assert_eq!(
        refusal("CZ-3", EventType::ClueShared, Some(S::Filed)),
        "case CZ-3 is FILED; CLUE_SHARED opens a new case or needs CLUE"
    );
    assert_eq!(
        refusal("CZ-4", EventType::EarlyIntervention, None),
        "case CZ-4 does not exist; EARLY_INTERVENTION needs an open case"
    );
}

#[test]
fn page_size_defaults_and_bounds_are_enforced_naming_the_field() {
    assert_eq!(PageRequest::parse("C-1", 0, "").unwrap().page_size, 50);
    assert_eq!(PageRequest::parse("C-1", 1, "").unwrap().page_size, 1);
    assert_eq!(PageRequest::parse("C-1", 500, "").unwrap().page_size, 500);
    let error = PageRequest::parse("C-1", 501, "").unwrap_err();
    assert_eq!(error.field, "page_size");
    assert!(error.reason.contains("1 to 500"), "{error}");
    assert_eq!(PageRequest::parse("", 1, "").unwrap_err().field, "case_ref");
}

#[test]
fn page_tokens_carry_their_case_and_refuse_another_case_or_a_forgery() {
    let case = CaseRef::parse_field("case_ref", "C-1").unwrap();
    let token = page::token(&case, 42);
    let request = PageRequest::parse("C-1", 0, &token).unwrap();
    assert_eq!((request.case_ref.as_str(), request.after), ("C-1", 42));

    let other = PageRequest::parse("C-2", 0, &token).unwrap_err();
    assert_eq!(other.field, "page_token");
    assert!(other.reason.contains("another case than C-2"), "{other}");

    let forged = [
        "zz",
        "not hex at all",
        &hex::encode("case-page-1\nC-1\n042"),
        &hex::encode("case-page-1\nC-1\n0"),
        &hex::encode("case-page-1\nC-1\n-3"),
        &hex::encode("case-page-2\nC-1\n3"),
        &hex::encode("case-page-1\nC-1\n3\nextra"),
    ];
    for bad in forged {
        let error = PageRequest::parse("C-1", 0, bad).unwrap_err();
        assert_eq!(error.field, "page_token", "{bad}");
        assert!(error.reason.contains("not a page token"), "{bad}: {error}");
    }
}

mod pages {
    //! How a `GetCase` page fills: by count, by encoded size, one
    //! oversized entry alone, invisible rows passed over.

    use std::path::Path;

    use prost::Message;

    use liandong_core::domain::{AgencyId, CaseRef, Confidentiality, Envelope, Event, Instant};
    use liandong_core::domain::{NotificationId, Region};
    use liandong_core::pb;
    use liandong_core::registry::Registry;

    use crate::disclosure::{self, CasePage, PAGE_BYTES};
    use crate::policy::{Policy, Rules};
    use crate::store::StoredNotification;

    const REGISTRY: &str = include_str!("../../../deploy/dev/agencies.toml");

    fn rules() -> Rules {
        Rules {
            registry: Registry::parse(REGISTRY, Path::new("agencies.toml")).unwrap(),
            policy: Policy::default_policy(),
        }
    }

    /// A stored clue of `bytes` of description, INTERNAL or RESTRICTED to
    /// cz-psb.
    fn row(sequence: u64, bytes: usize, restricted: bool) -> StoredNotification {
        let (level, recipients) = if restricted {
            (Confidentiality::Restricted, vec!["cz-psb".to_owned()])
        } else {
            (Confidentiality::Internal, Vec::new())
        };
        let wire = pb::Notification {
            notification_id: format!("n{sequence}"),
            case_ref: "C-1".into(),
            event: pb::EventType::ClueShared as i32,
            confidentiality: level.to_wire() as i32,
            recipients: recipients.clone(),
            confidentiality_note: "reason".into(),
            region: "140423".into(),
            summary: "s".into(),
            sender: "cz-eeb".into(),
            body: Some(pb::CaseBody {
                description: "x".repeat(bytes),
                ..Default::default()
            }),
            ..Default::default()
        };
        StoredNotification {
            sequence,
            envelope: Envelope {
                sender: AgencyId::parse("sender", "cz-eeb").unwrap(),
                id: NotificationId::parse_field("id", &wire.notification_id).unwrap(),
                case_ref: CaseRef::parse_field("case_ref", "C-1").unwrap(),
                event: Event::from_wire("event", wire.event).unwrap(),
                confidentiality: level,
                region: Region::parse("region", "140423").unwrap(),
                recipients: recipients
                    .iter()
                    .map(|r| AgencyId::parse("recipient", r).unwrap())
                    .collect(),
                copies: Vec::new(),
            },
            received_at: Instant::now(),
            payload: wire.encode_to_vec(),
        }
    }

    fn reader(id: &str) -> liandong_core::registry::Agency {
        rules()
            .registry
            .get(&AgencyId::parse("reader", id).unwrap())
            .unwrap()
            .clone()
    }

    fn sequences(page: &CasePage) -> Vec<u64> {
        page.timeline.iter().map(|d| d.sequence).collect()
    }

    #[test]
    fn a_page_stops_at_its_size_and_says_more_follows() {
        let rows: Vec<_> = (1..=5).map(|s| row(s, 10, false)).collect();
        let mut page = CasePage::new(3);
        disclosure::case_timeline(&rules(), &reader("cz-psb"), &rows, &mut page);
        assert_eq!(sequences(&page), [1, 2, 3]);
        assert!(page.more);
        assert_eq!(page.last_sequence(), Some(3));
        assert_eq!(page.audit.len(), 3, "one audit entry per entry served");

        // Exactly full with nothing after it: no further page.
        let mut page = CasePage::new(5);
        disclosure::case_timeline(&rules(), &reader("cz-psb"), &rows, &mut page);
        assert_eq!(sequences(&page), [1, 2, 3, 4, 5]);
        assert!(!page.more);
    }

    #[test]
    fn a_page_stops_before_2_mib_and_an_oversized_entry_comes_alone() {
        let quarter = PAGE_BYTES / 4;
        let rows: Vec<_> = (1..=9).map(|s| row(s, quarter, false)).collect();
        let mut page = CasePage::new(500);
        disclosure::case_timeline(&rules(), &reader("cz-psb"), &rows, &mut page);
        assert_eq!(
            sequences(&page),
            [1, 2, 3],
            "a fourth quarter plus headers exceeds"
        );
        assert!(page.more && page.bytes() <= PAGE_BYTES);
        let view = pb::CaseView {
            timeline: page.timeline.clone(),
            ..Default::default()
        };
        assert_eq!(
            view.encoded_len(),
            page.bytes(),
            "the size counted is the size sent"
        );

        let rows = [row(1, PAGE_BYTES + 1, false), row(2, 10, false)];
        let mut page = CasePage::new(500);
        disclosure::case_timeline(&rules(), &reader("cz-psb"), &rows, &mut page);
        assert_eq!(sequences(&page), [1]);
        assert!(page.more);
    }

    #[test]
    fn rows_the_reader_may_not_see_are_passed_over_and_do_not_count() {
        // cz-eeb-luzhou, a member agency not listed on the RESTRICTED
        // rows and not a parent of their parties, sees the INTERNAL ones
        // only.
        let rows = [
            row(1, 10, true),
            row(2, 10, false),
            row(3, 10, true),
            row(4, 10, false),
        ];
        let mut page = CasePage::new(1);
        disclosure::case_timeline(&rules(), &reader("cz-eeb-luzhou"), &rows, &mut page);
        assert_eq!(sequences(&page), [2]);
        assert!(page.more, "sequence 4 is left for the next page");
        let mut next = CasePage::new(1);
        disclosure::case_timeline(&rules(), &reader("cz-eeb-luzhou"), &rows[2..], &mut next);
        assert_eq!(sequences(&next), [4]);
        assert!(!next.more);
    }
}
