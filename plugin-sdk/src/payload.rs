//! Decoding a payload into the handler's type, reporting problems as pydantic-style issues.
//!
//! serde reports one problem at a time with a message in a fixed form ("missing field `x`",
//! "invalid type: integer `1`, expected a string"); this module turns that message and the path
//! `serde_path_to_error` tracked into the `type`/`loc`/`msg` triple Chanx clients already parse.

use serde::de::DeserializeOwned;
use serde_path_to_error::Segment;

use crate::error::{Issue, Loc};

/// Decodes `payload` (JSON text, `None` when the client sent none) for `action`.
pub(crate) fn decode<P: DeserializeOwned>(action: &str, payload: Option<&str>) -> Result<P, Issue> {
    let text = payload.unwrap_or("null");
    // A payload that fits, the common case, is read once without recording where the reader is
    // (serde_path_to_error copies every key it passes): only a failure is read again, to say where.
    if let Ok(value) = P::deserialize(ObjectsOnly(&mut serde_json::Deserializer::from_str(text))) {
        return Ok(value);
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let error = match serde_path_to_error::deserialize::<_, P>(ObjectsOnly(&mut de)) {
        Ok(value) => return Ok(value),
        Err(error) => error,
    };
    let mut loc = vec![Loc::from(action), Loc::from("payload")];
    for segment in error.path().iter() {
        match segment {
            Segment::Seq { index } => loc.push(Loc::Index(u32::try_from(*index).unwrap_or(u32::MAX))),
            Segment::Map { key } => loc.push(Loc::Key(key.clone())),
            Segment::Enum { variant } => loc.push(Loc::Key(variant.clone())),
            Segment::Unknown => {}
        }
    }
    let message = strip_position(&error.inner().to_string());
    Err(classify(&message, payload.is_none() && loc.len() == 2, loc))
}

/// Makes a payload struct accept only a JSON object, as pydantic does; serde would also take an
/// array of its fields in order.
struct ObjectsOnly<'a, 'de>(&'a mut serde_json::Deserializer<serde_json::de::StrRead<'de>>);

macro_rules! forward {
    ($($method:ident($($arg:ident: $ty:ty),*)),* $(,)?) => {
        $(fn $method<V: serde::de::Visitor<'de>>(self, $($arg: $ty,)* visitor: V) -> Result<V::Value, Self::Error> {
            self.0.$method($($arg,)* visitor)
        })*
    };
}

impl<'de> serde::Deserializer<'de> for ObjectsOnly<'_, 'de> {
    type Error = serde_json::Error;

