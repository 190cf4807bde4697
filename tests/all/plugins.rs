//! The host interface as plugins use it: send, close, settings.

use crate::harness::Broker;
use serde_json::json;

#[tokio::test]
async fn frames_a_plugin_sends_arrive_in_order() {
    let broker = Broker::start();
    let mut client = broker.connect("/ws/testbed").await;
    client.send(json!({"action": "push", "payload": {"count": 200}})).await;
    for n in 0..200 {
        assert_eq!(client.recv().await, json!({"action": "pushed", "payload": {"n": n}}));
    }
    client.assert_alive().await;
}

#[tokio::test]
async fn a_plugin_can_close_its_connection() {
    let broker = Broker::start();
    let mut client = broker.connect("/ws/testbed").await;
    client.send(json!({"action": "close", "payload": {"code": 4000, "reason": "bye now"}})).await;
    assert_eq!(client.recv_close().await, (4000, "bye now".to_owned()));
}

#[tokio::test]
async fn settings_from_broker_toml_reach_the_plugin() {
    let broker = Broker::start();
    let mut client = broker.connect("/ws/testbed").await;
    let reply = client.request(json!({"action": "settings"})).await;
    assert_eq!(reply["payload"], json!({"greeting": "hi", "depth": 2}));
}
