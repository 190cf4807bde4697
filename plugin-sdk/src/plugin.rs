//! A plugin's description and its handlers, dispatched by action.

use schemars::JsonSchema;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bindings::broker::plugin::types;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::message::{self, Message};
use crate::payload;

type MessageHandler = Box<dyn Fn(&Context, Option<&str>) -> Result<Option<String>>>;
type ConnectHandler = Box<dyn Fn(&Context) -> Result<(), Reject>>;
type DisconnectHandler = Box<dyn Fn(&Context)>;

/// Refuses a connection: the client gets a close frame with this code and reason.
#[derive(Debug, Clone)]
pub struct Reject {
    /// The WebSocket close code.
    pub code: u16,
    /// The close reason.
    pub reason: String,
}

impl Reject {
    /// Refuses with a WebSocket close code (1008, or 4000-4999) and a reason.
    pub fn new(code: u16, reason: impl Into<String>) -> Self {
        Reject { code, reason: reason.into() }
    }
}

/// A failure inside `on_connect` refuses the connection with 1011 (internal error).
impl From<Error> for Reject {
    fn from(error: Error) -> Self {
        Reject::new(1011, error.to_string())
    }
}

/// What a handler may return: a frame for the sender, or nothing.
pub trait Reply {
    /// The frame as JSON text, or `None` to send nothing.
    fn into_frame(self) -> Result<Option<String>>;

    /// The messages this reply can be, for the manifest; empty when its action is only known at
    /// run time (a [`Frame`](crate::Frame), a JSON value).
    fn replies() -> Vec<types::ActionSpec> {
        Vec::new()
    }
}

/// A typed message replies as `{"action": M::ACTION, "payload": ...}`.
impl<M: Message> Reply for M {
    fn into_frame(self) -> Result<Option<String>> {
        /// The frame of `Frame::of`, with the action written from the constant rather than first
        /// copied into a `String`: one allocation less on every typed reply.
        #[derive(Serialize)]
        struct Typed<'a, P> {
            action: &'static str,
            payload: &'a P,
        }
        Ok(Some(serde_json::to_string(&Typed { action: M::ACTION, payload: &self })?))
    }

    fn replies() -> Vec<types::ActionSpec> {
        vec![message::spec_of::<M>(M::ACTION)]
    }
}

impl<T: Serialize> Reply for crate::Frame<T> {
    fn into_frame(self) -> Result<Option<String>> {
        Ok(Some(serde_json::to_string(&self)?))
    }
}

impl Reply for serde_json::Value {
    fn into_frame(self) -> Result<Option<String>> {
        Ok(Some(self.to_string()))
    }
}

impl Reply for () {
    fn into_frame(self) -> Result<Option<String>> {
        Ok(None)
    }
}

impl<R: Reply> Reply for Option<R> {
    fn into_frame(self) -> Result<Option<String>> {
        self.map_or(Ok(None), Reply::into_frame)
    }

    fn replies() -> Vec<types::ActionSpec> {
        R::replies()
    }
}

struct Handler {
    spec: types::ActionSpec,
    replies: Vec<String>,
    run: MessageHandler,
}

/// A plugin: its identity, what it accepts and sends, and its handlers.
pub struct Plugin {
    name: String,
    version: String,
    description: Option<String>,
    tags: Vec<String>,
    /// In the manifest's order: `on-frame` names an action by its place here.
    handlers: Vec<Handler>,
    sends: Vec<types::ActionSpec>,
    raw_frames: Vec<types::ActionSpec>,
    on_connect: Option<ConnectHandler>,
    on_disconnect: Option<DisconnectHandler>,
}

