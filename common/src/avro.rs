//! The bid's Avro schema (`schemas/bid.avsc`) and the mapping between [`Bid`] and Avro values.
//! Decoding goes through the domain constructors, so a record that breaks a rule is refused
//! here as it would be at the site.

use apache_avro::types::Value;
use apache_avro::Schema;
use chrono::{DateTime, Utc};
use rust_decimal::Decimal;

use crate::domain::{AuctionId, Bid, BidId, BidderName, Price, ValidationError};

/// The writer schema, as registered under `<topic>-value`.
pub const BID_SCHEMA: &str = include_str!("../../schemas/bid.avsc");

/// Why an Avro value is not a valid bid.
#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("the record has no field `{0}` of the expected type")]
    MissingField(&'static str),
    #[error("the record is not a bid: {0}")]
    NotARecord(String),
    #[error("invalid bid: {0}")]
    Invalid(#[from] ValidationError),
}

pub fn bid_schema() -> Schema {
    #[allow(clippy::expect_used)]
    Schema::parse_str(BID_SCHEMA).expect("schemas/bid.avsc is valid Avro (checked by a unit test)")
}

/// The Avro record for a bid, fields in schema order.
pub fn to_value(bid: &Bid) -> Value {
    Value::Record(vec![
        ("bid_id".into(), Value::Uuid(*bid.bid_id.as_uuid())),
        ("auction_id".into(), Value::Long(bid.auction_id.get() as i64)),
        ("name".into(), Value::String(bid.name.as_str().to_owned())),
        ("price".into(), Value::Decimal(decimal_to_avro(bid.price.get()))),
        ("bid_ts".into(), Value::TimestampMicros(bid.bid_ts.timestamp_micros())),
    ])
}

/// The bid in a decoded Avro record, validated by the domain constructors.
pub fn from_value(value: Value) -> Result<Bid, RecordError> {
    let Value::Record(fields) = value else {
        return Err(RecordError::NotARecord(format!("{value:?}")));
    };
    let field = |name: &'static str| fields.iter().find(|(n, _)| n == name).map(|(_, v)| v);

    let bid_id = match field("bid_id") {
        Some(Value::Uuid(id)) => BidId::from_uuid(*id),
        Some(Value::String(s)) => BidId::parse(s)?,
        _ => return Err(RecordError::MissingField("bid_id")),
    };
    let auction_id = match field("auction_id") {
        Some(Value::Long(id)) => AuctionId::new(u64::try_from(*id).unwrap_or(0))?,
        _ => return Err(RecordError::MissingField("auction_id")),
    };
    let name = match field("name") {
        Some(Value::String(s)) => BidderName::parse(s)?,
        _ => return Err(RecordError::MissingField("name")),
    };
    let price = match field("price") {
        Some(Value::Decimal(d)) => Price::new(decimal_from_avro(d).ok_or(RecordError::MissingField("price"))?)?,
        _ => return Err(RecordError::MissingField("price")),
    };
    let bid_ts = match field("bid_ts") {
        Some(Value::TimestampMicros(us)) => {
            DateTime::<Utc>::from_timestamp_micros(*us).ok_or(RecordError::MissingField("bid_ts"))?
        }
        _ => return Err(RecordError::MissingField("bid_ts")),
    };
    Ok(Bid { bid_id, auction_id, name, price, bid_ts })
}

/// Avro's decimal is the unscaled value as big-endian two's-complement bytes; the scale lives in
/// the schema (2). Neither crate converts from `rust_decimal`, so this does, without a float.
fn decimal_to_avro(value: Decimal) -> apache_avro::Decimal {
    let mut scaled = value;
    scaled.rescale(Price::SCALE);
    let bytes = scaled.mantissa().to_be_bytes();
    // Drop leading bytes that only repeat the sign, keeping the sign bit right.
    let negative = scaled.is_sign_negative();
    let pad = if negative { 0xFF } else { 0x00 };
    let mut start = 0;
    while start + 1 < bytes.len() && bytes[start] == pad && (bytes[start + 1] & 0x80 != 0) == negative {
        start += 1;
    }
    apache_avro::Decimal::from(&bytes[start..])
}

fn decimal_from_avro(value: &apache_avro::Decimal) -> Option<Decimal> {
    let bytes = <Vec<u8>>::try_from(value).ok()?;
    if bytes.is_empty() || bytes.len() > 16 {
        return None;
    }
    let fill = if bytes[0] & 0x80 != 0 { 0xFF } else { 0x00 };
    let mut wide = [fill; 16];
    wide[16 - bytes.len()..].copy_from_slice(&bytes);
    Decimal::try_from_i128_with_scale(i128::from_be_bytes(wide), Price::SCALE).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    #[allow(deprecated)]
    use apache_avro::{from_avro_datum, to_avro_datum};

    fn bid(price: &str) -> Bid {
        Bid::accept(
            AuctionId::new(42).unwrap(),
            BidderName::parse("Zoë \"quoted\", <b>bold</b>").unwrap(),
            Price::parse(price).unwrap(),
        )
    }

    #[test]
    #[allow(deprecated)]
    fn bids_round_trip_through_avro_bytes() {
        let schema = bid_schema();
        for price in ["0.01", "0.80", "1.28", "127.99", "255.00", "32768.00", "9999999999.99"] {
            let original = bid(price);
            let bytes = to_avro_datum(&schema, to_value(&original)).unwrap();
            let decoded = from_avro_datum(&schema, &mut bytes.as_slice(), None).unwrap();
            assert_eq!(from_value(decoded).unwrap(), original, "price {price}");
        }
    }

    #[test]
    fn decimal_bytes_are_minimal_twos_complement() {
        let bytes = |d: &str| <Vec<u8>>::try_from(decimal_to_avro(d.parse().unwrap())).unwrap();
        assert_eq!(bytes("1.27"), vec![0x7F]);
        assert_eq!(bytes("1.28"), vec![0x00, 0x80]);
        assert_eq!(bytes("0.01"), vec![0x01]);
        assert_eq!(bytes("-0.01"), vec![0xFF]);
        assert_eq!(bytes("-1.29"), vec![0xFF, 0x7F]);
    }

    #[test]
    fn records_breaking_a_rule_are_refused() {
        let mut value = to_value(&bid("10"));
        if let Value::Record(fields) = &mut value {
            fields[2].1 = Value::String("   ".into());
        }
        assert!(matches!(from_value(value), Err(RecordError::Invalid(e)) if e.field == "name"));
    }
}
