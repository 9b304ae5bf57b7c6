//! Live-mode delivery against real peers: the in-process SMTP server (relay and direct
//! mode), the in-process DNS server (MX records), and the real binary killed mid-delivery.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use mailsflux::Config;
use mailsflux::config::{DeliveryMode, DirectStartTls, Nameserver, RelayTls};
use serde_json::{Value, json};

use crate::helpers::{TestApp, mail, spawn_app_with};
use crate::support::dns_server::TestDnsServer;
use crate::support::smtp_server::{SmtpServerOptions, TestSmtpServer};

const WAIT: Duration = Duration::from_secs(20);

const FINAL: [&str; 6] = [
    "sent",
    "delivered",
    "bounced",
    "failed",
    "suppressed",
    "canceled",
];

/// Spawns the app in relay mode (TLS none) to `server`, then applies `adjust`.
async fn relay_app(server: &TestSmtpServer, adjust: impl FnOnce(&mut Config)) -> TestApp {
    let port = server.port();
    spawn_app_with(move |c| {
        c.delivery.relay.port = port;
        adjust(c);
    })
    .await
}

/// Spawns the app in direct mode: MX lookups at `dns`, MX port `port`.
async fn direct_app(dns: &TestDnsServer, port: u16, adjust: impl FnOnce(&mut Config)) -> TestApp {
    let ns = dns.addr();
    spawn_app_with(move |c| {
        c.delivery.mode = DeliveryMode::Direct;
        c.delivery.direct.port = port;
        c.dns.nameservers = vec![Nameserver(ns)];
        adjust(c);
    })
    .await
}

fn live(to: Value) -> Value {
    let mut m = mail();
    m["to"] = to;
    m
}

/// Sends with the live key; returns the email id.
async fn send_live(app: &TestApp, body: &Value) -> String {
    let sent = app.send_with(&app.live_key, body).await;
    sent["id"].as_str().unwrap().to_string()
}

/// Sends one batch with the live key: `count` emails, to r0@example.org, r1@... in order.
async fn send_live_batch(app: &TestApp, count: usize) {
    let batch: Vec<Value> = (0..count)
        .map(|i| live(json!(format!("r{i}@example.org"))))
        .collect();
    let res = app
        .post("/v1/emails/batch", &app.live_key, &json!(batch))
        .await;
    assert_eq!(res.status(), 200);
}

/// Waits until every recipient of the email is final.
async fn wait_final(app: &TestApp, id: &str) -> Value {
    app.wait_email(&app.live_key, id, WAIT, |e| {
        e["recipients"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| FINAL.contains(&r["status"].as_str().unwrap()))
    })
    .await
}

fn recipient<'a>(e: &'a Value, address: &str) -> &'a Value {
    e["recipients"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["email"] == address)
        .unwrap_or_else(|| panic!("no recipient {address} in {e}"))
}

fn event_types(e: &Value) -> Vec<String> {
    e["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect()
}

fn event<'a>(e: &'a Value, kind: &str, address: &str) -> &'a Value {
    e["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|ev| ev["type"] == kind && ev["recipient"] == address)
        .unwrap_or_else(|| panic!("no {kind} event for {address} in {e}"))
}

/// The test's own connection to the app's database, for what the API does not show yet
/// (event data, suppressions).
fn db(app: &TestApp) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(&app.config.database.path).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn
}

fn suppression_reason(app: &TestApp, address: &str) -> Option<String> {
    db(app)
        .query_row(
            "SELECT reason FROM suppressions WHERE mode = 'live' AND email_lower = ?1",
            [address.to_lowercase()],
            |r| r.get(0),
        )
        .ok()
}

/// The data of the email's bounced event for `address`.
fn bounce_data(app: &TestApp, email_id: &str, address: &str) -> Value {
    let data: String = db(app)
        .query_row(
            "SELECT data_json FROM events WHERE email_id = ?1 AND recipient = ?2 AND type = 'bounced'",
            [email_id, address],
            |r| r.get(0),
        )
        .unwrap();
    serde_json::from_str::<Value>(&data).unwrap()["bounce"].clone()
}

