//! Authentication at the handshake: JWT (HS256, RS256) from a header, the query or the
//! subprotocols; routes that require, allow or ignore tokens; the Origin allow-list.

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Error as WsError;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};

use crate::harness::{Broker, Client, WAIT, default_config};

const SECRET: &str = "hs256-test-secret";
const SECRET_VAR: &str = "BROKER_TEST_JWT_SECRET";
const AUDIENCE: &str = "broker-tests";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures").join(name)
}

/// The test configuration with `[auth]` (the secret from the environment, the RS256 public key),
/// an Origin allow-list, and testbed routes that require and allow tokens.
fn auth_config() -> String {
    default_config(&format!(
        r#"
[[routes]]
path = "/ws/private/{{room}}"
plugin = "testbed"
auth = "required"
params.room = {{ pattern = "[a-z]+" }}

[[routes]]
path = "/ws/maybe"
plugin = "testbed"
auth = "optional"

[auth]
hs256_secret_env = "{SECRET_VAR}"
rs256_public_key = "{key}"
audience = ["{AUDIENCE}"]
claims = ["role"]

[server]
allowed_origins = ["https://app.example"]
"#,
        key = fixture("rs256-test-public.pem").display()
    ))
}

fn start() -> Broker {
    Broker::launch(&auth_config(), &[], &[(SECRET_VAR, SECRET)])
}

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn claims(sub: &str) -> Value {
    json!({"sub": sub, "exp": now() + 600, "aud": AUDIENCE, "role": "admin", "other": "not handed over"})
}

fn hs256(claims: &Value, secret: &str) -> String {
    jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &EncodingKey::from_secret(secret.as_bytes())).unwrap()
}

fn rs256(claims: &Value) -> String {
    let pem = std::fs::read(fixture("rs256-test-private.pem")).unwrap();
    jsonwebtoken::encode(&Header::new(Algorithm::RS256), claims, &EncodingKey::from_rsa_pem(&pem).unwrap()).unwrap()
}

