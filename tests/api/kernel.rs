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

/// Every `/v1` route of the emails API, with a method it answers.
const V1_ROUTES: [(&str, &str); 5] = [
    ("POST", "/v1/emails/send"),
    ("POST", "/v1/emails/batch"),
    ("GET", "/v1/emails"),
    ("GET", "/v1/emails/msg_01JNPXR4KQ8S2V3WZ6B7C9D0EF"),
    ("POST", "/v1/emails/msg_01JNPXR4KQ8S2V3WZ6B7C9D0EF/cancel"),
];

#[tokio::test]
async fn every_v1_route_refuses_a_missing_or_bad_key() {
    let app = spawn_app().await;
    for (method, path) in V1_ROUTES {
        let method: reqwest::Method = method.parse().unwrap();
        let res = app
            .request(method.clone(), path, None)
            .json(&mail())
            .send()
            .await
            .unwrap();
        assert_error(res, 401, "missing_api_key").await;
        let res = app
            .request(method.clone(), path, None)
            .header("authorization", format!("Basic {}", app.test_key))
            .json(&mail())
            .send()
            .await
            .unwrap();
        assert_error(res, 401, "missing_api_key").await;
        let res = app
            .request(method.clone(), path, Some("mf_test_sk_short"))
            .json(&mail())
            .send()
            .await
            .unwrap();
        assert_error(res, 401, "invalid_api_key").await;
        // A well-formed key of the wrong mode prefix is not the key.
        let swapped = app.test_key.replacen("mf_test_", "mf_live_", 1);
        let res = app
            .request(method, path, Some(&swapped))
            .json(&mail())
            .send()
            .await
            .unwrap();
        assert_error(res, 401, "invalid_api_key").await;
    }
    // Unknown routes under /v1 need a key too, then are 404.
    assert_error(
        app.request(reqwest::Method::GET, "/v1/nothing", None)
            .send()
            .await
            .unwrap(),
        401,
        "missing_api_key",
    )
    .await;
}

#[tokio::test]
async fn wrong_methods_and_unknown_routes_are_json() {
    let app = spawn_app().await;
    let key = app.test_key.clone();
    for (method, path) in [
        ("GET", "/v1/emails/send"),
        ("PUT", "/v1/emails/batch"),
        ("DELETE", "/v1/emails"),
        ("PATCH", "/v1/emails/msg_01JNPXR4KQ8S2V3WZ6B7C9D0EF"),
        ("GET", "/v1/emails/msg_01JNPXR4KQ8S2V3WZ6B7C9D0EF/cancel"),
        ("POST", "/healthz"),
    ] {
        let res = app
            .request(method.parse().unwrap(), path, Some(&key))
            .send()
            .await
            .unwrap();
        assert_error(res, 405, "method_not_allowed").await;
    }
    for path in ["/v1/emails/x/y/z", "/v2/emails", "/", "/favicon.ico"] {
        let res = app.get(path, &key).await;
        let err = assert_error(res, 404, "not_found").await;
        assert!(err["message"].as_str().unwrap().len() > 8, "{path}");
    }
}

