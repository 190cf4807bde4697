//! The pizza shop: its menu and the four tools the assistant can call.

use plugin_sdk::{Context, Error, Level, Result, kv};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::orders::Rules;

/// (name, small, medium, large) prices in cents.
const MENU: &[(&str, u64, u64, u64)] = &[
    ("Margherita", 899, 1199, 1499),
    ("Pepperoni", 999, 1299, 1599),
    ("Hawaiian", 1049, 1349, 1649),
    ("Veggie", 949, 1249, 1549),
];

pub const SIZES: &[&str] = &["small", "medium", "large"];

/// Pizzas one line of an order may ask for.
pub const MAX_QUANTITY: u64 = 50;
/// Lines one order may have.
pub const MAX_LINES: usize = 10;

/// The tools, as an OpenAI-compatible `tools` list.
pub fn tool_definitions() -> Value {
    let string = json!({"type": "string"});
    json!([
        {"type": "function", "function": {"name": "get_menu", "description": "The pizzas on the menu with their prices",
            "parameters": {"type": "object", "properties": {}}}},
        {"type": "function", "function": {"name": "get_price", "description": "The price of one pizza in one size",
            "parameters": {"type": "object", "required": ["item", "size"],
                "properties": {"item": string, "size": {"type": "string", "enum": SIZES}}}}},
        {"type": "function", "function": {"name": "place_order", "description": "Orders pizzas; returns the order id",
            "parameters": {"type": "object", "required": ["items"], "properties": {"items": {"type": "array",
                "minItems": 1, "maxItems": MAX_LINES,
                "items": {"type": "object", "required": ["item", "size"], "properties": {
                    "item": string, "size": {"type": "string", "enum": SIZES},
                    "quantity": {"type": "integer", "minimum": 1, "maximum": MAX_QUANTITY}}}}}}}},
        {"type": "function", "function": {"name": "order_status", "description": "The status of an order by id",
            "parameters": {"type": "object", "required": ["order_id"], "properties": {"order_id": string}}}},
    ])
}

