//! Which hunt a request path names, under every reading of it that Envoy or an
//! upstream might use.
//!
//! The path the filter sees is the one Envoy routes and forwards, but the
//! upstream may read it differently: decode `%2F` to `/` (once or twice), treat
//! `\` as `/`, drop `;params`, resolve `.` and `..` segments — or do none of
//! it. Canonicalisation may move a request *into* admission, never out of it,
//! so the path is read every way (each combination of those steps) and:
//!
//! - no reading under the prefix: not a hunt request;
//! - readings that name two different hunts: refused (400 `ambiguous_hunt_path`),
//!   because whichever one the filter counted, the upstream may serve the other;
//! - otherwise the one hunt that the readings name; readings under the prefix
//!   whose hunt segment is not a valid id do not count, unless no reading names
//!   a valid hunt (then the request is refused with 400 `invalid_hunt_id`).
//!
//! A path without `%`, `\`, `;` and dot segments has one reading only, and is
//! matched without allocating beyond the hunt id (the common case).

use crate::hunt_id::normalize_hunt_id;

/// What the readings of a path say about its hunt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathHunt {
    /// No reading is below the prefix.
    NotHunt,
    /// Every reading below the prefix names this (canonical) hunt, or is invalid.
    Hunt(String),
    /// Readings below the prefix, none with a valid hunt id.
    Invalid,
    /// Two readings name different hunts.
    Ambiguous,
}

/// Reads `path` (a `:path` value) every way and classifies it under `prefix`
/// (lowercase segments, e.g. `["hunts"]`).
pub fn hunt_of_path(path: &str, prefix: &[String]) -> PathHunt {
    let target = strip_to_path(path.as_bytes());
    let mut verdict = Verdict::default();
    if is_plain(target) {
        let plain = target.split(|b| *b == b'/').filter(|s| !s.is_empty());
        verdict.add(hunt_segment(plain, prefix));
        return verdict.finish();
    }
    let once = percent_decode(target);
    let twice = once.contains(&b'%').then(|| percent_decode(&once));
    let mut readings: Vec<&[u8]> = vec![target, &once];
    if let Some(twice) = &twice {
        readings.push(twice);
    }
    for reading in readings {
        for steps in Steps::all_for(reading) {
            verdict.add(hunt_segment(segments(reading, steps).into_iter(), prefix));
            if verdict.ambiguous {
                return PathHunt::Ambiguous;
            }
        }
    }
    verdict.finish()
}

/// The path part of a request target: without query or fragment, and without
/// `scheme://authority` when the target is in absolute form.
fn strip_to_path(target: &[u8]) -> &[u8] {
    let end = target
        .iter()
        .position(|b| *b == b'?' || *b == b'#')
        .unwrap_or(target.len());
    let path = target.get(..end).unwrap_or(target);
    if path.first() == Some(&b'/') {
        return path;
    }
    // Absolute form (`http://host/hunts/h1`): the path starts at the first `/` after `//`.
    match find(path, b"://") {
        Some(at) => {
            let rest = path.get(at + 3..).unwrap_or_default();
            let slash = rest.iter().position(|b| *b == b'/').unwrap_or(rest.len());
            rest.get(slash..).unwrap_or_default()
        }
        None => path,
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Whether every reading of `path` is the same: no escapes, backslashes,
/// parameters or dot segments.
fn is_plain(path: &[u8]) -> bool {
    let specials = path.iter().any(|b| matches!(b, b'%' | b'\\' | b';'));
    let dot_segment = path
        .split(|b| *b == b'/')
        .any(|segment| segment == b"." || segment == b"..");
    !specials && !dot_segment
}

/// Optional steps of one reading.
#[derive(Debug, Clone, Copy, Default)]
struct Steps {
    backslash_is_slash: bool,
    strip_params: bool,
    resolve_dots: bool,
}

impl Steps {
    /// Every combination of the steps that can change `reading`.
    fn all_for(reading: &[u8]) -> Vec<Steps> {
        let backslash = reading.contains(&b'\\');
        let params = reading.contains(&b';');
        let mut all = Vec::with_capacity(8);
        for backslash_is_slash in step_options(backslash) {
            for strip_params in step_options(params) {
                for resolve_dots in [false, true] {
                    all.push(Steps {
                        backslash_is_slash,
                        strip_params,
                        resolve_dots,
                    });
                }
            }
        }
        all
    }
}

/// Without the step, and also with it when it can change the reading.
fn step_options(applies: bool) -> impl Iterator<Item = bool> {
    std::iter::once(false).chain(applies.then_some(true))
}

/// The non-empty segments of one reading (`//` merged), after its steps.
fn segments(path: &[u8], steps: Steps) -> Vec<&[u8]> {
    let separator = |b: &u8| *b == b'/' || (steps.backslash_is_slash && *b == b'\\');
    let mut out: Vec<&[u8]> = Vec::new();
    for raw in path.split(separator) {
        let segment = match raw.iter().position(|b| *b == b';') {
            Some(cut) if steps.strip_params => raw.get(..cut).unwrap_or(raw),
            _ => raw,
        };
        match segment {
            b"" => {}
            b"." if steps.resolve_dots => {}
            b".." if steps.resolve_dots => {
                out.pop();
            }
            _ => out.push(segment),
        }
    }
    out
}

/// The segment after `prefix`, when the segments start with it (ASCII case ignored).
fn hunt_segment<'a>(
    mut segments: impl Iterator<Item = &'a [u8]>,
    prefix: &[String],
) -> Option<&'a [u8]> {
    for want in prefix {
        let got = segments.next()?;
        if !want.as_bytes().eq_ignore_ascii_case(got) {
            return None;
        }
    }
    segments.next()
}

/// What the readings so far say.
#[derive(Debug, Default)]
struct Verdict {
    hunt: Option<String>,
    invalid: bool,
    ambiguous: bool,
}

impl Verdict {
    fn add(&mut self, segment: Option<&[u8]>) {
        let Some(segment) = segment else {
            return;
        };
        let id = std::str::from_utf8(segment)
            .ok()
            .and_then(|raw| normalize_hunt_id(raw).ok());
        match (id, &self.hunt) {
            (None, _) => self.invalid = true,
            (Some(id), None) => self.hunt = Some(id),
            (Some(id), Some(seen)) if *seen != id => self.ambiguous = true,
            (Some(_), Some(_)) => {}
        }
    }

    fn finish(self) -> PathHunt {
        match (self.ambiguous, self.hunt, self.invalid) {
            (true, _, _) => PathHunt::Ambiguous,
            (false, Some(hunt), _) => PathHunt::Hunt(hunt),
            (false, None, true) => PathHunt::Invalid,
            (false, None, false) => PathHunt::NotHunt,
        }
    }
}

/// Decodes `%XX` escapes; a `%` not followed by two hex digits stays literal.
fn percent_decode(input: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while let Some(&b) = input.get(i) {
        if b == b'%' {
            let hi = input.get(i + 1).and_then(|c| hex_value(*c));
            let lo = input.get(i + 2).and_then(|c| hex_value(*c));
            if let (Some(hi), Some(lo)) = (hi, lo) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(b);
        i += 1;
    }
    out
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}
