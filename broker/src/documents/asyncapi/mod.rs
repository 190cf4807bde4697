//! The AsyncAPI 3.0 document of a configuration: one channel per route, with the messages its
//! plugin accepts and sends (from the plugin's manifest), the broker's own `ping`/`pong`/`error`,
//! and an operation per message, with a reply where a handler answers.
//!
//! The document describes the broker as the application: it *receives* what clients send and
//! *sends* what clients receive. A channel's messages are keyed by who sends them:
//! `client.<action>` and `server.<action>`. Payload schemas are the plugins' own (draft-07), kept
//! once in `components.schemas`; the messages are whole frames (`action`, `payload`, `ref`), but
//! for the frames a plugin sends outside that envelope (`raw-frames`), whose schema is the frame.

pub mod html;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use serde_json::{Map, Value, json};

use crate::config::{AuthMode, Config, Route};
use crate::plugin::LoadedPlugin;
use crate::plugin::host::broker::plugin::types::ActionSpec;

/// The plugins a document is built from, by name in broker.toml.
pub type Plugins = BTreeMap<String, Arc<LoadedPlugin>>;

/// The AsyncAPI 3.0 document of `config` served by `plugins` on `listen` (the address bound, which
/// `server.listen` does not name when it asks for port 0).
pub fn document(config: &Config, plugins: &Plugins, listen: std::net::SocketAddr) -> Value {
    let mut doc = Builder::default();
    for spec in builtin_schemas() {
        doc.schemas.insert(spec.0.to_owned(), spec.1);
    }
    let mut channel_ids = HashSet::new();
    for route in &config.routes {
        let id = unique(channel_id(&route.path), &mut channel_ids);
        doc.channel(&id, route, plugins.get(&route.plugin).map(Arc::as_ref));
    }
    let mut components = json!({"schemas": doc.schemas});
    if config.routes.iter().any(|route| route.auth != AuthMode::None) {
        components["securitySchemes"] = security_schemes(config);
    }
    let plugin_list: Vec<String> =
        plugins.iter().map(|(name, p)| format!("`{name}` {}", p.manifest().version)).collect();
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "Realtime broker",
            "version": env!("CARGO_PKG_VERSION"),
            "description": format!(
                "The WebSocket routes of {}, served by the plugins {}. Every frame is a JSON object \
                 `{{\"action\": ..., \"payload\": ..., \"ref\": ...}}`; a frame that cannot be handled is \
                 answered with an `error` frame listing each problem as pydantic does (`type`, `loc`, `msg`).",
                // The file's name only: its absolute path tells a visitor how the host is laid out.
                config.source.file_name().map_or_else(|| "broker.toml".into(), |name| name.to_string_lossy()),
                if plugin_list.is_empty() { "(none)".to_owned() } else { plugin_list.join(", ") },
            ),
        },
        "defaultContentType": "application/json",
        "servers": {
            "broker": {"host": listen.to_string(), "protocol": "ws", "description": "The broker's listener"},
        },
        "channels": doc.channels,
        "operations": doc.operations,
        "components": components,
    })
}

#[derive(Default)]
struct Builder {
    channels: Map<String, Value>,
    operations: Map<String, Value>,
    schemas: Map<String, Value>,
}

