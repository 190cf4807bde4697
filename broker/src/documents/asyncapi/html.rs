//! The AsyncAPI document as one readable HTML page: rendered here, with inline styles, so it works
//! offline (no CDN, no script).

use std::fmt::Write;

use serde_json::Value;

/// The page for `doc` (an AsyncAPI 3.0 document built by [`super::document`]).
pub fn render(doc: &super::model::Document) -> String {
    // The page follows references through the document as JSON, as a reader of the JSON would.
    render_value(&serde_json::to_value(doc).unwrap_or_default())
}

fn render_value(doc: &Value) -> String {
    let mut page = String::new();
    let title = doc["info"]["title"].as_str().unwrap_or("AsyncAPI");
    let _ = write!(
        page,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title} · AsyncAPI</title><style>{STYLE}</style></head><body>\
         <h1>{title} <small>{version}</small></h1>{description}\
         <p class=\"links\">AsyncAPI {asyncapi}: <a href=\"/asyncapi.json\">JSON</a> · <a href=\"/asyncapi.yaml\">YAML</a></p>",
        title = escape(title),
        version = escape(doc["info"]["version"].as_str().unwrap_or("")),
        description = paragraphs(doc["info"]["description"].as_str().unwrap_or("")),
        asyncapi = escape(doc["asyncapi"].as_str().unwrap_or("")),
    );
    if let Some(servers) = doc["servers"].as_object() {
        page.push_str("<h2>Servers</h2><ul>");
        for (name, server) in servers {
            let _ = write!(
                page,
                "<li><b>{}</b>: <code>{}://{}</code></li>",
                escape(name),
                escape(server["protocol"].as_str().unwrap_or("")),
                escape(server["host"].as_str().unwrap_or(""))
            );
        }
        page.push_str("</ul>");
    }
    page.push_str("<h2>Channels</h2><nav><ul>");
    let channels = doc["channels"].as_object().cloned().unwrap_or_default();
    for (id, channel) in &channels {
        let _ = write!(
            page,
            "<li><a href=\"#{}\"><code>{}</code></a></li>",
            escape(id),
            escape(channel["address"].as_str().unwrap_or(id))
        );
    }
    page.push_str("</ul></nav>");
    for (id, channel) in &channels {
        render_channel(&mut page, doc, id, channel);
    }
    page.push_str("</body></html>\n");
    page
}

fn render_channel(page: &mut String, doc: &Value, id: &str, channel: &Value) {
    let _ = write!(
        page,
        "<section id=\"{}\"><h2><code>{}</code></h2>{}",
        escape(id),
        escape(channel["address"].as_str().unwrap_or(id)),
        paragraphs(channel["description"].as_str().unwrap_or(""))
    );
    if let Some(parameters) = channel["parameters"].as_object() {
        page.push_str("<h3>Parameters</h3><dl>");
        for (name, parameter) in parameters {
            let _ = write!(
                page,
                "<dt><code>{{{}}}</code></dt><dd>{}</dd>",
                escape(name),
                escape(parameter["description"].as_str().unwrap_or(""))
            );
        }
        page.push_str("</dl>");
    }
    let operations: Vec<&Value> = doc["operations"]
        .as_object()
        .map(|ops| {
            ops.values().filter(|op| op["channel"]["$ref"].as_str() == Some(&format!("#/channels/{id}"))).collect()
        })
        .unwrap_or_default();
    for (action, heading) in [("receive", "Clients send"), ("send", "The broker sends")] {
        let _ = write!(page, "<h3>{heading}</h3>");
        for op in operations.iter().filter(|op| op["action"] == action) {
            for message_ref in op["messages"].as_array().into_iter().flatten() {
                let Some(message) = resolve(doc, message_ref) else { continue };
                render_message(page, doc, message, op);
            }
        }
    }
    page.push_str("</section>");
}

fn render_message(page: &mut String, doc: &Value, message: &Value, op: &Value) {
    let name = message["name"].as_str().unwrap_or("");
    let _ = write!(page, "<article><h4><code>{}</code></h4>", escape(name));
    if let Some(summary) = message["summary"].as_str().or(op["summary"].as_str()) {
        let _ = write!(page, "<p>{}</p>", escape(summary));
    }
    if let Some(description) = message["description"].as_str()
        && Some(description) != message["summary"].as_str()
    {
        page.push_str(&paragraphs(description));
    }
    if let Some(replies) = op["reply"]["messages"].as_array() {
        let names: Vec<String> = replies
            .iter()
            .filter_map(|r| resolve(doc, r))
            .map(|m| format!("<code>{}</code>", escape(m["name"].as_str().unwrap_or(""))))
            .collect();
        let _ = write!(page, "<p class=\"reply\">Answered with {}</p>", names.join(" or "));
    }
    let frame = resolve(doc, &message["payload"]).unwrap_or(&message["payload"]);
    let payload = &frame["properties"]["payload"];
    let shown = resolve(doc, payload).unwrap_or(payload);
    let pretty = serde_json::to_string_pretty(shown).unwrap_or_default();
    let _ =
        write!(page, "<details><summary>payload schema</summary><pre>{}</pre></details></article>", escape(&pretty));
}

/// Follows local `$ref`s (`#/a/b/c`, a channel's message to its component); the value itself when
/// it is not a reference.
fn resolve<'a>(doc: &'a Value, mut value: &'a Value) -> Option<&'a Value> {
    for _ in 0..4 {
        match value.get("$ref").and_then(Value::as_str) {
            Some(pointer) => value = doc.pointer(pointer.strip_prefix('#')?)?,
            None => return Some(value),
        }
    }
    None
}

fn paragraphs(text: &str) -> String {
    text.split("\n\n").filter(|p| !p.trim().is_empty()).map(|p| format!("<p>{}</p>", escape(p))).collect()
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = "body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}\
h1 small{font-size:.5em;color:#777}section{border-top:1px solid #ddd;margin-top:2rem}\
article{border-left:3px solid #8ab;padding:.2rem .8rem;margin:.8rem 0;background:#f8fafb}\
pre{background:#fff;border:1px solid #eee;padding:.5rem;overflow:auto}code{font-family:ui-monospace,monospace}\
.reply{color:#356}.links a{margin:0 .2rem}";

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_is_escaped_and_references_followed() {
        let doc = json!({
            "asyncapi": "3.0.0",
            "info": {"title": "<b>", "version": "1", "description": "one\n\ntwo"},
            "channels": {"c": {"address": "/ws", "messages": {"m": {"$ref": "#/components/messages/m"}}}},
            "operations": {"o": {"action": "receive", "channel": {"$ref": "#/channels/c"}, "messages": [{"$ref": "#/channels/c/messages/m"}]}},
            "components": {
                "messages": {"m": {"name": "hi", "payload": {"$ref": "#/components/schemas/f"}}},
                "schemas": {"f": {"properties": {"payload": {"$ref": "#/components/schemas/s"}}}, "s": {"type": "object", "title": "a<b"}},
            },
        });
        let page = render_value(&doc);
        assert!(page.contains("<h1>&lt;b&gt;"), "{page}");
        assert!(page.contains("<p>one</p><p>two</p>"));
        assert!(page.contains("<code>hi</code>"));
        assert!(page.contains("a&lt;b"), "the referenced schema is shown");
    }
}
