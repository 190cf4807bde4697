//! The route table: which plugin serves which WebSocket path, and what its parameters may be.

use std::sync::Arc;

use regex::Regex;

use crate::config::{self, Config, ConfigError};

/// A route that matched a request path.
#[derive(Debug, Clone)]
pub struct Matched {
    pub route: Arc<Route>,
    /// Path parameters, in pattern order.
    pub params: Vec<(String, String)>,
}

/// Why a path was not routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Miss {
    /// No route has this path.
    NotFound,
    /// A route has it, but a parameter breaks its rule; the text says which and why.
    BadParam(String),
}

/// One route, ready to match.
#[derive(Debug)]
pub struct Route {
    /// The pattern as written in broker.toml.
    pub pattern: String,
    pub plugin: String,
    pub metadata: bool,
    pub auth: config::AuthMode,
    rules: Vec<(String, Rule)>,
}

#[derive(Debug)]
struct Rule {
    pattern: Option<Regex>,
    max_length: Option<usize>,
}

impl Route {
    /// The parameters' rules, for `broker routes`: `room: ^(?:[a-z]+)$, at most 64`.
    pub fn describe_params(&self) -> String {
        let describe = |(name, rule): &(String, Rule)| {
            let mut parts = Vec::new();
            if let Some(pattern) = &rule.pattern {
                parts.push(pattern.as_str().to_owned());
            }
            if let Some(max) = rule.max_length {
                parts.push(format!("at most {max}"));
            }
            format!("{name}: {}", parts.join(", "))
        };
        self.rules.iter().map(describe).collect::<Vec<_>>().join("; ")
    }
}

/// Paths the broker answers itself before any route is looked up (the demo page, health, metrics,
/// the AsyncAPI documents, and everything under `/api/`): a route matching one would be shadowed,
/// so it is refused. `api::Endpoint::parse` answers each of them (its tests check it).
pub const RESERVED_PATHS: &[&str] = &[
    "/",
    "/index.html",
    "/healthz",
    "/readyz",
    "/metrics",
    "/asyncapi",
    "/asyncapi.html",
    "/asyncapi.json",
    "/asyncapi.yaml",
    "/asyncapi.yml",
    "/api/publish",
    "/api/plugins",
    "/api/groups/g/members",
    "/api/x",
];

/// The broker's own path `pattern` (trailing slash trimmed) would match, if any.
fn shadowed_by(pattern: &str) -> Option<&'static str> {
    if pattern.starts_with("/api/") {
        return Some("/api/...");
    }
    let mut alone = matchit::Router::new();
    alone.insert(pattern, ()).ok()?;
    RESERVED_PATHS.iter().copied().find(|path| alone.at(path).is_ok()).map(|path| match path {
        p if p.starts_with("/api/") => "/api/...",
        p => p,
    })
}

/// Path patterns (`/ws/chat/{room}`) to routes.
#[derive(Debug, Clone, Default)]
pub struct Router {
    table: matchit::Router<usize>,
    routes: Vec<Arc<Route>>,
}

impl Router {
    pub fn builder() -> Router {
        Router::default()
    }

    /// The route table of `config`: patterns must not collide with each other or with the broker's
    /// own paths, and parameter rules must name a parameter and compile.
    pub fn from_config(config: &Config) -> Result<Router, ConfigError> {
        let mut table = Router::builder();
        for (i, route) in config.routes.iter().enumerate() {
            table.insert(route).map_err(|(key, message)| ConfigError::Invalid {
                path: config.source.clone(),
                key: format!("routes[{i}].{key}"),
                message,
            })?;
        }
        Ok(table)
    }

