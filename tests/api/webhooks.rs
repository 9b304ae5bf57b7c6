//! Webhooks: endpoints, signed delivery (checked with an independent Standard Webhooks
//! verifier), the events filter, retries, 410, Retry-After, restarts, the SSRF guard and
//! endpoint isolation. Events come from real test-mode sends; calls go to a real HTTP
//! receiver in the test process.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::time::{Duration, Instant};

use mailsflux::config::{DurationSetting, Nameserver};
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, mail, spawn_app, spawn_app_with};
use crate::support::dns_server::TestDnsServer;
use crate::support::webhook_receiver::{Call, Reply, WebhookReceiver};

const WAIT: Duration = Duration::from_secs(10);

fn schedule(entries: &[&str]) -> Vec<DurationSetting> {
    entries
        .iter()
        .map(|s| DurationSetting::parse(s).unwrap())
        .collect()
}

/// Creates an endpoint with the test key; returns `(id, secret)`.
async fn create(app: &TestApp, url: &str, events: Value) -> (String, String) {
    let res = app
        .post(
            "/v1/webhooks",
            &app.test_key,
            &json!({"url": url, "events": events}),
        )
        .await;
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, 201, "{body}");
    (
        body["id"].as_str().unwrap().to_string(),
        body["secret"].as_str().unwrap().to_string(),
    )
}

/// Checks the call's signature with the `standardwebhooks` crate (not our code).
fn verify(secret: &str, call: &Call) {
    let wh = standardwebhooks::Webhook::new(secret).unwrap();
    wh.verify(&call.body, &call.headers)
        .unwrap_or_else(|e| panic!("signature check failed: {e}: {:?}", call.headers));
}

fn types(calls: &[Call]) -> Vec<String> {
    let mut t: Vec<String> = calls
        .iter()
        .map(|c| c.json()["type"].as_str().unwrap().to_string())
        .collect();
    t.sort();
    t
}

async fn attempts(app: &TestApp, id: &str) -> Vec<Value> {
    let res = app
        .get(&format!("/v1/webhooks/{id}/attempts"), &app.test_key)
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["object"], "list");
    body["data"].as_array().unwrap().clone()
}

