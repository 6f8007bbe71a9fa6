//! Decoding record values into rows and encoding rows back.
//!
//! JSON decoding projects: only the fields the pipeline reads are materialized (looked up by
//! name without allocating), everything else is skipped by the parser.

use std::{collections::BTreeMap, fmt, sync::Arc};

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use super::value::Value;

/// Why a record value could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// Not valid JSON, or not an object.
    #[error("record value is not a JSON object: {0}")]
    Json(String),
    /// Not UTF-8 where a string is expected.
    #[error("record value is not UTF-8 text")]
    Utf8,
}

/// Decodes a JSON object, filling `row[i]` with the value of field `names[i]` (and `None` for
/// fields the object lacks).
pub fn decode_json_into(
    bytes: &[u8],
    names: &[Arc<str>],
    row: &mut Vec<Option<Value>>,
) -> Result<(), DecodeError> {
    row.clear();
    row.resize(names.len(), None);
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    ObjectSeed { names, row }
        .deserialize(&mut deserializer)
        .and_then(|()| deserializer.end())
        .map_err(|e| DecodeError::Json(e.to_string()))
}

/// Decodes any JSON document into a [`Value`].
pub fn decode_json_value(bytes: &[u8]) -> Result<Value, DecodeError> {
    let mut deserializer = serde_json::Deserializer::from_slice(bytes);
    let value = JsonValue
        .deserialize(&mut deserializer)
        .and_then(|v| deserializer.end().map(|()| v))
        .map_err(|e| DecodeError::Json(e.to_string()))?;
    Ok(value)
}

struct ObjectSeed<'a> {
    names: &'a [Arc<str>],
    row: &'a mut Vec<Option<Value>>,
}

impl<'de> DeserializeSeed<'de> for ObjectSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ObjectSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(slot) = map.next_key_seed(SlotSeed(self.names))? {
            match slot {
                Some(i) => self.row[i] = Some(map.next_value_seed(JsonValue)?),
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(())
    }
}

/// Finds a key's slot without allocating it.
struct SlotSeed<'a>(&'a [Arc<str>]);

impl<'de> DeserializeSeed<'de> for SlotSeed<'_> {
    type Value = Option<usize>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Option<usize>, D::Error> {
        // Bytes rather than str: the key is compared, never kept, so skip UTF-8 validation.
        deserializer.deserialize_bytes(self)
    }
}

impl<'de> Visitor<'de> for SlotSeed<'_> {
    type Value = Option<usize>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<Option<usize>, E> {
        self.visit_bytes(key.as_bytes())
    }

    fn visit_bytes<E: de::Error>(self, key: &[u8]) -> Result<Option<usize>, E> {
        Ok(self.0.iter().position(|n| n.as_bytes() == key))
    }
}

/// Deserializes JSON into [`Value`] with JSON's number rules: integers that fit i64 are `Int`,
/// larger ones `UInt`, the rest `Double`.
#[derive(Clone, Copy)]
struct JsonValue;

impl<'de> DeserializeSeed<'de> for JsonValue {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for JsonValue {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E>(self, i: i64) -> Result<Value, E> {
        Ok(Value::Int(i))
    }

    fn visit_u64<E>(self, u: u64) -> Result<Value, E> {
        Ok(i64::try_from(u).map_or(Value::UInt(u), Value::Int))
    }

    fn visit_f64<E>(self, d: f64) -> Result<Value, E> {
        Ok(Value::Double(d))
    }

    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(Arc::from(s)))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(item) = seq.next_element_seed(JsonValue)? {
            items.push(item);
        }
        Ok(Value::List(Arc::new(items)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = BTreeMap::new();
        while let Some(key) = map.next_key::<String>()? {
            entries.insert(key, map.next_value_seed(JsonValue)?);
        }
        Ok(Value::Map(Arc::new(entries)))
    }
}

/// Appends `value` as JSON. Non-finite doubles, which JSON cannot carry, become `null`; bytes
/// become a string of their (lossy) UTF-8 text.
pub fn write_json(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Int(i) => out.extend_from_slice(itoa::Buffer::new().format(*i).as_bytes()),
        Value::UInt(u) => out.extend_from_slice(itoa::Buffer::new().format(*u).as_bytes()),
        Value::Double(d) if d.is_finite() => {
            out.extend_from_slice(ryu::Buffer::new().format_finite(*d).as_bytes())
        }
        Value::Double(_) => out.extend_from_slice(b"null"),
        Value::String(s) => write_json_str(out, s),
        Value::Bytes(b) => write_json_str(out, &String::from_utf8_lossy(b)),
        Value::List(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_json(out, item);
            }
            out.push(b']');
        }
        Value::Map(entries) => write_json_object(out, entries.iter().map(|(k, v)| (k.as_str(), v))),
    }
}

