//! The payload a schema admits, answered on the frame's text when the schema is a flat object of
//! scalar fields: the shape of nearly every action (the shipped plugins' all are). Building the
//! payload as a `Value` for jsonschema costs four heap blocks, an `IndexMap` and a walk of
//! jsonschema's code on every message: skipping the check saved 1.3 µs a message under load (#21;
//! 10% of the broker's CPU), where the hot loop of the dispatch benchmark sees 0.3-0.45 µs, since
//! each message finds all that cold. This check reads the text once, allocates nothing, and only
//! ever says yes: whatever it does not vouch for (a key it does not know, a key given twice, a
//! value out of bounds, a schema keyword it does not read) goes to jsonschema, which stays the
//! authority and says what is wrong.

use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, Visitor};
use serde_json::Value;

/// Keywords that say nothing about what is valid, read by people and documents only.
const ANNOTATIONS: [&str; 10] = [
    "title",
    "description",
    "$schema",
    "$id",
    "$comment",
    "default",
    "examples",
    "deprecated",
    "readOnly",
    "writeOnly",
];

/// The most fields a flat schema has: the fields seen are bits of a `u64`.
const MAX_FIELDS: usize = 64;

/// A flat object schema: which fields, of which scalar types, are required.
#[derive(Debug)]
pub struct Flat {
    fields: Vec<Field>,
    /// One bit per field of `fields`.
    required: u64,
}

#[derive(Debug)]
struct Field {
    name: Box<str>,
    types: Types,
    /// Bounds on a string's length, in characters as JSON Schema counts them.
    min_length: u64,
    max_length: u64,
}

/// The JSON types a field takes, one bit each.
#[derive(Debug, Clone, Copy)]
struct Types(u8);

impl Types {
    const NULL: u8 = 1;
    const BOOLEAN: u8 = 2;
    const INTEGER: u8 = 4;
    const NUMBER: u8 = 8;
    const STRING: u8 = 16;

    fn named(name: &str) -> Option<u8> {
        Some(match name {
            "null" => Types::NULL,
            "boolean" => Types::BOOLEAN,
            "integer" => Types::INTEGER,
            // Every integer is a number.
            "number" => Types::NUMBER | Types::INTEGER,
            "string" => Types::STRING,
            _ => return None,
        })
    }

    fn has(self, bit: u8) -> bool {
        self.0 & bit != 0
    }
}

impl Flat {
    /// The flat form of `schema`, or `None` when it has anything this check does not read: then
    /// every payload of its action goes to jsonschema.
    pub fn of(schema: &Value) -> Option<Flat> {
        let schema = schema.as_object()?;
        let mut fields = Vec::new();
        let mut required = Vec::new();
        for (keyword, value) in schema {
            match keyword.as_str() {
                "type" if value == "object" => {}
                // Absent or `true`, a key it does not name could be anything, nested objects with
                // keys given twice included: those go to jsonschema. `false` refuses them, as
                // this check does.
                "additionalProperties" if value.is_boolean() => {}
                "properties" => {
                    for (name, field) in value.as_object()? {
                        fields.push(Field::of(name, field)?);
                    }
                }
                "required" => {
                    for name in value.as_array()? {
                        required.push(name.as_str()?);
                    }
                }
                _ if ANNOTATIONS.contains(&keyword.as_str()) => {}
                _ => return None,
            }
        }
        if fields.len() > MAX_FIELDS {
            return None;
        }
        let mut mask = 0;
        for name in required {
            // A required key that is not a field would be refused as unknown: never admitted.
            let index = position(&fields, name)?;
            mask |= 1 << index;
        }
        Some(Flat { fields, required: mask })
    }

    /// Whether `payload` (JSON text) is certainly valid: an object of known fields, each once and
    /// of its type, with every required one. `false` means "ask jsonschema", not "invalid".
    pub fn admits(&self, payload: &str) -> bool {
        let mut deserializer = serde_json::Deserializer::from_str(payload);
        let Ok(seen) = deserializer.deserialize_map(ObjectVisitor(self)) else { return false };
        seen & self.required == self.required && deserializer.end().is_ok()
    }
}

