//! Typed clients generated from the AsyncAPI document (`broker client --lang ...`), so a front end
//! gets compile-time checked frames, as Chanx's client generator gives its users.
//!
//! Both generators read the same model, from the typed document: its component schemas, and per
//! channel the frames clients send (messages of `receive` operations) and the frames they get
//! (messages of `send` operations and of replies).

mod python;
mod typescript;

use serde_json::Value;

use crate::documents::asyncapi::model::{Action, Dangling, Document, Reference};

/// A client language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Lang {
    Typescript,
    Python,
}

/// The client module for `doc` (built by [`crate::documents::asyncapi::document`]); `Err` names a
/// reference that leads nowhere, rather than generating a client without its frames.
pub fn generate(doc: &Document, lang: Lang) -> Result<String, Dangling> {
    let api = Api::read(doc)?;
    Ok(match lang {
        Lang::Typescript => typescript::render(&api),
        Lang::Python => python::render(&api),
    })
}

struct Api {
    title: String,
    version: String,
    /// `components.schemas`, by key.
    schemas: Vec<(String, Value)>,
    channels: Vec<Channel>,
}

struct Channel {
    /// A name for identifiers, from the path: `/ws/chat/{room}` → `WsChatRoom`.
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
    fn read(doc: &Document) -> Result<Api, Dangling> {
        let schemas = doc.components.schemas.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        let mut channels = Vec::new();
        for (id, channel) in &doc.channels {
            let mut from_client = Vec::new();
            let mut from_server = Vec::new();
            for op in doc.operations_of(id) {
                let (sent, replies) = match op.action {
                    Action::Receive => (&mut from_client, op.reply.as_ref().map(|r| r.messages.as_slice())),
                    Action::Send => (&mut from_server, None),
                };
                for message in &op.messages {
                    push_frame(sent, doc, message)?;
                }
                for message in replies.into_iter().flatten() {
                    push_frame(&mut from_server, doc, message)?;
                }
            }
            channels.push(Channel {
                name: pascal(&path_words(&channel.address)),
                address: channel.address.clone(),
                params: channel.parameters.keys().cloned().collect(),
                from_client,
                from_server,
            });
        }
        Ok(Api { title: doc.info.title.clone(), version: doc.info.version.clone(), schemas, channels })
    }
}

fn push_frame(frames: &mut Vec<Frame>, doc: &Document, reference: &Reference) -> Result<(), Dangling> {
    let message = doc.message(reference)?;
    if frames.iter().any(|f| f.action == message.name) {
        return Ok(());
    }
    frames.push(Frame {
        action: message.name.clone(),
        summary: message.summary.clone(),
        schema: doc.schema(&message.payload)?.clone(),
    });
    Ok(())
}

/// `/ws/chat/{room}` → `ws_chat_room`: the generated clients' names stay those of the path, so a
/// route renamed in broker.toml does not rename its client.
fn path_words(path: &str) -> String {
    let words: Vec<&str> = path.split(|c: char| !c.is_ascii_alphanumeric()).filter(|word| !word.is_empty()).collect();
    if words.is_empty() { "root".to_owned() } else { words.join("_") }
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
        assert_eq!(path_words("/ws/chat/{room}"), "ws_chat_room");
        assert_eq!(path_words("/"), "root");
    }
}
