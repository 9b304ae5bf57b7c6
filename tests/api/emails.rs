//! The emails API in test mode: send, get, list with every filter, cancel, scheduled
//! release, the magic recipients, test/live isolation and restarts.

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, mail, spawn_app};

fn event_types(e: &Value) -> Vec<String> {
    e["events"]
        .as_array()
        .expect("events is an array")
        .iter()
        .map(|e| e["type"].as_str().unwrap().to_string())
        .collect()
}

fn ids_of(list: &Value) -> Vec<String> {
    list["data"]
        .as_array()
        .expect("data is an array")
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_string())
        .collect()
}

async fn list_ids(app: &TestApp, query: &str) -> Vec<String> {
    let res = app.get(&format!("/v1/emails?{query}"), &app.test_key).await;
    let status = res.status();
    let body: Value = res.json().await.unwrap();
    assert_eq!(status, 200, "GET /v1/emails?{query}: {body}");
    assert_eq!(body["object"], "list");
    ids_of(&body)
}

fn in_seconds(secs: i64) -> String {
    let t = time::OffsetDateTime::now_utc() + time::Duration::seconds(secs);
    t.replace_nanosecond(0)
        .unwrap()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap()
}

#[tokio::test]
async fn send_is_captured_and_delivered_in_test_mode() {
    let app = spawn_app().await;
    let sent = app.send(&mail()).await;
    assert_eq!(sent["status"], "queued");
    let id = sent["id"].as_str().unwrap();
    assert!(id.starts_with("msg_"));
    assert_eq!(id.len(), 4 + 26);
    let queued_at = sent["queued_at"].as_str().unwrap();
    assert!(
        queued_at.ends_with('Z') && queued_at.len() == 20,
        "{queued_at}"
    );
    let e = app
        .wait_email(&app.test_key, id, Duration::from_secs(10), |e| {
            e["status"] == "delivered"
        })
        .await;
    assert_eq!(event_types(&e), ["queued", "delivered"]);
    // With no webhook listening, the queued event is implied by the email: its id is the
    // email's ULID, its time the email's.
    assert_eq!(e["events"][0]["id"], format!("evt_{}", &id[4..]));
    assert_eq!(e["events"][0]["occurred_at"], e["created_at"]);
    assert!(e["events"][1]["id"].as_str().unwrap() > e["events"][0]["id"].as_str().unwrap());
    assert_eq!(e["object"], "email");
    assert_eq!(e["type"], "transactional");
    assert_eq!(e["from"], "Acme <hello@acme.test>");
    assert_eq!(e["to"], json!(["ana@example.org"]));
    assert_eq!(e["subject"], "Hello");
    assert_eq!(e["scheduled_at"], Value::Null);
    assert_eq!(e["recipient_counts"], json!({"delivered": 1}));
    let r = &e["recipients"][0];
    assert_eq!(r["email"], "ana@example.org");
    assert_eq!(r["status"], "delivered");
    assert_eq!(r["attempts"], 1);
    assert!(r["last_response"].as_str().unwrap().starts_with("250"));
    let delivered = &e["events"][1];
    assert_eq!(delivered["recipient"], "ana@example.org");
    assert!(delivered["detail"].as_str().unwrap().starts_with("250"));
    assert!(delivered["id"].as_str().unwrap().starts_with("evt_"));
    // Without ?include=content the body is not in the object.
    assert!(e.get("raw").is_none() && e.get("html").is_none());
}

#[tokio::test]
async fn get_refuses_unknown_ids_and_bad_include() {
    let app = spawn_app().await;
    let err = assert_error(
        app.get("/v1/emails/msg_01JNPXR4KQ8S2V3WZ6B7C9D0EF", &app.test_key)
            .await,
        404,
        "not_found",
    )
    .await;
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("msg_01JNPXR4KQ8S2V3WZ6B7C9D0EF")
    );
    assert_error(
        app.get("/v1/emails/whatever", &app.test_key).await,
        404,
        "not_found",
    )
    .await;
    let sent = app.send(&mail()).await;
    let id = sent["id"].as_str().unwrap();
    let err = assert_error(
        app.get(
            &format!("/v1/emails/{id}?include=everything"),
            &app.test_key,
        )
        .await,
        422,
        "validation_error",
    )
    .await;
    assert_eq!(err["field"], "include");
}

