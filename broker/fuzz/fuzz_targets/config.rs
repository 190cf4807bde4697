//! Any text an operator (or a broken deploy) can put in broker.toml: loading must refuse it with an
//! error naming the file, or accept a config whose route table builds.

#![no_main]

use std::path::Path;

use broker::config::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    // A folder that does not exist, so relative key and certificate paths never name real files.
    let path = Path::new("/nonexistent/broker-fuzz/broker.toml");
    match Config::parse(text, path) {
        Ok(config) => {
            config.router().expect("a config that validated has a route table");
        }
        Err(error) => {
            let message = error.to_string();
            assert!(message.contains("broker.toml"), "the error names the file: {message}");
        }
    }
});
