//! The wire format: client envelopes in, error/pong/reply frames out.
//!
//! Client frames are `{"action": string, "payload": any?, "ref": string?}`. Every way a frame can be
//! wrong maps to one pydantic-style entry `{"type", "loc", "msg"}` in an `error` frame, so Chanx
//! clients parse our errors as they parse theirs.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

pub use crate::wire::problem::{Kind, Problem};

/// The action the broker answers itself on every route.
pub const PING: &str = "ping";

/// The action a client names the positions it recovers from with (group history), answered by the
/// broker. Not listed among the expected tags of an unknown action, which are Chanx's.
pub const RECOVER: &str = "recover";

/// The most characters of client input an error frame quotes (in a `loc` entry or a `msg`).
pub const QUOTE_CHARS: usize = 64;

/// `text` as an error frame quotes it: its first `QUOTE_CHARS` characters, and `…` when cut.
/// Without the cut a 1 MB action would be answered with a 1 MB error frame.
pub fn quote(text: &str) -> Cow<'_, str> {
    match text.char_indices().nth(QUOTE_CHARS) {
        None => Cow::Borrowed(text),
        Some((end, _)) => Cow::Owned(format!("{}…", &text[..end])),
    }
}

/// A well-formed client frame.
#[derive(Debug)]
pub struct Request<'a> {
    /// Borrowed from the frame unless it is written with escapes.
    pub action: Cow<'a, str>,
    /// The action's place in the accepted actions `parse` was given; none for the broker's own
    /// (`ping`, `recover`).
    pub accepted: Option<usize>,
    /// The payload's JSON text; `None` when absent (or `null` on `ping`).
    pub payload: Option<&'a RawValue>,
    /// The client's correlation id, echoed on the reply.
    pub reference: Option<String>,
}

/// A frame that could not be dispatched: what to tell the client.
#[derive(Debug, Clone, PartialEq)]
pub struct Refusal {
    pub problems: Vec<Problem>,
    pub reference: Option<String>,
}

#[derive(Deserialize)]
struct RawEnvelope<'a> {
    #[serde(borrow)]
    action: Option<&'a RawValue>,
    // `Option` alone would read `null` as absent; the two are answered differently.
    #[serde(borrow, default, deserialize_with = "present")]
    payload: Option<&'a RawValue>,
    #[serde(rename = "ref", borrow)]
    reference: Option<&'a RawValue>,
}

/// A key that is there, `null` included.
fn present<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(deserializer).map(Some)
}

/// Parses a client's text frame; `accepted` are the route's actions, for the error message.
pub fn parse<'a>(text: &'a str, accepted: &[String]) -> Result<Request<'a>, Refusal> {
    envelope(text, Some(accepted))
}

/// The rules of a client frame's envelope: JSON, an object, each of `action`, `payload`, `ref` at
/// most once, a string `action` (one of `accepted`, or any with `None`), a string `ref` if any.
fn envelope<'a>(text: &'a str, accepted: Option<&[String]>) -> Result<Request<'a>, Refusal> {
    // A well-formed object, the common case, takes one scan; anything else is read again below for
    // the error a client is told. (Not for arrays: serde reads a struct from one too.)
    let envelope = match text.trim_start().starts_with('{') {
        true => serde_json::from_str::<RawEnvelope<'a>>(text).ok(),
        false => None,
    };
    let envelope = match envelope {
        Some(envelope) => envelope,
        None => diagnose(text)?,
    };
    checked(envelope, accepted)
}

/// The envelope of a frame the one-scan read refused: the problem a client is told, or (it can
/// happen only with a frame that reads as well on a second try) the envelope.
fn diagnose(text: &str) -> Result<RawEnvelope<'_>, Refusal> {
    let refuse = |problem: Problem| Refusal { problems: vec![problem], reference: None };
    let raw: &RawValue = serde_json::from_str(text).map_err(|e| {
        let msg =
            if text.trim().is_empty() { "Invalid JSON: empty frame".to_owned() } else { format!("Invalid JSON: {e}") };
        refuse(Problem::new(Kind::JsonInvalid, vec![], msg))
    })?;
    if !raw.get().starts_with('{') {
        return Err(refuse(Problem::new(Kind::ModelType, vec![], "Input should be an object")));
    }
    serde_json::from_str(text)
        .map_err(|e| refuse(Problem::new(Kind::JsonInvalid, vec![], format!("Invalid JSON: {e}"))))
}

