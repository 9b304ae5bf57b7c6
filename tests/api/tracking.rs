//! Marketing sends end to end: audience sends personalised per contact, the one-click
//! unsubscribe read from a delivered message, open and click tracking, forged tokens.

use std::time::Duration;

use mail_parser::MessageParser;
use serde_json::{Value, json};

use crate::helpers::{TestApp, mail, spawn_app, spawn_app_with};
use crate::support::smtp_server::TestSmtpServer;

async fn audience_with(app: &TestApp, contacts: Value) -> String {
    let res = app
        .post("/v1/audiences", &app.test_key, &json!({"name": "News"}))
        .await;
    let id = res.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let res = app
        .post(
            &format!("/v1/audiences/{id}/contacts"),
            &app.test_key,
            &json!({"contacts": contacts}),
        )
        .await;
    assert_eq!(res.status(), 200);
    id
}

/// All recipients of an email, with their MIME copies.
async fn recipients(app: &TestApp, key: &str, id: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor = String::new();
    loop {
        let res = app
            .get(
                &format!("/v1/emails/{id}/recipients?include=content&limit=2&cursor={cursor}"),
                key,
            )
            .await;
        assert_eq!(res.status(), 200);
        let page: Value = res.json().await.unwrap();
        out.extend(page["data"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = c.to_string(),
            None => return out,
        }
    }
}

/// The path and token of the first link in `html` under `{public_url}/{prefix}/`.
fn link(html: &str, prefix: &str) -> Option<String> {
    let start = html.find(&format!("/{prefix}/"))?;
    let rest = &html[start..];
    let end = rest.find(['"', '>', ' ']).unwrap_or(rest.len());
    Some(rest[..end].to_string())
}

#[tokio::test]
async fn audience_send_is_personalised_and_skips_unsubscribed_and_suppressed() {
    let app = spawn_app().await;
    let aud = audience_with(
        &app,
        json!([
            {"email": "ana@example.org", "first_name": "Ana", "data": {"city": "Lisbon"}},
            {"email": "bo@example.org", "first_name": "Bo", "unsubscribed": true},
            {"email": "cy@example.org", "first_name": "Cy"},
            {"email": "dee@example.org"}
        ]),
    )
    .await;
    app.post(
        "/v1/suppressions",
        &app.test_key,
        &json!({"email": "CY@example.org"}),
    )
    .await;
    let sent = app
        .send(&json!({
            "from": "Acme <news@acme.test>",
            "audience_id": aud,
            "subject": "Hi {{ contact.first_name or 'friend' }}",
            "html": "<p>Hello {{ contact.first_name or 'there' }} in {{ contact.data.city|default('your town') }} ({{ contact.email }}, {{ season }})</p><p><a href=\"{{ unsubscribe_url }}\">Unsubscribe</a></p>",
            "variables": {"season": "spring"}
        }))
        .await;
    assert_eq!(sent["recipients"], 2);
    assert_eq!(sent["status"], "queued");
    let id = sent["id"].as_str().unwrap();
    let e = app
        .wait_email(&app.test_key, id, Duration::from_secs(20), |e| {
            e["status"] == "delivered"
        })
        .await;
    assert_eq!(e["type"], "marketing");
    assert_eq!(e["recipient_counts"], json!({"delivered": 2}));
    let rcpts = recipients(&app, &app.test_key, id).await;
    let emails: Vec<&str> = rcpts.iter().map(|r| r["email"].as_str().unwrap()).collect();
    assert_eq!(emails, ["ana@example.org", "dee@example.org"]);
    let expected = [
        (
            "ana@example.org",
            "Hi Ana",
            "Hello Ana in Lisbon (ana@example.org, spring)",
        ),
        (
            "dee@example.org",
            "Hi friend",
            "Hello there in your town (dee@example.org, spring)",
        ),
    ];
    let mut unsubscribe_links = Vec::new();
    for (r, (email, subject, body)) in rcpts.iter().zip(expected) {
        assert_eq!(r["status"], "delivered");
        assert_eq!(r["attempts"], 1);
        let raw = r["raw"].as_str().unwrap();
        let msg = MessageParser::default().parse(raw.as_bytes()).unwrap();
        assert_eq!(msg.subject(), Some(subject));
        assert_eq!(
            msg.to().unwrap().first().unwrap().address(),
            Some(email),
            "each copy is addressed to its contact"
        );
        let html = msg.body_html(0).unwrap();
        assert!(html.contains(body), "{html}");
        let header = msg
            .header_raw("List-Unsubscribe")
            .expect("List-Unsubscribe")
            .trim()
            .to_string();
        assert!(
            header.starts_with("<http") && header.ends_with('>'),
            "{header}"
        );
        assert_eq!(
            msg.header_raw("List-Unsubscribe-Post").map(str::trim),
            Some("List-Unsubscribe=One-Click")
        );
        let text = msg.body_text(0).unwrap();
        assert!(text.contains("Hello"), "a text part is derived: {text}");
        unsubscribe_links.push(header);
    }
    assert_ne!(
        unsubscribe_links[0], unsubscribe_links[1],
        "one token per recipient"
    );

    // A bad template is refused at once, naming the variable.
    let res = app
        .post(
            "/v1/emails/send",
            &app.test_key,
            &json!({"from": "a@acme.test", "audience_id": aud, "subject": "s",
                    "html": "{{ contact.data.missing }}"}),
        )
        .await;
    let err = crate::helpers::assert_error(res, 422, "template_render_error").await;
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("contact.data.missing"),
        "{err}"
    );
    for body in [
        json!({"from": "a@acme.test", "audience_id": "aud_01JNPXR4KQ8S2V3WZ6B7C9D0EF", "subject": "s", "text": "t"}),
        json!({"from": "a@acme.test", "audience_id": aud, "to": "x@example.org", "subject": "s", "text": "t"}),
    ] {
        let res = app.post("/v1/emails/send", &app.test_key, &body).await;
        let err = crate::helpers::assert_error(res, 422, "validation_error").await;
        assert_eq!(err["field"], "audience_id");
    }
}

