//! Validation at the edge: each accepted action's payload is checked against the JSON Schema the
//! plugin published, before any plugin code runs, and every problem is reported as pydantic would
//! (`type`, `loc`, `msg`), so Chanx clients read our refusals as they read theirs.

use std::collections::HashMap;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::paths::{Location, LocationSegment};
use jsonschema::{JsonType, ValidationError, Validator};
use serde_json::Value;
use serde_json::value::RawValue;

use crate::plugin::host::PluginManifest;
use crate::wire::protocol::{self, Problem};
use crate::wire::unique_keys;

pub mod flat;

use flat::Flat;

/// An action's schema.
struct Compiled {
    validator: Validator,
    /// The schema's flat form, when it is a flat object of scalars: fitting payloads are answered
    /// on their text (see [`flat`]).
    flat: Option<Flat>,
}

/// The compiled payload schemas of one plugin generation, by action.
#[derive(Default)]
pub struct Validators {
    by_action: HashMap<String, Compiled>,
    /// The payload's model name, as pydantic names it in `model_type` messages: the schema's
    /// `title` (the plugin's type), else `<Action>Payload`.
    models: HashMap<String, String>,
}

impl Validators {
    /// Compiles the schemas `manifest.accepts` publishes; a schema that does not compile refuses
    /// the plugin, since the broker could not keep its promise that handlers see valid payloads.
    pub fn compile(manifest: &PluginManifest) -> Result<Validators, String> {
        let mut by_action = HashMap::new();
        let mut models = HashMap::new();
        for spec in &manifest.accepts {
            let Some(text) = &spec.payload_schema else { continue };
            let schema: Value = serde_json::from_str(text)
                .map_err(|e| format!("the payload schema of {:?} is not JSON: {e}", spec.name))?;
            let validator = jsonschema::options()
                .should_validate_formats(true)
                .build(&schema)
                .map_err(|e| format!("the payload schema of {:?} is not a valid JSON Schema: {e}", spec.name))?;
            by_action.insert(spec.name.clone(), Compiled { validator, flat: Flat::of(&schema) });
            let model = match schema.get("title").and_then(Value::as_str) {
                Some(title) => title.to_owned(),
                // As the AsyncAPI document titles an untitled payload: `user_message` → `UserMessagePayload`.
                None => spec.name.split('_').flat_map(capitalize_word).chain("Payload".chars()).collect(),
            };
            models.insert(spec.name.clone(), model);
        }
        Ok(Validators { by_action, models })
    }

    /// Whether `action` needs a payload: its schema refuses `null`.
    pub fn requires_payload(&self, action: &str) -> bool {
        self.by_action.get(action).is_some_and(|compiled| !compiled.validator.is_valid(&Value::Null))
    }

    /// Checks `payload` (`None`: absent) of `action`; `Err` holds one problem per fault. An
    /// absent payload is `missing`; a `null` one is not a model, as pydantic says it.
    pub fn check(&self, action: &str, payload: Option<&RawValue>) -> Result<(), Vec<Problem>> {
        let Some(Compiled { validator, flat }) = self.by_action.get(action) else { return Ok(()) };
        if let (Some(payload), Some(flat)) = (payload, flat)
            && flat.admits(payload.get())
        {
            return Ok(());
        }
        let instance = match payload.map(|raw| unique_keys::parse(raw.get())) {
            None => Value::Null,
            Some(Ok(instance)) => instance,
            Some(Err(unique_keys::Refused::Invalid(e))) => {
                return Err(vec![Problem::new("json_invalid", located(action, &[]), format!("Invalid JSON: {e}"))]);
            }
            Some(Err(unique_keys::Refused::Duplicate { at })) => {
                let key = at.last().and_then(Value::as_str).map(protocol::quote).unwrap_or_default();
                let msg = format!("Value error, the key '{key}' is given twice");
                return Err(vec![Problem::new("value_error", located(action, &at), msg)]);
            }
        };
        // The common case, a payload that fits, is answered without the error machinery.
        if validator.is_valid(&instance) {
            return Ok(());
        }
        let mut problems: Vec<Problem> =
            validator.iter_errors(&instance).flat_map(|error| problems_of(action, payload.is_none(), &error)).collect();
        if payload.is_some() && instance.is_null() {
            let model = self.models.get(action).map_or(action, String::as_str);
            for problem in problems.iter_mut().filter(|p| p.kind == "model_type" && p.loc.len() == 2) {
                problem.msg = format!("Input should be a valid dictionary or instance of {model}");
            }
        }
        if problems.is_empty() { Ok(()) } else { Err(problems) }
    }
}

