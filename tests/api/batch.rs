//! `POST /v1/emails/batch`: 1 to 1,000 emails, all or nothing by default, or the valid ones
//! with `x-batch-validation: permissive`.

use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, mail, spawn_app};

fn item(i: usize) -> Value {
    json!({
        "from": "Acme <hello@acme.test>",
        "to": format!("user{i}@example.org"),
        "subject": format!("Email {i}"),
        "text": format!("Body {i}"),
        "tags": {"n": i.to_string()}
    })
}

async fn count(app: &TestApp) -> usize {
    let mut n = 0;
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/emails?limit=100&cursor={c}"),
            None => "/v1/emails?limit=100".to_string(),
        };
        let page: Value = app.get(&path, &app.test_key).await.json().await.unwrap();
        n += page["data"].as_array().unwrap().len();
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return n,
        }
    }
}

#[tokio::test]
async fn a_batch_of_1000_is_stored_in_input_order() {
    let app = spawn_app().await;
    let items: Vec<Value> = (0..1000).map(item).collect();
    let res = app
        .post("/v1/emails/batch", &app.test_key, &json!(items))
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 1000);
    assert!(body.get("errors").is_none());
    let ids: Vec<&str> = data.iter().map(|d| d["id"].as_str().unwrap()).collect();
    for d in data {
        assert_eq!(d["status"], "queued");
        assert!(d["queued_at"].is_string());
    }
    // Ids are time-ordered in input order, so the newest-first list is the input reversed.
    assert!(
        ids.windows(2).all(|w| w[0] < w[1]),
        "ids are not in input order"
    );
    for i in [0usize, 1, 499, 998, 999] {
        let e = app.email(&app.test_key, ids[i]).await;
        assert_eq!(e["subject"], format!("Email {i}"));
        assert_eq!(e["to"], json!([format!("user{i}@example.org")]));
        assert_eq!(e["tags"], json!({"n": i.to_string()}));
    }
    let page: Value = app
        .get("/v1/emails?limit=100", &app.test_key)
        .await
        .json()
        .await
        .unwrap();
    let listed: Vec<&str> = page["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    let expected: Vec<&str> = ids[900..].iter().rev().copied().collect();
    assert_eq!(listed, expected);
    assert_eq!(count(&app).await, 1000);
}

#[tokio::test]
async fn strict_batch_refuses_everything_when_one_item_is_bad() {
    let app = spawn_app().await;
    let mut items: Vec<Value> = (0..10).map(item).collect();
    items[3]["to"] = json!("not an address");
    items[7]["subjekt"] = json!("typo");
    items[8] = json!("not an object");
    let err = assert_error(
        app.post("/v1/emails/batch", &app.test_key, &json!(items))
            .await,
        422,
        "validation_error",
    )
    .await;
    let details = err["details"].as_array().expect("details");
    let indexes: Vec<u64> = details
        .iter()
        .map(|d| d["index"].as_u64().unwrap())
        .collect();
    assert_eq!(indexes, [3, 7, 8]);
    assert_eq!(details[0]["code"], "invalid_recipient");
    assert_eq!(details[1]["code"], "validation_error");
    for d in details {
        assert!(d["message"].as_str().unwrap().len() > 8);
    }
    assert!(details[1]["message"].as_str().unwrap().contains("subjekt"));
    assert_eq!(count(&app).await, 0, "nothing is stored");
    // "strict" said explicitly is the same.
    let res = app
        .request(
            reqwest::Method::POST,
            "/v1/emails/batch",
            Some(&app.test_key),
        )
        .header("x-batch-validation", "strict")
        .json(&items)
        .send()
        .await
        .unwrap();
    assert_error(res, 422, "validation_error").await;
    assert_eq!(count(&app).await, 0);
}

