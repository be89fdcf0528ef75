//! Pure accounting of a run: the latency histogram, per-request outcomes (freezes), the
//! sampled time series and the run summary computed from them. No clock: times are inputs.

/// Latency histogram with log buckets (2^(1/16) ≈ 4.4 % wide), bounded memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
}

/// Sub-buckets per power of two.
const SUB: f64 = 16.0;
/// Buckets: up to 2^40 µs (≈ 12 days), far past any request timeout.
const BUCKETS: usize = 40 * 16 + 1;

impl Default for Histogram {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            total: 0,
        }
    }
}

impl Histogram {
    fn bucket(micros: u64) -> usize {
        if micros <= 1 {
            return 0;
        }
        let i = ((micros as f64).log2() * SUB).ceil() as usize;
        i.min(BUCKETS - 1)
    }

    /// Upper bound of bucket `i`, in µs.
    fn upper(i: usize) -> f64 {
        (i as f64 / SUB).exp2()
    }

    /// Records one latency in microseconds.
    pub fn record(&mut self, micros: u64) {
        if let Some(c) = self.counts.get_mut(Self::bucket(micros)) {
            *c += 1;
            self.total += 1;
        }
    }

    /// Number of recorded values.
    pub fn len(&self) -> u64 {
        self.total
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    /// The `q` quantile (0–1) in milliseconds (upper bound of its bucket), `None` if empty.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * self.total as f64).ceil() as u64).max(1);
        let mut seen = 0;
        for (i, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(Self::upper(i) / 1000.0);
            }
        }
        None
    }
}

/// What a request of a simulated hunter was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A join (no ticket yet).
    Join,
    /// A move or a leaderboard read by a hunter whose join succeeded.
    Play,
}

/// How it was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx.
    Ok,
    /// Refused by admission control (429).
    Rejected,
    /// Any other failure: 5xx, a timeout, a transport error, an unexpected status.
    Failed,
}

impl Outcome {
    /// Classifies an HTTP status (`None`: no answer).
    pub fn of_status(status: Option<u16>) -> Self {
        match status {
            Some(200..=299) => Self::Ok,
            Some(429) => Self::Rejected,
            _ => Self::Failed,
        }
    }
}

/// Counters of one run (or of one second of it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Tally {
    /// Joins answered 2xx.
    pub joins_admitted: u64,
    /// Joins answered 429.
    pub joins_rejected: u64,
    /// Joins that failed otherwise.
    pub joins_failed: u64,
    /// Requests of already admitted hunters answered 2xx.
    pub play_ok: u64,
    /// Requests of already admitted hunters answered 429: **freezes**.
    pub freezes: u64,
    /// Requests of already admitted hunters that failed otherwise (5xx, timeouts).
    pub play_failed: u64,
}

impl Tally {
    /// Counts one answered request.
    pub fn record(&mut self, kind: Kind, outcome: Outcome) {
        let slot = match (kind, outcome) {
            (Kind::Join, Outcome::Ok) => &mut self.joins_admitted,
            (Kind::Join, Outcome::Rejected) => &mut self.joins_rejected,
            (Kind::Join, Outcome::Failed) => &mut self.joins_failed,
            (Kind::Play, Outcome::Ok) => &mut self.play_ok,
            (Kind::Play, Outcome::Rejected) => &mut self.freezes,
            (Kind::Play, Outcome::Failed) => &mut self.play_failed,
        };
        *slot += 1;
    }

    /// Adds another tally.
    pub fn add(&mut self, other: &Tally) {
        self.joins_admitted += other.joins_admitted;
        self.joins_rejected += other.joins_rejected;
        self.joins_failed += other.joins_failed;
        self.play_ok += other.play_ok;
        self.freezes += other.freezes;
        self.play_failed += other.play_failed;
    }
}

/// One point of a run's time series (sampled about once a second).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sample {
    /// Seconds since the run's spike started.
    pub t_s: f64,
    /// Redis used_memory / maxmemory, in percent (`None`: the read failed).
    pub redis_pct: Option<f64>,
    /// Consumer-group lag in messages (`None`: the read failed).
    pub kafka_lag: Option<u64>,
    /// Enforced limit on concurrent hunters (`None`: there is none).
    pub limit: Option<u64>,
    /// Hunters playing: admitted and not yet gone (the load generator's count).
    pub playing: u64,
    /// Requests counted since the previous sample.
    pub delta: Tally,
}

