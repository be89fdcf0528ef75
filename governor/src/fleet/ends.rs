//! The fleet's ended sessions (issue 16): every proxy reports, in its lease exchange, the
//! sessions it ended (hunter key, end time), and every answer carries the ends the other
//! proxies reported since the asking proxy's cursor. Each proxy records them in its
//! ended-session lists, so a ticket of a session ended on one proxy is refused (counts as
//! no ticket) on every proxy after its next exchange.
//!
//! This is the pure log one governor keeps in memory (without `--coordination`); with a
//! coordination Redis the replicas share a Redis stream instead (`crate::coordination`),
//! with the same bounds. Cursors are `<epoch>-<seq>`: `epoch` names this log (a new one
//! per governor start), so a cursor from a previous governor, or from nowhere, reads the
//! whole log.

use std::collections::VecDeque;

use crate::clock::Millis;

/// Most ends the log holds: past it the oldest are dropped (counted) even if their
/// tickets may still verify.
pub const MAX_FLEET_ENDS: usize = 65_536;
/// Most ends one answer carries (the rest go in the next answers).
pub const MAX_ENDS_PER_ANSWER: usize = 2_048;
/// Most ends one report may carry (the filter sends at most 4,096).
pub const MAX_ENDS_PER_REPORT: usize = 4_096;
/// How long an end is kept when no proxy reported its session TTL: an hour, the
/// filter's default TTL and its 2 s expiry slack.
pub const DEFAULT_RETAIN_MS: Millis = 3_602_000;
/// Slack past a session TTL before an end is dropped (the filter's expiry granularity).
pub const RETAIN_SLACK_MS: Millis = 2_000;

/// One end in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct LoggedEnd {
    seq: u64,
    key: u64,
    ended_ms: u64,
    /// The reporting proxy process ([`origin_of`]): it is not sent its own ends.
    origin: u64,
    logged_ms: Millis,
}

/// The ends one answer carries.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct EndsSince {
    /// (hunter key, ended at ms), oldest first.
    pub sessions: Vec<(u64, u64)>,
    /// Where the next read resumes.
    pub cursor: String,
}

/// The identity of one reporting proxy process: its id and incarnation.
pub fn origin_of(proxy: &str, incarnation: u64) -> u64 {
    let hash = proxy.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    (hash ^ incarnation.rotate_left(17)).max(1)
}

/// How long ends reported with a session TTL of `session_ttl_ms` (0: not reported) stay.
pub fn retain_ms(session_ttl_ms: Millis) -> Millis {
    if session_ttl_ms == 0 {
        DEFAULT_RETAIN_MS
    } else {
        session_ttl_ms.saturating_add(RETAIN_SLACK_MS)
    }
}

/// The in-memory log of the fleet's ends.
#[derive(Debug, Clone)]
pub struct EndsLog {
    epoch: u64,
    next_seq: u64,
    entries: VecDeque<LoggedEnd>,
    retain_ms: Millis,
    /// Ends recorded since the start.
    pub recorded: u64,
    /// Ends dropped at [`MAX_FLEET_ENDS`] while still within their retention.
    pub dropped: u64,
}

impl EndsLog {
    /// An empty log named `epoch` (pick a new one per start).
    pub fn new(epoch: u64) -> Self {
        Self {
            epoch,
            next_seq: 1,
            entries: VecDeque::new(),
            retain_ms: 0,
            recorded: 0,
            dropped: 0,
        }
    }

    /// Ends held now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the log holds no end.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends `ends` reported by `origin` at `now_ms`, kept `retain_ms` (the longest
    /// retention any report asked for is used for every end); ends past their retention
    /// are dropped first.
    pub fn record(&mut self, origin: u64, ends: &[(u64, u64)], retain_ms: Millis, now_ms: Millis) {
        self.retain_ms = self.retain_ms.max(retain_ms);
        let retain = self.retain_ms;
        while self
            .entries
            .front()
            .is_some_and(|e| e.logged_ms.saturating_add(retain) < now_ms)
        {
            self.entries.pop_front();
        }
        for &(key, ended_ms) in ends {
            if self.entries.len() >= MAX_FLEET_ENDS {
                self.entries.pop_front();
                self.dropped += 1;
            }
            self.entries.push_back(LoggedEnd {
                seq: self.next_seq,
                key,
                ended_ms,
                origin,
                logged_ms: now_ms,
            });
            self.next_seq += 1;
            self.recorded += 1;
        }
    }

