//! Kubernetes resource quantities (`500m`, `1.5`, `64Mi`, `1e3`, `2E`), read exactly.
//!
//! The grammar is apimachinery's: an optional sign, a decimal number (`1`, `1.5`, `.5`,
//! `1.`), then one suffix — a decimal SI one (`n u m "" k M G T P E`), a binary SI one
//! (`Ki Mi Gi Ti Pi Ei`) or a decimal exponent (`e3`, `E-2`). Values are returned as whole
//! units of the caller's choosing (bytes, or thousandths of a CPU), rounded up as
//! Kubernetes' `Value()` and `MilliValue()` round: asking for a little gets a little.
//!
//! Unlike Kubernetes, whose quantities hold numbers of any size, a value must fit an i64
//! in the unit asked for; past that it is refused (`TooLarge`), never saturated. Owns no
//! I/O and no knowledge of which resource a quantity belongs to.

/// Why a quantity was refused. The first two carry apimachinery's own wording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuantityError {
    /// Not a number followed by a suffix.
    Format,
    /// A suffix that is none of the known ones, or an exponent out of range.
    Suffix,
    /// The value does not fit in an i64 of the unit asked for.
    TooLarge { max: &'static str },
}

impl std::fmt::Display for QuantityError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QuantityError::Format => f.write_str(
                "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'",
            ),
            QuantityError::Suffix => f.write_str("unable to parse quantity's suffix"),
            QuantityError::TooLarge { max } => write!(f, "must be less than or equal to {max}"),
        }
    }
}

impl std::error::Error for QuantityError {}

/// A quantity in whole units (bytes, or a count): `64Mi` → 67108864, `0.5` → 1.
pub fn parse_units(s: &str) -> Result<i64, QuantityError> {
    parse_scaled(s, 0, "9223372036854775807")
}

/// A quantity in thousandths (CPU's millicores): `250m` → 250, `1.5` → 1500, `1n` → 1.
pub fn parse_millis(s: &str) -> Result<i64, QuantityError> {
    parse_scaled(s, 3, "9223372036854775807m")
}

/// The value of `s` times 10^`shift`, rounded up away from zero.
fn parse_scaled(s: &str, shift: i32, max: &'static str) -> Result<i64, QuantityError> {
    let q = Parsed::read(s)?;
    let magnitude = q.magnitude(shift).ok_or(QuantityError::TooLarge { max })?;
    let magnitude = i64::try_from(magnitude).map_err(|_| QuantityError::TooLarge { max })?;
    Ok(if q.negative { -magnitude } else { magnitude })
}

/// A quantity taken apart: ± digits × 10^exp10 × 2^exp2.
struct Parsed {
    negative: bool,
    /// The significant digits, without leading zeros (empty for zero).
    digits: String,
    exp10: i64,
    exp2: u32,
}