/// The rules of the envelope's keys.
fn checked<'a>(envelope: RawEnvelope<'a>, accepted: Option<&[String]>) -> Result<Request<'a>, Refusal> {
    let mut problems = Vec::new();
    let reference = match envelope.reference.map(|r| serde_json::from_str::<Option<String>>(r.get())) {
        None | Some(Ok(None)) => None,
        Some(Ok(Some(reference))) => Some(reference),
        Some(Err(_)) => {
            problems.push(Problem::new(Kind::StringType, vec!["ref".into()], "Input should be a valid string"));
            None
        }
    };
    let action = match envelope.action {
        None => {
            problems.push(Problem::new(
                Kind::UnionTagNotFound,
                vec![],
                "Unable to extract tag using discriminator 'action'",
            ));
            None
        }
        Some(raw) => match string(raw) {
            Ok(action) => {
                let own = action == PING || action == RECOVER;
                let place = match own {
                    true => None,
                    false => accepted.and_then(|accepted| accepted.iter().position(|a| *a == action)),
                };
                if own || place.is_some() || accepted.is_none() {
                    Some((action, place))
                } else {
                    problems.push(unknown_action(&action, accepted.unwrap_or_default()));
                    None
                }
            }
            Err(_) => {
                problems.push(match accepted {
                    Some(accepted) => unknown_action(raw.get(), accepted),
                    None => Problem::new(Kind::StringType, vec!["action".into()], "Input should be a valid string"),
                });
                None
            }
        },
    };
    match action {
        Some((action, accepted)) if problems.is_empty() => {
            // `ping` takes `null` as no payload (Chanx's `PingMessage.payload: None`); any other
            // action keeps it, so its schema answers it as pydantic does (`model_type`).
            let payload = envelope.payload.filter(|p| !(action == PING && p.get() == "null"));
            Ok(Request { action, accepted, payload, reference })
        }
        _ => Err(Refusal { problems, reference }),
    }
}

/// A JSON string's value, borrowed from the frame unless it has escapes to undo.
fn string(raw: &RawValue) -> serde_json::Result<Cow<'_, str>> {
    match raw.get().contains('\\') {
        true => serde_json::from_str::<String>(raw.get()).map(Cow::Owned),
        false => serde_json::from_str::<&str>(raw.get()).map(Cow::Borrowed),
    }
}

fn unknown_action(tag: &str, accepted: &[String]) -> Problem {
    // In Chanx's order: its union of a consumer's messages is sorted by action.
    let mut actions: Vec<&str> = accepted.iter().map(String::as_str).chain([PING]).collect();
    actions.sort_unstable();
    actions.dedup();
    let expected: Vec<String> = actions.iter().map(|a| format!("'{a}'")).collect();
    Problem::new(
        Kind::UnionTagInvalid,
        vec![],
        format!(
            "Input tag '{}' found using 'action' does not match any of the expected tags: {}",
            quote(tag),
            expected.join(", ")
        ),
    )
}

#[derive(Serialize)]
struct Envelope<'a, P: Serialize> {
    action: &'a str,
    payload: P,
    #[serde(rename = "ref", skip_serializing_if = "Option::is_none")]
    reference: Option<&'a str>,
}

/// `{"action":"error","payload":[...]}`, with the request's `ref` when it had one.
pub fn error_frame(problems: &[Problem], reference: Option<&str>) -> String {
    to_json(&Envelope { action: "error", payload: problems, reference })
}

/// `{"action":"pong","payload":null}`.
pub fn pong_frame(reference: Option<&str>) -> String {
    to_json(&Envelope { action: "pong", payload: (), reference })
}

