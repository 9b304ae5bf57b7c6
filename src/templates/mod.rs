//! User templates: the sandboxed minijinja engine (`render`); stored templates and their
//! routes build on it.

pub mod render;
