use std::time::Duration;

use tokio::time::{Instant, advance};

use super::Window;

const SECOND: Duration = Duration::from_secs(1);

#[test]
fn the_cursor_passes_only_acknowledged_sequences() {
    let t0 = Instant::now();
    let mut window = Window::new(0, 8, 30 * SECOND);
    for sequence in [2, 3, 5] {
        window.admit(sequence);
    }
    window.scanned_through(6);
    assert_eq!(window.cursor(), 1, "1 and 4 were passed over; 2 is pending");
    for sequence in [2, 3, 5] {
        window.sent(sequence, t0);
    }
    assert_eq!(window.ack(&[3, 99]), 1, "unknown acks are ignored");
    assert_eq!(window.cursor(), 1, "2 is still unacknowledged");
    window.ack(&[2]);
    assert_eq!(window.cursor(), 4);
    window.ack(&[5]);
    assert_eq!(window.cursor(), 6);
    assert!(window.is_empty());
}

#[test]
fn a_frame_never_sent_holds_the_cursor() {
    let mut window = Window::new(10, 8, 30 * SECOND);
    window.admit(11);
    window.admit(12);
    window.scanned_through(20);
    // The sends failed: the subscriber left before either was handed over.
    assert_eq!(window.cursor(), 10);
    assert_eq!(window.next_attempt(11), Some(1));
    assert_eq!(window.next_due(), None, "nothing sent, nothing due");
}

#[test]
fn the_window_admits_no_more_than_its_capacity() {
    let mut window = Window::new(0, 2, 30 * SECOND);
    assert_eq!(window.room(), 2);
    window.admit(1);
    window.admit(2);
    assert_eq!(window.room(), 0);
    window.sent(1, Instant::now());
    window.ack(&[1]);
    assert_eq!(window.room(), 1);
}

#[test]
fn unacknowledged_sequences_fall_due_after_the_ack_timeout() {
    let t0 = Instant::now();
    let mut window = Window::new(0, 8, 30 * SECOND);
    window.admit(1);
    window.admit(2);
    window.scanned_through(2);
    window.sent(1, t0);
    window.sent(2, t0 + 10 * SECOND);
    assert!(window.due(t0 + 29 * SECOND).is_empty());
    assert_eq!(window.due(t0 + 30 * SECOND), vec![1]);
    assert_eq!(window.due(t0 + 40 * SECOND), vec![1, 2]);
    assert_eq!(window.next_due(), Some(t0 + 30 * SECOND));
    assert_eq!(window.next_attempt(1), Some(2));
    window.sent(1, t0 + 30 * SECOND);
    assert_eq!(window.next_attempt(1), Some(3));
    assert_eq!(window.due(t0 + 40 * SECOND), vec![2]);
}

#[test]
fn a_sequence_the_policy_now_refuses_leaves_the_window() {
    let t0 = Instant::now();
    let mut window = Window::new(0, 8, 30 * SECOND);
    window.admit(1);
    window.admit(2);
    window.scanned_through(2);
    window.sent(1, t0);
    window.sent(2, t0);
    window.drop_done(1);
    assert_eq!(window.cursor(), 1);
    assert_eq!(window.due(t0 + 60 * SECOND), vec![2]);
}

#[tokio::test(start_paused = true)]
async fn a_sent_frame_falls_due_exactly_one_ack_timeout_later() {
    let mut window = Window::new(0, 4, 30 * SECOND);
    window.admit(1);
    window.scanned_through(1);
    let first_send = Instant::now();
    window.sent(1, first_send);
    assert_eq!(window.next_due(), Some(first_send + 30 * SECOND));

    advance(30 * SECOND - Duration::from_millis(1)).await;
    assert!(
        window.due(Instant::now()).is_empty(),
        "not before the timeout"
    );
    advance(Duration::from_millis(1)).await;
    assert_eq!(window.due(Instant::now()), vec![1], "due at the timeout");
    assert_eq!(window.next_attempt(1), Some(2));

    // Sent again: due one timeout after the redelivery, not the first send.
    let resend = Instant::now();
    window.sent(1, resend);
    assert_eq!(window.next_due(), Some(resend + 30 * SECOND));
    assert!(window.due(Instant::now()).is_empty());
    advance(30 * SECOND).await;
    assert_eq!(window.due(Instant::now()), vec![1]);
    assert_eq!(window.next_attempt(1), Some(3));
}

#[tokio::test(start_paused = true)]
async fn an_acknowledgement_stops_redelivery_and_moves_the_cursor() {
    let mut window = Window::new(5, 2, 10 * SECOND);
    window.admit(6);
    window.admit(8);
    window.scanned_through(9);
    assert_eq!(window.room(), 0, "full at its capacity");
    window.sent(6, Instant::now());
    advance(4 * SECOND).await;
    window.sent(8, Instant::now());
    assert_eq!(window.cursor(), 5);

    advance(5 * SECOND).await;
    assert_eq!(window.ack(&[6]), 1);
    assert_eq!(window.cursor(), 7, "7 was passed over; 8 is pending");
    assert_eq!(window.room(), 1);
    assert_eq!(
        window.next_due(),
        Some(Instant::now() + 5 * SECOND),
        "only 8 is still timed"
    );

    advance(10 * SECOND).await;
    assert_eq!(window.due(Instant::now()), vec![8], "6 is never due again");
    window.ack(&[8]);
    assert_eq!(window.cursor(), 9, "everything scanned is done");
    assert_eq!(window.next_due(), None);
    assert!(window.due(Instant::now()).is_empty());
    assert_eq!(window.room(), 2);
}

#[tokio::test(start_paused = true)]
async fn frames_fall_due_in_sequence_order_whatever_their_send_order() {
    let mut window = Window::new(0, 8, 10 * SECOND);
    for sequence in 1..=3 {
        window.admit(sequence);
    }
    window.scanned_through(3);
    let start = Instant::now();
    window.sent(3, start);
    window.sent(1, start + SECOND);
    window.sent(2, start + 2 * SECOND);
    assert_eq!(window.next_due(), Some(start + 10 * SECOND), "3 first");
    advance(12 * SECOND).await;
    assert_eq!(window.due(Instant::now()), vec![1, 2, 3]);
    assert_eq!(window.cursor(), 0);
}

#[test]
fn acks_for_sequences_never_delivered_change_nothing() {
    let t0 = Instant::now();
    let mut window = Window::new(10, 8, 30 * SECOND);
    window.admit(12);
    window.admit(14);
    window.scanned_through(15);
    window.sent(12, t0);
    // 14 is admitted but its frame not yet sent; 11 and 13 were passed
    // over; 16 and beyond were never read; 5 is below the cursor.
    let before = (
        window.cursor(),
        window.len(),
        window.room(),
        window.next_due(),
    );
    assert_eq!(window.ack(&[5, 10, 11, 13, 14, 16, 1_000_000, u64::MAX]), 0);
    assert_eq!(
        (
            window.cursor(),
            window.len(),
            window.room(),
            window.next_due()
        ),
        before
    );
    assert_eq!(window.next_attempt(14), Some(1), "14 is still to be sent");
    assert_eq!(
        window.due(t0 + 30 * SECOND),
        vec![12],
        "12 is still redelivered"
    );
    // Once sent, 14 can be acknowledged.
    window.sent(14, t0);
    assert_eq!(window.ack(&[14]), 1);
    assert_eq!(window.cursor(), 11, "12 still holds the cursor");
}