impl Field {
    fn of(name: &str, schema: &Value) -> Option<Field> {
        let mut field = Field { name: name.into(), types: Types(0), min_length: 0, max_length: u64::MAX };
        for (keyword, value) in schema.as_object()? {
            match keyword.as_str() {
                "type" => {
                    field.types = match value {
                        Value::String(name) => Types(Types::named(name)?),
                        Value::Array(names) => {
                            let mut types = Types(0);
                            for name in names {
                                types.0 |= Types::named(name.as_str()?)?;
                            }
                            types
                        }
                        _ => return None,
                    }
                }
                "minLength" => field.min_length = value.as_u64()?,
                "maxLength" => field.max_length = value.as_u64()?,
                _ if ANNOTATIONS.contains(&keyword.as_str()) => {}
                _ => return None,
            }
        }
        // No type is any value, nested ones included: jsonschema's to check.
        (field.types.0 != 0).then_some(field)
    }
}

/// The index of the field named `name`.
fn position(fields: &[Field], name: &str) -> Option<usize> {
    fields.iter().position(|field| *field.name == *name)
}

/// Not admitted; why does not matter, jsonschema will say.
fn refused<E: de::Error>() -> E {
    E::custom("not admitted")
}

/// The payload object: returns the bits of the fields it has.
struct ObjectVisitor<'a>(&'a Flat);

impl<'de> Visitor<'de> for ObjectVisitor<'_> {
    type Value = u64;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<u64, A::Error> {
        let mut seen = 0u64;
        while let Some(index) = map.next_key_seed(KeySeed(self.0))? {
            let bit = 1 << index;
            if seen & bit != 0 {
                // Given twice: jsonschema would read the last, the broker refuses it.
                return Err(refused());
            }
            seen |= bit;
            map.next_value_seed(ValueSeed(&self.0.fields[index]))?;
        }
        Ok(seen)
    }
}

/// A key: the index of its field.
struct KeySeed<'a>(&'a Flat);

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = usize;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<usize, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = usize;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field's name")
    }

    fn visit_str<E: de::Error>(self, key: &str) -> Result<usize, E> {
        position(&self.0.fields, key).ok_or_else(refused)
    }
}

/// A field's value: a scalar of its types, within its bounds.
struct ValueSeed<'a>(&'a Field);

impl<'de> DeserializeSeed<'de> for ValueSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl ValueSeed<'_> {
    fn takes<E: de::Error>(&self, bit: u8) -> Result<(), E> {
        if self.0.types.has(bit) { Ok(()) } else { Err(refused()) }
    }
}

