//! The bridge from the generated `handler` exports to a [`Plugin`].

use std::cell::OnceCell;
use std::marker::PhantomData;

use crate::bindings::broker::plugin::{host, types};
use crate::bindings::exports::broker::plugin::describe::{self, HandlerReplies};
use crate::bindings::exports::broker::plugin::dispatch;
use crate::bindings::exports::broker::plugin::handler::Guest;
use crate::context::Context;
use crate::error::{Error, Loc};
use crate::plugin::Plugin;

/// Supplies the plugin; implemented by `export_plugin!`.
pub trait Builder {
    /// The plugin; called once per instance.
    fn build() -> Plugin;
}

/// The exported world, for the plugin built by `B`.
pub struct Exports<B>(PhantomData<B>);

thread_local! {
    // A wasm instance is single-threaded and hosts exactly one plugin.
    static PLUGIN: OnceCell<Plugin> = const { OnceCell::new() };
}

fn with_plugin<B: Builder, T>(f: impl FnOnce(&Plugin) -> T) -> T {
    PLUGIN.with(|cell| {
        let plugin = cell.get_or_init(|| {
            // A panic traps the instance; say why in the broker's log before it does.
            std::panic::set_hook(Box::new(|info| host::log(types::Level::Error, &format!("plugin panicked: {info}"))));
            B::build()
        });
        f(plugin)
    })
}

impl<B: Builder> Guest for Exports<B> {
    fn manifest() -> types::PluginManifest {
        with_plugin::<B, _>(|plugin| plugin.manifest())
    }

    fn on_connect(ctx: types::Context) -> Result<(), types::Rejection> {
        let ctx = Context::new(ctx);
        with_plugin::<B, _>(|plugin| plugin.connect(&ctx))
            .map_err(|reject| types::Rejection { code: reject.code, reason: reject.reason })
    }

    fn on_message(
        ctx: types::Context,
        action: String,
        payload: Option<String>,
    ) -> Result<Option<String>, types::HandlerError> {
        let ctx = Context::new(ctx);
        with_plugin::<B, _>(|plugin| plugin.message(&ctx, &action, payload.as_deref())).map_err(handler_error)
    }

    fn on_disconnect(ctx: types::Context) {
        let ctx = Context::new(ctx);
        with_plugin::<B, _>(|plugin| plugin.disconnect(&ctx));
    }
}

/// What the broker calls for a message, the action given by its place in the manifest.
impl<B: Builder> dispatch::Guest for Exports<B> {
    fn on_frame(connection: u64, action: u32, payload: Option<String>) -> Result<Option<String>, types::HandlerError> {
        let ctx = Context::of_connection(connection);
        with_plugin::<B, _>(|plugin| plugin.message_at(&ctx, action, payload.as_deref())).map_err(handler_error)
    }
}

fn handler_error(error: Error) -> types::HandlerError {
    match error {
        Error::Failed(message) => types::HandlerError::Failed(message),
        Error::Invalid(issues) => types::HandlerError::Invalid(
            issues
                .into_iter()
                .map(|issue| types::Issue {
                    kind: issue.kind,
                    loc: issue
                        .loc
                        .into_iter()
                        .map(|loc| match loc {
                            Loc::Key(key) => types::LocItem::Key(key),
                            Loc::Index(index) => types::LocItem::Index(index),
                        })
                        .collect(),
                    msg: issue.msg,
                })
                .collect(),
        ),
    }
}

impl<B: Builder> describe::Guest for Exports<B> {
    fn replies() -> Vec<HandlerReplies> {
        with_plugin::<B, _>(|plugin| {
            plugin.replies().into_iter().map(|(action, replies)| HandlerReplies { action, replies }).collect()
        })
    }

    fn raw_frames() -> Vec<types::ActionSpec> {
        with_plugin::<B, _>(|plugin| plugin.raw_frames())
    }
}
