//! The AsyncAPI 3.0 document of a configuration ([`model::Document`]): one channel per route,
//! named by the route's `name`, with the messages its plugin accepts and sends (from the plugin's
//! manifest), the broker's own `ping`/`pong`/`error`, and an operation per message, with a reply
//! where a handler answers.
//!
//! It is shaped as Chanx writes its documents, so `chanx generate-client` reads it: the broker is
//! the application, which *receives* what clients send and *sends* what clients receive; a
//! channel's messages (`client.<action>`, `server.<action>`) are references into
//! `components.messages`, and each message's payload is a reference to the frame's schema in
//! `components.schemas`. Every schema is titled, its key being its title, since Chanx's generator
//! makes a class of each title: frames are `<Action>Message` (`UserMessage`, `PongMessage`), the
//! plugins' payload schemas keep their own title unless a frame has it (then `<Action>Payload`).
//! The frames are whole (`action`, `payload`, `ref`), but for the frames a plugin sends outside
//! that envelope (`raw-frames`), whose schema is the frame.

pub mod html;
pub mod model;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use serde_json::{Value, json};

use crate::config::{AuthMode, Config, Route};
use crate::plugin::LoadedPlugin;
use crate::plugin::host::broker::plugin::types::ActionSpec;
use model::{
    Action, Channel, Components, CorrelationId, Document, Info, Message, Operation, Parameter, Reference, Reply,
    SecurityScheme, Server, Tag,
};

/// The plugins a document is built from, by name in broker.toml.
pub type Plugins = BTreeMap<String, Arc<LoadedPlugin>>;

/// The schema of the broker's `error` payload, which the TypeScript client names `BrokerProblems`.
pub const PROBLEMS: &str = "BrokerProblems";

/// The AsyncAPI 3.0 document of `config` served by `plugins` on `listen` (the address bound, which
/// `server.listen` does not name when it asks for port 0).
pub fn document(config: &Config, plugins: &Plugins, listen: std::net::SocketAddr) -> Document {
    let mut doc = Builder::default();
    doc.builtins();
    for (route, name) in config.routes.iter().zip(channel_names(&config.routes)) {
        doc.channel(&name, route, plugins.get(&route.plugin).map(Arc::as_ref));
        if config.plugins.get(&route.plugin).is_some_and(|plugin| plugin.history.is_some()) {
            doc.recovery(&name, route.auth == AuthMode::Required);
        }
    }
    let security_schemes = if config.routes.iter().any(|route| route.auth != AuthMode::None) {
        security_schemes(config)
    } else {
        BTreeMap::new()
    };
    let plugin_list: Vec<String> =
        plugins.iter().map(|(name, p)| format!("`{name}` {}", p.manifest().version)).collect();
    let correlation = CorrelationId {
        description: "A reply carries the `ref` of the request it answers.".into(),
        location: "$message.payload#/ref".into(),
    };
    Document {
        asyncapi: "3.0.0".into(),
        info: Info {
            title: "Realtime broker".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: format!(
                "The WebSocket routes of {}, served by the plugins {}. Every frame is a JSON object \
                 `{{\"action\": ..., \"payload\": ..., \"ref\": ...}}`; a frame that cannot be handled is \
                 answered with an `error` frame listing each problem as pydantic does (`type`, `loc`, `msg`).",
                // The file's name only: its absolute path tells a visitor how the host is laid out.
                config.source.file_name().map_or_else(|| "broker.toml".into(), |name| name.to_string_lossy()),
                if plugin_list.is_empty() { "(none)".to_owned() } else { plugin_list.join(", ") },
            ),
        },
        default_content_type: "application/json".into(),
        servers: BTreeMap::from([(
            "broker".to_owned(),
            Server { host: listen.to_string(), protocol: "ws".into(), description: "The broker's listener".into() },
        )]),
        channels: doc.channels,
        operations: doc.operations,
        components: Components {
            messages: doc.messages,
            schemas: doc.schemas,
            security_schemes,
            correlation_ids: BTreeMap::from([("ref".to_owned(), correlation)]),
        },
    }
}