/// A run's summary: the report's numbers.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    /// Run id (`a`, `b`, `c`).
    pub run: String,
    /// Human name of the run.
    pub title: String,
    /// Highest Redis memory use, percent of maxmemory.
    pub redis_peak_pct: Option<f64>,
    /// Seconds with Redis above 95 %.
    pub redis_above_95_s: f64,
    /// Highest consumer lag, messages.
    pub kafka_lag_max: Option<u64>,
    /// Seconds from the highest lag until it was back at or under the drain threshold;
    /// `None`: it never was within the run.
    pub kafka_drain_s: Option<f64>,
    /// Seconds observed after the peak lag (bound of an undrained lag's drain time).
    pub kafka_observed_after_peak_s: f64,
    /// Most hunters playing at once.
    pub playing_peak: u64,
    /// All request counters.
    pub tally: Tally,
    /// Hunters that were admitted at least once.
    pub hunters_admitted: u64,
    /// Hunters that arrived.
    pub hunters_arrived: u64,
    /// Distinct admitted hunters frozen at least once.
    pub hunters_frozen: u64,
    /// Leaderboard latency p50, ms.
    pub leaderboard_p50_ms: Option<f64>,
    /// Leaderboard latency p95, ms.
    pub leaderboard_p95_ms: Option<f64>,
    /// Leaderboard reads measured.
    pub leaderboard_reads: u64,
    /// First and lowest limit, and when it settled (see [`settle_time`]).
    pub limit: LimitSummary,
}

/// What the limit did during a run.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum LimitSummary {
    /// No admission limit.
    None,
    /// A fixed cap.
    Fixed(u64),
    /// A governed limit.
    Governed {
        /// Lowest limit seen.
        min: u64,
        /// Limit at the end of the spike.
        end: u64,
        /// Seconds from the first change until it stayed within `band` of its end value;
        /// `None` if it never changed.
        settle_s: Option<f64>,
    },
}

/// Peak of an optional series.
pub fn peak<T: PartialOrd + Copy>(values: impl Iterator<Item = Option<T>>) -> Option<T> {
    values.flatten().fold(None, |best, v| match best {
        Some(b) if b >= v => Some(b),
        _ => Some(v),
    })
}

/// Seconds spent above `threshold` (each sample stands for the interval to the next).
pub fn time_above(samples: &[Sample], threshold: f64) -> f64 {
    samples
        .windows(2)
        .filter_map(|w| match w {
            [a, b] => (a.redis_pct.unwrap_or(0.0) > threshold).then_some(b.t_s - a.t_s),
            _ => None,
        })
        .fold(0.0, |a, b| a + b)
}

/// `(max lag, drain time, seconds observed after the peak)`: the drain time runs from the
/// (last) sample with the highest lag to the first later sample at or under `threshold`.
pub fn kafka_drain(samples: &[Sample], threshold: u64) -> (Option<u64>, Option<f64>, f64) {
    let Some(max) = peak(samples.iter().map(|s| s.kafka_lag)) else {
        return (None, None, 0.0);
    };
    let Some(at) = samples.iter().rposition(|s| s.kafka_lag == Some(max)) else {
        return (Some(max), None, 0.0);
    };
    let t_peak = samples.get(at).map_or(0.0, |s| s.t_s);
    let observed = samples.last().map_or(0.0, |s| s.t_s - t_peak);
    if max <= threshold {
        return (Some(max), Some(0.0), observed);
    }
    let drained = samples
        .iter()
        .skip(at)
        .find(|s| s.kafka_lag.is_some_and(|l| l <= threshold))
        .map(|s| s.t_s - t_peak);
    (Some(max), drained, observed)
}

