//! The viral spike as a pure schedule: when each simulated hunter arrives and how long they
//! want to play. Deterministic (no clock, no global RNG), so every run replays the same spike.

use std::time::Duration;

/// Shape of the spike.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spike {
    /// Arrivals happen during `[0, duration)`.
    pub duration: Duration,
    /// Time for the arrival rate to grow from 0 to `peak_per_s` (quadratically: word of
    /// mouth spreads slowly, then all at once).
    pub ramp: Duration,
    /// Arrivals per second at the peak.
    pub peak_per_s: f64,
    /// Shortest wanted play time.
    pub play_min: Duration,
    /// Longest wanted play time.
    pub play_max: Duration,
}

/// One simulated hunter's plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arrival {
    /// Index, also the hunter's id suffix.
    pub index: u32,
    /// Offset from the start of the run at which the hunter first tries to join.
    pub at: Duration,
    /// How long after `at` the hunter leaves, admitted or not.
    pub play: Duration,
}

impl Spike {
    /// Expected arrivals in `[0, t)` (the integral of the rate).
    pub fn cumulative(&self, t: Duration) -> f64 {
        let t = t.min(self.duration).as_secs_f64();
        let ramp = self.ramp.as_secs_f64();
        if ramp <= 0.0 {
            return self.peak_per_s * t;
        }
        if t < ramp {
            self.peak_per_s * t.powi(3) / (3.0 * ramp * ramp)
        } else {
            self.peak_per_s * (ramp / 3.0 + (t - ramp))
        }
    }

    /// Every arrival of the spike, in time order.
    pub fn arrivals(&self) -> Vec<Arrival> {
        let total = self.cumulative(self.duration).floor();
        // Bounded: a spike of more than a million hunters is a configuration error upstream.
        let total = total.clamp(0.0, 1_000_000.0) as u32;
        (1..=total)
            .map(|k| Arrival {
                index: k,
                at: self.time_of(f64::from(k)),
                play: self.play_of(k),
            })
            .collect()
    }

    /// Inverse of [`Spike::cumulative`]: when the k-th hunter arrives.
    fn time_of(&self, k: f64) -> Duration {
        let ramp = self.ramp.as_secs_f64();
        let in_ramp = self.peak_per_s * ramp / 3.0;
        let secs = if self.peak_per_s <= 0.0 {
            0.0
        } else if ramp > 0.0 && k < in_ramp {
            (3.0 * ramp * ramp * k / self.peak_per_s).cbrt()
        } else {
            ramp + (k - in_ramp) / self.peak_per_s
        };
        Duration::from_secs_f64(secs.max(0.0)).min(self.duration)
    }

    fn play_of(&self, k: u32) -> Duration {
        let span = self.play_max.saturating_sub(self.play_min).as_millis() as u64;
        let jitter = if span == 0 {
            0
        } else {
            splitmix(u64::from(k)) % (span + 1)
        };
        self.play_min + Duration::from_millis(jitter)
    }
}

/// splitmix64: a well-mixed pseudo-random number from a seed.
pub fn splitmix(seed: u64) -> u64 {
    let mut x = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spike() -> Spike {
        Spike {
            duration: Duration::from_secs(60),
            ramp: Duration::from_secs(30),
            peak_per_s: 10.0,
            play_min: Duration::from_secs(20),
            play_max: Duration::from_secs(40),
        }
    }

    #[test]
    fn arrivals_follow_the_integral_of_the_rate() {
        let s = spike();
        let arrivals = s.arrivals();
        // 10/s × 30 s / 3 during the ramp + 10/s × 30 s after.
        assert_eq!(arrivals.len(), 400);
        let before_ramp_end = arrivals.iter().filter(|a| a.at < s.ramp).count();
        assert!((99..=101).contains(&before_ramp_end), "{before_ramp_end}");
        assert!(arrivals.windows(2).all(|w| w[0].at <= w[1].at));
        assert!(arrivals.iter().all(|a| a.at <= s.duration));
    }

    #[test]
    fn the_rate_grows_during_the_ramp() {
        let arrivals = spike().arrivals();
        let in_window = |from: u64, to: u64| {
            arrivals
                .iter()
                .filter(|a| a.at >= Duration::from_secs(from) && a.at < Duration::from_secs(to))
                .count()
        };
        assert!(in_window(0, 10) < in_window(10, 20));
        assert!(in_window(10, 20) < in_window(20, 30));
        assert!((95..=105).contains(&in_window(40, 50)));
    }

    #[test]
    fn play_times_stay_in_range_and_are_deterministic() {
        let s = spike();
        let a = s.arrivals();
        assert_eq!(a, s.arrivals());
        assert!(a
            .iter()
            .all(|x| x.play >= s.play_min && x.play <= s.play_max));
        let distinct: std::collections::BTreeSet<_> = a.iter().map(|x| x.play).collect();
        assert!(distinct.len() > 100);
    }

    #[test]
    fn no_ramp_is_a_constant_rate() {
        let s = Spike {
            ramp: Duration::ZERO,
            ..spike()
        };
        assert_eq!(s.arrivals().len(), 600);
    }
}