/// Each route's channel name: its `name`, or one from its path (`/ws/chat/{room}` → `chat`: the
/// fixed segments after a leading `ws`), else its plugin's; a derived name already taken gets `_2`.
pub fn channel_names(routes: &[Route]) -> Vec<String> {
    let mut taken: HashSet<String> = routes.iter().filter_map(|r| r.name.clone()).collect();
    routes
        .iter()
        .map(|route| match &route.name {
            Some(name) => name.clone(),
            None => unique(derived_name(route), &mut taken),
        })
        .collect()
}

fn derived_name(route: &Route) -> String {
    let mut words: Vec<&str> = route.path.split('/').filter(|s| !s.is_empty() && !s.starts_with('{')).collect();
    if words.first() == Some(&"ws") {
        words.remove(0);
    }
    let text = if words.is_empty() { route.plugin.clone() } else { words.join("_") };
    let mut name: String = text.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    if !name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_') {
        name.insert(0, '_');
    }
    name
}

#[derive(Default)]
struct Builder {
    channels: BTreeMap<String, Channel>,
    operations: BTreeMap<String, Operation>,
    messages: BTreeMap<String, Message>,
    schemas: BTreeMap<String, Value>,
}

/// What `ref` is, in every frame's schema: a frame a client sends and the same frame received are one
/// schema (one class in Chanx's generated client) when their payloads agree.
const REF: &str = "A correlation id: a request's reply carries the request's `ref`";

/// The recovery frames of routes whose plugin keeps group history.
const RECOVER: &str = "RecoverMessage";
const RECOVERED: &str = "RecoveredMessage";

/// The broker's own frames, the same on every route: component keys of their messages.
const PING: &str = "PingMessage";
const PONG: &str = "PongMessage";
const ERROR: &str = "ErrorMessage";

impl Builder {
    fn builtins(&mut self) {
        self.schemas.insert(PROBLEMS.into(), problems_schema());
        for (action, summary, payload, required) in [
            ("ping", "Asks the broker whether it is there", json!({"type": "null"}), &["action"][..]),
            ("pong", "The broker's answer to ping", json!({"type": "null"}), &["action", "payload"][..]),
            (
                "error",
                "The frame could not be handled: one entry per problem",
                Reference::schema(PROBLEMS).to_schema(),
                &["action", "payload"][..],
            ),
        ] {
            self.broker_frame(action, summary, payload, required);
        }
    }

    /// A frame of the broker's own (`ping`, `error`, `recover`, ...): its titled schema and its
    /// message, with `ref` as the correlation id.
    fn broker_frame(&mut self, action: &str, summary: &str, payload: Value, required: &[&str]) {
        let schema = json!({
            "type": "object",
            "description": summary,
            "properties": {
                "action": {"type": "string", "const": action},
                "payload": payload,
                "ref": {"type": "string", "description": REF},
            },
            "required": required,
        });
        let key = self.add_schema(vec![frame_title(action)], schema);
        self.add_message(Message {
            name: action.into(),
            title: key.clone(),
            summary: Some(summary.into()),
            description: None,
            payload: Reference::schema(&key),
            correlation_id: Some(Reference { target: "#/components/correlationIds/ref".into() }),
        });
    }