impl Plugin {
    /// A plugin with no handlers yet.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Plugin {
            name: name.into(),
            version: version.into(),
            description: None,
            tags: Vec::new(),
            handlers: Vec::new(),
            sends: Vec::new(),
            raw_frames: Vec::new(),
            on_connect: None,
            on_disconnect: None,
        }
    }

    /// A description for documentation.
    pub fn description(mut self, text: impl Into<String>) -> Self {
        self.description = Some(text.into());
        self
    }

    /// Tags for documentation.
    pub fn tags<I: IntoIterator<Item = S>, S: Into<String>>(mut self, tags: I) -> Self {
        self.tags = tags.into_iter().map(Into::into).collect();
        self
    }

    /// Declares a message this plugin sends besides its handlers' replies (pushes, broadcasts).
    pub fn sends<M: Message>(self) -> Self {
        self.declare_sent(message::spec_of::<M>(M::ACTION))
    }

    /// Declares an action this plugin sends whose payload has no published schema.
    pub fn sends_untyped(self, action: &str) -> Self {
        self.declare_sent(message::untyped(action))
    }

    /// Declares a kind of frame this plugin sends as it is, outside the `{"action", "payload"}`
    /// envelope (the pizza assistant's `{"status", "stage", ...}`); `T` is the whole frame.
    pub fn sends_raw<T: JsonSchema>(mut self, name: &str) -> Self {
        self.raw_frames.retain(|existing| existing.name != name);
        self.raw_frames.push(message::spec_of::<T>(name));
        self
    }

    fn declare_sent(mut self, spec: types::ActionSpec) -> Self {
        self.sends.retain(|existing| existing.name != spec.name);
        self.sends.push(spec);
        self
    }

    /// Runs when a client connects; an `Err` refuses the connection.
    pub fn on_connect(mut self, f: impl Fn(&Context) -> Result<(), Reject> + 'static) -> Self {
        self.on_connect = Some(Box::new(f));
        self
    }

    /// Runs when a connection has closed.
    pub fn on_disconnect(mut self, f: impl Fn(&Context) + 'static) -> Self {
        self.on_disconnect = Some(Box::new(f));
        self
    }

    /// Handles `action`: the payload is decoded into `P`, and what `f` returns is sent to the sender.
    ///
    /// `P`'s JSON Schema is published in the manifest, so the broker refuses a payload that does
    /// not fit before the plugin runs, and documents the action with `P`'s doc comment. A typed
    /// reply ([`Message`]) is documented as the handler's answer. An action without a payload
    /// takes `()`.
    pub fn handle<P, R, F>(mut self, action: &str, f: F) -> Self
    where
        P: DeserializeOwned + JsonSchema,
        R: Reply,
        F: Fn(&Context, P) -> Result<R> + 'static,
    {
        let name = action.to_owned();
        let run: MessageHandler = Box::new(move |ctx, payload| {
            // The broker validated the payload; decoding can still fail where serde is stricter
            // than the schema (or on a broker that publishes no schema), and says so the same way.
            let message = payload::decode::<P>(&name, payload).map_err(|issue| Error::Invalid(vec![issue]))?;
            f(ctx, message)?.into_frame()
        });
        let replies = R::replies();
        let handler = Handler {
            spec: message::spec_of::<P>(action),
            replies: replies.iter().map(|spec| spec.name.clone()).collect(),
            run,
        };
        for reply in replies {
            if !self.sends.iter().any(|sent| sent.name == reply.name) {
                self.sends.push(reply);
            }
        }
        self.handlers.retain(|existing| existing.spec.name != action);
        self.handlers.push(handler);
        self
    }

    pub(crate) fn manifest(&self) -> types::PluginManifest {
        types::PluginManifest {
            name: self.name.clone(),
            version: self.version.clone(),
            description: self.description.clone(),
            tags: self.tags.clone(),
            accepts: self.handlers.iter().map(|handler| handler.spec.clone()).collect(),
            sends: self.sends.clone(),
        }
    }

    pub(crate) fn raw_frames(&self) -> Vec<types::ActionSpec> {
        self.raw_frames.clone()
    }

    /// For each handler with typed replies, their actions.
    pub(crate) fn replies(&self) -> Vec<(String, Vec<String>)> {
        self.handlers
            .iter()
            .filter(|handler| !handler.replies.is_empty())
            .map(|handler| (handler.spec.name.clone(), handler.replies.clone()))
            .collect()
    }

    pub(crate) fn connect(&self, ctx: &Context) -> Result<(), Reject> {
        self.on_connect.as_ref().map_or(Ok(()), |f| f(ctx))
    }

    pub(crate) fn message(&self, ctx: &Context, action: &str, payload: Option<&str>) -> Result<Option<String>> {
        match self.handlers.iter().find(|handler| handler.spec.name == action) {
            Some(handler) => (handler.run)(ctx, payload),
            // The broker only dispatches actions from the manifest, so this is a broker/plugin mismatch.
            None => Err(Error::msg(format!("plugin {} has no handler for {action:?}", self.name))),
        }
    }

    /// `message` for the action at `index` of the manifest's `accepts`.
    pub(crate) fn message_at(&self, ctx: &Context, index: u32, payload: Option<&str>) -> Result<Option<String>> {
        match usize::try_from(index).ok().and_then(|index| self.handlers.get(index)) {
            Some(handler) => (handler.run)(ctx, payload),
            None => Err(Error::msg(format!("plugin {} has no handler at {index}", self.name))),
        }
    }

    pub(crate) fn disconnect(&self, ctx: &Context) {
        if let Some(f) = &self.on_disconnect {
            f(ctx);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, JsonSchema)]
    struct Echoed {
        message: String,
    }

    impl Message for Echoed {
        const ACTION: &'static str = "system_echo";
    }

    #[test]
    fn a_typed_reply_is_the_frame_of_its_action() {
        let typed = Echoed { message: "hi \"there\"".into() }.into_frame().unwrap().unwrap();
        let framed = crate::Frame::of(Echoed { message: "hi \"there\"".into() }).into_frame().unwrap().unwrap();
        assert_eq!(typed, framed);
        assert_eq!(typed, r#"{"action":"system_echo","payload":{"message":"hi \"there\""}}"#);
    }
}