fn to_json(value: &impl Serialize) -> String {
    // Serializing our own structs of strings and JSON values cannot fail.
    serde_json::to_string(value).unwrap_or_else(|e| unreachable!("serializing a frame: {e}"))
}

/// Checks a frame a plugin produced and adds the request's `ref`.
///
/// Plugins may send any JSON object (the assistant's frames have no `action`), but never anything
/// else, so a client can always parse what it receives. This runs on every reply: the check is one
/// scan, which allocates only for a container nested inside a field's value, and `ref` is spliced
/// in before the closing brace rather than the frame parsed into a map and written again; only a
/// frame that has a `ref` of its own takes that path.
pub fn plugin_frame(frame: String, reference: Option<&str>) -> Result<String, String> {
    #[derive(Deserialize)]
    struct OwnRef<'a> {
        #[serde(rename = "ref", borrow, default)]
        reference: Option<&'a RawValue>,
    }
    // Read as a struct, not as one `RawValue`: serde_json skips a value with a stack that it
    // allocates at the first container nested in it, and a reply's payload is nested in the frame.
    // Read as a struct's fields, a flat payload is skipped without it.
    #[derive(Deserialize)]
    struct Object {}
    let not_json = |e: serde_json::Error| format!("not JSON: {e}");
    let object = frame.trim();
    // serde reads a struct from an array too: the brace is checked first, and then one scan both
    // checks the whole text and finds a `ref` of the frame's own.
    if !object.starts_with('{') {
        return Err(serde_json::from_str::<&RawValue>(object).map_or_else(not_json, |_| "not a JSON object".into()));
    }
    let Some(reference) = reference else {
        serde_json::from_str::<Object>(object).map_err(not_json)?;
        return Ok(frame);
    };
    let own: OwnRef = serde_json::from_str(object).map_err(not_json)?;
    if own.reference.is_some() {
        let mut object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(object).map_err(not_json)?;
        object.insert("ref".into(), reference.into());
        return Ok(to_json(&object));
    }
    let quoted = to_json(&reference);
    let inside = &object[1..object.len() - 1];
    let separator = if inside.trim().is_empty() { "" } else { "," };
    let mut spliced = String::with_capacity(object.len() + quoted.len() + 8);
    spliced.push('{');
    spliced.push_str(inside.trim_end());
    spliced.push_str(separator);
    spliced.push_str("\"ref\":");
    spliced.push_str(&quoted);
    spliced.push('}');
    Ok(spliced)
}

/// The keys `stamp` adds. The broker owns them: a frame published through the HTTP API may not set
/// them (`published_frame`).
pub const STAMPED_KEYS: [&str; 3] = ["message_id", "timestamp", "sender"];

/// Checks a frame published through the HTTP API (`POST /api/publish`) by the rules of client frames:
/// the envelope's (`parse`, with any action), and nesting within serde_json's 128 levels, the limit a
/// client's payload meets when it is validated. The keys the broker stamps (`STAMPED_KEYS`) are
/// refused, so no publisher can pose as another sender on a route with `metadata`.
pub fn published_frame(text: &str) -> Result<(), Refusal> {
    envelope(text, None)?;
    let refuse = |problems: Vec<Problem>| Refusal { problems, reference: None };
    let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text)
        .map_err(|e| refuse(vec![Problem::new(Kind::JsonInvalid, vec![], format!("Invalid JSON: {e}"))]))?;
    let owned: Vec<Problem> = STAMPED_KEYS
        .iter()
        .filter(|key| object.contains_key(**key))
        .map(|key| Problem::new(Kind::ExtraForbidden, vec![(*key).into()], "Set by the broker; a frame may not set it"))
        .collect();
    if owned.is_empty() { Ok(()) } else { Err(refuse(owned)) }
}

