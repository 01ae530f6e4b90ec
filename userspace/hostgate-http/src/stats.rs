//! What the proxy counts per (vhost, backend): the latency histogram's
//! buckets and status classes. The counters themselves travel in the API's
//! `HttpCounters`; these are the rules that fill and read them.

/// Upper bounds of the latency buckets in milliseconds (then +Inf): the
/// spread of a web backend from a cache hit to a slow report.
pub const LATENCY_BOUNDS_MS: [u64; 12] = [1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 10000];

/// Number of buckets, the +Inf one included.
pub const BUCKETS: usize = LATENCY_BOUNDS_MS.len() + 1;

/// The bucket of a latency in microseconds.
pub fn bucket(latency_us: u64) -> usize {
    LATENCY_BOUNDS_MS.iter().position(|&ms| latency_us <= ms * 1000).unwrap_or(LATENCY_BOUNDS_MS.len())
}

/// 0 for 1xx ... 4 for 5xx; `None` for anything else (no answer written).
pub fn status_class(status: u16) -> Option<usize> {
    (100..600).contains(&status).then(|| usize::from(status / 100 - 1))
}

/// The upper bound (ms) of the bucket holding quantile `q` (0..=1) of a
/// histogram of per-bucket counts: what Prometheus' histogram_quantile
/// would bound it by. `None` for an empty histogram; `u64::MAX` for +Inf.
pub fn quantile_bound_ms(buckets: &[u64], q: f64) -> Option<u64> {
    let total: u64 = buckets.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
    let mut seen = 0;
    for (i, n) in buckets.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Some(LATENCY_BOUNDS_MS.get(i).copied().unwrap_or(u64::MAX));
        }
    }
    Some(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_and_quantiles() {
        assert_eq!(bucket(0), 0);
        assert_eq!(bucket(1000), 0);
        assert_eq!(bucket(1001), 1);
        assert_eq!(bucket(10_000_001), BUCKETS - 1);
        let mut h = [0u64; BUCKETS];
        for us in [500, 700, 800, 900, 3000, 3000, 3000, 3000, 3000, 400_000] {
            h[bucket(us)] += 1;
        }
        assert_eq!(quantile_bound_ms(&h, 0.5), Some(5));
        assert_eq!(quantile_bound_ms(&h, 0.99), Some(500));
        assert_eq!(quantile_bound_ms(&[0; BUCKETS], 0.5), None);
        assert_eq!(status_class(204), Some(1));
        assert_eq!(status_class(0), None);
        assert_eq!(status_class(600), None);
    }
}
