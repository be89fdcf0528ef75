//! The filter's own JSON reader and writer: strict RFC 8259 syntax (the same
//! documents accepted as by serde_json, the reference), errors that name the
//! value at fault, bounded nesting, and written strings that read back exactly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

use huntgate_core::config::Config;
use huntgate_core::json::{push_string, ObjectWriter, Reader, MAX_DEPTH};
use huntgate_core::throttle::ThrottleTable;

/// Whether the reader accepts `text` as one JSON document.
fn accepts(text: &[u8]) -> bool {
    let mut r = Reader::new(text);
    r.skip().and_then(|()| r.end()).is_ok()
}

#[test]
fn documents_outside_the_grammar_are_refused() {
    for bad in [
        "",
        "{",
        "[1,]",
        r#"{"a":1,}"#,
        "01",
        "1.",
        ".5",
        "+1",
        "1e",
        "NaN",
        "Infinity",
        "nul",
        "tru",
        "'a'",
        r#"{a:1}"#,
        r#"{"a" 1}"#,
        "\"\u{1}\"",
        r#""\x""#,
        r#""\ud800""#,
        r#""\udc00""#,
        r#""\ud800\u0041""#,
        "\"unterminated",
        "// comment\n1",
        "1 2",
        "[1]]",
    ] {
        assert!(!accepts(bad.as_bytes()), "accepted {bad:?}");
    }
    assert!(!accepts(b"\"\xff\""), "accepted invalid UTF-8");
}

#[test]
fn escapes_decode_to_the_characters_they_name() {
    let mut r = Reader::new(br#" "a\"b\\c\/d\b\f\n\r\t\u00e9\ud83d\ude00" "#);
    assert_eq!(
        r.string().unwrap(),
        "a\"b\\c/d\u{8}\u{c}\n\r\t\u{e9}\u{1f600}"
    );
    r.end().unwrap();
}

#[test]
fn an_error_names_the_path_of_the_value_at_fault() {
    let doc = br#"{"a": {"b": [1, 2, "three"]}}"#;
    let mut r = Reader::new(doc);
    let err = r
        .object(|r, _| r.object(|r, _| r.array(|r| r.u32().map(drop))))
        .unwrap_err();
    assert_eq!(err.path, "a.b[2]");
    assert!(err.problem.contains("a string"), "{}", err.problem);
    let mut top = Reader::new(b"[1] x");
    top.skip().unwrap();
    assert_eq!(top.end().unwrap_err().path, ".");
}

#[test]
fn integers_are_read_exactly_and_out_of_range_values_refused() {
    let read = |text: &str| Reader::new(text.as_bytes()).u32();
    assert_eq!(read("4294967295").unwrap(), u32::MAX);
    for bad in ["4294967296", "-1", "1.0", "1e3", "\"1\"", "null"] {
        assert!(read(bad).is_err(), "read {bad}");
    }
    assert_eq!(
        Reader::new(b"18446744073709551615").u64().unwrap(),
        u64::MAX
    );
    assert!(Reader::new(b"1e400").f64().is_err(), "an infinite ratio");
    assert_eq!(Reader::new(b"-2.5e-1").f64().unwrap(), -0.25);
}

#[test]
fn nesting_past_the_bound_is_refused_without_exhausting_the_stack() {
    let within = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
    assert!(accepts(within.as_bytes()));
    let past = format!("{}{}", "[".repeat(MAX_DEPTH + 1), "]".repeat(MAX_DEPTH + 1));
    assert!(!accepts(past.as_bytes()));
    // A hostile governor document: 100,000 nested arrays in a member the filter skips.
    let hostile = format!(r#"{{"version":1,"extra":{}}}"#, "[".repeat(100_000));
    let err = ThrottleTable::decode(hostile.as_bytes()).unwrap_err();
    assert!(
        err.contains("extra") && err.contains("nested too deep"),
        "{err}"
    );
}

#[test]
fn a_configuration_member_given_twice_is_refused_not_silently_overwritten() {
    let secret = r#""ticket_secrets":["0123456789abcdef"]"#;
    let twice = format!(r#"{{"standalone":true,{secret},"max_hunters":5,"max_hunters":9}}"#);
    let err = Config::from_json(twice.as_bytes()).unwrap_err();
    assert_eq!(err.field, "max_hunters");
    assert!(err.problem.contains("duplicate"), "{err}");
    let hunt_twice =
        format!(r#"{{"standalone":true,{secret},"hunts":{{"h1":{{}},"h1":{{"max_hunters":1}}}}}}"#);
    assert_eq!(
        Config::from_json(hunt_twice.as_bytes()).unwrap_err().field,
        "hunts.h1"
    );
}

#[test]
fn a_written_object_reads_back_as_written() {
    let hunt = "h\"1\\\n\u{1}\u{e9}\u{1f600}";
    let text = ObjectWriter::new()
        .string("hunt", hunt)
        .number("limit", u64::MAX)
        .boolean("ended", true)
        .raw("eta_s", "null")
        .finish();
    let value: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(
        value,
        serde_json::json!({"hunt": hunt, "limit": u64::MAX, "ended": true, "eta_s": null})
    );
}

#[cfg(not(target_arch = "wasm32"))]
mod against_serde_json {
    use super::*;
    use proptest::prelude::*;

    /// Fragments that, strung together, make valid and almost-valid documents.
    const TOKENS: &[&str] = &[
        "{",
        "}",
        "[",
        "]",
        ":",
        ",",
        " ",
        "\"k\"",
        "\"\\u00e9\"",
        "\"\\ud83d\\ude00\"",
        "\"\\ud800\"",
        "\"\\n\"",
        "\"\\q\"",
        "0",
        "-0",
        "01",
        "12",
        "1.5",
        "1.",
        "2e3",
        "2E-3",
        "-",
        "true",
        "false",
        "null",
        "nul",
        "\"",
        "\\",
    ];

    fn document() -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(TOKENS), 1..24).prop_map(|t| t.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4000))]

        #[test]
        fn the_reader_accepts_exactly_what_serde_json_accepts(doc in document()) {
            let reference = serde_json::from_str::<serde_json::Value>(&doc);
            prop_assert_eq!(accepts(doc.as_bytes()), reference.is_ok(), "{}", doc);
            if let Ok(serde_json::Value::String(expected)) = reference {
                prop_assert_eq!(Reader::new(doc.as_bytes()).string().unwrap(), expected);
            }
        }

        #[test]
        fn any_written_string_reads_back_unchanged(text in any::<String>()) {
            let mut out = String::new();
            push_string(&mut out, &text);
            prop_assert_eq!(&serde_json::from_str::<String>(&out).unwrap(), &text);
            prop_assert_eq!(&Reader::new(out.as_bytes()).string().unwrap(), &text);
        }
    }
}