fn header(data: &str, name: &str) -> Option<String> {
    data.lines()
        .take_while(|l| !l.is_empty())
        .find(|l| {
            l.len() > name.len()
                && l[..name.len()].eq_ignore_ascii_case(name)
                && l.as_bytes()[name.len()] == b':'
        })
        .map(|l| l[name.len() + 1..].trim().to_string())
}

fn rcpt_commands(server: &TestSmtpServer) -> usize {
    server.commands().iter().filter(|c| *c == "RCPT").count()
}

#[tokio::test]
async fn relay_accepted_is_sent_with_the_message_id_built_at_accept() {
    let server = TestSmtpServer::plain().await;
    let app = relay_app(&server, |_| {}).await;
    let id = send_live(&app, &live(json!("ana@example.org"))).await;
    let e = wait_final(&app, &id).await;
    assert_eq!(e["status"], "sent", "{e}");
    let r = recipient(&e, "ana@example.org");
    assert_eq!(r["attempts"], 1);
    assert!(
        r["last_response"]
            .as_str()
            .unwrap()
            .starts_with("250 2.0.0 Ok: queued as T"),
        "{e}"
    );
    assert_eq!(event_types(&e), ["queued", "sent"]);
    assert_eq!(
        event(&e, "sent", "ana@example.org")["detail"],
        r["last_response"]
    );
    let messages = server.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].mail_from, "hello@acme.test");
    assert_eq!(messages[0].rcpt_to, ["ana@example.org"]);
    assert!(!messages[0].tls);
    assert_eq!(
        header(&messages[0].text(), "Message-ID").as_deref(),
        e["message_id"].as_str()
    );
    assert_eq!(e["message_id"], format!("<{id}@acme.test>"));
}

#[tokio::test]
async fn a_refused_recipient_bounces_alone_and_is_suppressed() {
    let server = TestSmtpServer::plain().await;
    server.fail_rcpt("gone@example.org", 550, "5.1.1 no such user", None);
    let app = relay_app(&server, |_| {}).await;
    let id = send_live(&app, &live(json!(["ok@example.org", "gone@example.org"]))).await;
    let e = wait_final(&app, &id).await;
    assert_eq!(e["status"], "partial", "{e}");
    assert_eq!(recipient(&e, "ok@example.org")["status"], "sent");
    let gone = recipient(&e, "gone@example.org");
    assert_eq!(gone["status"], "bounced");
    assert_eq!(gone["last_response"], "550 5.1.1 no such user");
    assert_eq!(
        event(&e, "bounced", "gone@example.org")["detail"],
        "550 5.1.1 no such user"
    );
    let messages = server.messages();
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].rcpt_to, ["ok@example.org"]);

    let bounce = bounce_data(&app, &id, "gone@example.org");
    assert_eq!(bounce["type"], "hard");
    assert_eq!(bounce["category"], "mailbox");
    assert_eq!(bounce["code"], 550);
    assert_eq!(bounce["enhanced_code"], "5.1.1");
    assert_eq!(
        suppression_reason(&app, "gone@example.org").as_deref(),
        Some("bounce")
    );

    // The next send to that address is suppressed at accept: no SMTP attempt.
    let rcpts_before = rcpt_commands(&server);
    let sent = app
        .send_with(&app.live_key, &live(json!("Gone@Example.org")))
        .await;
    assert_eq!(sent["status"], "suppressed");
    let e = app.email(&app.live_key, sent["id"].as_str().unwrap()).await;
    assert_eq!(event_types(&e), ["queued", "suppressed"]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rcpt_commands(&server), rcpts_before);
}

#[tokio::test]
async fn a_soft_5xx_bounces_without_a_suppression() {
    let server = TestSmtpServer::plain().await;
    server.fail_rcpt("full@example.org", 552, "5.2.2 mailbox full", Some(1));
    let app = relay_app(&server, |_| {}).await;
    let id = send_live(&app, &live(json!("full@example.org"))).await;
    let e = wait_final(&app, &id).await;
    assert_eq!(e["status"], "bounced", "{e}");
    assert_eq!(
        recipient(&e, "full@example.org")["last_response"],
        "552 5.2.2 mailbox full"
    );
    let bounce = bounce_data(&app, &id, "full@example.org");
    assert_eq!(bounce["type"], "soft");
    assert_eq!(bounce["category"], "mailbox");
    assert_eq!(suppression_reason(&app, "full@example.org"), None);
    // Not suppressed: the next email goes out.
    let id = send_live(&app, &live(json!("full@example.org"))).await;
    assert_eq!(wait_final(&app, &id).await["status"], "sent");
}

