//! With a model: the scripted LLM picks the tools through the allow-list; its faults, its
//! slowness, a host off the list, and a model that never answers, bounded by the broker's deadline.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::scripted::{NEVER, Scripted, ScriptedLlm, answer, model_message, tool_calls};
use super::{Lang, MENU, Model, Mount, ROUTE, SYSTEM, ask, assert_frames, assistant, exception, final_response};
use super::{initial, tool_definitions, tool_failure, tool_result};
use crate::harness::WAIT;

per_language!(
    the_model_picks_tools_and_the_broker_sends_what_it_asked_for,
    each_fault_has_its_error_stage_and_the_connection_stays_usable,
    a_slow_model_delays_no_other_connection,
    a_host_off_the_allow_list_is_never_contacted,
    a_model_that_never_answers_ends_in_plugin_timeout_and_bystanders_are_served,
    a_model_asking_for_too_many_pizzas_or_lines_gets_tool_args,
);

async fn the_model_picks_tools_and_the_broker_sends_what_it_asked_for(lang: Lang) {
    let call = ("call_1", "get_price", r#"{"item": "margherita", "size": "large"}"#);
    let llm = ScriptedLlm::start(vec![
        tool_calls("Let me look that up.", &[call]),
        answer("A **large Margherita** is $14.99."),
    ])
    .await;
    let broker = Mount::scripted(&llm, 5000).launch(lang);
    let mut client = assistant(&broker, ROUTE).await;
    let asked = "Price of a large margherita?";
    assert_frames(
        lang,
        asked,
        &ask(&mut client, asked).await,
        &[
            initial("Let me look that up."),
            tool_result("get_price", "Margherita (large): $14.99"),
            final_response("A **large Margherita** is $14.99."),
        ],
    );

    let requests = llm.requests();
    assert_eq!(requests.len(), 2, "{lang:?}");
    // The API key reached the plugin from the broker's environment, and the model through it.
    assert!(requests.iter().all(|(auth, _)| auth.as_deref() == Some("Bearer test-secret")), "{lang:?}: {requests:?}");
    let system = json!({"role": "system", "content": SYSTEM});
    let user = json!({"role": "user", "content": asked});
    let request = |messages: &[&Value]| json!({"model": "scripted", "messages": messages, "tools": tool_definitions()});
    assert_eq!(requests[0].1, request(&[&system, &user]), "{lang:?}: the first request");
    // The second carries the model's own message and the tool's answer for the call it made.
    let asked_for = model_message("Let me look that up.", &[call]);
    let tool = json!({"role": "tool", "tool_call_id": "call_1", "content": "Margherita (large): $14.99"});
    assert_eq!(requests[1].1, request(&[&system, &user, &asked_for, &tool]), "{lang:?}: the second request");

    // The conversation is kept in the session: the next question comes after the last answer.
    let asked_again = "Thanks!";
    let ended = format!("the model could not be reached: {} answered 500: {{\"error\":\"script ended\"}}", llm.url());
    assert_frames(lang, asked_again, &ask(&mut client, asked_again).await, &[exception(&ended)]);
    let reply = json!({"role": "assistant", "content": "A **large Margherita** is $14.99."});
    let next = json!({"role": "user", "content": asked_again});
    assert_eq!(
        llm.requests()[2].1,
        request(&[&system, &user, &asked_for, &tool, &reply, &next]),
        "{lang:?}: the third request, with the conversation so far"
    );
}

async fn each_fault_has_its_error_stage_and_the_connection_stays_usable(lang: Lang) {
    let llm = ScriptedLlm::start(vec![
        tool_calls(
            "",
            &[
                ("c1", "bake_cake", "{}"),
                ("c2", "get_price", "{not json"),
                ("c3", "get_price", r#"{"item": "margherita"}"#),
                ("c4", "get_price", r#"{"item": "calzone", "size": "large"}"#),
            ],
        ),
        answer("Sorry, some of that did not work."),
        Scripted { status: 500, body: json!({"error": "overloaded"}), delay: Duration::ZERO },
        Scripted { status: 200, body: answer("too late").body, delay: Duration::from_secs(3) },
    ])
    .await;
    let broker = Mount::scripted(&llm, 1000).launch(lang);
    let mut client = assistant(&broker, ROUTE).await;
    let asked = "do things";
    assert_frames(
        lang,
        asked,
        &ask(&mut client, asked).await,
        &[
            initial("Let me check that for you."),
            tool_failure("tool_missing", "bake_cake", r#"there is no tool named "bake_cake""#),
            tool_failure(
                "tool_args",
                "get_price",
                "bad arguments for get_price: key must be a string at line 1 column 2",
            ),
            tool_failure(
                "tool_args",
                "get_price",
                "bad arguments for get_price: missing field `size` at line 1 column 22",
            ),
            tool_failure("tool_exec", "get_price", r#"there is no pizza called "calzone" on the menu"#),
            final_response("Sorry, some of that did not work."),
        ],
    );

    let asked = "hello?";
    assert_frames(
        lang,
        asked,
        &ask(&mut client, asked).await,
        &[exception(&format!(
            "the model could not be reached: {} answered 500: {{\"error\":\"overloaded\"}}",
            llm.url()
        ))],
    );
    client.assert_alive().await;

    // A model slower than the assistant's own `timeout_ms` (1 s) fails the request, in the plugin.
    let asked = "anyone?";
    let started = Instant::now();
    assert_frames(
        lang,
        asked,
        &ask(&mut client, asked).await,
        &[exception(&format!("the model could not be reached: {}: ErrorCode::ConnectionReadTimeout", llm.url()))],
    );
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900) && took < Duration::from_millis(2900), "{lang:?}: {took:?}");
    client.assert_alive().await;
}

async fn a_slow_model_delays_no_other_connection(lang: Lang) {
    let llm = ScriptedLlm::start(vec![Scripted { delay: Duration::from_secs(2), ..answer("Here you are.") }]).await;
    let broker = Mount::scripted(&llm, 10_000).launch(lang);
    let mut waiting = assistant(&broker, ROUTE).await;
    let mut echo = broker.echo_client().await;
    let mut alice = broker.connect("/ws/chat/slow-model").await;
    let mut bob = broker.connect("/ws/chat/slow-model").await;
    alice.assert_alive().await;
    bob.assert_alive().await;

    let asked = Instant::now();
    waiting.send(json!({"action": "user_message", "payload": {"message": "hi"}})).await;
    for n in 0..20 {
        let reply = echo.request(json!({"action": "user_message", "payload": {"message": n.to_string()}})).await;
        assert_eq!(reply["payload"]["message"], format!("🔧 System Echo: {n}"));
        alice.send(json!({"action": "new_chat_message", "payload": {"message": n.to_string(), "name": "A"}})).await;
        assert_eq!(bob.recv().await["payload"]["message"], n.to_string());
    }
    let others_done = asked.elapsed();
    let first = waiting.recv().await;
    let model_answered = asked.elapsed();
    assert_eq!(first, initial("Here you are."), "{lang:?}");
    assert_eq!(waiting.recv().await, final_response("Here you are."), "{lang:?}");
    eprintln!("{lang:?}: 40 echo and chat round trips took {others_done:?} while the model took {model_answered:?}");
    assert!(others_done < Duration::from_secs(2), "{lang:?}: other connections waited for the model: {others_done:?}");
    assert!(model_answered >= Duration::from_secs(2), "{lang:?}: {model_answered:?}");
}

async fn a_host_off_the_allow_list_is_never_contacted(lang: Lang) {
    let llm = ScriptedLlm::start(vec![answer("nobody should read this")]).await;
    let model = Model { allow: "127.0.0.1:1".into(), ..Model::scripted(&llm, 2000) };
    let broker = Mount { model: Some(model), ..Mount::default() }.launch(lang);
    let mut client = assistant(&broker, ROUTE).await;
    let asked = "menu please";
    assert_frames(
        lang,
        asked,
        &ask(&mut client, asked).await,
        &[exception(&format!("the model could not be reached: {}: ErrorCode::HttpRequestDenied", llm.url()))],
    );
    // The plugin was refused before any connection: the test's probe is the only one ever accepted.
    let connections = llm.all_connections().await;
    assert_eq!(connections.len(), 1, "{lang:?}: the denied host was contacted: {connections:?}");
    assert!(llm.requests().is_empty(), "{lang:?}");
    client.assert_alive().await;
}

/// The deadline of issue 22: a plugin blocked on a pollable runs no wasm, so epochs cannot stop it;
/// the broker's timer must. Here the model accepts the request and never answers, and the
/// assistant would wait a minute for it.
async fn a_model_that_never_answers_ends_in_plugin_timeout_and_bystanders_are_served(lang: Lang) {
    const TIMEOUT_MS: u64 = 3000;
    const TIMEOUT: Duration = Duration::from_millis(TIMEOUT_MS);
    /// Generous: two shared cores, and a plugin instance to create for each bystander.
    const SLACK: Duration = Duration::from_millis(2000);
    let llm = ScriptedLlm::start(vec![
        Scripted { delay: NEVER, ..answer("never sent") },
        tool_calls("Here is our menu.", &[("m1", "get_menu", "{}")]),
        answer("That is all we bake."),
        answer("Back again."),
    ])
    .await;
    let broker = Mount { timeout_ms: TIMEOUT_MS, ..Mount::scripted(&llm, 60_000) }.launch(lang);
    let mut stuck = assistant(&broker, ROUTE).await;
    let asked = Instant::now();
    stuck.send(json!({"action": "user_message", "payload": {"message": "hello?"}, "ref": "stuck"})).await;
    llm.until("the stuck request", WAIT, |seen| seen.waiting == 1).await;

    // Meanwhile the same plugin serves another connection, model and tools and all.
    let mut bystander = assistant(&broker, ROUTE).await;
    let asked_menu = "What do you have?";
    assert_frames(
        lang,
        asked_menu,
        &ask(&mut bystander, asked_menu).await,
        &[initial("Here is our menu."), tool_result("get_menu", MENU), final_response("That is all we bake.")],
    );
    let bystander_done = asked.elapsed();
    assert!(bystander_done < TIMEOUT, "{lang:?}: the bystander was served only after {bystander_done:?}");
    assert_eq!(llm.seen.borrow().waiting, 1, "{lang:?}: the stuck request is still waiting");

    let timeout = match tokio::time::timeout_at((asked + TIMEOUT + SLACK).into(), stuck.recv()).await {
        Ok(frame) => frame,
        Err(_) => {
            panic!("{lang:?}: no answer within {:?}: timeout_ms does not bound a call waiting on HTTP", TIMEOUT + SLACK)
        }
    };
    let took = asked.elapsed();
    let expected = json!({"action": "error", "ref": "stuck", "payload": [{"type": "plugin_timeout",
        "loc": ["user_message"], "msg": format!("the plugin ran past its {TIMEOUT_MS}ms deadline")}]});
    assert_eq!(timeout, expected, "{lang:?}");
    assert!(took >= TIMEOUT, "{lang:?}: timed out after {took:?}, before timeout_ms");
    eprintln!("{lang:?}: plugin_timeout after {took:?} (timeout_ms {TIMEOUT:?})");

    // The instance that timed out is dropped, not pooled: with it goes its request, whose
    // connection the model's server sees close.
    llm.until("the stuck request's connection closed", SLACK, |seen| seen.waiting == 0).await;
    // The connection and the plugin serve the next message, on a sound instance.
    let asked = "Still there?";
    assert_frames(lang, asked, &ask(&mut stuck, asked).await, &[initial("Back again."), final_response("Back again.")]);
    // The call that timed out left no history in the session.
    let requests = llm.requests();
    assert_eq!(requests.len(), 4, "{lang:?}");
    let messages = &requests[3].1["messages"];
    assert_eq!(
        messages,
        &json!([{"role": "system", "content": SYSTEM}, {"role": "user", "content": asked}]),
        "{lang:?}"
    );
    bystander.assert_alive().await;
}

async fn a_model_asking_for_too_many_pizzas_or_lines_gets_tool_args(lang: Lang) {
    let line = |quantity: u64| json!({"item": "margherita", "size": "small", "quantity": quantity});
    let eleven_lines = json!({"items": vec![line(1); 11]}).to_string();
    let huge = json!({"items": [line(3_368_133_419)]}).to_string();
    let too_many = json!({"items": [line(1), line(51)]}).to_string();
    let none = json!({"items": [line(0)]}).to_string();
    let llm = ScriptedLlm::start(vec![
        tool_calls(
            "",
            &[
                ("c1", "place_order", &huge),
                ("c2", "place_order", &too_many),
                ("c3", "place_order", &none),
                ("c4", "place_order", &eleven_lines),
                ("c5", "order_status", r#"{"order_id": "ORD-0001"}"#),
            ],
        ),
        answer("None of that could be ordered."),
    ])
    .await;
    let broker = Mount::scripted(&llm, 5000).launch(lang);
    let mut client = assistant(&broker, ROUTE).await;
    let bad = |why: &str| format!("bad arguments for place_order: {why}");
    let errors = [
        bad(r#"quantity 3368133419 of "margherita" is not between 1 and 50"#),
        bad(r#"quantity 51 of "margherita" is not between 1 and 50"#),
        bad(r#"quantity 0 of "margherita" is not between 1 and 50"#),
        bad("an order has at most 10 lines, not 11"),
    ];
    let asked = "lots of pizza";
    let mut expected = vec![initial("Let me check that for you.")];
    expected.extend(errors.iter().map(|error| tool_failure("tool_args", "place_order", error)));
    expected.push(tool_failure("tool_exec", "order_status", "no order ORD-0001"));
    expected.push(final_response("None of that could be ordered."));
    assert_frames(lang, asked, &ask(&mut client, asked).await, &expected);
    // The model is told why, in the tools' answers.
    let requests = llm.requests();
    let messages = requests[1].1["messages"].as_array().unwrap();
    let told: Vec<&str> =
        messages.iter().filter(|m| m["role"] == "tool").filter_map(|m| m["content"].as_str()).collect();
    let mut expected: Vec<String> = errors.iter().map(|e| format!("error: {e}")).collect();
    expected.push("error: no order ORD-0001".into());
    assert_eq!(told, expected, "{lang:?}");
}
