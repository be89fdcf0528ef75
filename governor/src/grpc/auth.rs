//! Bearer tokens of the mutations, from `--grpc-token-file`: one token per line, either
//! `NAME TOKEN` (the name is what the audit log records) or a bare `TOKEN` (recorded as
//! `token-<line>`); blank lines and `#` comments are skipped. The file is read again when
//! its modification time or size changes, so a token is rotated by editing the file (or by
//! the kubelet's update of a mounted Secret), without a restart. A file that cannot be read
//! or holds no token keeps the last good tokens (logged).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use tonic::Status;

/// Longest accepted token file.
pub const MAX_TOKEN_FILE_BYTES: u64 = 64 * 1024;
/// Shortest accepted token.
pub const MIN_TOKEN_LEN: usize = 16;

/// One accepted token.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Token {
    name: String,
    secret: String,
}

#[derive(Debug, Default)]
struct Loaded {
    stamp: Option<(SystemTime, u64)>,
    tokens: Vec<Token>,
}

/// The tokens of a file, re-read on change.
#[derive(Debug)]
pub struct Tokens {
    path: PathBuf,
    loaded: Mutex<Loaded>,
}

/// Parses a token file's text: the tokens, or the line that is wrong.
fn parse(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let mut words = line.split_whitespace();
        let (name, secret) = match (words.next(), words.next(), words.next()) {
            (Some(secret), None, _) => (format!("token-{}", i + 1), secret),
            (Some(name), Some(secret), None) => (name.to_owned(), secret),
            _ => return Err(format!("line {}: expected `NAME TOKEN` or `TOKEN`", i + 1)),
        };
        if secret.len() < MIN_TOKEN_LEN {
            return Err(format!(
                "line {}: a token has at least {MIN_TOKEN_LEN} characters",
                i + 1
            ));
        }
        out.push((name, secret.to_owned()));
    }
    if out.is_empty() {
        return Err("no token".to_owned());
    }
    Ok(out)
}

/// Equal in time independent of where they differ.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Tokens {
    /// The tokens of `path`; refuses a file that cannot be read or holds no valid token
    /// (at start-up there is no last good one).
    pub fn load(path: &Path) -> Result<Self, String> {
        let tokens = Self {
            path: path.to_path_buf(),
            loaded: Mutex::new(Loaded::default()),
        };
        tokens.refresh()?;
        Ok(tokens)
    }

    /// Re-reads the file if it changed; an error leaves the last good tokens.
    fn refresh(&self) -> Result<(), String> {
        let meta =
            std::fs::metadata(&self.path).map_err(|e| format!("{}: {e}", self.path.display()))?;
        let stamp = (
            meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
            meta.len(),
        );
        let mut loaded = self
            .loaded
            .lock()
            .map_err(|_| "token state poisoned".to_owned())?;
        if loaded.stamp == Some(stamp) {
            return Ok(());
        }
        if meta.len() > MAX_TOKEN_FILE_BYTES {
            return Err(format!(
                "{}: larger than {MAX_TOKEN_FILE_BYTES} bytes",
                self.path.display()
            ));
        }
        let text = std::fs::read_to_string(&self.path)
            .map_err(|e| format!("{}: {e}", self.path.display()))?;
        let parsed = parse(&text).map_err(|e| format!("{}: {e}", self.path.display()))?;
        loaded.tokens = parsed
            .into_iter()
            .map(|(name, secret)| Token { name, secret })
            .collect();
        loaded.stamp = Some(stamp);
        tracing::info!(file = %self.path.display(), tokens = loaded.tokens.len(), "gRPC tokens loaded");
        Ok(())
    }

    /// The name of the token that `authorization` (`Bearer <token>`) carries:
    /// UNAUTHENTICATED when it is missing, malformed or unknown.
    pub fn check(&self, authorization: Option<&str>) -> Result<String, Status> {
        if let Err(e) = self.refresh() {
            tracing::warn!(error = %e, "gRPC token file unusable: the last good tokens stay");
        }
        let Some(presented) = authorization
            .and_then(|v| {
                v.strip_prefix("Bearer ")
                    .or_else(|| v.strip_prefix("bearer "))
            })
            .map(str::trim)
        else {
            return Err(Status::unauthenticated(
                "a mutation needs `authorization: Bearer <token>`",
            ));
        };
        let loaded = self
            .loaded
            .lock()
            .map_err(|_| Status::internal("token state poisoned"))?;
        loaded
            .tokens
            .iter()
            .find(|t| same(t.secret.as_bytes(), presented.as_bytes()))
            .map(|t| t.name.clone())
            .ok_or_else(|| Status::unauthenticated("unknown token"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn names_bare_tokens_comments_and_short_tokens() {
        let parsed = parse("# ops\norchestrator 0123456789abcdef\n\nfedcba9876543210\n").unwrap();
        assert_eq!(
            parsed,
            vec![
                ("orchestrator".to_owned(), "0123456789abcdef".to_owned()),
                ("token-4".to_owned(), "fedcba9876543210".to_owned())
            ]
        );
        assert!(parse("short").unwrap_err().contains("line 1"));
        assert!(parse("a b c").unwrap_err().contains("line 1"));
        assert_eq!(parse("# nothing\n").unwrap_err(), "no token");
    }

    #[test]
    fn a_rotated_file_is_read_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens");
        std::fs::write(&path, "ops aaaaaaaaaaaaaaaa\n").unwrap();
        let tokens = Tokens::load(&path).unwrap();
        assert_eq!(
            tokens.check(Some("Bearer aaaaaaaaaaaaaaaa")).unwrap(),
            "ops"
        );
        assert!(tokens.check(None).is_err());
        assert!(tokens.check(Some("Bearer bbbbbbbbbbbbbbbb")).is_err());
        std::fs::write(&path, "ops2 bbbbbbbbbbbbbbbbbb\n").unwrap();
        assert_eq!(
            tokens.check(Some("Bearer bbbbbbbbbbbbbbbbbb")).unwrap(),
            "ops2"
        );
        assert!(tokens.check(Some("Bearer aaaaaaaaaaaaaaaa")).is_err());
    }
}
