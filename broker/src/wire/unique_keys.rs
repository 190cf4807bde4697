//! JSON read into a `Value` with every object key at most once, at any depth. serde_json keeps
//! the last of two equal keys silently; a plugin in another language may read the first, so the
//! payload it sees would not be the payload the broker validated.

use std::cell::{Cell, RefCell};
use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::map::Entry;
use serde_json::{Map, Value};

/// Why a text is not a JSON value with unique keys.
#[derive(Debug)]
pub enum Refused {
    /// Not JSON (serde_json's words).
    Invalid(serde_json::Error),
    /// A key given twice; `at` is the path to it, the key last.
    Duplicate { at: Vec<Value> },
}

/// Parses `text`, refusing a key given twice in any object.
pub fn parse(text: &str) -> Result<Value, Refused> {
    let (path, duplicate) = (RefCell::new(Vec::new()), Cell::new(false));
    let mut deserializer = serde_json::Deserializer::from_str(text);
    let seed = Unique { path: &path, duplicate: &duplicate };
    match seed.deserialize(&mut deserializer).and_then(|value| deserializer.end().map(|()| value)) {
        Ok(value) => Ok(value),
        Err(_) if duplicate.get() => {
            // Built from the duplicate key outwards (`within`).
            let mut at = path.into_inner();
            at.reverse();
            Err(Refused::Duplicate { at })
        }
        Err(error) => Err(Refused::Invalid(error)),
    }
}

/// Builds one value; `path` holds the duplicate key's path when one is found.
#[derive(Clone, Copy)]
struct Unique<'p> {
    path: &'p RefCell<Vec<Value>>,
    duplicate: &'p Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for Unique<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Unique<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::from(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(self).inspect_err(|_| self.within(Value::from(items.len())))? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            match object.entry(key) {
                Entry::Occupied(entry) => {
                    self.duplicate.set(true);
                    self.path.borrow_mut().push(Value::String(entry.key().clone()));
                    return Err(de::Error::custom(format_args!("duplicate key {:?}", entry.key())));
                }
                Entry::Vacant(entry) => {
                    let value =
                        map.next_value_seed(self).inspect_err(|_| self.within(Value::String(entry.key().clone())))?;
                    entry.insert(value);
                }
            }
        }
        Ok(Value::Object(object))
    }
}

impl Unique<'_> {
    /// On the way out of a duplicate key's error, each container around it adds where the key was
    /// in it. The path is built only then: on the way in, it would cost a copy of every key.
    fn within(self, step: Value) {
        if self.duplicate.get() {
            self.path.borrow_mut().push(step);
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn values_read_as_serde_json_reads_them() {
        let text = r#"{"a":[1,-2,3.5,"x",null,true,{"b":{}}],"c":{"d":[]}}"#;
        assert_eq!(parse(text).unwrap(), serde_json::from_str::<Value>(text).unwrap());
    }

    #[test]
    fn a_key_twice_anywhere_is_refused_at_its_path() {
        let at = |text: &str| match parse(text) {
            Err(Refused::Duplicate { at }) => at,
            other => panic!("{other:?}"),
        };
        assert_eq!(at(r#"{"a":1,"a":2}"#), vec![json!("a")]);
        assert_eq!(at(r#"{"a":[0,{"x":1,"y":2,"x":3}]}"#), vec![json!("a"), json!(1), json!("x")]);
        assert!(matches!(parse(r#"{"a":1,"b":2} x"#), Err(Refused::Invalid(_))));
        assert!(matches!(parse(&"[".repeat(1000)), Err(Refused::Invalid(_))), "serde_json's depth limit holds");
    }
}
