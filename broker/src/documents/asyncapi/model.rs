//! The AsyncAPI 3.0 document as types: what [`super::document`] builds, what `/asyncapi*` serves and
//! what `codegen` reads. Only the parts the broker writes are modelled; payload schemas are JSON
//! Schemas (draft-07) and stay `Value`s. A key renamed here is renamed for every reader at once.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The root object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Document {
    pub asyncapi: String,
    pub info: Info,
    pub default_content_type: String,
    pub servers: BTreeMap<String, Server>,
    /// By route name (`Channel::title` too).
    pub channels: BTreeMap<String, Channel>,
    pub operations: BTreeMap<String, Operation>,
    pub components: Components,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Info {
    pub title: String,
    pub version: String,
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Server {
    /// `host:port`, the address bound.
    pub host: String,
    pub protocol: String,
    pub description: String,
}

/// A route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Channel {
    /// The route's path pattern, `/ws/chat/{room}`.
    pub address: String,
    /// The route's name: an identifier, which Chanx's client generator makes a module of.
    pub title: String,
    pub description: String,
    /// `client.<action>` and `server.<action>`, each a reference into `components.messages`.
    pub messages: BTreeMap<String, Reference>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub parameters: BTreeMap<String, Parameter>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<Tag>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Parameter {
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tag {
    pub name: String,
}

/// Who acts, from the broker's side, as Chanx writes it: it `receive`s what clients send (with a
/// `reply` where a handler answers) and `send`s what it pushes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Send,
    Receive,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Operation {
    pub action: Action,
    pub channel: Reference,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// References to the channel's messages (`#/channels/<name>/messages/<key>`).
    pub messages: Vec<Reference>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<Reply>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub security: Vec<Reference>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    pub channel: Reference,
    pub messages: Vec<Reference>,
}

/// `{"$ref": "#/..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reference {
    #[serde(rename = "$ref")]
    pub target: String,
}

impl Reference {
    pub fn channel(name: &str) -> Reference {
        Reference { target: format!("#/channels/{name}") }
    }

    pub fn channel_message(channel: &str, key: &str) -> Reference {
        Reference { target: format!("#/channels/{channel}/messages/{key}") }
    }

    pub fn message(key: &str) -> Reference {
        Reference { target: format!("#/components/messages/{key}") }
    }

    pub fn schema(key: &str) -> Reference {
        Reference { target: format!("#/components/schemas/{key}") }
    }

    /// The reference as a JSON Schema `$ref` object.
    pub fn to_schema(&self) -> Value {
        serde_json::json!({"$ref": self.target})
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Components {
    /// Whole frames, keyed by their schema's title (`UserMessage`).
    pub messages: BTreeMap<String, Message>,
    /// Frame and payload schemas, titled (the key is the title), as Chanx's generator names classes.
    pub schemas: BTreeMap<String, Value>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub security_schemes: BTreeMap<String, SecurityScheme>,
    pub correlation_ids: BTreeMap<String, CorrelationId>,
}

/// One frame.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Message {
    /// The frame's action (for frames sent outside the envelope, the name the plugin gives them).
    pub name: String,
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A reference to the frame's schema in `components.schemas`.
    pub payload: Reference,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub correlation_id: Option<Reference>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CorrelationId {
    pub description: String,
    pub location: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SecurityScheme {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bearer_format: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none", rename = "in")]
    pub location: Option<String>,
    pub description: String,
}

/// A reference that points at nothing in the document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the AsyncAPI document has no {0}")]
pub struct Dangling(pub String);

impl Document {
    /// The component message a channel's or operation's reference leads to.
    pub fn message(&self, reference: &Reference) -> Result<&Message, Dangling> {
        let dangling = || Dangling(reference.target.clone());
        let key = match reference.target.strip_prefix("#/channels/") {
            Some(rest) => {
                let (channel, key) = rest.split_once("/messages/").ok_or_else(dangling)?;
                let inner = self.channels.get(channel).and_then(|c| c.messages.get(key)).ok_or_else(dangling)?;
                inner.target.strip_prefix("#/components/messages/").ok_or_else(dangling)?
            }
            None => reference.target.strip_prefix("#/components/messages/").ok_or_else(dangling)?,
        };
        self.components.messages.get(key).ok_or_else(dangling)
    }

    /// The component schema `reference` names.
    pub fn schema(&self, reference: &Reference) -> Result<&Value, Dangling> {
        let key = reference.target.strip_prefix("#/components/schemas/");
        key.and_then(|key| self.components.schemas.get(key)).ok_or_else(|| Dangling(reference.target.clone()))
    }

    /// The operations on channel `name`.
    pub fn operations_of<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Operation> + 'a {
        let own = Reference::channel(name);
        self.operations.values().filter(move |op| op.channel == own)
    }

    /// The document as YAML.
    pub fn to_yaml(&self) -> String {
        // Plain data with string keys: it always serializes.
        serde_yaml_ng::to_string(self).unwrap_or_else(|e| format!("# cannot render YAML: {e}\n"))
    }
}

/// The document as compact JSON.
impl fmt::Display for Document {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = serde_json::to_string(self).map_err(|_| fmt::Error)?;
        f.write_str(&text)
    }
}