#[tokio::test]
async fn a_temporary_failure_is_retried_then_sent() {
    let server = TestSmtpServer::plain().await;
    server.fail_rcpt("later@example.org", 451, "4.3.0 try again later", Some(1));
    let app = relay_app(&server, |_| {}).await;
    let id = send_live(&app, &live(json!("later@example.org"))).await;
    let e = wait_final(&app, &id).await;
    assert_eq!(e["status"], "sent", "{e}");
    assert_eq!(recipient(&e, "later@example.org")["attempts"], 2);
    assert_eq!(event_types(&e), ["queued", "delivery_delayed", "sent"]);
    assert_eq!(
        event(&e, "delivery_delayed", "later@example.org")["detail"],
        "451 4.3.0 try again later"
    );
}

#[tokio::test]
async fn temporary_failures_past_the_schedule_end_failed() {
    let server = TestSmtpServer::plain().await;
    server.fail_rcpt("busy@example.org", 450, "4.2.1 mailbox busy", None);
    let app = relay_app(&server, |c| {
        c.delivery.retry_schedule = vec![
            mailsflux::config::DurationSetting::parse("1s").unwrap(),
            mailsflux::config::DurationSetting::parse("1s").unwrap(),
        ];
    })
    .await;
    let id = send_live(&app, &live(json!("busy@example.org"))).await;
    let e = wait_final(&app, &id).await;
    assert_eq!(e["status"], "failed", "{e}");
    let r = recipient(&e, "busy@example.org");
    assert_eq!(r["attempts"], 3);
    assert_eq!(r["last_response"], "450 4.2.1 mailbox busy");
    assert_eq!(
        event_types(&e),
        ["queued", "delivery_delayed", "delivery_delayed", "failed"]
    );
    assert_eq!(
        event(&e, "failed", "busy@example.org")["detail"],
        "450 4.2.1 mailbox busy"
    );
    assert_eq!(suppression_reason(&app, "busy@example.org"), None);
}

#[tokio::test]
async fn a_rejection_after_data_bounces_every_accepted_recipient() {
    let server = TestSmtpServer::plain().await;
    server.fail_data("a@example.org", 554, "5.6.0 content rejected", None);
    let app = relay_app(&server, |_| {}).await;
    let id = send_live(&app, &live(json!(["a@example.org", "b@example.org"]))).await;
    let e = wait_final(&app, &id).await;
    assert_eq!(e["status"], "bounced", "{e}");
    for address in ["a@example.org", "b@example.org"] {
        assert_eq!(
            recipient(&e, address)["last_response"],
            "554 5.6.0 content rejected"
        );
        let bounce = bounce_data(&app, &id, address);
        assert_eq!(bounce["type"], "hard");
        assert_eq!(bounce["category"], "content");
        // A refused message says nothing about the address: no suppression.
        assert_eq!(suppression_reason(&app, address), None);
    }
    assert!(server.messages().is_empty());
}

#[tokio::test]
async fn an_unreachable_relay_defers() {
    // The test config's relay port 9 is closed.
    let app = spawn_app_with(|_| {}).await;
    let id = send_live(&app, &live(json!("ana@example.org"))).await;
    let e = app
        .wait_email(&app.live_key, &id, WAIT, |e| e["status"] == "deferred")
        .await;
    let delayed = event(&e, "delivery_delayed", "ana@example.org");
    assert!(
        delayed["detail"].as_str().unwrap().contains("refused"),
        "{e}"
    );
}