impl<'de> Visitor<'de> for ValueSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a scalar")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<(), E> {
        self.takes(Types::STRING)?;
        // Bytes bound characters from above, and a quarter of them from below (UTF-8 takes at
        // most four bytes a character): most strings are answered without counting.
        let (bytes, field) = (text.len() as u64, self.0);
        if bytes.div_ceil(4) >= field.min_length && bytes <= field.max_length {
            return Ok(());
        }
        let chars = text.chars().count() as u64;
        if (field.min_length..=field.max_length).contains(&chars) { Ok(()) } else { Err(refused()) }
    }

    fn visit_bool<E: de::Error>(self, _: bool) -> Result<(), E> {
        self.takes(Types::BOOLEAN)
    }

    fn visit_i64<E: de::Error>(self, _: i64) -> Result<(), E> {
        self.takes(Types::INTEGER)
    }

    fn visit_u64<E: de::Error>(self, _: u64) -> Result<(), E> {
        self.takes(Types::INTEGER)
    }

    /// A number written with a fraction or an exponent. `1.0` is an integer to JSON Schema, but
    /// not to every draft: an integer field leaves it to jsonschema.
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<(), E> {
        self.takes(Types::NUMBER)
    }

    fn visit_unit<E: de::Error>(self) -> Result<(), E> {
        self.takes(Types::NULL)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::unique_keys;
    use serde_json::json;

    /// What jsonschema says, the payload read as the broker reads it otherwise.
    fn valid(schema: &Value, payload: &str) -> bool {
        let validator = jsonschema::options().should_validate_formats(true).build(schema).unwrap();
        unique_keys::parse(payload).is_ok_and(|value| validator.is_valid(&value))
    }

    fn schemas() -> Vec<Value> {
        vec![
            // The echo's, as schemars writes it.
            json!({"$schema": "http://json-schema.org/draft-07/schema#", "title": "UserMessage",
                "description": "A message from the user, to be echoed.", "type": "object",
                "required": ["message"], "properties": {"message": {"description": "The text to echo.", "type": "string"}}}),
            // The chat's: two required strings.
            json!({"type": "object", "properties": {"message": {"type": "string"}, "name": {"type": "string"}},
                "required": ["message", "name"]}),
            // Bounds, types that take null, and no other keys.
            json!({"type": "object", "properties": {"name": {"type": "string", "minLength": 2, "maxLength": 5},
                "count": {"type": "integer"}, "flag": {"type": ["boolean", "null"]}},
                "required": ["name"], "additionalProperties": false}),
            // Numbers, and a field of two types; nothing required.
            json!({"type": "object", "properties": {"count": {"type": "number"},
                "message": {"type": ["string", "integer"], "maxLength": 1}}}),
        ]
    }

    const KEYS: [&str; 6] = ["message", "name", "count", "flag", "extra", r"mes\u0073age"];
    const VALUES: [&str; 17] = [
        r#""Hello""#,
        r#""""#,
        r#""é🔧""#,
        r#""\u00e9""#,
        r#""abcdef""#,
        r#""🔧🔧🔧🔧🔧""#,
        "1",
        "-3",
        "1.0",
        "2.5",
        "1e400",
        "true",
        "null",
        "[]",
        "{}",
        r#"{"a": 1, "a": 2}"#,
        r#""a\"b""#,
    ];

    /// Every object of up to two entries from `KEYS` and `VALUES`, and values that are no object.
    fn payloads() -> Vec<(String, Vec<(&'static str, &'static str)>)> {
        let mut out = vec![("{}".to_owned(), vec![])];
        for value in VALUES {
            out.push((value.to_owned(), vec![("", value)]));
        }
        let entries: Vec<_> = KEYS.iter().flat_map(|k| VALUES.iter().map(move |v| (*k, *v))).collect();
        for a in &entries {
            out.push((format!(r#"{{"{}": {}}}"#, a.0, a.1), vec![*a]));
            for b in &entries {
                out.push((format!(r#"{{"{}":{}, "{}" :{}}}"#, a.0, a.1, b.0, b.1), vec![*a, *b]));
            }
        }
        out
    }

    /// The one payload this check refuses that jsonschema takes: what it leaves to jsonschema.
    fn left_to_jsonschema(flat: &Flat, entries: &[(&str, &str)]) -> bool {
        let mut keys: Vec<String> = Vec::new();
        for (key, value) in entries {
            if key.is_empty() {
                return true; // not an object
            }
            let key = serde_json::from_str::<String>(&format!("\"{key}\"")).unwrap();
            let Some(index) = position(&flat.fields, &key) else { return true };
            let field = &flat.fields[index];
            let fraction = value.contains('.') || value.contains('e');
            if keys.contains(&key) || (fraction && !field.types.has(Types::NUMBER)) {
                return true;
            }
            keys.push(key);
        }
        false
    }

    #[test]
    fn it_admits_exactly_what_jsonschema_takes_of_known_fields_given_once() {
        let payloads = payloads();
        for schema in schemas() {
            let flat = Flat::of(&schema).unwrap_or_else(|| panic!("flat: {schema}"));
            let mut admitted = 0;
            for (payload, entries) in &payloads {
                let admits = flat.admits(payload);
                let valid = valid(&schema, payload);
                // Never a yes that jsonschema would refuse: its errors would go unsaid.
                assert!(!admits || valid, "admitted what jsonschema refuses: {payload} for {schema}");
                // And a yes for all it takes, but for what it leaves to jsonschema.
                if valid && !left_to_jsonschema(&flat, entries) {
                    assert!(admits, "left to jsonschema: {payload} for {schema}");
                }
                admitted += usize::from(admits);
            }
            assert!(admitted > 10, "{admitted} admitted for {schema}");
        }
    }

    /// Each shipped plugin's schemas, as its SDK publishes them (printed from the plugins built on
    /// 5 Dec): a change of an SDK's schemas that leaves this check is a cost on every message.
    #[test]
    fn the_schemas_the_three_sdks_publish_for_the_shipped_plugins_are_flat() {
        for text in [
            // Rust (schemars): the echo, the chat, the assistant.
            r#"{"type":"object","properties":{"message":{"type":"string","description":"The text to echo."}},"required":["message"],"description":"A message from the user, to be echoed.","title":"UserMessage","$schema":"http://json-schema.org/draft-07/schema#"}"#,
            r#"{"type":"object","properties":{"message":{"type":"string","description":"The text."},"name":{"type":"string","description":"Who wrote it, as the writer calls themselves."}},"required":["message","name"],"description":"A chat message: sent by a member, relayed to every other member of the room.","title":"NewChatMessage","$schema":"http://json-schema.org/draft-07/schema#"}"#,
            r#"{"type":"object","properties":{"message":{"type":"string"}},"required":["message"],"description":"A question or request for the pizza shop, in plain words.","title":"UserMessage","$schema":"http://json-schema.org/draft-07/schema#"}"#,
            // Python and JavaScript: the echo's and the assistant's, then the chat's.
            r#"{"$schema":"http://json-schema.org/draft-07/schema#","type":"object","properties":{"message":{"type":"string"}},"required":["message"]}"#,
            r#"{"$schema":"http://json-schema.org/draft-07/schema#","type":"object","properties":{"message":{"type":"string"},"name":{"type":"string"}},"required":["message","name"]}"#,
        ] {
            let schema: Value = serde_json::from_str(text).unwrap();
            let flat = Flat::of(&schema).unwrap_or_else(|| panic!("not flat: {text}"));
            let fitting: serde_json::Map<String, Value> =
                flat.fields.iter().map(|field| (field.name.to_string(), json!("Hello"))).collect();
            assert!(flat.admits(&Value::Object(fitting).to_string()), "{text}");
            assert!(!flat.admits("{}"), "{text}");
        }
    }

    #[test]
    fn a_schema_with_what_it_does_not_read_is_not_flat() {
        let field = |schema: Value| json!({"type": "object", "properties": {"f": schema}});
        for schema in [
            json!(true),
            json!({"type": "array"}),
            json!({"type": ["object", "null"], "properties": {}}),
            json!({"type": "object", "minProperties": 1}),
            json!({"type": "object", "patternProperties": {"^x": {"type": "string"}}}),
            json!({"type": "object", "additionalProperties": {"type": "string"}}),
            json!({"type": "object", "required": ["missing"]}),
            json!({"$ref": "#/definitions/A", "definitions": {"A": {"type": "object"}}}),
            field(json!({})),
            field(json!({"type": "object"})),
            field(json!({"type": "array", "items": {"type": "string"}})),
            field(json!({"type": "string", "format": "email"})),
            field(json!({"type": "string", "pattern": "^a"})),
            field(json!({"type": "string", "enum": ["a"]})),
            field(json!({"const": "a"})),
            field(json!({"type": "integer", "minimum": 0})),
            field(json!({"anyOf": [{"type": "string"}, {"type": "null"}]})),
            field(json!({"type": "string", "maxLength": -1})),
            field(json!({"type": "strange"})),
        ] {
            assert!(Flat::of(&schema).is_none(), "{schema}");
        }
        let many: serde_json::Map<String, Value> =
            (0..=MAX_FIELDS).map(|i| (format!("f{i}"), json!({"type": "string"}))).collect();
        assert!(Flat::of(&json!({"type": "object", "properties": many})).is_none());
    }
}