    /// Adds a route; the error names the offending key (relative to the route) and why.
    pub fn insert(&mut self, route: &config::Route) -> Result<(), (String, String)> {
        let pattern = &route.path;
        if !pattern.starts_with('/') {
            return Err(("path".into(), format!("{pattern:?} must start with '/'")));
        }
        if let Some(own) = shadowed_by(trim_slash(pattern)) {
            return Err((
                "path".into(),
                format!(
                    "{pattern:?} would be shadowed by the broker's own {own}: the broker answers {} and \
                     everything under /api/ itself; choose another path",
                    RESERVED_PATHS.iter().filter(|p| !p.starts_with("/api/")).copied().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        let mut rules = Vec::new();
        for (name, rule) in &route.params {
            if !pattern.contains(&format!("{{{name}}}")) {
                return Err((format!("params.{name}"), format!("{pattern:?} has no parameter {{{name}}}")));
            }
            let regex = match &rule.pattern {
                Some(re) => Some(
                    Regex::new(&format!("^(?:{re})$"))
                        .map_err(|e| (format!("params.{name}.pattern"), e.to_string()))?,
                ),
                None => None,
            };
            rules.push((name.clone(), Rule { pattern: regex, max_length: rule.max_length }));
        }
        // A trailing slash is matched by `lookup` itself, so `/a/` and `/a` are one route.
        self.table
            .insert(trim_slash(pattern), self.routes.len())
            .map_err(|e| ("path".into(), format!("{pattern:?}: {e}")))?;
        self.routes.push(Arc::new(Route {
            pattern: pattern.clone(),
            plugin: route.plugin.clone(),
            metadata: route.metadata,
            auth: route.auth,
            rules,
        }));
        Ok(())
    }

    /// The route serving `path`, with its parameters; `/ws/system/` matches `/ws/system`.
    pub fn lookup(&self, path: &str) -> Result<Matched, Miss> {
        let found = self.table.at(trim_slash(path)).map_err(|_| Miss::NotFound)?;
        let route = self.routes[*found.value].clone();
        let params: Vec<(String, String)> = found.params.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect();
        for (name, rule) in &route.rules {
            let Some((_, value)) = params.iter().find(|(key, _)| key == name) else { continue };
            if let Some(max) = rule.max_length
                && value.chars().count() > max
            {
                return Err(Miss::BadParam(format!("path parameter {name:?} is longer than {max} characters")));
            }
            if let Some(regex) = &rule.pattern
                && !regex.is_match(value)
            {
                return Err(Miss::BadParam(format!("path parameter {name:?} must match {}", regex.as_str())));
            }
        }
        Ok(Matched { route, params })
    }

    /// Routes in the order they were added.
    pub fn routes(&self) -> impl Iterator<Item = &Route> {
        self.routes.iter().map(|route| &**route)
    }
}

fn trim_slash(path: &str) -> &str {
    if path.len() > 1 { path.strip_suffix('/').unwrap_or(path) } else { path }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The route table of a broker.toml, or its error's text.
    fn table(text: &str) -> Result<Router, String> {
        let config = Config::parse(text, std::path::Path::new("/etc/broker/broker.toml")).map_err(|e| e.to_string())?;
        Router::from_config(&config).map_err(|e| e.to_string())
    }

    const ECHO: &str = "[plugins.echo]\npath = \"echo.wasm\"\n[[routes]]\npath = \"/ws/system\"\nplugin = \"echo\"\n";

    #[test]
    fn routes_must_be_unique() {
        let error = table(&format!("{ECHO}[[routes]]\npath = \"/ws/system\"\nplugin = \"echo\"\n")).err().unwrap();
        assert!(error.contains("`routes[1].path`"), "{error}");
    }

    #[test]
    fn param_rules_must_name_a_parameter_and_compile() {
        let route = "[[routes]]\npath = \"/ws/chat/{room}\"\nplugin = \"echo\"\n";
        let ok = format!("{ECHO}{route}[routes.params.room]\npattern = \"[a-z0-9]+\"\nmax_length = 8\n");
        table(&ok).unwrap();
        let error = table(&format!("{ECHO}{route}[routes.params.rom]\nmax_length = 8\n")).err().unwrap();
        assert!(error.contains("`routes[1].params.rom`"), "{error}");
        let error = table(&format!("{ECHO}{route}[routes.params.room]\npattern = \"(\"\n")).err().unwrap();
        assert!(error.contains("`routes[1].params.room.pattern`"), "{error}");
    }

    fn route(path: &str, plugin: &str) -> config::Route {
        config::Route {
            path: path.into(),
            plugin: plugin.into(),
            name: None,
            metadata: false,
            params: Default::default(),
            auth: Default::default(),
        }
    }

    #[test]
    fn matches_with_params_and_trailing_slash() {
        let mut router = Router::builder();
        router.insert(&route("/ws/system", "echo")).unwrap();
        router.insert(&route("/ws/chat/{room}", "chat")).unwrap();
        assert_eq!(router.lookup("/ws/system").unwrap().route.plugin, "echo");
        assert_eq!(router.lookup("/ws/system/").unwrap().route.plugin, "echo");
        let chat = router.lookup("/ws/chat/room1/").unwrap();
        assert_eq!(chat.params, vec![("room".to_owned(), "room1".to_owned())]);
        assert_eq!(chat.route.pattern, "/ws/chat/{room}");
        assert_eq!(router.lookup("/ws/other").unwrap_err(), Miss::NotFound);
        assert_eq!(router.lookup("/ws/chat/a/b").unwrap_err(), Miss::NotFound);
    }

    #[test]
    fn refuses_routes_the_brokers_own_paths_would_shadow() {
        for (path, own) in [
            ("/metrics", "/metrics"),
            ("/healthz/", "/healthz"),
            ("/", "/"),
            ("/{page}", "/index.html"),
            ("/api/chat", "/api/..."),
            ("/api/{x}", "/api/..."),
            ("/{*rest}", "/"),
        ] {
            let error = Router::builder().insert(&route(path, "p")).unwrap_err();
            assert_eq!(error.0, "path", "{path}");
            assert!(error.1.contains(&format!("shadowed by the broker's own {own}")), "{path}: {}", error.1);
        }
        for path in ["/api", "/ws/metrics", "/metrics/{x}", "/asyncapi/{doc}", "/ws/{*rest}"] {
            Router::builder().insert(&route(path, "p")).unwrap_or_else(|e| panic!("{path}: {e:?}"));
        }
    }

    #[test]
    fn refuses_duplicates_and_relative_patterns() {
        let mut router = Router::builder();
        router.insert(&route("/ws/system", "echo")).unwrap();
        assert!(router.insert(&route("/ws/system/", "echo")).is_err());
        assert!(router.insert(&route("ws", "echo")).is_err());
    }

    #[test]
    fn parameter_rules_are_enforced() {
        let mut chat = route("/ws/chat/{room}", "chat");
        chat.params.insert("room".into(), config::ParamRule { pattern: Some("[a-z0-9]+".into()), max_length: Some(5) });
        let mut router = Router::builder();
        router.insert(&chat).unwrap();
        assert!(router.lookup("/ws/chat/room1").is_ok());
        assert!(matches!(router.lookup("/ws/chat/Room1"), Err(Miss::BadParam(m)) if m.contains("must match")));
        assert!(matches!(router.lookup("/ws/chat/room12"), Err(Miss::BadParam(m)) if m.contains("longer than 5")));
    }
}