    /// `recover` and `recovered` on a channel whose groups keep history (README, "History and
    /// recovery"); their schemas and messages are added once.
    fn recovery(&mut self, name: &str, secured: bool) {
        if !self.messages.contains_key(RECOVER) {
            let position = json!({
                "type": "object",
                "properties": {
                    "group": {"type": "string", "minLength": 1, "maxLength": 256},
                    "epoch": {"type": "string", "maxLength": 64},
                    "offset": {"type": "integer", "minimum": 0},
                },
                "required": ["group", "epoch", "offset"],
                "additionalProperties": false,
            });
            let frames = [
                (
                    "recover",
                    "Names where the client was in groups with history; each is replayed when its plugin joins it there",
                    json!({"type": "object", "properties": {"positions": {"type": "array", "items": position}}, "required": ["positions"]}),
                ),
                (
                    "recovered",
                    "What a recovery found, before the frames it replays: `recovered: false` means frames are gone",
                    json!({"type": "object", "properties": {
                        "group": {"type": "string"},
                        "recovered": {"type": "boolean"},
                        "epoch": {"type": "string"},
                        "offset": {"type": "integer", "minimum": 0},
                        "replayed": {"type": "integer", "minimum": 0},
                    }, "required": ["group", "recovered", "epoch", "offset", "replayed"]}),
                ),
            ];
            for (action, summary, payload) in frames {
                self.broker_frame(action, summary, payload, &["action", "payload"]);
            }
        }
        let Some(channel) = self.channels.get_mut(name) else { return };
        channel.messages.insert("client.recover".to_owned(), Reference::message(RECOVER));
        channel.messages.insert("server.recovered".to_owned(), Reference::message(RECOVERED));
        let channel_ref = Reference::channel(name);
        let message_ref = |key: &str| Reference::channel_message(name, key);
        let reply = Reply { channel: channel_ref.clone(), messages: vec![message_ref("server.error")] };
        let operations = [
            (
                Action::Receive,
                "recover",
                message_ref("client.recover"),
                Some(reply),
                "Recover from positions in groups with history (or `?recover=` on the handshake); answered only on error",
            ),
            (
                Action::Send,
                "recovered",
                message_ref("server.recovered"),
                None,
                "Sent when the plugin joins a group the client named a position in, before the frames it missed",
            ),
        ];
        for (action, verb, message, reply, summary) in operations {
            let direction = if action == Action::Receive { "receive" } else { "send" };
            self.operations.insert(
                format!("{name}.{direction}.{verb}"),
                Operation {
                    action,
                    channel: channel_ref.clone(),
                    summary: Some(summary.into()),
                    description: None,
                    messages: vec![message],
                    reply,
                    security: if secured {
                        vec![
                            Reference { target: "#/components/securitySchemes/bearer".into() },
                            Reference { target: "#/components/securitySchemes/token_query".into() },
                        ]
                    } else {
                        Vec::new()
                    },
                },
            );
        }
    }

