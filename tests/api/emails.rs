//! The emails API in test mode.

use std::time::Duration;

use serde_json::json;

use crate::helpers::{assert_error, mail, spawn_app};

#[tokio::test]
async fn send_is_captured_and_delivered_in_test_mode() {
    let app = spawn_app().await;
    let sent = app.send(&mail()).await;
    assert_eq!(sent["status"], "queued");
    let id = sent["id"].as_str().unwrap();
    assert!(id.starts_with("msg_"));
    let e = app
        .wait_email(&app.test_key, id, Duration::from_secs(10), |e| {
            e["status"] == "delivered"
        })
        .await;
    let types: Vec<&str> = e["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["queued", "delivered"]);
    assert_eq!(e["recipient_counts"]["delivered"], 1);
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
    body.as_object_mut().unwrap().remove("from");
    assert_error(
        app.post("/v1/emails/send", &app.test_key, &body).await,
        422,
        "invalid_from",
    )
    .await;
    let mut body = mail();
    body["subject"] = json!("Hi\r\nBcc: evil@example.org");
    assert_error(
        app.post("/v1/emails/send", &app.test_key, &body).await,
        422,
        "validation_error",
    )
    .await;
}
