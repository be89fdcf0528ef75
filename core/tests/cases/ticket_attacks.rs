// The changes and ways of presenting of `tickets.tsv`, included by the core tests
// (`core/tests/ticket_attacks.rs`) and the e2e suite (`tests/tests/e2e/tickets.rs`) alike,
// so both run the same attacks. Expects `HUNTER` and `TICKET` (header names) in scope.

/// One row of `tickets.tsv`, its ticket built.
struct Attack {
    case: &'static str,
    /// The headers of the request (hunter, and the ticket as `via` says).
    headers: Vec<(String, String)>,
    /// `full` or `session`.
    expect: &'static str,
}

/// Every row of `table`, with the real tickets it names: alice's for `vault`, carol's for
/// `other`, and alice's for `vault` signed by a rotated-out secret.
fn attacks(table: &'static str, alice: &str, carol_other: &str, rotated_out: &str) -> Vec<Attack> {
    table
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|line| {
            let fields: Vec<&str> = line.split('\t').collect();
            let [case, presenter, ticket, via, expect] = fields[..] else {
                panic!("tickets.tsv: expected 5 tab-separated fields: {line:?}");
            };
            let ticket = match ticket {
                "alice" => alice.to_owned(),
                "other_hunt" => carol_other.to_owned(),
                "rotated_out" => rotated_out.to_owned(),
                "literal:LONG" => "A".repeat(6000),
                t if t.starts_with("literal:") => t["literal:".len()..].to_owned(),
                t => match t.strip_prefix("alice:") {
                    Some(change) => changed(alice, change),
                    None => panic!("tickets.tsv: unknown ticket `{t}`"),
                },
            };
            Attack {
                case,
                headers: presented(presenter, &ticket, via),
                expect,
            }
        })
        .collect()
}

/// `ticket` changed as the table's `change` says.
fn changed(ticket: &str, change: &str) -> String {
    let flip = |c: char| if c == 'A' { 'B' } else { 'A' };
    let (body, mac) = ticket.rsplit_once('.').unwrap();
    let mut chars: Vec<char> = ticket.chars().collect();
    match change {
        "flip_last" => {
            let last = chars.len() - 1;
            chars[last] = flip(chars[last]);
        }
        "flip_middle" => {
            let middle = chars.len() / 2;
            chars[middle] = flip(chars[middle]);
        }
        "flip_first" => {
            let at = body.len() + 1;
            chars[at] = flip(chars[at]);
        }
        "truncate" => return ticket[..ticket.len() - 6].to_owned(),
        "strip_mac" => return body.to_owned(),
        "other_version" => return format!("9{}", &ticket[1..]),
        "doubled" => return format!("{ticket}{ticket}"),
        "lowercase" => return ticket.to_lowercase(),
        "trailing_dot" => return format!("{ticket}."),
        "far_future" => {
            let mut fields: Vec<&str> = body.split('.').collect();
            fields[3] = "_____w";
            return format!("{}.{mac}", fields.join("."));
        }
        other => panic!("unknown change `{other}`"),
    }
    chars.into_iter().collect()
}

/// The headers that present `ticket` by `presenter` as the table's `via` says.
fn presented(presenter: &str, ticket: &str, via: &str) -> Vec<(String, String)> {
    let mut headers = vec![(HUNTER.to_owned(), presenter.to_owned())];
    let cookie = |n: usize| vec![format!("huntgate.vault={ticket}"); n].join("; ");
    match via {
        "header" => headers.push((TICKET.to_owned(), ticket.to_owned())),
        "cookie" => headers.push(("cookie".to_owned(), cookie(1))),
        "two_headers" => {
            headers.push((TICKET.to_owned(), ticket.to_owned()));
            headers.push((TICKET.to_owned(), ticket.to_owned()));
        }
        "five_cookies" => headers.push(("cookie".to_owned(), cookie(5))),
        "header_and_cookie" => {
            headers.push((TICKET.to_owned(), ticket.to_owned()));
            headers.push(("cookie".to_owned(), cookie(1)));
        }
        other => panic!("unknown via `{other}`"),
    }
    headers
}
