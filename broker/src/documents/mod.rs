//! Documents derived from the routes and the plugins' manifests: the AsyncAPI document and the
//! typed clients generated from it.

pub mod asyncapi;
pub mod codegen;
