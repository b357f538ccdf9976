use super::*;

fn agency(id: &str) -> AgencyId {
    AgencyId::parse("agency", id).unwrap()
}

#[test]
fn a_slot_is_refused_at_the_cap_and_given_back_when_dropped() {
    let streams = OpenStreams::default();
    let psb = agency("cz-psb");
    let first = streams.open(&psb, 2).unwrap();
    let _second = streams.open(&psb, 2).unwrap();
    assert_eq!(
        streams.open(&psb, 2).unwrap_err(),
        2,
        "the third is refused"
    );
    drop(first);
    assert_eq!(streams.count(&psb), 1);
    let _third = streams.open(&psb, 2).expect("a freed slot can be taken");
}

#[test]
fn each_agency_has_its_own_count() {
    let streams = OpenStreams::default();
    let _psb = streams.open(&agency("cz-psb"), 1).unwrap();
    assert!(streams.open(&agency("cz-psb"), 1).is_err());
    let _eeb = streams
        .open(&agency("cz-eeb"), 1)
        .expect("another agency is not limited by cz-psb's streams");
    assert_eq!(streams.count(&agency("cz-eeb")), 1);
}
