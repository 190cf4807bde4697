//! Who a connection is: JSON Web Tokens checked at the handshake, and the Origin allow-list.
//!
//! A token comes from `Authorization: Bearer`, the `token` query parameter, or the WebSocket
//! subprotocols `bearer, <token>` (browsers cannot set headers on a WebSocket). HS256 and RS256
//! are accepted, with the keys of `[auth]`; expiry, not-before, audience and issuer are checked.
//! The token's subject becomes the plugin context's `user`, and the claims `auth.claims` names are
//! handed to plugins through the `identity` interface.

use std::collections::BTreeMap;

use hyper::HeaderMap;
use hyper::header::{self, HeaderValue};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::Value;

use crate::config;

/// The subprotocol a browser offers, followed by its token, to authenticate (`bearer, <token>`).
pub const BEARER_PROTOCOL: &str = "bearer";

/// Checks tokens with the keys of `[auth]`.
pub struct Verifier {
    keys: Vec<(Algorithm, DecodingKey)>,
    audience: Vec<String>,
    issuer: Vec<String>,
    leeway_s: u64,
    claims: Vec<String>,
}

/// A verified token.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// The token's `sub`.
    pub user: String,
    /// The claims broker.toml hands to plugins, as a JSON object text.
    pub claims: String,
}

/// What a handshake carried: its token, and whether it came as a subprotocol (which must then be
/// answered).
pub struct Presented {
    pub token: Option<String>,
    pub via_protocol: bool,
}

impl Verifier {
    /// The verifier of `[auth]`, or `None` when it holds no key. Reads the RS256 key file and the
    /// secret's environment variable; each problem names its key.
    pub fn from_config(auth: &config::Auth) -> Result<Option<Verifier>, (String, String)> {
        let mut keys = Vec::new();
        if let Some(secret) = auth.hs256_secret().map_err(|why| ("auth.hs256_secret_env".to_owned(), why))? {
            keys.push((Algorithm::HS256, DecodingKey::from_secret(secret.as_bytes())));
        }
        if let Some(path) = &auth.rs256_public_key {
            let key = "auth.rs256_public_key".to_owned();
            let pem = std::fs::read(path).map_err(|e| (key.clone(), format!("cannot read {}: {e}", path.display())))?;
            let decoding = DecodingKey::from_rsa_pem(&pem)
                .map_err(|e| (key, format!("{} is not an RSA public key in PEM: {e}", path.display())))?;
            keys.push((Algorithm::RS256, decoding));
        }
        if keys.is_empty() {
            return Ok(None);
        }
        Ok(Some(Verifier {
            keys,
            audience: auth.audience.clone(),
            issuer: auth.issuer.clone(),
            leeway_s: auth.leeway_s,
            claims: auth.claims.clone(),
        }))
    }

    /// Checks `token`; `Err` is the reason given to the client.
    pub fn verify(&self, token: &str) -> Result<Identity, String> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| "the token is not a JWT".to_owned())?;
        let Some((algorithm, key)) = self.keys.iter().find(|(algorithm, _)| *algorithm == header.alg) else {
            let accepted: Vec<String> = self.keys.iter().map(|(a, _)| format!("{a:?}")).collect();
            return Err(format!("the token is signed with {:?}; accepted: {}", header.alg, accepted.join(", ")));
        };
        let mut validation = Validation::new(*algorithm);
        validation.leeway = self.leeway_s;
        validation.validate_nbf = true;
        // A configured audience or issuer is required, not only checked when present: otherwise a
        // token minted for another service with the same key, without the claim, gets in.
        let mut required = vec!["exp", "sub"];
        if self.audience.is_empty() {
            validation.validate_aud = false;
        } else {
            validation.set_audience(&self.audience);
            required.push("aud");
        }
        if !self.issuer.is_empty() {
            validation.set_issuer(&self.issuer);
            required.push("iss");
        }
        validation.set_required_spec_claims(&required);
        let data =
            jsonwebtoken::decode::<BTreeMap<String, Value>>(token, key, &validation).map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => "the token has expired".to_owned(),
                ErrorKind::ImmatureSignature => "the token is not valid yet (nbf)".to_owned(),
                ErrorKind::InvalidAudience => "the token is not for this audience".to_owned(),
                ErrorKind::InvalidIssuer => "the token's issuer is not accepted".to_owned(),
                ErrorKind::InvalidSignature => "the token's signature is invalid".to_owned(),
                ErrorKind::MissingRequiredClaim(claim) => format!("the token has no `{claim}` claim"),
                _ => format!("the token is invalid: {e}"),
            })?;
        let claims = data.claims;
        let user = match claims.get("sub") {
            Some(Value::String(sub)) if !sub.is_empty() => sub.clone(),
            _ => return Err("the token's `sub` is not a non-empty string".into()),
        };
        let chosen: serde_json::Map<String, Value> =
            self.claims.iter().filter_map(|name| claims.get(name).map(|v| (name.clone(), v.clone()))).collect();
        Ok(Identity { user, claims: Value::Object(chosen).to_string() })
    }
}

