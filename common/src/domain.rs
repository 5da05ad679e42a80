//! Domain types. Each validates once, in its constructor; a value of the type is valid.
//! Decoded Avro records and rows go through the same constructors as user input.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SubsecRound, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use uuid::Uuid;

/// A field of a bid that failed validation, with what is allowed, in words for the bidder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    pub field: &'static str,
    pub message: String,
}

impl ValidationError {
    fn new(field: &'static str, message: impl Into<String>) -> Self {
        Self { field, message: message.into() }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct AuctionId(u64);

impl AuctionId {
    pub fn new(id: u64) -> Result<Self, ValidationError> {
        // MySQL's BIGINT UNSIGNED holds any u64, but Avro's long is signed.
        if id == 0 || id > i64::MAX as u64 {
            return Err(ValidationError::new("auction_id", "must be a whole number from 1 to 9223372036854775807"));
        }
        Ok(Self(id))
    }

    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for AuctionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Bidirectional controls: they reorder the text around them, so a name holding one can show
/// as another name (or flip the text the page puts after it).
const BIDI_CONTROLS: &[(char, char)] = &[
    ('\u{061C}', '\u{061C}'), // arabic letter mark
    ('\u{200E}', '\u{200F}'), // left-to-right and right-to-left marks
    ('\u{202A}', '\u{202E}'), // embeddings, overrides and their pop
    ('\u{2066}', '\u{2069}'), // isolates and their pop
];

/// Characters that show as nothing (or as a blank that is not a space): a name made only of
/// these, and whitespace, looks empty or like someone else's. Inside a visible name some are
/// needed (zero-width joiners in emoji and Indic scripts, variation selectors), so only a name
/// with nothing else is refused.
const INVISIBLE: &[(char, char)] = &[
    ('\u{00AD}', '\u{00AD}'),   // soft hyphen
    ('\u{034F}', '\u{034F}'),   // combining grapheme joiner
    ('\u{115F}', '\u{1160}'),   // hangul choseong and jungseong fillers
    ('\u{17B4}', '\u{17B5}'),   // khmer inherent vowels
    ('\u{180B}', '\u{180F}'),   // mongolian variation selectors and vowel separator
    ('\u{200B}', '\u{200D}'),   // zero-width space, non-joiner, joiner
    ('\u{2060}', '\u{2064}'),   // word joiner, invisible operators
    ('\u{206A}', '\u{206F}'),   // deprecated format characters
    ('\u{2800}', '\u{2800}'),   // braille pattern blank
    ('\u{3164}', '\u{3164}'),   // hangul filler
    ('\u{FE00}', '\u{FE0F}'),   // variation selectors
    ('\u{FEFF}', '\u{FEFF}'),   // zero-width no-break space (byte order mark)
    ('\u{FFA0}', '\u{FFA0}'),   // halfwidth hangul filler
    ('\u{1BCA0}', '\u{1BCA3}'), // shorthand format controls
    ('\u{1D173}', '\u{1D17A}'), // musical symbol formatting
    ('\u{E0000}', '\u{E007F}'), // tags
    ('\u{E0100}', '\u{E01EF}'), // variation selectors supplement
];

fn in_ranges(c: char, ranges: &[(char, char)]) -> bool {
    ranges.iter().any(|&(low, high)| (low..=high).contains(&c))
}

/// Whether `c` is a bidirectional control (see [`check_displayable`]).
pub fn is_bidi_control(c: char) -> bool {
    in_ranges(c, BIDI_CONTROLS)
}

/// Refuses text that would display as something other than it is: control characters (line
/// and paragraph separators included), bidirectional controls anywhere, or nothing visible at
/// all. For every text a person types that others see (bidder names, auction titles).
pub fn check_displayable(field: &'static str, text: &str) -> Result<(), ValidationError> {
    if text.chars().any(|c| c.is_control() || c == '\u{2028}' || c == '\u{2029}') {
        return Err(ValidationError::new(field, "must not contain control characters (such as tab or newline)"));
    }
    if let Some(c) = text.chars().find(|&c| is_bidi_control(c)) {
        return Err(ValidationError::new(
            field,
            format!(
                "must not contain bidirectional control characters (found U+{:04X}; U+061C, U+200E, U+200F, \
                 U+202A to U+202E and U+2066 to U+2069 are not allowed): they change how the text is displayed",
                u32::from(c)
            ),
        ));
    }
    if text.chars().all(|c| c.is_whitespace() || in_ranges(c, INVISIBLE)) {
        return Err(ValidationError::new(
            field,
            "must contain a visible character: invisible characters alone (such as zero-width spaces or Hangul fillers) are not allowed",
        ));
    }
    Ok(())
}

/// The bidder's name: trimmed, 1 to 100 characters, shown as it is (see [`check_displayable`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct BidderName(String);

impl BidderName {
    pub const MAX_CHARS: usize = 100;

    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let trimmed = raw.trim();
        let chars = trimmed.chars().count();
        if chars == 0 {
            return Err(ValidationError::new("name", "is required: 1 to 100 characters"));
        }
        if chars > Self::MAX_CHARS {
            return Err(ValidationError::new(
                "name",
                format!("is {chars} characters long; at most 100 are allowed"),
            ));
        }
        check_displayable("name", trimmed)?;
        Ok(Self(trimmed.to_owned()))
    }

    /// A name already recorded (a stored leader): accepted under the rules of its day, so only
    /// its length is checked again. Rules made stricter later must not make an auction with such
    /// a leader unreadable; pages escape it like any other text.
    pub fn recorded(raw: &str) -> Result<Self, ValidationError> {
        let trimmed = raw.trim();
        match trimmed.chars().count() {
            0 => Err(ValidationError::new("name", "is required: 1 to 100 characters")),
            n if n > Self::MAX_CHARS => Err(ValidationError::new("name", format!("is {n} characters long; at most 100 are allowed"))),
            _ => Ok(Self(trimmed.to_owned())),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for BidderName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A bid's price: an exact decimal above 0 with at most 2 decimals, at most 9,999,999,999.99
/// (MySQL's DECIMAL(12,2) and the Avro schema's decimal(12,2)). Always held at scale 2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Price(Decimal);

const PRICE_RULE: &str = "must be a number above 0 with at most 2 decimals, at most 9999999999.99";

impl Price {
    pub const SCALE: u32 = 2;

    pub fn max() -> Decimal {
        Decimal::new(999_999_999_999, Self::SCALE)
    }

    pub fn new(value: Decimal) -> Result<Self, ValidationError> {
        let normalized = value.normalize();
        if normalized.scale() > Self::SCALE || value <= Decimal::ZERO || value > Self::max() {
            return Err(ValidationError::new("price", format!("{PRICE_RULE}; got {value}")));
        }
        let mut exact = normalized;
        exact.rescale(Self::SCALE);
        Ok(Self(exact))
    }

    /// Parses the decimal text a bidder typed or a JSON number literal: digits with an optional
    /// point, no exponent, no thousands separators.
    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        let text = raw.trim();
        let shown: String = text.chars().take(40).collect();
        let well_formed = !text.is_empty()
            && text.chars().all(|c| c.is_ascii_digit() || c == '.' || c == '-' || c == '+')
            && text.chars().any(|c| c.is_ascii_digit());
        let value = well_formed
            .then(|| Decimal::from_str_exact(text).ok())
            .flatten()
            .ok_or_else(|| ValidationError::new("price", format!("{PRICE_RULE}; got {shown:?}")))?;
        Self::new(value)
    }

    pub fn get(self) -> Decimal {
        self.0
    }
}

impl fmt::Display for Price {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for Price {
    /// As a string, so no JSON reader turns money into a float.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl FromStr for Price {
    type Err = ValidationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct BidId(Uuid);

impl BidId {
    /// Time-ordered (UUIDv7), so ids sort roughly by acceptance and index well in MySQL.
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }

    pub fn parse(raw: &str) -> Result<Self, ValidationError> {
        Uuid::parse_str(raw)
            .map(Self)
            .map_err(|_| ValidationError::new("bid_id", "must be a UUID"))
    }

    pub fn from_uuid(id: Uuid) -> Self {
        Self(id)
    }

    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl fmt::Display for BidId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.hyphenated().fmt(f)
    }
}

/// UTC time with microsecond precision: what Avro's timestamp-micros and MySQL's DATETIME(6) hold.
pub fn now_micros() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// Formats a timestamp the way every output of the system shows it: RFC 3339, UTC, microseconds.
pub fn format_ts(ts: &DateTime<Utc>) -> String {
    ts.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// A bid the site accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bid {
    pub bid_id: BidId,
    pub auction_id: AuctionId,
    pub name: BidderName,
    pub price: Price,
    #[serde(serialize_with = "serialize_ts")]
    pub bid_ts: DateTime<Utc>,
}

pub fn serialize_ts<S: serde::Serializer>(ts: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&format_ts(ts))
}

impl Bid {
    /// A new bid, stamped with the server's clock.
    pub fn accept(auction_id: AuctionId, name: BidderName, price: Price) -> Self {
        Self { bid_id: BidId::generate(), auction_id, name, price, bid_ts: now_micros() }
    }

    /// Whether this bid leads `other` (the rule: [`crate::auction::ranks_above`]).
    pub fn beats(&self, other: &Bid) -> bool {
        crate::auction::ranks_above((self.price, self.bid_ts, self.bid_id), (other.price, other.bid_ts, other.bid_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_trimmed_and_limited_to_100_characters() {
        assert_eq!(BidderName::parse("  Ada  ").map(|n| n.0), Ok("Ada".to_owned()));
        assert!(BidderName::parse(&"é".repeat(100)).is_ok());
        let err = BidderName::parse(&"é".repeat(101)).unwrap_err();
        assert_eq!(err.field, "name");
        assert!(err.message.contains("at most 100"), "{err}");
    }

    #[test]
    fn names_reject_empty_and_control_characters() {
        for bad in ["", "   ", "\t", "a\nb", "a\u{7}b", "a\u{85}b"] {
            let err = BidderName::parse(bad).unwrap_err();
            assert_eq!(err.field, "name", "{bad:?}");
        }
    }

    #[test]
    fn names_of_invisible_characters_only_are_refused_saying_so() {
        for bad in [
            "\u{200B}",
            "\u{200B}\u{200C}\u{200D}",
            "\u{2060}",
            "\u{FEFF}",
            "\u{FE0F}",
            "\u{E0101}",
            "\u{3164}",
            "\u{3164}\u{3164}",
            "\u{115F}\u{1160}",
            "\u{FFA0}",
            "\u{2800}",
            "\u{00AD}",
            "\u{200B} \u{200B}",
            "\u{E0041}\u{E0064}\u{E0061}",
        ] {
            let err = BidderName::parse(bad).expect_err(bad);
            assert_eq!(err.field, "name", "{bad:?}");
            assert!(err.message.contains("invisible characters alone") || err.message.contains("is required"), "{bad:?}: {err}");
        }
        let err = BidderName::parse("\u{200B}\u{3164}").unwrap_err();
        assert!(err.message.contains("visible character"), "{err}");
    }

    #[test]
    fn names_with_bidirectional_controls_are_refused_naming_them() {
        for bad in ["Ada\u{202E}evil", "\u{202A}Ada", "Ada\u{202C}", "\u{2066}Ada\u{2069}", "Ada\u{200E}", "Ada\u{200F}", "Ada\u{061C}", "\u{2067}x"] {
            let err = BidderName::parse(bad).expect_err(bad);
            assert_eq!(err.field, "name", "{bad:?}");
            assert!(err.message.contains("bidirectional control characters"), "{bad:?}: {err}");
        }
        let err = BidderName::parse("gnp.\u{202E}exe").unwrap_err();
        // A leader stored before the rule still reads back.
        assert_eq!(BidderName::recorded("gnp.\u{202E}exe").map(|n| n.0), Ok("gnp.\u{202E}exe".to_owned()));
        assert!(BidderName::recorded(" ").is_err() && BidderName::recorded(&"a".repeat(101)).is_err());
        assert!(err.message.contains("U+202E"), "{err}");
    }

    #[test]
    fn names_keep_the_invisible_characters_visible_text_needs() {
        for good in ["\u{1F469}\u{200D}\u{1F4BB}", "\u{0915}\u{094D}\u{200D}\u{0937}", "\u{2764}\u{FE0F}", "Zoë", "O'Brien & Söhne", "\u{05D3}\u{05D5}\u{05D3}", "李小龍", "Ada\u{00A0}Lovelace"] {
            assert!(BidderName::parse(good).is_ok(), "{good:?}");
        }
    }

    #[test]
    fn line_and_paragraph_separators_count_as_control_characters() {
        for bad in ["a\u{2028}b", "a\u{2029}b"] {
            assert!(BidderName::parse(bad).unwrap_err().message.contains("control characters"), "{bad:?}");
        }
    }

    #[test]
    fn prices_are_exact_with_two_decimals() {
        assert_eq!(Price::parse("12.5").map(|p| p.to_string()), Ok("12.50".to_owned()));
        assert_eq!(Price::parse("0.01").map(|p| p.to_string()), Ok("0.01".to_owned()));
        assert_eq!(Price::parse("7.100").map(|p| p.to_string()), Ok("7.10".to_owned()));
        assert_eq!(Price::parse("9999999999.99").map(|p| p.to_string()), Ok("9999999999.99".to_owned()));
    }

    #[test]
    fn prices_out_of_range_or_malformed_are_rejected_naming_the_field() {
        for bad in ["0", "0.00", "-1", "1.005", "10000000000.00", "", "abc", "1e3", "NaN", "1,000", ".", "--1", "1.2.3"] {
            let err = Price::parse(bad).expect_err(bad);
            assert_eq!(err.field, "price", "{bad:?}");
            assert!(err.message.contains("at most 2 decimals"), "{err}");
        }
    }

    #[test]
    fn highest_bid_is_greatest_price_then_earliest() {
        let a = AuctionId::new(1).unwrap();
        let mut first = Bid::accept(a, BidderName::parse("a").unwrap(), Price::parse("10").unwrap());
        let mut second = Bid::accept(a, BidderName::parse("b").unwrap(), Price::parse("10").unwrap());
        second.bid_ts = first.bid_ts + chrono::Duration::microseconds(1);
        assert!(first.beats(&second));
        assert!(!second.beats(&first));
        first.price = Price::parse("9.99").unwrap();
        assert!(second.beats(&first));
    }
}
