//! The entries of error frames (`{"type", "loc", "msg"}`, pydantic's shape), and every kind the
//! broker reports itself, in one place. The kinds a payload schema reports (`string_too_short`,
//! `greater_than_equal`, ...) are pydantic's catalogue, mapped from JSON Schema in
//! `plugin::schema`.

use serde::Serialize;

use crate::wire::protocol::{QUOTE_CHARS, quote};

/// A kind of problem the broker reports on its own (the `type` of an error frame's entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Not JSON, an empty or a binary frame.
    JsonInvalid,
    /// JSON of the wrong shape: not an object, or a payload that is not one.
    ModelType,
    /// An object without `action`.
    UnionTagNotFound,
    /// An `action` the route does not take, or not a string.
    UnionTagInvalid,
    /// A `ref` that is not a string.
    StringType,
    /// A required field is absent.
    Missing,
    /// A key the frame may not set.
    ExtraForbidden,
    /// A payload on `ping`.
    NoneRequired,
    /// A value the broker refuses for a reason the message gives (a recovery position).
    ValueError,
    /// Over the connection's message rate.
    RateLimited,
    /// The plugin returned an error.
    PluginError,
    /// The plugin trapped, or could not run.
    PluginCrashed,
    /// The plugin ran past its deadline.
    PluginTimeout,
}

impl Kind {
    /// The kind as error frames name it.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::JsonInvalid => "json_invalid",
            Kind::ModelType => "model_type",
            Kind::UnionTagNotFound => "union_tag_not_found",
            Kind::UnionTagInvalid => "union_tag_invalid",
            Kind::StringType => "string_type",
            Kind::Missing => "missing",
            Kind::ExtraForbidden => "extra_forbidden",
            Kind::NoneRequired => "none_required",
            Kind::ValueError => "value_error",
            Kind::RateLimited => "rate_limited",
            Kind::PluginError => "plugin_error",
            Kind::PluginCrashed => "plugin_crashed",
            Kind::PluginTimeout => "plugin_timeout",
        }
    }
}

impl From<Kind> for String {
    fn from(kind: Kind) -> String {
        kind.as_str().to_owned()
    }
}

/// One entry of an error frame.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Problem {
    #[serde(rename = "type")]
    pub kind: String,
    pub loc: Vec<serde_json::Value>,
    pub msg: String,
}

impl Problem {
    /// A problem at `loc`, whose keys (a client's action and payload keys) are quoted as `quote` cuts them.
    pub fn new(kind: impl Into<String>, loc: Vec<serde_json::Value>, msg: impl Into<String>) -> Self {
        let loc = loc
            .into_iter()
            .map(|item| match item {
                serde_json::Value::String(key) if key.chars().nth(QUOTE_CHARS).is_some() => quote(&key).into(),
                other => other,
            })
            .collect();
        Problem { kind: kind.into(), loc, msg: msg.into() }
    }

    /// A problem located at `[action]`: how plugin failures are reported.
    pub fn at_action(kind: impl Into<String>, action: &str, msg: impl Into<String>) -> Self {
        Problem::new(kind, vec![action.into()], msg)
    }
}