impl Builder {
    fn channel(&mut self, id: &str, route: &Route, plugin: Option<&LoadedPlugin>) {
        let mut messages = Map::new();
        let mut operations = Vec::new();
        let channel_ref = json!({"$ref": format!("#/channels/{id}")});
        let message_ref = |key: &str| json!({"$ref": format!("#/channels/{id}/messages/{key}")});

        // What clients send: the plugin's actions and ping.
        messages.insert("client.ping".into(), builtin_message("ping"));
        messages.insert("server.pong".into(), builtin_message("pong"));
        messages.insert("server.error".into(), builtin_message("error"));
        operations.push((
            format!("{id}.receive.ping"),
            json!({
                "action": "receive",
                "channel": channel_ref,
                "summary": "Ping the broker; it answers with pong itself",
                "messages": [message_ref("client.ping")],
                "reply": {"channel": channel_ref, "messages": [message_ref("server.pong"), message_ref("server.error")]},
            }),
        ));
        operations.push((
            format!("{id}.send.error"),
            json!({
                "action": "send",
                "channel": channel_ref,
                "summary": "What the broker answers a frame it cannot handle with",
                "messages": [message_ref("server.error")],
            }),
        ));
        let mut description = format!("Handled by the plugin `{}`.", route.plugin);
        let auth_note = match route.auth {
            AuthMode::None => "",
            AuthMode::Optional => {
                " A token is optional: with a valid one the connection is the token's subject; a bad one \
                 is refused with HTTP 401."
            }
            AuthMode::Required => " A valid token is required; without one the handshake is refused with HTTP 401.",
        };
        let mut tags = Vec::new();
        if let Some(plugin) = plugin {
            let manifest = plugin.manifest();
            if let Some(text) = &manifest.description {
                description = format!("{text}\n\nHandled by the plugin `{}` {}.", route.plugin, manifest.version);
            }
            tags = manifest.tags.iter().map(|t| json!({"name": t})).collect();
            for spec in &manifest.sends {
                let key = format!("server.{}", spec.name);
                let schema = self.payload_schema(&route.plugin, "server", spec);
                messages.insert(key.clone(), frame_message(spec, schema, Direction::Send { stamped: route.metadata }));
                operations.push((
                    format!("{id}.send.{}", spec.name),
                    operation("send", &channel_ref, spec, vec![message_ref(&key)], None),
                ));
            }
            for spec in plugin.raw_frames() {
                let key = format!("server.{}", spec.name);
                let schema = self.payload_schema(&route.plugin, "server", spec);
                messages.insert(key.clone(), raw_message(spec, schema));
                operations.push((
                    format!("{id}.send.{}", spec.name),
                    operation("send", &channel_ref, spec, vec![message_ref(&key)], None),
                ));
            }
            for spec in &manifest.accepts {
                let key = format!("client.{}", spec.name);
                let schema = self.payload_schema(&route.plugin, "client", spec);
                let required = plugin.payload_required(&spec.name);
                messages.insert(
                    key.clone(),
                    frame_message(spec, schema, Direction::Receive { payload_required: required }),
                );
                let mut replies: Vec<Value> = plugin
                    .replies(&spec.name)
                    .iter()
                    .filter(|reply| messages.contains_key(&format!("server.{reply}")))
                    .map(|reply| message_ref(&format!("server.{reply}")))
                    .collect();
                replies.push(message_ref("server.error"));
                let reply = json!({"channel": channel_ref, "messages": replies});
                operations.push((
                    format!("{id}.receive.{}", spec.name),
                    operation("receive", &channel_ref, spec, vec![message_ref(&key)], Some(reply)),
                ));
            }
        } else {
            description.push_str(" The plugin is not loaded, so its messages are unknown.");
        }
        description.push_str(auth_note);
        if route.auth == AuthMode::Required {
            let security = json!([
                {"$ref": "#/components/securitySchemes/bearer"},
                {"$ref": "#/components/securitySchemes/token_query"},
            ]);
            for (_, op) in &mut operations {
                op["security"] = security.clone();
            }
        }
        let parameters: Map<String, Value> = route_parameters(&route.path)
            .into_iter()
            .map(|name| {
                let mut text = format!("The `{name}` segment of the path.");
                if let Some(rule) = route.params.get(&name) {
                    if let Some(pattern) = &rule.pattern {
                        text.push_str(&format!(" Must match `^{pattern}$`."));
                    }
                    if let Some(max) = rule.max_length {
                        text.push_str(&format!(" At most {max} characters."));
                    }
                    text.push_str(" Otherwise the upgrade is refused with HTTP 400.");
                }
                (name, json!({"description": text}))
            })
            .collect();
        let mut channel = json!({
            "address": route.path,
            "title": route.path,
            "description": description,
            "messages": messages,
        });
        if !parameters.is_empty() {
            channel["parameters"] = Value::Object(parameters);
        }
        if !tags.is_empty() {
            channel["tags"] = Value::Array(tags);
        }
        self.channels.insert(id.to_owned(), channel);
        self.operations.extend(operations);
    }

    /// Puts a plugin's payload schema in `components.schemas` (once) as `<plugin>.<from>.<action>`,
    /// `from` being who sends it (`client` or `server`), and returns a reference to it; `None` when
    /// the plugin publishes no schema.
    fn payload_schema(&mut self, plugin: &str, from: &str, spec: &ActionSpec) -> Option<Value> {
        let text = spec.payload_schema.as_deref()?;
        let key = component_key(&format!("{plugin}.{from}.{}", spec.name));
        if !self.schemas.contains_key(&key) {
            // The broker refused plugins whose accepted schemas are not JSON; a sent schema that
            // is not is documented as unknown rather than failing the document.
            let schema = serde_json::from_str(text).unwrap_or_else(|_| json!({}));
            let schema = hoist_definitions(schema, &key, &mut self.schemas);
            self.schemas.insert(key.clone(), schema);
        }
        Some(json!({"$ref": format!("#/components/schemas/{key}")}))
    }
}

