//! The scripted model: an OpenAI-compatible server on 127.0.0.1 that answers from a script,
//! records what it was asked and counts the connections it accepted.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::harness::eventually;

/// One answer of the scripted model.
pub(super) struct Scripted {
    pub(super) status: u16,
    pub(super) body: Value,
    pub(super) delay: Duration,
}

/// A `delay` that never ends: the model accepts the request and never answers.
pub(super) const NEVER: Duration = Duration::MAX;

pub(super) fn answer(content: &str) -> Scripted {
    let message = json!({"role": "assistant", "content": content});
    Scripted { status: 200, body: json!({"choices": [{"index": 0, "message": message}]}), delay: Duration::ZERO }
}

pub(super) fn tool_calls(content: &str, calls: &[(&str, &str, &str)]) -> Scripted {
    Scripted {
        status: 200,
        body: json!({"choices": [{"index": 0, "message": model_message(content, calls)}]}),
        delay: Duration::ZERO,
    }
}

/// The assistant message of a model asking for tools: (id, name, arguments) each.
pub(super) fn model_message(content: &str, calls: &[(&str, &str, &str)]) -> Value {
    let calls: Vec<Value> = calls
        .iter()
        .map(|(id, name, arguments)| json!({"id": id, "type": "function", "function": {"name": name, "arguments": arguments}}))
        .collect();
    json!({"role": "assistant", "content": content, "tool_calls": calls})
}

/// What the scripted model was sent: the `Authorization` header and the JSON body.
type Recorded = Arc<Mutex<Vec<(Option<String>, Value)>>>;

/// What the scripted model's server has seen so far.
#[derive(Clone, Copy, Debug, Default)]
pub(super) struct Seen {
    /// TCP connections accepted.
    pub(super) connections: usize,
    /// HTTP requests read.
    pub(super) requests: usize,
    /// Requests not answered yet whose connection is still open: a client that goes away drops
    /// its request (hyper notices the end of the stream while the answer is pending).
    pub(super) waiting: usize,
}

/// An OpenAI-compatible server that answers from a script, records what it was asked, and
/// counts the connections it accepted.
pub(super) struct ScriptedLlm {
    pub(super) addr: SocketAddr,
    requests: Recorded,
    /// The peers of the connections accepted, in order.
    peers: Arc<Mutex<Vec<SocketAddr>>>,
    pub(super) seen: watch::Receiver<Seen>,
    server: tokio::task::JoinHandle<()>,
}

/// Counts a request as waiting until its handler ends or is dropped.
struct Waiting(Arc<watch::Sender<Seen>>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.send_modify(|seen| seen.waiting -= 1);
    }
}

impl ScriptedLlm {
    pub(super) async fn start(script: Vec<Scripted>) -> ScriptedLlm {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let script = Arc::new(Mutex::new(VecDeque::from(script)));
        let requests: Recorded = Arc::default();
        let peers: Arc<Mutex<Vec<SocketAddr>>> = Arc::default();
        let (seen_tx, seen) = watch::channel(Seen::default());
        let seen_tx = Arc::new(seen_tx);
        let (recorded, accepted) = (requests.clone(), peers.clone());
        let server = tokio::spawn(async move {
            while let Ok((tcp, peer)) = listener.accept().await {
                accepted.lock().unwrap().push(peer);
                seen_tx.send_modify(|seen| seen.connections += 1);
                let (script, recorded, seen_tx) = (script.clone(), recorded.clone(), seen_tx.clone());
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                        let (script, recorded, seen_tx) = (script.clone(), recorded.clone(), seen_tx.clone());
                        async move {
                            let auth =
                                request.headers().get("authorization").and_then(|v| v.to_str().ok()).map(str::to_owned);
                            let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            // The entry is taken, under the script's lock, before the request is
                            // recorded and seen: a test that waits until a request is seen and then
                            // sends the next one knows which entry each gets, however threads are
                            // scheduled. (Taken after, a second request could take the first's entry.)
                            let next = {
                                let mut script = script.lock().unwrap();
                                recorded
                                    .lock()
                                    .unwrap()
                                    .push((auth, serde_json::from_slice(&body).unwrap_or(Value::Null)));
                                script.pop_front()
                            };
                            seen_tx.send_modify(|seen| {
                                seen.requests += 1;
                                seen.waiting += 1;
                            });
                            let _waiting = Waiting(seen_tx.clone());
                            let next = next.unwrap_or(Scripted {
                                status: 500,
                                body: json!({"error": "script ended"}),
                                delay: Duration::ZERO,
                            });
                            if next.delay == NEVER {
                                std::future::pending::<()>().await;
                            }
                            tokio::time::sleep(next.delay).await;
                            let mut response = Response::new(Full::new(Bytes::from(next.body.to_string())));
                            *response.status_mut() = hyper::StatusCode::from_u16(next.status).unwrap();
                            response.headers_mut().insert("content-type", "application/json".parse().unwrap());
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let io = hyper_util::rt::TokioIo::new(tcp);
                    let _ = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
                });
            }
        });
        ScriptedLlm { addr, requests, peers, seen, server }
    }

    pub(super) fn requests(&self) -> Vec<(Option<String>, Value)> {
        self.requests.lock().unwrap().clone()
    }

    /// `base_url` of this model, as the assistant's settings name it.
    pub(super) fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The URL the assistant posts to.
    pub(super) fn url(&self) -> String {
        format!("{}/chat/completions", self.base_url())
    }

    /// Waits, at most `limit`, until what the server has seen satisfies `done`.
    pub(super) async fn until(&self, what: &str, limit: Duration, mut done: impl FnMut(&Seen) -> bool) -> Seen {
        let mut seen = self.seen.clone();
        match tokio::time::timeout(limit, seen.wait_for(|s| done(s))).await {
            Ok(Ok(seen)) => *seen,
            _ => panic!("the model's server did not see {what} within {limit:?}: {:?}", *self.seen.borrow()),
        }
    }

    /// Every connection ever made to the server, the probe's last: a probe connection is
    /// accepted after every connection queued before it, so the list is complete.
    pub(super) async fn all_connections(&self) -> Vec<SocketAddr> {
        let probe = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let me = probe.local_addr().unwrap();
        let peers = self.peers.clone();
        eventually("the probe connection is accepted", || {
            let peers = peers.clone();
            async move { peers.lock().unwrap().contains(&me) }
        })
        .await;
        let peers = self.peers.lock().unwrap().clone();
        assert_eq!(peers.last(), Some(&me), "{peers:?}");
        peers
    }
}

impl Drop for ScriptedLlm {
    fn drop(&mut self) {
        self.server.abort();
    }
}
