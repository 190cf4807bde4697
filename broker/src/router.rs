//! The route table: which plugin serves which WebSocket path.

/// A route that matched a request path.
#[derive(Debug, Clone)]
pub struct Matched {
    /// The route's pattern as written in broker.toml.
    pub pattern: String,
    /// The plugin serving it.
    pub plugin: String,
    /// Path parameters, in pattern order.
    pub params: Vec<(String, String)>,
}

/// Path patterns (`/ws/chat/{room}`) to plugin names.
#[derive(Debug, Clone, Default)]
pub struct Router {
    table: matchit::Router<usize>,
    routes: Vec<(String, String)>,
}

impl Router {
    pub fn builder() -> Router {
        Router::default()
    }

    /// Adds a route; the error says why the pattern is refused.
    pub fn insert(&mut self, pattern: &str, plugin: &str) -> Result<(), String> {
        if !pattern.starts_with('/') {
            return Err(format!("{pattern:?} must start with '/'"));
        }
        // A trailing slash is matched by `lookup` itself, so `/a/` and `/a` are one route.
        let normalized = trim_slash(pattern);
        self.table.insert(normalized, self.routes.len()).map_err(|e| format!("{pattern:?}: {e}"))?;
        self.routes.push((pattern.to_owned(), plugin.to_owned()));
        Ok(())
    }

    /// The route serving `path`, with its parameters; `/ws/system/` matches `/ws/system`.
    pub fn lookup(&self, path: &str) -> Option<Matched> {
        let found = self.table.at(trim_slash(path)).ok()?;
        let (pattern, plugin) = &self.routes[*found.value];
        Some(Matched {
            pattern: pattern.clone(),
            plugin: plugin.clone(),
            params: found.params.iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect(),
        })
    }

    /// Routes in the order they were added: (pattern, plugin).
    pub fn routes(&self) -> impl Iterator<Item = (&str, &str)> {
        self.routes.iter().map(|(pattern, plugin)| (pattern.as_str(), plugin.as_str()))
    }
}

fn trim_slash(path: &str) -> &str {
    if path.len() > 1 { path.strip_suffix('/').unwrap_or(path) } else { path }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_with_params_and_trailing_slash() {
        let mut router = Router::builder();
        router.insert("/ws/system", "echo").unwrap();
        router.insert("/ws/chat/{room}", "chat").unwrap();
        assert_eq!(router.lookup("/ws/system").unwrap().plugin, "echo");
        assert_eq!(router.lookup("/ws/system/").unwrap().plugin, "echo");
        let chat = router.lookup("/ws/chat/room1/").unwrap();
        assert_eq!(chat.params, vec![("room".to_owned(), "room1".to_owned())]);
        assert_eq!(chat.pattern, "/ws/chat/{room}");
        assert!(router.lookup("/ws/other").is_none());
        assert!(router.lookup("/ws/chat/a/b").is_none());
    }

    #[test]
    fn refuses_duplicates_and_relative_patterns() {
        let mut router = Router::builder();
        router.insert("/ws/system", "echo").unwrap();
        assert!(router.insert("/ws/system/", "echo").is_err());
        assert!(router.insert("ws", "echo").is_err());
    }
}
