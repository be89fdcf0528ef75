//! The requests of each variant: hunts `h0..hK`, hunters `u0..uH` per hunt,
//! tickets minted with the bench secret (what the filter itself would issue).

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Result};
use huntgate_core::ticket::TicketKeys;

use crate::filters::TICKET_SECRET;
use crate::http::{self, Connection};

/// The hunter header of the bench configs.
pub const HUNTER_HEADER: &str = "x-veltrix-hunter";
/// The ticket header.
pub const TICKET_HEADER: &str = huntgate_core::request::TICKET_HEADER;

/// Most distinct tickets the hot-path requests carry (fewer than the scale points'
/// first run sends, so every measured request meets a ticket warmed before).
pub const HOT_TICKETS: u32 = 500;

/// How many hunts and hunters per hunt are active.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scale {
    /// Hunts (registered; hot-path requests go round-robin over up to
    /// [`HOT_TICKETS`] of them).
    pub hunts: u32,
    /// Hunts `h0..` holding hunters (prefilled; joins go round-robin over them).
    pub active_hunts: u32,
    /// Admitted hunters per active hunt (joined before the measured requests).
    pub hunters: u32,
}

impl Scale {
    /// "1 hunt × 10 hunters".
    pub fn label(&self) -> String {
        format!(
            "{} hunts × {} hunters",
            group(self.hunts),
            group(self.hunters)
        )
    }
}

/// Digits grouped by thousands: 50000 → "50,000".
pub fn group(n: u32) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// The case id of bare Envoy sent joins' requests.
pub const BARE_JOIN: &str = "bare-join";
/// The case id of bare Envoy sent [`Traffic::NonHunt`]'s requests.
pub const BARE_NON_HUNT: &str = "bare-non-hunt";
/// The case id of bare Envoy sent [`Traffic::NonHuntSkipped`]'s requests.
pub const BARE_STATIC: &str = "bare-static";

/// The measured requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Traffic {
    /// Admitted hunters with valid tickets (round-robin over hunts and hunters).
    Hot,
    /// New hunters joining, admitted.
    JoinAdmit,
    /// New hunters joining a full hunt, rejected with 429.
    JoinReject,
    /// Requests outside the hunt prefix.
    NonHunt,
    /// Requests outside the hunt prefix on a route that skips the filter
    /// (`envoy/bench/bench.yaml`'s `/static/` route, the quick start's pattern).
    NonHuntSkipped,
}

impl Traffic {
    /// Short name.
    pub fn label(&self) -> &'static str {
        match self {
            Traffic::Hot => "hot path (valid ticket)",
            Traffic::JoinAdmit => "join admitted",
            Traffic::JoinReject => "join rejected",
            Traffic::NonHunt => "non-hunt request",
            Traffic::NonHuntSkipped => "non-hunt request, route skips the filter",
        }
    }

    /// The case whose count this traffic's "added" is taken over, when it is
    /// not `bare` (which is sent hot-path-shaped requests): bare Envoy sent
    /// requests of the same shape. A join or a request of no hunt carries no
    /// ticket, and bare Envoy alone counts ~5.5k fewer instructions for such a
    /// request than for a hot-path one, which an "added over `bare`" would
    /// hide.
    pub fn own_baseline(&self) -> Option<&'static str> {
        match self {
            Traffic::Hot => None,
            Traffic::JoinAdmit | Traffic::JoinReject => Some(BARE_JOIN),
            Traffic::NonHunt => Some(BARE_NON_HUNT),
            Traffic::NonHuntSkipped => Some(BARE_STATIC),
        }
    }

    /// The traffic bare Envoy is sent for [`Traffic::own_baseline`]'s case
    /// (a join's shape for both joins: bare Envoy answers 200 to every one).
    pub fn baseline_traffic(&self) -> Option<Traffic> {
        match self {
            Traffic::Hot => None,
            Traffic::JoinAdmit | Traffic::JoinReject => Some(Traffic::JoinAdmit),
            other => Some(*other),
        }
    }

    /// The status every measured request must get.
    pub fn expected_status(&self) -> u16 {
        match self {
            Traffic::JoinReject => 429,
            _ => 200,
        }
    }
}

