//! The baseline of `scripts/bench-ingest`: a bare SQLite insert loop writing the rows one
//! accepted email makes (an `emails` row, its `email_contents`, a `recipients` row, a
//! `queued` event), one commit per email, with the same schema and pragmas as the server (WAL, `synchronous` as given).
//! No HTTP, no JSON, no MIME: what "store one email durably" costs without group commit.
//!
//! ```text
//! cargo run --release --example sqlite_baseline -- DB_PATH normal|full SECONDS
//! ```
//! Prints `baseline_emails_per_sec=<n>` on standard output.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use mailsflux::config::Synchronous;
use mailsflux::store::{self, ids};
use rusqlite::params;

fn main() {
    let mut args = std::env::args().skip(1);
    let usage = "usage: sqlite_baseline DB_PATH normal|full SECONDS";
    let path = PathBuf::from(args.next().expect(usage));
    let sync = match args.next().as_deref() {
        Some("normal") => Synchronous::Normal,
        Some("full") => Synchronous::Full,
        _ => panic!("{usage}"),
    };
    let seconds: u64 = args.next().and_then(|s| s.parse().ok()).expect(usage);

    let mut conn = store::open_connection(&path, sync).expect("open the database");
    store::migrate(&mut conn).expect("apply the schema");

    // Roughly the size of what one small send stores.
    let html = "<p>Hi there, this is the benchmark body.</p>".to_string();
    let text = "Hi there, this is the benchmark body.".to_string();
    let raw = vec![b'x'; 1100];
    let run_for = Duration::from_secs(seconds);
    let started = Instant::now();
    let mut n: u64 = 0;
    while started.elapsed() < run_for {
        let id = ids::new_id("msg");
        let now = store::time::now();
        let tx = conn.transaction().expect("begin");
        tx.prepare_cached(
            "INSERT INTO emails (id, mode, type, status, from_header, from_address, from_domain,
                envelope_from, subject, to_json, cc_json, bcc_json, reply_to_json, tags_json,
                headers_json, message_id, track_opens, track_clicks, api_key_id, created_at,
                queued_at, scheduled_at)
             VALUES (?1, 'test', 'transactional', 'queued', 'Acme <hello@acme.test>',
                'hello@acme.test', 'acme.test', 'hello@acme.test', 'Hello', '[\"ana@example.org\"]', '[]',
                '[]', '[]', '{}', '[]', ?2, 0, 0, 'key_x', ?3, ?3, NULL)",
        )
        .and_then(|mut s| s.execute(params![id, format!("{id}@acme.test"), now]))
        .expect("insert email");
        tx.prepare_cached(
            "INSERT INTO email_contents (email_id, raw, html, text) VALUES (?1, ?2, ?3, ?4)",
        )
        .and_then(|mut s| s.execute(params![id, raw, html, text]))
        .expect("insert email contents");
        tx.prepare_cached(
            "INSERT INTO recipients (email_id, mode, address, address_lower, domain, kind, status,
                                     next_attempt_at, updated_at)
             VALUES (?1, 'test', 'ana@example.org', 'ana@example.org', 'example.org', 'to',
                     'queued', ?2, ?2)",
        )
        .and_then(|mut s| s.execute(params![id, now]))
        .expect("insert recipient");
        tx.prepare_cached(
            "INSERT INTO events (id, mode, type, email_id, occurred_at)
             VALUES (?1, 'test', 'queued', ?2, ?3)",
        )
        .and_then(|mut s| s.execute(params![ids::new_id("evt"), id, now]))
        .expect("insert event");
        tx.commit().expect("commit");
        n += 1;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    println!("baseline_emails_per_sec={rate:.0}");
}