/// The token of a handshake request, from the first place that has one.
pub fn presented(headers: &HeaderMap, query: Option<&str>) -> Presented {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(|t| t.trim().to_owned());
    if bearer.is_some() {
        return Presented { token: bearer, via_protocol: false };
    }
    let from_query = query.into_iter().flat_map(|q| q.split('&')).find_map(|pair| {
        let (name, value) = pair.split_once('=')?;
        (name == "token" && !value.is_empty()).then(|| crate::wire::percent::percent_decode(value)).flatten()
    });
    if from_query.is_some() {
        return Presented { token: from_query, via_protocol: false };
    }
    let protocols: Vec<&str> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let token = protocols.iter().position(|p| *p == BEARER_PROTOCOL).and_then(|i| protocols.get(i + 1));
    Presented { token: token.map(|t| (*t).to_owned()), via_protocol: token.is_some() }
}

/// Whether a request's `Origin` may open a connection: any, when the list is empty; requests
/// without an Origin (not from a browser) are not subject to it.
pub fn origin_allowed(allowed: &[String], origin: Option<&HeaderValue>) -> bool {
    match origin.and_then(|o| o.to_str().ok()) {
        _ if allowed.is_empty() => true,
        None => true,
        Some(origin) => allowed.iter().any(|a| a == "*" || a.eq_ignore_ascii_case(origin.trim_end_matches('/'))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    fn verifier(audience: &[&str]) -> Verifier {
        let auth = config::Auth {
            hs256_secret: Some("s3cret".into()),
            audience: audience.iter().map(|a| a.to_string()).collect(),
            claims: vec!["role".into()],
            ..config::Auth::default()
        };
        Verifier::from_config(&auth).unwrap().unwrap()
    }

    fn token(claims: Value, secret: &str) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret.as_bytes()))
            .unwrap()
    }

    fn later() -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 600
    }

    #[test]
    fn a_good_token_gives_the_subject_and_the_chosen_claims() {
        let identity =
            verifier(&[]).verify(&token(json!({"sub": "ada", "exp": later(), "role": "admin", "x": 1}), "s3cret"));
        assert_eq!(identity, Ok(Identity { user: "ada".into(), claims: r#"{"role":"admin"}"#.into() }));
    }

    #[test]
    fn each_bad_token_says_why() {
        let v = verifier(&["app"]);
        let expired = token(json!({"sub": "a", "exp": 1, "aud": "app"}), "s3cret");
        assert_eq!(v.verify(&expired).unwrap_err(), "the token has expired");
        let forged = token(json!({"sub": "a", "exp": later(), "aud": "app"}), "other");
        assert_eq!(v.verify(&forged).unwrap_err(), "the token's signature is invalid");
        let elsewhere = token(json!({"sub": "a", "exp": later(), "aud": "web"}), "s3cret");
        assert_eq!(v.verify(&elsewhere).unwrap_err(), "the token is not for this audience");
        let nobody = token(json!({"exp": later(), "aud": "app"}), "s3cret");
        assert_eq!(v.verify(&nobody).unwrap_err(), "the token has no `sub` claim");
        assert_eq!(v.verify("garbage").unwrap_err(), "the token is not a JWT");
    }

    #[test]
    fn tokens_come_from_the_header_the_query_or_the_subprotocols() {
        let mut headers = HeaderMap::new();
        assert!(presented(&headers, Some("a=1&token=abc")).token.as_deref() == Some("abc"));
        headers.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static("chat, bearer, xyz"));
        let p = presented(&headers, None);
        assert_eq!((p.token.as_deref(), p.via_protocol), (Some("xyz"), true));
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer hdr"));
        assert_eq!(presented(&headers, Some("token=abc")).token.as_deref(), Some("hdr"));
    }

    #[test]
    fn origins_are_checked_only_when_listed() {
        let allowed = vec!["https://app.example".to_owned()];
        assert!(origin_allowed(&[], Some(&HeaderValue::from_static("https://evil.example"))));
        assert!(origin_allowed(&allowed, Some(&HeaderValue::from_static("https://app.example"))));
        assert!(!origin_allowed(&allowed, Some(&HeaderValue::from_static("https://evil.example"))));
        assert!(origin_allowed(&allowed, None));
    }
}
