//! Typed clients generated from the AsyncAPI document (`broker client --lang ...`), so a front end
//! gets compile-time checked frames, as Chanx's client generator gives its users.
//!
//! Both generators read the same model: the document's component schemas, and per channel the
//! frames clients send (messages of `receive` operations) and the frames they get (messages of
//! `send` operations and of replies).

mod python;
mod typescript;

use serde_json::Value;

/// A client language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Typescript,
    Python,
}

/// The client module for `doc` (an AsyncAPI 3.0 document of [`crate::documents::asyncapi::document`]).
pub fn generate(doc: &Value, lang: Lang) -> String {
    let api = Api::read(doc);
    match lang {
        Lang::Typescript => typescript::render(&api),
        Lang::Python => python::render(&api),
    }
}

struct Api {
    title: String,
    version: String,
    /// `components.schemas`, in document order.
    schemas: Vec<(String, Value)>,
    channels: Vec<Channel>,
}

struct Channel {
    /// A name for identifiers, from the channel id: `ws_chat_room` → `WsChatRoom`.
    name: String,
    address: String,
    params: Vec<String>,
    from_client: Vec<Frame>,
    from_server: Vec<Frame>,
}

struct Frame {
    action: String,
    summary: Option<String>,
    /// The JSON Schema of the whole frame (`action`, `payload`, `ref`).
    schema: Value,
}

impl Api {
    fn read(doc: &Value) -> Api {
        let schemas = doc["components"]["schemas"]
            .as_object()
            .map(|s| s.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        let mut channels = Vec::new();
        for (id, channel) in doc["channels"].as_object().into_iter().flatten() {
            let mut from_client = Vec::new();
            let mut from_server = Vec::new();
            let own = format!("#/channels/{id}");
            for op in doc["operations"].as_object().into_iter().flat_map(|ops| ops.values()) {
                if op["channel"]["$ref"].as_str() != Some(&own) {
                    continue;
                }
                let (sent, replies) = match op["action"].as_str() {
                    Some("receive") => (&mut from_client, op["reply"]["messages"].as_array()),
                    _ => (&mut from_server, None),
                };
                for message in op["messages"].as_array().into_iter().flatten() {
                    push_frame(sent, doc, message);
                }
                for message in replies.into_iter().flatten() {
                    push_frame(&mut from_server, doc, message);
                }
            }
            let params = channel["parameters"].as_object().map(|p| p.keys().cloned().collect()).unwrap_or_default();
            channels.push(Channel {
                name: pascal(id),
                address: channel["address"].as_str().unwrap_or_default().to_owned(),
                params,
                from_client,
                from_server,
            });
        }
        Api {
            title: doc["info"]["title"].as_str().unwrap_or_default().to_owned(),
            version: doc["info"]["version"].as_str().unwrap_or_default().to_owned(),
            schemas,
            channels,
        }
    }
}

fn push_frame(frames: &mut Vec<Frame>, doc: &Value, reference: &Value) {
    let message = match reference["$ref"].as_str().and_then(|r| r.strip_prefix('#')) {
        Some(pointer) => doc.pointer(pointer),
        None => Some(reference),
    };
    let Some(message) = message else { return };
    let action = message["name"].as_str().unwrap_or_default().to_owned();
    if frames.iter().any(|f| f.action == action) {
        return;
    }
    frames.push(Frame {
        action,
        summary: message["summary"].as_str().map(str::to_owned),
        schema: message["payload"].clone(),
    });
}

/// `echo.client.user_message` → `EchoClientUserMessage`.
fn pascal(text: &str) -> String {
    let mut out = String::new();
    for word in text.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()) {
        let mut chars = word.chars();
        out.extend(chars.next().map(|c| c.to_ascii_uppercase()));
        out.push_str(chars.as_str());
    }
    if out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

/// The component a `$ref` names: `#/components/schemas/X` → `X`.
fn component_of(reference: &str) -> Option<&str> {
    reference.strip_prefix("#/components/schemas/")
}

/// A JSON string literal, which both TypeScript and Python read as a string.
fn quoted(text: &str) -> String {
    Value::from(text).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_pascal_case_identifiers() {
        assert_eq!(pascal("echo.client.user_message"), "EchoClientUserMessage");
        assert_eq!(pascal("ws_chat_room"), "WsChatRoom");
        assert_eq!(pascal("1st"), "_1st");
    }
}
