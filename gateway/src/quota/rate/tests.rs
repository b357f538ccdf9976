use governor::clock::FakeRelativeClock;

use super::*;

fn agency(id: &str) -> AgencyId {
    AgencyId::parse("agency", id).unwrap()
}

fn rate(per_second: u32, burst: u32) -> Rate {
    Rate {
        per_second: NonZeroU32::new(per_second).unwrap(),
        burst: NonZeroU32::new(burst).unwrap(),
    }
}

fn limiter(
    default: Rate,
    agencies: &[(&str, Rate)],
) -> (PublishRate<FakeRelativeClock>, FakeRelativeClock) {
    let clock = FakeRelativeClock::default();
    let settings = RateSettings {
        default,
        agencies: agencies
            .iter()
            .map(|(id, rate)| (agency(id), *rate))
            .collect(),
    };
    (PublishRate::with_clock(&settings, clock.clone()), clock)
}

#[test]
fn a_burst_passes_and_the_next_notification_is_refused_with_the_wait() {
    let (rate, _clock) = limiter(rate(10, 3), &[]);
    let eeb = agency("cz-eeb");
    for i in 0..3 {
        rate.check(&eeb)
            .unwrap_or_else(|e| panic!("notification {i} of the burst: {e}"));
    }
    let refused = rate.check(&eeb).unwrap_err();
    assert_eq!(refused.agency, eeb);
    assert_eq!(
        refused.retry_after,
        Duration::from_millis(100),
        "one token per 100 ms"
    );
    assert_eq!(
        refused.to_string(),
        "publish rate limit of 10 per second (burst 3) reached for cz-eeb; retry after ~100 ms"
    );
}

#[test]
fn the_bucket_refills_at_the_rate() {
    let (rate, clock) = limiter(rate(10, 2), &[]);
    let eeb = agency("cz-eeb");
    rate.check(&eeb).unwrap();
    rate.check(&eeb).unwrap();
    assert!(rate.check(&eeb).is_err());
    clock.advance(Duration::from_millis(100));
    rate.check(&eeb).expect("one token back after 100 ms");
    assert!(rate.check(&eeb).is_err(), "and only one");
    clock.advance(Duration::from_secs(10));
    rate.check(&eeb).unwrap();
    rate.check(&eeb).unwrap();
    assert!(
        rate.check(&eeb).is_err(),
        "a long pause refills to the burst, not beyond"
    );
}

#[test]
fn each_agency_has_its_own_bucket() {
    let (rate, _clock) = limiter(rate(1, 2), &[]);
    let eeb = agency("cz-eeb");
    let psb = agency("cz-psb");
    rate.check(&eeb).unwrap();
    rate.check(&eeb).unwrap();
    assert!(rate.check(&eeb).is_err(), "cz-eeb emptied its bucket");
    rate.check(&psb)
        .expect("cz-psb is not limited by cz-eeb's publishes");
    rate.check(&psb).expect("and has its whole burst");
    assert!(rate.check(&psb).is_err());
    assert_eq!(rate.tracked(), 2);
}

#[test]
fn an_agency_with_its_own_rate_uses_it_and_leaves_the_others_on_the_default() {
    let (rate, _clock) = limiter(rate(1, 1), &[("cz-psb", self::rate(100, 5))]);
    let psb = agency("cz-psb");
    for _ in 0..5 {
        rate.check(&psb).unwrap();
    }
    let refused = rate.check(&psb).unwrap_err();
    assert_eq!(refused.rate, self::rate(100, 5));
    assert_eq!(refused.retry_after, Duration::from_millis(10));
    let eeb = agency("cz-eeb");
    rate.check(&eeb).unwrap();
    assert_eq!(rate.check(&eeb).unwrap_err().rate, self::rate(1, 1));
}

#[test]
fn full_buckets_are_forgotten_and_memory_stays_bounded() {
    let (rate, clock) = limiter(rate(10, 2), &[]);
    for i in 0..50 {
        rate.check(&agency(&format!("agency-{i}"))).unwrap();
    }
    assert_eq!(rate.tracked(), 50);
    // Before the sweep interval nothing is forgotten, full or not.
    clock.advance(Duration::from_secs(1));
    rate.check(&agency("agency-0")).unwrap();
    assert_eq!(rate.tracked(), 50);
    // A check after the interval sweeps: only the bucket just used stays.
    clock.advance(SWEEP_INTERVAL);
    rate.check(&agency("agency-1")).unwrap();
    assert!(rate.tracked() <= 1, "{} buckets left", rate.tracked());
    // Forgetting a full bucket changes nothing for its agency.
    rate.check(&agency("agency-2")).unwrap();
    rate.check(&agency("agency-2")).unwrap();
    assert!(rate.check(&agency("agency-2")).is_err());
}

#[tokio::test(start_paused = true)]
async fn a_stream_waits_for_the_next_token_instead_of_being_refused() {
    let rate = PublishRate::new(&RateSettings {
        default: rate(1000, 1),
        agencies: BTreeMap::new(),
    });
    let eeb = agency("cz-eeb");
    rate.until_ready(&eeb).await;
    // The bucket is empty: the next wait ends once a token is back, with
    // the token taken.
    tokio::time::timeout(Duration::from_secs(5), rate.until_ready(&eeb))
        .await
        .expect("a token comes back within a refill interval");
}
