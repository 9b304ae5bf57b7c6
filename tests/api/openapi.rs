//! The OpenAPI document is the app's route table: every `/v1` route is registered through
//! utoipa-actix-web, which only takes documented handlers. These tests walk it.

use serde_json::Value;

use crate::helpers::{assert_error, spawn_app};

/// The routes of API.md that this build serves (method, OpenAPI path).
const CONTRACT_ROUTES: &[(&str, &str)] = &[
    ("post", "/v1/emails/send"),
    ("get", "/v1/emails/{id}"),
    ("get", "/v1/emails"),
    ("post", "/v1/emails/batch"),
    ("post", "/v1/emails/{id}/cancel"),
    ("get", "/v1/templates"),
    ("post", "/v1/templates"),
    ("get", "/v1/templates/{id}"),
    ("put", "/v1/templates/{id}"),
    ("delete", "/v1/templates/{id}"),
    ("post", "/v1/templates/{id}/render"),
    ("post", "/v1/domains"),
    ("get", "/v1/domains"),
    ("get", "/v1/domains/{id}"),
    ("delete", "/v1/domains/{id}"),
    ("get", "/v1/domains/{id}/verify"),
    ("get", "/v1/domains/{id}/reputation"),
    ("post", "/v1/mail/validate-address"),
    ("post", "/v1/mail/send"),
    ("get", "/v1/mail/{id}"),
    ("get", "/v1/mail"),
    ("post", "/v1/mail/{id}/cancel"),
    ("post", "/v1/webhooks"),
    ("get", "/v1/webhooks"),
    ("get", "/v1/webhooks/{id}"),
    ("delete", "/v1/webhooks/{id}"),
    ("get", "/v1/webhooks/{id}/attempts"),
    ("get", "/v1/emails/{id}/recipients"),
    ("get", "/v1/audiences"),
    ("post", "/v1/audiences"),
    ("get", "/v1/audiences/{id}"),
    ("delete", "/v1/audiences/{id}"),
    ("post", "/v1/audiences/{id}/contacts"),
    ("get", "/v1/audiences/{id}/contacts"),
    ("delete", "/v1/audiences/{id}/contacts/{email}"),
    ("get", "/v1/suppressions"),
    ("post", "/v1/suppressions"),
    ("delete", "/v1/suppressions/{email}"),
];

async fn document(app: &crate::helpers::TestApp) -> Value {
    let res = app
        .client
        .get(app.url("/v1/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200, "the document is public");
    res.json().await.unwrap()
}

#[tokio::test]
async fn the_document_is_openapi_3_1_and_lists_every_contract_route() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    for (method, path) in CONTRACT_ROUTES {
        assert!(
            doc["paths"][path][method].is_object(),
            "{} {path} is missing from the OpenAPI document",
            method.to_uppercase()
        );
    }
}

#[tokio::test]
async fn every_documented_route_refuses_a_missing_key() {
    let app = spawn_app().await;
    let doc = document(&app).await;
    let paths = doc["paths"].as_object().unwrap();
    assert!(!paths.is_empty());
    for (path, item) in paths {
        for method in item.as_object().unwrap().keys() {
            let concrete = path
                .replace("{id}", "msg_01JNPXR4KQ8S2V3WZ6B7C9D0EF")
                .replace("{email}", "a@b.org");
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let res = app
                .request(method.clone(), &concrete, None)
                .send()
                .await
                .unwrap();
            let err = assert_error(res, 401, "missing_api_key").await;
            assert!(
                err["message"].as_str().unwrap().contains("Authorization"),
                "{method} {path}: {err}"
            );
        }
    }
}