    /// The ends after `cursor` that `origin` did not report itself, at most `limit`,
    /// and the cursor to resume from. A cursor of another epoch (or none, or garbage)
    /// reads from the oldest end held.
    pub fn since(&self, cursor: Option<&str>, origin: u64, limit: usize) -> EndsSince {
        let after = cursor.and_then(|c| self.parse(c)).unwrap_or(0);
        let start = self.entries.partition_point(|e| e.seq <= after);
        let mut sessions = Vec::new();
        let mut last = after.max(self.next_seq.saturating_sub(1));
        for entry in self.entries.iter().skip(start) {
            if sessions.len() >= limit {
                last = entry.seq - 1;
                break;
            }
            if entry.origin != origin {
                sessions.push((entry.key, entry.ended_ms));
            }
        }
        EndsSince {
            sessions,
            cursor: format!("{:x}-{last}", self.epoch),
        }
    }

    fn parse(&self, cursor: &str) -> Option<u64> {
        let (epoch, seq) = cursor.split_once('-')?;
        let epoch = u64::from_str_radix(epoch, 16).ok()?;
        (epoch == self.epoch).then_some(())?;
        seq.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: u64 = 11;
    const B: u64 = 22;

    #[test]
    fn a_proxy_gets_the_others_ends_once_and_never_its_own() {
        let mut log = EndsLog::new(7);
        log.record(A, &[(1, 100), (2, 101)], 10_000, 1_000);
        log.record(B, &[(3, 102)], 10_000, 1_000);
        let first = log.since(None, A, 100);
        assert_eq!(first.sessions, vec![(3, 102)]);
        let again = log.since(Some(&first.cursor), A, 100);
        assert!(again.sessions.is_empty(), "{again:?}");
        assert_eq!(again.cursor, first.cursor);
        log.record(B, &[(4, 103)], 10_000, 1_500);
        assert_eq!(
            log.since(Some(&first.cursor), A, 100).sessions,
            vec![(4, 103)]
        );
        // B sees A's ends from the start.
        assert_eq!(log.since(None, B, 100).sessions, vec![(1, 100), (2, 101)]);
    }

    #[test]
    fn an_answer_is_bounded_and_the_next_one_resumes_where_it_stopped() {
        let mut log = EndsLog::new(1);
        let ends: Vec<(u64, u64)> = (0..10).map(|k| (k, 1_000 + k)).collect();
        log.record(B, &ends, 10_000, 0);
        let first = log.since(None, A, 4);
        assert_eq!(first.sessions, ends[..4].to_vec());
        let second = log.since(Some(&first.cursor), A, 4);
        assert_eq!(second.sessions, ends[4..8].to_vec());
        let third = log.since(Some(&second.cursor), A, 4);
        assert_eq!(third.sessions, ends[8..].to_vec());
    }

    #[test]
    fn a_cursor_of_another_governor_reads_everything_held() {
        let mut log = EndsLog::new(5);
        log.record(B, &[(1, 10)], 10_000, 0);
        for stale in ["6-100", "garbage", "5-x", ""] {
            assert_eq!(
                log.since(Some(stale), A, 10).sessions,
                vec![(1, 10)],
                "{stale}"
            );
        }
    }

    #[test]
    fn ends_leave_after_their_retention_and_past_the_bound_counted() {
        let mut log = EndsLog::new(1);
        log.record(B, &[(1, 10)], 5_000, 0);
        log.record(B, &[(2, 11)], 5_000, 5_000);
        assert_eq!(log.len(), 2, "kept through its retention");
        log.record(B, &[(3, 12)], 5_000, 5_001);
        assert_eq!(log.since(None, A, 10).sessions, vec![(2, 11), (3, 12)]);
        assert_eq!(log.dropped, 0, "retention is not a drop");

        let many: Vec<(u64, u64)> = (0..MAX_FLEET_ENDS as u64 + 5).map(|k| (k, k)).collect();
        log.record(A, &many, 5_000, 5_002);
        assert_eq!(log.len(), MAX_FLEET_ENDS);
        assert_eq!(log.dropped, 7);
        assert_eq!(log.recorded, 3 + many.len() as u64);
    }

    #[test]
    fn retention_follows_the_reported_session_ttl() {
        assert_eq!(retain_ms(0), DEFAULT_RETAIN_MS);
        assert_eq!(retain_ms(300_000), 302_000);
        assert_ne!(origin_of("gw-a", 1), origin_of("gw-a", 2));
        assert_ne!(origin_of("gw-a", 1), origin_of("gw-b", 1));
    }
}
