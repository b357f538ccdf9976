use super::*;

fn event(name: &str) -> Event {
    name.parse().unwrap()
}

fn agency(id: &str) -> AgencyId {
    AgencyId::parse("agency", id).unwrap()
}

fn region(code: &str) -> Region {
    Region::parse("region", code).unwrap()
}

fn case(reference: &str) -> CaseRef {
    CaseRef::parse_field("case_ref", reference).unwrap()
}

#[test]
fn the_same_filter_in_another_order_has_the_same_bytes() {
    let a = SubscriptionFilter::new(
        [
            event("CASE_FILED"),
            event("CLUE_SHARED"),
            event("CASE_FILED"),
        ],
        Some(case("CZ-")),
        [agency("cz-eeb"), agency("ay-eeb")],
        [region("140423")],
    );
    let b = SubscriptionFilter::new(
        [event("CLUE_SHARED"), event("CASE_FILED")],
        Some(case("CZ-")),
        [agency("ay-eeb"), agency("cz-eeb"), agency("ay-eeb")],
        [region("140423"), region("140423")],
    );
    assert_eq!(a, b);
    assert_eq!(a.canonical_bytes(), b.canonical_bytes());
    assert_eq!(
        a.to_wire(),
        pb::SubscriptionFilter {
            // Sorted by value and deduplicated.
            events: vec![
                pb::EventType::ClueShared as i32,
                pb::EventType::CaseFiled as i32
            ],
            case_ref_prefix: "CZ-".into(),
            senders: vec!["ay-eeb".into(), "cz-eeb".into()],
            regions: vec!["140423".into()],
        }
    );
}

#[test]
fn a_wire_filter_normalises_to_the_bytes_of_the_same_filter_built_from_values() {
    let wire = pb::SubscriptionFilter {
        events: vec![
            pb::EventType::CaseFiled as i32,
            pb::EventType::ClueShared as i32,
        ],
        case_ref_prefix: String::new(),
        senders: vec!["cz-eeb".into(), "ay-eeb".into(), "cz-eeb".into()],
        regions: vec![],
    };
    let from_wire = SubscriptionFilter::from_wire("open.filter", wire).unwrap();
    let from_values = SubscriptionFilter::new(
        [event("CLUE_SHARED"), event("CASE_FILED")],
        None,
        [agency("ay-eeb"), agency("cz-eeb")],
        [],
    );
    assert_eq!(from_wire.canonical_bytes(), from_values.canonical_bytes());
    assert_eq!(
        SubscriptionFilter::from_wire("open.filter", from_values.to_wire()).unwrap(),
        from_values
    );
    assert_eq!(
        SubscriptionFilter::default().canonical_bytes(),
        Vec::<u8>::new()
    );
}

#[test]
fn a_bad_wire_filter_is_refused_naming_the_entry() {
    let refused = |wire: pb::SubscriptionFilter| {
        SubscriptionFilter::from_wire("open.filter", wire)
            .unwrap_err()
            .field
    };
    assert_eq!(
        refused(pb::SubscriptionFilter {
            events: vec![pb::EventType::CaseFiled as i32, 0],
            ..Default::default()
        }),
        "open.filter.events[1]"
    );
    assert_eq!(
        refused(pb::SubscriptionFilter {
            senders: vec!["cz-eeb".into(), "CZ EEB".into()],
            ..Default::default()
        }),
        "open.filter.senders[1]"
    );
    assert_eq!(
        refused(pb::SubscriptionFilter {
            regions: vec!["1404".into()],
            ..Default::default()
        }),
        "open.filter.regions[0]"
    );
    assert_eq!(
        refused(pb::SubscriptionFilter {
            case_ref_prefix: "CZ 2026".into(),
            ..Default::default()
        }),
        "open.filter.case_ref_prefix"
    );
}

#[test]
fn every_criterion_must_match() {
    let filter = SubscriptionFilter::new(
        [event("CASE_FILED")],
        Some(case("CZ-2026-")),
        [agency("cz-eeb")],
        [region("140400")],
    );
    let (filed, cz, eeb, county) = (
        event("CASE_FILED"),
        case("CZ-2026-HW-0042"),
        agency("cz-eeb"),
        region("140423"),
    );
    assert!(filter.matches(filed, &cz, &eeb, &county));
    assert!(!filter.matches(event("CLUE_SHARED"), &cz, &eeb, &county));
    assert!(!filter.matches(filed, &case("AY-2026-1"), &eeb, &county));
    assert!(!filter.matches(filed, &cz, &agency("cz-psb"), &county));
    assert!(!filter.matches(filed, &cz, &eeb, &region("140500")));
    assert!(SubscriptionFilter::default().matches(
        event("CLUE_SHARED"),
        &case("X"),
        &agency("a"),
        &region("110000")
    ));
}

#[test]
fn a_region_criterion_covers_the_codes_within_it() {
    let province = SubscriptionFilter::new([], None, [], [region("140000")]);
    let county = SubscriptionFilter::new([], None, [], [region("140423")]);
    let matches = |filter: &SubscriptionFilter, code: &str| {
        filter.matches(
            event("CASE_FILED"),
            &case("C-1"),
            &agency("a"),
            &region(code),
        )
    };
    assert!(matches(&province, "140423"));
    assert!(matches(&province, "140400"));
    assert!(!matches(&province, "130423"));
    assert!(matches(&county, "140423"));
    assert!(!matches(&county, "140400"));
}

#[test]
fn start_positions_read_and_write_both_forms() {
    assert_eq!("beginning".parse::<Start>().unwrap(), Start::Beginning);
    assert_eq!("now".parse::<Start>().unwrap(), Start::Now);
    assert_eq!("after:0".parse::<Start>().unwrap(), Start::After(0));
    for bad in [
        "", "later", "after:", "after:x", "after:-1", "after:+1", "after: 1", "Now",
    ] {
        let err = bad.parse::<Start>().unwrap_err();
        assert!(err.to_string().contains("after:N"), "{bad}: {err}");
    }
    for start in [Start::Beginning, Start::Now, Start::After(7)] {
        assert_eq!(start.to_string().parse::<Start>().unwrap(), start);
        assert_eq!(
            Start::from_wire("open.start", Some(start.to_wire())).unwrap(),
            start
        );
    }
    assert_eq!(
        Start::from_wire("open.start", None).unwrap(),
        Start::Beginning
    );
    let not_chosen = pb::StartPosition {
        position: Some(pb::start_position::Position::Now(false)),
    };
    assert_eq!(
        Start::from_wire("open.start", Some(not_chosen))
            .unwrap_err()
            .field,
        "open.start"
    );
}