    fn channel(&mut self, name: &str, route: &Route, plugin: Option<&LoadedPlugin>) {
        let mut messages = BTreeMap::new();
        let mut operations = Vec::new();
        let channel_ref = Reference::channel(name);
        let message_ref = |key: &str| Reference::channel_message(name, key);
        let op = |action, messages, reply| Operation {
            action,
            channel: channel_ref.clone(),
            summary: None,
            description: None,
            messages,
            reply,
            security: Vec::new(),
        };

        // What clients send: the plugin's actions and ping.
        messages.insert("client.ping".to_owned(), Reference::message(PING));
        messages.insert("server.pong".to_owned(), Reference::message(PONG));
        messages.insert("server.error".to_owned(), Reference::message(ERROR));
        let reply = Reply {
            channel: channel_ref.clone(),
            messages: vec![message_ref("server.pong"), message_ref("server.error")],
        };
        let mut ping = op(Action::Receive, vec![message_ref("client.ping")], Some(reply));
        ping.summary = Some("Ping the broker; it answers with pong itself".into());
        operations.push((format!("{name}.receive.ping"), ping));
        let mut error = op(Action::Send, vec![message_ref("server.error")], None);
        error.summary = Some("What the broker answers a frame it cannot handle with".into());
        operations.push((format!("{name}.send.error"), error));

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
            tags = manifest.tags.iter().map(|t| Tag { name: t.clone() }).collect();
            // A payload type may not take a frame's title: Chanx's generator would make one class of both.
            let frames: HashSet<String> = manifest
                .accepts
                .iter()
                .chain(&manifest.sends)
                .chain(plugin.raw_frames())
                .map(|spec| frame_title(&spec.name))
                .chain([PING, PONG, ERROR].map(str::to_owned))
                .collect();
            let stamped = route.metadata.then_some(name);
            for spec in &manifest.sends {
                let payload = self.payload_schema(&route.plugin, spec, &frames);
                let key = self.frame(&route.plugin, spec, payload, Direction::Send { stamped });
                messages.insert(format!("server.{}", spec.name), Reference::message(&key));
                let mut send = op(Action::Send, vec![message_ref(&format!("server.{}", spec.name))], None);
                with_docs(&mut send, spec);
                operations.push((format!("{name}.send.{}", spec.name), send));
            }
            for spec in plugin.raw_frames() {
                let key = self.raw_frame(&route.plugin, spec);
                messages.insert(format!("server.{}", spec.name), Reference::message(&key));
                let mut send = op(Action::Send, vec![message_ref(&format!("server.{}", spec.name))], None);
                with_docs(&mut send, spec);
                operations.push((format!("{name}.send.{}", spec.name), send));
            }
            for spec in &manifest.accepts {
                let payload = self.payload_schema(&route.plugin, spec, &frames);
                let required = plugin.payload_required(&spec.name);
                let key = self.frame(&route.plugin, spec, payload, Direction::Receive { payload_required: required });
                messages.insert(format!("client.{}", spec.name), Reference::message(&key));
                let mut replies: Vec<Reference> = plugin
                    .replies(&spec.name)
                    .iter()
                    .filter(|reply| messages.contains_key(&format!("server.{reply}")))
                    .map(|reply| message_ref(&format!("server.{reply}")))
                    .collect();
                replies.push(message_ref("server.error"));
                let reply = Reply { channel: channel_ref.clone(), messages: replies };
                let mut receive = op(Action::Receive, vec![message_ref(&format!("client.{}", spec.name))], Some(reply));
                with_docs(&mut receive, spec);
                operations.push((format!("{name}.receive.{}", spec.name), receive));
            }
        } else {
            description.push_str(" The plugin is not loaded, so its messages are unknown.");
        }
        description.push_str(auth_note);
        if route.auth == AuthMode::Required {
            for (_, op) in &mut operations {
                op.security = vec![
                    Reference { target: "#/components/securitySchemes/bearer".into() },
                    Reference { target: "#/components/securitySchemes/token_query".into() },
                ];
            }
        }
        let parameters = route_parameters(&route.path)
            .into_iter()
            .map(|param| {
                let mut text = format!("The `{param}` segment of the path.");
                if let Some(rule) = route.params.get(&param) {
                    if let Some(pattern) = &rule.pattern {
                        text.push_str(&format!(" Must match `^{pattern}$`."));
                    }
                    if let Some(max) = rule.max_length {
                        text.push_str(&format!(" At most {max} characters."));
                    }
                    text.push_str(" Otherwise the upgrade is refused with HTTP 400.");
                }
                (param, Parameter { description: text })
            })
            .collect();
        let channel =
            Channel { address: route.path.clone(), title: name.to_owned(), description, messages, parameters, tags };
        self.channels.insert(name.to_owned(), channel);
        self.operations.extend(operations);
    }

    /// Puts a plugin's payload schema in `components.schemas`, titled, and returns a reference to
    /// it; `None` when the plugin publishes no schema.
    fn payload_schema(&mut self, plugin: &str, spec: &ActionSpec, frames: &HashSet<String>) -> Option<Reference> {
        let text = spec.payload_schema.as_deref()?;
        // The broker refused plugins whose accepted schemas are not JSON; a sent schema that
        // is not is documented as unknown rather than failing the document.
        let schema = serde_json::from_str(text).unwrap_or_else(|_| json!({}));
        let prefix = format!("{}{}", pascal(plugin), pascal(&spec.name));
        let schema = hoist_definitions(schema, &prefix, &mut self.schemas);
        let own = schema.get("title").and_then(Value::as_str).map(component_key).filter(|t| !frames.contains(t));
        let payload = format!("{}Payload", pascal(&spec.name));
        let candidates = own.into_iter().chain([payload, format!("{prefix}Payload")]).collect();
        Some(Reference::schema(&self.add_schema(candidates, schema)))
    }

    /// A frame around a plugin's payload: its schema and message; returns the message's key.
    fn frame(&mut self, plugin: &str, spec: &ActionSpec, payload: Option<Reference>, direction: Direction) -> String {
        let payload = payload.map_or_else(
            || json!({"description": "Any JSON value: the plugin publishes no schema"}),
            |reference| reference.to_schema(),
        );
        let mut properties = json!({
            "action": {"type": "string", "const": spec.name},
            "payload": payload,
            "ref": {"type": "string", "description": REF},
        });
        let mut required = vec!["action"];
        let mut candidates = vec![frame_title(&spec.name), format!("{}{}", pascal(plugin), frame_title(&spec.name))];
        match direction {
            Direction::Receive { payload_required } => {
                if payload_required {
                    required.push("payload");
                }
            }
            Direction::Send { stamped } => {
                required.push("payload");
                if let Some(channel) = stamped {
                    properties["message_id"] = json!({"type": "string", "format": "uuid"});
                    properties["timestamp"] = json!({"type": "string", "format": "date-time"});
                    properties["sender"] = json!({"type": "string", "description": "The sending connection, or `api`"});
                    required.extend(["message_id", "timestamp", "sender"]);
                    candidates.insert(0, format!("{}Stamped{}", pascal(channel), frame_title(&spec.name)));
                    candidates.truncate(1);
                }
            }
        }
        let mut schema = json!({"type": "object", "properties": properties, "required": required});
        if let Some(text) = spec.description.as_ref().or(spec.summary.as_ref()) {
            schema["description"] = text.clone().into();
        }
        let key = self.add_schema(candidates, schema);
        self.add_message(Message {
            name: spec.name.clone(),
            title: key.clone(),
            summary: spec.summary.clone(),
            description: spec.description.clone(),
            payload: Reference::schema(&key),
            correlation_id: Some(Reference { target: "#/components/correlationIds/ref".into() }),
        })
    }

    /// A frame a plugin sends as it is: the schema is the whole frame's.
    fn raw_frame(&mut self, plugin: &str, spec: &ActionSpec) -> String {
        let schema = spec.payload_schema.as_deref().and_then(|text| serde_json::from_str(text).ok());
        let prefix = format!("{}{}", pascal(plugin), pascal(&spec.name));
        let schema = hoist_definitions(schema.unwrap_or_else(|| json!({"type": "object"})), &prefix, &mut self.schemas);
        let key = self.add_schema(
            vec![frame_title(&spec.name), format!("{}{}", pascal(plugin), frame_title(&spec.name))],
            schema,
        );
        self.add_message(Message {
            name: spec.name.clone(),
            title: key.clone(),
            summary: spec.summary.clone(),
            description: spec.description.clone(),
            payload: Reference::schema(&key),
            correlation_id: None,
        })
    }

    /// Puts `schema` in `components.schemas` under the first of `candidates` that is free or
    /// holds the same schema, its `title` being its key; returns the key.
    fn add_schema(&mut self, candidates: Vec<String>, schema: Value) -> String {
        let titled = |key: &str| {
            let mut schema = schema.clone();
            if let Value::Object(object) = &mut schema {
                object.insert("title".into(), key.into());
            }
            schema
        };
        insert_numbered(&mut self.schemas, candidates, titled)
    }

    /// Puts `message` in `components.messages` under its title (numbered when another message has
    /// it); returns the key.
    fn add_message(&mut self, message: Message) -> String {
        let title = message.title.clone();
        insert_numbered(&mut self.messages, vec![title], |_| message.clone())
    }
}

