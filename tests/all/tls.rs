//! TLS on the listener, with a self-signed certificate made by the test.

use std::sync::Arc;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore};
use tokio_tungstenite::tungstenite::Message;

use crate::harness::{Broker, WAIT, default_config};

/// A broker serving `wss://` with a certificate for `localhost`, and that certificate.
fn start() -> (Broker, CertificateDer<'static>) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("a certificate");
    let config = default_config("[server.tls]\ncert = \"cert.pem\"\nkey = \"key.pem\"\n");
    let (cert, key) = (certified.cert.pem(), certified.signing_key.serialize_pem());
    let broker = Broker::with_files(&config, &[("cert.pem", cert.as_bytes()), ("key.pem", key.as_bytes())]);
    (broker, certified.cert.der().clone())
}

fn connector(trusted: CertificateDer<'static>) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    roots.add(trusted).unwrap();
    let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

/// The next frame, which must be JSON text.
async fn next<S>(ws: &mut tokio_tungstenite::WebSocketStream<S>) -> Value
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    match tokio::time::timeout(WAIT, ws.next()).await.expect("a frame in time") {
        Some(Ok(Message::Text(text))) => serde_json::from_str(&text).expect("JSON"),
        other => panic!("expected a text frame, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_speak_wss_with_the_configured_certificate() {
    let (broker, cert) = start();
    let tcp = TcpStream::connect(broker.addr).await.unwrap();
    let tls = tokio::time::timeout(WAIT, connector(cert).connect(ServerName::try_from("localhost").unwrap(), tcp))
        .await
        .expect("TLS handshake in time")
        .expect("the broker's certificate is trusted");
    let url = format!("wss://localhost:{}/ws/system", broker.addr.port());
    let (mut ws, _) = tokio_tungstenite::client_async(url, tls).await.expect("upgrade over TLS");
    assert_eq!(next(&mut ws).await["action"], "system_echo");
    let request = json!({"action": "user_message", "payload": {"message": "over TLS"}});
    ws.send(Message::text(request.to_string())).await.unwrap();
    assert_eq!(next(&mut ws).await["payload"]["message"], "🔧 System Echo: over TLS");

    // Plain WebSocket to the TLS listener gets no upgrade.
    let plain = tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(broker.url("/ws/system"))).await;
    assert!(matches!(plain, Ok(Err(_))), "a plain handshake was answered: {plain:?}");
}

#[test]
fn a_key_that_does_not_fit_is_a_configuration_error() {
    let one = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let other = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("cert.pem"), one.cert.pem()).unwrap();
    std::fs::write(dir.path().join("key.pem"), other.signing_key.serialize_pem()).unwrap();
    let tls = format!(
        "[server.tls]\ncert = \"{}\"\nkey = \"{}\"\n",
        dir.path().join("cert.pem").display(),
        dir.path().join("key.pem").display()
    );
    let (ok, _, stderr) = crate::harness::run_cli(&["check"], &default_config(&tls));
    assert!(!ok && stderr.contains("server.tls.key"), "{stderr}");
}

/// A TLS handshake with `broker`, trusting only `cert`: whether it succeeds.
async fn handshake_trusting(broker: &Broker, cert: CertificateDer<'static>) -> bool {
    let tcp = TcpStream::connect(broker.addr).await.unwrap();
    let name = ServerName::try_from("localhost").unwrap();
    tokio::time::timeout(WAIT, connector(cert).connect(name, tcp)).await.expect("TLS handshake in time").is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_reload_serves_renewed_certificate_files() {
    let (broker, old) = start();
    assert!(handshake_trusting(&broker, old.clone()).await);
    let renewed = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).expect("a certificate");
    broker.replace_file("key.pem", renewed.signing_key.serialize_pem().as_bytes());
    broker.replace_file("cert.pem", renewed.cert.pem().as_bytes());
    let toml = std::fs::read(broker.dir().join("broker.toml")).unwrap();
    broker.replace_file("broker.toml", &toml);
    let new = renewed.cert.der().clone();
    crate::harness::eventually("the renewed certificate is served", || handshake_trusting(&broker, new.clone())).await;
    assert!(!handshake_trusting(&broker, old).await, "the old certificate is still served");
}
