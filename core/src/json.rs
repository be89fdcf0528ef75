//! The filter's JSON: a strict pull reader that names the field at fault, and a
//! writer for the small documents it sends (replies, lease reports).
//!
//! The filter reads JSON in three places (its plugin configuration, the
//! governor's throttle document and the lease answer) and writes it in two
//! (local replies and the lease report). A general-purpose serializer cost the
//! module about a third of its size; this one does only what those need:
//! RFC 8259 syntax, every error carrying the path of the value being read
//! (`hunts.h1.max_hunters`, `ticket_secrets[0]`, `.` for the document), nesting
//! bounded by [`MAX_DEPTH`], and no panics on any input.

use std::fmt;

/// Deepest nesting of arrays and objects accepted (bounds the reader's recursion).
pub const MAX_DEPTH: usize = 64;

/// Longest piece of user input echoed in an error message.
const MAX_ECHO_CHARS: usize = 64;

/// `value` for an error message: at most [`MAX_ECHO_CHARS`] characters, then `…(+N bytes)`.
pub fn truncated(value: &str) -> String {
    match value.char_indices().nth(MAX_ECHO_CHARS) {
        Some((cut, _)) => format!(
            "{}…(+{} bytes)",
            value.get(..cut).unwrap_or(value),
            value.len() - cut
        ),
        None => value.to_string(),
    }
}

/// A map an object of named entries is read into (hunts by id).
pub trait Entries<V> {
    /// Adds `value` under `key`; false when `key` was already there.
    fn add(&mut self, key: String, value: V) -> bool;
}

impl<V> Entries<V> for hashbrown::HashMap<String, V> {
    fn add(&mut self, key: String, value: V) -> bool {
        self.insert(key, value).is_none()
    }
}

impl<V> Entries<V> for std::collections::BTreeMap<String, V> {
    fn add(&mut self, key: String, value: V) -> bool {
        self.insert(key, value).is_none()
    }
}

/// A document refused: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    /// Path of the value at fault (`hunts.h1.max_hunters`), or `.` for the document.
    pub path: String,
    /// What is wrong with it.
    pub problem: String,
}

impl fmt::Display for JsonError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.problem)
    }
}

/// What the next value is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool,
    /// A number.
    Number,
    /// A string.
    String,
    /// An array.
    Array,
    /// An object.
    Object,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Null => "null",
            Kind::Bool => "a boolean",
            Kind::Number => "a number",
            Kind::String => "a string",
            Kind::Array => "an array",
            Kind::Object => "an object",
        }
    }
}

enum Segment {
    Key(String),
    Index(usize),
}

/// Reads one JSON document value by value; the caller says what it expects next.
pub struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    path: Vec<Segment>,
    /// Arrays and objects open around the current value.
    depth: usize,
}

