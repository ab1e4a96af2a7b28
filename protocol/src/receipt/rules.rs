//! The rules for a receipt's text fields, each a function from the field's text to `Ok` or a
//! plain reason. The validation walk (`check`) and the typed check of an already-parsed
//! receipt (`typed`) both call these, so a rule is written once.

use super::*;

/// Parses a hyphenated UUID in any case and returns its canonical lowercase form.
pub(crate) fn parse_uuid(s: &str) -> Result<String, String> {
    if parse_uuid_ok(s) {
        Ok(s.to_ascii_lowercase())
    } else {
        Err(r#"must be a UUID like "123e4567-e89b-12d3-a456-426614174000""#.to_owned())
    }
}

/// Whether [`parse_uuid`] accepts `s`, without making its canonical form (`s` in lowercase:
/// the one form accepted has only hex digits and hyphens).
pub(crate) fn parse_uuid_ok(s: &str) -> bool {
    // Only the 36-character hyphenated form: `Uuid::try_parse` also takes braces, `urn:uuid:`
    // and the bare 32-digit form, which would make two spellings of one idempotency key.
    s.len() == 36 && uuid::Uuid::try_parse(s).is_ok()
}

/// Whether SQS accepts `c` in a message: #x9 #xA #xD #x20–#xD7FF #xE000–#xFFFD
/// #x10000–#x10FFFF (surrogates cannot occur in a Rust `char`).
pub(crate) fn sqs_allows(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

/// Checks the SQS character rule on one string.
pub(super) fn check_chars(s: &str) -> Result<(), String> {
    // In UTF-8 the only characters SQS refuses are the C0 controls other than tab, LF and CR
    // (one byte below 0x20) and U+FFFE / U+FFFF (EF BF BE / EF BF BF): a byte scan clears
    // almost every string, and only one that fails is walked by character for its position.
    let b = s.as_bytes();
    // First a branch-free pass the compiler vectorises: no byte below 0x20 and no 0xEF clears
    // the string (almost every one); only a string with either is scanned exactly.
    if b.iter().fold(true, |ok, &c| ok & (c >= 0x20) & (c != 0xEF)) {
        return Ok(());
    }
    let clean = b.iter().enumerate().all(|(i, &c)| match c {
        b'\t' | b'\n' | b'\r' => true,
        0..0x20 => false,
        0xEF => !(b.get(i + 1) == Some(&0xBF) && matches!(b.get(i + 2), Some(0xBE | 0xBF))),
        _ => true,
    });
    if clean {
        return Ok(());
    }
    match s.chars().enumerate().find(|(_, c)| !sqs_allows(*c)) {
        Some((pos, c)) => Err(format!(
            "contains the character U+{:04X} at position {}, which SQS does not accept",
            u32::from(c),
            pos + 1
        )),
        None => Ok(()),
    }
}

/// How a character is shown inside a reason: quoted when printable, as U+XXXX otherwise.
fn show_char(c: char) -> String {
    if c.is_alphanumeric() || c.is_ascii_punctuation() {
        format!("'{c}'")
    } else {
        format!("U+{:04X}", u32::from(c))
    }
}

fn days_in_month(year: u32, month: u32) -> u32 {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Checks `YYYY-MM-DD`, a real date with year 0001..=9999.
pub(super) fn check_date(s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    let shape_ok = b.len() == 10
        && b[4] == b'-'
        && b[7] == b'-'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 4 || i == 7 || c.is_ascii_digit());
    if !shape_ok {
        return Err(r#"must be a date as YYYY-MM-DD, like "2024-02-29""#.into());
    }
    let num = |r: std::ops::Range<usize>| {
        b[r].iter()
            .fold(0u32, |acc, d| acc * 10 + u32::from(d - b'0'))
    };
    let (year, month, day) = (num(0..4), num(5..7), num(8..10));
    if year == 0 {
        return Err("is not a real date: the year must be 0001 to 9999".into());
    }
    if !(1..=12).contains(&month) {
        return Err("is not a real date: the month must be 01 to 12".into());
    }
    let last = days_in_month(year, month);
    if day == 0 || day > last {
        return Err(format!(
            "is not a real date: {year:04}-{month:02} has {last} days"
        ));
    }
    Ok(())
}

pub(super) fn check_len(s: &str, min: usize, max: usize) -> Result<(), String> {
    if min > 0 && s.is_empty() {
        return Err("must not be empty".into());
    }
    // A string is never more characters than bytes: a short one needs no count.
    if s.len() <= max {
        return Ok(());
    }
    let n = s.chars().count();
    if n > max {
        return Err(format!("must be at most {max} characters (got {n})"));
    }
    Ok(())
}

/// `tenant_id`: 1 to 64 of `[A-Za-z0-9._-]`.
pub(super) fn tenant_id(s: &str) -> Result<(), String> {
    check_len(s, 1, MAX_TENANT_ID_CHARS)?;
    let bad = s
        .chars()
        .enumerate()
        .find(|(_, c)| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')));
    match bad {
        Some((pos, c)) => Err(format!(
            "may contain only letters A-Z a-z, digits, '.', '_' and '-' (found {} at position {})",
            show_char(c),
            pos + 1
        )),
        None => Ok(()),
    }
}

/// `currency`: an ISO 4217 code.
pub(super) fn currency(s: &str) -> Result<(), String> {
    if s.len() == 3 && s.bytes().all(|c| c.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(r#"must be 3 uppercase letters (an ISO 4217 code like "EUR")"#.into())
    }
}

/// `image.sha256`: 64 hex digits in either case (stored lowercase).
pub(super) fn sha256(s: &str) -> Result<(), String> {
    if s.len() == 64 && s.bytes().all(|c| c.is_ascii_hexdigit()) {
        Ok(())
    } else {
        Err("must be exactly 64 hexadecimal characters (a SHA-256 digest)".into())
    }
}

/// `image.content_type`: one of the photo types the cloud's check recognises.
pub(super) fn content_type(s: &str) -> Result<(), String> {
    if PHOTO_CONTENT_TYPES.contains(&s) {
        Ok(())
    } else {
        Err(format!("must be one of {}", PHOTO_CONTENT_TYPES.join(", ")))
    }
}

/// `image.bytes` of a photo declared for upload: 1 byte to [`MAX_PHOTO_BYTES`].
pub(super) fn photo_bytes(n: u64) -> Result<(), String> {
    if (1..=MAX_PHOTO_BYTES).contains(&n) {
        Ok(())
    } else {
        Err(format!(
            "must be from 1 to {MAX_PHOTO_BYTES} for a photo to upload (20 MiB)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn the_byte_scan_clears_exactly_the_strings_sqs_accepts(
            s in proptest::collection::vec(
                prop_oneof![
                    any::<char>(),
                    Just('\u{FFFE}'),
                    Just('\u{FFFF}'),
                    Just('\u{FFFD}'),
                    Just('\u{EFFF}'),
                    Just('\u{1F}'),
                    Just('\t'),
                ],
                0..12,
            ).prop_map(|c| c.into_iter().collect::<String>()),
        ) {
            prop_assert_eq!(check_chars(&s).is_ok(), s.chars().all(sqs_allows), "{:?}", s);
        }

        #[test]
        fn a_uuid_is_accepted_in_its_hyphenated_form_only_and_made_canonical(
            s in prop_oneof![
                "[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}",
                "[{]?[0-9a-fA-F-]{30,40}[}]?",
                "urn:uuid:[0-9a-f-]{36}",
            ],
        ) {
            // The uuid crate's own rendering is the canonical form; it parses more spellings
            // than the 36-character one accepted here.
            let want = uuid::Uuid::try_parse(&s)
                .ok()
                .filter(|_| s.len() == 36)
                .map(|u| u.hyphenated().to_string());
            prop_assert_eq!(parse_uuid(&s).ok(), want, "{:?}", s);
        }
    }
}
