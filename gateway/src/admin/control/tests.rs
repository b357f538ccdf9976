//! The lines people read after a disable or enable.

use super::*;

fn state(disabled: bool, changed: bool) -> pb::AgencyState {
    pb::AgencyState {
        agency: "cz-eeb".into(),
        disabled,
        reason: if disabled {
            "leaked key".into()
        } else {
            String::new()
        },
        disabled_by: if disabled {
            "cz-ops".into()
        } else {
            String::new()
        },
        disabled_at: None,
        changed,
    }
}

#[test]
fn each_answer_reads_as_what_happened() {
    assert_eq!(
        state_line(&state(true, true)),
        "cz-eeb disabled: leaked key"
    );
    assert_eq!(
        state_line(&state(true, false)),
        "cz-eeb already disabled (by cz-ops: leaked key)"
    );
    assert_eq!(state_line(&state(false, true)), "cz-eeb enabled");
    assert_eq!(state_line(&state(false, false)), "cz-eeb already enabled");
}
