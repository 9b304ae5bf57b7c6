//! Sending domains: the API, DNS verification against a real DNS server in the test process,
//! DKIM signing checked by an independent verifier (mail-auth's, resolving through the same
//! DNS server), the verified-domain rule for live sends, and reputation.

use std::net::SocketAddr;
use std::time::Duration;

use hickory_resolver::config::{NameServerConfig, ResolverConfig, ResolverOpts};
use mail_auth::{AuthenticatedMessage, DkimResult, MessageAuthenticator};
use mailsflux::config::{DurationSetting, Nameserver};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, mail, spawn_app, spawn_app_with};
use crate::support::dns_server::TestDnsServer;
use crate::support::smtp_server::TestSmtpServer;

const HOSTNAME: &str = "mx.mailsflux.test";

async fn create(app: &TestApp, key: &str, name: &str) -> Value {
    let res = app.post("/v1/domains", key, &json!({ "name": name })).await;
    let status = res.status();
    let text = res.text().await.unwrap();
    assert_eq!(status, 201, "{text}");
    serde_json::from_str(&text).unwrap()
}

async fn verify(app: &TestApp, key: &str, id: &str) -> Value {
    let res = app.get(&format!("/v1/domains/{id}/verify"), key).await;
    assert_eq!(res.status(), 200);
    res.json().await.unwrap()
}

async fn get(app: &TestApp, key: &str, path: &str) -> Value {
    let res = app.get(path, key).await;
    assert_eq!(res.status(), 200, "GET {path}");
    res.json().await.unwrap()
}

/// The record `kind` (`DKIM`, ...) of a domain object.
fn record<'a>(domain: &'a Value, kind: &str) -> &'a Value {
    domain["records"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["record"] == kind)
        .unwrap_or_else(|| panic!("no {kind} record in {domain}"))
}

fn field(domain: &Value, kind: &str, member: &str) -> String {
    record(domain, kind)[member].as_str().unwrap().to_string()
}