#[tokio::test]
async fn large_audience_send_pages_recipients_and_counts() {
    let app = spawn_app().await;
    let contacts: Vec<Value> = (0..2_500)
        .map(|i| json!({"email": format!("u{i}@example.org"), "first_name": format!("U{i}")}))
        .collect();
    let aud = audience_with(&app, json!(contacts)).await;
    let sent = app
        .send(&json!({"from": "a@acme.test", "audience_id": aud, "subject": "Hi {{ contact.first_name }}",
                      "text": "Hello {{ contact.first_name }}", "scheduled_at": "2099-01-01T00:00:00Z"}))
        .await;
    assert_eq!(sent["recipients"], 2500);
    assert_eq!(sent["status"], "scheduled");
    let id = sent["id"].as_str().unwrap();
    let e = app
        .wait_email(&app.test_key, id, Duration::from_secs(30), |e| {
            e["recipient_counts"]["scheduled"] == 2500
        })
        .await;
    assert_eq!(e["status"], "scheduled");
    assert_eq!(
        e["recipients"].as_array().unwrap().len(),
        0,
        "not inlined beyond 50"
    );
    let page: Value = app
        .get(
            &format!("/v1/emails/{id}/recipients?limit=100"),
            &app.test_key,
        )
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["data"].as_array().unwrap().len(), 100);
    assert_eq!(page["data"][0]["email"], "u0@example.org");
    assert_eq!(page["has_more"], true);
    assert!(page["data"][0].get("raw").is_none());
    let res = app
        .post(
            &format!("/v1/emails/{id}/cancel"),
            &app.test_key,
            &json!({}),
        )
        .await;
    assert_eq!(res.status(), 200);
    let e = app.email(&app.test_key, id).await;
    assert_eq!(e["recipient_counts"], json!({"canceled": 2500}));
    crate::helpers::assert_error(
        app.get(
            &format!("/v1/emails/{id}/recipients?cursor=zzz"),
            &app.test_key,
        )
        .await,
        422,
        "validation_error",
    )
    .await;
    crate::helpers::assert_error(
        app.get(
            "/v1/emails/msg_01JNPXR4KQ8S2V3WZ6B7C9D0EF/recipients",
            &app.test_key,
        )
        .await,
        404,
        "not_found",
    )
    .await;
}

