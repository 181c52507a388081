//! Durations as people type them on command lines: Go's `time.ParseDuration` form, as
//! kubectl and the Kubernetes components take them (`500ms`, `10s`, `1h30m`, `1.5h`), and
//! a bare number as seconds (`60`), as kubelab always took.
//!
//! The one parser of durations: the daemons' flags and the CLI's `--timeout` use it. Pure;
//! it owns nothing else. Negative durations are refused (nothing in kubelab waits for a
//! negative time), and so is anything past Go's limit, about 292 years.

use std::time::Duration;

/// Text that is not a duration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {0:?} (examples: 500ms, 10s, 5m, 1h30m; a bare number is seconds)")]
pub struct DurationError(String);

/// The longest duration, as Go's: `i64::MAX` nanoseconds.
const MAX_NANOS: u128 = i64::MAX as u128;

/// Digits of a fraction that count; further ones are below a nanosecond at any unit.
const MAX_FRACTION_DIGITS: u32 = 19;

/// `text` as a duration: `[+]` then one or more `NUMBER UNIT` (units `ns`, `us`, `µs`,
/// `ms`, `s`, `m`, `h`; a number may have a fraction), or a bare number of seconds.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let bad = || DurationError(text.chars().take(64).collect());
    let body = text.strip_prefix('+').unwrap_or(text);
    if body.is_empty() {
        return Err(bad());
    }
    let is_number_char = |c: char| c.is_ascii_digit() || c == '.';
    if body.chars().all(is_number_char) {
        return nanos(body, 1_000_000_000)
            .filter(|n| *n <= MAX_NANOS)
            .map(to_duration)
            .ok_or_else(bad);
    }
    let mut total: u128 = 0;
    let mut rest = body;
    while !rest.is_empty() {
        let number_end = rest.find(|c| !is_number_char(c)).unwrap_or(rest.len());
        let (number, after) = rest.split_at(number_end);
        let unit_end = after.find(is_number_char).unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_end);
        let unit_nanos = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(bad()),
        };
        total = nanos(number, unit_nanos)
            .and_then(|n| total.checked_add(n))
            .filter(|n| *n <= MAX_NANOS)
            .ok_or_else(bad)?;
        rest = next;
    }
    Ok(to_duration(total))
}

/// `DIGITS[.DIGITS]` (either side may be empty, not both) times `unit` nanoseconds,
/// the fraction truncated to whole nanoseconds; `None` when malformed or too large.
fn nanos(number: &str, unit: u128) -> Option<u128> {
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() && fraction.is_empty() {
        return None;
    }
    if !(whole.bytes().all(|b| b.is_ascii_digit()) && fraction.bytes().all(|b| b.is_ascii_digit()))
    {
        return None;
    }
    let mut value: u128 = 0;
    for digit in whole.bytes() {
        value = value
            .checked_mul(10)?
            .checked_add(u128::from(digit - b'0'))?;
        // Past the limit already: no need to read further digits.
        if value > MAX_NANOS {
            return None;
        }
    }
    let mut value = value.checked_mul(unit)?;
    let (mut numerator, mut scale) = (0u128, 1u128);
    for digit in fraction.bytes().take(MAX_FRACTION_DIGITS as usize) {
        numerator = numerator * 10 + u128::from(digit - b'0');
        scale *= 10;
    }
    // numerator < 10^19 and unit <= 3.6e12: the product fits in a u128.
    value = value.checked_add(numerator.checked_mul(unit)? / scale)?;
    Some(value)
}

fn to_duration(nanos: u128) -> Duration {
    // Callers keep nanos <= MAX_NANOS, well inside a u64.
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str) -> Duration {
        parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"))
    }

    #[test]
    fn go_durations_parse() {
        assert_eq!(ok("500ms"), Duration::from_millis(500));
        assert_eq!(ok("10s"), Duration::from_secs(10));
        assert_eq!(ok("5m"), Duration::from_secs(300));
        assert_eq!(ok("1h"), Duration::from_secs(3600));
        assert_eq!(ok("1h30m"), Duration::from_secs(5400));
        assert_eq!(ok("2h45m10.5s"), Duration::from_millis(9_910_500));
        assert_eq!(ok("1.5h"), Duration::from_secs(5400));
        assert_eq!(ok(".5s"), Duration::from_millis(500));
        assert_eq!(ok("1.s"), Duration::from_secs(1));
        assert_eq!(ok("+3s"), Duration::from_secs(3));
        assert_eq!(ok("7ns"), Duration::from_nanos(7));
        assert_eq!(ok("7us"), Duration::from_micros(7));
        assert_eq!(ok("7µs"), Duration::from_micros(7));
        assert_eq!(ok("0s"), Duration::ZERO);
        assert_eq!(ok("1.0000000001s"), Duration::from_nanos(1_000_000_000));
        assert_eq!(
            ok("0.1234567891234567891234ms"),
            Duration::from_nanos(123_456)
        );
    }

    #[test]
    fn a_bare_number_is_seconds() {
        assert_eq!(ok("60"), Duration::from_secs(60));
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("2.5"), Duration::from_millis(2500));
    }

    #[test]
    fn what_is_not_a_duration_is_refused() {
        for text in [
            "", "+", ".", "s", "-1s", "1d", "1 s", " 1s", "1s ", "1h30", "1..5s", "1.5.s", "h1",
            "1sm", "1e3s", "١s",
        ] {
            let e = parse(text).expect_err(text).to_string();
            assert!(e.starts_with("invalid duration"), "{text:?}: {e}");
        }
    }

    #[test]
    fn durations_past_go_s_limit_are_refused() {
        assert_eq!(
            ok("9223372036854775807ns"),
            Duration::from_nanos(i64::MAX as u64)
        );
        assert!(parse("9223372036854775808ns").is_err());
        assert!(parse("2562048h").is_err());
        assert!(parse("2562047h47m").is_ok());
        assert!(parse("2562047h48m").is_err());
        assert!(parse("99999999999999999999999999999999999999999h").is_err());
        assert!(parse(&"9".repeat(10_000)).is_err());
    }

    #[test]
    fn the_error_quotes_at_most_64_characters() {
        let e = parse(&"x".repeat(1000)).expect_err("parsed").to_string();
        assert!(e.len() < 200, "{e}");
    }

    /// What `make fuzz` kept parses or is refused without a panic, and what parses
    /// reads back the same written in nanoseconds.
    #[test]
    fn the_fuzz_corpus_replays_without_panics() {
        for text in crate::fuzz_corpus_texts("duration") {
            if let Ok(d) = parse(&text) {
                assert_eq!(parse(&format!("{}ns", d.as_nanos())), Ok(d), "{text:?}");
            }
        }
    }
}
