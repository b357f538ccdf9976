//! Order statistics of lead times.
//!
//! Percentiles use the nearest-rank method: the `p`-th percentile of `n`
//! sorted values is the value at rank `ceil(p / 100 × n)` (1-based). It is
//! always one of the observed values; the median is the 50th percentile,
//! so of an even number of values it is the lower middle one.

/// The `p`-th percentile (0 < `p` ≤ 100) of `sorted` (ascending) by
/// nearest rank; `None` when there are no values.
pub fn nearest_rank(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let n = sorted.len();
    let rank = ((p / 100.0) * n as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, n) - 1])
}

/// Median and 90th percentile (nearest rank) of `values`, and how many
/// there were; both 0 when there are none.
pub fn median_and_p90(values: &[f64]) -> (u64, f64, f64) {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    (
        sorted.len() as u64,
        nearest_rank(&sorted, 50.0).unwrap_or(0.0),
        nearest_rank(&sorted, 90.0).unwrap_or(0.0),
    )
}