    fn deserialize_struct<V: serde::de::Visitor<'de>>(
        self,
        _name: &'static str,
        _fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        self.0.deserialize_map(visitor)
    }

    forward! {
        deserialize_any(), deserialize_bool(), deserialize_i8(), deserialize_i16(), deserialize_i32(),
        deserialize_i64(), deserialize_i128(), deserialize_u8(), deserialize_u16(), deserialize_u32(),
        deserialize_u64(), deserialize_u128(), deserialize_f32(), deserialize_f64(), deserialize_char(),
        deserialize_str(), deserialize_string(), deserialize_bytes(), deserialize_byte_buf(),
        deserialize_option(), deserialize_unit(), deserialize_unit_struct(name: &'static str),
        deserialize_newtype_struct(name: &'static str), deserialize_seq(), deserialize_tuple(len: usize),
        deserialize_tuple_struct(name: &'static str, len: usize), deserialize_map(),
        deserialize_enum(name: &'static str, variants: &'static [&'static str]),
        deserialize_identifier(), deserialize_ignored_any(),
    }
}

/// serde_json appends " at line L column C"; the location is already in `loc`.
fn strip_position(message: &str) -> String {
    match message.rfind(" at line ") {
        Some(at) => message[..at].to_owned(),
        None => message.to_owned(),
    }
}

fn classify(message: &str, payload_absent: bool, mut loc: Vec<Loc>) -> Issue {
    if payload_absent {
        return Issue::new("missing", loc, "Field required");
    }
    if let Some(field) = between(message, "missing field `", "`") {
        loc.push(Loc::from(field));
        return Issue::new("missing", loc, "Field required");
    }
    if let Some(field) = between(message, "duplicate field `", "`") {
        loc.push(Loc::from(field));
        return Issue::new("value_error", loc, "Duplicate field: the key appears more than once");
    }
    if let Some(field) = between(message, "unknown field `", "`") {
        loc.push(Loc::from(field));
        return Issue::new("extra_forbidden", loc, "Extra inputs are not permitted");
    }
    if message.starts_with("unknown variant") {
        return Issue::new("enum", loc, capitalize(message));
    }
    if let Some(expected) = message.strip_prefix("invalid type: ").and_then(|m| m.split_once(", expected ")) {
        let (kind, msg) = expected_type(expected.1);
        return Issue::new(kind, loc, msg);
    }
    if let Some(expected) = message.strip_prefix("invalid value: ").and_then(|m| m.split_once(", expected ")) {
        return Issue::new("value_error", loc, format!("Value error, expected {}", expected.1));
    }
    if message.starts_with("invalid length") {
        return Issue::new("too_short", loc, capitalize(message));
    }
    Issue::new("value_error", loc, capitalize(message))
}

/// Maps serde's "expected ..." to pydantic's error type and message.
fn expected_type(expected: &str) -> (&'static str, String) {
    let expected = expected.trim();
    let (kind, msg) = match expected {
        "a string" | "a borrowed string" | "a character" => ("string_type", "Input should be a valid string"),
        "a boolean" => ("bool_type", "Input should be a valid boolean"),
        "f32" | "f64" => ("float_type", "Input should be a valid number"),
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" | "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => {
            ("int_type", "Input should be a valid integer")
        }
        "unit" => ("none_required", "Input should be None"),
        e if e.starts_with("a sequence") || e.starts_with("a tuple") || e.starts_with("tuple") => {
            ("list_type", "Input should be a valid list")
        }
        e if e.starts_with("struct") || e.starts_with("a map") || e.starts_with("map") => {
            ("model_type", "Input should be an object")
        }
        e if e.starts_with("enum") || e.starts_with("variant") => {
            ("enum", "Input should be a valid enumeration member")
        }
        _ => return ("type_error", format!("Input should be {expected}")),
    };
    (kind, msg.to_owned())
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let rest = text.strip_prefix(start)?;
    rest.split_once(end).map(|(inside, _)| inside)
}

fn capitalize(message: &str) -> String {
    let mut chars = message.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[allow(dead_code)]
    struct Chat {
        message: String,
        name: String,
        count: Option<u32>,
        tags: Option<Vec<String>>,
    }

    fn issue(payload: Option<&str>) -> Issue {
        decode::<Chat>("new_chat_message", payload).unwrap_err()
    }

    fn keys(items: &[&str]) -> Vec<Loc> {
        items.iter().map(|k| Loc::from(*k)).collect()
    }

    #[test]
    fn missing_field_is_located_at_the_field() {
        let got = issue(Some(r#"{"message":"hi"}"#));
        assert_eq!(got.kind, "missing");
        assert_eq!(got.loc, keys(&["new_chat_message", "payload", "name"]));
        assert_eq!(got.msg, "Field required");
    }

    #[test]
    fn absent_payload_is_missing_at_payload() {
        let got = issue(None);
        assert_eq!(got.kind, "missing");
        assert_eq!(got.loc, keys(&["new_chat_message", "payload"]));
    }

    #[test]
    fn payload_that_is_not_an_object_is_model_type() {
        let got = issue(Some("[1,2]"));
        assert_eq!(got.kind, "model_type");
        assert_eq!(got.loc, keys(&["new_chat_message", "payload"]));
    }

    #[test]
    fn wrong_field_types_name_the_type() {
        let got = issue(Some(r#"{"message":5,"name":"a"}"#));
        assert_eq!((got.kind.as_str(), got.loc), ("string_type", keys(&["new_chat_message", "payload", "message"])));
        let got = issue(Some(r#"{"message":"m","name":"a","count":"x"}"#));
        assert_eq!(got.kind, "int_type");
    }

    #[test]
    fn list_items_are_located_by_index() {
        let got = issue(Some(r#"{"message":"m","name":"a","tags":["ok",3]}"#));
        assert_eq!(got.kind, "string_type");
        let mut want = keys(&["new_chat_message", "payload", "tags"]);
        want.push(Loc::Index(1));
        assert_eq!(got.loc, want);
    }

    #[test]
    fn a_key_given_twice_is_located_at_it() {
        let got = issue(Some(r#"{"message":"a","message":"b","name":"n"}"#));
        assert_eq!((got.kind.as_str(), got.loc), ("value_error", keys(&["new_chat_message", "payload", "message"])));
    }

    #[test]
    fn unit_payloads_accept_absence() {
        decode::<()>("exit", None).unwrap();
        decode::<Option<Chat>>("exit", None).unwrap();
    }
}
