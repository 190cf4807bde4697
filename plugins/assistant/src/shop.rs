//! The pizza shop: its menu and the four tools the assistant can call.

use plugin_sdk::{Error, Result, kv};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

/// (name, small, medium, large) prices in cents.
const MENU: &[(&str, u32, u32, u32)] = &[
    ("Margherita", 899, 1199, 1499),
    ("Pepperoni", 999, 1299, 1599),
    ("Hawaiian", 1049, 1349, 1649),
    ("Veggie", 949, 1249, 1549),
];

pub const SIZES: &[&str] = &["small", "medium", "large"];

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
                "items": {"type": "object", "required": ["item", "size"], "properties": {
                    "item": string, "size": {"type": "string", "enum": SIZES}, "quantity": {"type": "integer", "minimum": 1}}}}}}}},
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
    pub quantity: u32,
}

fn one() -> u32 {
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

/// Runs tool `name` with `arguments` (JSON text); the result is the text the client sees.
pub fn call(name: &str, arguments: &str) -> std::result::Result<String, ToolError> {
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
        "place_order" => args::<OrderArgs>(arguments).and_then(|a| exec(place_order(&a.items).map(|o| o.to_string()))),
        "order_status" => {
            args::<StatusArgs>(arguments).and_then(|a| exec(order_status(&a.order_id).map(|o| o.to_string())))
        }
        _ => Err(ToolError::Missing),
    }
}

pub fn dollars(cents: u32) -> String {
    format!("${}.{:02}", cents / 100, cents % 100)
}

pub fn menu_text() -> String {
    MENU.iter()
        .map(|(name, s, m, l)| format!("{name}: small {}, medium {}, large {}", dollars(*s), dollars(*m), dollars(*l)))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The menu's name for `item` (case-insensitive), with its prices.
pub fn find(item: &str) -> Option<(&'static str, u32, u32, u32)> {
    MENU.iter().copied().find(|(name, ..)| name.eq_ignore_ascii_case(item.trim()))
}

/// Every menu pizza named in `text`, in menu order.
pub fn mentioned(text: &str) -> Vec<&'static str> {
    let text = text.to_lowercase();
    MENU.iter().map(|(name, ..)| *name).filter(|name| text.contains(&name.to_lowercase())).collect()
}

fn price(item: &str, size: &str) -> Result<(&'static str, &'static str, u32)> {
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

/// Stores a new order under a fresh id (`ORD-0001`, ...) and returns it.
pub fn place_order(items: &[OrderItem]) -> Result<Value> {
    if items.is_empty() {
        return Err(Error::msg("an order needs at least one pizza"));
    }
    let mut total = 0;
    let mut lines = Vec::new();
    for item in items {
        let (name, size, cents) = price(&item.item, &item.size)?;
        total += cents * item.quantity.max(1);
        lines.push(json!({"item": name, "size": size, "quantity": item.quantity.max(1)}));
    }
    let id = format!("ORD-{:04}", next_order_number()?);
    let order = json!({"order_id": id, "items": lines, "total": dollars(total), "status": "received"});
    kv::set(&format!("order:{id}"), &order, None)?;
    Ok(order)
}

/// A shop-wide counter, safe against concurrent orders from other connections and instances.
fn next_order_number() -> Result<u64> {
    loop {
        let current = kv::get_raw("order-seq")?;
        let next = current.as_deref().and_then(|n| n.parse::<u64>().ok()).unwrap_or(0) + 1;
        if kv::compare_and_swap("order-seq", current.as_deref(), Some(&next.to_string()), None)? {
            return Ok(next);
        }
    }
}

pub fn order_status(order_id: &str) -> Result<Value> {
    let id = order_id.trim().to_uppercase();
    kv::get::<Value>(&format!("order:{id}"))?.ok_or_else(|| Error::msg(format!("no order {id}")))
}