/// Adds `message_id` (a UUID v4), `timestamp` (RFC 3339, UTC) and `sender` to a frame (a JSON object),
/// as the message-structure tutorial's clients expect. Keys the frame already has are kept.
pub fn stamp(frame: &str, sender: &str) -> String {
    let Ok(mut object) = serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(frame) else {
        // Only checked JSON objects reach here; anything else goes out as it came.
        return frame.to_owned();
    };
    let now = humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string();
    object.entry("message_id").or_insert_with(|| uuid::Uuid::new_v4().to_string().into());
    object.entry("timestamp").or_insert_with(|| now.into());
    object.entry("sender").or_insert_with(|| sender.into());
    to_json(&object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn accepted() -> Vec<String> {
        vec!["user_message".to_owned()]
    }

    fn refused(text: &str) -> Refusal {
        parse(text, &accepted()).unwrap_err()
    }

    #[test]
    fn parses_action_payload_and_ref() {
        let request =
            parse(r#"{"action":"user_message","payload":{"message":"hi"},"ref":"r1","x":1}"#, &accepted()).unwrap();
        assert_eq!(request.action, "user_message");
        assert_eq!(request.payload.unwrap().get(), r#"{"message":"hi"}"#);
        assert_eq!(request.reference.as_deref(), Some("r1"));
        let request = parse(r#"{"action":"ping","payload":null}"#, &accepted()).unwrap();
        assert!(request.payload.is_none());
        // Escapes are undone (the action is then not borrowed from the frame).
        assert_eq!(parse(r#"{"action":"user\u005fmessage"}"#, &accepted()).unwrap().action, "user_message");
        assert_eq!(refused(r#"{"action":"user\u005fmessages"}"#).problems[0].kind, "union_tag_invalid");
        let request = parse(r#"{"action":"user_message","payload":null}"#, &accepted()).unwrap();
        assert_eq!(request.payload.map(RawValue::get), Some("null"), "validated as null, not as missing");
    }

    #[test]
    fn an_accepted_action_comes_with_its_place_and_the_brokers_own_without() {
        let accepted = ["join".to_owned(), "user_message".to_owned()];
        assert_eq!(parse(r#"{"action":"user_message"}"#, &accepted).unwrap().accepted, Some(1));
        assert_eq!(parse(r#"{"action":"join"}"#, &accepted).unwrap().accepted, Some(0));
        assert_eq!(parse(r#"{"action":"ping"}"#, &accepted).unwrap().accepted, None);
        assert_eq!(parse(r#"{"action":"recover","payload":{}}"#, &accepted).unwrap().accepted, None);
    }

    #[test]
    fn each_bad_envelope_has_its_type() {
        assert_eq!(refused("").problems[0].kind, "json_invalid");
        assert_eq!(refused("{nope").problems[0].kind, "json_invalid");
        assert_eq!(refused("[1]").problems[0].kind, "model_type");
        assert_eq!(refused(r#"{"payload":{}}"#).problems[0].kind, "union_tag_not_found");
        let unknown = refused(r#"{"action":"dance"}"#);
        assert_eq!(unknown.problems[0].kind, "union_tag_invalid");
        assert!(unknown.problems[0].msg.contains("'ping', 'user_message'"), "{}", unknown.problems[0].msg);
        assert_eq!(refused(r#"{"action":5}"#).problems[0].kind, "union_tag_invalid");
        let bad_ref = refused(r#"{"action":"ping","ref":5}"#);
        assert_eq!(
            bad_ref.problems,
            vec![Problem::new("string_type", vec![json!("ref")], "Input should be a valid string")]
        );
    }

    #[test]
    fn quoted_client_input_is_cut_on_a_char_boundary() {
        assert_eq!(quote("dance"), "dance");
        let long = "é".repeat(QUOTE_CHARS + 1);
        assert_eq!(quote(&long), format!("{}…", "é".repeat(QUOTE_CHARS)));
        let problem = Problem::at_action("plugin_error", &long, "boom");
        assert_eq!(problem.loc, vec![serde_json::Value::from(quote(&long))]);
    }

    #[test]
    fn a_valid_ref_is_kept_when_the_action_is_wrong() {
        assert_eq!(refused(r#"{"action":"dance","ref":"r9"}"#).reference.as_deref(), Some("r9"));
    }

    #[test]
    fn frames_are_the_documented_json() {
        assert_eq!(pong_frame(None), r#"{"action":"pong","payload":null}"#);
        assert_eq!(pong_frame(Some("a")), r#"{"action":"pong","payload":null,"ref":"a"}"#);
        let error = error_frame(&[Problem::at_action("plugin_error", "go", "boom")], None);
        assert_eq!(error, r#"{"action":"error","payload":[{"type":"plugin_error","loc":["go"],"msg":"boom"}]}"#);
    }

    #[test]
    fn stamping_adds_id_time_and_sender() {
        let stamped: serde_json::Value = serde_json::from_str(&stamp(r#"{"action":"a","payload":1}"#, "7")).unwrap();
        assert_eq!(stamped["action"], "a");
        assert_eq!(stamped["sender"], "7");
        assert_eq!(stamped["message_id"].as_str().unwrap().len(), 36);
        let timestamp = stamped["timestamp"].as_str().unwrap();
        assert!(humantime::parse_rfc3339(timestamp).is_ok(), "{timestamp}");
    }

    #[test]
    fn plugin_frames_must_be_objects_and_get_the_ref() {
        assert!(plugin_frame("[1]".into(), None).is_err());
        assert!(plugin_frame("{".into(), None).is_err());
        // The one scan that looks for the frame's own `ref` refuses what is not one whole object.
        for bad in ["[1]", "[null]", "{", r#"{"a":tru}"#, r#"{"a":1} x"#, "{\"a\":\"\u{1}\"}", r#"{"ref":1,"ref":2}"#] {
            assert!(plugin_frame(bad.into(), Some("r")).is_err(), "{bad}");
        }
        assert_eq!(plugin_frame("[1]".into(), Some("r")).unwrap_err(), "not a JSON object");
        let framed = plugin_frame(r#"{"action":"a","payload":1}"#.into(), Some("r")).unwrap();
        assert_eq!(framed, r#"{"action":"a","payload":1,"ref":"r"}"#);
        // Spliced in: whatever the spacing, the result is one object with one `ref`.
        let parsed = |text: String| serde_json::from_str::<serde_json::Value>(&text).unwrap();
        assert_eq!(plugin_frame(" { } \n".into(), Some("r")).unwrap(), r#"{"ref":"r"}"#);
        assert_eq!(
            parsed(plugin_frame("{ \"a\" : [1] }\n".into(), Some("q\"")).unwrap()),
            json!({"a": [1], "ref": "q\""})
        );
        // A frame with a `ref` of its own has it replaced, not doubled.
        assert_eq!(
            plugin_frame(r#"{"ref":"theirs","b":{"ref":1}}"#.into(), Some("r")).unwrap(),
            r#"{"ref":"r","b":{"ref":1}}"#
        );
        assert_eq!(plugin_frame(r#"{"a":1}"#.into(), None).unwrap(), r#"{"a":1}"#);
    }

    #[test]
    fn published_frames_keep_the_envelope_rules_and_leave_stamps_to_the_broker() {
        assert!(published_frame(r#"{"action":"news","payload":{"a":[1]},"ref":"r","x":2}"#).is_ok());
        let kind = |text: &str| published_frame(text).unwrap_err().problems[0].kind.clone();
        assert_eq!(kind(r#"{"payload":1}"#), "union_tag_not_found");
        assert_eq!(kind(r#"{"action":1}"#), "string_type");
        assert_eq!(kind(r#"{"action":"a","ref":1}"#), "string_type");
        let deep = format!(r#"{{"action":"a","payload":{}{}}}"#, "[".repeat(200), "]".repeat(200));
        assert_eq!(kind(&deep), "json_invalid");
        let owned = published_frame(r#"{"action":"a","sender":"admin","timestamp":"t"}"#).unwrap_err();
        let at: Vec<_> = owned.problems.iter().map(|p| p.loc.clone()).collect();
        assert_eq!(at, vec![vec![json!("timestamp")], vec![json!("sender")]]);
    }
}
