//! `Idempotency-Key` on the sending routes: replay, conflict, in progress, nothing stored
//! for a refused request, and keys per mode.

use std::time::Duration;

use base64::Engine;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, mail, spawn_app};

async fn post_with_key(
    app: &TestApp,
    path: &str,
    api_key: &str,
    idem: &str,
    body: &Value,
) -> reqwest::Response {
    app.request(reqwest::Method::POST, path, Some(api_key))
        .header("Idempotency-Key", idem)
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn total(app: &TestApp, key: &str) -> usize {
    let page: Value = app
        .get("/v1/emails?limit=100", key)
        .await
        .json()
        .await
        .unwrap();
    page["data"].as_array().unwrap().len()
}

#[tokio::test]
async fn replay_returns_the_first_answer_and_creates_nothing() {
    let app = spawn_app().await;
    let key = app.test_key.clone();
    let first = post_with_key(&app, "/v1/emails/send", &key, "order-42", &mail()).await;
    assert_eq!(first.status(), 200);
    let first_body = first.text().await.unwrap();
    for _ in 0..3 {
        let again = post_with_key(&app, "/v1/emails/send", &key, "order-42", &mail()).await;
        assert_eq!(again.status(), 200);
        assert_eq!(again.text().await.unwrap(), first_body);
    }
    assert_eq!(total(&app, &key).await, 1);
    // The same key with another body is a conflict, and creates nothing.
    let mut other = mail();
    other["subject"] = json!("Another");
    assert_error(
        post_with_key(&app, "/v1/emails/send", &key, "order-42", &other).await,
        409,
        "idempotency_conflict",
    )
    .await;
    // ... also on another route.
    assert_error(
        post_with_key(&app, "/v1/emails/batch", &key, "order-42", &json!([mail()])).await,
        409,
        "idempotency_conflict",
    )
    .await;
    assert_eq!(total(&app, &key).await, 1);
    // Another key is another request.
    let res = post_with_key(&app, "/v1/emails/send", &key, "order-43", &mail()).await;
    assert_eq!(res.status(), 200);
    assert_ne!(res.text().await.unwrap(), first_body);
    assert_eq!(total(&app, &key).await, 2);
    // A key that is too long, or empty, is refused.
    assert_error(
        post_with_key(&app, "/v1/emails/send", &key, &"k".repeat(257), &mail()).await,
        422,
        "validation_error",
    )
    .await;
    assert_error(
        post_with_key(&app, "/v1/emails/send", &key, "", &mail()).await,
        422,
        "validation_error",
    )
    .await;
    let res = post_with_key(&app, "/v1/emails/send", &key, &"k".repeat(256), &mail()).await;
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn batch_replay() {
    let app = spawn_app().await;
    let items = json!([mail(), mail(), mail()]);
    let first = post_with_key(&app, "/v1/emails/batch", &app.test_key, "b-1", &items).await;
    assert_eq!(first.status(), 200);
    let first_body = first.text().await.unwrap();
    let again = post_with_key(&app, "/v1/emails/batch", &app.test_key, "b-1", &items).await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.text().await.unwrap(), first_body);
    assert_eq!(total(&app, &app.test_key).await, 3);
}

#[tokio::test]
async fn a_refused_request_stores_nothing_under_its_key() {
    let app = spawn_app().await;
    let key = app.test_key.clone();
    let mut bad = mail();
    bad["to"] = json!("not an address");
    assert_error(
        post_with_key(&app, "/v1/emails/send", &key, "fix-me", &bad).await,
        422,
        "invalid_recipient",
    )
    .await;
    // The corrected body under the same key is processed, not a conflict.
    let res = post_with_key(&app, "/v1/emails/send", &key, "fix-me", &mail()).await;
    assert_eq!(res.status(), 200);
    let body = res.text().await.unwrap();
    let res = post_with_key(&app, "/v1/emails/send", &key, "fix-me", &mail()).await;
    assert_eq!(res.text().await.unwrap(), body);
    // Same for a strict batch refused as a whole.
    let bad_batch = json!([mail(), bad]);
    assert_error(
        post_with_key(&app, "/v1/emails/batch", &key, "fix-batch", &bad_batch).await,
        422,
        "validation_error",
    )
    .await;
    let res = post_with_key(
        &app,
        "/v1/emails/batch",
        &key,
        "fix-batch",
        &json!([mail()]),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(total(&app, &key).await, 2);
}

#[tokio::test]
async fn keys_are_per_mode() {
    let app = spawn_app().await;
    let test = post_with_key(&app, "/v1/emails/send", &app.test_key, "shared", &mail()).await;
    assert_eq!(test.status(), 200);
    let test_body: Value = test.json().await.unwrap();
    let live = post_with_key(&app, "/v1/emails/send", &app.live_key, "shared", &mail()).await;
    assert_eq!(live.status(), 200);
    let live_body: Value = live.json().await.unwrap();
    assert_ne!(test_body["id"], live_body["id"]);
    assert_eq!(total(&app, &app.test_key).await, 1);
    assert_eq!(total(&app, &app.live_key).await, 1);
    // Within a mode, another key of the same mode replays.
    let again = post_with_key(&app, "/v1/emails/send", &app.send_key, "shared", &mail()).await;
    assert_eq!(again.status(), 200);
    let again_body: Value = again.json().await.unwrap();
    assert_eq!(again_body, test_body);
}

#[tokio::test]
async fn a_key_in_flight_is_refused_with_in_progress() {
    let app = spawn_app().await;
    let key = app.test_key.clone();
    // A large batch keeps the first request busy for a while (MIME building and storing
    // 1,000 emails with attachments).
    let b64 = base64::engine::general_purpose::STANDARD;
    let attachment = b64.encode(vec![7u8; 8 * 1024]);
    let items: Vec<Value> = (0..1000)
        .map(|i| {
            let mut m = mail();
            m["subject"] = json!(format!("Big {i}"));
            m["attachments"] = json!([{"filename": "a.bin", "content": attachment}]);
            m
        })
        .collect();
    let big = json!(items);
    // Probe with the same key and a body that would be refused after the key check (no
    // 'from'), so a probe that runs before the batch claims the key stores nothing. A probe
    // holds the key for a moment too: when the batch arrives in that moment it is the one
    // refused as in progress (the same rule), and the round is run again with a new key.
    let probe = json!({"to": "ana@example.org", "subject": "probe", "text": "x"});
    let mut round = 0;
    let (idem_key, body) = loop {
        round += 1;
        assert!(round <= 5, "the batch lost the race to a probe five times");
        let idem_key = format!("slow-{round}");
        let client = app.client.clone();
        let url = app.url("/v1/emails/batch");
        let (key2, big2, idem2) = (key.clone(), big.clone(), idem_key.clone());
        let first = tokio::spawn(async move {
            let res = client
                .post(url)
                .bearer_auth(key2)
                .header("Idempotency-Key", idem2)
                .json(&big2)
                .send()
                .await
                .unwrap();
            (res.status().as_u16(), res.text().await.unwrap())
        });
        let mut saw_in_progress = false;
        while !first.is_finished() {
            let res = post_with_key(&app, "/v1/emails/send", &key, &idem_key, &probe).await;
            match res.status().as_u16() {
                409 => {
                    let err = assert_error(res, 409, "idempotency_in_progress").await;
                    assert!(err["message"].as_str().unwrap().contains("still"));
                    saw_in_progress = true;
                    break;
                }
                422 => {}
                other => panic!("unexpected probe answer {other}"),
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let (status, body) = first.await.unwrap();
        if status == 409 && body.contains("idempotency_in_progress") {
            continue;
        }
        assert_eq!(status, 200, "{}", &body[..body.len().min(300)]);
        assert!(saw_in_progress, "the probe never overlapped the batch");
        break (idem_key, body);
    };
    // Once it has finished, the key replays the batch's answer.
    let again = post_with_key(&app, "/v1/emails/batch", &key, &idem_key, &big).await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.text().await.unwrap(), body);
    // And another body under that key is now a conflict, not "in progress".
    assert_error(
        post_with_key(&app, "/v1/emails/send", &key, &idem_key, &mail()).await,
        409,
        "idempotency_conflict",
    )
    .await;
}