#[tokio::test]
async fn bad_recipient_names_the_field() {
    let app = spawn_app().await;
    let mut body = mail();
    body["to"] = json!(["ok@example.org", "not an address"]);
    let err = assert_error(
        app.post("/v1/emails/send", &app.test_key, &body).await,
        422,
        "invalid_recipient",
    )
    .await;
    assert_eq!(err["field"], "to[1]");
    let mut body = mail();
    body["cc"] = json!("nope@");
    let err = assert_error(
        app.post("/v1/emails/send", &app.test_key, &body).await,
        422,
        "invalid_recipient",
    )
    .await;
    assert_eq!(err["field"], "cc");
    let mut body = mail();
    body.as_object_mut().unwrap().remove("to");
    assert_error(
        app.post("/v1/emails/send", &app.test_key, &body).await,
        422,
        "invalid_recipient",
    )
    .await;
    let mut body = mail();
    body["to"] = json!(
        (0..51)
            .map(|i| format!("r{i}@example.org"))
            .collect::<Vec<_>>()
    );
    assert_error(
        app.post("/v1/emails/send", &app.test_key, &body).await,
        422,
        "validation_error",
    )
    .await;
    let mut body = mail();
    body.as_object_mut().unwrap().remove("from");
    let err = assert_error(
        app.post("/v1/emails/send", &app.test_key, &body).await,
        422,
        "invalid_from",
    )
    .await;
    assert_eq!(err["field"], "from");
    let mut body = mail();
    body["from"] = json!("Acme <not-an-address>");
    assert_error(
        app.post("/v1/emails/send", &app.test_key, &body).await,
        422,
        "invalid_from",
    )
    .await;
    for missing in [vec!["subject"], vec!["html", "text"]] {
        let mut body = mail();
        for f in &missing {
            body.as_object_mut().unwrap().remove(*f);
        }
        assert_error(
            app.post("/v1/emails/send", &app.test_key, &body).await,
            422,
            "validation_error",
        )
        .await;
    }
    let mut body = mail();
    body["type"] = json!("newsletter");
    let err = assert_error(
        app.post("/v1/emails/send", &app.test_key, &body).await,
        422,
        "validation_error",
    )
    .await;
    assert_eq!(err["field"], "type");
    let mut body = mail();
    body["scheduled_at"] = json!("tomorrow");
    let err = assert_error(
        app.post("/v1/emails/send", &app.test_key, &body).await,
        422,
        "validation_error",
    )
    .await;
    assert_eq!(err["field"], "scheduled_at");
    let mut body = mail();
    body["attachments"] = json!([{"filename": "a.pdf", "content": "not base64!"}]);
    let err = assert_error(
        app.post("/v1/emails/send", &app.test_key, &body).await,
        422,
        "validation_error",
    )
    .await;
    assert_eq!(err["field"], "attachments[0].content");
    // Nothing of the refused requests was stored.
    assert!(list_ids(&app, "").await.is_empty());
}

#[tokio::test]
async fn header_injection_is_refused() {
    let app = spawn_app().await;
    let key = app.test_key.clone();
    let mut body = mail();
    body["subject"] = json!("Hi\r\nBcc: evil@example.org");
    let err = assert_error(
        app.post("/v1/emails/send", &key, &body).await,
        422,
        "validation_error",
    )
    .await;
    assert_eq!(err["field"], "subject");
    let mut body = mail();
    body["subject"] = json!("Hi\nthere");
    assert_error(
        app.post("/v1/emails/send", &key, &body).await,
        422,
        "validation_error",
    )
    .await;
    let mut body = mail();
    body["headers"] = json!({"X-Ref": "1\r\nBcc: evil@example.org"});
    let err = assert_error(
        app.post("/v1/emails/send", &key, &body).await,
        422,
        "validation_error",
    )
    .await;
    assert_eq!(err["field"], "headers.X-Ref");
    // Display names: a header injection is a validation_error (API.md), naming the field.
    for (field, value, code) in [
        (
            "to",
            "Ana\r\nBcc: evil@example.org <ana@example.org>",
            "validation_error",
        ),
        ("cc", "Bo\n <bo@example.org>", "validation_error"),
        ("reply_to", "Help\r\n <help@acme.test>", "validation_error"),
        (
            "from",
            "Acme\r\nBcc: evil@example.org <hello@acme.test>",
            "validation_error",
        ),
    ] {
        let mut body = mail();
        body[field] = json!(value);
        let err = assert_error(app.post("/v1/emails/send", &key, &body).await, 422, code).await;
        assert_eq!(err["field"], field);
    }
    assert!(list_ids(&app, "").await.is_empty());
}