impl<'a> Reader<'a> {
    /// A reader at the start of `bytes`.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self {
            bytes,
            pos: 0,
            path: Vec::new(),
            depth: 0,
        }
    }

    /// The path of the value being read: keys joined by `.`, indexes as `[i]`, `.` at the top.
    pub fn path(&self) -> String {
        let mut out = String::new();
        for segment in &self.path {
            match segment {
                Segment::Key(key) => {
                    if !out.is_empty() {
                        out.push('.');
                    }
                    out.push_str(key);
                }
                Segment::Index(i) => {
                    out.push('[');
                    out.push_str(&i.to_string());
                    out.push(']');
                }
            }
        }
        if out.is_empty() {
            out.push('.');
        }
        out
    }

    /// An error about the value being read.
    pub fn error(&self, problem: impl Into<String>) -> JsonError {
        JsonError {
            path: self.path(),
            problem: problem.into(),
        }
    }

    fn syntax(&self, what: &str) -> JsonError {
        self.error(format!("invalid JSON: {what} at byte {}", self.pos))
    }

    fn byte(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.byte(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.pos += 1;
        }
    }

    /// The kind of the next value (a syntax error if there is none).
    pub fn peek(&mut self) -> Result<Kind, JsonError> {
        self.skip_whitespace();
        match self.byte() {
            Some(b'n') => Ok(Kind::Null),
            Some(b't' | b'f') => Ok(Kind::Bool),
            Some(b'-' | b'0'..=b'9') => Ok(Kind::Number),
            Some(b'"') => Ok(Kind::String),
            Some(b'[') => Ok(Kind::Array),
            Some(b'{') => Ok(Kind::Object),
            Some(_) => Err(self.syntax("expected a value")),
            None => Err(self.syntax("unexpected end")),
        }
    }

    /// Checks that nothing but whitespace follows the document.
    pub fn end(&mut self) -> Result<(), JsonError> {
        self.skip_whitespace();
        if self.pos < self.bytes.len() {
            return Err(JsonError {
                path: ".".to_string(),
                problem: format!("trailing data at byte {}", self.pos),
            });
        }
        Ok(())
    }

    /// "invalid type" for the next value, which is not `expected`.
    pub fn type_error(&mut self, expected: &str) -> JsonError {
        match self.peek() {
            Ok(kind) => self.error(format!(
                "invalid type: {}, expected {expected}",
                kind.name()
            )),
            Err(e) => e,
        }
    }

    fn expect(&mut self, kind: Kind, expected: &str) -> Result<(), JsonError> {
        if self.peek()? == kind {
            Ok(())
        } else {
            Err(self.type_error(expected))
        }
    }

    fn literal(&mut self, text: &[u8]) -> Result<(), JsonError> {
        let end = self.pos + text.len();
        if self.bytes.get(self.pos..end) == Some(text) {
            self.pos = end;
            Ok(())
        } else {
            Err(self.syntax("expected a value"))
        }
    }

    /// Reads `null`.
    pub fn null(&mut self) -> Result<(), JsonError> {
        self.expect(Kind::Null, "null")?;
        self.literal(b"null")
    }

    /// Reads a boolean.
    pub fn bool(&mut self) -> Result<bool, JsonError> {
        self.expect(Kind::Bool, "a boolean")?;
        if self.byte() == Some(b't') {
            self.literal(b"true").map(|()| true)
        } else {
            self.literal(b"false").map(|()| false)
        }
    }

    /// Reads a string.
    pub fn string(&mut self) -> Result<String, JsonError> {
        self.expect(Kind::String, "a string")?;
        self.pos += 1;
        let mut out = String::new();
        loop {
            let start = self.pos;
            while matches!(self.byte(), Some(b) if b != b'"' && b != b'\\' && b >= 0x20) {
                self.pos += 1;
            }
            let run = self.bytes.get(start..self.pos).unwrap_or_default();
            match std::str::from_utf8(run) {
                Ok(run) => out.push_str(run),
                Err(_) => return Err(self.syntax("invalid UTF-8 in a string")),
            }
            match self.byte() {
                Some(b'"') => {
                    self.pos += 1;
                    return Ok(out);
                }
                Some(b'\\') => {
                    self.pos += 1;
                    self.escape(&mut out)?;
                }
                Some(_) => return Err(self.syntax("control character in a string")),
                None => return Err(self.syntax("unterminated string")),
            }
        }
    }

    fn escape(&mut self, out: &mut String) -> Result<(), JsonError> {
        let Some(b) = self.byte() else {
            return Err(self.syntax("unterminated string"));
        };
        self.pos += 1;
        let c = match b {
            b'"' => '"',
            b'\\' => '\\',
            b'/' => '/',
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let high = self.hex4()?;
                let code = if (0xD800..0xDC00).contains(&high) {
                    if self.bytes.get(self.pos..self.pos + 2) != Some(b"\\u") {
                        return Err(self.syntax("unpaired surrogate"));
                    }
                    self.pos += 2;
                    let low = self.hex4()?;
                    if !(0xDC00..0xE000).contains(&low) {
                        return Err(self.syntax("unpaired surrogate"));
                    }
                    0x10000 + ((high - 0xD800) << 10) + (low - 0xDC00)
                } else {
                    high
                };
                char::from_u32(code).ok_or_else(|| self.syntax("unpaired surrogate"))?
            }
            _ => return Err(self.syntax("invalid escape")),
        };
        out.push(c);
        Ok(())
    }

    fn hex4(&mut self) -> Result<u32, JsonError> {
        let digits = self
            .bytes
            .get(self.pos..self.pos + 4)
            .and_then(|d| std::str::from_utf8(d).ok())
            .filter(|d| d.bytes().all(|b| b.is_ascii_hexdigit()))
            .and_then(|d| u32::from_str_radix(d, 16).ok())
            .ok_or_else(|| self.syntax("invalid \\u escape"))?;
        self.pos += 4;
        Ok(digits)
    }

    /// The text of the next number, checked against JSON's grammar.
    fn number_text(&mut self) -> Result<&'a str, JsonError> {
        self.expect(Kind::Number, "a number")?;
        let start = self.pos;
        let digits = |r: &mut Self| {
            let from = r.pos;
            while matches!(r.byte(), Some(b'0'..=b'9')) {
                r.pos += 1;
            }
            r.pos > from
        };
        if self.byte() == Some(b'-') {
            self.pos += 1;
        }
        if self.byte() == Some(b'0') {
            self.pos += 1;
        } else if !digits(self) {
            return Err(self.syntax("invalid number"));
        }
        if self.byte() == Some(b'.') {
            self.pos += 1;
            if !digits(self) {
                return Err(self.syntax("invalid number"));
            }
        }
        if matches!(self.byte(), Some(b'e' | b'E')) {
            self.pos += 1;
            if matches!(self.byte(), Some(b'+' | b'-')) {
                self.pos += 1;
            }
            if !digits(self) {
                return Err(self.syntax("invalid number"));
            }
        }
        let text = self.bytes.get(start..self.pos).unwrap_or_default();
        std::str::from_utf8(text).map_err(|_| self.syntax("invalid number"))
    }

    /// Reads a number.
    pub fn f64(&mut self) -> Result<f64, JsonError> {
        let text = self.number_text()?;
        match crate::decimal::parse(text) {
            Some(value) if value.is_finite() => Ok(value),
            _ => Err(self.error(format!("invalid value: {text}, expected a finite number"))),
        }
    }

    /// Reads a non-negative integer written without fraction or exponent.
    pub fn u64(&mut self) -> Result<u64, JsonError> {
        let text = self.number_text()?;
        text.parse::<u64>().map_err(|_| {
            self.error(format!(
                "invalid value: {}, expected a non-negative integer",
                truncated(text)
            ))
        })
    }

    /// Reads an integer within 0..=4294967295.
    pub fn u32(&mut self) -> Result<u32, JsonError> {
        let value = self.u64()?;
        u32::try_from(value).map_err(|_| {
            self.error(format!(
                "invalid value: {value}, expected an integer of at most {}",
                u32::MAX
            ))
        })
    }

    /// Steps over the opening `{` or `[` of a container of `kind`.
    fn open(&mut self, kind: Kind, expected: &str) -> Result<(), JsonError> {
        self.expect(kind, expected)?;
        if self.depth >= MAX_DEPTH {
            return Err(self.syntax("nested too deep"));
        }
        self.depth += 1;
        self.pos += 1;
        self.skip_whitespace();
        Ok(())
    }

    /// Steps over the closing `}` or `]`.
    fn close(&mut self) {
        self.pos += 1;
        self.depth = self.depth.saturating_sub(1);
    }

    /// Reads an object, calling `each` with the reader at every member's value
    /// and its key (the path then ends with the key). `each` must read or skip
    /// the value. Duplicate keys are passed on: the caller refuses them.
    pub fn object<F>(&mut self, mut each: F) -> Result<(), JsonError>
    where
        F: FnMut(&mut Self, String) -> Result<(), JsonError>,
    {
        self.open(Kind::Object, "an object")?;
        if self.byte() == Some(b'}') {
            self.close();
            return Ok(());
        }
        loop {
            self.skip_whitespace();
            if self.byte() != Some(b'"') {
                return Err(self.syntax("expected a key"));
            }
            let key = self.string()?;
            self.skip_whitespace();
            if self.byte() != Some(b':') {
                return Err(self.syntax("expected `:`"));
            }
            self.pos += 1;
            self.path.push(Segment::Key(key.clone()));
            each(self, key)?;
            self.path.pop();
            self.skip_whitespace();
            match self.byte() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {
                    self.close();
                    return Ok(());
                }
                _ => return Err(self.syntax("expected `,` or `}`")),
            }
        }
    }

    /// Reads an object of named entries into `map`, each value read by `read`;
    /// a key given twice is refused (`hunts.h1: listed twice`).
    #[inline(never)]
    pub fn entries<V, M, F>(&mut self, map: &mut M, mut read: F) -> Result<(), JsonError>
    where
        M: Entries<V>,
        F: FnMut(&mut Self) -> Result<V, JsonError>,
    {
        self.object(|r, key| {
            let value = read(r)?;
            if map.add(key, value) {
                Ok(())
            } else {
                Err(r.error("listed twice"))
            }
        })
    }

    /// Reads an array, calling `each` with the reader at every element (the
    /// path then ends with its index). `each` must read or skip the element.
    pub fn array<F>(&mut self, mut each: F) -> Result<(), JsonError>
    where
        F: FnMut(&mut Self) -> Result<(), JsonError>,
    {
        self.open(Kind::Array, "an array")?;
        if self.byte() == Some(b']') {
            self.close();
            return Ok(());
        }
        let mut index = 0;
        loop {
            self.path.push(Segment::Index(index));
            each(self)?;
            self.path.pop();
            index += 1;
            self.skip_whitespace();
            match self.byte() {
                Some(b',') => self.pos += 1,
                Some(b']') => {
                    self.close();
                    return Ok(());
                }
                _ => return Err(self.syntax("expected `,` or `]`")),
            }
        }
    }

    /// Reads and discards the next value, whatever it is.
    pub fn skip(&mut self) -> Result<(), JsonError> {
        match self.peek()? {
            Kind::Null => self.null(),
            Kind::Bool => self.bool().map(drop),
            Kind::Number => self.f64().map(drop),
            Kind::String => self.string().map(drop),
            Kind::Array => self.array(Self::skip),
            Kind::Object => self.object(|r, _| r.skip()),
        }
    }

    /// `null` as `None`, else the value read by `read`.
    pub fn optional<T>(
        &mut self,
        read: impl FnOnce(&mut Self) -> Result<T, JsonError>,
    ) -> Result<Option<T>, JsonError> {
        if self.peek()? == Kind::Null {
            self.null().map(|()| None)
        } else {
            read(self).map(Some)
        }
    }

    /// Reads a string that must be one of `variants` (the error lists them).
    pub fn variant(&mut self, variants: &[&'static str]) -> Result<&'static str, JsonError> {
        let text = self.string()?;
        variants
            .iter()
            .find(|v| **v == text)
            .copied()
            .ok_or_else(|| {
                self.error(format!(
                    "unknown variant `{}`, expected {}",
                    truncated(&text),
                    one_of(variants)
                ))
            })
    }
}

/// `` `a`, `b` or `c` `` for an error message.
pub fn one_of(names: &[&str]) -> String {
    let mut out = String::new();
    for (i, name) in names.iter().enumerate() {
        if i > 0 {
            out.push_str(if i + 1 == names.len() { " or " } else { ", " });
        }
        out.push('`');
        out.push_str(name);
        out.push('`');
    }
    out
}

/// The members of a struct-like object already read, refusing a second one.
#[derive(Default)]
pub struct Seen(Vec<&'static str>);

impl Seen {
    /// Records `key` (one of `fields`); an unknown or repeated key is refused.
    pub fn first(
        &mut self,
        reader: &Reader<'_>,
        key: &str,
        fields: &[&'static str],
    ) -> Result<&'static str, JsonError> {
        let Some(field) = fields.iter().find(|f| **f == key).copied() else {
            return Err(reader.error(format!(
                "unknown field `{}`, expected {}",
                truncated(key),
                one_of(fields)
            )));
        };
        if self.0.contains(&field) {
            return Err(reader.error(format!("duplicate field `{field}`")));
        }
        self.0.push(field);
        Ok(field)
    }

    /// Records `key` if it is one of `fields` (`None`: a member the caller
    /// ignores); a repeated known key is refused.
    pub fn known(
        &mut self,
        reader: &Reader<'_>,
        key: &str,
        fields: &[&'static str],
    ) -> Result<Option<&'static str>, JsonError> {
        if fields.contains(&key) {
            self.first(reader, key, fields).map(Some)
        } else {
            Ok(None)
        }
    }

    /// Whether `field` was read.
    pub fn has(&self, field: &str) -> bool {
        self.0.contains(&field)
    }
}

/// Appends `text` as a JSON string.
pub fn push_string(out: &mut String, text: &str) {
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => {
                out.push_str("\\u00");
                for nibble in [u32::from(c) >> 4, u32::from(c) & 0xf] {
                    out.push(char::from_digit(nibble, 16).unwrap_or('0'));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Writes one JSON object, member by member, in the order given.
pub struct ObjectWriter {
    out: String,
}

impl Default for ObjectWriter {
    fn default() -> Self {
        Self::new()
    }
}

impl ObjectWriter {
    /// An empty object.
    pub fn new() -> Self {
        Self {
            out: String::from("{"),
        }
    }

    fn key(&mut self, key: &str) {
        if self.out.len() > 1 {
            self.out.push(',');
        }
        push_string(&mut self.out, key);
        self.out.push(':');
    }

    /// Adds a string member.
    pub fn string(mut self, key: &str, value: &str) -> Self {
        self.key(key);
        push_string(&mut self.out, value);
        self
    }

    /// Adds an integer member.
    pub fn number(mut self, key: &str, value: u64) -> Self {
        self.key(key);
        self.out.push_str(&value.to_string());
        self
    }

    /// Adds a boolean member.
    pub fn boolean(mut self, key: &str, value: bool) -> Self {
        self.key(key);
        self.out.push_str(if value { "true" } else { "false" });
        self
    }

    /// Adds a member whose value is already JSON text.
    pub fn raw(mut self, key: &str, json: &str) -> Self {
        self.key(key);
        self.out.push_str(json);
        self
    }

    /// The object's text.
    pub fn finish(mut self) -> String {
        self.out.push('}');
        self.out
    }
}
