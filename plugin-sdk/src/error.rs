//! Errors a handler can return, and how they reach the client.

use std::fmt;

/// A handler's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// One step of an issue's location: an object key or a list index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Loc {
    /// An object key.
    Key(String),
    /// A list index.
    Index(u32),
}

impl From<&str> for Loc {
    fn from(key: &str) -> Self {
        Loc::Key(key.to_owned())
    }
}

impl From<String> for Loc {
    fn from(key: String) -> Self {
        Loc::Key(key)
    }
}

impl From<u32> for Loc {
    fn from(index: u32) -> Self {
        Loc::Index(index)
    }
}

/// One problem with a client's frame, in the shape of a pydantic validation error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Issue {
    /// The error type: `missing`, `string_type`, `value_error`, ...
    pub kind: String,
    /// Where: `[action, "payload", field, ...]`.
    pub loc: Vec<Loc>,
    /// A sentence for a person.
    pub msg: String,
}

impl Issue {
    /// An issue of `kind` at `loc`.
    pub fn new(kind: impl Into<String>, loc: Vec<Loc>, msg: impl Into<String>) -> Self {
        Issue { kind: kind.into(), loc, msg: msg.into() }
    }
}

/// Why a handler did not reply.
///
/// `Error::invalid` reports what is wrong with the client's input (the client sees each issue);
/// any other error becomes a `plugin_error` frame with its message. `?` converts any
/// `std::error::Error` into the latter.
#[derive(Debug)]
pub enum Error {
    /// The client's input is wrong.
    Invalid(Vec<Issue>),
    /// The handler failed.
    Failed(String),
}

impl Error {
    /// A handler failure with a message for the client.
    pub fn msg(message: impl fmt::Display) -> Self {
        Error::Failed(message.to_string())
    }

    /// The client's input is wrong, for the given reasons.
    pub fn invalid(issues: Vec<Issue>) -> Self {
        Error::Invalid(issues)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Failed(message) => f.write_str(message),
            Error::Invalid(issues) => {
                let msgs: Vec<&str> = issues.iter().map(|i| i.msg.as_str()).collect();
                write!(f, "invalid input: {}", msgs.join("; "))
            }
        }
    }
}

// Like anyhow, `Error` is not itself a `std::error::Error`, so this blanket conversion can exist.
impl<E: std::error::Error> From<E> for Error {
    fn from(error: E) -> Self {
        Error::Failed(error.to_string())
    }
}