#[tokio::test]
async fn bodies_are_checked_before_anything_is_stored() {
    let app = spawn_app().await;
    let key = app.test_key.clone();
    let send = |ct: Option<&'static str>, body: &'static str| {
        let mut rb = app
            .request(reqwest::Method::POST, "/v1/emails/send", Some(&key))
            .body(body);
        if let Some(ct) = ct {
            rb = rb.header("content-type", ct);
        }
        rb.send()
    };
    assert_error(
        send(Some("application/x-www-form-urlencoded"), "from=a")
            .await
            .unwrap(),
        415,
        "unsupported_media_type",
    )
    .await;
    assert_error(
        send(Some("text/html"), "<p>").await.unwrap(),
        415,
        "unsupported_media_type",
    )
    .await;
    assert_error(
        send(Some("application/json"), "").await.unwrap(),
        400,
        "invalid_json",
    )
    .await;
    assert_error(
        send(Some("application/json"), "[1, 2").await.unwrap(),
        400,
        "invalid_json",
    )
    .await;
    assert_error(
        send(Some("application/json"), "{\"from\": \"a@b.org\",}")
            .await
            .unwrap(),
        400,
        "invalid_json",
    )
    .await;
    // JSON with a charset parameter is JSON.
    let ok = send(
        Some("application/json; charset=utf-8"),
        r#"{"from":"a@acme.test","to":"b@example.org","subject":"s","text":"t"}"#,
    )
    .await
    .unwrap();
    assert_eq!(ok.status(), 200);
    // Wrong types name the field, down into arrays and objects.
    for (body, field) in [
        (
            json!({"from": "a@acme.test", "to": 5, "subject": "s", "text": "t"}),
            "to",
        ),
        (
            json!({"from": "a@acme.test", "to": ["b@example.org", 7], "subject": "s", "text": "t"}),
            "to[1]",
        ),
        (
            json!({"from": ["a@acme.test"], "to": "b@example.org", "subject": "s", "text": "t"}),
            "from",
        ),
        (
            json!({"from": "a@acme.test", "to": "b@example.org", "subject": "s", "text": "t", "tags": {"a": 1}}),
            "tags.a",
        ),
        (
            json!({"from": "a@acme.test", "to": "b@example.org", "subject": "s", "text": "t", "track_opens": "yes"}),
            "track_opens",
        ),
        (
            json!({"from": "a@acme.test", "to": "b@example.org", "subject": "s", "text": "t",
                   "attachments": [{"filename": "a.txt", "content": 12}]}),
            "attachments[0].content",
        ),
    ] {
        let err = assert_error(
            app.post("/v1/emails/send", &key, &body).await,
            422,
            "validation_error",
        )
        .await;
        assert_eq!(err["field"], field, "{body}");
    }
    // Unknown fields are named, also nested.
    for (body, field) in [
        (
            json!({"from": "a@acme.test", "to": "b@example.org", "subject": "s", "text": "t", "bcc_list": []}),
            "bcc_list",
        ),
        (
            json!({"from": "a@acme.test", "to": "b@example.org", "subject": "s", "text": "t",
                   "attachments": [{"filename": "a.txt", "content": "YQ==", "mime": "x"}]}),
            "attachments[0].mime",
        ),
    ] {
        let err = assert_error(
            app.post("/v1/emails/send", &key, &body).await,
            422,
            "validation_error",
        )
        .await;
        assert_eq!(err["field"], field);
        assert!(err["message"].as_str().unwrap().contains(field));
    }
    assert_error(
        app.post("/v1/emails/send", &key, &json!([1, 2])).await,
        422,
        "validation_error",
    )
    .await;
    assert_error(
        app.post("/v1/emails/send", &key, &json!("a string")).await,
        422,
        "validation_error",
    )
    .await;
    // An array holding a send request's fields in their declared order is still not an
    // object: serde would read it field by field, the API refuses it (also as a batch item).
    let mut by_position = vec![json!(null); 18];
    by_position[0] = json!("a@acme.test");
    by_position[1] = json!("b@example.org");
    by_position[5] = json!("s");
    by_position[7] = json!("t");
    let err = assert_error(
        app.post("/v1/emails/send", &key, &json!(by_position)).await,
        422,
        "validation_error",
    )
    .await;
    assert!(
        err["message"].as_str().unwrap().contains("JSON object"),
        "{err}"
    );
    let err = assert_error(
        app.post("/v1/emails/batch", &key, &json!([by_position]))
            .await,
        422,
        "validation_error",
    )
    .await;
    assert!(err.to_string().contains("JSON object"), "{err}");
    let page: serde_json::Value = app.get("/v1/emails", &key).await.json().await.unwrap();
    assert_eq!(
        page["data"].as_array().unwrap().len(),
        1,
        "only the valid send was stored"
    );
}

