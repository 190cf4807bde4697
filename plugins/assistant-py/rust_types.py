"""The Rust build's serde types, as `serde_json.from_str` reads them: the tools' arguments, the model's
completion and the plugin's settings (plugins/assistant/src: shop.rs, llm.rs, lib.rs, orders.rs).
Apart from the SDK, so tests/all/parity.rs can hold them to serde_json's own errors."""

from serde_json import Field, Opt, Seq, Str, Struct, U32, U64, Value

NO_ARGS = Struct("NoArgs", [], deny_unknown=True)
PRICE_ARGS = Struct("PriceArgs", [Field("item", Str), Field("size", Str)], deny_unknown=True)
ORDER_ITEM = Struct(
    "OrderItem",
    [Field("item", Str), Field("size", Str), Field("quantity", U64, 1, True)],
    deny_unknown=True,
)
ORDER_ARGS = Struct("OrderArgs", [Field("items", Seq(ORDER_ITEM))], deny_unknown=True)
STATUS_ARGS = Struct("StatusArgs", [Field("order_id", Str)], deny_unknown=True)

COMPLETION = Struct("Completion", [Field("choices", Seq(Struct("Choice", [Field("message", Value)])))])

# `[plugins.<name>.settings.llm]`: `base_url` (`https://api.openai.com/v1`, or any
# OpenAI-compatible server), `model`, `api_key_env` (the environment variable with the API key;
# broker.toml must pass it to the plugin with `env`) and `timeout_ms`.
LLM_SETTINGS = Struct(
    "Settings",
    [
        Field("base_url", Str),
        Field("model", Str),
        Field("api_key_env", Opt(Str)),
        Field("timeout_ms", U64, 30_000, True),
    ],
    deny_unknown=True,
)
# `[plugins.<name>.settings.orders]`.
RULES = Struct(
    "Rules",
    [Field("max_per_client", U32, 10, True), Field("ttl_s", U64, 24 * 60 * 60, True)],
    deny_unknown=True,
)
# `[plugins.<name>.settings]`.
SETTINGS = Struct(
    "Settings",
    [Field("llm", Opt(LLM_SETTINGS)), Field("orders", RULES, {"max_per_client": 10, "ttl_s": 86400}, True)],
)

# By the Rust type's name, for the tests.
BY_NAME = {
    "NoArgs": NO_ARGS,
    "PriceArgs": PRICE_ARGS,
    "OrderArgs": ORDER_ARGS,
    "StatusArgs": STATUS_ARGS,
    "Completion": COMPLETION,
    "Settings": SETTINGS,
    "Value": Value,
}
