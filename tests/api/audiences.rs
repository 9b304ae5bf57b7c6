//! Audiences and contacts: every route, its errors, and a 10,000-contact upsert.

use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, spawn_app};

async fn create_audience(app: &TestApp, key: &str, name: &str) -> String {
    let res = app.post("/v1/audiences", key, &json!({"name": name})).await;
    assert_eq!(res.status(), 201);
    let a: Value = res.json().await.unwrap();
    assert_eq!(a["object"], "audience");
    assert_eq!(a["contact_count"], 0);
    a["id"].as_str().unwrap().to_string()
}

async fn upsert(app: &TestApp, aud: &str, body: &Value) -> Value {
    let res = app
        .post(
            &format!("/v1/audiences/{aud}/contacts"),
            &app.test_key,
            body,
        )
        .await;
    let status = res.status();
    let text = res.text().await.unwrap();
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn audience_routes_and_errors() {
    let app = spawn_app().await;
    let id = create_audience(&app, &app.test_key, "Newsletter").await;
    assert!(id.starts_with("aud_"));
    let other = create_audience(&app, &app.test_key, "Other").await;

    let a: Value = app
        .get(&format!("/v1/audiences/{id}"), &app.test_key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(a["name"], "Newsletter");
    assert!(a["created_at"].as_str().unwrap().ends_with('Z'));

    let list: Value = app
        .get("/v1/audiences?limit=1", &app.test_key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["object"], "list");
    assert_eq!(list["data"][0]["id"], other.as_str(), "newest first");
    assert_eq!(list["has_more"], true);
    let cursor = list["next_cursor"].as_str().unwrap();
    let page2: Value = app
        .get(
            &format!("/v1/audiences?limit=1&cursor={cursor}"),
            &app.test_key,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page2["data"][0]["id"], id.as_str());
    assert_eq!(page2["has_more"], false);

    // Live keys do not see test audiences.
    assert_error(
        app.get(&format!("/v1/audiences/{id}"), &app.live_key).await,
        404,
        "not_found",
    )
    .await;
    let live: Value = app
        .get("/v1/audiences", &app.live_key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(live["data"].as_array().unwrap().len(), 0);

    let err = assert_error(
        app.post("/v1/audiences", &app.test_key, &json!({"name": "  "}))
            .await,
        422,
        "validation_error",
    )
    .await;
    assert_eq!(err["field"], "name");
    assert_error(
        app.post(
            "/v1/audiences",
            &app.test_key,
            &json!({"name": "x", "color": "red"}),
        )
        .await,
        422,
        "validation_error",
    )
    .await;
    assert_error(
        app.get("/v1/audiences?limit=0", &app.test_key).await,
        422,
        "validation_error",
    )
    .await;
    assert_error(
        app.get(
            "/v1/audiences/aud_01JNPXR4KQ8S2V3WZ6B7C9D0EF",
            &app.test_key,
        )
        .await,
        404,
        "not_found",
    )
    .await;
    assert_error(
        app.get("/v1/audiences", &app.send_key).await,
        403,
        "restricted_api_key",
    )
    .await;

    upsert(&app, &id, &json!({"email": "ana@example.org"})).await;
    let res = app
        .delete(&format!("/v1/audiences/{id}"), &app.test_key)
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body, json!({"id": id, "deleted": true}));
    let res = app
        .delete(&format!("/v1/audiences/{id}"), &app.test_key)
        .await;
    assert_error(res, 404, "not_found").await;
    assert_error(
        app.get(&format!("/v1/audiences/{id}/contacts"), &app.test_key)
            .await,
        404,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn contacts_upsert_list_filter_and_delete() {
    let app = spawn_app().await;
    let aud = create_audience(&app, &app.test_key, "Customers").await;
    let r = upsert(
        &app,
        &aud,
        &json!({"email": "Ana@Example.org", "first_name": "Ana", "data": {"plan": "pro"}}),
    )
    .await;
    assert_eq!(r, json!({"created": 1, "updated": 0, "contact_count": 1}));

    // The same address in another case updates; absent fields keep their values.
    let r = upsert(
        &app,
        &aud,
        &json!({"contacts": [
            {"email": "ana@example.ORG", "last_name": "Lima"},
            {"email": "bo@example.org", "unsubscribed": true},
            {"email": "bo@example.org", "first_name": "Bo"}
        ]}),
    )
    .await;
    assert_eq!(r, json!({"created": 1, "updated": 2, "contact_count": 2}));

    let list: Value = app
        .get(&format!("/v1/audiences/{aud}/contacts"), &app.test_key)
        .await
        .json()
        .await
        .unwrap();
    let data = list["data"].as_array().unwrap();
    assert_eq!(data.len(), 2);
    let bo = &data[0];
    assert_eq!(bo["email"], "bo@example.org");
    assert_eq!(bo["first_name"], "Bo");
    assert_eq!(bo["unsubscribed"], true);
    assert!(bo["id"].as_str().unwrap().starts_with("con_"));
    assert_eq!(bo["object"], "contact");
    let ana = &data[1];
    assert_eq!(
        ana["email"], "ana@example.org",
        "the latest spelling, domain in lower case"
    );
    assert_eq!(ana["first_name"], "Ana");
    assert_eq!(ana["last_name"], "Lima");
    assert_eq!(ana["data"], json!({"plan": "pro"}));
    assert_eq!(ana["unsubscribed"], false);
    for f in ["created_at", "updated_at"] {
        assert!(ana[f].as_str().unwrap().ends_with('Z'));
    }

    let found: Value = app
        .get(
            &format!("/v1/audiences/{aud}/contacts?email=ANA@example.org"),
            &app.test_key,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(found["data"].as_array().unwrap().len(), 1);
    assert_eq!(found["data"][0]["last_name"], "Lima");

    let a: Value = app
        .get(&format!("/v1/audiences/{aud}"), &app.test_key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(a["contact_count"], 2);

    // All or nothing: one bad item stores nothing and says which.
    let err = assert_error(
        app.post(
            &format!("/v1/audiences/{aud}/contacts"),
            &app.test_key,
            &json!({"contacts": [
                {"email": "new@example.org"},
                {"email": "not an address"},
                {"email": "x@example.org", "data": [1]},
                {"first_name": "No email"},
                {"email": "y@example.org", "color": "red"}
            ]}),
        )
        .await,
        422,
        "validation_error",
    )
    .await;
    let details = err["details"].as_array().unwrap();
    let idx: Vec<i64> = details
        .iter()
        .map(|d| d["index"].as_i64().unwrap())
        .collect();
    assert_eq!(idx, [1, 2, 3, 4]);
    assert_eq!(details[0]["field"], "contacts[1].email");
    assert_eq!(details[1]["field"], "contacts[2].data");
    assert_eq!(details[0]["code"], "validation_error");
    assert!(details[0]["message"].as_str().unwrap().len() > 10);
    let a: Value = app
        .get(&format!("/v1/audiences/{aud}"), &app.test_key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(a["contact_count"], 2, "nothing stored");

    let err = assert_error(
        app.post(
            &format!("/v1/audiences/{aud}/contacts"),
            &app.test_key,
            &json!({"email": "bad"}),
        )
        .await,
        422,
        "validation_error",
    )
    .await;
    assert_eq!(err["field"], "email");
    assert_error(
        app.post(
            &format!("/v1/audiences/{aud}/contacts"),
            &app.test_key,
            &json!({"contacts": []}),
        )
        .await,
        422,
        "validation_error",
    )
    .await;
    assert_error(
        app.post(
            "/v1/audiences/aud_01JNPXR4KQ8S2V3WZ6B7C9D0EF/contacts",
            &app.test_key,
            &json!({"email": "a@example.org"}),
        )
        .await,
        404,
        "not_found",
    )
    .await;

    // Delete by email, ignoring case.
    let res = app
        .delete(
            &format!("/v1/audiences/{aud}/contacts/BO@example.org"),
            &app.test_key,
        )
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body, json!({"email": "BO@example.org", "deleted": true}));
    let res = app
        .delete(
            &format!("/v1/audiences/{aud}/contacts/bo@example.org"),
            &app.test_key,
        )
        .await;
    assert_error(res, 404, "not_found").await;
}

#[tokio::test]
async fn ten_thousand_contacts_in_one_call() {
    let app = spawn_app().await;
    let aud = create_audience(&app, &app.test_key, "Big").await;
    let contacts: Vec<Value> = (0..10_000)
        .map(|i| json!({"email": format!("user{i}@example.org"), "first_name": format!("U{i}"), "data": {"n": i}}))
        .collect();
    let r = upsert(&app, &aud, &json!({ "contacts": contacts })).await;
    assert_eq!(
        r,
        json!({"created": 10000, "updated": 0, "contact_count": 10000})
    );
    // Again with half new addresses: 5,000 updated, 5,000 created.
    let contacts: Vec<Value> = (5_000..15_000)
        .map(|i| json!({"email": format!("USER{i}@example.org")}))
        .collect();
    let r = upsert(&app, &aud, &json!({ "contacts": contacts })).await;
    assert_eq!(
        r,
        json!({"created": 5000, "updated": 5000, "contact_count": 15000})
    );
    let one: Value = app
        .get(
            &format!("/v1/audiences/{aud}/contacts?email=user7000@example.org"),
            &app.test_key,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(one["data"][0]["first_name"], "U7000");
    assert_eq!(one["data"][0]["data"], json!({"n": 7000}));
    let too_many: Vec<Value> = (0..10_001)
        .map(|i| json!({"email": format!("x{i}@example.org")}))
        .collect();
    let err = assert_error(
        app.post(
            &format!("/v1/audiences/{aud}/contacts"),
            &app.test_key,
            &json!({ "contacts": too_many }),
        )
        .await,
        422,
        "validation_error",
    )
    .await;
    assert_eq!(err["field"], "contacts");
}

#[tokio::test]
async fn contacts_import_cli_upserts_and_reports_skipped_rows() {
    let app = spawn_app().await;
    let aud = create_audience(&app, &app.test_key, "Imported").await;
    upsert(
        &app,
        &aud,
        &json!({"email": "ana@example.org", "first_name": "Keep", "last_name": "Me"}),
    )
    .await;
    let csv_path = app.dir.path().join("contacts.csv");
    let mut csv = String::from("Email,First Name,last_name,Plan,City\n");
    csv.push_str("ANA@example.org,,Lima,pro,Lisbon\n");
    csv.push_str("not-an-address,Bad,Row,,\n");
    csv.push_str(",No,Email,,\n");
    for i in 0..1200 {
        csv.push_str(&format!("user{i}@example.org,U{i},,free,\n"));
    }
    std::fs::write(&csv_path, csv).unwrap();
    let db_path = app.config.database.path.clone();
    let aud2 = aud.clone();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_mailsflux"))
            .args(["contacts", "import", "--audience", &aud2])
            .arg(&csv_path)
            .env("MAILSFLUX_DATABASE__PATH", &db_path)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("1203 rows read: 1200 contacts created, 1 updated, 2 rows skipped"),
        "{stderr}"
    );
    assert!(
        stderr.contains("skipped line 3: 'email' must be a valid email address"),
        "{stderr}"
    );
    assert!(
        stderr.contains("skipped line 4: the email cell is empty"),
        "{stderr}"
    );

    let ana: Value = app
        .get(
            &format!("/v1/audiences/{aud}/contacts?email=ana@example.org"),
            &app.test_key,
        )
        .await
        .json()
        .await
        .unwrap();
    let ana = &ana["data"][0];
    assert_eq!(
        ana["first_name"], "Keep",
        "an empty cell keeps the stored value"
    );
    assert_eq!(ana["last_name"], "Lima");
    assert_eq!(ana["data"], json!({"Plan": "pro", "City": "Lisbon"}));
    let a: Value = app
        .get(&format!("/v1/audiences/{aud}"), &app.test_key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(a["contact_count"], 1201);

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mailsflux"))
        .args([
            "contacts",
            "import",
            "--audience",
            "aud_01JNPXR4KQ8S2V3WZ6B7C9D0EF",
        ])
        .arg(app.dir.path().join("contacts.csv"))
        .env("MAILSFLUX_DATABASE__PATH", &app.config.database.path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no audience with id"));
}