/// Large bodies are parsed on a blocking thread (src/http/json.rs); the answers are the same.
#[tokio::test]
async fn large_bodies_get_the_same_json_errors() {
    let app = spawn_app().await;
    let text = "x".repeat(100 * 1024);
    let mut unknown = serde_json::json!({
        "from": "a@acme.test", "to": "b@example.org", "subject": "s", "text": text
    });
    unknown["colour"] = serde_json::json!("blue");
    let res = app.post("/v1/emails/send", &app.test_key, &unknown).await;
    let err = assert_error(res, 422, "validation_error").await;
    assert_eq!(err["field"], "colour");
    let truncated = format!(r#"{{"from": "a@acme.test", "text": "{text}"#);
    let res = app
        .request(
            reqwest::Method::POST,
            "/v1/emails/send",
            Some(&app.test_key),
        )
        .header("content-type", "application/json")
        .body(truncated)
        .send()
        .await
        .unwrap();
    assert_error(res, 400, "invalid_json").await;
    let mut ok = unknown.clone();
    ok.as_object_mut().unwrap().remove("colour");
    let res = app.post("/v1/emails/send", &app.test_key, &ok).await;
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn a_body_over_the_limit_is_413_on_every_body_route() {
    let app = crate::helpers::spawn_app_with(|c| c.server.max_body_bytes = 16 * 1024).await;
    let mut big = mail();
    big["html"] = json!(format!("<p>{}</p>", "y".repeat(20 * 1024)));
    assert_error(
        app.post("/v1/emails/batch", &app.test_key, &json!([big.clone()]))
            .await,
        413,
        "payload_too_large",
    )
    .await;
    // Just under the limit is fine.
    let mut ok = mail();
    ok["html"] = json!("z".repeat(12 * 1024));
    assert_eq!(
        app.post("/v1/emails/send", &app.test_key, &ok)
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn metrics_count_requests_and_accepted_emails() {
    let app = spawn_app().await;
    app.send(&mail()).await;
    app.send(&mail()).await;
    let mut bad = mail();
    bad["to"] = json!("nope");
    app.post("/v1/emails/send", &app.test_key, &bad).await;
    let mut later = mail();
    later["scheduled_at"] = json!("2099-01-01T00:00:00Z");
    app.send(&later).await;
    let res = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    let ct = res.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("application/openmetrics-text") || ct.starts_with("text/plain"));
    let text = res.text().await.unwrap();
    let value = |prefix: &str, labels: &[&str]| -> f64 {
        text.lines()
            .filter(|l| l.starts_with(prefix) && labels.iter().all(|x| l.contains(x)))
            .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
            .sum()
    };
    assert_eq!(
        value(
            "mailsflux_http_requests_total{",
            &[
                "route=\"/v1/emails/send\"",
                "method=\"POST\"",
                "status=\"200\""
            ]
        ),
        3.0,
        "{text}"
    );
    assert_eq!(
        value(
            "mailsflux_http_requests_total{",
            &["route=\"/v1/emails/send\"", "status=\"422\""]
        ),
        1.0,
        "{text}"
    );
    assert_eq!(
        value("mailsflux_emails_accepted_total{", &["status=\"queued\""]),
        2.0,
        "{text}"
    );
    assert_eq!(
        value(
            "mailsflux_emails_accepted_total{",
            &["status=\"scheduled\""]
        ),
        1.0,
        "{text}"
    );
    assert!(text.contains("mailsflux_queue_depth"), "{text}");
    // The writer's work: at least the three accepted sends, in as many transactions or
    // fewer (group commit), plus the start-up's own writes.
    let transactions = value("mailsflux_db_transactions_total ", &[]);
    let jobs = value("mailsflux_db_write_jobs_total ", &[]);
    assert!(transactions >= 1.0, "{text}");
    assert!(jobs >= 3.0 && jobs >= transactions, "{text}");
    assert!(
        text.contains("mailsflux_http_request_duration_seconds"),
        "{text}"
    );
    // Every request counted is in the histogram, whose buckets around 20 ms
    // `scripts/bench-ingest` reads the server's own p99 from.
    let within = |le: &str| {
        let bucket = format!("mailsflux_http_request_duration_seconds_bucket{{le=\"{le}\"}}");
        assert!(text.contains(&bucket), "no {bucket} in {text}");
        value(&bucket, &[])
    };
    assert_eq!(
        within("+Inf"),
        value("mailsflux_http_requests_total{", &[]),
        "{text}"
    );
    assert!(within("0.01") <= within("0.015"), "{text}");
    assert!(within("0.015") <= within("0.02"), "{text}");
    assert!(within("0.02") <= within("0.025"), "{text}");
    assert!(text.trim_end().ends_with("# EOF"));
}

/// Every GET route that takes query parameters (as the OpenAPI document lists them) refuses
/// one it does not know, naming it: a misspelt filter (`stauts=delivered`) must not answer
/// the whole, unfiltered list. New routes are covered by themselves.
#[tokio::test]
async fn unknown_and_repeated_query_parameters_are_refused_naming_them() {
    let app = spawn_app().await;
    let doc: serde_json::Value = reqwest::get(app.url("/v1/openapi.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut checked = Vec::new();
    for (path, operations) in doc["paths"].as_object().unwrap() {
        let Some(get) = operations.get("get") else {
            continue;
        };
        let known: Vec<&str> = get["parameters"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|p| p["in"] == "query")
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        if known.is_empty() {
            continue;
        }
        // Ids need not exist: the query is refused before anything is looked up.
        let prefix = match path.split('/').nth(2) {
            Some("emails") => "msg",
            Some("mail") => "mail",
            _ => "x",
        };
        let path = path.replace("{id}", &format!("{prefix}_01JNPXR4KQ8S2V3WZ6B7C9D0EF"));
        let res = app
            .get(
                &format!("{path}?{}=1&no_such_param=1", known[0]),
                &app.test_key,
            )
            .await;
        let body = assert_error(res, 422, "validation_error").await;
        assert_eq!(body["field"], "no_such_param", "{path}: {body}");
        let message = body["message"].as_str().unwrap();
        for name in &known {
            assert!(message.contains(&format!("'{name}'")), "{path}: {message}");
        }
        checked.push(path);
    }
    assert!(checked.len() >= 10, "{checked:?}");
    assert!(
        checked.contains(&"/v1/templates".to_string()),
        "{checked:?}"
    );

    let res = app.get("/v1/emails?stauts=delivered", &app.test_key).await;
    let body = assert_error(res, 422, "validation_error").await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("Unknown query parameter 'stauts'"),
        "{body}"
    );
    let res = app.get("/v1/emails?limit=1&limit=2", &app.test_key).await;
    let body = assert_error(res, 422, "validation_error").await;
    assert_eq!(body["field"], "limit", "{body}");
    // Known parameters still work.
    let res = app
        .get("/v1/emails?limit=1&status=queued", &app.test_key)
        .await;
    assert_eq!(res.status(), 200);
}
