//! Heap blocks the per-message path allocates. Each is a `malloc` and a `free` on every message a
//! plugin handles (#21), so the counts are pinned here: a change that adds one fails. Its own test
//! binary, since counting takes the global allocator, and without libtest (`harness = false`): dhat
//! counts every thread's blocks, and libtest's main thread may allocate while the test counts.
#![allow(clippy::unwrap_used, reason = "a test: a failure is the finding")]

use broker::plugin::schema::flat::Flat;
use broker::wire::{protocol, unique_keys};

#[global_allocator]
static ALLOCATOR: dhat::Alloc = dhat::Alloc;

/// Heap blocks allocated while `f` runs; what it returns is dropped after the count.
fn blocks<R>(f: impl FnOnce() -> R) -> u64 {
    let before = dhat::HeapStats::get().total_blocks;
    let kept = f();
    let allocated = dhat::HeapStats::get().total_blocks - before;
    drop(kept);
    allocated
}

fn main() {
    a_message_allocates_only_what_it_keeps();
    println!("a_message_allocates_only_what_it_keeps ... ok");
}

fn a_message_allocates_only_what_it_keeps() {
    let _profiler = dhat::Profiler::builder().testing().build();
    let accepted = ["user_message".to_owned()];

    // The envelope: the action and the payload are borrowed from the frame (an action written with
    // escapes is copied, to undo them).
    let frame = r#"{"action":"user_message","payload":{"message":"Hello"}}"#;
    assert_eq!(blocks(|| protocol::parse(frame, &accepted).unwrap()), 0, "the envelope");

    // The reply's check: one scan; the frame goes on as the plugin wrote it.
    let reply = r#"{"action":"system_echo","payload":{"message":"🔧 System Echo: Hello"}}"#.to_owned();
    assert_eq!(blocks(|| protocol::plugin_frame(reply, None).unwrap()), 0, "the reply's check");

    // The payload against a flat schema (every shipped action's): read on its text, no value built.
    let schema =
        serde_json::json!({"type": "object", "properties": {"message": {"type": "string"}}, "required": ["message"]});
    let flat = Flat::of(&schema).unwrap();
    assert_eq!(blocks(|| assert!(flat.admits(r#"{"message":"Hello"}"#))), 0, "the payload's flat check");

    // The payload as a value, for any other schema: the key, the string and the map's two tables,
    // and no copy of the key for a path that only a key given twice needs.
    assert_eq!(blocks(|| unique_keys::parse(r#"{"message":"Hello"}"#).unwrap()), 4, "the payload's value");
}