#[tokio::test]
async fn one_click_unsubscribe_from_a_delivered_message() {
    let smtp = TestSmtpServer::plain().await;
    let port = smtp.port();
    let app = spawn_app_with(|c| c.delivery.relay.port = port).await;
    let mut body = mail();
    body["type"] = json!("marketing");
    body["html"] = json!("<p>News</p><a href=\"{{ unsubscribe_url }}\">Unsubscribe</a>");
    let sent = app.send_with(&app.live_key, &body).await;
    let msgs = smtp.wait_for(1, Duration::from_secs(20)).await;
    let msg = MessageParser::default().parse(&msgs[0].data).unwrap();
    let header = msg.header_raw("List-Unsubscribe").unwrap().trim();
    assert_eq!(
        msg.header_raw("List-Unsubscribe-Post").map(str::trim),
        Some("List-Unsubscribe=One-Click")
    );
    let url = header.trim_start_matches('<').trim_end_matches('>');
    assert!(
        url.starts_with(&format!("{}/u/", app.config.server.public_url)),
        "{url}"
    );
    let path = &url[url.find("/u/").unwrap()..];
    let html = msg.body_html(0).unwrap();
    assert!(
        html.contains(&format!("href=\"{url}\"")) || html.contains(path),
        "{html}"
    );

    // A GET shows a page with a form and changes nothing.
    let res = app.client.get(app.url(path)).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert!(
        res.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let page = res.text().await.unwrap();
    assert!(page.contains("<form method=\"post\""), "{page}");
    assert!(!page.contains("<script"));
    let list: Value = app
        .get("/v1/suppressions", &app.live_key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 0);

    // The RFC 8058 one-click POST, as a mailbox provider sends it.
    let res = app
        .client
        .post(app.url(path))
        .header("Content-Type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let list: Value = app
        .get("/v1/suppressions", &app.live_key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"][0]["email"], "ana@example.org");
    assert_eq!(list["data"][0]["reason"], "unsubscribe");
    assert_eq!(list["data"][0]["email_id"], sent["id"]);
    let e = app.email(&app.live_key, sent["id"].as_str().unwrap()).await;
    let unsub: Vec<&Value> = e["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["type"] == "unsubscribed")
        .collect();
    assert_eq!(unsub.len(), 1);
    assert_eq!(unsub[0]["recipient"], "ana@example.org");
    // A second POST is harmless.
    let res = app
        .client
        .post(app.url(path))
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);

    // Marketing now skips the address; transactional mail still goes.
    let again = app.send_with(&app.live_key, &body).await;
    assert_eq!(again["status"], "suppressed");
    let receipt = app.send_with(&app.live_key, &mail()).await;
    assert_eq!(receipt["status"], "queued");
    let msgs = smtp.wait_for(2, Duration::from_secs(20)).await;
    assert_eq!(msgs.len(), 2);
    let second = MessageParser::default().parse(&msgs[1].data).unwrap();
    assert_eq!(second.subject(), Some("Hello"));
    assert!(
        second.header_raw("List-Unsubscribe").is_none(),
        "transactional has none"
    );
}

#[tokio::test]
async fn unsubscribe_marks_contacts_in_every_audience() {
    let app = spawn_app().await;
    let a1 = audience_with(
        &app,
        json!([{"email": "Ana@example.org"}, {"email": "bo@example.org"}]),
    )
    .await;
    let a2 = audience_with(&app, json!([{"email": "ana@example.org"}])).await;
    let sent = app
        .send(&json!({"from": "a@acme.test", "audience_id": a1, "subject": "s", "text": "{{ unsubscribe_url }}"}))
        .await;
    let id = sent["id"].as_str().unwrap();
    app.wait_email(&app.test_key, id, Duration::from_secs(20), |e| {
        e["status"] == "delivered"
    })
    .await;
    let rcpts = recipients(&app, &app.test_key, id).await;
    let raw = rcpts[0]["raw"].as_str().unwrap();
    let msg = MessageParser::default().parse(raw.as_bytes()).unwrap();
    let text = msg.body_text(0).unwrap();
    let path = link(&text, "u").expect("unsubscribe_url in the text part");
    let res = app
        .client
        .post(app.url(&path))
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    for aud in [&a1, &a2] {
        let c: Value = app
            .get(
                &format!("/v1/audiences/{aud}/contacts?email=ana@example.org"),
                &app.test_key,
            )
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(c["data"][0]["unsubscribed"], true, "{aud}");
    }
    let again = app
        .send(&json!({"from": "a@acme.test", "audience_id": a1, "subject": "s", "text": "t"}))
        .await;
    assert_eq!(again["recipients"], 1);
}

#[tokio::test]
async fn open_and_click_tracking() {
    let app = spawn_app().await;
    let mut body = mail();
    body["html"] = json!(
        "<html><body><p>Hi</p><a href=\"https://shop.example/p?a=1&amp;b=2\">Shop</a> <a href=\"mailto:help@acme.test\">Help</a> <a href=\"https://bücher.example/straße\">Books</a></body></html>"
    );
    body.as_object_mut().unwrap().remove("text");
    body["track_opens"] = json!(true);
    body["track_clicks"] = json!(true);
    let sent = app.send(&body).await;
    let id = sent["id"].as_str().unwrap();
    app.wait_email(&app.test_key, id, Duration::from_secs(20), |e| {
        e["status"] == "delivered"
    })
    .await;
    let rcpts = recipients(&app, &app.test_key, id).await;
    let msg = MessageParser::default()
        .parse(rcpts[0]["raw"].as_str().unwrap().as_bytes())
        .unwrap();
    let html = msg.body_html(0).unwrap().to_string();
    assert!(html.contains("href=\"mailto:help@acme.test\""), "{html}");
    assert!(
        !html.contains("shop.example"),
        "the link is rewritten: {html}"
    );
    let text = msg.body_text(0).unwrap();
    assert!(
        text.contains("https://shop.example/p?a=1&b=2"),
        "the text keeps the real link: {text}"
    );
    let pixel = link(&html, "t/o").expect("a pixel");
    let click = link(&html, "t/c").expect("a tracked link");

    for _ in 0..2 {
        let res = app.client.get(app.url(&pixel)).send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["content-type"], "image/gif");
        assert!(res.bytes().await.unwrap().starts_with(b"GIF89a"));
    }
    let res = app.client.get(app.url(&click)).send().await.unwrap();
    assert_eq!(res.status(), 302);
    assert_eq!(res.headers()["location"], "https://shop.example/p?a=1&b=2");
    // A link with non-ASCII characters redirects to its normalized form.
    let after = &html[html.find(&click).unwrap() + click.len()..];
    let second = link(after, "t/c").expect("a second tracked link");
    let res = app.client.get(app.url(&second)).send().await.unwrap();
    assert_eq!(res.status(), 302);
    assert_eq!(
        res.headers()["location"],
        "https://xn--bcher-kva.example/stra%C3%9Fe"
    );

    let e = app.email(&app.test_key, id).await;
    let types: Vec<&str> = e["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["queued", "delivered", "opened", "clicked"]);
    let clicked = &e["events"][3];
    assert_eq!(clicked["recipient"], "ana@example.org");
    assert_eq!(clicked["detail"], "https://shop.example/p?a=1&b=2");
    let rcpts = recipients(&app, &app.test_key, id).await;
    assert_eq!(rcpts[0]["opens"], 2);
    assert_eq!(
        rcpts[0]["clicks"], 2,
        "every click counts; the first is the event"
    );
}

#[tokio::test]
async fn forged_and_unknown_tokens_are_404_pages() {
    let app = spawn_app().await;
    let mut body = mail();
    body["type"] = json!("marketing");
    body["html"] = json!("<a href=\"https://shop.example/\">Shop</a>");
    body["track_clicks"] = json!(true);
    let sent = app.send(&body).await;
    let id = sent["id"].as_str().unwrap();
    let rcpts = recipients(&app, &app.test_key, id).await;
    let msg = MessageParser::default()
        .parse(rcpts[0]["raw"].as_str().unwrap().as_bytes())
        .unwrap();
    let click = link(msg.body_html(0).unwrap().as_ref(), "t/c").unwrap();
    let token = click.trim_start_matches("/t/c/");
    let (payload, tag) = token.split_once('.').unwrap();
    // Another URL in the payload, with the old tag: refused (no open redirect).
    use base64::Engine;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut claims: Value = serde_json::from_slice(&engine.decode(payload).unwrap()).unwrap();
    claims["u"] = json!("https://evil.example/");
    let forged = format!("{}.{tag}", engine.encode(claims.to_string()));
    let unsubscribe = msg
        .header_raw("List-Unsubscribe")
        .unwrap()
        .trim()
        .to_string();
    let unsubscribe_token =
        &unsubscribe[unsubscribe.find("/u/").unwrap() + 3..unsubscribe.len() - 1];
    for (method, path) in [
        ("GET", format!("/t/c/{forged}")),
        ("GET", "/t/c/nothing".to_string()),
        ("GET", "/t/o/abc.def".to_string()),
        ("GET", "/u/abc.def".to_string()),
        ("POST", "/u/abc.def".to_string()),
        // A real token on the wrong route.
        ("GET", format!("/t/c/{unsubscribe_token}")),
        ("POST", format!("/u/{token}")),
    ] {
        let req = if method == "GET" {
            app.client.get(app.url(&path))
        } else {
            app.client
                .post(app.url(&path))
                .body("List-Unsubscribe=One-Click")
        };
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 404, "{method} {path}");
        assert!(res.headers().get("location").is_none());
        assert!(
            res.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
    }
    let list: Value = app
        .get("/v1/suppressions", &app.test_key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(list["data"].as_array().unwrap().len(), 0);
    // The genuine token still works.
    let res = app.client.get(app.url(&click)).send().await.unwrap();
    assert_eq!(res.status(), 302);
    assert_eq!(res.headers()["location"], "https://shop.example/");
}

#[tokio::test]
async fn audience_send_resumes_after_a_restart_without_duplicates() {
    let app = spawn_app().await;
    let contacts: Vec<Value> = (0..3_500)
        .map(|i| json!({"email": format!("r{i}@example.org")}))
        .collect();
    let aud = audience_with(&app, json!(contacts)).await;
    let sent = app
        .send(
            &json!({"from": "a@acme.test", "audience_id": aud, "subject": "s", "text": "t",
                      "scheduled_at": "2099-01-01T00:00:00Z"}),
        )
        .await;
    assert_eq!(sent["recipients"], 3500);
    let app = app.restart().await;
    let id = sent["id"].as_str().unwrap();
    let e = app
        .wait_email(&app.test_key, id, Duration::from_secs(30), |e| {
            e["recipient_counts"]["scheduled"].as_u64().unwrap_or(0) >= 3500
        })
        .await;
    assert_eq!(e["status"], "scheduled");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let e = app.email(&app.test_key, id).await;
    assert_eq!(
        e["recipient_counts"],
        json!({"scheduled": 3500}),
        "each contact once"
    );
}
