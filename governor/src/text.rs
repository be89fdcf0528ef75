//! Text that reaches logs and error messages: credentials in URLs are redacted and echoed
//! values are truncated, so an error line never leaks a password or floods the log.

/// Longest echoed value, in bytes, before it is cut with `…(+N bytes)`.
pub const MAX_ECHO: usize = 120;
/// Longest whole message, in bytes.
pub const MAX_MESSAGE: usize = 600;

/// Cuts `s` to at most `max` bytes (on a character boundary), appending `…(+N bytes)` with
/// the number of bytes left out.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while end > 0 && !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…(+{} bytes)", &s[..end], s.len() - end)
}

/// Replaces the password of every `scheme://user:password@host` in `s` with `***` (and a
/// bare `scheme://secret@host` user part too, as Redis takes a lone token as a password).
pub fn redact_urls(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        // The authority ends at the first '/', '?', '#', whitespace or quote.
        let end = tail
            .find(|c: char| matches!(c, '/' | '?' | '#' | '`' | '"' | '\'') || c.is_whitespace())
            .unwrap_or(tail.len());
        let authority = &tail[..end];
        match authority.rfind('@') {
            Some(at) => {
                let userinfo = &authority[..at];
                match userinfo.split_once(':') {
                    Some((user, _)) => {
                        out.push_str(user);
                        out.push_str(":***");
                    }
                    None if userinfo.is_empty() => {}
                    None => out.push_str("***"),
                }
                out.push_str(&authority[at..]);
            }
            None => out.push_str(authority),
        }
        rest = &tail[end..];
    }
    out.push_str(rest);
    out
}

/// A value for an error message: redacted, then truncated to [`MAX_ECHO`] bytes.
pub fn echo(value: &str) -> String {
    truncate(&redact_urls(value), MAX_ECHO)
}

/// A whole message (e.g. a parser's or a client library's): redacted, every quoted or
/// back-quoted segment longer than [`MAX_ECHO`] truncated, and the whole capped at
/// [`MAX_MESSAGE`] bytes.
pub fn sanitize(message: &str) -> String {
    let redacted = redact_urls(message);
    let mut out = String::with_capacity(redacted.len().min(MAX_MESSAGE + 32));
    let mut rest = redacted.as_str();
    while let Some(i) = rest.find(['`', '"']) {
        let quote = rest[i..].chars().next().unwrap_or('"');
        out.push_str(&rest[..=i]);
        let after = &rest[i + 1..];
        match after.find(quote) {
            Some(j) => {
                out.push_str(&truncate(&after[..j], MAX_ECHO));
                out.push(quote);
                rest = &after[j + 1..];
            }
            None => {
                out.push_str(&truncate(after, MAX_ECHO));
                rest = "";
            }
        }
    }
    out.push_str(rest);
    truncate(&out, MAX_MESSAGE)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 11, defect 6: `redis_url_password_is_redacted` (the policy side is in
    /// tests/policy.rs); these pin the helper.
    #[test]
    fn urls_lose_their_passwords() {
        assert_eq!(
            redact_urls("`http://admin:s3cret@cache:6379/0` is not a redis:// URL"),
            "`http://admin:***@cache:6379/0` is not a redis:// URL"
        );
        assert_eq!(
            redact_urls("redis://:hunter2@h redis://tok@h2 rediss://h3"),
            "redis://:***@h redis://***@h2 rediss://h3"
        );
        assert_eq!(redact_urls("no url here"), "no url here");
        assert_eq!(redact_urls("a://@x"), "a://@x");
    }

    #[test]
    fn long_values_are_truncated_with_their_size() {
        let long = "x".repeat(200_000);
        let t = truncate(&long, 10);
        assert_eq!(t, "xxxxxxxxxx…(+199990 bytes)");
        let msg = sanitize(&format!(
            "invalid value: string \"{long}\", expected a number"
        ));
        assert!(msg.len() < 300, "{}", msg.len());
        assert!(
            msg.ends_with("…(+199880 bytes)\", expected a number"),
            "{msg}"
        );
        assert_eq!(truncate("héllo", 2), "h…(+5 bytes)");
        assert!(sanitize(&"y".repeat(5000)).len() <= MAX_MESSAGE + 24);
    }
}