/// Settling of a limit series `(t, limit)` up to `until`: from the first change until the
/// limit stays within `band` of its value at `until`. `None` if it never changed.
pub fn settle_time(series: &[(f64, u64)], until: f64, band: u64) -> Option<f64> {
    let within: Vec<&(f64, u64)> = series.iter().filter(|(t, _)| *t <= until).collect();
    let first = within.first()?.1;
    let first_change = within.iter().find(|(_, l)| *l != first)?.0;
    let end = within.last()?.1;
    // The last sample outside the band; the limit settled at the sample after it.
    let settled_at = match within.iter().rposition(|(_, l)| l.abs_diff(end) > band) {
        Some(i) => within.get(i + 1).map_or(until, |(t, _)| *t),
        None => first_change,
    };
    Some((settled_at - first_change).max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_quantiles_are_within_a_bucket() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile_ms(0.5), None);
        for ms in 1..=100u64 {
            h.record(ms * 1000);
        }
        assert_eq!(h.len(), 100);
        let p50 = h.quantile_ms(0.5).unwrap_or(0.0);
        let p95 = h.quantile_ms(0.95).unwrap_or(0.0);
        assert!((50.0..=50.0 * 1.05).contains(&p50), "{p50}");
        assert!((95.0..=95.0 * 1.05).contains(&p95), "{p95}");
        h.record(u64::MAX);
        assert!(h.quantile_ms(1.0).is_some());
    }

    #[test]
    fn a_rejected_request_of_an_admitted_hunter_is_a_freeze() {
        let mut t = Tally::default();
        t.record(Kind::Join, Outcome::of_status(Some(429)));
        t.record(Kind::Join, Outcome::of_status(Some(200)));
        t.record(Kind::Play, Outcome::of_status(Some(200)));
        t.record(Kind::Play, Outcome::of_status(Some(429)));
        t.record(Kind::Play, Outcome::of_status(Some(503)));
        t.record(Kind::Play, Outcome::of_status(None));
        assert_eq!(
            t,
            Tally {
                joins_admitted: 1,
                joins_rejected: 1,
                joins_failed: 0,
                play_ok: 1,
                freezes: 1,
                play_failed: 2,
            }
        );
        let mut sum = Tally::default();
        sum.add(&t);
        sum.add(&t);
        assert_eq!(sum.freezes, 2);
    }

    fn lagged(points: &[(f64, u64)]) -> Vec<Sample> {
        points
            .iter()
            .map(|&(t_s, lag)| Sample {
                t_s,
                kafka_lag: Some(lag),
                ..Sample::default()
            })
            .collect()
    }

    #[test]
    fn drain_time_runs_from_the_peak_to_the_threshold() {
        let s = lagged(&[
            (0.0, 0),
            (1.0, 500),
            (2.0, 900),
            (3.0, 400),
            (5.0, 90),
            (6.0, 0),
        ]);
        assert_eq!(kafka_drain(&s, 100), (Some(900), Some(3.0), 4.0));
        let never = lagged(&[(0.0, 0), (1.0, 500), (2.0, 900), (3.0, 800)]);
        assert_eq!(kafka_drain(&never, 100), (Some(900), None, 1.0));
        let calm = lagged(&[(0.0, 0), (1.0, 50)]);
        assert_eq!(kafka_drain(&calm, 100), (Some(50), Some(0.0), 0.0));
        assert_eq!(kafka_drain(&[], 100), (None, None, 0.0));
    }

    #[test]
    fn time_above_counts_intervals() {
        let s: Vec<Sample> = [(0.0, 90.0), (1.0, 96.0), (2.0, 97.0), (4.0, 80.0)]
            .iter()
            .map(|&(t_s, p)| Sample {
                t_s,
                redis_pct: Some(p),
                ..Sample::default()
            })
            .collect();
        assert_eq!(time_above(&s, 95.0), 3.0);
        assert_eq!(peak(s.iter().map(|x| x.redis_pct)), Some(97.0));
    }

    #[test]
    fn settle_time_ignores_late_small_moves() {
        let series = [
            (0.0, 1000),
            (5.0, 1000),
            (6.0, 900),
            (8.0, 800),
            (10.0, 700),
            (12.0, 650),
            (20.0, 700),
            (30.0, 650),
        ];
        // First change at 6 s; from 10 s on it stays within 50 of 650.
        assert_eq!(settle_time(&series, 30.0, 50), Some(4.0));
        // A flat limit never settles: it never moved.
        assert_eq!(settle_time(&[(0.0, 5), (9.0, 5)], 9.0, 1), None);
        // Samples after `until` are ignored.
        assert_eq!(settle_time(&series, 8.0, 0), Some(2.0));
    }
}
