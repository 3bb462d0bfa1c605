//! Unsigned integers in request bodies, read the way JSON (and the OpenAPI document's JSON
//! Schema) reads them: a JSON number is an integer when its value is one, however it is
//! written, so `3`, `3.0` and `3e0` are all the integer 3 (JSON Schema 2020-12: "integer" is
//! any number with a zero fractional part). A fraction, a sign or a value past `u64::MAX` is
//! refused. A value written with a fraction or an exponent is read as a double first: above
//! 2^53 write plain digits to be exact.
//!
//! `#[serde(with = "grove_wire::int")]` for `u64` fields, `grove_wire::int::option` for
//! `Option<u64>`; the value is written back as plain digits.

use std::fmt;

use serde::de::{self, Deserializer, Visitor};
use serde::Serializer;

/// 2^64 as a double: the first integral double past `u64::MAX`.
const TWO_POW_64: f64 = 18_446_744_073_709_551_616.0;

struct U64Visitor;

impl Visitor<'_> for U64Visitor {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an integer from 0 to 18446744073709551615")
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<u64, E> {
        Ok(v)
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<u64, E> {
        u64::try_from(v).map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<u64, E> {
        if v.is_finite() && v.fract() == 0.0 && (0.0..TWO_POW_64).contains(&v) {
            // In range and integral, so the conversion is exact.
            #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
            Ok(v as u64)
        } else {
            Err(E::invalid_value(de::Unexpected::Float(v), &self))
        }
    }
}

/// Serializes as plain digits.
#[allow(clippy::trivially_copy_pass_by_ref)] // serde's `with` passes a reference
pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(*v)
}

/// Reads any JSON number whose value is an integer from 0 to `u64::MAX`.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    d.deserialize_any(U64Visitor)
}

/// [`crate::int`] for `Option<u64>` (`null` or absent is `None`; pair with `#[serde(default)]`).
pub mod option {
    use super::*;

    struct OptionVisitor;

    impl<'de> Visitor<'de> for OptionVisitor {
        type Value = Option<u64>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("null or an integer from 0 to 18446744073709551615")
        }

        fn visit_none<E: de::Error>(self) -> Result<Option<u64>, E> {
            Ok(None)
        }

        fn visit_unit<E: de::Error>(self) -> Result<Option<u64>, E> {
            Ok(None)
        }

        fn visit_some<D2: Deserializer<'de>>(self, d: D2) -> Result<Option<u64>, D2::Error> {
            super::deserialize(d).map(Some)
        }
    }

    /// Serializes `None` as `null`, a value as plain digits.
    #[allow(clippy::ref_option)] // serde's `with` passes a reference
    pub fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(v) => s.serialize_some(v),
            None => s.serialize_none(),
        }
    }

    /// Reads `null` or any JSON number whose value is an integer from 0 to `u64::MAX`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        d.deserialize_option(OptionVisitor)
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct T {
        #[serde(with = "crate::int")]
        n: u64,
        #[serde(default, with = "crate::int::option")]
        m: Option<u64>,
    }

    fn read(json: &str) -> Option<T> {
        serde_json::from_str(json).ok()
    }

    #[test]
    fn an_integer_written_as_a_float_is_that_integer() {
        assert_eq!(read(r#"{"n": 3262}"#), Some(T { n: 3262, m: None }));
        assert_eq!(read(r#"{"n": 3262.0, "m": 5e2}"#), Some(T { n: 3262, m: Some(500) }));
        assert_eq!(read(r#"{"n": 18446744073709551615, "m": null}"#), Some(T { n: u64::MAX, m: None }));
        assert_eq!(read(r#"{"n": 1e19}"#), Some(T { n: 10_000_000_000_000_000_000, m: None }));
        assert_eq!(read(r#"{"n": -0.0}"#), Some(T { n: 0, m: None }));
    }

    /// Schemathesis found the fault report's `seq` refused when written `14639711.0`.
    #[test]
    fn a_fault_reports_sequence_number_is_read_the_same_way() {
        let r: crate::api::FaultReport = serde_json::from_str(r#"{"seq": 14639711.0, "reason": "x"}"#).unwrap();
        assert_eq!(r.seq, 14_639_711);
        assert!(serde_json::from_str::<crate::api::FaultReport>(r#"{"seq": 1.5}"#).is_err());
    }

    #[test]
    fn fractions_signs_and_huge_values_are_refused() {
        for json in [
            r#"{"n": 3262.5}"#,
            r#"{"n": -1}"#,
            r#"{"n": -1.0}"#,
            r#"{"n": 18446744073709551616}"#,
            r#"{"n": 1.8446744073709552e19}"#,
            r#"{"n": 5819896643965099091951616}"#,
            r#"{"n": 1e400}"#,
            r#"{"n": "3"}"#,
            r#"{"n": 1, "m": 0.5}"#,
        ] {
            assert_eq!(read(json), None, "{json} was accepted");
        }
    }

    #[test]
    fn written_back_as_plain_digits() {
        let t = T { n: 7, m: Some(9) };
        assert_eq!(serde_json::to_string(&t).unwrap(), r#"{"n":7,"m":9}"#);
    }
}