/// Puts what `value` makes for a key under the first of `candidates`, then the first one
/// numbered (`Name2`, `Name3`, ...), that is free or already holds the same; returns that key.
fn insert_numbered<T: PartialEq>(
    map: &mut BTreeMap<String, T>,
    candidates: Vec<String>,
    value: impl Fn(&str) -> T,
) -> String {
    let first = candidates.first().cloned().unwrap_or_else(|| "Schema".into());
    let numbered = (2..).map(|n| format!("{first}{n}"));
    for key in candidates.into_iter().chain(numbered) {
        let value = value(&key);
        match map.get(&key) {
            Some(existing) if *existing == value => return key,
            Some(_) => continue,
            None => {
                map.insert(key.clone(), value);
                return key;
            }
        }
    }
    unreachable!("the numbered candidates never end")
}

/// How a client presents its token (see `auth`): a header, or the query for browsers.
fn security_schemes(config: &Config) -> BTreeMap<String, SecurityScheme> {
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
    let bearer = SecurityScheme {
        kind: "http".into(),
        scheme: Some("bearer".into()),
        bearer_format: Some("JWT".into()),
        name: None,
        location: None,
        description: format!(
            "{checks}. Sent on the handshake as `Authorization: Bearer <token>`, or by browsers as the subprotocols `bearer, <token>`."
        ),
    };
    let query = SecurityScheme {
        kind: "httpApiKey".into(),
        scheme: None,
        bearer_format: None,
        name: Some("token".into()),
        location: Some("query".into()),
        description: format!("{checks}. Sent as the `token` query parameter of the handshake."),
    };
    BTreeMap::from([("bearer".to_owned(), bearer), ("token_query".to_owned(), query)])
}

/// Adds the action's summary and description, where the plugin gave them.
fn with_docs(op: &mut Operation, spec: &ActionSpec) {
    op.summary = spec.summary.clone();
    op.description = spec.description.clone();
}

