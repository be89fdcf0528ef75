//! The proxy-wasm header map codec: hostile bytes never trap.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use huntgate_core::abi::{decode_header_pairs, encode_header_pairs};

fn encode_bytes(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
    let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k);
        out.push(0);
        out.extend_from_slice(v);
        out.push(0);
    }
    out
}

#[test]
fn non_utf8_header_values_decode_lossily_instead_of_trapping() {
    let bytes = encode_bytes(&[(b":path", b"/hunts/h1"), (b"x-veltrix-hunter", b"a\xffb")]);
    let pairs = decode_header_pairs(&bytes).unwrap();
    assert_eq!(pairs[0], (":path".to_string(), "/hunts/h1".to_string()));
    assert_eq!(pairs[1].1, "a\u{fffd}b");
}

#[test]
fn truncated_or_lying_maps_are_refused() {
    let mut bytes = encode_bytes(&[(b"k", b"value")]);
    bytes.truncate(bytes.len() - 3);
    assert!(decode_header_pairs(&bytes).is_none());
    assert!(decode_header_pairs(&[5, 0, 0, 0]).is_none());
    assert!(decode_header_pairs(&[0xff, 0xff, 0xff, 0xff]).is_none());
}

#[test]
fn encode_then_decode_round_trips() {
    let encoded =
        encode_header_pairs(&[("content-type", "application/json"), ("retry-after", "30")]);
    let decoded = decode_header_pairs(&encoded).unwrap();
    assert_eq!(decoded[1], ("retry-after".to_string(), "30".to_string()));
}