fn capitalize_word(word: &str) -> impl Iterator<Item = char> + '_ {
    let mut chars = word.chars();
    chars.next().map(|c| c.to_ascii_uppercase()).into_iter().chain(chars)
}

/// `[action, "payload", ...path]`.
fn located(action: &str, path: &[Value]) -> Vec<Value> {
    let mut loc = vec![Value::from(action), Value::from("payload")];
    loc.extend_from_slice(path);
    loc
}

fn instance_path(error: &ValidationError<'_>) -> Vec<Value> {
    error
        .instance_path()
        .iter()
        .map(|segment| match segment {
            LocationSegment::Property(key) => Value::from(key.as_ref()),
            LocationSegment::Index(index) => Value::from(index),
        })
        .collect()
}

/// The pydantic entries for one validation error.
fn problems_of(action: &str, payload_absent: bool, error: &ValidationError<'_>) -> Vec<Problem> {
    let path = instance_path(error);
    let at = |extra: Option<&str>| {
        let mut loc = located(action, &path);
        loc.extend(extra.map(Value::from));
        loc
    };
    let one = |kind: &str, msg: String| vec![Problem::new(kind, at(None), msg)];
    match error.kind() {
        ValidationErrorKind::Type { .. } if payload_absent && path.is_empty() => {
            vec![Problem::new("missing", at(None), "Field required")]
        }
        ValidationErrorKind::Type { kind } => {
            let expected = match kind {
                TypeKind::Single(t) => Some(*t),
                TypeKind::Multiple(set) => set.iter().find(|t| *t != JsonType::Null),
            };
            let (kind, msg) = type_problem(expected, error.instance());
            one(kind, msg.to_owned())
        }
        ValidationErrorKind::Required { property } => {
            let name = property.as_str().map_or_else(|| property.to_string(), str::to_owned);
            vec![Problem::new("missing", at(Some(&name)), "Field required")]
        }
        ValidationErrorKind::AdditionalProperties { unexpected }
        | ValidationErrorKind::UnevaluatedProperties { unexpected } => unexpected
            .iter()
            .map(|name| Problem::new("extra_forbidden", at(Some(name)), "Extra inputs are not permitted"))
            .collect(),
        ValidationErrorKind::Enum { options } => {
            one("enum", format!("Input should be {}", alternatives(options.as_array().map_or(&[][..], Vec::as_slice))))
        }
        ValidationErrorKind::Constant { expected_value } => {
            one("literal_error", format!("Input should be {}", alternatives(std::slice::from_ref(expected_value))))
        }
        ValidationErrorKind::MinLength { limit } => {
            one("string_too_short", format!("String should have at least {limit} character{}", plural(*limit)))
        }
        ValidationErrorKind::MaxLength { limit } => {
            one("string_too_long", format!("String should have at most {limit} character{}", plural(*limit)))
        }
        ValidationErrorKind::Minimum { limit } => {
            one("greater_than_equal", format!("Input should be greater than or equal to {limit}"))
        }
        ValidationErrorKind::Maximum { limit } => {
            one("less_than_equal", format!("Input should be less than or equal to {limit}"))
        }
        ValidationErrorKind::ExclusiveMinimum { limit } => {
            one("greater_than", format!("Input should be greater than {limit}"))
        }
        ValidationErrorKind::ExclusiveMaximum { limit } => {
            one("less_than", format!("Input should be less than {limit}"))
        }
        ValidationErrorKind::MultipleOf { multiple_of } => {
            one("multiple_of", format!("Input should be a multiple of {multiple_of}"))
        }
        ValidationErrorKind::MinItems { limit } => one(
            "too_short",
            format!("List should have at least {limit} item{} after validation, not {}", plural(*limit), items(error)),
        ),
        ValidationErrorKind::MaxItems { limit } => one(
            "too_long",
            format!("List should have at most {limit} item{} after validation, not {}", plural(*limit), items(error)),
        ),
        ValidationErrorKind::Pattern { pattern } => {
            one("string_pattern_mismatch", format!("String should match pattern '{pattern}'"))
        }
        ValidationErrorKind::Format { format } => one("value_error", format!("Input should be a valid {format}")),
        ValidationErrorKind::AnyOf { context } | ValidationErrorKind::OneOfNotValid { context } => {
            union_problems(action, payload_absent, error.instance_path(), context)
                .unwrap_or_else(|| one("union_error", sentence(error)))
        }
        // The rest have no pydantic counterpart; the validator's sentence says what is wrong.
        _ => one("value_error", capitalize(&sentence(error))),
    }
}