/// How a client presents its token (see `auth`): a header, or the query for browsers.
fn security_schemes(config: &Config) -> Value {
    let mut algorithms = Vec::new();
    if config.auth.hs256_secret.is_some() || config.auth.hs256_secret_env.is_some() {
        algorithms.push("HS256");
    }
    if config.auth.rs256_public_key.is_some() {
        algorithms.push("RS256");
    }
    let mut checks = format!("A JWT signed with {}; `exp` and `sub` are required", algorithms.join(" or "));
    if !config.auth.audience.is_empty() {
        checks.push_str(&format!(", `aud` must be one of {}", config.auth.audience.join(", ")));
    }
    if !config.auth.issuer.is_empty() {
        checks.push_str(&format!(", `iss` one of {}", config.auth.issuer.join(", ")));
    }
    json!({
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "JWT",
            "description": format!("{checks}. Sent on the handshake as `Authorization: Bearer <token>`, or by browsers as the subprotocols `bearer, <token>`."),
        },
        "token_query": {
            "type": "httpApiKey",
            "name": "token",
            "in": "query",
            "description": format!("{checks}. Sent as the `token` query parameter of the handshake."),
        },
    })
}

/// Adds the action's summary and description, where the plugin gave them.
fn with_docs(value: &mut Value, spec: &ActionSpec) {
    if let Some(summary) = &spec.summary {
        value["summary"] = summary.clone().into();
    }
    if let Some(description) = &spec.description {
        value["description"] = description.clone().into();
    }
}

enum Direction {
    Receive { payload_required: bool },
    Send { stamped: bool },
}

fn operation(action: &str, channel: &Value, spec: &ActionSpec, messages: Vec<Value>, reply: Option<Value>) -> Value {
    let mut op = json!({"action": action, "channel": channel, "messages": messages});
    with_docs(&mut op, spec);
    if let Some(reply) = reply {
        op["reply"] = reply;
    }
    op
}

/// A frame around a plugin's payload.
fn frame_message(spec: &ActionSpec, payload: Option<Value>, direction: Direction) -> Value {
    let payload = payload.unwrap_or_else(|| json!({"description": "Any JSON value: the plugin publishes no schema"}));
    let mut properties = json!({
        "action": {"type": "string", "const": spec.name},
        "payload": payload,
        "ref": {"type": "string", "description": "A correlation id: the reply to this frame carries it back"},
    });
    let mut required = vec!["action"];
    match direction {
        Direction::Receive { payload_required } => {
            if payload_required {
                required.push("payload");
            }
        }
        Direction::Send { stamped } => {
            required.push("payload");
            properties["ref"]["description"] = "The `ref` of the request this frame answers".into();
            if stamped {
                properties["message_id"] = json!({"type": "string", "format": "uuid"});
                properties["timestamp"] = json!({"type": "string", "format": "date-time"});
                properties["sender"] = json!({"type": "string", "description": "The sending connection, or `api`"});
                required.extend(["message_id", "timestamp", "sender"]);
            }
        }
    }
    let mut message = json!({
        "name": spec.name,
        "title": spec.name,
        "payload": {"type": "object", "properties": properties, "required": required},
    });
    with_docs(&mut message, spec);
    message
}

/// A frame a plugin sends as it is: the schema is the whole frame's.
fn raw_message(spec: &ActionSpec, schema: Option<Value>) -> Value {
    let mut message = json!({
        "name": spec.name,
        "title": spec.name,
        "payload": schema.unwrap_or_else(|| json!({"type": "object"})),
    });
    with_docs(&mut message, spec);
    message
}

/// The broker's own messages, the same on every route.
fn builtin_message(name: &str) -> Value {
    let (summary, payload, required): (&str, Value, &[&str]) = match name {
        "ping" => ("Asks the broker whether it is there", json!({"type": "null"}), &["action"]),
        "pong" => ("The broker's answer to ping", json!({"type": "null"}), &["action", "payload"]),
        _ => (
            "The frame could not be handled: one entry per problem",
            json!({"$ref": "#/components/schemas/broker.problems"}),
            &["action", "payload"],
        ),
    };
    json!({
        "name": name,
        "title": name,
        "summary": summary,
        "payload": {
            "type": "object",
            "properties": {
                "action": {"type": "string", "const": name},
                "payload": payload,
                "ref": {"type": "string"},
            },
            "required": required,
        },
    })
}

