//! Per-request context: reads the headers once, lets the engine decide, and
//! applies its effects (upstream decision header, local reply, ticket).

use std::rc::Rc;

use crate::exports::Action;
use crate::host::{self, HeaderMap, HostSharedData, Level};
use crate::root_context::Shared;
use huntgate_core::engine::{Event, IssuedTicket, SessionRef};
use huntgate_core::request::{reads_header, COOKIE_PREFIX, DECISION_HEADER, TICKET_HEADER};

/// One HTTP stream.
pub struct HuntgateHttp {
    shared: Rc<Shared>,
    ticket: Option<IssuedTicket>,
    /// A forwarded hunt request: its response loses `session_end.header`.
    hunt_response: bool,
    /// The request's session, which that header may end.
    session: Option<SessionRef>,
}

impl HuntgateHttp {
    /// A context for one stream.
    pub fn new(shared: Rc<Shared>) -> Self {
        Self {
            shared,
            ticket: None,
            hunt_response: false,
            session: None,
        }
    }
}

/// A fresh anonymous session id: 128 random bits, hex.
fn mint_session_id() -> String {
    let mut bytes = [0u8; 16];
    if getrandom::fill(&mut bytes).is_err() {
        let now = host::now_ms().unwrap_or(0);
        for (byte, time_byte) in bytes.iter_mut().zip(now.to_le_bytes()) {
            *byte = time_byte;
        }
    }
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn warn(message: &str) {
    host::log(Level::Warn, message);
}

impl HuntgateHttp {
    /// Removes the upstream's `session_end.header` from the response and, when it
    /// says `end`, ends the request's session (and sends no new ticket).
    #[inline(never)]
    fn end_if_asked(&mut self) {
        let shared = Rc::clone(&self.shared);
        let Some(name) = shared.config.session_end.header.as_deref() else {
            return;
        };
        let value = match host::get_header(HeaderMap::Response, name) {
            Ok(Some(value)) => value,
            Ok(None) => return,
            Err(e) => {
                warn(&format!("cannot read {name}: {e}"));
                return;
            }
        };
        if let Err(e) = host::remove_header(HeaderMap::Response, name) {
            warn(&format!("cannot remove {name}: {e}"));
        }
        if !value.trim_ascii().eq_ignore_ascii_case(b"end") {
            return;
        }
        let Some(session) = self.session.take() else {
            return;
        };
        // The ended session's ticket is not handed out.
        self.ticket = None;
        let (Ok(mut worker), Ok(metrics), Ok(now)) = (
            shared.worker.try_borrow_mut(),
            shared.metrics.try_borrow(),
            host::now_ms(),
        ) else {
            return;
        };
        match worker.end_session(&shared.config, &HostSharedData, &session, now) {
            Ok(_) => {
                metrics.session_ended();
                let cookie = format!(
                    "{COOKIE_PREFIX}{}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax",
                    session.hunt
                );
                if let Err(e) = host::add_header(HeaderMap::Response, "set-cookie", &cookie) {
                    warn(&format!("cannot clear the ticket cookie: {e}"));
                }
            }
            Err(e) => {
                metrics.host_error();
                warn(&format!("session end: {e}"));
            }
        }
    }

    /// The request headers: admission's decision, applied.
    pub fn on_request_headers(&mut self) -> Action {
        let shared = Rc::clone(&self.shared);
        let Ok(metrics) = shared.metrics.try_borrow() else {
            return Action::Continue;
        };
        let (bytes, now) = match (host::header_map_bytes(HeaderMap::Request), host::now_ms()) {
            (Ok(bytes), Ok(now)) => (bytes, now),
            (Err(e), _) | (_, Err(e)) => {
                metrics.host_error();
                warn(&format!("request passed unchecked: {e}"));
                return Action::Continue;
            }
        };
        // Borrowed from `bytes`, and only the headers admission reads.
        let wanted = |name: &[u8]| reads_header(&shared.config, name);
        let Some(headers) = huntgate_core::abi::decode_header_pairs_where(&bytes, wanted) else {
            metrics.host_error();
            warn(&format!(
                "request passed unchecked: {}",
                host::UNDECODABLE_HEADERS
            ));
            return Action::Continue;
        };
        let Ok(mut worker) = shared.worker.try_borrow_mut() else {
            return Action::Continue;
        };
        let mut effects = worker.handle(
            &shared.config,
            &HostSharedData,
            &headers,
            now,
            &mut mint_session_id,
        );
        metrics.record(&effects);
        if let Some(error) = &effects.error {
            warn(&format!("session store: {error}"));
        }
        if let Some(reply) = &effects.reply {
            let headers: Vec<(&str, &str)> = reply
                .headers
                .iter()
                .map(|(name, value)| (*name, value.as_str()))
                .collect();
            if let Err(e) = host::send_reply(reply.status, &headers, reply.body.as_bytes()) {
                warn(&format!("cannot send reply: {e}"));
                return Action::Continue;
            }
            return Action::Pause;
        }
        if let Some(decision) = effects.decision {
            if let Err(e) = host::set_header(HeaderMap::Request, DECISION_HEADER, decision) {
                warn(&format!("cannot mark request: {e}"));
            }
        } else if effects.strip_decision {
            // The client's own decision header never reaches the upstream.
            if let Err(e) = host::remove_header(HeaderMap::Request, DECISION_HEADER) {
                warn(&format!(
                    "cannot remove the client's {DECISION_HEADER}: {e}"
                ));
            }
        }
        self.ticket = effects.issue;
        self.hunt_response = effects.event != Event::NotHunt;
        self.session = effects.session.take();
        Action::Continue
    }

    /// The response headers: the session-end header read, the ticket attached.
    pub fn on_response_headers(&mut self) {
        if self.hunt_response && self.shared.config.session_end.header.is_some() {
            self.end_if_asked();
        }
        if let Some(issued) = self.ticket.take() {
            let set = host::set_header(HeaderMap::Response, TICKET_HEADER, &issued.ticket)
                .and_then(|()| host::add_header(HeaderMap::Response, "set-cookie", &issued.cookie))
                .and_then(|()| match &issued.queue_cookie {
                    Some(cleared) => host::add_header(HeaderMap::Response, "set-cookie", cleared),
                    None => Ok(()),
                });
            if let Err(e) = set {
                warn(&format!("cannot attach ticket: {e}"));
            }
        }
    }
}