#[tokio::test]
async fn server_owned_headers_cannot_be_overridden() {
    let app = spawn_app().await;
    for name in [
        "From",
        "to",
        "CC",
        "Bcc",
        "Subject",
        "Date",
        "Message-ID",
        "message-id",
        "DKIM-Signature",
    ] {
        let mut body = mail();
        body["headers"] = json!({ name: "x@example.org" });
        let err = assert_error(
            app.post("/v1/emails/send", &app.test_key, &body).await,
            422,
            "validation_error",
        )
        .await;
        assert_eq!(err["field"], format!("headers.{name}"));
    }
    let mut body = mail();
    body["headers"] = json!({"Bad Name": "x"});
    assert_error(
        app.post("/v1/emails/send", &app.test_key, &body).await,
        422,
        "validation_error",
    )
    .await;
}

#[tokio::test]
async fn list_filters_by_every_field() {
    let app = spawn_app().await;
    let mut a = mail();
    a["tags"] = json!({"campaign": "spring", "tier": "gold"});
    let a = app.send(&a).await;
    let a_id = a["id"].as_str().unwrap();
    // created_at has whole seconds: put the next ones in a later second.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let b = app
        .send(&json!({
            "from": "Other News <News@Other.test>",
            "to": "bo@example.org",
            "cc": ["Cy <cy@example.org>"],
            "subject": "News",
            "html": "<p>News</p>",
            "type": "marketing",
            "tags": {"campaign": "fall"}
        }))
        .await;
    let b_id = b["id"].as_str().unwrap();
    let mut c = mail();
    c["to"] = json!("ANA@example.org");
    c["scheduled_at"] = json!(in_seconds(3600));
    let c = app.send(&c).await;
    assert_eq!(c["status"], "scheduled");
    let c_id = c["id"].as_str().unwrap();
    for id in [a_id, b_id] {
        app.wait_email(&app.test_key, id, Duration::from_secs(10), |e| {
            e["status"] == "delivered"
        })
        .await;
    }

    assert_eq!(list_ids(&app, "").await, [c_id, b_id, a_id]);
    assert_eq!(list_ids(&app, "status=scheduled").await, [c_id]);
    assert_eq!(list_ids(&app, "status=delivered").await, [b_id, a_id]);
    assert!(list_ids(&app, "status=bounced").await.is_empty());
    assert_eq!(list_ids(&app, "type=marketing").await, [b_id]);
    assert_eq!(list_ids(&app, "type=transactional").await, [c_id, a_id]);
    assert_eq!(list_ids(&app, "to=ana@example.org").await, [c_id, a_id]);
    assert_eq!(list_ids(&app, "to=cy@example.org").await, [b_id]);
    assert!(list_ids(&app, "to=nobody@example.org").await.is_empty());
    assert_eq!(list_ids(&app, "from=news@other.test").await, [b_id]);
    assert_eq!(list_ids(&app, "from=hello@acme.test").await, [c_id, a_id]);
    assert_eq!(list_ids(&app, "tag=campaign:spring").await, [a_id]);
    assert_eq!(list_ids(&app, "tag=tier:gold").await, [a_id]);
    assert!(list_ids(&app, "tag=campaign:winter").await.is_empty());
    let a_created = app.email(&app.test_key, a_id).await["created_at"]
        .as_str()
        .unwrap()
        .to_string();
    let b_created = app.email(&app.test_key, b_id).await["created_at"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(a_created, b_created);
    assert_eq!(
        list_ids(&app, &format!("created_after={a_created}")).await,
        [c_id, b_id]
    );
    assert_eq!(
        list_ids(&app, &format!("created_before={b_created}")).await,
        [a_id]
    );
    assert_eq!(
        list_ids(
            &app,
            &format!("created_after={a_created}&type=marketing&status=delivered&tag=campaign:fall")
        )
        .await,
        [b_id]
    );
    assert!(
        list_ids(&app, &format!("created_after={}", in_seconds(60)))
            .await
            .is_empty()
    );
    // List items carry recipients but not events.
    let res = app.get("/v1/emails?type=marketing", &app.test_key).await;
    let body: Value = res.json().await.unwrap();
    let item = &body["data"][0];
    assert!(item.get("events").is_none());
    assert_eq!(item["recipient_counts"], json!({"delivered": 2}));
    assert_eq!(body["has_more"], false);
    assert_eq!(body["next_cursor"], Value::Null);

    for (query, field) in [
        ("status=lost", "status"),
        ("type=bulk", "type"),
        ("tag=campaign", "tag"),
        ("tag=:spring", "tag"),
        ("created_after=yesterday", "created_after"),
        ("created_before=2026-13-01T00:00:00Z", "created_before"),
        ("limit=0", "limit"),
        ("limit=101", "limit"),
        ("limit=ten", "limit"),
        ("cursor=not-a-cursor", "cursor"),
    ] {
        let err = assert_error(
            app.get(&format!("/v1/emails?{query}"), &app.test_key).await,
            422,
            "validation_error",
        )
        .await;
        assert_eq!(err["field"], field, "{query}");
    }
}

#[tokio::test]
async fn cancel_a_scheduled_email() {
    let app = spawn_app().await;
    let mut body = mail();
    body["scheduled_at"] = json!(in_seconds(3600));
    let sent = app.send(&body).await;
    assert_eq!(sent["status"], "scheduled");
    let id = sent["id"].as_str().unwrap();
    let res = app
        .post(
            &format!("/v1/emails/{id}/cancel"),
            &app.test_key,
            &json!({}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let canceled: Value = res.json().await.unwrap();
    assert_eq!(canceled["id"], id);
    assert_eq!(canceled["status"], "canceled");
    assert_eq!(canceled["recipients"][0]["status"], "canceled");
    let e = app.email(&app.test_key, id).await;
    assert_eq!(e["status"], "canceled");
    assert_eq!(event_types(&e), ["scheduled", "canceled"]);
    // A second cancel, or one of an email that is not scheduled, is a conflict.
    assert_error(
        app.post(
            &format!("/v1/emails/{id}/cancel"),
            &app.test_key,
            &json!({}),
        )
        .await,
        409,
        "conflict",
    )
    .await;
    let queued = app.send(&mail()).await;
    let qid = queued["id"].as_str().unwrap();
    assert_error(
        app.post(
            &format!("/v1/emails/{qid}/cancel"),
            &app.test_key,
            &json!({}),
        )
        .await,
        409,
        "conflict",
    )
    .await;
    assert_error(
        app.post(
            "/v1/emails/msg_01JNPXR4KQ8S2V3WZ6B7C9D0EF/cancel",
            &app.test_key,
            &json!({}),
        )
        .await,
        404,
        "not_found",
    )
    .await;
    // The live key cannot see (or cancel) a test email.
    let mut body = mail();
    body["scheduled_at"] = json!(in_seconds(3600));
    let other = app.send(&body).await;
    let oid = other["id"].as_str().unwrap();
    assert_error(
        app.post(
            &format!("/v1/emails/{oid}/cancel"),
            &app.live_key,
            &json!({}),
        )
        .await,
        404,
        "not_found",
    )
    .await;
    assert_eq!(app.email(&app.test_key, oid).await["status"], "scheduled");
    // A canceled email is never delivered (the worker does not pick it up).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(app.email(&app.test_key, id).await["status"], "canceled");
}

#[tokio::test]
async fn scheduled_email_is_released_on_time() {
    let app = spawn_app().await;
    let at = in_seconds(3);
    let mut body = mail();
    body["scheduled_at"] = json!(at);
    let sent = app.send(&body).await;
    assert_eq!(sent["status"], "scheduled");
    let id = sent["id"].as_str().unwrap();
    let e = app.email(&app.test_key, id).await;
    assert_eq!(e["status"], "scheduled");
    assert_eq!(e["scheduled_at"], at);
    assert_eq!(e["recipients"][0]["status"], "scheduled");
    assert_eq!(event_types(&e), ["scheduled"]);
    let e = app
        .wait_email(&app.test_key, id, Duration::from_secs(12), |e| {
            e["status"] == "delivered"
        })
        .await;
    assert_eq!(event_types(&e), ["scheduled", "queued", "delivered"]);
    let delivered_at = e["events"][2]["occurred_at"].as_str().unwrap();
    assert!(
        delivered_at >= at.as_str(),
        "delivered at {delivered_at}, before {at}"
    );
    // A time in the past means "now".
    let mut body = mail();
    body["scheduled_at"] = json!(in_seconds(-3600));
    assert_eq!(app.send(&body).await["status"], "queued");
}

#[tokio::test]
async fn scheduled_email_survives_a_restart() {
    let app = spawn_app().await;
    let at = in_seconds(3);
    let mut body = mail();
    body["scheduled_at"] = json!(at);
    let sent = app.send(&body).await;
    let id = sent["id"].as_str().unwrap().to_string();
    let app = app.restart().await;
    assert_eq!(app.email(&app.test_key, &id).await["status"], "scheduled");
    let e = app
        .wait_email(&app.test_key, &id, Duration::from_secs(12), |e| {
            e["status"] == "delivered"
        })
        .await;
    assert_eq!(event_types(&e), ["scheduled", "queued", "delivered"]);
}

#[tokio::test]
async fn magic_recipients_drive_the_lifecycle() {
    let app = spawn_app().await;
    let send_to = |to: &str| {
        let mut body = mail();
        body["to"] = json!(to);
        body
    };
    let delivered = app.send(&send_to("delivered@test.mailsflux")).await;
    let bounced = app.send(&send_to("bounced@test.mailsflux")).await;
    let complained = app.send(&send_to("complained@test.mailsflux")).await;
    let delayed = app.send(&send_to("delayed@test.mailsflux")).await;
    let wait = |v: &Value, status: &'static str| {
        let id = v["id"].as_str().unwrap().to_string();
        let app = &app;
        async move {
            app.wait_email(&app.test_key, &id, Duration::from_secs(15), |e| {
                e["status"] == status
            })
            .await
        }
    };
    // Test mode captures in the transaction that accepts: the final state is there at once
    // (delayed@ alone goes through the queue).
    for (sent, status) in [
        (&delivered, "delivered"),
        (&bounced, "bounced"),
        (&complained, "delivered"),
    ] {
        let e = app.email(&app.test_key, sent["id"].as_str().unwrap()).await;
        assert_eq!(sent["status"], "queued");
        assert_eq!(e["status"], status, "{e}");
    }
    let e = wait(&delivered, "delivered").await;
    assert_eq!(event_types(&e), ["queued", "delivered"]);

    let e = wait(&bounced, "bounced").await;
    assert_eq!(event_types(&e), ["queued", "bounced"]);
    assert!(
        e["events"][1]["detail"]
            .as_str()
            .unwrap()
            .starts_with("550")
    );
    assert_eq!(e["recipients"][0]["status"], "bounced");

    let e = wait(&complained, "delivered").await;
    assert_eq!(event_types(&e), ["queued", "delivered", "complained"]);
    assert_eq!(e["events"][2]["recipient"], "complained@test.mailsflux");

    let e = wait(&delayed, "delivered").await;
    assert_eq!(event_types(&e), ["queued", "delivery_delayed", "delivered"]);
    assert!(e["events"][1]["detail"].as_str().unwrap().starts_with("4"));
    assert_eq!(e["recipients"][0]["attempts"], 2);

    // A complaint and a hard bounce put the address on the suppression list: the next send
    // to it is recorded as suppressed and nothing is delivered.
    for to in ["complained@test.mailsflux", "bounced@test.mailsflux"] {
        let again = app.send(&send_to(to)).await;
        assert_eq!(again["status"], "suppressed", "{to}");
        let id = again["id"].as_str().unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        let e = app.email(&app.test_key, id).await;
        assert_eq!(e["status"], "suppressed");
        assert_eq!(event_types(&e), ["queued", "suppressed"]);
        assert_eq!(e["recipients"][0]["status"], "suppressed");
        assert_eq!(e["recipients"][0]["attempts"], 0);
    }
    // Suppression is per recipient: a mixed email still goes to the others.
    let mut body = send_to("complained@test.mailsflux");
    body["cc"] = json!("delivered@test.mailsflux");
    let mixed = app.send(&body).await;
    assert_eq!(mixed["status"], "queued");
    let e = wait(&mixed, "partial").await;
    assert_eq!(
        e["recipient_counts"],
        json!({"delivered": 1, "suppressed": 1})
    );
}

#[tokio::test]
async fn test_and_live_data_are_isolated() {
    let app = spawn_app().await;
    let test_email = app.send(&mail()).await;
    let test_id = test_email["id"].as_str().unwrap();
    assert_error(
        app.get(&format!("/v1/emails/{test_id}"), &app.live_key)
            .await,
        404,
        "not_found",
    )
    .await;
    let res = app.get("/v1/emails", &app.live_key).await;
    assert_eq!(res.status(), 200);
    let live_list: Value = res.json().await.unwrap();
    assert!(ids_of(&live_list).is_empty());
    let live_email = app.send_with(&app.live_key, &mail()).await;
    let live_id = live_email["id"].as_str().unwrap();
    let res = app
        .get(&format!("/v1/emails/{live_id}"), &app.live_key)
        .await;
    assert_eq!(res.status(), 200);
    assert_error(
        app.get(&format!("/v1/emails/{live_id}"), &app.test_key)
            .await,
        404,
        "not_found",
    )
    .await;
    assert_eq!(list_ids(&app, "").await, [test_id]);
    let live_list: Value = app
        .get("/v1/emails", &app.live_key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ids_of(&live_list), [live_id]);
    // Suppressions are per mode too: a complaint in test mode does not block live sends.
    let mut body = mail();
    body["to"] = json!("complained@test.mailsflux");
    let first = app.send(&body).await;
    app.wait_email(
        &app.test_key,
        first["id"].as_str().unwrap(),
        Duration::from_secs(10),
        |e| event_types(e).contains(&"complained".to_string()),
    )
    .await;
    assert_eq!(app.send(&body).await["status"], "suppressed");
    assert_eq!(
        app.send_with(&app.live_key, &body).await["status"],
        "queued"
    );
}

/// The `to` filter through the server's own indexer: sends spread over several of its
/// passes make runs of the address index, which it merges; before, during and after, the
/// filter finds each address's emails, newest first, and no other.
#[tokio::test]
async fn to_filter_finds_every_email_as_the_index_is_merged() {
    let app = spawn_app().await;
    let addresses = ["ana@example.org", "bo@example.org", "cy@example.org"];
    let mut sent: Vec<Vec<String>> = vec![Vec::new(); addresses.len()];
    let db = rusqlite::Connection::open(&app.config.database.path).unwrap();
    let merged_runs = || -> i64 {
        // A merged run holds 8 or more entries; each pass here makes one of 2 to 4.
        db.query_row(
            "SELECT count(*) FROM recipient_address_runs
             WHERE entries >= 8 AND id NOT IN (SELECT merging_into FROM recipient_address_runs
                                               WHERE merging_into IS NOT NULL)",
            [],
            |r| r.get(0),
        )
        .unwrap()
    };
    let check = |sent: Vec<Vec<String>>| {
        let app = &app;
        async move {
            for (address, ids) in addresses.iter().zip(sent) {
                let newest_first: Vec<String> = ids.into_iter().rev().collect();
                assert_eq!(
                    list_ids(app, &format!("to={address}&limit=100")).await,
                    newest_first
                );
            }
        }
    };
    let mut sends = 0;
    while merged_runs() == 0 {
        assert!(
            sends < 60,
            "no merge of the address index after {sends} sends"
        );
        let (to, cc) = (sends % 3, (sends + 1) % 3);
        let mut body = mail();
        body["to"] = json!(addresses[to].to_uppercase());
        body["cc"] = json!([addresses[cc]]);
        let id = app.send(&body).await["id"].as_str().unwrap().to_string();
        sent[to].push(id.clone());
        sent[cc].push(id);
        sends += 1;
        check(sent.clone()).await;
        // More than the indexer's tick, so that most sends make a run of their own.
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    check(sent.clone()).await;
    let total: i64 = db
        .query_row("SELECT count(*) FROM recipient_addresses", [], |r| r.get(0))
        .unwrap();
    assert!(total >= 16, "the index holds {total} entries");
}

#[tokio::test]
async fn a_restart_keeps_everything() {
    let app = spawn_app().await;
    let mut body = mail();
    body["tags"] = json!({"k": "v"});
    let one = app.send(&body).await;
    let one_id = one["id"].as_str().unwrap().to_string();
    app.wait_email(&app.test_key, &one_id, Duration::from_secs(10), |e| {
        e["status"] == "delivered"
    })
    .await;
    let mut later = mail();
    later["scheduled_at"] = json!(in_seconds(3600));
    let scheduled = app.send(&later).await;
    let sched_id = scheduled["id"].as_str().unwrap().to_string();
    let res = app
        .request(
            reqwest::Method::POST,
            "/v1/emails/send",
            Some(&app.test_key),
        )
        .header("Idempotency-Key", "restart-1")
        .json(&mail())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let idem_body = res.text().await.unwrap();
    let live = app.send_with(&app.live_key, &mail()).await;
    let live_id = live["id"].as_str().unwrap().to_string();
    let before_one = app.email(&app.test_key, &one_id).await;
    let before_list: Value = app
        .get("/v1/emails", &app.test_key)
        .await
        .json()
        .await
        .unwrap();

    let app = app.restart().await;
    assert_eq!(app.email(&app.test_key, &one_id).await, before_one);
    let after_list: Value = app
        .get("/v1/emails", &app.test_key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ids_of(&after_list), ids_of(&before_list));
    assert_eq!(
        app.email(&app.test_key, &sched_id).await["status"],
        "scheduled"
    );
    assert_eq!(
        app.email(&app.live_key, &live_id).await["id"],
        live_id.as_str()
    );
    let res = app
        .request(
            reqwest::Method::POST,
            "/v1/emails/send",
            Some(&app.test_key),
        )
        .header("Idempotency-Key", "restart-1")
        .json(&mail())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await.unwrap(), idem_body);
    assert_eq!(ids_of(&after_list).len(), 3);
    let now_list: Value = app
        .get("/v1/emails", &app.test_key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(ids_of(&now_list).len(), 3, "the replay created nothing");
}

#[tokio::test]
async fn deferred_recipients_are_retried_on_time_with_nothing_else_to_do() {
    // Nothing sent after these: no new send wakes the worker for the retries, which are due
    // 1 s after the first attempts (the retry schedule of the tests).
    let app = spawn_app().await;
    let mut body = mail();
    body["to"] = json!("delayed@test.mailsflux");
    let items = json!([body.clone(), body.clone(), body.clone(), body.clone()]);
    let res = app.post("/v1/emails/batch", &app.test_key, &items).await;
    assert_eq!(res.status(), 200);
    let sent: Value = res.json().await.unwrap();
    for d in sent["data"].as_array().unwrap() {
        let e = app
            .wait_email(
                &app.test_key,
                d["id"].as_str().unwrap(),
                Duration::from_secs(8),
                |e| e["status"] == "delivered",
            )
            .await;
        assert_eq!(event_types(&e), ["queued", "delivery_delayed", "delivered"]);
    }
}

/// Concurrent single sends are stored together by the writer (`store::combine`), live and
/// test ones in the same writes: each request still gets the answer of its own email,
/// stored in its own mode as it asked, and an Idempotency-Key replays its own answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_sends_each_get_their_own_email() {
    let app = spawn_app().await;
    let live = |i: usize| i % 3 == 1;
    let key = |i: usize| {
        if live(i) {
            &app.live_key
        } else {
            &app.test_key
        }
    };
    let sends = (0..48).map(|i| {
        let app = &app;
        async move {
            let mut body = mail();
            body["subject"] = json!(format!("Order {i}"));
            // Test mode's bounce adds to the suppression list mid-way through a write.
            body["to"] = json!(if i % 7 == 3 && !live(i) {
                "bounced@test.mailsflux".to_string()
            } else {
                format!("buyer{i}@example.org")
            });
            let mut req = app.request(reqwest::Method::POST, "/v1/emails/send", Some(key(i)));
            if i % 2 == 0 {
                req = req.header("Idempotency-Key", format!("order-{i}"));
            }
            let res = req.json(&body).send().await.unwrap();
            assert_eq!(res.status(), 200);
            (i, body, res.text().await.unwrap())
        }
    });
    let answers = futures_util::future::join_all(sends).await;
    let mut ids = std::collections::HashSet::new();
    for (i, body, answer) in &answers {
        let answer: Value = serde_json::from_str(answer).unwrap();
        let id = answer["id"].as_str().unwrap().to_string();
        assert!(
            ids.insert(id.clone()),
            "send {i} got the id of another: {id}"
        );
        let email = app.email(key(*i), &id).await;
        assert_eq!(email["subject"], body["subject"], "send {i}");
        assert_eq!(email["to"], json!([body["to"]]), "send {i}");
        let other_mode = if live(*i) {
            &app.test_key
        } else {
            &app.live_key
        };
        let res = app.get(&format!("/v1/emails/{id}"), other_mode).await;
        assert_eq!(res.status(), 404, "send {i} seen from the other mode");
    }
    for (i, body, answer) in answers.iter().filter(|(i, _, _)| i % 2 == 0) {
        let replay = app
            .request(reqwest::Method::POST, "/v1/emails/send", Some(key(*i)))
            .header("Idempotency-Key", format!("order-{i}"))
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(replay.status(), 200);
        assert_eq!(&replay.text().await.unwrap(), answer, "replay of send {i}");
    }
    let live_sends = (0..48).filter(|i| live(*i)).count();
    assert_eq!(list_ids(&app, "limit=100").await.len(), 48 - live_sends);
    let page: Value = app
        .get("/v1/emails?limit=100", &app.live_key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["data"].as_array().unwrap().len(), live_sends);
}

/// Under `synchronous = "full"` the writer commits without syncing and a thread of its own
/// syncs the WAL before any answer: sends made at once and a batch are all answered, and
/// all there after a restart (the shutdown answers and syncs what was waiting).
#[tokio::test]
async fn under_full_sync_concurrent_writes_are_answered_and_kept() {
    let app = crate::helpers::spawn_app_with(|c| {
        c.database.synchronous = mailsflux::config::Synchronous::Full;
    })
    .await;
    let sends = (0..20).map(|i| {
        let mut body = mail();
        body["to"] = json!(format!("full{i}@example.org"));
        let app = &app;
        async move { app.send(&body).await["id"].as_str().unwrap().to_string() }
    });
    let mut ids = futures_util::future::join_all(sends).await;
    let items: Vec<Value> = (0..50).map(|_| mail()).collect();
    let res = app
        .post("/v1/emails/batch", &app.test_key, &json!(items))
        .await;
    assert_eq!(res.status(), 200);
    let batch: Value = res.json().await.unwrap();
    ids.extend(
        batch["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["id"].as_str().unwrap().to_string()),
    );
    assert_eq!(ids.len(), 70);
    let app = app.restart().await;
    for id in &ids {
        assert_eq!(app.email(&app.test_key, id).await["id"], id.as_str());
    }
}
