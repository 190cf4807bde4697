//! Outbound HTTP for plugins (`wasi:http`): denied unless broker.toml lists the host in the plugin's
//! `allow_hosts`. A denied request fails inside the plugin with `HTTP request denied` before any
//! connection is opened.

use std::sync::Arc;

use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use crate::hub::metrics::Metrics;

/// The hosts one plugin may reach: `host` (any port), `host:port`, or `*` (anywhere).
#[derive(Clone, Default)]
pub struct AllowList {
    rules: Arc<[String]>,
    /// Counts denials, when given.
    metrics: Option<Arc<Metrics>>,
}

impl AllowList {
    pub fn new(rules: &[String], metrics: Option<Arc<Metrics>>) -> AllowList {
        AllowList { rules: rules.iter().map(|r| r.to_ascii_lowercase()).collect(), metrics }
    }

    /// Whether a request to `host` on `port` may go out.
    pub fn allows(&self, host: &str, port: u16) -> bool {
        let host = host.trim_start_matches('[').trim_end_matches(']').to_ascii_lowercase();
        self.rules.iter().any(|rule| {
            if rule == "*" {
                return true;
            }
            match rule.rsplit_once(':').filter(|(_, p)| p.parse::<u16>().is_ok()) {
                Some((rule_host, rule_port)) => {
                    rule_host.trim_start_matches('[').trim_end_matches(']') == host && rule_port == port.to_string()
                }
                None => *rule == host,
            }
        })
    }
}

type Sent = Box<
    dyn Future<Output = Result<(http::Response<WasiBody>, Box<dyn Future<Output = Result<(), Error>> + Send>), Error>>
        + Send,
>;

impl WasiHttpHooks for AllowList {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Sent {
        drop(fut);
        let uri = request.uri();
        let host = uri.host().unwrap_or_default().to_owned();
        let port = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("https") { 443 } else { 80 });
        if !self.allows(&host, port) {
            tracing::warn!(%host, port, "a plugin's HTTP request was denied: the host is not in its allow_hosts");
            if let Some(metrics) = &self.metrics {
                metrics.limit_hit("plugins.allow_hosts");
            }
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        Box::new(async move {
            use http_body_util::BodyExt;
            let (response, io) = wasmtime_wasi_http::default_send_request(request, options).await?;
            Ok((response.map(BodyExt::boxed_unsync), Box::new(io) as Box<dyn Future<Output = _> + Send>))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_match_hosts_and_ports() {
        let list = AllowList::new(&["api.example.com".into(), "127.0.0.1:8099".into(), "[::1]:80".into()], None);
        assert!(list.allows("api.example.com", 443));
        assert!(list.allows("API.example.com", 80));
        assert!(list.allows("127.0.0.1", 8099));
        assert!(!list.allows("127.0.0.1", 8100));
        assert!(list.allows("[::1]", 80));
        assert!(!list.allows("evil.example.com", 443));
        assert!(!AllowList::default().allows("localhost", 80));
        assert!(AllowList::new(&["*".into()], None).allows("anything", 1));
    }
}
