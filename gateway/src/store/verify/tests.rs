//! The arithmetic of declared gaps.

use super::*;

fn range(first: u64, last: u64) -> SequenceRange {
    SequenceRange { first, last }
}

#[test]
fn declared_ranges_are_left_out_of_what_is_missing() {
    let declared = Declared(vec![range(4, 7), range(10, 12)]);
    assert_eq!(declared.undeclared(1, 3), [range(1, 3)]);
    assert_eq!(declared.undeclared(4, 7), []);
    assert_eq!(
        declared.undeclared(3, 13),
        [range(3, 3), range(8, 9), range(13, 13)]
    );
    assert_eq!(declared.undeclared(5, 11), [range(8, 9)]);
    assert!(declared.covers(4, 7));
    assert!(declared.covers(8, 7), "an empty range is covered");
    assert!(!declared.covers(4, 8));
    assert_eq!(declared.holding(11), Some(&range(10, 12)));
    assert_eq!(declared.holding(8), None);
}

#[test]
fn a_clean_report_names_its_fenced_ranges() {
    let report = VerifyReport {
        rows_scanned: 3,
        fenced: vec![range(4, 7)],
        ..VerifyReport::default()
    };
    assert!(report.is_clean());
    assert_eq!(
        report.summary(),
        "3 rows checked, no problem found (4 sequences fenced, declared: 4-7)"
    );
    let forged = VerifyReport {
        unrecorded_fences: vec![range(2, 2)],
        missing: vec![range(2, 2)],
        ..report
    };
    assert!(!forged.is_clean());
    assert!(
        forged
            .summary()
            .contains("1 fence(s) not recorded in the audit log (sequence 2)"),
        "{}",
        forged.summary()
    );
}