impl Parsed {
    fn read(s: &str) -> Result<Parsed, QuantityError> {
        let (negative, rest) = match s.as_bytes().first() {
            Some(b'-') => (true, &s[1..]),
            Some(b'+') => (false, &s[1..]),
            _ => (false, s),
        };
        let number_end = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let (number, suffix) = rest.split_at(number_end);
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
            return Err(QuantityError::Format);
        }
        let (exp10, exp2) = read_suffix(suffix)?;
        let fraction_len = i64::try_from(fraction.len()).map_err(|_| QuantityError::Format)?;
        let mut digits: String = whole.chars().chain(fraction.chars()).collect();
        let mut exp10 = exp10 - fraction_len;
        // Trailing zeros move into the exponent, leading zeros go: only significant
        // digits are kept, so "100000000000000000000000000000000000000000m" still fits.
        while digits.ends_with('0') {
            digits.pop();
            exp10 += 1;
        }
        let digits = digits.trim_start_matches('0').to_string();
        Ok(Parsed {
            negative,
            digits,
            exp10,
            exp2,
        })
    }

    /// |value| × 10^shift, rounded up; `None` when it is past u128.
    fn magnitude(&self, shift: i32) -> Option<u128> {
        if self.digits.is_empty() {
            return Some(0);
        }
        let mut exp = self.exp10.checked_add(i64::from(shift))?;
        // At most 38 significant digits fit a u128: the rest are dropped, rounding the
        // mantissa up (they are not all zeros: trailing zeros are already gone). The
        // value is then at most a hair above the exact one, and rounds up the same way
        // in every unit.
        let kept = self.digits.len().min(38);
        let mut mantissa: u128 = self.digits[..kept].parse().ok()?;
        if kept < self.digits.len() {
            mantissa += 1;
            exp = exp.checked_add(i64::try_from(self.digits.len() - kept).ok()?)?;
        }
        // The binary factor goes in before any rounding (2.5Ki is 2560, not 3 × 1024);
        // where it would not fit, decimal digits go first, again rounding up.
        let binary = 1u128.checked_shl(self.exp2)?;
        let mut scaled = mantissa.checked_mul(binary);
        while scaled.is_none() {
            mantissa = mantissa.div_ceil(10);
            exp = exp.checked_add(1)?;
            scaled = mantissa.checked_mul(binary);
        }
        let scaled = scaled?;
        if exp >= 0 {
            let factor = 10u128.checked_pow(u32::try_from(exp).ok()?)?;
            scaled.checked_mul(factor)
        } else {
            match 10u128.checked_pow(u32::try_from(-exp).ok()?) {
                // Smaller than one unit and not zero: one unit, as Kubernetes rounds up.
                None => Some(1),
                Some(divisor) => Some(scaled.div_ceil(divisor)),
            }
        }
    }
}

/// The suffix as (power of ten, power of two).
fn read_suffix(suffix: &str) -> Result<(i64, u32), QuantityError> {
    let decimal = match suffix {
        "" => Some(0),
        "n" => Some(-9),
        "u" => Some(-6),
        "m" => Some(-3),
        "k" => Some(3),
        "M" => Some(6),
        "G" => Some(9),
        "T" => Some(12),
        "P" => Some(15),
        "E" => Some(18),
        _ => None,
    };
    if let Some(e) = decimal {
        return Ok((e, 0));
    }
    let binary = match suffix {
        "Ki" => Some(10),
        "Mi" => Some(20),
        "Gi" => Some(30),
        "Ti" => Some(40),
        "Pi" => Some(50),
        "Ei" => Some(60),
        _ => None,
    };
    if let Some(e) = binary {
        return Ok((0, e));
    }
    // A decimal exponent: e or E, an optional sign, digits.
    let Some(exponent) = suffix
        .strip_prefix('e')
        .or_else(|| suffix.strip_prefix('E'))
    else {
        return Err(shape_error(suffix));
    };
    let unsigned = exponent.trim_start_matches(['+', '-']);
    if unsigned.is_empty()
        || exponent.len() - unsigned.len() > 1
        || !unsigned.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(shape_error(suffix));
    }
    // apimachinery reads the exponent as an int32.
    exponent
        .parse::<i32>()
        .map(|e| (i64::from(e), 0))
        .map_err(|_| QuantityError::Suffix)
}