#[tokio::test]
async fn starttls_with_a_self_signed_certificate() {
    let server = TestSmtpServer::start(SmtpServerOptions {
        starttls: true,
        ..Default::default()
    })
    .await;
    let app = relay_app(&server, |c| {
        c.delivery.relay.tls = RelayTls::Starttls;
        c.delivery.relay.accept_invalid_certs_for_tests = true;
    })
    .await;
    let id = send_live(&app, &live(json!("ana@example.org"))).await;
    assert_eq!(wait_final(&app, &id).await["status"], "sent");
    assert!(server.messages()[0].tls);

    // Without the test-only setting the certificate is checked, and the attempt deferred.
    let strict = relay_app(&server, |c| c.delivery.relay.tls = RelayTls::Starttls).await;
    let id = send_live(&strict, &live(json!("bo@example.org"))).await;
    let e = strict
        .wait_email(&strict.live_key, &id, WAIT, |e| e["status"] == "deferred")
        .await;
    let detail = event(&e, "delivery_delayed", "bo@example.org")["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(detail.contains("TLS"), "{detail}");
    assert_eq!(server.messages().len(), 1);
}

#[tokio::test]
async fn implicit_tls_with_auth() {
    let server = TestSmtpServer::start(SmtpServerOptions {
        implicit_tls: true,
        credentials: Some(("mailer".into(), "s3cret".into())),
        ..Default::default()
    })
    .await;
    let app = relay_app(&server, |c| {
        c.delivery.relay.tls = RelayTls::Implicit;
        c.delivery.relay.accept_invalid_certs_for_tests = true;
        c.delivery.relay.username = "mailer".into();
        c.delivery.relay.password = "s3cret".into();
    })
    .await;
    let id = send_live(&app, &live(json!("ana@example.org"))).await;
    assert_eq!(wait_final(&app, &id).await["status"], "sent");
    let message = &server.messages()[0];
    assert!(message.tls);
    assert_eq!(message.auth_user.as_deref(), Some("mailer"));

    // A wrong password is the operator's to fix: deferred, with the reason.
    let wrong = relay_app(&server, |c| {
        c.delivery.relay.tls = RelayTls::Implicit;
        c.delivery.relay.accept_invalid_certs_for_tests = true;
        c.delivery.relay.username = "mailer".into();
        c.delivery.relay.password = "wrong".into();
    })
    .await;
    let id = send_live(&wrong, &live(json!("bo@example.org"))).await;
    let e = wrong
        .wait_email(&wrong.live_key, &id, WAIT, |e| e["status"] == "deferred")
        .await;
    let detail = event(&e, "delivery_delayed", "bo@example.org")["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(detail.contains("535"), "{detail}");
}

#[tokio::test]
async fn one_pooled_session_carries_many_emails() {
    let server = TestSmtpServer::plain().await;
    let app = relay_app(&server, |c| {
        c.delivery.tuning.max_sessions_per_destination = Some(1);
        c.delivery.tuning.idle_timeout = Duration::from_secs(2);
    })
    .await;
    send_live_batch(&app, 20).await;
    server.wait_for(20, WAIT).await;
    assert_eq!(server.sessions_opened(), 1);
    assert_eq!(server.messages_per_session().get(&1), Some(&20));
    assert!(server.commands().iter().filter(|c| *c == "RSET").count() >= 19);
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("mailsflux_smtp_sessions_open 1"),
        "{metrics}"
    );

    // The idle session is closed with QUIT after the idle timeout.
    server.wait_for_active_sessions(0, WAIT).await;
    assert_eq!(server.quits(), 1);
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("mailsflux_smtp_sessions_open 0"),
        "{metrics}"
    );
    assert!(
        metrics.contains(r#"mailsflux_deliveries_total{outcome="sent"} 20"#),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_server_without_pipelining_gets_one_command_at_a_time() {
    let server = TestSmtpServer::start(SmtpServerOptions {
        pipelining: false,
        ..Default::default()
    })
    .await;
    server.fail_rcpt("nobody@example.org", 550, "5.1.1 No such user", None);
    let app = relay_app(&server, |c| {
        c.delivery.tuning.max_sessions_per_destination = Some(1);
    })
    .await;
    let first = send_live(
        &app,
        &live(json!(["ana@example.org", "nobody@example.org"])),
    )
    .await;
    let e = wait_final(&app, &first).await;
    assert_eq!(recipient(&e, "ana@example.org")["status"], "sent");
    assert_eq!(recipient(&e, "nobody@example.org")["status"], "bounced");
    let second = send_live(&app, &live(json!("bo@example.org"))).await;
    let e = wait_final(&app, &second).await;
    assert_eq!(recipient(&e, "bo@example.org")["status"], "sent");
    // One session: the second transaction began with RSET.
    assert_eq!(server.sessions_opened(), 1);
    assert_eq!(server.messages().len(), 2);
    let commands = server.commands();
    let from_second_mail = commands.iter().rposition(|c| c == "MAIL").unwrap();
    assert_eq!(commands[from_second_mail - 1], "RSET", "{commands:?}");
}

#[tokio::test]
async fn a_pooled_session_the_server_closed_is_replaced_without_a_deferral() {
    let server = TestSmtpServer::start(SmtpServerOptions {
        close_after_messages: Some(1),
        ..Default::default()
    })
    .await;
    let app = relay_app(&server, |c| {
        c.delivery.tuning.max_sessions_per_destination = Some(1);
    })
    .await;
    for to in ["ana@example.org", "bo@example.org", "cy@example.org"] {
        let id = send_live(&app, &live(json!(to))).await;
        let e = wait_final(&app, &id).await;
        assert_eq!(recipient(&e, to)["status"], "sent", "{e}");
        assert_eq!(recipient(&e, to)["attempts"], 1, "{e}");
        assert_eq!(event_types(&e), ["queued", "sent"], "{e}");
    }
    assert_eq!(server.messages().len(), 3);
    assert_eq!(server.sessions_opened(), 3);
}

#[tokio::test]
async fn sessions_per_destination_are_capped() {
    let server = TestSmtpServer::start(SmtpServerOptions {
        data_delay: Some(Duration::from_millis(200)),
        ..Default::default()
    })
    .await;
    let app = relay_app(&server, |c| {
        c.delivery.concurrency = 8;
        c.delivery.tuning.max_sessions_per_destination = Some(2);
    })
    .await;
    send_live_batch(&app, 8).await;
    server.wait_for(8, WAIT).await;
    assert_eq!(server.sessions_opened(), 2);
}

#[tokio::test]
async fn a_suppression_added_while_waiting_stops_the_send() {
    let server = TestSmtpServer::plain().await;
    server.fail_rcpt("x@example.org", 550, "5.1.1 no such user", None);
    let app = relay_app(&server, |_| {}).await;
    let mut later = live(json!("x@example.org"));
    later["scheduled_at"] = json!(mailsflux::store::time::format(
        mailsflux::store::time::now() + 3
    ));
    let later_id = send_live(&app, &later).await;
    // Meanwhile another email to the address bounces hard.
    let id = send_live(&app, &live(json!("x@example.org"))).await;
    assert_eq!(wait_final(&app, &id).await["status"], "bounced");
    assert_eq!(rcpt_commands(&server), 1);

    let e = wait_final(&app, &later_id).await;
    assert_eq!(e["status"], "suppressed", "{e}");
    assert_eq!(event_types(&e), ["scheduled", "suppressed"]);
    assert_eq!(rcpt_commands(&server), 1);
}

/// Recipients held longer than their lease (waiting behind a slow server that takes one
/// session at a time, then in its DATA) are not claimed again: the worker renews the
/// leases of what it holds, so each message goes out once.
#[tokio::test]
async fn held_recipients_keep_their_lease_and_go_out_once() {
    let server = TestSmtpServer::start(SmtpServerOptions {
        data_delay: Some(Duration::from_millis(3500)),
        ..Default::default()
    })
    .await;
    let app = relay_app(&server, |c| {
        c.delivery.tuning.max_sessions_per_destination = Some(1);
        // Leases are kept in whole seconds: 3 s is at least 2 s, less than either wait.
        c.delivery.tuning.lease = Duration::from_secs(3);
    })
    .await;
    send_live_batch(&app, 2).await;
    server.wait_for(2, Duration::from_secs(20)).await;
    // A second claim would have sent one of them again by now.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let mut received: Vec<String> = server
        .messages()
        .iter()
        .flat_map(|m| m.rcpt_to.clone())
        .collect();
    received.sort();
    assert_eq!(received, ["r0@example.org", "r1@example.org"]);
}

#[tokio::test]
async fn graceful_stop_finishes_the_session_under_way_and_leaves_the_rest_queued() {
    let server = TestSmtpServer::start(SmtpServerOptions {
        data_delay: Some(Duration::from_secs(1)),
        ..Default::default()
    })
    .await;
    let mut app = relay_app(&server, |c| {
        c.delivery.tuning.max_sessions_per_destination = Some(1);
    })
    .await;
    send_live_batch(&app, 4).await;
    // Wait until the first message's DATA is under way.
    let deadline = tokio::time::Instant::now() + WAIT;
    while !server.commands().iter().any(|c| c == "DATA") {
        assert!(tokio::time::Instant::now() < deadline, "no DATA");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    app.stop().await;
    assert_eq!(server.messages().len(), 1);
    let statuses: HashMap<String, i64> = {
        let conn = db(&app);
        let mut stmt = conn
            .prepare("SELECT status, count(*) FROM recipients GROUP BY status")
            .unwrap();
        stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    assert_eq!(statuses.get("sent"), Some(&1), "{statuses:?}");
    assert_eq!(statuses.get("queued"), Some(&3), "{statuses:?}");
    assert_eq!(statuses.get("sending"), None, "{statuses:?}");

    server.set_data_delay(None);
    let app = app.restart().await;
    server.wait_for(4, WAIT).await;
    let conn = db(&app);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let sent: i64 = conn
            .query_row(
                "SELECT count(*) FROM recipients WHERE status = 'sent'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        if sent == 4 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{sent} sent");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Nothing was sent twice.
    assert_eq!(server.messages().len(), 4);
}

// ----------------------------------------------------------------------------------------
// Direct mode

#[tokio::test]
async fn direct_mode_follows_mx_preference_failover_and_the_a_fallback() {
    let a = TestSmtpServer::plain().await;
    let port = a.port();
    let b = TestSmtpServer::start(SmtpServerOptions {
        bind: Some(SocketAddr::from(([127, 0, 0, 2], port))),
        ..Default::default()
    })
    .await;
    let dns = TestDnsServer::start().await;
    dns.set_a("mx-a.example.net", &[Ipv4Addr::new(127, 0, 0, 1)]);
    dns.set_a("mx-b.example.net", &[Ipv4Addr::new(127, 0, 0, 2)]);
    dns.set_a("mx-dead.example.net", &[Ipv4Addr::new(127, 0, 0, 3)]);
    // The lower preference wins.
    dns.set_mx(
        "pref.test",
        &[(20, "mx-a.example.net"), (10, "mx-b.example.net")],
    );
    // The first MX refuses connections: the next one takes it.
    dns.set_mx(
        "failover.test",
        &[(5, "mx-dead.example.net"), (10, "mx-a.example.net")],
    );
    // No MX: the domain's own address (RFC 5321 5.1).
    dns.set_a("bare.test", &[Ipv4Addr::new(127, 0, 0, 2)]);
    let app = direct_app(&dns, port, |_| {}).await;

    let id = send_live(&app, &live(json!("ana@pref.test"))).await;
    let e = wait_final(&app, &id).await;
    assert_eq!(e["status"], "delivered", "{e}");
    assert_eq!(event_types(&e), ["queued", "delivered"]);
    assert_eq!(b.messages_to("ana@pref.test").len(), 1);
    assert!(a.messages_to("ana@pref.test").is_empty());

    let id = send_live(&app, &live(json!("bo@failover.test"))).await;
    assert_eq!(wait_final(&app, &id).await["status"], "delivered");
    assert_eq!(a.messages_to("bo@failover.test").len(), 1);

    let id = send_live(&app, &live(json!("cy@bare.test"))).await;
    assert_eq!(wait_final(&app, &id).await["status"], "delivered");
    assert_eq!(b.messages_to("cy@bare.test").len(), 1);
}

#[tokio::test]
async fn direct_mode_sends_one_transaction_per_domain() {
    let server = TestSmtpServer::plain().await;
    let dns = TestDnsServer::start().await;
    dns.set_a("mx.example.net", &[Ipv4Addr::new(127, 0, 0, 1)]);
    dns.set_mx("one.test", &[(10, "mx.example.net")]);
    dns.set_mx("two.test", &[(10, "mx.example.net")]);
    server.fail_rcpt("no@one.test", 550, "5.1.1 unknown user", None);
    let app = direct_app(&dns, server.port(), |_| {}).await;
    let id = send_live(
        &app,
        &live(json!([
            "a@one.test",
            "b@one.test",
            "no@one.test",
            "c@two.test"
        ])),
    )
    .await;
    let e = wait_final(&app, &id).await;
    assert_eq!(e["status"], "partial", "{e}");
    for address in ["a@one.test", "b@one.test", "c@two.test"] {
        assert_eq!(recipient(&e, address)["status"], "delivered");
    }
    assert_eq!(recipient(&e, "no@one.test")["status"], "bounced");
    let mut rcpts: Vec<Vec<String>> = server.messages().into_iter().map(|m| m.rcpt_to).collect();
    rcpts.sort();
    assert_eq!(
        rcpts,
        [
            vec!["a@one.test".to_string(), "b@one.test".to_string()],
            vec!["c@two.test".to_string()]
        ]
    );
}

#[tokio::test]
async fn direct_mode_bounces_null_mx_and_missing_domains() {
    let server = TestSmtpServer::plain().await;
    let dns = TestDnsServer::start().await;
    dns.set_null_mx("nomail.test");
    let app = direct_app(&dns, server.port(), |_| {}).await;

    let id = send_live(&app, &live(json!("ana@nomail.test"))).await;
    let e = wait_final(&app, &id).await;
    assert_eq!(e["status"], "bounced", "{e}");
    let r = recipient(&e, "ana@nomail.test");
    assert_eq!(r["attempts"], 1);
    assert!(
        r["last_response"]
            .as_str()
            .unwrap()
            .starts_with("556 5.1.10"),
        "{e}"
    );
    let bounce = bounce_data(&app, &id, "ana@nomail.test");
    assert_eq!(bounce["type"], "hard");
    assert_eq!(bounce["category"], "domain");

    // NXDOMAIN: the domain does not exist, and waiting will not make it.
    let id = send_live(&app, &live(json!("bo@nowhere.test"))).await;
    let e = wait_final(&app, &id).await;
    assert_eq!(e["status"], "bounced", "{e}");
    assert!(
        recipient(&e, "bo@nowhere.test")["last_response"]
            .as_str()
            .unwrap()
            .starts_with("550 5.1.2"),
        "{e}"
    );
    assert_eq!(server.sessions_opened(), 0);
}

#[tokio::test]
async fn direct_mode_uses_starttls_when_offered_and_can_require_it() {
    let tls = TestSmtpServer::start(SmtpServerOptions {
        starttls: true,
        ..Default::default()
    })
    .await;
    let dns = TestDnsServer::start().await;
    dns.set_a("mx.example.net", &[Ipv4Addr::new(127, 0, 0, 1)]);
    dns.set_mx("secure.test", &[(10, "mx.example.net")]);
    let app = direct_app(&dns, tls.port(), |_| {}).await;
    let id = send_live(&app, &live(json!("ana@secure.test"))).await;
    assert_eq!(wait_final(&app, &id).await["status"], "delivered");
    assert!(tls.messages()[0].tls);

    // A server without STARTTLS: plain text by default, deferred when it is required.
    let plain = TestSmtpServer::plain().await;
    let app = direct_app(&dns, plain.port(), |_| {}).await;
    let id = send_live(&app, &live(json!("bo@secure.test"))).await;
    assert_eq!(wait_final(&app, &id).await["status"], "delivered");
    assert!(!plain.messages()[0].tls);
    let strict = direct_app(&dns, plain.port(), |c| {
        c.delivery.direct.starttls = DirectStartTls::Required;
    })
    .await;
    let id = send_live(&strict, &live(json!("cy@secure.test"))).await;
    let e = strict
        .wait_email(&strict.live_key, &id, WAIT, |e| e["status"] == "deferred")
        .await;
    let detail = event(&e, "delivery_delayed", "cy@secure.test")["detail"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(detail.contains("STARTTLS"), "{detail}");
    assert_eq!(plain.messages().len(), 1);
}

// ----------------------------------------------------------------------------------------
// A crash: the real binary, killed with SIGKILL while it delivers.

struct Serve {
    child: std::process::Child,
    base: String,
}

fn serve(dir: &std::path::Path, envs: &[(String, String)], run: usize) -> Serve {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = std::fs::File::create(dir.join(format!("serve-{run}.log"))).unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_mailsflux"))
        .arg("serve")
        .current_dir(dir)
        .envs(envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("MAILSFLUX_SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .expect("start mailsflux serve");
    Serve {
        child,
        base: format!("http://127.0.0.1:{port}"),
    }
}

async fn wait_healthy(client: &reqwest::Client, base: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Ok(res) = client.get(format!("{base}/healthz")).send().await
            && res.status() == 200
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "mailsflux serve did not come up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn count_sent(db_path: &std::path::Path) -> i64 {
    let conn = rusqlite::Connection::open(db_path).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    conn.query_row(
        "SELECT count(*) FROM recipients WHERE status = 'sent'",
        [],
        |r| r.get(0),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_while_delivering_loses_nothing_and_keeps_the_message_id() {
    const EMAILS: usize = 500;
    let server = TestSmtpServer::start(SmtpServerOptions {
        data_delay: Some(Duration::from_millis(40)),
        ..Default::default()
    })
    .await;
    let dir = tempfile::TempDir::new().unwrap();
    let db_path = dir.path().join("crash.db");
    let envs: Vec<(String, String)> = [
        ("MAILSFLUX_DATABASE__PATH", db_path.display().to_string()),
        ("MAILSFLUX_DELIVERY__MODE", "relay".into()),
        ("MAILSFLUX_DELIVERY__RELAY__HOST", "127.0.0.1".into()),
        ("MAILSFLUX_DELIVERY__RELAY__PORT", server.port().to_string()),
        ("MAILSFLUX_DELIVERY__RELAY__TLS", "none".into()),
        (
            "MAILSFLUX_DELIVERY__REQUIRE_VERIFIED_DOMAIN",
            "false".into(),
        ),
        (
            "MAILSFLUX_DELIVERY__RETRY_SCHEDULE",
            r#"["1s","1s","1s"]"#.into(),
        ),
        ("RUST_LOG", "warn".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailsflux"))
        .args(["keys", "create", "--name", "crash", "--mode", "live"])
        .current_dir(dir.path())
        .envs(envs.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let key = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(key.starts_with("mf_live_sk_"), "{key}");

    let client = reqwest::Client::new();
    let mut first = serve(dir.path(), &envs, 1);
    wait_healthy(&client, &first.base).await;
    let mut expected: HashMap<String, String> = HashMap::new(); // subject -> Message-ID
    for chunk in 0..EMAILS / 100 {
        let batch: Vec<Value> = (0..100)
            .map(|i| {
                let n = chunk * 100 + i;
                json!({"from": "Acme <hello@acme.test>", "to": format!("r{n}@example.org"),
                       "subject": format!("crash {n}"), "text": "at least once"})
            })
            .collect();
        let res = client
            .post(format!("{}/v1/emails/batch", first.base))
            .bearer_auth(&key)
            .json(&batch)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        for (i, item) in body["data"].as_array().unwrap().iter().enumerate() {
            let id = item["id"].as_str().unwrap();
            expected.insert(
                format!("crash {}", chunk * 100 + i),
                format!("<{id}@acme.test>"),
            );
        }
    }
    // Kill it (SIGKILL: no graceful stop) while delivering.
    server.wait_for(50, WAIT).await;
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let sent_at_crash = count_sent(&db_path);
    assert!(
        (sent_at_crash as usize) < EMAILS,
        "everything was delivered before the crash"
    );

    let mut second = serve(dir.path(), &envs, 2);
    wait_healthy(&client, &second.base).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while count_sent(&db_path) < EMAILS as i64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {EMAILS} sent",
            count_sent(&db_path)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Graceful stop on SIGTERM: exit code 0.
    let term = std::process::Command::new("kill")
        .args(["-TERM", &second.child.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let status = second.child.wait().unwrap();
    assert!(status.success(), "{status:?}");

    let mut copies: HashMap<String, usize> = HashMap::new();
    for message in server.messages() {
        let text = message.text();
        let subject = header(&text, "Subject").unwrap();
        let message_id = header(&text, "Message-ID").unwrap();
        assert_eq!(
            expected.get(&subject),
            Some(&message_id),
            "a copy of {subject:?} has another Message-ID"
        );
        *copies.entry(subject).or_default() += 1;
    }
    assert_eq!(copies.len(), EMAILS, "some emails never reached the server");
}
