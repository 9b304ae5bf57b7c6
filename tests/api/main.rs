//! Integration tests: the real app on a random port with a temporary SQLite file, spoken to
//! over HTTP like a client would. One test binary (faster to link than one per file).

mod helpers;
#[path = "../support/mod.rs"]
mod support;

mod audiences;
mod emails;
mod kernel;
mod openapi;
mod suppressions;
mod tracking;
