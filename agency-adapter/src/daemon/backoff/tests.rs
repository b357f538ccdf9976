use super::*;

fn settings(initial_ms: u64, max_ms: u64) -> RetrySettings {
    RetrySettings {
        initial: Duration::from_millis(initial_ms),
        max: Duration::from_millis(max_ms),
    }
}

#[test]
fn delays_double_up_to_the_maximum_with_jitter_in_the_upper_half() {
    let mut backoff = Backoff::new(settings(100, 1000));
    let bases = [100, 200, 400, 800, 1000, 1000, 1000];
    for base in bases {
        assert_eq!(backoff.current(), Duration::from_millis(base));
        let delay = backoff.next_delay();
        let base = Duration::from_millis(base);
        assert!(
            delay >= base / 2 && delay <= base,
            "{delay:?} outside {:?}..={base:?}",
            base / 2
        );
    }
}

#[test]
fn reset_starts_over_and_jitter_varies() {
    let mut backoff = Backoff::new(settings(1000, 60_000));
    for _ in 0..5 {
        backoff.next_delay();
    }
    backoff.reset();
    assert_eq!(backoff.current(), Duration::from_secs(1));
    let delays: std::collections::BTreeSet<Duration> = (0..20)
        .map(|_| {
            backoff.reset();
            backoff.next_delay()
        })
        .collect();
    assert!(delays.len() > 1, "no jitter: {delays:?}");
}
