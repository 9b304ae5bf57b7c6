//! The dashboard over HTTP: sign-in, sessions, CSRF, escaping, security headers, the pages.

use mailsflux::dashboard::session;
use serde_json::json;

use crate::helpers::{TestApp, mail, spawn_app};

const EMAIL: &str = "admin@example.org";
const PASSWORD: &str = "correct horse battery staple";

/// A browser-like client: keeps cookies, does not follow redirects.
fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn sign_in(app: &TestApp) -> reqwest::Client {
    let client = browser();
    let res = client
        .post(app.url("/dashboard/login"))
        .form(&[("email", EMAIL), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303, "sign-in redirects");
    let cookie = res.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.contains("HttpOnly"), "{cookie}");
    assert!(cookie.contains("SameSite=Strict"), "{cookie}");
    client
}

async fn page(client: &reqwest::Client, app: &TestApp, path: &str) -> (u16, String) {
    let res = client.get(app.url(path)).send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.text().await.unwrap())
}

/// The CSRF token of a page's forms.
fn csrf_of(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token")
        + 19;
    html[at..at + html[at..].find('"').unwrap()].to_string()
}

#[tokio::test]
async fn every_page_requires_a_session() {
    let app = spawn_app().await;
    for path in [
        "/dashboard/",
        "/dashboard/emails",
        "/dashboard/inbox",
        "/dashboard/settings/api-keys",
        "/dashboard/emails/msg_01JNPXR4KQ8S2V3WZ6B7C9D0EF",
        "/dashboard/emails/msg_01JNPXR4KQ8S2V3WZ6B7C9D0EF/html",
        "/dashboard/emails/msg_01JNPXR4KQ8S2V3WZ6B7C9D0EF/raw",
        "/dashboard/templates",
        "/dashboard/templates/tpl_01JNPXR4KQ8S2V3WZ6B7C9D0EF",
        "/dashboard/domains",
        "/dashboard/domains/dom_01JNPXR4KQ8S2V3WZ6B7C9D0EF",
        "/dashboard/mail",
        "/dashboard/mail/mail_01JNPXR4KQ8S2V3WZ6B7C9D0EF",
        "/dashboard/webhooks",
        "/dashboard/webhooks/whk_01JNPXR4KQ8S2V3WZ6B7C9D0EF",
        "/dashboard/audiences",
        "/dashboard/audiences/aud_01JNPXR4KQ8S2V3WZ6B7C9D0EF",
        "/dashboard/suppressions",
        "/dashboard/mode/live",
    ] {
        let res = browser().get(app.url(path)).send().await.unwrap();
        assert_eq!(res.status(), 303, "{path}");
        assert_eq!(res.headers()["location"], "/dashboard/login", "{path}");
    }
    // Every form refuses a signed-out request too.
    for path in [
        "/dashboard/logout",
        "/dashboard/settings/api-keys",
        "/dashboard/webhooks",
        "/dashboard/suppressions/remove",
        "/dashboard/domains/dom_01JNPXR4KQ8S2V3WZ6B7C9D0EF/verify",
        "/dashboard/audiences/aud_01JNPXR4KQ8S2V3WZ6B7C9D0EF/import",
    ] {
        let res = browser()
            .post(app.url(path))
            .form(&[("csrf", "x")])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 303, "POST {path}");
    }
    let res = browser()
        .get(app.url("/dashboard/login"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let csp = res.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert_eq!(res.headers()["x-content-type-options"], "nosniff");
    let html = res.text().await.unwrap();
    assert!(!html.contains("<script>"), "no inline script");
}

#[tokio::test]
async fn wrong_passwords_lock_the_account_out() {
    let app = spawn_app().await;
    app.create_admin(EMAIL, PASSWORD).await;
    for _ in 0..session::MAX_FAILURES {
        let res = browser()
            .post(app.url("/dashboard/login"))
            .form(&[("email", EMAIL), ("password", "wrong password")])
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401);
    }
    let res = browser()
        .post(app.url("/dashboard/login"))
        .form(&[("email", EMAIL), ("password", PASSWORD)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 429, "locked out even with the right password");
    assert!(
        res.text()
            .await
            .unwrap()
            .contains("Too many failed sign-ins")
    );
}

#[tokio::test]
async fn pages_show_data_escaped() {
    let app = spawn_app().await;
    app.create_admin(EMAIL, PASSWORD).await;
    let mut body = mail();
    body["subject"] = json!("Hi <script>alert(1)</script>");
    let sent = app.send(&body).await;
    let id = sent["id"].as_str().unwrap();
    app.wait_email(&app.test_key, id, std::time::Duration::from_secs(10), |e| {
        e["status"] == "delivered"
    })
    .await;
    let client = sign_in(&app).await;
    for path in [
        "/dashboard/",
        "/dashboard/emails",
        "/dashboard/inbox",
        &format!("/dashboard/emails/{id}"),
    ] {
        let (status, html) = page(&client, &app, path).await;
        assert_eq!(status, 200, "{path}");
        assert!(
            !html.contains("<script>alert(1)"),
            "{path} does not escape the subject"
        );
    }
    let (_, inbox) = page(&client, &app, "/dashboard/inbox").await;
    assert!(
        inbox.contains("Hi &#60;script&#62;alert(1)&#60;/script&#62;"),
        "{inbox}"
    );
    assert!(inbox.contains(id));
    let (_, detail) = page(&client, &app, &format!("/dashboard/emails/{id}")).await;
    assert!(
        detail.contains("<iframe class=\"preview\" sandbox"),
        "the HTML is shown in a sandboxed iframe"
    );
    let res = client
        .get(app.url(&format!("/dashboard/emails/{id}/html")))
        .send()
        .await
        .unwrap();
    assert!(
        res.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .starts_with("sandbox")
    );
    let (status, raw) = page(&client, &app, &format!("/dashboard/emails/{id}/raw")).await;
    assert_eq!(status, 200);
    assert!(
        raw.contains(&format!("Message-ID: <{id}@acme.test>")),
        "{raw}"
    );
}

#[tokio::test]
async fn api_keys_are_created_once_and_revoked_with_csrf() {
    let app = spawn_app().await;
    app.create_admin(EMAIL, PASSWORD).await;
    let client = sign_in(&app).await;
    let (_, html) = page(&client, &app, "/dashboard/settings/api-keys").await;
    let csrf = csrf_of(&html);

    let forged = client
        .post(app.url("/dashboard/settings/api-keys"))
        .form(&[
            ("csrf", "forged"),
            ("name", "x"),
            ("mode", "test"),
            ("permission", "full_access"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403, "CSRF enforced");

    let res = client
        .post(app.url("/dashboard/settings/api-keys"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("name", "from the dashboard"),
            ("mode", "test"),
            ("permission", "full_access"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    let at = html.find("mf_test_sk_").expect("the new key is shown");
    let key = html[at..at + "mf_test_sk_".len() + 43].to_string();
    let api = app.get("/v1/emails", &key).await;
    assert_eq!(api.status(), 200, "the new key works");
    let (_, again) = page(&client, &app, "/dashboard/settings/api-keys").await;
    assert!(!again.contains(&key), "the key is shown only once");

    let key_id_at = again.find("/dashboard/settings/api-keys/key_").unwrap()
        + "/dashboard/settings/api-keys/".len();
    let ids: Vec<&str> = again[key_id_at..].splitn(2, '/').collect();
    let res = client
        .post(app.url(&format!("/dashboard/settings/api-keys/{}/revoke", ids[0])))
        .form(&[("csrf", "forged")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 403);

    let logout = client
        .post(app.url("/dashboard/logout"))
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(logout.status(), 303);
    let (status, _) = page(&client, &app, "/dashboard/").await;
    assert_eq!(status, 303, "signed out");
}

#[tokio::test]
async fn domain_template_and_mail_pages_render() {
    let app = spawn_app().await;
    app.create_admin(EMAIL, PASSWORD).await;
    let key = app.test_key.clone();
    let dom: serde_json::Value = app
        .post("/v1/domains", &key, &json!({"name": "pages.test"}))
        .await
        .json()
        .await
        .unwrap();
    let tpl = app
        .post(
            "/v1/templates",
            &key,
            &json!({"name": "welcome <b>", "subject": "Hi {{ name }}", "text": "Hello {{ name }}"}),
        )
        .await;
    assert_eq!(tpl.status(), 201);
    let tpl: serde_json::Value = tpl.json().await.unwrap();
    let client = sign_in(&app).await;
    for path in [
        "/dashboard/domains".to_string(),
        format!("/dashboard/domains/{}", dom["id"].as_str().unwrap()),
        "/dashboard/templates".to_string(),
        format!("/dashboard/templates/{}", tpl["id"].as_str().unwrap()),
        "/dashboard/mail".to_string(),
    ] {
        let (status, html) = page(&client, &app, &path).await;
        assert_eq!(status, 200, "{path}: {html}");
        assert!(
            !html.contains("welcome <b>"),
            "{path} escapes the template name"
        );
    }
    let (_, html) = page(
        &client,
        &app,
        &format!(
            "/dashboard/templates/{}?variables=%7B%22name%22%3A%22Ana%22%7D",
            tpl["id"].as_str().unwrap()
        ),
    )
    .await;
    assert!(
        html.contains("Hi Ana") && html.contains("Hello Ana"),
        "{html}"
    );
    let (status, _) = page(
        &client,
        &app,
        "/dashboard/mail/mail_01JNPXR4KQ8S2V3WZ6B7C9D0EF",
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn webhook_endpoints_are_added_with_csrf_and_show_their_secret_once() {
    let app = spawn_app().await;
    app.create_admin(EMAIL, PASSWORD).await;
    let client = sign_in(&app).await;
    let (status, html) = page(&client, &app, "/dashboard/webhooks").await;
    assert_eq!(status, 200);
    let csrf = csrf_of(&html);
    let form = [
        ("csrf", csrf.as_str()),
        ("url", "http://127.0.0.1:9/hook"),
        ("events", "email.delivered, email.bounced"),
        ("description", "<b>ops</b>"),
    ];
    let forged = client
        .post(app.url("/dashboard/webhooks"))
        .form(&[("csrf", "x"), ("url", "http://127.0.0.1:9/hook")])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 403);
    let res = client
        .post(app.url("/dashboard/webhooks"))
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    assert!(html.contains("whsec_"), "the secret is shown once");
    let listed: serde_json::Value = app
        .get("/v1/webhooks", &app.test_key)
        .await
        .json()
        .await
        .unwrap();
    let id = listed["data"][0]["id"].as_str().unwrap().to_string();
    assert_eq!(
        listed["data"][0]["events"],
        json!(["email.delivered", "email.bounced"])
    );
    let (status, detail) = page(&client, &app, &format!("/dashboard/webhooks/{id}")).await;
    assert_eq!(status, 200);
    assert!(
        !detail.contains("whsec_") && !detail.contains("<b>ops</b>"),
        "no secret, description escaped"
    );
    let bad = client
        .post(app.url("/dashboard/webhooks"))
        .form(&[
            ("csrf", csrf.as_str()),
            ("url", "ftp://example.org/x"),
            ("events", "*"),
        ])
        .send()
        .await
        .unwrap();
    assert!(
        bad.text().await.unwrap().contains("class=\"error\""),
        "a bad URL is explained on the page"
    );
}

#[tokio::test]
async fn audiences_import_csv_and_suppressions_are_removed() {
    let app = spawn_app().await;
    app.create_admin(EMAIL, PASSWORD).await;
    let key = app.test_key.clone();
    let aud: serde_json::Value = app
        .post("/v1/audiences", &key, &json!({"name": "Newsletter"}))
        .await
        .json()
        .await
        .unwrap();
    let aud = aud["id"].as_str().unwrap().to_string();
    let res = app
        .post(
            "/v1/suppressions",
            &key,
            &json!({"email": "gone@example.org", "note": "<i>asked</i>"}),
        )
        .await;
    assert_eq!(res.status(), 201);
    let client = sign_in(&app).await;
    let (status, html) = page(&client, &app, &format!("/dashboard/audiences/{aud}")).await;
    assert_eq!(status, 200);
    let csrf = csrf_of(&html);
    let csv = "email,first_name,plan\nana@example.org,Ana,pro\nnot an address,Bo,free\n";
    let res = client
        .post(app.url(&format!("/dashboard/audiences/{aud}/import")))
        .form(&[("csrf", csrf.as_str()), ("csv", csv)])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let html = res.text().await.unwrap();
    assert!(
        html.contains("1 created") && html.contains("1 skipped"),
        "{html}"
    );
    assert!(html.contains("ana@example.org"));
    let (status, html) = page(&client, &app, "/dashboard/suppressions").await;
    assert_eq!(status, 200);
    assert!(html.contains("gone@example.org") && !html.contains("<i>asked</i>"));
    let res = client
        .post(app.url("/dashboard/suppressions/remove"))
        .form(&[("csrf", csrf.as_str()), ("email", "gone@example.org")])
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 303);
    let listed: serde_json::Value = app
        .get("/v1/suppressions", &key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(listed["data"].as_array().unwrap().len(), 0);
}
