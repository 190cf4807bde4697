//! The system echo of the Chanx tutorial, frame for frame.

use crate::harness::Broker;
use serde_json::json;

#[tokio::test]
async fn welcome_then_echo() {
    let broker = Broker::start();
    let mut client = broker.connect("/ws/system").await;
    assert_eq!(
        client.recv().await,
        json!({"action": "system_echo", "payload": {"message": "🔧 System: Connection established!"}})
    );
    let reply = client.request(json!({"action": "user_message", "payload": {"message": "Hello"}})).await;
    assert_eq!(reply, json!({"action": "system_echo", "payload": {"message": "🔧 System Echo: Hello"}}));
}

#[tokio::test]
async fn ping_is_answered_by_the_broker() {
    let broker = Broker::start();
    let mut client = broker.echo_client().await;
    assert_eq!(client.request(json!({"action": "ping"})).await, json!({"action": "pong", "payload": null}));
    // `null` is no payload.
    assert_eq!(client.request(json!({"action": "ping", "payload": null})).await["action"], "pong");
}

#[tokio::test]
async fn ref_is_echoed_on_replies_pongs_and_errors() {
    let broker = Broker::start();
    let mut client = broker.echo_client().await;
    let reply = client.request(json!({"action": "user_message", "payload": {"message": "hi"}, "ref": "req-1"})).await;
    assert_eq!(reply, json!({"action": "system_echo", "payload": {"message": "🔧 System Echo: hi"}, "ref": "req-1"}));
    let pong = client.request(json!({"action": "ping", "ref": "req-2"})).await;
    assert_eq!(pong, json!({"action": "pong", "payload": null, "ref": "req-2"}));
    let error = client.request(json!({"action": "user_message", "payload": {}, "ref": "req-3"})).await;
    assert_eq!(error["action"], "error");
    assert_eq!(error["ref"], "req-3");
}

#[tokio::test]
async fn extra_top_level_keys_are_ignored() {
    let broker = Broker::start();
    let mut client = broker.echo_client().await;
    let reply = client.request(json!({"action": "user_message", "payload": {"message": "x"}, "id": 7})).await;
    assert_eq!(reply["payload"]["message"], "🔧 System Echo: x");
}

#[tokio::test]
async fn messages_of_one_connection_are_answered_in_order() {
    let broker = Broker::start();
    let mut client = broker.echo_client().await;
    for n in 0..50 {
        client.send(json!({"action": "user_message", "payload": {"message": n.to_string()}})).await;
        if n % 7 == 0 {
            client.send(json!({"action": "ping", "ref": n.to_string()})).await;
        }
    }
    for n in 0..50 {
        let reply = client.recv().await;
        assert_eq!(reply["payload"]["message"], format!("🔧 System Echo: {n}"), "{reply}");
        if n % 7 == 0 {
            assert_eq!(client.recv().await, json!({"action": "pong", "payload": null, "ref": n.to_string()}));
        }
    }
}