/// The handshake's outcome: the client and the chosen subprotocol, or the HTTP status, body and
/// `WWW-Authenticate`.
async fn handshake(
    broker: &Broker,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(Client, Option<String>), (u16, String, String)> {
    let mut request = broker.url(path).into_client_request().unwrap();
    for (name, value) in headers {
        request
            .headers_mut()
            .insert(HeaderName::from_bytes(name.as_bytes()).unwrap(), HeaderValue::from_str(value).unwrap());
    }
    match tokio::time::timeout(WAIT, tokio_tungstenite::connect_async(request)).await.expect("handshake timed out") {
        Ok((ws, response)) => {
            let protocol = response.headers().get("sec-websocket-protocol").map(|v| v.to_str().unwrap().to_owned());
            Ok((Client { ws }, protocol))
        }
        Err(WsError::Http(response)) => {
            let body = String::from_utf8_lossy(response.body().as_deref().unwrap_or_default()).trim().to_owned();
            let challenge =
                response.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default();
            Err((response.status().as_u16(), body, challenge))
        }
        Err(other) => panic!("the handshake failed without an HTTP answer: {other}"),
    }
}

async fn whoami(client: &mut Client) -> Value {
    client.request(json!({"action": "whoami"})).await["payload"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_required_route_takes_a_valid_token_from_any_of_its_three_places() {
    let broker = start();
    let token = hs256(&claims("ada"), SECRET);
    let bearer = format!("Bearer {token}");
    let protocols = format!("bearer, {token}");
    type Way<'a> = (&'a str, String, Vec<(&'a str, &'a str)>);
    let ways: [Way; 3] = [
        ("header", "/ws/private/lab".to_owned(), vec![("authorization", bearer.as_str())]),
        ("query", format!("/ws/private/lab?token={token}"), vec![]),
        ("subprotocols", "/ws/private/lab".to_owned(), vec![("sec-websocket-protocol", protocols.as_str())]),
    ];
    for (way, path, headers) in ways {
        let (mut client, protocol) =
            handshake(&broker, &path, &headers).await.unwrap_or_else(|e| panic!("{way}: refused {e:?}"));
        // The subject is the user; only the claims broker.toml names reach the plugin.
        assert_eq!(whoami(&mut client).await, json!({"user": "ada", "claims": {"role": "admin"}}), "{way}");
        let want = if way == "subprotocols" { Some("bearer".to_owned()) } else { None };
        assert_eq!(protocol, want, "{way}: a browser needs the offered subprotocol chosen");
    }
    // RS256 with the public key of broker.toml.
    let signed = format!("Bearer {}", rs256(&claims("grace")));
    let (mut client, _) = handshake(&broker, "/ws/private/lab", &[("authorization", &signed)]).await.unwrap();
    assert_eq!(whoami(&mut client).await["user"], "grace");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_or_missing_tokens_are_refused_with_401_and_the_reason() {
    let broker = start();
    let mut expired = claims("ada");
    expired["exp"] = json!(now() - 3600);
    let mut elsewhere = claims("ada");
    elsewhere["aud"] = json!("another-app");
    let mut nobody = claims("ada");
    nobody.as_object_mut().unwrap().remove("sub");
    let cases = [
        ("no token", None, "a token is required"),
        ("expired", Some(hs256(&expired, SECRET)), "the token has expired"),
        ("another audience", Some(hs256(&elsewhere, SECRET)), "the token is not for this audience"),
        ("forged", Some(hs256(&claims("ada"), "guessed-secret")), "the token's signature is invalid"),
        ("no subject", Some(hs256(&nobody, SECRET)), "the token has no `sub` claim"),
        ("not a JWT", Some("not-a-token".to_owned()), "the token is not a JWT"),
    ];
    let count = cases.len();
    for (case, token, reason) in cases {
        let header = token.map(|t| format!("Bearer {t}"));
        let headers: Vec<(&str, &str)> = header.iter().map(|h| ("authorization", h.as_str())).collect();
        match handshake(&broker, "/ws/private/lab", &headers).await {
            Err((status, body, challenge)) => {
                assert_eq!(status, 401, "{case}");
                assert!(body.starts_with(reason), "{case}: {body}");
                assert!(challenge.starts_with("Bearer error=\"invalid_token\""), "{case}: {challenge}");
            }
            Ok(_) => panic!("{case}: accepted"),
        }
    }
    assert_eq!(broker.metric("broker_limit_hits_total{limit=\"routes.auth\"}").await, count as f64);
    // Path parameter rules still come first.
    let (status, _, _) = handshake(&broker, "/ws/private/LAB", &[]).await.err().unwrap();
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_audience_and_issuer_must_be_in_the_token() {
    // A token minted for another service with the same key carries no `aud` (or `iss`) of ours.
    const ISSUER: &str = "https://issuer.example";
    let toml = auth_config().replace("claims = [\"role\"]", &format!("claims = [\"role\"]\nissuer = [\"{ISSUER}\"]"));
    let broker = Broker::launch(&toml, &[], &[(SECRET_VAR, SECRET)]);
    let mut right = claims("ada");
    right["iss"] = json!(ISSUER);
    let without = |claim: &str| {
        let mut token = right.clone();
        token.as_object_mut().unwrap().remove(claim);
        token
    };
    let with = |claim: &str, value: &str| {
        let mut token = right.clone();
        token[claim] = json!(value);
        token
    };
    let cases = [
        ("no audience", without("aud"), "the token has no `aud` claim"),
        ("no issuer", without("iss"), "the token has no `iss` claim"),
        ("another audience", with("aud", "another-app"), "the token is not for this audience"),
        ("another issuer", with("iss", "https://elsewhere.example"), "the token's issuer is not accepted"),
    ];
    for (case, token, reason) in cases {
        let bearer = format!("Bearer {}", hs256(&token, SECRET));
        match handshake(&broker, "/ws/private/lab", &[("authorization", &bearer)]).await {
            Err((status, body, _)) => assert!(status == 401 && body.starts_with(reason), "{case}: {status} {body}"),
            Ok(_) => panic!("{case}: accepted"),
        }
    }
    let bearer = format!("Bearer {}", hs256(&right, SECRET));
    let (mut client, _) = handshake(&broker, "/ws/private/lab", &[("authorization", &bearer)]).await.unwrap();
    assert_eq!(whoami(&mut client).await["user"], "ada");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optional_routes_admit_the_anonymous_and_other_routes_ignore_tokens() {
    let broker = start();
    let (mut anonymous, _) = handshake(&broker, "/ws/maybe", &[]).await.unwrap();
    assert_eq!(whoami(&mut anonymous).await, json!({"user": null, "claims": null}));
    let bearer = format!("Bearer {}", hs256(&claims("ada"), SECRET));
    let (mut known, _) = handshake(&broker, "/ws/maybe", &[("authorization", &bearer)]).await.unwrap();
    assert_eq!(whoami(&mut known).await["user"], "ada");
    let forged = format!("Bearer {}", hs256(&claims("ada"), "guessed-secret"));
    let (status, _, _) = handshake(&broker, "/ws/maybe", &[("authorization", &forged)]).await.err().unwrap();
    assert_eq!(status, 401, "a bad token is refused even where none is needed");
    let (mut ignored, _) = handshake(&broker, "/ws/testbed", &[("authorization", &bearer)]).await.unwrap();
    assert_eq!(whoami(&mut ignored).await["user"], Value::Null);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_listed_origins_may_connect() {
    let broker = start();
    let (mut listed, _) = handshake(&broker, "/ws/testbed", &[("origin", "https://app.example")]).await.unwrap();
    listed.assert_alive().await;
    let (mut no_origin, _) = handshake(&broker, "/ws/testbed", &[]).await.unwrap();
    no_origin.assert_alive().await;
    let (status, body, _) =
        handshake(&broker, "/ws/testbed", &[("origin", "https://evil.example")]).await.err().unwrap();
    assert_eq!(status, 403);
    assert!(body.contains("https://evil.example"), "{body}");
}

#[test]
fn an_auth_route_without_a_key_is_a_configuration_error() {
    let toml = default_config("[[routes]]\npath = \"/ws/locked\"\nplugin = \"testbed\"\nauth = \"required\"\n");
    let (ok, _, stderr) = crate::harness::run_cli(&["check"], &toml);
    assert!(!ok && stderr.contains("routes[8].auth"), "{stderr}");
    let unset = auth_config().replace(SECRET_VAR, "BROKER_TEST_VARIABLE_NOBODY_SETS");
    let (ok, _, stderr) = crate::harness::run_cli(&["check"], &unset);
    assert!(!ok && stderr.contains("auth.hs256_secret_env"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_of_a_configuration_with_auth_and_parameters_passes_the_parser() {
    let broker = start();
    let (status, body) = broker.http("GET", "/asyncapi.json", None, "").await;
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(doc["components"]["securitySchemes"]["bearer"]["scheme"], "bearer");
    assert_eq!(doc["components"]["securitySchemes"]["token_query"]["in"], "query");
    // Channels are keyed by route name (#20): find them by address.
    let channel = |address: &str| {
        let channels = doc["channels"].as_object().unwrap();
        channels.iter().find(|(_, c)| c["address"] == address).map(|(name, _)| name.clone()).unwrap()
    };
    let (private_room, testbed) = (channel("/ws/private/{room}"), channel("/ws/testbed"));
    let private = &doc["operations"][format!("{private_room}.receive.whoami")];
    assert_eq!(private["security"][0]["$ref"], "#/components/securitySchemes/bearer", "{private}");
    assert!(doc["operations"][format!("{testbed}.receive.whoami")].get("security").is_none());
    assert!(doc["channels"][&private_room]["parameters"]["room"].is_object());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("auth.json");
    std::fs::write(&file, &body).unwrap();
    let output = std::process::Command::new("node")
        .arg(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("node/asyncapi-validate.mjs"))
        .arg(&file)
        .output()
        .expect("node (`cargo xtask test` installs the parser)");
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success() && report.contains("valid: AsyncAPI 3.0.0"), "{report}");
}
