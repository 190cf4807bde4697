//! Typed messages: a Rust type that names its action, and the documentation derived from it.
//!
//! The broker validates payloads against the schemas a plugin publishes and documents them in its
//! AsyncAPI document, so both come from the types the handlers already use: serde for the wire,
//! schemars for the schema, the type's doc comment for the summary and description.

use schemars::JsonSchema;
use schemars::generate::SchemaSettings;
use serde::Serialize;

use crate::bindings::broker::plugin::types;

/// A payload type that knows its action: return one from a handler to reply with
/// `{"action": ACTION, "payload": ...}`, or declare it with [`Plugin::sends`](crate::Plugin::sends).
///
/// ```ignore
/// /// An echo of the user's message.
/// #[derive(Serialize, JsonSchema)]
/// struct SystemEcho { message: String }
///
/// impl Message for SystemEcho {
///     const ACTION: &'static str = "system_echo";
/// }
/// ```
pub trait Message: Serialize + JsonSchema {
    /// The action name on the wire.
    const ACTION: &'static str;
}

/// The manifest entry of an action whose payload is `T`: its JSON Schema, and the summary and
/// description from the type's doc comment.
pub(crate) fn spec_of<T: JsonSchema>(action: &str) -> types::ActionSpec {
    // Draft-07 is the dialect AsyncAPI 3.0 documents embed. Subschemas are inlined so each schema
    // stands alone; recursive types still get `definitions`, which the broker moves into the
    // document's components.
    let generator = SchemaSettings::draft07().with(|s| s.inline_subschemas = true).into_generator();
    let schema = generator.into_root_schema_for::<T>();
    let (summary, description) = split_doc(schema.get("description").and_then(|d| d.as_str()));
    types::ActionSpec {
        name: action.to_owned(),
        summary,
        description,
        payload_schema: Some(schema.to_value().to_string()),
    }
}

/// An action without a published schema: any payload reaches the handler.
pub(crate) fn untyped(action: &str) -> types::ActionSpec {
    types::ActionSpec { name: action.to_owned(), summary: None, description: None, payload_schema: None }
}

/// The first paragraph of a doc comment is the summary; the whole comment the description when it
/// says more.
fn split_doc(doc: Option<&str>) -> (Option<String>, Option<String>) {
    let Some(doc) = doc.map(str::trim).filter(|d| !d.is_empty()) else { return (None, None) };
    match doc.split_once("\n\n") {
        Some((first, _)) => (Some(first.replace('\n', " ")), Some(doc.to_owned())),
        None => (Some(doc.replace('\n', " ")), None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    /// Says hello.
    ///
    /// To everyone in the room.
    #[derive(Serialize, JsonSchema)]
    #[allow(dead_code)]
    struct Hello {
        name: String,
        times: Option<u8>,
        inner: Inner,
    }

    #[derive(Serialize, JsonSchema)]
    #[allow(dead_code)]
    struct Inner {
        flag: bool,
    }

    #[test]
    fn spec_has_a_standalone_schema_and_the_doc_comment() {
        let spec = spec_of::<Hello>("hello");
        assert_eq!(spec.summary.as_deref(), Some("Says hello."));
        assert_eq!(spec.description.as_deref(), Some("Says hello.\n\nTo everyone in the room."));
        let schema: Value = serde_json::from_str(&spec.payload_schema.unwrap()).unwrap();
        assert_eq!(schema["required"], json!(["name", "inner"]));
        assert_eq!(schema["properties"]["inner"]["properties"]["flag"]["type"], "boolean");
        assert!(schema.get("definitions").is_none(), "{schema}");
        assert_eq!(schema["$schema"], "http://json-schema.org/draft-07/schema#");
    }

    #[test]
    fn unit_payload_is_null() {
        let schema: Value = serde_json::from_str(&spec_of::<()>("ping").payload_schema.unwrap()).unwrap();
        assert_eq!(schema["type"], "null");
    }
}
