//! The proxy-wasm ABI's serialized header map, decoded and encoded without
//! trusting the bytes (the SDK's own decoder panics on non-UTF-8 values).

use std::borrow::Cow;

/// Decodes the ABI's serialized map: count, (key len, value len)×count, then
/// NUL-terminated keys and values.
pub fn decode_header_pairs(bytes: &[u8]) -> Option<Vec<(String, String)>> {
    Some(
        decode_header_pairs_borrowed(bytes)?
            .into_iter()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
    )
}

/// [`decode_header_pairs`] borrowing from `bytes`: no copy or allocation per
/// header unless a value is not UTF-8 (then it is decoded lossily).
pub fn decode_header_pairs_borrowed(bytes: &[u8]) -> Option<Vec<(Cow<'_, str>, Cow<'_, str>)>> {
    decode_header_pairs_where(bytes, |_| true)
}

/// [`decode_header_pairs_borrowed`], keeping only the pairs whose name passes
/// `keep` (the others are skipped without being decoded).
pub fn decode_header_pairs_where(
    bytes: &[u8],
    keep: impl Fn(&[u8]) -> bool,
) -> Option<Vec<(Cow<'_, str>, Cow<'_, str>)>> {
    let read_u32 = |at: usize| -> Option<usize> {
        let raw = bytes.get(at..at + 4)?;
        Some(u32::from_le_bytes(raw.try_into().ok()?) as usize)
    };
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let count = read_u32(0)?;
    let mut sizes_at = 4;
    let mut data_at = 4usize.checked_add(count.checked_mul(8)?)?;
    let mut pairs = Vec::with_capacity(count.min(8));
    for _ in 0..count {
        let key_len = read_u32(sizes_at)?;
        let value_len = read_u32(sizes_at + 4)?;
        sizes_at += 8;
        let key = bytes.get(data_at..data_at.checked_add(key_len)?)?;
        data_at = data_at.checked_add(key_len + 1)?;
        let value = bytes.get(data_at..data_at.checked_add(value_len)?)?;
        data_at = data_at.checked_add(value_len + 1)?;
        if keep(key) {
            pairs.push((String::from_utf8_lossy(key), String::from_utf8_lossy(value)));
        }
    }
    Some(pairs)
}

/// Encodes header pairs in the ABI's serialized map format.
pub fn encode_header_pairs(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + headers.len() * 40);
    out.extend_from_slice(&(headers.len() as u32).to_le_bytes());
    for (name, value) in headers {
        out.extend_from_slice(&(name.len() as u32).to_le_bytes());
        out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    }
    for (name, value) in headers {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(value.as_bytes());
        out.push(0);
    }
    out
}