/// Why a tool call produced no result, named as the stage the client sees.
pub enum ToolError {
    /// No such tool: `tool_missing`.
    Missing,
    /// The arguments are not JSON or do not fit the tool: `tool_args`.
    Args(String),
    /// The tool failed: `tool_exec`.
    Exec(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NoArgs {}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceArgs {
    item: String,
    size: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderItem {
    pub item: String,
    pub size: String,
    #[serde(default = "one")]
    pub quantity: u64,
}

fn one() -> u64 {
    1
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderArgs {
    items: Vec<OrderItem>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StatusArgs {
    order_id: String,
}

/// Runs tool `name` with `arguments` (JSON text) for the client of `ctx`, orders bound by `rules`;
/// the result is the text the client sees.
pub fn call(ctx: &Context, rules: &Rules, name: &str, arguments: &str) -> std::result::Result<String, ToolError> {
    fn args<T: serde::de::DeserializeOwned>(text: &str) -> std::result::Result<T, ToolError> {
        let text = if text.trim().is_empty() { "{}" } else { text };
        serde_json::from_str(text).map_err(|e| ToolError::Args(e.to_string()))
    }
    let exec = |result: Result<String>| result.map_err(|e| ToolError::Exec(e.to_string()));
    match name {
        "get_menu" => args::<NoArgs>(arguments).and_then(|_| exec(Ok(menu_text()))),
        "get_price" => args::<PriceArgs>(arguments).and_then(|a| {
            exec(price(&a.item, &a.size).map(|(pizza, size, cents)| format!("{pizza} ({size}): {}", dollars(cents))))
        }),
        "place_order" => {
            args::<OrderArgs>(arguments).and_then(|a| place_order(ctx, rules, &a.items).map(|o| o.to_string()))
        }
        "order_status" => {
            args::<StatusArgs>(arguments).and_then(|a| exec(order_status(&a.order_id).map(|o| o.to_string())))
        }
        _ => Err(ToolError::Missing),
    }
}

pub fn dollars(cents: u64) -> String {
    format!("${}.{:02}", cents / 100, cents % 100)
}

pub fn menu_text() -> String {
    MENU.iter()
        .map(|(name, s, m, l)| format!("{name}: small {}, medium {}, large {}", dollars(*s), dollars(*m), dollars(*l)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The menu's name for `item` (case-insensitive), with its prices.
pub fn find(item: &str) -> Option<(&'static str, u64, u64, u64)> {
    MENU.iter().copied().find(|(name, ..)| name.eq_ignore_ascii_case(item.trim()))
}

/// Every menu pizza named in `text`, in menu order.
pub fn mentioned(text: &str) -> Vec<&'static str> {
    let text = text.to_lowercase();
    MENU.iter().map(|(name, ..)| *name).filter(|name| text.contains(&name.to_lowercase())).collect()
}

fn price(item: &str, size: &str) -> Result<(&'static str, &'static str, u64)> {
    let (name, s, m, l) =
        find(item).ok_or_else(|| Error::msg(format!("there is no pizza called {item:?} on the menu")))?;
    let (size, cents) = match size.trim().to_lowercase().as_str() {
        "small" => ("small", s),
        "medium" => ("medium", m),
        "large" => ("large", l),
        other => return Err(Error::msg(format!("there is no size {other:?}: choose small, medium or large"))),
    };
    Ok((name, size, cents))
}

/// Stores a new order under a fresh id (`ORD-0001`, ...), kept for `rules.ttl_s`, and returns it.
/// Lines out of bounds are refused as bad arguments before anything is stored; an order past the
/// client's quota is refused as the tool's failure.
fn place_order(ctx: &Context, rules: &Rules, items: &[OrderItem]) -> std::result::Result<Value, ToolError> {
    let exec = |error: Error| ToolError::Exec(error.to_string());
    if items.is_empty() {
        return Err(ToolError::Args("an order needs at least one pizza".into()));
    }
    if items.len() > MAX_LINES {
        return Err(ToolError::Args(format!("an order has at most {MAX_LINES} lines, not {}", items.len())));
    }
    let mut total: u64 = 0;
    let mut lines = Vec::new();
    for item in items {
        if !(1..=MAX_QUANTITY).contains(&item.quantity) {
            return Err(ToolError::Args(format!(
                "quantity {} of {:?} is not between 1 and {MAX_QUANTITY}",
                item.quantity, item.item
            )));
        }
        let (name, size, cents) = price(&item.item, &item.size).map_err(exec)?;
        total = cents
            .checked_mul(item.quantity)
            .and_then(|line| total.checked_add(line))
            .ok_or_else(|| ToolError::Args("the order's total is too large".into()))?;
        lines.push(json!({"item": name, "size": size, "quantity": item.quantity}));
    }
    rules.check().map_err(exec)?;
    rules.take(ctx).map_err(exec)?.map_err(ToolError::Exec)?;
    let stored = next_order_number().and_then(|number| {
        let id = format!("ORD-{number:04}");
        let order = json!({"order_id": id, "items": lines, "total": dollars(total), "status": "received"});
        kv::set_json(&format!("order:{id}"), &order, Some(rules.ttl()))?;
        Ok(order)
    });
    if stored.is_err() {
        // The client is not charged for an order the store refused; the refusal is what it sees.
        if let Err(error) = rules.give_back(ctx) {
            ctx.log(Level::Warn, &format!("an order's quota was not given back: {error}"));
        }
    }
    stored.map_err(exec)
}

/// A shop-wide counter, safe against concurrent orders from other connections and instances.
fn next_order_number() -> Result<u64> {
    loop {
        let current = kv::get("order-seq")?;
        let next = current.as_deref().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0) + 1;
        if kv::compare_and_swap("order-seq", current.as_deref(), Some(&next.to_string()), None)? {
            return Ok(next);
        }
    }
}

pub fn order_status(order_id: &str) -> Result<Value> {
    let id = order_id.trim().to_uppercase();
    kv::get_json::<Value>(&format!("order:{id}"))?.ok_or_else(|| Error::msg(format!("no order {id}")))
}