fn statuses(domain: &Value) -> Vec<(String, String)> {
    domain["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["record"].as_str().unwrap().to_string(),
                r["status"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect()
}

/// Publishes the DKIM and SPF records as listed (DKIM split into 255-byte strings).
fn publish_dkim_and_spf(dns: &TestDnsServer, domain: &Value) {
    dns.set_txt(
        &field(domain, "DKIM", "name"),
        &[&field(domain, "DKIM", "value")],
    );
    dns.set_txt(
        &field(domain, "SPF", "name"),
        &[
            "google-site-verification=abc",
            &field(domain, "SPF", "value"),
        ],
    );
}

fn publish_all(dns: &TestDnsServer, domain: &Value) {
    publish_dkim_and_spf(dns, domain);
    dns.set_txt(
        &field(domain, "DMARC", "name"),
        &[&field(domain, "DMARC", "value")],
    );
    dns.set_mx(&field(domain, "RETURN_PATH", "name"), &[(10, HOSTNAME)]);
}

/// The domain events stored in the events table (the webhooks' outbox).
fn domain_events(app: &TestApp) -> Vec<(String, Value, Option<String>)> {
    let conn = rusqlite::Connection::open(&app.config.database.path).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT type, data_json, email_id FROM events WHERE type LIKE 'domain.%' ORDER BY id",
        )
        .unwrap();
    stmt.query_map([], |r| {
        let data: String = r.get(1)?;
        Ok((r.get(0)?, serde_json::from_str(&data).unwrap(), r.get(2)?))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

fn with_dns(c: &mut mailsflux::Config, dns: SocketAddr) {
    c.dns.nameservers = vec![Nameserver(dns)];
    c.delivery.hostname = HOSTNAME.into();
}

#[tokio::test]
async fn domains_are_created_listed_read_and_deleted_per_mode() {
    let app = spawn_app().await;
    let d = create(&app, &app.test_key, "Acme.TEST.").await;
    let id = d["id"].as_str().unwrap();
    assert!(id.starts_with("dom_"), "{d}");
    assert_eq!(d["object"], "domain");
    assert_eq!(d["name"], "acme.test");
    assert_eq!(d["status"], "pending");
    assert!(d["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(d["verified_at"], Value::Null);
    let text = d.to_string();
    assert!(
        !text.contains("PRIVATE") && !text.contains("private"),
        "{text}"
    );
    assert_eq!(
        statuses(&d),
        pairs(&[
            ("DKIM", "pending"),
            ("SPF", "pending"),
            ("DMARC", "pending"),
            ("RETURN_PATH", "pending")
        ])
    );
    let dkim = record(&d, "DKIM");
    assert_eq!(dkim["type"], "TXT");
    assert_eq!(dkim["name"], "mf._domainkey.acme.test");
    let value = dkim["value"].as_str().unwrap();
    assert!(
        value.starts_with("v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA"),
        "{value}"
    );
    assert_eq!(field(&d, "SPF", "name"), "acme.test");
    assert_eq!(field(&d, "SPF", "value"), "v=spf1 a:localhost ~all");
    assert_eq!(field(&d, "DMARC", "name"), "_dmarc.acme.test");
    assert!(field(&d, "DMARC", "value").starts_with("v=DMARC1; p=none;"));
    let rp = record(&d, "RETURN_PATH");
    assert_eq!(
        (&rp["type"], &rp["name"], &rp["value"], &rp["priority"]),
        (
            &json!("MX"),
            &json!("bounces.acme.test"),
            &json!("localhost"),
            &json!(10)
        )
    );

    // A duplicate in the same mode is a conflict; the other mode has its own domains.
    let err = assert_error(
        app.post("/v1/domains", &app.test_key, &json!({"name": "acme.test"}))
            .await,
        409,
        "conflict",
    )
    .await;
    assert_eq!(err["field"], "name");
    assert_error(
        app.get(&format!("/v1/domains/{id}"), &app.live_key).await,
        404,
        "not_found",
    )
    .await;
    let live = create(&app, &app.live_key, "acme.test").await;
    assert_ne!(live["id"], d["id"]);
    assert_ne!(
        field(&live, "DKIM", "value"),
        field(&d, "DKIM", "value"),
        "one key per domain"
    );

    let list = get(&app, &app.test_key, "/v1/domains").await;
    assert_eq!(list["object"], "list");
    assert_eq!(list["has_more"], false);
    let ids: Vec<&Value> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| &d["id"])
        .collect();
    assert_eq!(ids, [&d["id"]]);
    assert_eq!(
        get(&app, &app.test_key, &format!("/v1/domains/{id}")).await,
        d
    );
    assert_error(
        app.get("/v1/domains?limit=0", &app.test_key).await,
        422,
        "validation_error",
    )
    .await;

    let res = app
        .delete(&format!("/v1/domains/{id}"), &app.test_key)
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"id": id, "deleted": true})
    );
    assert_error(
        app.get(&format!("/v1/domains/{id}"), &app.test_key).await,
        404,
        "not_found",
    )
    .await;
    let res = app
        .delete(&format!("/v1/domains/{id}"), &app.test_key)
        .await;
    assert_error(res, 404, "not_found").await;
    assert_error(
        app.get("/v1/domains/nope/verify", &app.test_key).await,
        404,
        "not_found",
    )
    .await;
    assert_error(
        app.get(
            "/v1/domains/dom_01JNPXR4KQ8S2V3WZ6B7C9D0EF/reputation",
            &app.test_key,
        )
        .await,
        404,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn bad_domain_names_are_refused() {
    let app = spawn_app().await;
    for bad in [
        "acme",
        "*.acme.test",
        "hello@acme.test",
        "https://acme.test",
        "acme.test/x",
        "acme.test extra",
        "192.0.2.1",
        "[192.0.2.1]",
        "-acme.test",
        "a..test",
        "",
    ] {
        let err = assert_error(
            app.post("/v1/domains", &app.test_key, &json!({ "name": bad }))
                .await,
            422,
            "validation_error",
        )
        .await;
        assert_eq!(err["field"], "name", "{bad:?}: {err}");
    }
    let err = assert_error(
        app.post("/v1/domains", &app.test_key, &json!({})).await,
        422,
        "validation_error",
    )
    .await;
    assert_eq!(err["field"], "name");
    assert_error(
        app.post(
            "/v1/domains",
            &app.test_key,
            &json!({"name": "acme.test", "region": "eu"}),
        )
        .await,
        422,
        "validation_error",
    )
    .await;
    assert_error(
        app.post("/v1/domains", &app.test_key, &json!({"name": 5}))
            .await,
        422,
        "validation_error",
    )
    .await;
    let list = get(&app, &app.test_key, "/v1/domains").await;
    assert_eq!(list["data"], json!([]));
    // A sending-only key may not manage domains.
    assert_error(
        app.post("/v1/domains", &app.send_key, &json!({"name": "acme.test"}))
            .await,
        403,
        "restricted_api_key",
    )
    .await;
}

#[tokio::test]
async fn verification_follows_the_published_records() {
    let dns = TestDnsServer::start().await;
    let app = spawn_app_with(|c| with_dns(c, dns.addr())).await;
    let d = create(&app, &app.live_key, "acme.test").await;
    let id = d["id"].as_str().unwrap().to_string();

    // Nothing published: pending, each record pending.
    let v = verify(&app, &app.live_key, &id).await;
    assert_eq!(v["status"], "pending");
    assert!(v["last_checked_at"].is_string());
    assert!(statuses(&v).iter().all(|(_, s)| s == "pending"), "{v}");

    // DKIM split over several strings, tags reordered, spaces added; SPF wrong.
    let key = field(&d, "DKIM", "value");
    let key = key.strip_prefix("v=DKIM1; k=rsa; p=").unwrap();
    let (a, b) = key.split_at(200);
    let (b, c) = b.split_at(150);
    let part1 = format!("k=rsa; p={a}");
    let part2 = format!(" {b}");
    let part3 = format!("{c} ;  v=DKIM1");
    dns.set_txt_strings(
        &field(&d, "DKIM", "name"),
        &[&[part1.as_str(), part2.as_str(), part3.as_str()]],
    );
    dns.set_txt(
        "acme.test",
        &["v=spf1 include:_spf.other.test ~all", "something=else"],
    );
    let v = verify(&app, &app.live_key, &id).await;
    assert_eq!(v["status"], "partially_verified", "{v}");
    assert_eq!(record(&v, "DKIM")["status"], "verified", "{v}");
    assert_eq!(record(&v, "SPF")["status"], "failed");
    assert_eq!(
        record(&v, "SPF")["found"],
        json!(["v=spf1 include:_spf.other.test ~all"])
    );
    assert!(record(&v, "DKIM").get("found").is_none());

    // A wrong key is failed, and says what was found.
    dns.set_txt(&field(&d, "DKIM", "name"), &["v=DKIM1; k=rsa; p=AAAA"]);
    let v = verify(&app, &app.live_key, &id).await;
    assert_eq!(record(&v, "DKIM")["status"], "failed");
    assert_eq!(
        record(&v, "DKIM")["found"],
        json!(["v=DKIM1; k=rsa; p=AAAA"])
    );
    assert_eq!(v["status"], "pending");

    // Both right: verified (DMARC and the return path are recommended, not required).
    dns.set_txt_strings(
        &field(&d, "DKIM", "name"),
        &[&[part1.as_str(), part2.as_str(), part3.as_str()]],
    );
    dns.set_txt(
        "acme.test",
        &[
            "v=spf1 include:_spf.other.test a:MX.mailsflux.test -all",
            "something=else",
        ],
    );
    let v = verify(&app, &app.live_key, &id).await;
    assert_eq!(v["status"], "verified", "{v}");
    assert!(v["verified_at"].is_string());
    assert_eq!(
        statuses(&v),
        pairs(&[
            ("DKIM", "verified"),
            ("SPF", "verified"),
            ("DMARC", "pending"),
            ("RETURN_PATH", "pending")
        ])
    );
    let events = domain_events(&app);
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].0, "domain.verified");
    assert_eq!(events[0].1, json!({"domain_id": id, "name": "acme.test"}));
    assert_eq!(events[0].2, None);

    // DMARC and the return path published; a wrong MX first.
    dns.set_txt(
        "_dmarc.acme.test",
        &["v=DMARC1;p=quarantine; rua=mailto:d@acme.test"],
    );
    dns.set_mx("bounces.acme.test", &[(5, "elsewhere.test")]);
    let v = verify(&app, &app.live_key, &id).await;
    assert_eq!(record(&v, "DMARC")["status"], "verified");
    assert_eq!(record(&v, "RETURN_PATH")["status"], "failed");
    assert_eq!(
        record(&v, "RETURN_PATH")["found"],
        json!(["5 elsewhere.test"])
    );
    dns.set_mx("bounces.acme.test", &[(20, "mx.mailsflux.test.")]);
    let v = verify(&app, &app.live_key, &id).await;
    assert!(statuses(&v).iter().all(|(_, s)| s == "verified"), "{v}");

    // A verified domain that loses its DKIM record: temporary failure, then back.
    dns.remove(&field(&d, "DKIM", "name"));
    let v = verify(&app, &app.live_key, &id).await;
    assert_eq!(v["status"], "temporary_failure", "{v}");
    assert_eq!(record(&v, "DKIM")["status"], "pending");
    publish_dkim_and_spf(&dns, &d);
    let v = verify(&app, &app.live_key, &id).await;
    assert_eq!(v["status"], "verified");
    let kinds: Vec<String> = domain_events(&app).into_iter().map(|e| e.0).collect();
    assert_eq!(kinds, ["domain.verified", "domain.verified"]);
    // Test mode does not see live domains.
    assert_error(
        app.get(&format!("/v1/domains/{id}/verify"), &app.test_key)
            .await,
        404,
        "not_found",
    )
    .await;
}

fn short(s: &str) -> std::time::Duration {
    DurationSetting::parse(s).unwrap().0
}

#[tokio::test]
async fn background_checks_fail_stale_domains_and_catch_lost_records() {
    let dns = TestDnsServer::start().await;
    let app = spawn_app_with(|c| {
        with_dns(c, dns.addr());
        c.domains.timings.give_up_after = short("3s");
        c.domains.timings.recheck_pending = short("300ms");
        c.domains.timings.recheck_verified = short("300ms");
    })
    .await;
    let stale = create(&app, &app.live_key, "stale.test").await;
    let good = create(&app, &app.live_key, "good.test").await;
    publish_dkim_and_spf(&dns, &good);
    let stale_path = format!("/v1/domains/{}", stale["id"].as_str().unwrap());
    let good_path = format!("/v1/domains/{}", good["id"].as_str().unwrap());

    // Nobody calls verify: the worker verifies good.test, and fails stale.test after 3 s.
    let wait_for = |path: String, status: &'static str| {
        let app = &app;
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            loop {
                let d = get(app, &app.live_key, &path).await;
                if d["status"] == status {
                    return d;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "never {status}: {d}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    wait_for(good_path.clone(), "verified").await;
    let failed = wait_for(stale_path.clone(), "failed").await;
    assert!(failed["last_checked_at"].is_string());

    // good.test loses its SPF record: temporary failure, then failed after the grace period.
    dns.remove("good.test");
    wait_for(good_path.clone(), "temporary_failure").await;
    wait_for(good_path.clone(), "failed").await;

    let events = domain_events(&app);
    let mut seen: Vec<(String, String)> = events
        .iter()
        .map(|(t, d, _)| (t.clone(), d["name"].as_str().unwrap().to_string()))
        .collect();
    seen.sort();
    assert_eq!(
        seen,
        pairs(&[
            ("domain.failed", "good.test"),
            ("domain.failed", "stale.test"),
            ("domain.verified", "good.test")
        ])
    );

    // A failed domain is only checked on request, and comes back when its records are right.
    publish_dkim_and_spf(&dns, &stale);
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(
        get(&app, &app.live_key, &stale_path).await["status"],
        "failed"
    );
    let v = verify(&app, &app.live_key, stale["id"].as_str().unwrap()).await;
    assert_eq!(v["status"], "verified");
}

/// mail-auth's DKIM verifier, resolving through the test DNS server.
fn verifier(dns: SocketAddr) -> MessageAuthenticator {
    let mut server = NameServerConfig::udp_and_tcp(dns.ip());
    for connection in &mut server.connections {
        connection.port = dns.port();
    }
    MessageAuthenticator::new(
        ResolverConfig::from_name_servers(vec![server]),
        ResolverOpts::default(),
    )
    .unwrap()
}

#[tokio::test]
async fn live_mail_needs_a_verified_domain_and_is_dkim_signed() {
    let dns = TestDnsServer::start().await;
    let smtp = TestSmtpServer::plain().await;
    let app = spawn_app_with(|c| {
        with_dns(c, dns.addr());
        c.delivery.relay.port = smtp.port();
        c.delivery.require_verified_domain = true;
    })
    .await;

    // No such domain: refused, saying how to verify.
    let err = assert_error(
        app.post("/v1/emails/send", &app.live_key, &mail()).await,
        403,
        "domain_not_verified",
    )
    .await;
    let message = err["message"].as_str().unwrap();
    assert!(
        message.contains("POST /v1/domains") && message.contains("/verify"),
        "{message}"
    );
    assert_eq!(err["field"], "from");
    // Test mode is never refused.
    app.send(&mail()).await;

    let d = create(&app, &app.live_key, "acme.test").await;
    let id = d["id"].as_str().unwrap();
    let err = assert_error(
        app.post("/v1/emails/send", &app.live_key, &mail()).await,
        403,
        "domain_not_verified",
    )
    .await;
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains(&format!("/v1/domains/{id}/verify")),
        "{err}"
    );
    let err = assert_error(
        app.post("/v1/emails/batch", &app.live_key, &json!([mail(), mail()]))
            .await,
        403,
        "domain_not_verified",
    )
    .await;
    assert_eq!(err["details"][1]["code"], "domain_not_verified", "{err}");
    // With another kind of error among them, the batch is the usual 422.
    let mut bad = mail();
    bad["to"] = json!("nope");
    let err = assert_error(
        app.post("/v1/emails/batch", &app.live_key, &json!([mail(), bad]))
            .await,
        422,
        "validation_error",
    )
    .await;
    assert_eq!(err["details"][0]["code"], "domain_not_verified", "{err}");
    assert_eq!(err["details"][1]["code"], "invalid_recipient", "{err}");

    publish_all(&dns, &d);
    assert_eq!(verify(&app, &app.live_key, id).await["status"], "verified");
    let sent = app.send_with(&app.live_key, &mail()).await;
    let email_id = sent["id"].as_str().unwrap();
    let received = smtp.wait_for(1, Duration::from_secs(20)).await;
    let message = &received[0];

    // VERP: the envelope sender is on the bounce subdomain and leads back to the email.
    let envelope = message.mail_from.trim_matches(['<', '>']).to_string();
    assert_eq!(envelope, format!("bounces+{email_id}@bounces.acme.test"));
    let conn = rusqlite::Connection::open(&app.config.database.path).unwrap();
    assert_eq!(
        mailsflux::domains::store::email_for_bounce_address(&conn, &envelope)
            .unwrap()
            .as_deref(),
        Some(email_id)
    );

    // Signed once, relaxed/relaxed, the headers present; the stored raw is what was sent.
    let text = message.text();
    assert!(
        text.starts_with(
            "DKIM-Signature: v=1; a=rsa-sha256; s=mf; d=acme.test; c=relaxed/relaxed;"
        ),
        "{text}"
    );
    assert_eq!(text.matches("DKIM-Signature:").count(), 1);
    let e = get(
        &app,
        &app.live_key,
        &format!("/v1/emails/{email_id}?include=content"),
    )
    .await;
    // (mail-send ends DATA with CRLF "." CRLF after the message's own final CRLF: an empty
    // line more, which DKIM's body canonicalisation ignores.)
    let stored = e["raw"].as_str().unwrap();
    assert!(
        text == stored || text == format!("{stored}\r\n"),
        "{stored}\n---\n{text}"
    );
    let header_end = text.find("\r\n\r\n").unwrap();
    let h_tag = text[..header_end]
        .split("h=")
        .nth(1)
        .unwrap()
        .split(';')
        .next()
        .unwrap();
    let signed: Vec<String> = h_tag
        .split(':')
        .map(|h| h.trim().to_ascii_lowercase())
        .collect();
    for h in [
        "from",
        "to",
        "subject",
        "date",
        "message-id",
        "mime-version",
        "content-type",
    ] {
        assert!(signed.contains(&h.to_string()), "{h} not signed: {h_tag}");
    }
    assert!(
        !signed.contains(&"cc".to_string()) && !signed.contains(&"list-unsubscribe".to_string()),
        "{h_tag}"
    );

    // An independent verifier agrees, looking the key up in DNS.
    let auth = verifier(dns.addr());
    let parsed = AuthenticatedMessage::parse(&message.data).unwrap();
    let results = auth.verify_dkim(&parsed).await;
    assert_eq!(results.len(), 1);
    assert_eq!(results[0].result(), &DkimResult::Pass, "{results:?}");
    // ... and notices tampering.
    let tampered = String::from_utf8(message.data.clone())
        .unwrap()
        .replace("Hi there", "Hi thera");
    let parsed = AuthenticatedMessage::parse(tampered.as_bytes()).unwrap();
    let results = auth.verify_dkim(&parsed).await;
    assert_ne!(results[0].result(), &DkimResult::Pass);

    // Deleted: refused again at once.
    let res = app
        .delete(&format!("/v1/domains/{id}"), &app.live_key)
        .await;
    assert_eq!(res.status(), 200);
    assert_error(
        app.post("/v1/emails/send", &app.live_key, &mail()).await,
        403,
        "domain_not_verified",
    )
    .await;
}

#[tokio::test]
async fn test_mode_domains_sign_captured_mail_and_keep_the_from_envelope_until_the_return_path_is_set()
 {
    let dns = TestDnsServer::start().await;
    let app = spawn_app_with(|c| with_dns(c, dns.addr())).await;
    let d = create(&app, &app.test_key, "acme.test").await;
    let sent = app.send(&mail()).await;
    let id = sent["id"].as_str().unwrap();
    let e = get(
        &app,
        &app.test_key,
        &format!("/v1/emails/{id}?include=content"),
    )
    .await;
    let raw = e["raw"].as_str().unwrap();
    assert!(
        raw.starts_with("DKIM-Signature: v=1; a=rsa-sha256; s=mf; d=acme.test;"),
        "{raw}"
    );
    let conn = rusqlite::Connection::open(&app.config.database.path).unwrap();
    let envelope: String = conn
        .query_row(
            "SELECT envelope_from FROM emails WHERE id = ?1",
            [id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(envelope, "hello@acme.test");
    // Another From domain: unsigned.
    let mut other = mail();
    other["from"] = json!("a@other.test");
    let sent = app.send(&other).await;
    let e = get(
        &app,
        &app.test_key,
        &format!(
            "/v1/emails/{}?include=content",
            sent["id"].as_str().unwrap()
        ),
    )
    .await;
    assert!(!e["raw"].as_str().unwrap().contains("DKIM-Signature"));
    // With the return path published, the envelope is the VERP address.
    dns.set_mx(&field(&d, "RETURN_PATH", "name"), &[(10, HOSTNAME)]);
    verify(&app, &app.test_key, d["id"].as_str().unwrap()).await;
    let sent = app.send(&mail()).await;
    let id = sent["id"].as_str().unwrap();
    let envelope: String = conn
        .query_row(
            "SELECT envelope_from FROM emails WHERE id = ?1",
            [id],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(envelope, format!("bounces+{id}@bounces.acme.test"));
}

/// The raw message of a sent email.
async fn raw_of(app: &TestApp, sent: &Value) -> String {
    let id = sent["id"].as_str().unwrap();
    let e = get(
        app,
        &app.test_key,
        &format!("/v1/emails/{id}?include=content"),
    )
    .await;
    e["raw"].as_str().unwrap().to_string()
}

/// Sends from a domain known to sign nothing are built on the async thread; adding the
/// domain must end that at once, so the very next send is signed, and a send too large to
/// build there is signed as well.
#[tokio::test]
async fn a_domain_added_after_unsigned_sends_signs_the_next_one() {
    let dns = TestDnsServer::start().await;
    let app = spawn_app_with(|c| with_dns(c, dns.addr())).await;
    for _ in 0..3 {
        let raw = raw_of(&app, &app.send(&mail()).await).await;
        assert!(!raw.contains("DKIM-Signature"), "{raw}");
    }
    create(&app, &app.test_key, "acme.test").await;
    let raw = raw_of(&app, &app.send(&mail()).await).await;
    assert!(
        raw.starts_with("DKIM-Signature: v=1; a=rsa-sha256; s=mf; d=acme.test;"),
        "{raw}"
    );
    let mut large = mail();
    large["html"] = json!(format!("<p>{}</p>", "Long receipt line. ".repeat(2_000)));
    let raw = raw_of(&app, &app.send(&large).await).await;
    assert!(
        raw.starts_with("DKIM-Signature: v=1; a=rsa-sha256; s=mf; d=acme.test;"),
        "{}",
        &raw[..200]
    );
    // Another From domain still goes out unsigned, on its second send too.
    let mut other = mail();
    other["from"] = json!("a@other.test");
    for _ in 0..2 {
        let raw = raw_of(&app, &app.send(&other).await).await;
        assert!(!raw.contains("DKIM-Signature"), "{raw}");
    }
}

#[tokio::test]
async fn reputation_is_computed_from_the_domains_own_deliveries() {
    let dns = TestDnsServer::start().await;
    let smtp = TestSmtpServer::plain().await;
    let app = spawn_app_with(|c| {
        with_dns(c, dns.addr());
        c.delivery.relay.port = smtp.port();
        c.delivery.require_verified_domain = true;
    })
    .await;
    let d = create(&app, &app.live_key, "acme.test").await;
    let id = d["id"].as_str().unwrap();
    publish_dkim_and_spf(&dns, &d);
    assert_eq!(verify(&app, &app.live_key, id).await["status"], "verified");
    let path = format!("/v1/domains/{id}/reputation");
    let r = get(&app, &app.live_key, &path).await;
    assert_eq!(r["status"], "insufficient_data");
    assert_eq!(
        (r["sent"].as_u64(), r["window_days"].as_u64()),
        (Some(0), Some(30))
    );

    // 100 live emails, 3 refused for good by the receiving server: a 3 % bounce rate.
    for i in 0..3 {
        smtp.fail_rcpt(
            &format!("r{i}@example.org"),
            550,
            "5.1.1 No such user",
            None,
        );
    }
    let batch: Vec<Value> = (0..100)
        .map(|i| {
            let mut m = mail();
            m["to"] = json!(format!("r{i}@example.org"));
            m
        })
        .collect();
    let res = app
        .post("/v1/emails/batch", &app.live_key, &json!(batch))
        .await;
    assert_eq!(res.status(), 200);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let r = loop {
        let r = get(&app, &app.live_key, &path).await;
        if r["sent"] == 100 {
            break r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "deliveries did not finish: {r}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // Bounce points 40 × (5 % − 3 %) / 3 % = 26.67, complaints 40, DKIM 8 + SPF 6: 80.67.
    assert_eq!(r["bounced"], 3, "{r}");
    assert_eq!(
        r["delivered"], 0,
        "relayed mail is sent, not known delivered"
    );
    assert_eq!(r["complained"], 0);
    assert_eq!(r["bounce_rate"], 0.03);
    assert_eq!(r["complaint_rate"], 0.0);
    assert_eq!(r["score"], 81, "{r}");
    assert_eq!(r["status"], "fair");
    assert_eq!(r["domain_id"], id);
    assert_eq!(r["name"], "acme.test");
    assert!(r["computed_at"].as_str().unwrap().ends_with('Z'));

    // Publishing DMARC adds 6 points.
    dns.set_txt(&field(&d, "DMARC", "name"), &[&field(&d, "DMARC", "value")]);
    verify(&app, &app.live_key, id).await;
    assert_eq!(get(&app, &app.live_key, &path).await["score"], 87);
}

#[tokio::test]
async fn a_test_mode_domain_scores_its_test_mail_and_complaints_make_it_poor() {
    let dns = TestDnsServer::start().await;
    let app = spawn_app_with(|c| with_dns(c, dns.addr())).await;
    let d = create(&app, &app.test_key, "acme.test").await;
    let id = d["id"].as_str().unwrap();
    publish_all(&dns, &d);
    assert_eq!(verify(&app, &app.test_key, id).await["status"], "verified");
    // 98 captured, one hard bounce, one complaint (captured, then marked as spam).
    let batch: Vec<Value> = (0..100)
        .map(|i| {
            let mut m = mail();
            m["to"] = json!(match i {
                0 => "bounced@test.mailsflux".to_string(),
                1 => "complained@test.mailsflux".to_string(),
                i => format!("r{i}@example.org"),
            });
            m
        })
        .collect();
    let res = app
        .post("/v1/emails/batch", &app.test_key, &json!(batch))
        .await;
    assert_eq!(res.status(), 200);
    let path = format!("/v1/domains/{id}/reputation");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let r = loop {
        let r = get(&app, &app.test_key, &path).await;
        if r["sent"] == 100 && r["complained"] == 1 {
            break r;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "captures did not finish: {r}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        (&r["delivered"], &r["bounced"]),
        (&json!(99), &json!(1)),
        "{r}"
    );
    assert_eq!(
        (&r["bounce_rate"], &r["complaint_rate"]),
        (&json!(0.01), &json!(0.01))
    );
    // 40 bounce points + 0 complaint points (1 % is over the 0.3 % line) + 20 = 60, which
    // would be fair; over the complaint line it is poor.
    assert_eq!(
        (&r["score"], &r["status"]),
        (&json!(60), &json!("poor")),
        "{r}"
    );
    // The live mode has no such domain.
    assert_error(app.get(&path, &app.live_key).await, 404, "not_found").await;
}

#[tokio::test]
async fn per_recipient_marketing_copies_are_signed_too() {
    let dns = TestDnsServer::start().await;
    let app = spawn_app_with(|c| with_dns(c, dns.addr())).await;
    create(&app, &app.test_key, "acme.test").await;
    let mut body = mail();
    body["type"] = json!("marketing");
    body["to"] = json!(["ana@example.org", "bo@example.org"]);
    body["html"] = json!("<p>News. <a href=\"{{ unsubscribe_url }}\">Unsubscribe</a></p>");
    let sent = app.send(&body).await;
    let id = sent["id"].as_str().unwrap();
    let page = get(
        &app,
        &app.test_key,
        &format!("/v1/emails/{id}/recipients?include=content"),
    )
    .await;
    let copies = page["data"].as_array().unwrap();
    assert_eq!(copies.len(), 2);
    let mut links = Vec::new();
    for copy in copies {
        let raw = copy["raw"].as_str().expect("the copy's MIME");
        assert!(
            raw.starts_with("DKIM-Signature: v=1; a=rsa-sha256; s=mf; d=acme.test;"),
            "{raw}"
        );
        let at = raw.find("List-Unsubscribe: <").expect("List-Unsubscribe") + 19;
        links.push(raw[at..at + raw[at..].find('>').unwrap()].to_string());
    }
    assert_ne!(links[0], links[1], "each copy has its own unsubscribe link");
}
