//! Decimal text → `f64`, without the standard library's float parser.
//!
//! `str::parse::<f64>` is exact for every input but brings about 15 KB into the
//! module (its code and a 10 KB table of powers of five). The filter reads only
//! ratios, so this reader is exact (the nearest `f64`, ties to even, as the
//! standard parser) for every number of at most 19 significant digits whose
//! decimal exponent, once the digits are an integer, lies in −21..=19: among them
//! every ratio the governor writes (it rounds ratios to 1e-6) and every value a
//! person types. Digits after the 19th are cut; a number outside that range is
//! read within a few units in the last place (e.g. `1e-30`, or `1e300`).

/// Significant digits kept (10^19 < 2^64).
const MAX_DIGITS: u32 = 19;

/// The value of a JSON number's text (`-? int frac? exp?`, already checked by
/// the reader). `None` when the text is not such a number.
pub fn parse(text: &str) -> Option<f64> {
    let bytes = text.as_bytes();
    let (negative, rest) = match bytes.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, bytes),
    };
    let mut mantissa: u64 = 0;
    let mut digits: u32 = 0;
    // The number is mantissa × 10^exponent.
    let mut exponent: i64 = 0;
    let mut seen_digit = false;
    let mut in_fraction = false;
    let mut index = 0;
    while let Some(&byte) = rest.get(index) {
        match byte {
            b'0'..=b'9' => {
                seen_digit = true;
                let digit = u64::from(byte - b'0');
                if digits < MAX_DIGITS {
                    if mantissa > 0 || digit > 0 {
                        digits += 1;
                    }
                    mantissa = mantissa * 10 + digit;
                    if in_fraction {
                        exponent -= 1;
                    }
                } else if !in_fraction {
                    // A digit cut from the integer part still scales the value.
                    exponent += 1;
                }
            }
            b'.' if !in_fraction => in_fraction = true,
            b'e' | b'E' => break,
            _ => return None,
        }
        index += 1;
    }
    if !seen_digit {
        return None;
    }
    if let Some(written) = rest.get(index + 1..) {
        exponent = exponent.saturating_add(read_exponent(written)?);
    }
    let magnitude = scale(mantissa, exponent);
    Some(if negative { -magnitude } else { magnitude })
}

/// The exponent after `e`: `[+-]? digits`, saturated far beyond any finite `f64`.
fn read_exponent(text: &[u8]) -> Option<i64> {
    let (negative, digits) = match text.split_first() {
        Some((b'-', rest)) => (true, rest),
        Some((b'+', rest)) => (false, rest),
        _ => (false, text),
    };
    if digits.is_empty() {
        return None;
    }
    let mut value: i64 = 0;
    for &byte in digits {
        if !byte.is_ascii_digit() {
            return None;
        }
        value = (value * 10 + i64::from(byte - b'0')).min(1_000_000);
    }
    Some(if negative { -value } else { value })
}

/// 10^power as an exact integer (power ≤ 38).
fn power_of_ten(power: u32) -> u128 {
    (0..power).fold(1u128, |acc, _| acc * 10)
}

