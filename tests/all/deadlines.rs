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

#[tokio::test]
async fn a_call_beyond_max_instances_waits_for_a_place_and_is_then_served() {
    let extra = format!(
        "\n[plugins.single]\npath = \"{}\"\nmax_instances = 1\ntimeout_ms = 1000\n\n[[routes]]\npath = \"/ws/single\"\nplugin = \"single\"\n",
        crate::harness::plugin_path("testbed").display()
    );
    let broker = Broker::with_config(&crate::harness::default_config(&extra));
    let mut spinner = broker.connect("/ws/single").await;
    let mut waiter = broker.connect("/ws/single").await;
    spinner.send(json!({"action": "spin", "ref": "s"})).await;
    assert_eq!(spinner.recv().await, json!({"action": "spinning", "payload": null}));

    // The one instance is in the spinning call: this call waits (counted), and is answered once
    // the spin's deadline has dropped that instance, by a new one.
    let counted = waiter.request(json!({"action": "count"})).await;
    assert_eq!(counted, json!({"action": "count", "payload": 1}));
    assert_eq!(broker.metric(r#"broker_limit_hits_total{limit="plugins.max_instances"}"#).await, 1.0);
    assert_eq!(spinner.recv().await["payload"][0]["type"], "plugin_timeout");
}
