//! The suppression list: routes, errors, and the policy (manual blocks everything,
//! unsubscribe blocks marketing only; magic complained@ adds an entry by itself).

use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{assert_error, mail, spawn_app};

#[tokio::test]
async fn suppression_routes_and_errors() {
    let app = spawn_app().await;
    let res = app
        .post(
            "/v1/suppressions",
            &app.test_key,
            &json!({"email": "Ana@Example.org", "note": "asked by phone"}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let s: Value = res.json().await.unwrap();
    assert_eq!(s["email"], "Ana@example.org");
    assert_eq!(s["object"], "suppression");
    assert_eq!(s["reason"], "manual");
    assert_eq!(s["note"], "asked by phone");
    assert!(s["created_at"].as_str().unwrap().ends_with('Z'));

    // Again, in another case and with another reason: 200 with the existing entry.
    let res = app
        .post(
            "/v1/suppressions",
            &app.test_key,
            &json!({"email": "ana@example.org", "reason": "bounce"}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let again: Value = res.json().await.unwrap();
    assert_eq!(again["reason"], "manual");

    for (email, reason) in [
        ("b@example.org", "bounce"),
        ("c@example.org", "unsubscribe"),
    ] {
        let res = app
            .post(
                "/v1/suppressions",
                &app.test_key,
                &json!({"email": email, "reason": reason}),
            )
            .await;
        assert_eq!(res.status(), 201);
    }

    let list: Value = app
        .get("/v1/suppressions", &app.test_key)
        .await
        .json()
        .await
        .unwrap();
    let emails: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["email"].as_str().unwrap())
        .collect();
    assert_eq!(
        emails,
        ["c@example.org", "b@example.org", "Ana@example.org"]
    );
    let page: Value = app
        .get("/v1/suppressions?limit=2", &app.test_key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["has_more"], true);
    let cursor = page["next_cursor"].as_str().unwrap();
    let page2: Value = app
        .get(
            &format!("/v1/suppressions?limit=2&cursor={cursor}"),
            &app.test_key,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page2["data"][0]["email"], "Ana@example.org");
    assert_eq!(page2["has_more"], false);
    let bounces: Value = app
        .get("/v1/suppressions?reason=bounce", &app.test_key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(bounces["data"].as_array().unwrap().len(), 1);
    let by_email: Value = app
        .get("/v1/suppressions?email=C@EXAMPLE.org", &app.test_key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(by_email["data"][0]["reason"], "unsubscribe");
    let live: Value = app
        .get("/v1/suppressions", &app.live_key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        live["data"].as_array().unwrap().len(),
        0,
        "modes are separate"
    );

    for (path, field) in [
        ("/v1/suppressions?reason=spam", "reason"),
        ("/v1/suppressions?cursor=nope", "cursor"),
        ("/v1/suppressions?limit=500", "limit"),
    ] {
        let err = assert_error(app.get(path, &app.test_key).await, 422, "validation_error").await;
        assert_eq!(err["field"], field, "{path}");
    }
    for (body, field) in [
        (json!({}), "email"),
        (json!({"email": "nope"}), "email"),
        (
            json!({"email": "a@example.org", "reason": "spam"}),
            "reason",
        ),
    ] {
        let err = assert_error(
            app.post("/v1/suppressions", &app.test_key, &body).await,
            422,
            "validation_error",
        )
        .await;
        assert_eq!(err["field"], field, "{body}");
    }

    let res = app
        .delete("/v1/suppressions/ANA@example.org", &app.test_key)
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body, json!({"email": "ANA@example.org", "deleted": true}));
    let res = app
        .delete("/v1/suppressions/ana@example.org", &app.test_key)
        .await;
    assert_error(res, 404, "not_found").await;
}

#[tokio::test]
async fn policy_manual_blocks_all_unsubscribe_blocks_marketing() {
    let app = spawn_app().await;
    for (email, reason) in [
        ("man@example.org", "manual"),
        ("uns@example.org", "unsubscribe"),
    ] {
        app.post(
            "/v1/suppressions",
            &app.test_key,
            &json!({"email": email, "reason": reason}),
        )
        .await;
    }
    let mut body = mail();
    body["to"] = json!("MAN@example.org");
    let sent = app.send(&body).await;
    assert_eq!(sent["status"], "suppressed");
    let e = app.email(&app.test_key, sent["id"].as_str().unwrap()).await;
    assert_eq!(e["recipients"][0]["status"], "suppressed");
    let types: Vec<&str> = e["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["queued", "suppressed"]);

    body["to"] = json!("uns@example.org");
    let sent = app.send(&body).await;
    assert_eq!(sent["status"], "queued", "transactional mail still goes");
    body["type"] = json!("marketing");
    let sent = app.send(&body).await;
    assert_eq!(sent["status"], "suppressed", "marketing is blocked");
}

#[tokio::test]
async fn complaint_in_test_mode_adds_a_suppression() {
    let app = spawn_app().await;
    let mut body = mail();
    body["to"] = json!("complained@test.mailsflux");
    let sent = app.send(&body).await;
    app.wait_email(
        &app.test_key,
        sent["id"].as_str().unwrap(),
        Duration::from_secs(10),
        |e| e["status"] == "delivered",
    )
    .await;
    let list: Value = app
        .get(
            "/v1/suppressions?email=complained@test.mailsflux",
            &app.test_key,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"][0]["reason"], "complaint");
    assert_eq!(list["data"][0]["email_id"], sent["id"]);
}