/// Appends a JSON object with the given fields, in order.
pub fn write_json_object<'a>(
    out: &mut Vec<u8>,
    fields: impl Iterator<Item = (&'a str, &'a Value)>,
) {
    out.push(b'{');
    for (i, (name, value)) in fields.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write_json_str(out, name);
        out.push(b':');
        write_json(out, value);
    }
    out.push(b'}');
}

/// Appends a JSON string literal.
pub fn write_json_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        let escape: &[u8] = match b {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[start..i]);
        if escape.is_empty() {
            out.extend_from_slice(format!("\\u{b:04x}").as_bytes());
        } else {
            out.extend_from_slice(escape);
        }
        start = i + 1;
    }
    out.extend_from_slice(&bytes[start..]);
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn names(list: &[&str]) -> Vec<Arc<str>> {
        list.iter().map(|n| Arc::from(*n)).collect()
    }

    #[test]
    fn projects_the_fields_a_pipeline_reads() {
        let mut row = Vec::new();
        let bytes = br#"{"ts": 1700000000000, "ignored": {"deep": [1, 2]}, "amount": 12.5, "account": "a\"1"}"#;
        decode_json_into(bytes, &names(&["account", "amount", "missing"]), &mut row).unwrap();
        assert_eq!(
            row,
            [Some(Value::string("a\"1")), Some(Value::Double(12.5)), None]
        );
    }

    #[test]
    fn refuses_what_is_not_an_object() {
        let mut row = Vec::new();
        for bad in [
            &b"[1,2]"[..],
            b"42",
            b"{\"a\":",
            b"{\"a\":1} trailing",
            b"\xff\xfe",
            b"",
        ] {
            assert!(
                decode_json_into(bad, &names(&["a"]), &mut row).is_err(),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn numbers_keep_their_json_kind() {
        let v = decode_json_value(br#"[1, -1, 18446744073709551615, 1.0, 1e3]"#).unwrap();
        let Value::List(items) = v else { panic!() };
        assert_eq!(
            items.as_slice(),
            [
                Value::Int(1),
                Value::Int(-1),
                Value::UInt(u64::MAX),
                Value::Double(1.0),
                Value::Double(1000.0)
            ]
        );
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(Value::Int),
            (i64::MAX as u64 + 1..=u64::MAX).prop_map(Value::UInt),
            (-1e300f64..1e300).prop_map(Value::Double),
            any::<String>().prop_map(|s| Value::string(&s)),
        ];
        leaf.prop_recursive(3, 16, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(|v| Value::List(Arc::new(v))),
                prop::collection::btree_map(any::<String>(), inner, 0..4)
                    .prop_map(|m| Value::Map(Arc::new(m))),
            ]
        })
    }

    proptest! {
        #[test]
        fn encoding_then_decoding_gives_the_value_back(value in json_value()) {
            let mut out = Vec::new();
            write_json(&mut out, &value);
            let decoded = decode_json_value(&out).unwrap();
            // Doubles that are whole numbers print as such ("1.0") and come back as doubles.
            prop_assert!(decoded.cel_eq(&value), "{} -> {:?}", String::from_utf8_lossy(&out), decoded);
            // serde_json agrees that it is valid JSON.
            prop_assert!(serde_json::from_slice::<serde_json::Value>(&out).is_ok());
        }

        #[test]
        fn arbitrary_bytes_never_panic_the_decoder(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
            let mut row = Vec::new();
            let _ = decode_json_into(&bytes, &names(&["a", "b"]), &mut row);
            let _ = decode_json_value(&bytes);
        }
    }
}