/// Polls the attempts until `n` exist (newest first).
async fn wait_attempts(app: &TestApp, id: &str, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + WAIT;
    loop {
        let a = attempts(app, id).await;
        if a.len() >= n {
            return a;
        }
        assert!(
            Instant::now() < deadline,
            "only {} attempts: {a:?}",
            a.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn to(addr: &str) -> Value {
    let mut m = mail();
    m["to"] = json!(addr);
    m
}

#[tokio::test]
async fn endpoints_are_created_listed_shown_and_deleted() {
    let app = spawn_app().await;
    let res = app
        .post(
            "/v1/webhooks",
            &app.test_key,
            &json!({"url": "https://example.com/hooks", "events": ["email.delivered", "email.delivered", "suppression.added"], "description": "CRM"}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let created: Value = res.json().await.unwrap();
    let id = created["id"].as_str().unwrap();
    assert!(id.starts_with("whk_"));
    assert_eq!(created["object"], "webhook");
    assert_eq!(created["url"], "https://example.com/hooks");
    assert_eq!(
        created["events"],
        json!(["email.delivered", "suppression.added"])
    );
    assert_eq!(created["status"], "enabled");
    assert_eq!(created["description"], "CRM");
    let secret = created["secret"].as_str().unwrap();
    use base64::Engine;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").expect("whsec_ prefix"))
        .unwrap();
    assert_eq!(raw.len(), 32);
    assert!(created["created_at"].as_str().unwrap().ends_with('Z'));

    let shown: Value = app
        .get(&format!("/v1/webhooks/{id}"), &app.test_key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(shown["id"], id);
    assert!(shown.get("secret").is_none(), "{shown}");
    let list: Value = app
        .get("/v1/webhooks", &app.test_key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["object"], "list");
    assert_eq!(list["data"].as_array().unwrap().len(), 1);
    assert!(list["data"][0].get("secret").is_none());

    // The other mode sees nothing.
    let live: Value = app
        .get("/v1/webhooks", &app.live_key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(live["data"], json!([]));
    assert_error(
        app.get(&format!("/v1/webhooks/{id}"), &app.live_key).await,
        404,
        "not_found",
    )
    .await;
    // A sending-only key may not manage webhooks.
    assert_error(
        app.get("/v1/webhooks", &app.send_key).await,
        403,
        "restricted_api_key",
    )
    .await;

    assert_eq!(attempts(&app, id).await, Vec::<Value>::new());
    let res = app
        .delete(&format!("/v1/webhooks/{id}"), &app.test_key)
        .await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.json::<Value>().await.unwrap(),
        json!({"id": id, "deleted": true})
    );
    assert_error(
        app.get(&format!("/v1/webhooks/{id}"), &app.test_key).await,
        404,
        "not_found",
    )
    .await;
    assert_error(
        app.get(&format!("/v1/webhooks/{id}/attempts"), &app.test_key)
            .await,
        404,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn bad_input_is_refused_with_the_envelope() {
    let app = spawn_app().await;
    let post = |body: Value| {
        let app = &app;
        async move { app.post("/v1/webhooks", &app.test_key, &body).await }
    };
    let err = assert_error(
        post(json!({"url": "https://example.com/", "events": ["email.delivered", "email.teleported"]})).await,
        422,
        "validation_error",
    )
    .await;
    assert_eq!(err["field"], "events[1]");
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("email.teleported")
    );
    for events in [json!([]), json!(["delivered"]), json!(["mail.printed"])] {
        assert_error(
            post(json!({"url": "https://example.com/", "events": events})).await,
            422,
            "validation_error",
        )
        .await;
    }
    for url in [
        "ftp://example.com/",
        "not a url",
        "https://user:pw@example.com/",
        "file:///etc/passwd",
    ] {
        let err = assert_error(
            post(json!({"url": url, "events": ["*"]})).await,
            422,
            "invalid_webhook_url",
        )
        .await;
        assert_eq!(err["field"], "url");
    }
    assert_error(
        post(json!({"url": "https://example.com/", "events": ["*"], "secret": "mine"})).await,
        422,
        "validation_error",
    )
    .await;
    assert_error(
        post(json!({"events": ["*"]})).await,
        422,
        "validation_error",
    )
    .await;
}

#[tokio::test]
async fn events_are_signed_and_filtered() {
    let rx = WebhookReceiver::start().await;
    let app = spawn_app().await;
    let (_, all_secret) = create(&app, &rx.url("/all"), json!(["*"])).await;
    let (_, bounce_secret) = create(&app, &rx.url("/bounces"), json!(["email.bounced"])).await;
    // A live-mode endpoint hears nothing of test mode.
    let res = app
        .post(
            "/v1/webhooks",
            &app.live_key,
            &json!({"url": rx.url("/live"), "events": ["*"]}),
        )
        .await;
    assert_eq!(res.status(), 201);

    let mut m = to("delivered@test.mailsflux");
    m["tags"] = json!({"campaign": "spring"});
    let delivered = app.send(&m).await["id"].as_str().unwrap().to_string();
    let bounced = app.send(&to("bounced@test.mailsflux")).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let complained = app.send(&to("complained@test.mailsflux")).await["id"]
        .as_str()
        .unwrap()
        .to_string();

    // delivered: queued, delivered; bounced: queued, bounced, suppression.added;
    // complained: queued, delivered, complained, suppression.added.
    let calls = rx.wait_calls("/all", 9, WAIT).await;
    assert_eq!(
        types(&calls),
        [
            "email.bounced",
            "email.complained",
            "email.delivered",
            "email.delivered",
            "email.queued",
            "email.queued",
            "email.queued",
            "suppression.added",
            "suppression.added"
        ]
    );
    for call in &calls {
        verify(&all_secret, call);
        assert_eq!(call.header("content-type"), "application/json");
        let id = call.header("webhook-id");
        assert!(id.starts_with("evt_"), "{id}");
        let ts: i64 = call.header("webhook-timestamp").parse().unwrap();
        assert!((ts - mailsflux::store::time::now()).abs() < 60);
        let body = call.json();
        assert!(body["timestamp"].as_str().unwrap().ends_with('Z'));
    }
    // The payload of the delivered event: email id, recipient, tags, detail.
    let d = calls
        .iter()
        .find(|c| {
            c.json()["type"] == "email.delivered" && c.json()["data"]["email_id"] == delivered
        })
        .expect("the delivered event");
    let body = d.json();
    assert_eq!(body["data"]["recipient"], "delivered@test.mailsflux");
    assert_eq!(body["data"]["tags"], json!({"campaign": "spring"}));
    assert!(body["data"]["detail"].as_str().unwrap().starts_with("250"));
    // webhook-id is the event's id as the email shows it.
    let email = app.email(&app.test_key, &delivered).await;
    let event_ids: Vec<&str> = email["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert!(event_ids.contains(&d.header("webhook-id")));
    // suppression.added carries the stored suppression data.
    let s = calls
        .iter()
        .map(Call::json)
        .find(|b| b["type"] == "suppression.added" && b["data"]["reason"] == "bounce")
        .expect("a bounce suppression event");
    assert_eq!(s["data"]["email"], "bounced@test.mailsflux");
    assert_eq!(s["data"]["email_id"], bounced.as_str());
    assert!(calls.iter().any(|c| c.json()["type"] == "email.complained"
        && c.json()["data"]["email_id"] == complained.as_str()));

    let bounces = rx.wait_calls("/bounces", 1, WAIT).await;
    // Give any wrongly queued delivery the time to arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let bounces_now = rx.calls("/bounces");
    assert_eq!(bounces_now.len(), 1, "{:?}", types(&bounces_now));
    assert_eq!(bounces[0].json()["type"], "email.bounced");
    verify(&bounce_secret, &bounces[0]);
    // Each endpoint has its own secret: the other one does not verify.
    assert!(
        standardwebhooks::Webhook::new(&all_secret)
            .unwrap()
            .verify(&bounces[0].body, &bounces[0].headers)
            .is_err()
    );
    assert!(rx.calls("/live").is_empty());
}

#[tokio::test]
async fn a_new_subscription_hears_the_next_event() {
    // The server keeps which event types have listeners; a change must take effect at once.
    let rx = WebhookReceiver::start().await;
    let app = spawn_app().await;
    let (first, _) = create(&app, &rx.url("/delivered"), json!(["email.delivered"])).await;
    app.send(&to("ana@example.org")).await;
    rx.wait_calls("/delivered", 1, WAIT).await;
    let res = app
        .delete(&format!("/v1/webhooks/{first}"), &app.test_key)
        .await;
    assert_eq!(res.status(), 200);
    create(&app, &rx.url("/queued"), json!(["email.queued"])).await;
    let id = app.send(&to("bo@example.org")).await["id"]
        .as_str()
        .unwrap()
        .to_string();
    let calls = rx.wait_calls("/queued", 1, WAIT).await;
    assert_eq!(calls[0].json()["type"], "email.queued");
    assert_eq!(calls[0].json()["data"]["email_id"], id.as_str());
    // The stored queued event is the one the email shows (no second, implied one).
    let email = app.email(&app.test_key, &id).await;
    assert_eq!(email["events"][0]["id"], calls[0].header("webhook-id"));
    assert_eq!(email["events"].as_array().unwrap().len(), 2);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        rx.calls("/delivered").len(),
        1,
        "the deleted endpoint heard more"
    );
}

#[tokio::test]
async fn failed_deliveries_are_retried_with_the_same_id() {
    let rx = WebhookReceiver::start().await;
    let app =
        spawn_app_with(|c| c.webhooks.retry_schedule = schedule(&["0s", "300ms", "300ms"])).await;
    let (id, secret) = create(&app, &rx.url("/flaky"), json!(["email.delivered"])).await;
    rx.script(
        "/flaky",
        [Reply::status(500), Reply::status(503), Reply::status(200)],
    );
    app.send(&to("delivered@test.mailsflux")).await;
    let calls = rx.wait_calls("/flaky", 3, WAIT).await;
    for call in &calls {
        verify(&secret, call);
        assert_eq!(call.header("webhook-id"), calls[0].header("webhook-id"));
        assert_eq!(call.body, calls[0].body);
    }
    // The waits of the schedule: 0s, then 300ms.
    assert!(calls[2].at - calls[1].at >= Duration::from_millis(250));
    let a = wait_attempts(&app, &id, 3).await;
    let summary: Vec<(i64, &str, i64)> = a
        .iter()
        .map(|a| {
            (
                a["attempt"].as_i64().unwrap(),
                a["outcome"].as_str().unwrap(),
                a["status_code"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (3, "delivered", 200),
            (2, "retry_scheduled", 503),
            (1, "retry_scheduled", 500)
        ]
    );
    assert_eq!(a[2]["event_type"], "email.delivered");
    assert_eq!(a[2]["event_id"], calls[0].header("webhook-id"));
    assert!(a[2]["error"].as_str().unwrap().contains("500"));
    assert!(a[2]["next_attempt_at"].is_string());
    assert!(a[0]["duration_ms"].is_i64());
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(rx.calls("/flaky").len(), 3);
}

#[tokio::test]
async fn deliveries_stop_after_the_last_retry() {
    let rx = WebhookReceiver::start().await;
    let app = spawn_app_with(|c| c.webhooks.retry_schedule = schedule(&["0s", "100ms"])).await;
    let (id, _) = create(&app, &rx.url("/down"), json!(["email.queued"])).await;
    rx.set_default("/down", Reply::status(500));
    app.send(&to("delivered@test.mailsflux")).await;
    rx.wait_calls("/down", 3, WAIT).await;
    let a = wait_attempts(&app, &id, 3).await;
    assert_eq!(a[0]["outcome"], "gave_up");
    assert_eq!(a[0]["next_attempt_at"], Value::Null);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(rx.calls("/down").len(), 3);
    // One failed event does not disable the endpoint.
    let w: Value = app
        .get(&format!("/v1/webhooks/{id}"), &app.test_key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(w["status"], "enabled");
}

#[tokio::test]
async fn gone_disables_the_endpoint() {
    let rx = WebhookReceiver::start().await;
    let app = spawn_app().await;
    let (id, _) = create(&app, &rx.url("/gone"), json!(["email.queued"])).await;
    rx.set_default("/gone", Reply::status(410));
    app.send(&to("delivered@test.mailsflux")).await;
    rx.wait_calls("/gone", 1, WAIT).await;
    let a = wait_attempts(&app, &id, 1).await;
    assert_eq!(a[0]["outcome"], "endpoint_disabled");
    assert_eq!(a[0]["status_code"], 410);
    let w: Value = app
        .get(&format!("/v1/webhooks/{id}"), &app.test_key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(w["status"], "disabled");
    app.send(&to("delivered@test.mailsflux")).await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(rx.calls("/gone").len(), 1);
}

#[tokio::test]
async fn retry_after_is_honoured() {
    let rx = WebhookReceiver::start().await;
    // The schedule alone would wait 20 s before the retry.
    let app = spawn_app_with(|c| c.webhooks.retry_schedule = schedule(&["20s", "20s"])).await;
    let (id, _) = create(&app, &rx.url("/busy"), json!(["email.queued"])).await;
    rx.script(
        "/busy",
        [
            Reply::status(429).header("Retry-After", "2"),
            Reply::status(200),
        ],
    );
    app.send(&to("delivered@test.mailsflux")).await;
    let calls = rx.wait_calls("/busy", 2, WAIT).await;
    let gap = calls[1].at - calls[0].at;
    assert!(gap >= Duration::from_millis(1900), "retried after {gap:?}");
    let a = wait_attempts(&app, &id, 2).await;
    assert_eq!(a[1]["status_code"], 429);
    assert_eq!(a[0]["outcome"], "delivered");
}

#[tokio::test]
async fn retries_survive_a_restart() {
    let rx = WebhookReceiver::start().await;
    let app = spawn_app_with(|c| c.webhooks.retry_schedule = schedule(&["2s", "2s"])).await;
    let (id, secret) = create(&app, &rx.url("/later"), json!(["email.queued"])).await;
    rx.script("/later", [Reply::status(500)]);
    app.send(&to("delivered@test.mailsflux")).await;
    rx.wait_calls("/later", 1, WAIT).await;
    let a = wait_attempts(&app, &id, 1).await;
    assert_eq!(a[0]["outcome"], "retry_scheduled");
    // Stop while the retry waits in the outbox, start again: the retry still happens.
    let app = app.restart().await;
    let calls = rx.wait_calls("/later", 2, WAIT).await;
    verify(&secret, &calls[1]);
    assert_eq!(calls[1].header("webhook-id"), calls[0].header("webhook-id"));
    let a = wait_attempts(&app, &id, 2).await;
    assert_eq!(a[0]["outcome"], "delivered");
    assert_eq!(a[0]["attempt"], 2);
}

#[tokio::test]
async fn an_attempt_under_way_at_shutdown_is_not_lost() {
    let rx = WebhookReceiver::start().await;
    let app = spawn_app_with(|c| {
        c.webhooks.timeout = DurationSetting(Duration::from_millis(500));
        c.webhooks.retry_schedule = schedule(&["1s"]);
    })
    .await;
    let (id, _) = create(&app, &rx.url("/slow"), json!(["email.queued"])).await;
    // The first call outlives the timeout while the server stops.
    rx.script("/slow", [Reply::status(200).delay(Duration::from_secs(3))]);
    app.send(&to("delivered@test.mailsflux")).await;
    rx.wait_calls("/slow", 1, WAIT).await;
    let app = app.restart().await;
    rx.wait_calls("/slow", 2, WAIT).await;
    let a = wait_attempts(&app, &id, 2).await;
    assert_eq!(a[0]["outcome"], "delivered");
    assert!(
        a[1]["error"].as_str().unwrap().contains("no answer within"),
        "{a:?}"
    );
}

#[tokio::test]
async fn private_targets_are_refused() {
    let dns = TestDnsServer::start().await;
    dns.set_a("internal.test", &[Ipv4Addr::new(10, 1, 2, 3)]);
    dns.set_aaaa("internal6.test", &["fd00::1".parse::<Ipv6Addr>().unwrap()]);
    dns.set_a(
        "mixed.test",
        &[Ipv4Addr::new(93, 184, 215, 14), Ipv4Addr::LOCALHOST],
    );
    dns.set_a("public.test", &[Ipv4Addr::new(93, 184, 215, 14)]);
    let ns = dns.addr();
    let app = spawn_app_with(|c| {
        c.webhooks.allow_private_targets = false;
        c.dns.nameservers = vec![Nameserver(ns)];
    })
    .await;
    for url in [
        "http://127.0.0.1:8080/hook",
        "http://[::1]/hook",
        "http://10.0.0.7/hook",
        "http://192.168.1.1/hook",
        "http://169.254.169.254/latest/meta-data",
        "http://[::ffff:127.0.0.1]/hook",
        "http://[fe80::1]/hook",
        "http://100.64.0.1/hook",
        "http://0.0.0.0/hook",
        "http://internal.test/hook",
        "http://internal6.test/hook",
        "http://mixed.test/hook",
        "http://nowhere.test/hook",
    ] {
        let res = app
            .post(
                "/v1/webhooks",
                &app.test_key,
                &json!({"url": url, "events": ["*"]}),
            )
            .await;
        let err = assert_error(res, 422, "invalid_webhook_url").await;
        assert_eq!(err["field"], "url", "{url}");
    }
    // A public host passes; if its DNS later points inside, the delivery is refused
    // (the client connects only to checked addresses).
    let (id, _) = create(
        &app,
        &format!("http://public.test:{}/rebound", 9),
        json!(["email.queued"]),
    )
    .await;
    dns.set_a("public.test", &[Ipv4Addr::LOCALHOST]);
    app.send(&to("delivered@test.mailsflux")).await;
    let a = wait_attempts(&app, &id, 1).await;
    let error = a[0]["error"].as_str().unwrap();
    assert!(error.contains("loopback"), "{error}");
    assert_eq!(a[0]["status_code"], Value::Null);
}

#[tokio::test]
async fn private_targets_are_checked_again_at_delivery() {
    let rx = WebhookReceiver::start().await;
    // Registered while private targets were allowed...
    let app = spawn_app().await;
    let (id, _) = create(&app, &rx.url("/inside"), json!(["email.queued"])).await;
    // ...then the setting is turned off.
    let app = app
        .restart_with(|c| c.webhooks.allow_private_targets = false)
        .await;
    app.send(&to("delivered@test.mailsflux")).await;
    let a = wait_attempts(&app, &id, 1).await;
    assert!(
        a[0]["error"].as_str().unwrap().contains("loopback address"),
        "{a:?}"
    );
    assert!(rx.calls("/inside").is_empty());
}

#[tokio::test]
async fn a_slow_endpoint_does_not_delay_another() {
    let rx = WebhookReceiver::start().await;
    let app = spawn_app().await;
    create(&app, &rx.url("/slow"), json!(["*"])).await;
    create(&app, &rx.url("/fast"), json!(["*"])).await;
    rx.set_default("/slow", Reply::status(200).delay(Duration::from_secs(5)));
    let started = Instant::now();
    for _ in 0..5 {
        app.send(&to("delivered@test.mailsflux")).await;
    }
    // 10 events (queued + delivered per email) reach the fast endpoint while every call to
    // the slow one is still waiting for its answer.
    rx.wait_calls("/fast", 10, Duration::from_secs(4)).await;
    assert!(started.elapsed() < Duration::from_secs(4));
    let slow = rx.wait_calls("/slow", 10, Duration::from_secs(4)).await;
    assert_eq!(slow.len(), 10, "the slow endpoint's calls run concurrently");
}
