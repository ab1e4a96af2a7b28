//! [`Decimal`]: money and quantities as validated text, never a float.

use std::fmt;
use std::str::FromStr;

use arrayvec::ArrayString;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{MAX_FRACTION_DIGITS, MAX_INTEGER_DIGITS};

/// A validated decimal number kept as its text, e.g. `"42.50"`, `"-3"`, `"0.0001"`.
///
/// Rule: an optional leading `-`, 1 to 12 integer digits, optionally a `.` followed by 1 to 4
/// digits. No `+`, no exponent, no spaces, no `NaN`/`Infinity`. Money never passes through a
/// float: the text goes to PostgreSQL `numeric` as is.
///
/// The text is held inline (at most [`MAX_TEXT`] bytes), not on the heap: a drained receipt
/// carries up to three per item, and an allocation each showed in the agent's profile. An
/// `ArrayString` rather than bytes, so that reading it as text (twice per decimal drained) costs
/// no UTF-8 check: those checks were a twenty-fifth of the agent's CPU.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Decimal {
    text: ArrayString<MAX_TEXT>,
}

/// The longest decimal text: a sign, 12 integer digits, a point and 4 fraction digits.
const MAX_TEXT: usize = 1 + MAX_INTEGER_DIGITS + 1 + MAX_FRACTION_DIGITS;

impl Decimal {
    /// The decimal as written, e.g. `"42.50"`.
    pub fn as_str(&self) -> &str {
        self.text.as_str()
    }

    /// Holds `s`, text the rule accepted (so at most [`MAX_TEXT`] bytes).
    fn holding(s: &str) -> Result<Decimal, String> {
        ArrayString::from(s)
            .map(|text| Decimal { text })
            .map_err(|_| format!("must be at most {MAX_TEXT} characters long"))
    }

    /// The value in one spelling: no leading zeros, no trailing fraction zeros, no `-0`.
    /// `"12.50"`, `"12.5"` and `"012.5000"` are all `"12.5"`, as PostgreSQL `numeric` compares
    /// them.
    pub fn canonical(&self) -> String {
        let (negative, int, frac) = self.canonical_parts();
        let mut out = String::with_capacity(self.text.len());
        if negative {
            out.push('-');
        }
        out.push_str(int);
        if !frac.is_empty() {
            out.push('.');
            out.push_str(frac);
        }
        out
    }

    /// [`Decimal::canonical`] in parts, borrowed from the text: whether it has a `-`, its
    /// integer digits, its fraction digits (empty: no `.`).
    pub(crate) fn canonical_parts(&self) -> (bool, &str, &str) {
        let text = self.as_str();
        let (negative, unsigned) = match text.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, text),
        };
        // By byte (the text is ASCII): `split_once` and `trim_…_matches` with a char were the
        // char searches of a profile.
        let (int, frac) = match unsigned.bytes().position(|b| b == b'.') {
            Some(dot) => (&unsigned[..dot], &unsigned[dot + 1..]),
            None => (unsigned, ""),
        };
        let zeros = int.bytes().take_while(|&b| b == b'0').count();
        let int = int.get(zeros..).filter(|d| !d.is_empty()).unwrap_or("0");
        let zeros = frac.bytes().rev().take_while(|&b| b == b'0').count();
        let frac = frac.get(..frac.len() - zeros).unwrap_or_default();
        (negative && !(int == "0" && frac.is_empty()), int, frac)
    }

    /// Checks `s` against the decimal rule; the error is a plain reason ("must have at most 4
    /// fraction digits") meant to follow a field name.
    pub fn parse(s: &str) -> Result<Decimal, String> {
        if well_formed(s) {
            return Decimal::holding(s);
        }
        Decimal::diagnose(s)
    }

    /// The rule checked step by step, so that a refusal says what is wrong.
    fn diagnose(s: &str) -> Result<Decimal, String> {
        if s.is_empty() {
            return Err(r#"must be a decimal string like "42.50", not an empty string"#.into());
        }
        if s.chars().any(char::is_whitespace) {
            return Err("must not contain spaces".into());
        }
        if s.starts_with('+') {
            return Err("must not have a '+' sign".into());
        }
        let unsigned = s.strip_prefix('-').unwrap_or(s);
        let lower = unsigned.to_ascii_lowercase();
        if matches!(lower.as_str(), "nan" | "inf" | "infinity") {
            return Err("must be a finite number".into());
        }
        if unsigned.contains(['e', 'E']) {
            return Err("must not use exponent notation (write 1000, not 1e3)".into());
        }
        let (int, frac) = match unsigned.split_once('.') {
            Some((int, frac)) => (int, Some(frac)),
            None => (unsigned, None),
        };
        let all_digits = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
        if unsigned.is_empty() || !all_digits(int) || !frac.is_none_or(all_digits) {
            return Err(r#"must be a decimal string like "42.50""#.into());
        }
        if int.is_empty() {
            return Err("must have at least one digit before the decimal point".into());
        }
        if frac == Some("") {
            return Err("must have digits after the decimal point".into());
        }
        if int.len() > MAX_INTEGER_DIGITS {
            return Err(format!(
                "must be less than 10^12 in absolute value (at most {MAX_INTEGER_DIGITS} digits before the decimal point)"
            ));
        }
        if frac.is_some_and(|f| f.len() > MAX_FRACTION_DIGITS) {
            return Err(format!(
                "must have at most {MAX_FRACTION_DIGITS} fraction digits"
            ));
        }
        Decimal::holding(s)
    }
}

/// Whether `s` is `-?[0-9]{1,12}(\.[0-9]{1,4})?`, exactly the text [`Decimal::parse`] accepts,
/// checked in one pass over the bytes; the checks after it in `parse` only name what is wrong.
fn well_formed(s: &str) -> bool {
    let unsigned = s.strip_prefix('-').unwrap_or(s).as_bytes();
    let (int, frac) = match unsigned.iter().position(|&b| b == b'.') {
        Some(dot) => (&unsigned[..dot], Some(&unsigned[dot + 1..])),
        None => (unsigned, None),
    };
    let digits =
        |t: &[u8], max: usize| !t.is_empty() && t.len() <= max && t.iter().all(u8::is_ascii_digit);
    digits(int, MAX_INTEGER_DIGITS) && frac.is_none_or(|f| digits(f, MAX_FRACTION_DIGITS))
}

impl fmt::Debug for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Decimal").field(&self.as_str()).finish()
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Decimal {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Decimal::parse(s)
    }
}

