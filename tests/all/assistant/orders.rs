//! What bounds the orders: quantities and lines, a quota per client, a lifetime per order.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::{Lang, Mount, ROUTE, ask, assert_frames, assistant, final_response, initial, order_text, stages};
use super::{tool_failure, tool_result};
use crate::harness::eventually;

per_language!(
    a_quantity_past_the_bounds_is_refused_as_bad_arguments_and_nothing_is_stored,
    one_connection_past_its_order_quota_is_refused_and_another_still_orders,
    an_authenticated_user_has_one_quota_over_all_its_connections,
    an_order_expires_after_its_ttl,
);

/// The order a `tool_result` of `place_order` answered.
fn placed(lang: Lang, frames: &[Value]) -> Value {
    assert_eq!(
        stages(frames),
        ["initial_response", "tool_result:place_order", "final_response"],
        "{lang:?}: {frames:?}"
    );
    serde_json::from_str(frames[1]["response"].as_str().unwrap()).unwrap()
}

async fn a_quantity_past_the_bounds_is_refused_as_bad_arguments_and_nothing_is_stored(lang: Lang) {
    let broker = Mount::default().launch(lang);
    let mut client = assistant(&broker, ROUTE).await;
    // 3368133419 × $8.99 wraps a u32 to one cent; a number past u64 must not become "one pizza".
    for (asked, why) in [
        ("I'd like 3368133419 small Margherita", r#"quantity 3368133419 of "Margherita""#),
        ("I'd like 51 small Margherita", r#"quantity 51 of "Margherita""#),
        ("order 99999999999999999999999 large Veggie", r#"quantity 18446744073709551615 of "Veggie""#),
    ] {
        assert_frames(
            lang,
            asked,
            &ask(&mut client, asked).await,
            &[
                initial("Placing your order now."),
                tool_failure(
                    "tool_args",
                    "place_order",
                    &format!("bad arguments for place_order: {why} is not between 1 and 50"),
                ),
                final_response("I could not place that order."),
            ],
        );
    }
    let asked = "status of ORD-0001";
    assert_frames(
        lang,
        asked,
        &ask(&mut client, asked).await,
        &[
            initial("Let me check on order ORD-0001."),
            tool_failure("tool_exec", "order_status", "no order ORD-0001"),
            final_response("I could not find order ORD-0001."),
        ],
    );
    // Nothing was stored, not even an order number: the first good order is ORD-0001.
    let asked = "I'd like 50 large Hawaiian";
    assert_frames(
        lang,
        asked,
        &ask(&mut client, asked).await,
        &[
            initial("Placing your order now."),
            tool_result("place_order", &order_text("ORD-0001", &[("Hawaiian", "large", 50)], "$824.50")),
            final_response("Your order **ORD-0001** is placed: 50 × large Hawaiian for $824.50."),
        ],
    );
}

async fn one_connection_past_its_order_quota_is_refused_and_another_still_orders(lang: Lang) {
    let broker = Mount { orders: "max_per_client = 3", ..Mount::default() }.launch(lang);
    let mut greedy = assistant(&broker, ROUTE).await;
    for n in 1..=3 {
        let order = placed(lang, &ask(&mut greedy, "I'd like 1 small Margherita").await);
        assert_eq!(order["order_id"], format!("ORD-000{n}"), "{lang:?}");
    }
    for _ in 0..2 {
        let asked = "I'd like 1 small Margherita";
        assert_frames(
            lang,
            asked,
            &ask(&mut greedy, asked).await,
            &[
                initial("Placing your order now."),
                tool_failure(
                    "tool_exec",
                    "place_order",
                    "order refused: one connection may place at most 3 orders (settings.orders.max_per_client)",
                ),
                final_response("I could not place that order."),
            ],
        );
    }
    // The refusals stored nothing, and the quota is the connection's, not the shop's.
    let mut other = assistant(&broker, ROUTE).await;
    assert_eq!(placed(lang, &ask(&mut other, "I'd like 2 large Veggie").await)["order_id"], "ORD-0004", "{lang:?}");
    greedy.assert_alive().await;
}

async fn an_authenticated_user_has_one_quota_over_all_its_connections(lang: Lang) {
    const SECRET: &str = "assistant-test-secret";
    let extra = format!(
        r#"
[[routes]]
path = "/ws/pizza-auth"
plugin = "pizza"
auth = "optional"

[auth]
hs256_secret = "{SECRET}"
audience = ["assistant-tests"]
"#
    );
    let broker = Mount { orders: "max_per_client = 2", extra: &extra, ..Mount::default() }.launch(lang);
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 600;
    let token = |sub: &str| {
        let claims = json!({"sub": sub, "exp": exp, "aud": "assistant-tests"});
        let key = jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes());
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &claims, &key).unwrap()
    };
    let ada = format!("/ws/pizza-auth?token={}", token("ada"));
    let mut first = assistant(&broker, &ada).await;
    let mut second = assistant(&broker, &ada).await;
    let asked = "I'd like 1 small Pepperoni";
    placed(lang, &ask(&mut first, asked).await);
    placed(lang, &ask(&mut second, asked).await);
    let refused = [
        initial("Placing your order now."),
        tool_failure(
            "tool_exec",
            "place_order",
            "order refused: \"ada\" may place at most 2 orders until 86400s after its last one \
             (settings.orders.max_per_client)",
        ),
        final_response("I could not place that order."),
    ];
    for client in [&mut first, &mut second, &mut assistant(&broker, &ada).await] {
        assert_frames(lang, asked, &ask(client, asked).await, &refused);
    }
    let mut grace = assistant(&broker, &format!("/ws/pizza-auth?token={}", token("grace"))).await;
    placed(lang, &ask(&mut grace, asked).await);
    let mut anonymous = assistant(&broker, "/ws/pizza-auth").await;
    placed(lang, &ask(&mut anonymous, asked).await);
}

async fn an_order_expires_after_its_ttl(lang: Lang) {
    let broker = Mount { orders: "ttl_s = 1", ..Mount::default() }.launch(lang);
    let mut client = assistant(&broker, ROUTE).await;
    let placed_at = Instant::now();
    let id =
        placed(lang, &ask(&mut client, "I'd like 1 small Margherita").await)["order_id"].as_str().unwrap().to_owned();
    let (client, id) = (&tokio::sync::Mutex::new(client), &id);
    let status = || async move { stages(&ask(&mut *client.lock().await, &format!("status of {id}")).await) };
    assert_eq!(status().await, ["initial_response", "tool_result:order_status", "final_response"], "{lang:?}");
    eventually("the order expired", || async move {
        status().await == ["initial_response", "tool_exec:order_status", "final_response"]
    })
    .await;
    assert!(placed_at.elapsed() >= Duration::from_millis(900), "{lang:?}: gone after {:?}", placed_at.elapsed());
}
