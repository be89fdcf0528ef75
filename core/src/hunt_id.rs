//! Hunt identifiers: 1–64 characters of `[A-Za-z0-9._-]`, compared case-insensitively.

/// Longest accepted hunt id.
pub const MAX_HUNT_ID_LEN: usize = 64;

/// Why a hunt id was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HuntIdError {
    /// Empty, too long, a character outside `[A-Za-z0-9._-]`, or only dots.
    Invalid,
}

/// Validates a hunt id and returns its canonical (lowercase) form.
pub fn normalize_hunt_id(raw: &str) -> Result<String, HuntIdError> {
    let valid_chars = raw
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-');
    let only_dots = raw.bytes().all(|b| b == b'.');
    if raw.is_empty() || raw.len() > MAX_HUNT_ID_LEN || !valid_chars || only_dots {
        return Err(HuntIdError::Invalid);
    }
    Ok(raw.to_ascii_lowercase())
}
