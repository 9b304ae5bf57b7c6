//! The templates API: CRUD, names, the engine's rules through HTTP (escaping, strict
//! variables, syntax errors, sandbox limits), previews, layouts, and sends with templates.

use reqwest::Method;
use serde_json::{Value, json};

use crate::helpers::{TestApp, assert_error, spawn_app};

async fn put(app: &TestApp, path: &str, key: &str, body: &Value) -> reqwest::Response {
    app.request(Method::PUT, path, Some(key))
        .json(body)
        .send()
        .await
        .unwrap()
}

/// Creates a template with the test key, asserting 201; returns the template object.
async fn create(app: &TestApp, body: Value) -> Value {
    create_with(app, &app.test_key, body).await
}

async fn create_with(app: &TestApp, key: &str, body: Value) -> Value {
    let res = app.post("/v1/templates", key, &body).await;
    let status = res.status();
    let text = res.text().await.unwrap();
    assert_eq!(status, 201, "create failed: {text}");
    serde_json::from_str(&text).unwrap()
}

async fn ok_json(res: reqwest::Response) -> Value {
    let status = res.status();
    let text = res.text().await.unwrap();
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

async fn preview(app: &TestApp, template: &str, variables: Value) -> reqwest::Response {
    app.post(
        &format!("/v1/templates/{template}/render"),
        &app.test_key,
        &json!({ "variables": variables }),
    )
    .await
}

fn templated(template: &str, variables: Value) -> Value {
    json!({
        "from": "Acme <hello@acme.test>",
        "to": "ana@example.org",
        "template_id": template,
        "variables": variables,
    })
}

/// The stored email with its content.
async fn content(app: &TestApp, key: &str, id: &str) -> Value {
    ok_json(
        app.get(&format!("/v1/emails/{id}?include=content"), key)
            .await,
    )
    .await
}

fn welcome() -> Value {
    json!({
        "name": "welcome",
        "subject": "Welcome, {{ name }}!",
        "html": "<h1>Hi {{ name }}</h1><p>Your plan: {{ plan|upper }}</p>",
        "text": "Hi {{ name }}\nYour plan: {{ plan|upper }}",
    })
}

#[tokio::test]
async fn create_get_list_update_delete() {
    let app = spawn_app().await;
    let t = create(&app, welcome()).await;
    let id = t["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("tpl_"), "{t}");
    assert_eq!(t["object"], "template");
    assert_eq!(t["name"], "welcome");
    assert_eq!(t["subject"], "Welcome, {{ name }}!");
    assert_eq!(t["variables"], json!(["name", "plan"]));
    assert_eq!(t["layout"], Value::Null);
    assert!(t["created_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(t["created_at"], t["updated_at"]);

    // By id and by name (names ignore ASCII case).
    let by_id = ok_json(app.get(&format!("/v1/templates/{id}"), &app.test_key).await).await;
    assert_eq!(by_id, t);
    let by_name = ok_json(app.get("/v1/templates/welcome", &app.test_key).await).await;
    assert_eq!(by_name, t);
    let by_other_case = ok_json(app.get("/v1/templates/WELCOME", &app.test_key).await).await;
    assert_eq!(by_other_case["id"], t["id"]);
    // Names with spaces and non-ASCII letters travel percent-encoded in the path.
    let spaced = create(&app, json!({"name": "Reçu de paiement", "text": "x"})).await;
    let found = ok_json(
        app.get("/v1/templates/Re%C3%A7u%20de%20paiement", &app.test_key)
            .await,
    )
    .await;
    assert_eq!(found["id"], spaced["id"]);
    ok_json(
        app.delete("/v1/templates/Re%C3%A7u%20de%20paiement", &app.test_key)
            .await,
    )
    .await;

    // A list pages newest first.
    let second = create(
        &app,
        json!({"name": "receipt", "text": "Total: {{ total }}"}),
    )
    .await;
    let page = ok_json(app.get("/v1/templates?limit=1", &app.test_key).await).await;
    assert_eq!(page["object"], "list");
    assert_eq!(page["has_more"], true);
    assert_eq!(page["data"][0]["id"], second["id"]);
    let cursor = page["next_cursor"].as_str().unwrap();
    let page2 = ok_json(
        app.get(
            &format!("/v1/templates?limit=1&cursor={cursor}"),
            &app.test_key,
        )
        .await,
    )
    .await;
    assert_eq!(page2["has_more"], false);
    assert_eq!(page2["next_cursor"], Value::Null);
    assert_eq!(page2["data"][0]["id"], t["id"]);
    assert_eq!(page2["data"][0]["variables"], json!(["name", "plan"]));
    assert_error(
        app.get("/v1/templates?limit=0", &app.test_key).await,
        422,
        "validation_error",
    )
    .await;

    // PUT changes only what it names; null removes a part.
    let updated = ok_json(
        put(
            &app,
            &format!("/v1/templates/{id}"),
            &app.test_key,
            &json!({"subject": "Hello {{ first }}", "text": null}),
        )
        .await,
    )
    .await;
    assert_eq!(updated["id"], t["id"]);
    assert_eq!(updated["name"], "welcome");
    assert_eq!(updated["subject"], "Hello {{ first }}");
    assert_eq!(updated["html"], t["html"]);
    assert_eq!(updated["text"], Value::Null);
    assert_eq!(updated["variables"], json!(["first", "name", "plan"]));
    assert_eq!(updated["created_at"], t["created_at"]);
    // Renamed through the old name.
    let renamed = ok_json(
        put(
            &app,
            "/v1/templates/welcome",
            &app.test_key,
            &json!({"name": "welcome-v2"}),
        )
        .await,
    )
    .await;
    assert_eq!(renamed["name"], "welcome-v2");
    assert_eq!(renamed["subject"], "Hello {{ first }}");
    assert_error(
        app.get("/v1/templates/welcome", &app.test_key).await,
        404,
        "not_found",
    )
    .await;
    // A template keeps an html or text part.
    let err = assert_error(
        put(
            &app,
            &format!("/v1/templates/{id}"),
            &app.test_key,
            &json!({"html": null}),
        )
        .await,
        422,
        "validation_error",
    )
    .await;
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("'html' or a 'text'")
    );
    assert_error(
        put(&app, "/v1/templates/nope", &app.test_key, &json!({})).await,
        404,
        "not_found",
    )
    .await;

    let deleted = ok_json(
        app.delete(&format!("/v1/templates/{id}"), &app.test_key)
            .await,
    )
    .await;
    assert_eq!(deleted, json!({"id": id, "deleted": true}));
    assert_error(
        app.get(&format!("/v1/templates/{id}"), &app.test_key).await,
        404,
        "not_found",
    )
    .await;
    assert_error(
        app.delete(&format!("/v1/templates/{id}"), &app.test_key)
            .await,
        404,
        "not_found",
    )
    .await;
    // Delete by name.
    ok_json(app.delete("/v1/templates/receipt", &app.test_key).await).await;
    let empty = ok_json(app.get("/v1/templates", &app.test_key).await).await;
    assert_eq!(empty["data"], json!([]));
}

#[tokio::test]
async fn names_are_unique_and_checked() {
    let app = spawn_app().await;
    create(&app, welcome()).await;
    let err = assert_error(
        app.post("/v1/templates", &app.test_key, &welcome()).await,
        409,
        "conflict",
    )
    .await;
    assert_eq!(err["field"], "name");
    let mut upper = welcome();
    upper["name"] = json!("Welcome");
    assert_error(
        app.post("/v1/templates", &app.test_key, &upper).await,
        409,
        "conflict",
    )
    .await;
    // Renaming onto a taken name is a conflict too.
    create(&app, json!({"name": "other", "text": "x"})).await;
    assert_error(
        put(
            &app,
            "/v1/templates/other",
            &app.test_key,
            &json!({"name": "WELCOME"}),
        )
        .await,
        409,
        "conflict",
    )
    .await;

    for bad in [
        json!(""),
        json!("tpl_01JNPXR4KQ8S2V3WZ6B7C9D0EF"),
        json!("Tpl_x"),
        json!("two\nlines"),
        json!(" padded"),
        json!("a/b"),
        json!("x".repeat(101)),
    ] {
        let mut body = welcome();
        body["name"] = bad.clone();
        let err = assert_error(
            app.post("/v1/templates", &app.test_key, &body).await,
            422,
            "validation_error",
        )
        .await;
        assert_eq!(err["field"], "name", "{bad}: {err}");
    }
    let mut body = welcome();
    body.as_object_mut().unwrap().remove("name");
    let err = assert_error(
        app.post("/v1/templates", &app.test_key, &body).await,
        422,
        "validation_error",
    )
    .await;
    assert_eq!(err["field"], "name");
    assert_error(
        put(
            &app,
            "/v1/templates/welcome",
            &app.test_key,
            &json!({"name": null}),
        )
        .await,
        422,
        "validation_error",
    )
    .await;
    // A body without html or text.
    let err = assert_error(
        app.post(
            "/v1/templates",
            &app.test_key,
            &json!({"name": "subject-only", "subject": "Hi"}),
        )
        .await,
        422,
        "validation_error",
    )
    .await;
    assert_eq!(err["field"], "html");
    // A subject source with a line break.
    let err = assert_error(
        app.post(
            "/v1/templates",
            &app.test_key,
            &json!({"name": "s", "subject": "a\nb", "text": "x"}),
        )
        .await,
        422,
        "validation_error",
    )
    .await;
    assert_eq!(err["field"], "subject");
}

#[tokio::test]
async fn unknown_fields_and_bad_bodies_are_refused() {
    let app = spawn_app().await;
    let mut body = welcome();
    body["body"] = json!("<p>x</p>");
    let err = assert_error(
        app.post("/v1/templates", &app.test_key, &body).await,
        422,
        "validation_error",
    )
    .await;
    assert_eq!(err["field"], "body");
    create(&app, welcome()).await;
    let err = assert_error(
        put(
            &app,
            "/v1/templates/welcome",
            &app.test_key,
            &json!({"alias": "x"}),
        )
        .await,
        422,
        "validation_error",
    )
    .await;
    assert_eq!(err["field"], "alias");
    let err = assert_error(
        app.post(
            "/v1/templates/welcome/render",
            &app.test_key,
            &json!({"variables": {}, "vars": {}}),
        )
        .await,
        422,
        "validation_error",
    )
    .await;
    assert_eq!(err["field"], "vars");
    assert_error(
        app.post(
            "/v1/templates/welcome/render",
            &app.test_key,
            &json!({"variables": ["not", "an", "object"]}),
        )
        .await,
        422,
        "validation_error",
    )
    .await;
    let res = app
        .request(Method::POST, "/v1/templates", Some(&app.test_key))
        .header("content-type", "application/json")
        .body("{\"name\": ")
        .send()
        .await
        .unwrap();
    assert_error(res, 400, "invalid_json").await;
    let res = app
        .request(Method::POST, "/v1/templates", Some(&app.test_key))
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_error(res, 415, "unsupported_media_type").await;
    // Sending keys may only send.
    assert_error(
        app.get("/v1/templates", &app.send_key).await,
        403,
        "restricted_api_key",
    )
    .await;
    assert_error(
        app.get("/v1/templates", "mf_test_sk_nope").await,
        401,
        "invalid_api_key",
    )
    .await;
}

#[tokio::test]
async fn syntax_errors_name_the_part_and_line() {
    let app = spawn_app().await;
    let err = assert_error(
        app.post(
            "/v1/templates",
            &app.test_key,
            &json!({"name": "broken", "subject": "ok", "html": "<p>line one</p>\n<p>{{ name }</p>"}),
        )
        .await,
        422,
        "template_syntax_error",
    )
    .await;
    assert_eq!(err["field"], "html");
    let message = err["message"].as_str().unwrap();
    assert!(message.contains("html"), "{message}");
    assert!(message.contains("line 2"), "{message}");
    assert!(message.contains("column"), "{message}");

    let err = assert_error(
        app.post(
            "/v1/templates",
            &app.test_key,
            &json!({"name": "broken", "text": "{% for x in items %}no end"}),
        )
        .await,
        422,
        "template_syntax_error",
    )
    .await;
    assert_eq!(err["field"], "text");

    // Also on update, and the template stays as it was.
    create(&app, welcome()).await;
    let err = assert_error(
        put(
            &app,
            "/v1/templates/welcome",
            &app.test_key,
            &json!({"subject": "Hi {{ name"}),
        )
        .await,
        422,
        "template_syntax_error",
    )
    .await;
    assert_eq!(err["field"], "subject");
    let t = ok_json(app.get("/v1/templates/welcome", &app.test_key).await).await;
    assert_eq!(t["subject"], "Welcome, {{ name }}!");

    // A part over the source size limit.
    let big = "x".repeat(600 * 1024);
    let err = assert_error(
        app.post(
            "/v1/templates",
            &app.test_key,
            &json!({"name": "big", "html": big}),
        )
        .await,
        422,
        "template_syntax_error",
    )
    .await;
    assert!(
        err["message"].as_str().unwrap().contains("too large"),
        "{err}"
    );
}

#[tokio::test]
async fn preview_escapes_html_only_and_requires_variables() {
    let app = spawn_app().await;
    create(&app, welcome()).await;
    let out = ok_json(
        preview(
            &app,
            "welcome",
            json!({"name": "<script>alert(1)</script>", "plan": "pro"}),
        )
        .await,
    )
    .await;
    assert_eq!(out["subject"], "Welcome, <script>alert(1)</script>!");
    assert_eq!(
        out["html"],
        "<h1>Hi &lt;script&gt;alert(1)&lt;&#x2f;script&gt;</h1><p>Your plan: PRO</p>"
    );
    assert_eq!(out["text"], "Hi <script>alert(1)</script>\nYour plan: PRO");

    // A missing variable is named.
    let err = assert_error(
        preview(&app, "welcome", json!({"name": "Ana"})).await,
        422,
        "template_render_error",
    )
    .await;
    assert_eq!(err["field"], "variables.plan");
    assert!(err["message"].as_str().unwrap().contains("`plan`"), "{err}");

    // Optional variables work with `is defined` and `default`.
    create(
        &app,
        json!({"name": "opt", "text": "{% if coupon is defined %}{{ coupon }}{% else %}none{% endif %} {{ who|default('you') }}"}),
    )
    .await;
    let out = ok_json(preview(&app, "opt", json!({})).await).await;
    assert_eq!(out["text"], "none you");
    assert_eq!(out["subject"], Value::Null);
    assert_eq!(out["html"], Value::Null);
    // An empty body is a preview without variables.
    let res = app
        .request(
            Method::POST,
            "/v1/templates/opt/render",
            Some(&app.test_key),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(ok_json(res).await["text"], "none you");

    // A subject that renders a line break cannot become a header.
    let err = assert_error(
        preview(
            &app,
            "welcome",
            json!({"name": "Ana\r\nBcc: evil@example.org", "plan": "x"}),
        )
        .await,
        422,
        "template_render_error",
    )
    .await;
    assert!(
        err["message"].as_str().unwrap().contains("line break"),
        "{err}"
    );

    // unsubscribe_url is filled in previews and is not listed as a variable.
    let t = create(
        &app,
        json!({"name": "news", "html": "<a href=\"{{ unsubscribe_url }}\">unsubscribe</a> {{ x }}"}),
    )
    .await;
    assert_eq!(t["variables"], json!(["x"]));
    let out = ok_json(preview(&app, "news", json!({"x": 1})).await).await;
    // (HTML escaping also escapes '/', which HTML parsers decode in attributes.)
    assert!(
        out["html"]
            .as_str()
            .unwrap()
            .contains("127.0.0.1:8825&#x2f;u&#x2f;preview"),
        "{out}"
    );

    assert_error(preview(&app, "missing", json!({})).await, 404, "not_found").await;
}

#[tokio::test]
async fn sandbox_limits_are_422_naming_the_limit() {
    let app = spawn_app().await;
    let cases = [
        (
            "forever",
            "{% for i in range(100000) %}{% for j in range(100000) %}{{ i }}{% endfor %}{% endfor %}",
            "work limit",
        ),
        (
            "recursive",
            "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}",
            "recursion limit",
        ),
        (
            "huge",
            "{% for i in range(100000) %}{{ 'x' * 1000 }}{% endfor %}",
            "output size limit",
        ),
        ("include", "{% include 'welcome' %}", "cannot include"),
    ];
    for (name, html, limit) in cases {
        create(&app, json!({"name": name, "subject": "s", "html": html})).await;
        let started = std::time::Instant::now();
        let err = assert_error(
            preview(&app, name, json!({})).await,
            422,
            "template_render_error",
        )
        .await;
        let message = err["message"].as_str().unwrap();
        assert!(message.contains(limit), "{name}: {message}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "{name} took {:?}",
            started.elapsed()
        );
        // The same through a send, which stores nothing.
        let err = assert_error(
            app.post(
                "/v1/emails/send",
                &app.test_key,
                &templated(name, json!({})),
            )
            .await,
            422,
            "template_render_error",
        )
        .await;
        assert!(err["message"].as_str().unwrap().contains(limit), "{err}");
        assert_eq!(err["field"], "template_id");
    }
    let emails = ok_json(app.get("/v1/emails", &app.test_key).await).await;
    assert_eq!(emails["data"], json!([]));
}

#[tokio::test]
async fn send_with_a_template_stores_the_rendered_content() {
    let app = spawn_app().await;
    let t = create(&app, welcome()).await;
    let vars = json!({"name": "<script>x</script>", "plan": "pro"});
    // By name.
    let sent = app.send(&templated("welcome", vars.clone())).await;
    assert_eq!(sent["status"], "queued");
    let e = content(&app, &app.test_key, sent["id"].as_str().unwrap()).await;
    assert_eq!(e["subject"], "Welcome, <script>x</script>!");
    assert_eq!(
        e["html"],
        "<h1>Hi &lt;script&gt;x&lt;&#x2f;script&gt;</h1><p>Your plan: PRO</p>"
    );
    assert_eq!(e["text"], "Hi <script>x</script>\nYour plan: PRO");
    assert_eq!(e["template_id"], t["id"]);
    let raw = e["raw"].as_str().unwrap();
    assert!(
        raw.contains("Subject: Welcome, <script>x</script>!"),
        "{raw}"
    );

    // By id, with fields beside it overriding the template's (used as given).
    let mut body = templated(
        t["id"].as_str().unwrap(),
        json!({"name": "Bo", "plan": "free"}),
    );
    body["subject"] = json!("Custom {{ not rendered }}");
    body["text"] = json!("Plain override");
    let sent = app.send(&body).await;
    let e = content(&app, &app.test_key, sent["id"].as_str().unwrap()).await;
    assert_eq!(e["subject"], "Custom {{ not rendered }}");
    assert_eq!(e["html"], "<h1>Hi Bo</h1><p>Your plan: FREE</p>");
    assert_eq!(e["text"], "Plain override");

    // An overridden part is not rendered, so its variables are not needed.
    let mut body = templated("welcome", json!({"plan": "x"}));
    body["subject"] = json!("S");
    body["html"] = json!("<p>H</p>");
    body["text"] = json!("T");
    let sent = app.send(&body).await;
    let e = content(&app, &app.test_key, sent["id"].as_str().unwrap()).await;
    assert_eq!(e["html"], "<p>H</p>");

    // Errors: missing variable, unknown template, variables without a template, a subject
    // that renders a line break, no subject anywhere.
    let err = assert_error(
        app.post(
            "/v1/emails/send",
            &app.test_key,
            &templated("welcome", json!({"plan": "x"})),
        )
        .await,
        422,
        "template_render_error",
    )
    .await;
    assert_eq!(err["field"], "variables.name");
    let message = err["message"].as_str().unwrap();
    assert!(
        message.contains("'welcome'") && message.contains("`name`"),
        "{message}"
    );
    let err = assert_error(
        app.post(
            "/v1/emails/send",
            &app.test_key,
            &templated("nope", json!({})),
        )
        .await,
        422,
        "validation_error",
    )
    .await;
    assert_eq!(err["field"], "template_id");
    let mut body = crate::helpers::mail();
    body["variables"] = json!({"a": 1});
    let err = assert_error(
        app.post("/v1/emails/send", &app.test_key, &body).await,
        422,
        "validation_error",
    )
    .await;
    assert_eq!(err["field"], "variables");
    assert_error(
        app.post(
            "/v1/emails/send",
            &app.test_key,
            &templated(
                "welcome",
                json!({"name": "a\nBcc: x@example.org", "plan": "x"}),
            ),
        )
        .await,
        422,
        "template_render_error",
    )
    .await;
    create(&app, json!({"name": "nosubject", "text": "hi"})).await;
    let err = assert_error(
        app.post(
            "/v1/emails/send",
            &app.test_key,
            &templated("nosubject", json!({})),
        )
        .await,
        422,
        "validation_error",
    )
    .await;
    assert_eq!(err["field"], "subject");
    let mut body = templated("nosubject", json!({}));
    body["subject"] = json!("Given");
    app.send(&body).await;

    // A sending-only key can send with a template.
    let sent = app
        .send_with(
            &app.send_key,
            &templated("welcome", json!({"name": "K", "plan": "p"})),
        )
        .await;
    assert_eq!(sent["status"], "queued");
}

#[tokio::test]
async fn batch_renders_every_item() {
    let app = spawn_app().await;
    let t = create(&app, welcome()).await;
    let items: Vec<Value> = (0..50)
        .map(|i| templated("welcome", json!({"name": format!("N{i}"), "plan": "p"})))
        .chain([crate::helpers::mail()])
        .collect();
    let res = ok_json(
        app.post("/v1/emails/batch", &app.test_key, &json!(items))
            .await,
    )
    .await;
    let data = res["data"].as_array().unwrap();
    assert_eq!(data.len(), 51);
    for (i, item) in data.iter().enumerate().take(50).step_by(7) {
        let e = content(&app, &app.test_key, item["id"].as_str().unwrap()).await;
        assert_eq!(e["subject"], format!("Welcome, N{i}!"));
        assert_eq!(e["text"], format!("Hi N{i}\nYour plan: P"));
        assert_eq!(e["template_id"], t["id"]);
    }
    let plain = content(&app, &app.test_key, data[50]["id"].as_str().unwrap()).await;
    assert_eq!(plain["template_id"], Value::Null);
    assert_eq!(plain["subject"], "Hello");

    // One bad item: all or nothing, with the index.
    let items = json!([
        templated("welcome", json!({"name": "A", "plan": "p"})),
        templated("welcome", json!({"name": "B"})),
        templated("ghost", json!({})),
    ]);
    let err = assert_error(
        app.post("/v1/emails/batch", &app.test_key, &items).await,
        422,
        "validation_error",
    )
    .await;
    let details = err["details"].as_array().unwrap();
    assert_eq!(details.len(), 2);
    assert_eq!(details[0]["index"], 1);
    assert_eq!(details[0]["code"], "template_render_error");
    assert_eq!(details[0]["field"], "variables.plan");
    assert_eq!(details[1]["index"], 2);
    assert_eq!(details[1]["field"], "template_id");
    // Permissive: the good one is accepted.
    let res = ok_json(
        app.request(Method::POST, "/v1/emails/batch", Some(&app.test_key))
            .header("x-batch-validation", "permissive")
            .json(&items)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(res["data"].as_array().unwrap().len(), 1);
    assert_eq!(res["errors"][0]["index"], 1);
}

#[tokio::test]
async fn accepted_emails_keep_their_content_after_edit_and_delete() {
    let app = spawn_app().await;
    create(&app, welcome()).await;
    let vars = json!({"name": "Ana", "plan": "pro"});
    let first = app.send(&templated("welcome", vars.clone())).await;
    let first_id = first["id"].as_str().unwrap();
    let before = content(&app, &app.test_key, first_id).await;

    ok_json(
        put(
            &app,
            "/v1/templates/welcome",
            &app.test_key,
            &json!({"subject": "Changed {{ name }}", "html": "<p>new {{ name }}</p>"}),
        )
        .await,
    )
    .await;
    let after_edit = content(&app, &app.test_key, first_id).await;
    assert_eq!(after_edit["subject"], before["subject"]);
    assert_eq!(after_edit["html"], before["html"]);
    assert_eq!(after_edit["raw"], before["raw"]);
    // A new send uses the edited template at once (the cache is not stale).
    let second = app.send(&templated("welcome", vars.clone())).await;
    let second = content(&app, &app.test_key, second["id"].as_str().unwrap()).await;
    assert_eq!(second["subject"], "Changed Ana");
    assert_eq!(second["html"], "<p>new Ana</p>");

    ok_json(app.delete("/v1/templates/welcome", &app.test_key).await).await;
    let after_delete = content(&app, &app.test_key, first_id).await;
    assert_eq!(after_delete["html"], before["html"]);
    assert_eq!(after_delete["template_id"], before["template_id"]);
    assert_error(
        app.post(
            "/v1/emails/send",
            &app.test_key,
            &templated("welcome", vars),
        )
        .await,
        422,
        "validation_error",
    )
    .await;
}

#[tokio::test]
async fn layouts_wrap_templates() {
    let app = spawn_app().await;
    let layout = create(
        &app,
        json!({
            "name": "base",
            "html": "<html><body>{{ content }}<footer>{{ company }}</footer></body></html>",
            "text": "{{ content }}\n-- {{ company }}",
        }),
    )
    .await;
    assert_eq!(layout["variables"], json!(["company"]));
    let child = create(
        &app,
        json!({
            "name": "receipt",
            "subject": "Receipt {{ number }}",
            "html": "<p>Total {{ total }}</p>",
            "text": "Total {{ total }}",
            "layout": "base",
        }),
    )
    .await;
    assert_eq!(child["layout"], layout["id"]);
    assert_eq!(child["variables"], json!(["company", "number", "total"]));

    let vars = json!({"company": "A&B", "number": 7, "total": "<5>"});
    let out = ok_json(preview(&app, "receipt", vars.clone()).await).await;
    assert_eq!(out["subject"], "Receipt 7");
    assert_eq!(
        out["html"],
        "<html><body><p>Total &lt;5&gt;</p><footer>A&amp;B</footer></body></html>"
    );
    assert_eq!(out["text"], "Total <5>\n-- A&B");
    let sent = app.send(&templated("receipt", vars.clone())).await;
    let e = content(&app, &app.test_key, sent["id"].as_str().unwrap()).await;
    assert_eq!(e["html"], out["html"]);
    assert_eq!(e["text"], out["text"]);
    // A variable only the layout uses is required too.
    let err = assert_error(
        preview(&app, "receipt", json!({"number": 1, "total": 2})).await,
        422,
        "template_render_error",
    )
    .await;
    assert_eq!(err["field"], "variables.company");
    assert!(
        err["message"].as_str().unwrap().contains("layout html"),
        "{err}"
    );

    // Editing the layout changes what new sends get.
    ok_json(
        put(
            &app,
            "/v1/templates/base",
            &app.test_key,
            &json!({"html": "<div>{{ content }}</div>"}),
        )
        .await,
    )
    .await;
    let out = ok_json(preview(&app, "receipt", vars.clone()).await).await;
    assert_eq!(out["html"], "<div><p>Total &lt;5&gt;</p></div>");
    let child_now = ok_json(app.get("/v1/templates/receipt", &app.test_key).await).await;
    assert_eq!(
        child_now["variables"],
        json!(["company", "number", "total"])
    );

    // The layout must exist, not be the template itself, and have no layout itself.
    let err = assert_error(
        app.post(
            "/v1/templates",
            &app.test_key,
            &json!({"name": "x", "text": "x", "layout": "nope"}),
        )
        .await,
        422,
        "validation_error",
    )
    .await;
    assert_eq!(err["field"], "layout");
    assert_error(
        put(
            &app,
            "/v1/templates/base",
            &app.test_key,
            &json!({"layout": "base"}),
        )
        .await,
        422,
        "validation_error",
    )
    .await;
    // No cycles: base is receipt's layout, so base cannot take receipt (or any) as layout.
    let err = assert_error(
        put(
            &app,
            "/v1/templates/base",
            &app.test_key,
            &json!({"layout": "receipt"}),
        )
        .await,
        422,
        "validation_error",
    )
    .await;
    assert!(
        err["message"].as_str().unwrap().contains("one level"),
        "{err}"
    );
    let err = assert_error(
        app.post(
            "/v1/templates",
            &app.test_key,
            &json!({"name": "deep", "text": "x", "layout": "receipt"}),
        )
        .await,
        422,
        "validation_error",
    )
    .await;
    assert!(
        err["message"].as_str().unwrap().contains("one level"),
        "{err}"
    );
    // A layout without {{ content }} in a part the template has.
    create(
        &app,
        json!({"name": "noslot", "html": "<html>nothing</html>"}),
    )
    .await;
    let err = assert_error(
        app.post(
            "/v1/templates",
            &app.test_key,
            &json!({"name": "y", "html": "<p>y</p>", "layout": "noslot"}),
        )
        .await,
        422,
        "template_syntax_error",
    )
    .await;
    assert!(
        err["message"].as_str().unwrap().contains("{{ content }}"),
        "{err}"
    );
    // ...but a part the layout lacks stays unwrapped.
    let t = create(
        &app,
        json!({"name": "textonly", "text": "plain {{ v }}", "layout": "noslot"}),
    )
    .await;
    assert_eq!(t["variables"], json!(["v"]));
    // A layout in use keeps {{ content }} where its users need it.
    let err = assert_error(
        put(
            &app,
            "/v1/templates/base",
            &app.test_key,
            &json!({"text": "no slot"}),
        )
        .await,
        422,
        "template_syntax_error",
    )
    .await;
    assert!(
        err["message"].as_str().unwrap().contains("'receipt'"),
        "{err}"
    );

    // Deleting a layout in use is a conflict naming its users.
    let err = assert_error(
        app.delete("/v1/templates/base", &app.test_key).await,
        409,
        "conflict",
    )
    .await;
    assert!(
        err["message"].as_str().unwrap().contains("'receipt'"),
        "{err}"
    );
    // Detach, then delete; the accepted email is unchanged.
    let detached = ok_json(
        put(
            &app,
            "/v1/templates/receipt",
            &app.test_key,
            &json!({"layout": null}),
        )
        .await,
    )
    .await;
    assert_eq!(detached["layout"], Value::Null);
    assert_eq!(detached["variables"], json!(["number", "total"]));
    ok_json(app.delete("/v1/templates/base", &app.test_key).await).await;
    let e2 = content(&app, &app.test_key, sent["id"].as_str().unwrap()).await;
    assert_eq!(e2["html"], e["html"]);
    let out = ok_json(preview(&app, "receipt", vars).await).await;
    assert_eq!(out["html"], "<p>Total &lt;5&gt;</p>");
}

#[tokio::test]
async fn test_and_live_templates_are_separate() {
    let app = spawn_app().await;
    let t = create(&app, welcome()).await;
    let id = t["id"].as_str().unwrap();
    assert_error(
        app.get(&format!("/v1/templates/{id}"), &app.live_key).await,
        404,
        "not_found",
    )
    .await;
    assert_error(
        app.get("/v1/templates/welcome", &app.live_key).await,
        404,
        "not_found",
    )
    .await;
    let live_list = ok_json(app.get("/v1/templates", &app.live_key).await).await;
    assert_eq!(live_list["data"], json!([]));
    assert_error(
        put(
            &app,
            &format!("/v1/templates/{id}"),
            &app.live_key,
            &json!({"text": "x"}),
        )
        .await,
        404,
        "not_found",
    )
    .await;
    assert_error(
        app.delete(&format!("/v1/templates/{id}"), &app.live_key)
            .await,
        404,
        "not_found",
    )
    .await;
    assert_error(
        app.post(
            &format!("/v1/templates/{id}/render"),
            &app.live_key,
            &json!({}),
        )
        .await,
        404,
        "not_found",
    )
    .await;
    // A test template cannot be sent or used as a layout from live.
    let err = assert_error(
        app.post(
            "/v1/emails/send",
            &app.live_key,
            &templated(id, json!({"name": "a", "plan": "b"})),
        )
        .await,
        422,
        "validation_error",
    )
    .await;
    assert_eq!(err["field"], "template_id");
    assert_error(
        app.post(
            "/v1/templates",
            &app.live_key,
            &json!({"name": "child", "text": "x", "layout": id}),
        )
        .await,
        422,
        "validation_error",
    )
    .await;
    // The same name may exist in both modes.
    let live = create_with(&app, &app.live_key, welcome()).await;
    assert_ne!(live["id"], t["id"]);
    let by_name = ok_json(app.get("/v1/templates/welcome", &app.live_key).await).await;
    assert_eq!(by_name["id"], live["id"]);
    let by_name = ok_json(app.get("/v1/templates/welcome", &app.test_key).await).await;
    assert_eq!(by_name["id"], t["id"]);
}
