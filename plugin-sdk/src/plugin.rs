//! A plugin's description and its handlers, dispatched by action.

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::bindings::broker::plugin::types;
use crate::context::Context;
use crate::error::{Error, Result};
use crate::payload;

type MessageHandler = Box<dyn Fn(&Context, Option<&str>) -> Result<Option<String>>>;
type ConnectHandler = Box<dyn Fn(&Context) -> Result<(), Reject>>;
type DisconnectHandler = Box<dyn Fn(&Context)>;

/// Refuses a connection: the client gets a close frame with this code and reason.
#[derive(Debug, Clone)]
pub struct Reject {
    pub code: u16,
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
}

/// A plugin: its identity, what it accepts and sends, and its handlers.
pub struct Plugin {
    name: String,
    version: String,
    description: Option<String>,
    tags: Vec<String>,
    handlers: Vec<(String, MessageHandler)>,
    sends: Vec<String>,
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

    /// Declares an action this plugin sends (replies, pushes).
    pub fn sends(mut self, action: impl Into<String>) -> Self {
        self.sends.push(action.into());
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
    /// A payload that does not decode never reaches `f`: the client gets an `error` frame that
    /// names the field, as pydantic would.
    pub fn handle<P, R, F>(mut self, action: impl Into<String>, f: F) -> Self
    where
        P: DeserializeOwned,
        R: Reply,
        F: Fn(&Context, P) -> Result<R> + 'static,
    {
        let action = action.into();
        let name = action.clone();
        let handler: MessageHandler = Box::new(move |ctx, payload| {
            let message = payload::decode::<P>(&name, payload).map_err(|issue| Error::Invalid(vec![issue]))?;
            f(ctx, message)?.into_frame()
        });
        self.handlers.retain(|(existing, _)| *existing != action);
        self.handlers.push((action, handler));
        self
    }

    pub(crate) fn manifest(&self) -> types::PluginManifest {
        let spec = |name: &String| types::ActionSpec {
            name: name.clone(),
            summary: None,
            description: None,
            payload_schema: None,
        };
        types::PluginManifest {
            name: self.name.clone(),
            version: self.version.clone(),
            description: self.description.clone(),
            tags: self.tags.clone(),
            accepts: self.handlers.iter().map(|(name, _)| spec(name)).collect(),
            sends: self.sends.iter().map(spec).collect(),
        }
    }

    pub(crate) fn connect(&self, ctx: &Context) -> Result<(), Reject> {
        self.on_connect.as_ref().map_or(Ok(()), |f| f(ctx))
    }

    pub(crate) fn message(&self, ctx: &Context, action: &str, payload: Option<&str>) -> Result<Option<String>> {
        match self.handlers.iter().find(|(name, _)| name == action) {
            Some((_, handler)) => handler(ctx, payload),
            // The broker only dispatches actions from the manifest, so this is a broker/plugin mismatch.
            None => Err(Error::msg(format!("plugin {} has no handler for {action:?}", self.name))),
        }
    }

    pub(crate) fn disconnect(&self, ctx: &Context) {
        if let Some(f) = &self.on_disconnect {
            f(ctx);
        }
    }
}
