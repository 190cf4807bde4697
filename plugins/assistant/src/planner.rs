//! Without an LLM: pick the tools from the words of the message.

use plugin_sdk::{Context, Result};
use serde_json::{Value, json};

use crate::Out;
use crate::shop::{self, OrderItem, SIZES};

/// The session key of the connection's last order, for "where is my order?".
const LAST_ORDER: &str = "last_order";

pub fn answer(ctx: &Context, out: &Out, message: &str) -> Result<()> {
    let text = message.to_lowercase();
    let pizzas = shop::mentioned(&text);
    let size = SIZES.iter().copied().find(|size| text.contains(size)).unwrap_or("medium");

    if let Some(order_id) = order_id_in(message).or_else(|| wants_status(&text).then(|| last_order(ctx)).flatten()) {
        out.initial(&format!("Let me check on order {order_id}."))?;
        let status = out.tool("order_status", &json!({"order_id": order_id}).to_string())?;
        return out.final_response(&match serde_json::from_str::<Value>(&status) {
            Ok(order) => format!(
                "Order **{}** is *{}*: {} for {}.",
                order["order_id"].as_str().unwrap_or_default(),
                order["status"].as_str().unwrap_or_default(),
                describe(&order["items"]),
                order["total"].as_str().unwrap_or_default()
            ),
            Err(_) => format!("I could not find order {order_id}."),
        });
    }
    if wants_status(&text) {
        out.initial("Let me check on your order.")?;
        return out.final_response("I have no order for you yet: tell me its id, like `ORD-0001`.");
    }
    if !pizzas.is_empty()
        && ["order", "i want", "i'd like", "i would like", "buy", "get me"].iter().any(|w| text.contains(w))
    {
        let quantity = first_number(&text).unwrap_or(1);
        let items: Vec<OrderItem> =
            pizzas.iter().map(|p| OrderItem { item: p.to_string(), size: size.into(), quantity }).collect();
        out.initial("Placing your order now.")?;
        let placed = out.tool("place_order", &json!({"items": items}).to_string())?;
        return match serde_json::from_str::<Value>(&placed) {
            Ok(order) => {
                let id = order["order_id"].as_str().unwrap_or_default();
                ctx.session_set_json(LAST_ORDER, &id)?;
                out.final_response(&format!(
                    "Your order **{id}** is placed: {} for {}.",
                    describe(&order["items"]),
                    order["total"].as_str().unwrap_or_default()
                ))
            }
            Err(_) => out.final_response("I could not place that order."),
        };
    }
    if !pizzas.is_empty() && ["price", "how much", "cost"].iter().any(|w| text.contains(w)) {
        out.initial("Let me look up the price.")?;
        let mut lines = Vec::new();
        for pizza in &pizzas {
            lines.push(out.tool("get_price", &json!({"item": pizza, "size": size}).to_string())?);
        }
        return out.final_response(&lines.iter().map(|l| format!("- {l}")).collect::<Vec<_>>().join("\n"));
    }
    if ["menu", "pizzas", "what do you have", "options"].iter().any(|w| text.contains(w)) {
        out.initial("Let me check the menu for you.")?;
        let menu = out.tool("get_menu", "{}")?;
        return out.final_response(&format!(
            "## Our menu\n\n{}",
            menu.lines().map(|l| format!("- {l}")).collect::<Vec<_>>().join("\n")
        ));
    }
    out.initial("I'm the pizza shop assistant.")?;
    out.final_response(
        "I can show the **menu**, tell you a **price** (\"how much is a large Pepperoni?\"), take an **order** \
         (\"I'd like 2 small Margherita\") and check an **order's status** (\"status of ORD-0001\").",
    )
}

fn wants_status(text: &str) -> bool {
    ["status", "where is my order", "my order"].iter().any(|w| text.contains(w))
}

fn last_order(ctx: &Context) -> Option<String> {
    ctx.session_get_json::<String>(LAST_ORDER).ok().flatten()
}

/// `ORD-0001` (any case) in the message.
fn order_id_in(message: &str) -> Option<String> {
    let upper = message.to_uppercase();
    let start = upper.find("ORD-")?;
    let digits: String = upper[start + 4..].chars().take_while(|c| c.is_ascii_digit()).collect();
    (!digits.is_empty()).then(|| format!("ORD-{digits}"))
}

/// The first number in `text`, when it is not 0; a number past `u64` is `u64::MAX`, so that the
/// tool refuses it rather than the planner ordering one pizza instead.
fn first_number(text: &str) -> Option<u64> {
    text.split(|c: char| !c.is_ascii_digit())
        .find(|w| !w.is_empty())
        .map(|w| w.parse().unwrap_or(u64::MAX))
        .filter(|n| *n > 0)
}

fn describe(items: &Value) -> String {
    items
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|i| {
                    format!(
                        "{} × {} {}",
                        i["quantity"],
                        i["size"].as_str().unwrap_or_default(),
                        i["item"].as_str().unwrap_or_default()
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        })
        .unwrap_or_default()
}
