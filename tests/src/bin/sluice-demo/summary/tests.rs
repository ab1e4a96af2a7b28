//! Tests of `summary`.

use super::*;

#[test]
fn decimals_parse_exactly() {
    assert_eq!(parse_decimal("42.5"), Some(425_000));
    assert_eq!(parse_decimal("-0.0001"), Some(-1));
    assert_eq!(parse_decimal("123456.0000"), Some(1_234_560_000));
    assert_eq!(parse_decimal("1.23456"), None);
    assert_eq!(parse_decimal("1e3"), None);
}

#[test]
fn money_keeps_cents_and_drops_empty_fractions() {
    assert_eq!(money("1234567.5000"), "1,234,567.50");
    assert_eq!(money("123456.0000"), "123,456");
    assert_eq!(money("0.1234"), "0.1234");
}