#[tokio::test]
async fn permissive_batch_accepts_the_valid_items() {
    let app = spawn_app().await;
    let mut items: Vec<Value> = (0..5).map(item).collect();
    items[1]["from"] = json!("");
    items[4]["html"] = json!(5);
    let res = app
        .request(
            reqwest::Method::POST,
            "/v1/emails/batch",
            Some(&app.test_key),
        )
        .header("x-batch-validation", "permissive")
        .json(&items)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let data = body["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    let errors = body["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 2);
    assert_eq!(errors[0]["index"], 1);
    assert_eq!(errors[0]["code"], "invalid_from");
    assert_eq!(errors[1]["index"], 4);
    assert_eq!(errors[1]["code"], "validation_error");
    assert!(errors[1]["message"].as_str().unwrap().contains("html"));
    // The accepted ones are items 0, 2 and 3, in that order.
    for (d, i) in data.iter().zip([0, 2, 3]) {
        let e = app.email(&app.test_key, d["id"].as_str().unwrap()).await;
        assert_eq!(e["subject"], format!("Email {i}"));
    }
    assert_eq!(count(&app).await, 3);
    // All valid: errors is empty.
    let res = app
        .request(
            reqwest::Method::POST,
            "/v1/emails/batch",
            Some(&app.test_key),
        )
        .header("x-batch-validation", "permissive")
        .json(&vec![item(9)])
        .send()
        .await
        .unwrap();
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["errors"], json!([]));
    assert_eq!(body["data"].as_array().unwrap().len(), 1);
    // A bad header value is refused.
    let res = app
        .request(
            reqwest::Method::POST,
            "/v1/emails/batch",
            Some(&app.test_key),
        )
        .header("x-batch-validation", "lenient")
        .json(&vec![item(9)])
        .send()
        .await
        .unwrap();
    assert_error(res, 422, "validation_error").await;
}

#[tokio::test]
async fn batch_size_and_shape_are_checked() {
    let app = spawn_app().await;
    assert_error(
        app.post("/v1/emails/batch", &app.test_key, &json!([]))
            .await,
        422,
        "validation_error",
    )
    .await;
    let items: Vec<Value> = (0..1001).map(item).collect();
    let err = assert_error(
        app.post("/v1/emails/batch", &app.test_key, &json!(items))
            .await,
        422,
        "validation_error",
    )
    .await;
    assert!(err["message"].as_str().unwrap().contains("1001"));
    let err = assert_error(
        app.post("/v1/emails/batch", &app.test_key, &mail()).await,
        422,
        "validation_error",
    )
    .await;
    assert!(err["message"].as_str().unwrap().len() > 8);
    let mut with_audience = item(0);
    with_audience["audience_id"] = json!("aud_01JNPXR4KQ8S2V3WZ6B7C9D0EF");
    let err = assert_error(
        app.post("/v1/emails/batch", &app.test_key, &json!([with_audience]))
            .await,
        422,
        "validation_error",
    )
    .await;
    assert_eq!(err["details"][0]["index"], 0);
    assert_eq!(count(&app).await, 0);
    // One item is a valid batch.
    let res = app
        .post("/v1/emails/batch", &app.test_key, &json!([item(0)]))
        .await;
    assert_eq!(res.status(), 200);
    // A sending-only key may batch.
    let res = app
        .post("/v1/emails/batch", &app.send_key, &json!([item(1)]))
        .await;
    assert_eq!(res.status(), 200);
}

/// A batch is written with multi-row statements in runs; an item whose test-mode capture
/// adds a suppression (a hard bounce, a complaint) ends its run, so the items after it see
/// the suppression exactly as if each item had been sent on its own.
#[tokio::test]
async fn later_items_of_a_batch_see_the_suppressions_earlier_items_added() {
    let app = spawn_app().await;
    let to = |i: usize| match i {
        60 | 130 => "bounced@test.mailsflux".to_string(),
        70 | 140 => "complained@test.mailsflux".to_string(),
        i => format!("user{i}@example.org"),
    };
    let items: Vec<Value> = (0..160)
        .map(|i| {
            let mut it = item(i);
            it["to"] = json!(to(i));
            it
        })
        .collect();
    let res = app
        .post("/v1/emails/batch", &app.test_key, &json!(items))
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let ids: Vec<String> = body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 160);
    let expected = |i: usize| match i {
        60 => "bounced",
        130 | 140 => "suppressed",
        _ => "delivered",
    };
    for i in [0, 49, 50, 59, 60, 61, 70, 71, 129, 130, 140, 159] {
        let email = app.email(&app.test_key, &ids[i]).await;
        assert_eq!(email["status"], expected(i), "item {i}: {email}");
        assert_eq!(email["subject"], format!("Email {i}"));
        let types: Vec<&str> = email["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["type"].as_str().unwrap())
            .collect();
        let want: &[&str] = match i {
            60 => &["queued", "bounced"],
            70 => &["queued", "delivered", "complained"],
            130 | 140 => &["queued", "suppressed"],
            _ => &["queued", "delivered"],
        };
        assert_eq!(types, want, "item {i}");
    }
    let listed: Value = app
        .get("/v1/suppressions", &app.test_key)
        .await
        .json()
        .await
        .unwrap();
    let mut reasons: Vec<(&str, &str)> = listed["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["email"].as_str().unwrap(), s["reason"].as_str().unwrap()))
        .collect();
    reasons.sort();
    assert_eq!(
        reasons,
        [
            ("bounced@test.mailsflux", "bounce"),
            ("complained@test.mailsflux", "complaint")
        ]
    );
}
