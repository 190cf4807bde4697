//! Without a model: the deterministic planner picks the tools; the broker checks payloads against
//! the schema the plugin published.

use serde_json::json;

use super::{Lang, MENU, Mount, ROUTE, ask, assert_frames, assistant, final_response, initial, order_text};
use super::{tool_failure, tool_result};

per_language!(
    without_a_model_the_planner_answers_menu_price_order_and_status,
    the_planner_explains_itself_and_payloads_are_checked_against_its_schema,
    exit_says_goodbye_and_closes_normally,
);

async fn without_a_model_the_planner_answers_menu_price_order_and_status(lang: Lang) {
    let broker = Mount::default().launch(lang);
    let mut client = assistant(&broker, ROUTE).await;

    let asked = "What pizzas do you have?";
    let menu_list = MENU.lines().map(|l| format!("- {l}")).collect::<Vec<_>>().join("\n");
    assert_frames(
        lang,
        asked,
        &ask(&mut client, asked).await,
        &[
            initial("Let me check the menu for you."),
            tool_result("get_menu", MENU),
            final_response(&format!("## Our menu\n\n{menu_list}")),
        ],
    );

    let asked = "How much is a large pepperoni?";
    assert_frames(
        lang,
        asked,
        &ask(&mut client, asked).await,
        &[
            initial("Let me look up the price."),
            tool_result("get_price", "Pepperoni (large): $15.99"),
            final_response("- Pepperoni (large): $15.99"),
        ],
    );

    let asked = "I'd like to order 2 small Hawaiian";
    let order = order_text("ORD-0001", &[("Hawaiian", "small", 2)], "$20.98");
    assert_frames(
        lang,
        asked,
        &ask(&mut client, asked).await,
        &[
            initial("Placing your order now."),
            tool_result("place_order", &order),
            final_response("Your order **ORD-0001** is placed: 2 × small Hawaiian for $20.98."),
        ],
    );

    // The order lives in the plugin's key-value store: another connection finds it by id.
    let status = [
        initial("Let me check on order ORD-0001."),
        tool_result("order_status", &order),
        final_response("Order **ORD-0001** is *received*: 2 × small Hawaiian for $20.98."),
    ];
    let mut other = assistant(&broker, ROUTE).await;
    let asked = "What is the status of ord-0001?";
    assert_frames(lang, asked, &ask(&mut other, asked).await, &status);
    // ... and the first connection's session remembers its last order; the other has none.
    let asked = "Where is my order?";
    assert_frames(lang, asked, &ask(&mut client, asked).await, &status);
    assert_frames(
        lang,
        asked,
        &ask(&mut other, asked).await,
        &[
            initial("Let me check on your order."),
            final_response("I have no order for you yet: tell me its id, like `ORD-0001`."),
        ],
    );

    let asked = "status of ORD-9999";
    assert_frames(
        lang,
        asked,
        &ask(&mut other, asked).await,
        &[
            initial("Let me check on order ORD-9999."),
            tool_failure("tool_exec", "order_status", "no order ORD-9999"),
            final_response("I could not find order ORD-9999."),
        ],
    );
}

async fn the_planner_explains_itself_and_payloads_are_checked_against_its_schema(lang: Lang) {
    let broker = Mount::default().launch(lang);
    let mut client = assistant(&broker, ROUTE).await;
    let asked = "hello";
    assert_frames(
        lang,
        asked,
        &ask(&mut client, asked).await,
        &[
            initial("I'm the pizza shop assistant."),
            final_response(
                "I can show the **menu**, tell you a **price** (\"how much is a large Pepperoni?\"), take an \
                 **order** (\"I'd like 2 small Margherita\") and check an **order's status** (\"status of ORD-0001\").",
            ),
        ],
    );
    // The plugin's published schema makes the broker refuse what the handler would not take.
    let missing = client.request(json!({"action": "user_message", "payload": {}, "ref": "m"})).await;
    let expected = json!({"action": "error", "ref": "m", "payload": [
        {"type": "missing", "loc": ["user_message", "payload", "message"], "msg": "Field required"}
    ]});
    assert_eq!(missing, expected, "{lang:?}");
    let wrong = client.request(json!({"action": "user_message", "payload": {"message": 7}, "ref": "w"})).await;
    let expected = json!({"action": "error", "ref": "w", "payload": [
        {"type": "string_type", "loc": ["user_message", "payload", "message"], "msg": "Input should be a valid string"}
    ]});
    assert_eq!(wrong, expected, "{lang:?}");
    let unknown = client.request(json!({"action": "bake", "ref": "u"})).await;
    let expected = json!({"action": "error", "ref": "u", "payload": [{"type": "union_tag_invalid", "loc": [],
        "msg": "Input tag 'bake' found using 'action' does not match any of the expected tags: 'exit', 'ping', 'user_message'"}]});
    assert_eq!(unknown, expected, "{lang:?}");
    client.assert_alive().await;
}

async fn exit_says_goodbye_and_closes_normally(lang: Lang) {
    let broker = Mount::default().launch(lang);
    let mut client = assistant(&broker, ROUTE).await;
    client.send(json!({"action": "exit"})).await;
    let goodbye = client.recv().await;
    let expected =
        json!({"status": "success", "type": "goodbye", "message": "Thank you for visiting the pizza shop. Goodbye!"});
    assert_eq!(goodbye, expected, "{lang:?}");
    assert_eq!(client.recv_close().await, (1000, "goodbye".to_owned()), "{lang:?}");
}
