//! The HTTP kernel: the error envelope for every failure, authentication, request ids.

use serde_json::json;

use crate::helpers::{assert_error, mail, spawn_app};

#[tokio::test]
async fn health_is_public_and_reports_the_version() {
    let app = spawn_app().await;
    let res = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.headers().contains_key("x-request-id"));
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["status"], "ok");
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"));
}

#[tokio::test]
async fn errors_are_json_envelopes() {
    let app = spawn_app().await;
    let key = app.test_key.clone();
    assert_error(
        app.request(reqwest::Method::GET, "/v1/emails", None)
            .send()
            .await
            .unwrap(),
        401,
        "missing_api_key",
    )
    .await;
    let fake = format!("mf_test_sk_{}", "x".repeat(43));
    assert_error(app.get("/v1/emails", &fake).await, 401, "invalid_api_key").await;
    assert_error(app.get("/v1/no-such-route", &key).await, 404, "not_found").await;
    assert_error(app.get("/nowhere", &key).await, 404, "not_found").await;
    assert_error(
        app.request(reqwest::Method::DELETE, "/v1/emails/send", Some(&key))
            .send()
            .await
            .unwrap(),
        405,
        "method_not_allowed",
    )
    .await;
    let bad_json = app
        .request(reqwest::Method::POST, "/v1/emails/send", Some(&key))
        .header("content-type", "application/json")
        .body("{nope")
        .send()
        .await
        .unwrap();
    assert_error(bad_json, 400, "invalid_json").await;
    let wrong_type = app
        .request(reqwest::Method::POST, "/v1/emails/send", Some(&key))
        .header("content-type", "text/plain")
        .body("hello")
        .send()
        .await
        .unwrap();
    assert_error(wrong_type, 415, "unsupported_media_type").await;
    let mut unknown = mail();
    unknown["subjekt"] = json!("x");
    let err = assert_error(
        app.post("/v1/emails/send", &key, &unknown).await,
        422,
        "validation_error",
    )
    .await;
    assert_eq!(err["field"], "subjekt");
    let mut wrong = mail();
    wrong["subject"] = json!(5);
    let err = assert_error(
        app.post("/v1/emails/send", &key, &wrong).await,
        422,
        "validation_error",
    )
    .await;
    assert_eq!(err["field"], "subject");
}

#[tokio::test]
async fn oversized_bodies_are_refused_with_413() {
    let app = crate::helpers::spawn_app_with(|c| c.server.max_body_bytes = 64 * 1024).await;
    let mut big = mail();
    big["text"] = json!("x".repeat(100 * 1024));
    assert_error(
        app.post("/v1/emails/send", &app.test_key, &big).await,
        413,
        "payload_too_large",
    )
    .await;
}

#[tokio::test]
async fn a_sending_key_may_only_send() {
    let app = spawn_app().await;
    let res = app.post("/v1/emails/send", &app.send_key, &mail()).await;
    assert_eq!(res.status(), 200);
    assert_error(
        app.get("/v1/emails", &app.send_key).await,
        403,
        "restricted_api_key",
    )
    .await;
}

#[tokio::test]
async fn every_response_has_a_request_id() {
    let app = spawn_app().await;
    let res = app
        .request(reqwest::Method::GET, "/v1/emails", Some(&app.test_key))
        .header("x-request-id", "abc-123")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "abc-123");
    let res = app.get("/v1/nope", &app.test_key).await;
    assert!(res.headers().contains_key("x-request-id"));
}
