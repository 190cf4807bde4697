//! A plugin that never returns is stopped at its deadline, without stalling anyone else.

use crate::harness::Broker;
use serde_json::json;

#[tokio::test]
async fn a_looping_plugin_times_out_while_others_are_served() {
    let broker = Broker::start();
    let mut spinner = broker.connect("/ws/testbed").await;
    let mut bystander = broker.echo_client().await;
    let mut neighbour = broker.connect("/ws/testbed").await;

    spinner.send(json!({"action": "spin", "ref": "s"})).await;
    // The plugin says so before looping: from here on its call is running.
    assert_eq!(spinner.recv().await, json!({"action": "spinning", "payload": null}));

    // Other connections, on another plugin and on the same one, are answered during the loop.
    for n in 0..5 {
        let reply = bystander.request(json!({"action": "user_message", "payload": {"message": n.to_string()}})).await;
        assert_eq!(reply["payload"]["message"], format!("🔧 System Echo: {n}"));
        neighbour.assert_alive().await;
        let error = neighbour.request(json!({"action": "fail"})).await;
        assert_eq!(error["payload"][0]["type"], "plugin_error");
    }

    let timeout = spinner.recv().await;
    assert_eq!(timeout["action"], "error", "{timeout}");
    assert_eq!(timeout["ref"], "s");
    assert_eq!(timeout["payload"][0]["type"], "plugin_timeout");
    assert_eq!(timeout["payload"][0]["loc"], json!(["spin"]));

    // The same connection and plugin serve the next message.
    let next = spinner.request(json!({"action": "params"})).await;
    assert_eq!(next["action"], "params", "{next}");
    spinner.assert_alive().await;
}