impl AsRef<str> for Decimal {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl Serialize for Decimal {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Decimal {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DecimalVisitor;
        impl serde::de::Visitor<'_> for DecimalVisitor {
            type Value = Decimal;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(r#"a decimal string like "42.50""#)
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Decimal, E> {
                Decimal::parse(v).map_err(|reason| E::custom(format!("decimal {reason}")))
            }
        }
        deserializer.deserialize_str(DecimalVisitor)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn the_one_pass_check_accepts_exactly_what_the_step_by_step_rule_accepts(
            s in "[-+0-9.eE naif]{0,18}",
        ) {
            prop_assert_eq!(well_formed(&s), Decimal::diagnose(&s).is_ok(), "{:?}", s);
            if let Ok(d) = Decimal::parse(&s) {
                prop_assert_eq!(d.as_str(), s.as_str());
            }
        }
    }

    proptest! {
        /// The canonical spelling against the value: the same number, in its shortest form.
        #[test]
        fn the_canonical_spelling_is_the_value_in_its_shortest_form(
            s in "-?[0-9]{1,12}(\\.[0-9]{1,4})?",
        ) {
            let d = Decimal::parse(&s).expect("valid");
            let c = d.canonical();
            // The value in units of 10^-4, computed apart from the text's parts.
            let units = |t: &str| -> i64 {
                let (sign, t) = t.strip_prefix('-').map_or((1, t), |r| (-1, r));
                let (i, f) = t.split_once('.').unwrap_or((t, ""));
                let f = format!("{f:0<4}");
                sign * (i.parse::<i64>().expect("int") * 10_000 + f.parse::<i64>().expect("frac"))
            };
            prop_assert_eq!(units(&c), units(&s), "{:?} -> {:?}", s, c);
            let unsigned = c.strip_prefix('-').unwrap_or(&c);
            prop_assert!(unsigned == "0" || !unsigned.starts_with('0') || unsigned.starts_with("0."), "{:?}", c);
            prop_assert!(!c.contains('.') || !c.ends_with('0'), "{:?}", c);
            prop_assert!(c != "-0", "{:?}", s);
        }
    }

    #[test]
    fn the_one_pass_check_holds_at_the_edges() {
        for s in [
            "0",
            "-0",
            "000000000000",
            "-999999999999.9999",
            "1.0000",
            "-1.5",
        ] {
            assert!(well_formed(s) && Decimal::diagnose(s).is_ok(), "{s}");
            let held = Decimal::parse(s).expect("valid");
            assert_eq!((held.as_str(), held.to_string()), (s, s.to_owned()));
        }
        assert_eq!(
            format!("{:?}", Decimal::parse("4.2").expect("valid")),
            r#"Decimal("4.2")"#
        );
        for s in [
            "",
            "-",
            ".",
            "1.",
            ".5",
            "1.00000",
            "1000000000000",
            "--1",
            "1.2.3",
            "+1",
        ] {
            assert!(!well_formed(s) && Decimal::diagnose(s).is_err(), "{s}");
        }
    }
}