enum Direction<'a> {
    Receive {
        payload_required: bool,
    },
    /// `stamped`: the channel, when its route stamps metadata.
    Send {
        stamped: Option<&'a str>,
    },
}

/// The title of an action's frame, as Chanx names its message classes: `user_message` →
/// `UserMessage`, `system_echo` → `SystemEchoMessage`.
pub fn frame_title(action: &str) -> String {
    let name = pascal(action);
    if name.ends_with("Message") { name } else { format!("{name}Message") }
}

/// `new_chat_message` → `NewChatMessage`; a leading digit gets `_`.
pub fn pascal(text: &str) -> String {
    let mut out = String::new();
    for word in text.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()) {
        let mut chars = word.chars();
        out.extend(chars.next().map(|c| c.to_ascii_uppercase()));
        out.push_str(chars.as_str());
    }
    if out.is_empty() || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.insert(0, '_');
    }
    out
}

fn problems_schema() -> Value {
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
    })
}

/// Moves a schema's `definitions` (and `$defs`) into `components.schemas` as `<key>.<name>`,
/// rewriting its references: embedded in the document, `#/definitions/X` would point at the
/// document's root instead of the schema's.
fn hoist_definitions(mut schema: Value, key: &str, components: &mut BTreeMap<String, Value>) -> Value {
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
pub fn to_yaml(document: &Document) -> String {
    document.to_yaml()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(path: &str, plugin: &str, name: Option<&str>) -> Route {
        let text = format!(
            "path = {path:?}\nplugin = {plugin:?}\n{}",
            name.map(|n| format!("name = {n:?}\n")).unwrap_or_default()
        );
        toml::from_str(&text).unwrap()
    }

    #[test]
    fn channel_names_and_parameters_come_from_the_route() {
        let routes = [
            route("/ws/system", "echo", None),
            route("/ws/chat/{room}", "chat", None),
            route("/ws/chat/{room}/x", "chat", None),
            route("/ws", "echo", None),
            route("/", "echo", Some("echo")),
            route("/ws/2fa", "echo", None),
        ];
        assert_eq!(channel_names(&routes), vec!["system", "chat", "chat_x", "echo_2", "echo", "_2fa"]);
        assert_eq!(route_parameters("/ws/{org}/chat/{room}"), vec!["org", "room"]);
        assert_eq!(route_parameters("/files/{*rest}"), vec!["rest"]);
        assert_eq!(frame_title("user_message"), "UserMessage");
        assert_eq!(frame_title("system_echo"), "SystemEchoMessage");
        assert_eq!(pascal("1st"), "_1st");
    }

    #[test]
    fn schemas_are_titled_and_shared_only_when_equal() {
        let mut builder = Builder::default();
        let a = builder.add_schema(vec!["A".into()], json!({"type": "string"}));
        let again = builder.add_schema(vec!["A".into()], json!({"type": "string"}));
        let other = builder.add_schema(vec!["A".into(), "B".into()], json!({"type": "integer"}));
        let third = builder.add_schema(vec!["A".into()], json!({"type": "boolean"}));
        assert_eq!((a.as_str(), again.as_str(), other.as_str(), third.as_str()), ("A", "A", "B", "A2"));
        assert_eq!(builder.schemas["B"], json!({"type": "integer", "title": "B"}));
    }

    #[test]
    fn definitions_move_to_components_with_their_references() {
        let schema = json!({
            "$schema": "http://json-schema.org/draft-07/schema#",
            "type": "object",
            "properties": {"tree": {"$ref": "#/definitions/Tree"}},
            "definitions": {"Tree": {"type": "object", "properties": {"kids": {"type": "array", "items": {"$ref": "#/definitions/Tree"}}}}},
        });
        let mut components = BTreeMap::new();
        let schema = hoist_definitions(schema, "PClientA", &mut components);
        assert_eq!(schema["properties"]["tree"]["$ref"], "#/components/schemas/PClientA.Tree");
        assert!(schema.get("$schema").is_none() && schema.get("definitions").is_none());
        let tree = &components["PClientA.Tree"];
        assert_eq!(tree["properties"]["kids"]["items"]["$ref"], "#/components/schemas/PClientA.Tree");
    }
}