/// Builds request bytes.
pub struct Requests {
    keys: TicketKeys,
    scale: Scale,
    expires_s: u32,
}

impl Requests {
    /// Requests for `scale`, tickets valid for a week.
    pub fn new(scale: Scale) -> Result<Self> {
        let keys = TicketKeys::new(&[TICKET_SECRET.to_string()]).map_err(anyhow::Error::msg)?;
        let now_s = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        let expires_s = u32::try_from(now_s + 7 * 24 * 3600)?;
        Ok(Self {
            keys,
            scale,
            expires_s,
        })
    }

    /// The `i`-th request of `traffic`.
    pub fn measured(&self, traffic: Traffic, i: u32) -> Vec<u8> {
        let hunts = match traffic {
            Traffic::Hot | Traffic::NonHunt | Traffic::NonHuntSkipped => self.scale.hunts,
            Traffic::JoinAdmit | Traffic::JoinReject => self.scale.active_hunts,
        }
        .max(1);
        let k = i % hunts;
        let round = i / hunts;
        match traffic {
            Traffic::Hot => {
                let (hunt, hunter) = self.hot_ticket(i);
                let ticket = self.keys.issue(&hunt, &hunter, self.expires_s);
                http::get(
                    &format!("/hunts/{hunt}/play"),
                    &[(HUNTER_HEADER, &hunter), (TICKET_HEADER, &ticket)],
                )
            }
            Traffic::JoinAdmit | Traffic::JoinReject => http::get(
                &format!("/hunts/h{k}/join"),
                &[(HUNTER_HEADER, &format!("n{i}"))],
            ),
            Traffic::NonHunt | Traffic::NonHuntSkipped => http::get(
                if traffic == Traffic::NonHunt {
                    "/assets/app.js"
                } else {
                    "/static/app.js"
                },
                &[(
                    HUNTER_HEADER,
                    &format!("u{}", round % self.scale.hunters.max(1)),
                )],
            ),
        }
    }

    /// The distinct tickets hot-path requests carry: every hunter of every hunt,
    /// at most [`HOT_TICKETS`].
    pub fn hot_tickets(&self) -> u32 {
        let all = u64::from(self.scale.hunts.max(1)) * u64::from(self.scale.hunters.max(1));
        u32::try_from(all.min(u64::from(HOT_TICKETS))).unwrap_or(HOT_TICKETS)
    }

    /// (hunt, hunter) of the `i`-th hot-path request: round-robin over the hunts
    /// first, then their hunters, repeating after [`Self::hot_tickets`].
    fn hot_ticket(&self, i: u32) -> (String, String) {
        let t = i % self.hot_tickets();
        let hunts = self.scale.hunts.max(1);
        let hunter = (t / hunts) % self.scale.hunters.max(1);
        (format!("h{}", t % hunts), format!("u{hunter}"))
    }

    /// Sends each hot-path ticket once, so the measured requests meet a worker that
    /// has verified them (a hunter's first request pays the MAC; the hot path is
    /// their later ones). The same requests in every run, so the slope drops them.
    pub fn warm_hot(&self, connection: &mut Connection) -> Result<()> {
        for i in 0..self.hot_tickets() {
            let response = connection.round_trip(&self.measured(Traffic::Hot, i))?;
            if response.status != 200 {
                bail!("warming hot ticket {i}: status {}", response.status);
            }
        }
        Ok(())
    }

    /// The same bytes as [`Traffic::Hot`] (for bare and the other filters).
    pub fn hot_shaped(&self, i: u32) -> Vec<u8> {
        self.measured(Traffic::Hot, i)
    }

    /// Joins every hunter of every active hunt (the state the measured requests meet).
    pub fn prefill(&self, connection: &mut Connection) -> Result<()> {
        for k in 0..self.scale.active_hunts {
            for j in 0..self.scale.hunters {
                let request = http::get(
                    &format!("/hunts/h{k}/join"),
                    &[(HUNTER_HEADER, &format!("u{j}"))],
                );
                let response = connection.round_trip(&request)?;
                if response.status != 200 {
                    bail!(
                        "prefill join h{k}/u{j}: status {} {}",
                        response.status,
                        response.body
                    );
                }
            }
        }
        Ok(())
    }
}