/// The validator's sentence, the client's value in it cut as `protocol::quote` cuts client input.
fn sentence(error: &ValidationError<'_>) -> String {
    error.masked_with(protocol::quote(&error.instance().to_string())).to_string()
}

/// A value that fits no branch of a union: report the branch it came closest to. A branch that
/// failed only on the value's type (an `Option`'s `null`) is a different shape, not a near miss.
fn union_problems(
    action: &str,
    payload_absent: bool,
    at: &Location,
    branches: &[Vec<ValidationError<'static>>],
) -> Option<Vec<Problem>> {
    let wrong_shape =
        |e: &ValidationError<'_>| matches!(e.kind(), ValidationErrorKind::Type { .. }) && e.instance_path() == at;
    let near = |errors: &&Vec<ValidationError<'static>>| errors.iter().any(|e| !wrong_shape(e));
    let branch = branches.iter().find(near).or_else(|| branches.first())?;
    let problems: Vec<Problem> = branch.iter().flat_map(|e| problems_of(action, payload_absent, e)).collect();
    (!problems.is_empty()).then_some(problems)
}

/// pydantic's type errors, by the type the schema expected.
fn type_problem(expected: Option<JsonType>, got: &Value) -> (&'static str, &'static str) {
    match expected {
        Some(JsonType::String) => ("string_type", "Input should be a valid string"),
        Some(JsonType::Integer) if got.is_f64() => {
            ("int_from_float", "Input should be a valid integer, got a number with a fractional part")
        }
        Some(JsonType::Integer) => ("int_type", "Input should be a valid integer"),
        Some(JsonType::Number) => ("float_type", "Input should be a valid number"),
        Some(JsonType::Boolean) => ("bool_type", "Input should be a valid boolean"),
        Some(JsonType::Array) => ("list_type", "Input should be a valid list"),
        Some(JsonType::Object) => ("model_type", "Input should be an object"),
        Some(JsonType::Null) | None => ("none_required", "Input should be None"),
    }
}

/// `'a'`, `'a' or 'b'`, `'a', 'b' or 'c'`, as pydantic lists the allowed values.
fn alternatives(values: &[Value]) -> String {
    let quoted: Vec<String> = values
        .iter()
        .map(|v| match v {
            Value::String(s) => format!("'{s}'"),
            other => other.to_string(),
        })
        .collect();
    match quoted.split_last() {
        None => "one of no values".to_owned(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn items(error: &ValidationError<'_>) -> usize {
    error.instance().as_array().map_or(0, Vec::len)
}

fn capitalize(text: &str) -> String {
    let mut chars = text.chars();
    chars.next().map(|first| first.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::host::broker::plugin::types::ActionSpec;
    use serde_json::json;

    fn validators(schema: Value) -> Validators {
        let spec = ActionSpec {
            name: "act".into(),
            summary: None,
            description: None,
            payload_schema: Some(schema.to_string()),
        };
        let manifest = PluginManifest {
            name: "t".into(),
            version: "1".into(),
            description: None,
            tags: vec![],
            accepts: vec![spec],
            sends: vec![],
        };
        Validators::compile(&manifest).unwrap()
    }

    fn problems(v: &Validators, payload: Option<&str>) -> Vec<(String, Value)> {
        let raw = payload.map(|p| RawValue::from_string(p.to_owned()).unwrap());
        v.check("act", raw.as_deref()).unwrap_err().into_iter().map(|p| (p.kind, Value::Array(p.loc))).collect()
    }

    fn chat() -> Validators {
        validators(json!({
            "type": "object",
            "properties": {
                "name": {"type": "string", "minLength": 1},
                "count": {"type": ["integer", "null"], "maximum": 10},
                "inner": {"anyOf": [{"type": "object", "properties": {"flag": {"type": "boolean"}}, "required": ["flag"]}, {"type": "null"}]},
                "kind": {"enum": ["plain", "fancy"]}
            },
            "required": ["name"],
            "additionalProperties": false
        }))
    }

    #[test]
    fn a_value_the_validator_quotes_is_cut() {
        let v = validators(json!({"type": "array", "uniqueItems": true}));
        let long = "x".repeat(100_000);
        let payload = json!([long, long]).to_string();
        let problems = v.check("act", Some(&RawValue::from_string(payload).unwrap())).unwrap_err();
        assert_eq!(problems[0].kind, "value_error");
        assert!(problems[0].msg.len() < 200 && problems[0].msg.contains("…"), "{}", problems[0].msg);
    }

    #[test]
    fn every_problem_is_reported_at_its_field() {
        let got = problems(&chat(), Some(r#"{"count": 11, "extra": 1, "kind": "odd"}"#));
        let kinds: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(kinds.len(), 4, "{got:?}");
        for (kind, loc) in [
            ("missing", json!(["act", "payload", "name"])),
            ("less_than_equal", json!(["act", "payload", "count"])),
            ("extra_forbidden", json!(["act", "payload", "extra"])),
            ("enum", json!(["act", "payload", "kind"])),
        ] {
            assert!(got.contains(&(kind.to_owned(), loc.clone())), "{kind} at {loc} not in {got:?}");
        }
    }

    #[test]
    fn absent_payload_is_missing_and_wrong_shapes_are_typed() {
        assert_eq!(problems(&chat(), None), vec![("missing".to_owned(), json!(["act", "payload"]))]);
        assert_eq!(problems(&chat(), Some("[1]")), vec![("model_type".to_owned(), json!(["act", "payload"]))]);
        assert_eq!(problems(&chat(), Some("null")), vec![("model_type".to_owned(), json!(["act", "payload"]))]);
        let null = RawValue::from_string("null".into()).unwrap();
        let titled = validators(json!({"title": "Chat", "type": "object"}));
        assert_eq!(
            titled.check("act", Some(&null)).unwrap_err()[0].msg,
            "Input should be a valid dictionary or instance of Chat"
        );
        assert_eq!(
            chat().check("act", Some(&null)).unwrap_err()[0].msg,
            "Input should be a valid dictionary or instance of ActPayload"
        );
        let got = problems(&chat(), Some(r#"{"name": 5, "count": 1.5}"#));
        assert!(got.contains(&("string_type".to_owned(), json!(["act", "payload", "name"]))), "{got:?}");
        assert!(got.contains(&("int_from_float".to_owned(), json!(["act", "payload", "count"]))), "{got:?}");
    }

    #[test]
    fn an_optional_object_reports_the_object_branch() {
        let got = problems(&chat(), Some(r#"{"name": "a", "inner": {"flag": "yes"}}"#));
        assert_eq!(got, vec![("bool_type".to_owned(), json!(["act", "payload", "inner", "flag"]))]);
        let got = problems(&chat(), Some(r#"{"name": "a", "inner": 3}"#));
        assert_eq!(got, vec![("model_type".to_owned(), json!(["act", "payload", "inner"]))]);
    }

    #[test]
    fn messages_read_as_pydantic_writes_them() {
        let v = chat();
        let raw = RawValue::from_string(r#"{"name": "", "kind": "odd"}"#.to_owned()).unwrap();
        let msgs: Vec<String> = v.check("act", Some(&raw)).unwrap_err().into_iter().map(|p| p.msg).collect();
        assert!(msgs.contains(&"String should have at least 1 character".to_owned()), "{msgs:?}");
        assert!(msgs.contains(&"Input should be 'plain' or 'fancy'".to_owned()), "{msgs:?}");
        assert_eq!(alternatives(&[json!("a"), json!("b"), json!(3)]), "'a', 'b' or 3");
    }

    #[test]
    fn actions_without_schema_take_anything_and_bad_schemas_refuse_the_plugin() {
        let v = chat();
        assert!(v.check("other", None).is_ok());
        let mut manifest = PluginManifest {
            name: "t".into(),
            version: "1".into(),
            description: None,
            tags: vec![],
            accepts: vec![ActionSpec {
                name: "act".into(),
                summary: None,
                description: None,
                payload_schema: Some(r#"{"type": 5}"#.into()),
            }],
            sends: vec![],
        };
        assert!(Validators::compile(&manifest).err().unwrap().contains("not a valid JSON Schema"));
        manifest.accepts[0].payload_schema = Some("{".into());
        assert!(Validators::compile(&manifest).err().unwrap().contains("not JSON"));
    }
}