/// The nearest `f64` to mantissa × 10^exponent (exact within the module's range).
fn scale(mantissa: u64, exponent: i64) -> f64 {
    if mantissa == 0 {
        return 0.0;
    }
    // Both operands exact in f64 (10^22 is the largest exact power of ten): one rounding.
    if mantissa <= 1 << 53 && (-22..=22).contains(&exponent) {
        let power = (0..exponent.unsigned_abs()).fold(1.0f64, |acc, _| acc * 10.0);
        let value = mantissa as f64;
        return if exponent < 0 {
            value / power
        } else {
            value * power
        };
    }
    if (0..=19).contains(&exponent) {
        // < 2^64 × 10^19 < 2^128; `as f64` rounds to nearest, ties to even.
        let exact = u128::from(mantissa) * power_of_ten(exponent.unsigned_abs() as u32);
        return exact as f64;
    }
    if (-21..0).contains(&exponent) {
        // mantissa / 10^k: shift the mantissa to the top of 128 bits, divide, and
        // fold the remainder into the last bit. 10^21 < 2^70, so the quotient has
        // at least 58 bits: that last bit lies below the rounding position, and
        // `as f64` rounds exactly as the infinite quotient would.
        let divisor = power_of_ten(exponent.unsigned_abs() as u32);
        let shift = u128::from(mantissa).leading_zeros();
        let numerator = u128::from(mantissa) << shift;
        let quotient = (numerator / divisor) | u128::from(numerator % divisor != 0);
        // × 2^-shift, exact: the result is a normal number (≥ 10^-21).
        return quotient as f64 * f64::from_bits(u64::from(1023 - shift) << 52);
    }
    // Far outside what the filter reads: within a few units in the last place.
    let clamped = exponent.clamp(-400, 400) as i32;
    let value = mantissa as f64;
    if clamped < 0 {
        value / 10f64.powi(-clamped)
    } else {
        value * 10f64.powi(clamped)
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn reads_ratios_and_plain_numbers() {
        for text in [
            "0",
            "-0",
            "1",
            "0.5",
            "0.9",
            "0.1",
            "0.123456",
            "1.0",
            "0.000001",
            "100",
            "1e3",
            "1E-3",
            "2.5e+2",
            "-0.25",
            "0.30000000000000004",
            "12345678901234567890",
        ] {
            assert_eq!(parse(text), text.parse::<f64>().ok(), "{text}");
        }
    }

    /// A decimal just above the midpoint of two neighbouring doubles rounds up,
    /// though its 64-bit quotient alone looks like an exact tie.
    #[test]
    fn just_above_a_midpoint_rounds_up() {
        let mut x = 0.009f64;
        for _ in 0..200 {
            // x = mantissa × 2^-59 (x in [2^-7, 2^-6)), so the midpoint above it is
            // (2 × mantissa + 1) × 2^-60; the decimal of 21 places just above it:
            let mantissa = u128::from((x.to_bits() & ((1 << 52) - 1)) | (1 << 52));
            let scaled = (2 * mantissa + 1) * 10u128.pow(21);
            let above = scaled / (1u128 << 60) + 1;
            let text = format!("0.{above:021}");
            let up = f64::from_bits(x.to_bits() + 1);
            assert_eq!(text.parse::<f64>().ok(), Some(up), "{text}");
            assert_eq!(parse(&text), Some(up), "{text}");
            x = up;
        }
    }

    #[test]
    fn refuses_what_is_not_a_number() {
        for text in ["", "-", ".", "1e", "1e+", "1x", "1..2", "e5", "1e5e5"] {
            assert_eq!(parse(text), None, "{text}");
        }
    }

    #[test]
    fn outside_the_exact_range_stays_close_and_overflows_to_infinity() {
        for text in ["1e-30", "123456789e-40", "1e300", "4.9e-300"] {
            let (ours, exact) = (
                parse(text).unwrap_or(f64::NAN),
                text.parse::<f64>().unwrap_or(0.0),
            );
            assert!(
                ((ours - exact) / exact).abs() < 1e-14,
                "{text}: {ours} vs {exact}"
            );
        }
        assert_eq!(parse("1e400"), Some(f64::INFINITY));
        assert_eq!(parse("1e-400"), Some(0.0));
    }
}

#[cfg(all(test, not(target_arch = "wasm32")))]
mod properties {
    use super::parse;
    use proptest::prelude::*;

    proptest! {
        /// Every f64 the governor can write (a ratio rounded to 1e-6, printed the
        /// shortest way) reads back bit for bit.
        #[test]
        fn governor_ratios_round_trip(millionths in 0u32..=1_000_000) {
            let ratio = (f64::from(millionths) / 1e6 * 1e6).round() / 1e6;
            let text = ratio.to_string();
            prop_assert_eq!(parse(&text).map(f64::to_bits), Some(ratio.to_bits()));
        }

        /// Any ratio in [1e-4, 1], printed the shortest way (up to 17 digits), reads back exactly.
        #[test]
        fn shortest_printed_ratios_round_trip(ratio in 1e-4f64..=1.0) {
            let text = ratio.to_string();
            prop_assert_eq!(parse(&text).map(f64::to_bits), Some(ratio.to_bits()));
        }

        /// Within the documented range the result is the standard parser's, bit for bit.
        #[test]
        fn exact_within_range(
            digits in "[1-9][0-9]{0,18}",
            point in 0usize..20,
            exponent in -2i32..=19,
        ) {
            let point = point.min(digits.len());
            let (whole, fraction) = digits.split_at(digits.len() - point);
            let whole = if whole.is_empty() { "0" } else { whole };
            let text = if fraction.is_empty() {
                format!("{whole}e{exponent}")
            } else {
                format!("{whole}.{fraction}e{exponent}")
            };
            // The integer-mantissa exponent: −point + exponent, within −21..=19.
            prop_assume!((-21..=19).contains(&(exponent - point as i32)));
            prop_assert_eq!(
                parse(&text).map(f64::to_bits),
                text.parse::<f64>().ok().map(f64::to_bits),
                "{}", text
            );
        }
    }
}
