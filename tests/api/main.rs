//! Integration tests: the real app on a random port with a temporary SQLite file, spoken to
//! over HTTP like a client would. One test binary (faster to link than one per file).

mod helpers;
#[path = "../support/mod.rs"]
mod support;

mod audiences;
mod batch;
mod browser;
mod cli;
mod content;
mod dashboard;
mod delivery;
mod domains;
mod emails;
mod idempotency;
mod kernel;
mod limits;
mod mail;
mod openapi;
mod pagination;
mod suppressions;
mod templates;
mod tracking;
mod webhooks;
