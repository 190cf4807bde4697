//! Outbound HTTP over `wasi:http`, blocking from the plugin's side. The broker makes the request
//! only if broker.toml allows the host for this plugin (`allow_hosts`); otherwise it fails here,
//! and nothing is sent. While a call waits on the network, the broker serves other connections.

use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme};
use wasip2::io::streams::StreamError;

use crate::error::{Error, Result};

/// A response: its status and whole body.
#[derive(Debug, Clone)]
pub struct Response {
    /// The HTTP status code.
    pub status: u16,
    /// The whole body.
    pub body: Vec<u8>,
}

impl Response {
    /// The body decoded from JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_slice(&self.body)
            .map_err(|e| Error::msg(format!("the response is not the JSON expected: {e}")))
    }

    /// The body as text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// POSTs `body` as JSON to `url` and returns the response, whatever its status.
pub fn post_json<T: Serialize>(url: &str, headers: &[(&str, &str)], body: &T, timeout: Duration) -> Result<Response> {
    let body = serde_json::to_vec(body)?;
    let mut all = vec![("content-type", "application/json")];
    all.extend_from_slice(headers);
    request("POST", url, &all, Some(&body), timeout)
}

/// GETs `url`.
pub fn get(url: &str, headers: &[(&str, &str)], timeout: Duration) -> Result<Response> {
    request("GET", url, headers, None, timeout)
}

/// Makes one request; `timeout` bounds connecting, the first byte and each later byte.
pub fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<Response> {
    let (scheme, authority, path) = split_url(url)?;
    let fields: Vec<(String, Vec<u8>)> = headers.iter().map(|(k, v)| (k.to_string(), v.as_bytes().to_vec())).collect();
    let fields = Fields::from_list(&fields).map_err(|e| Error::msg(format!("bad header: {e:?}")))?;
    let request = OutgoingRequest::new(fields);
    let method = match method {
        "GET" => Method::Get,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        other => Method::Other(other.to_owned()),
    };
    let invalid = |what: &str| Error::msg(format!("invalid {what} in {url:?}"));
    request.set_method(&method).map_err(|_| invalid("method"))?;
    request.set_scheme(Some(&scheme)).map_err(|_| invalid("scheme"))?;
    request.set_authority(Some(authority)).map_err(|_| invalid("authority"))?;
    request.set_path_with_query(Some(path)).map_err(|_| invalid("path"))?;
    let outgoing = request.body().map_err(|_| Error::msg("the request body was taken twice"))?;

    let options = RequestOptions::new();
    let nanos = u64::try_from(timeout.as_nanos()).unwrap_or(u64::MAX);
    // Not every host supports every timeout; those it refuses are simply not set.
    let _ = options.set_connect_timeout(Some(nanos));
    let _ = options.set_first_byte_timeout(Some(nanos));
    let _ = options.set_between_bytes_timeout(Some(nanos));
    let pending = outgoing_handler::handle(request, Some(options)).map_err(|e| Error::msg(format!("{url}: {e:?}")))?;

    // A request refused at once (`HttpRequestDenied`) closes the body stream: the reason is then
    // in the response, so a failed write is reported only if the response has nothing better.
    let mut write_error = None;
    if let Some(body) = body {
        let stream = outgoing.write().map_err(|_| Error::msg("the request body stream was taken twice"))?;
        for chunk in body.chunks(4096) {
            if let Err(error) = stream.blocking_write_and_flush(chunk) {
                write_error = Some(format!("{url}: writing the body: {error:?}"));
                break;
            }
        }
        drop(stream);
    }
    if write_error.is_none()
        && let Err(error) = OutgoingBody::finish(outgoing, None)
    {
        write_error = Some(format!("{url}: {error:?}"));
    }

    pending.subscribe().block();
    let response = match pending.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return Err(Error::msg(format!("{url}: {code:?}"))),
        Some(Err(())) | None => return Err(Error::msg(write_error.unwrap_or_else(|| format!("{url}: no response")))),
    };
    if let Some(error) = write_error {
        return Err(Error::msg(error));
    }
    let status = response.status();
    let incoming = response.consume().map_err(|_| Error::msg("the response body was taken twice"))?;
    let body = read_all(&incoming).map_err(|e| Error::msg(format!("{url}: reading the body: {e}")))?;
    drop(IncomingBody::finish(incoming));
    Ok(Response { status, body })
}

fn read_all(incoming: &IncomingBody) -> std::result::Result<Vec<u8>, String> {
    let stream = incoming.stream().map_err(|_| "the body stream was taken twice".to_owned())?;
    let mut body = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => body.extend_from_slice(&chunk),
            Err(StreamError::Closed) => return Ok(body),
            Err(StreamError::LastOperationFailed(error)) => return Err(error.to_debug_string()),
        }
    }
}

/// `http://host:port/path?q` -> (scheme, "host:port", "/path?q").
fn split_url(url: &str) -> Result<(Scheme, &str, &str)> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| Error::msg(format!("{url:?} is not an absolute URL")))?;
    let scheme = match scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        other => return Err(Error::msg(format!("unsupported scheme {other:?}"))),
    };
    let (authority, path) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, "/"),
    };
    Ok((scheme, authority, path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_scheme_authority_and_path() {
        let (scheme, authority, path) = split_url("http://127.0.0.1:8080/v1/chat?x=1").unwrap();
        assert!(matches!(scheme, Scheme::Http));
        assert_eq!((authority, path), ("127.0.0.1:8080", "/v1/chat?x=1"));
        assert_eq!(split_url("https://api.example.com").unwrap().2, "/");
        assert!(split_url("ftp://x").is_err());
        assert!(split_url("nope").is_err());
    }
}
