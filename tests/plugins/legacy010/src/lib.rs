//! A plugin written against the raw 0.1.0 bindings: proves the broker keeps loading it.

// The bindings wit-bindgen generates here (without plugin-sdk) export functions by name and read
// guest memory with `unsafe`; that code is the generator's, checked by its own tests.
#![allow(unsafe_code)]

wit_bindgen::generate!({ path: "wit", world: "plugin" });

use broker::plugin::host;
use broker::plugin::types::{ActionSpec, Context, HandlerError, PluginManifest, Rejection};
use exports::broker::plugin::handler::Guest;

struct Legacy;

impl Guest for Legacy {
    fn manifest() -> PluginManifest {
        let spec =
            |name: &str| ActionSpec { name: name.into(), summary: None, description: None, payload_schema: None };
        PluginManifest {
            name: "legacy".into(),
            version: "0.1.0".into(),
            description: None,
            tags: Vec::new(),
            accepts: vec![spec("hello")],
            sends: vec![spec("hello")],
        }
    }

    fn on_connect(ctx: Context) -> Result<(), Rejection> {
        let _ = host::send(ctx.connection, r#"{"action":"hello","payload":"welcome from 0.1.0"}"#);
        Ok(())
    }

    fn on_message(_ctx: Context, _action: String, _payload: Option<String>) -> Result<Option<String>, HandlerError> {
        Ok(Some(r#"{"action":"hello","payload":"still here"}"#.into()))
    }

    fn on_disconnect(_ctx: Context) {}
}

export!(Legacy);