fn builtin_schemas() -> [(&'static str, Value); 1] {
    [(
        "broker.problems",
        json!({
            "type": "array",
            "description": "pydantic-style validation errors",
            "items": {
                "type": "object",
                "properties": {
                    "type": {"type": "string", "description": "The kind of problem: `missing`, `string_type`, `union_tag_invalid`, `plugin_error`, ..."},
                    "loc": {"type": "array", "items": {"type": ["string", "integer"]}, "description": "Where: the action, then `payload` and the path in it"},
                    "msg": {"type": "string", "description": "A sentence for a person"},
                },
                "required": ["type", "loc", "msg"],
            },
        }),
    )]
}

/// Moves a schema's `definitions` (and `$defs`) into `components.schemas` as `<key>.<name>`,
/// rewriting its references: embedded in the document, `#/definitions/X` would point at the
/// document's root instead of the schema's.
fn hoist_definitions(mut schema: Value, key: &str, components: &mut Map<String, Value>) -> Value {
    let mut renamed = Vec::new();
    if let Value::Object(object) = &mut schema {
        object.remove("$schema");
        for section in ["definitions", "$defs"] {
            if let Some(Value::Object(defs)) = object.remove(section) {
                for (name, def) in defs {
                    let target = component_key(&format!("{key}.{name}"));
                    renamed.push((
                        format!("#/{section}/{name}"),
                        format!("#/components/schemas/{target}"),
                        target,
                        def,
                    ));
                }
            }
        }
    }
    let rewrites: Vec<(String, String)> = renamed.iter().map(|(from, to, _, _)| (from.clone(), to.clone())).collect();
    for (_, _, target, mut def) in renamed {
        rewrite_refs(&mut def, &rewrites);
        components.insert(target, def);
    }
    rewrite_refs(&mut schema, &rewrites);
    schema
}

fn rewrite_refs(value: &mut Value, rewrites: &[(String, String)]) {
    match value {
        Value::Object(object) => {
            for (name, child) in object.iter_mut() {
                if name == "$ref" {
                    if let Value::String(target) = child
                        && let Some((_, to)) = rewrites.iter().find(|(from, _)| from == target)
                    {
                        *target = to.clone();
                    }
                } else {
                    rewrite_refs(child, rewrites);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|item| rewrite_refs(item, rewrites)),
        _ => {}
    }
}

/// AsyncAPI keys are `[A-Za-z0-9._-]+`.
fn component_key(text: &str) -> String {
    text.chars().map(|c| if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') { c } else { '_' }).collect()
}

/// `/ws/chat/{room}` → `ws_chat_room`.
fn channel_id(path: &str) -> String {
    let words: Vec<&str> = path.split(|c: char| !c.is_ascii_alphanumeric()).filter(|word| !word.is_empty()).collect();
    if words.is_empty() { "root".to_owned() } else { words.join("_") }
}

fn unique(id: String, taken: &mut HashSet<String>) -> String {
    let mut candidate = id.clone();
    let mut n = 2;
    while !taken.insert(candidate.clone()) {
        candidate = format!("{id}_{n}");
        n += 1;
    }
    candidate
}

/// The `{name}` parameters of a route pattern, in order (`{*rest}` as `rest`).
fn route_parameters(path: &str) -> Vec<String> {
    path.split('{')
        .skip(1)
        .filter_map(|part| part.split_once('}').map(|(name, _)| name.trim_start_matches('*').to_owned()))
        .collect()
}

/// The document as YAML.
pub fn to_yaml(document: &Value) -> String {
    // A `Value` always serializes.
    serde_yaml_ng::to_string(document).unwrap_or_else(|e| format!("# cannot render YAML: {e}\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_ids_and_parameters_come_from_the_pattern() {
        assert_eq!(channel_id("/ws/chat/{room}"), "ws_chat_room");
        assert_eq!(channel_id("/"), "root");
        assert_eq!(route_parameters("/ws/{org}/chat/{room}"), vec!["org", "room"]);
        assert_eq!(route_parameters("/files/{*rest}"), vec!["rest"]);
        let mut taken = HashSet::new();
        assert_eq!(unique("a".into(), &mut taken), "a");
        assert_eq!(unique("a".into(), &mut taken), "a_2");
    }

    #[test]
    fn definitions_move_to_components_with_their_references() {
        let schema = json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "properties": {"tree": {"$ref": "#/definitions/Tree"}},
            "definitions": {"Tree": {"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#/definitions/Tree"}}}}},
        });
        let mut components = Map::new();
        let schema = hoist_definitions(schema, "p.client.a", &mut components);
        assert_eq!(schema["properties"]["tree"]["$ref"], "#/components/schemas/p.client.a.Tree");
        assert!(schema.get("$schema").is_none() && schema.get("definitions").is_none());
        let tree = &components["p.client.a.Tree"];
        assert_eq!(tree["properties"]["kids"]["items"]["$ref"], "#/components/schemas/p.client.a.Tree");
    }
}