/// A suffix of the regular expression's characters that names nothing is a suffix error;
/// anything else is a format error (as apimachinery tells them apart).
fn shape_error(suffix: &str) -> QuantityError {
    let (letters, rest) = suffix.split_at(
        suffix
            .find(|c: char| !"eEinumkKMGTP".contains(c))
            .unwrap_or(suffix.len()),
    );
    let rest = rest.strip_prefix(['+', '-']).unwrap_or(rest);
    if !letters.is_empty() && rest.bytes().all(|b| b.is_ascii_digit()) {
        QuantityError::Suffix
    } else {
        QuantityError::Format
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_suffix_kubernetes_accepts() {
        assert_eq!(parse_units("1"), Ok(1));
        assert_eq!(parse_units("1k"), Ok(1_000));
        assert_eq!(parse_units("1M"), Ok(1_000_000));
        assert_eq!(parse_units("1G"), Ok(1_000_000_000));
        assert_eq!(parse_units("1T"), Ok(1_000_000_000_000));
        assert_eq!(parse_units("1P"), Ok(1_000_000_000_000_000));
        assert_eq!(parse_units("1E"), Ok(1_000_000_000_000_000_000));
        assert_eq!(parse_units("1Ki"), Ok(1 << 10));
        assert_eq!(parse_units("64Mi"), Ok(64 << 20));
        assert_eq!(parse_units("1Gi"), Ok(1 << 30));
        assert_eq!(parse_units("1Ti"), Ok(1 << 40));
        assert_eq!(parse_units("1Pi"), Ok(1 << 50));
        assert_eq!(parse_units("7Ei"), Ok(7 << 60));
        assert_eq!(parse_millis("1n"), Ok(1), "rounded up to the smallest unit");
        assert_eq!(parse_millis("1500u"), Ok(2));
        assert_eq!(parse_millis("250m"), Ok(250));
        assert_eq!(parse_millis("1.5"), Ok(1500));
        assert_eq!(parse_millis(".5"), Ok(500));
        assert_eq!(parse_millis("2."), Ok(2000));
        assert_eq!(parse_millis("0.0001"), Ok(1));
        assert_eq!(parse_units("129e6"), Ok(129_000_000));
        assert_eq!(parse_units("12E-1"), Ok(2));
        assert_eq!(parse_units("+5"), Ok(5));
        assert_eq!(parse_units("-5Ki"), Ok(-5120));
        assert_eq!(parse_units("0Gi"), Ok(0));
        assert_eq!(parse_units("0.5"), Ok(1));
        // The binary factor applies before rounding (found by the fuzz target).
        assert_eq!(parse_units("2.5Ki"), Ok(2560));
        assert_eq!(parse_units("2.8751900Ti"), Ok(3_161_304_837_066));
        assert_eq!(parse_millis("2.8751900Ti"), Ok(3_161_304_837_065_278));
        assert_eq!(
            parse_units("1.0000000000000000000000000000000000000001"),
            Ok(2)
        );
        assert_eq!(
            parse_units("0.000000000000000000000123456789012345678901Ei"),
            Ok(1)
        );
        assert_eq!(
            parse_millis("100000000000000000000000000000000000000000000000000e-50"),
            Ok(1000)
        );
    }

    #[test]
    fn values_past_an_i64_are_refused_not_saturated() {
        let too_large = |s: &str| {
            parse_units(s)
                == Err(QuantityError::TooLarge {
                    max: "9223372036854775807",
                })
        };
        assert!(too_large("8Ei"));
        assert!(too_large("9223372036854775808"));
        assert!(too_large("1e19"));
        assert!(too_large("1e2147483647"));
        assert!(too_large("123456789012345678901234567890123456789012"));
        assert!(too_large("123456789012345678901.5Ei"));
        assert_eq!(parse_units("9223372036854775807"), Ok(i64::MAX));
        assert_eq!(parse_units("9.223372036854775807E"), Ok(i64::MAX));
        assert!(parse_millis("9223372036854776").is_err());
        assert_eq!(
            parse_millis("1e100").unwrap_err().to_string(),
            "must be less than or equal to 9223372036854775807m"
        );
    }

    #[test]
    fn malformed_quantities_get_kubernetes_messages() {
        for bad in [
            "", "lots", "1.2.3", ".", "-", "1 Mi", "Mi", "1e+-2", "0x10", "1Kb", "1KiB",
        ] {
            assert_eq!(parse_units(bad), Err(QuantityError::Format), "{bad:?}");
        }
        for bad in ["1e", "1mi", "1e9999999999", "1ee3"] {
            assert_eq!(parse_units(bad), Err(QuantityError::Suffix), "{bad:?}");
        }
        assert!(QuantityError::Format
            .to_string()
            .starts_with("quantities must match the regular expression"));
    }

    /// What `make fuzz` kept parses or is refused without a panic, and agrees with itself
    /// in both units.
    #[test]
    fn the_fuzz_corpus_replays_without_panics() {
        for text in crate::fuzz_corpus_texts("quantity") {
            if let (Ok(millis), Ok(units)) = (parse_millis(&text), parse_units(&text)) {
                assert_eq!(
                    units.unsigned_abs(),
                    millis.unsigned_abs().div_ceil(1000),
                    "{text:?}"
                );
            }
        }
    }
}
