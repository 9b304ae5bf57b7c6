//! `GET /v1/emails/:id?include=content`: the html, the text and the raw MIME as it is sent,
//! checked by parsing it with mail-parser.

use base64::Engine;
use mail_parser::{Message, MessageParser, MimeHeaders};
use serde_json::{Value, json};

use crate::helpers::{TestApp, mail, spawn_app};

async fn content(app: &TestApp, body: &Value) -> (Value, Vec<u8>) {
    let sent = app.send(body).await;
    let id = sent["id"].as_str().unwrap();
    let res = app
        .get(&format!("/v1/emails/{id}?include=content"), &app.test_key)
        .await;
    assert_eq!(res.status(), 200);
    let e: Value = res.json().await.unwrap();
    let raw = e["raw"]
        .as_str()
        .expect("raw is a string")
        .as_bytes()
        .to_vec();
    (e, raw)
}

fn parse(raw: &[u8]) -> Message<'_> {
    MessageParser::default()
        .parse(raw)
        .expect("raw is a MIME message")
}

/// The (type/subtype, decoded text) of every leaf text part.
fn text_parts(m: &Message<'_>) -> Vec<(String, String)> {
    m.parts
        .iter()
        .filter(|p| p.is_text())
        .map(|p| {
            let ct = p.content_type().unwrap();
            (
                format!("{}/{}", ct.ctype(), ct.subtype().unwrap_or("")),
                p.text_contents().unwrap_or("").to_string(),
            )
        })
        .collect()
}

#[tokio::test]
async fn html_and_text_make_multipart_alternative() {
    let app = spawn_app().await;
    let (e, raw) = content(&app, &mail()).await;
    assert_eq!(e["html"], "<p>Hi there</p>");
    assert_eq!(e["text"], "Hi there");
    let m = parse(&raw);
    let root = m.root_part().content_type().unwrap();
    assert_eq!(root.ctype(), "multipart");
    assert_eq!(root.subtype(), Some("alternative"));
    let parts = text_parts(&m);
    assert_eq!(parts.len(), 2, "{parts:?}");
    assert!(
        parts
            .iter()
            .any(|(ct, t)| ct == "text/plain" && t.trim() == "Hi there")
    );
    assert!(
        parts
            .iter()
            .any(|(ct, t)| ct == "text/html" && t.contains("<p>Hi there</p>"))
    );
    assert_eq!(m.subject(), Some("Hello"));
    let from = m.from().unwrap().first().unwrap();
    assert_eq!(from.name(), Some("Acme"));
    assert_eq!(from.address(), Some("hello@acme.test"));
    assert_eq!(
        m.to().unwrap().first().unwrap().address(),
        Some("ana@example.org")
    );
    // Message-ID: <msg_...@sender's domain>, the same the API shows.
    let id = e["id"].as_str().unwrap();
    assert_eq!(m.message_id(), Some(format!("{id}@acme.test").as_str()));
    assert_eq!(e["message_id"], format!("<{id}@acme.test>"));
    // Date: when the email was accepted.
    let date = m.date().expect("a Date header").to_timestamp();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    assert!((now - date).abs() < 60, "Date {date} is not now ({now})");
    // CRLF line endings throughout, as SMTP wants.
    let text = String::from_utf8_lossy(&raw);
    assert!(!text.replace("\r\n", "").contains('\n'));
}

#[tokio::test]
async fn text_is_derived_from_html_when_missing() {
    let app = spawn_app().await;
    let mut body = mail();
    body.as_object_mut().unwrap().remove("text");
    body["html"] = json!(
        "<h1>Receipt</h1><p>Thanks, Ana. <a href=\"https://shop.example/r/42\">See your order</a></p>"
    );
    let (e, raw) = content(&app, &body).await;
    assert_eq!(e["text"], Value::Null, "the API shows what the client sent");
    let m = parse(&raw);
    assert_eq!(
        m.root_part().content_type().unwrap().subtype(),
        Some("alternative")
    );
    let parts = text_parts(&m);
    let plain = parts
        .iter()
        .find(|(ct, _)| ct == "text/plain")
        .map(|(_, t)| t.clone())
        .expect("a derived text/plain part");
    assert!(plain.contains("Receipt"), "{plain}");
    assert!(plain.contains("See your order"), "{plain}");
    assert!(
        plain.contains("https://shop.example/r/42"),
        "links are kept: {plain}"
    );
    assert!(!plain.contains("<a"), "{plain}");
    // Text only: a single text/plain part.
    let mut body = mail();
    body.as_object_mut().unwrap().remove("html");
    let (_, raw) = content(&app, &body).await;
    let m = parse(&raw);
    let root = m.root_part().content_type().unwrap();
    assert_eq!((root.ctype(), root.subtype()), ("text", Some("plain")));
}

#[tokio::test]
async fn attachments_inline_parts_and_custom_headers() {
    let app = spawn_app().await;
    let b64 = base64::engine::general_purpose::STANDARD;
    let pdf = b"%PDF-1.4 a tiny receipt".to_vec();
    let png: Vec<u8> = (0u8..=255).collect();
    let mut body = mail();
    body["html"] = json!("<p>Logo: <img src=\"cid:logo\"></p>");
    body["headers"] = json!({"X-Entity-Ref-ID": "123", "List-Id": "<news.acme.test>"});
    body["reply_to"] = json!(["Help <help@acme.test>"]);
    body["cc"] = json!("Cy <cy@example.org>");
    body["bcc"] = json!("hidden@example.org");
    body["attachments"] = json!([
        {"filename": "receipt.pdf", "content": b64.encode(&pdf), "content_type": "application/pdf"},
        {"filename": "logo.png", "content": b64.encode(&png), "content_id": "logo"},
        {"filename": "notes.txt", "content": b64.encode(b"plain notes")}
    ]);
    let (e, raw) = content(&app, &body).await;
    let m = parse(&raw);
    assert_eq!(m.root_part().content_type().unwrap().ctype(), "multipart");
    assert_eq!(m.header_raw("X-Entity-Ref-ID").map(str::trim), Some("123"));
    assert_eq!(
        m.header_raw("List-Id").map(str::trim),
        Some("<news.acme.test>")
    );
    assert_eq!(
        m.reply_to().unwrap().first().unwrap().address(),
        Some("help@acme.test")
    );
    assert_eq!(
        m.cc().unwrap().first().unwrap().address(),
        Some("cy@example.org")
    );
    // Bcc recipients get the mail but never appear in it.
    assert!(m.bcc().is_none());
    assert!(!String::from_utf8_lossy(&raw).contains("hidden@example.org"));
    assert_eq!(e["bcc"], json!(["hidden@example.org"]));
    assert_eq!(e["recipients"].as_array().unwrap().len(), 3);

    let by_name = |name: &str| {
        m.attachments()
            .find(|a| a.attachment_name() == Some(name))
            .unwrap_or_else(|| panic!("no attachment {name}"))
    };
    let receipt = by_name("receipt.pdf");
    assert_eq!(receipt.contents(), pdf.as_slice());
    assert_eq!(receipt.content_type().unwrap().subtype(), Some("pdf"));
    let logo = by_name("logo.png");
    assert_eq!(logo.contents(), png.as_slice());
    assert_eq!(logo.content_id(), Some("logo"));
    assert_eq!(logo.content_type().unwrap().ctype(), "image");
    assert_eq!(
        logo.content_disposition().map(|d| d.ctype()),
        Some("inline")
    );
    let notes = by_name("notes.txt");
    assert_eq!(notes.contents(), b"plain notes");
    assert_eq!(
        receipt.content_disposition().map(|d| d.ctype()),
        Some("attachment")
    );
    assert!(m.body_html(0).unwrap().contains("cid:logo"));
}

#[tokio::test]
async fn unicode_subjects_and_names_are_encoded() {
    let app = spawn_app().await;
    let mut body = mail();
    body["subject"] = json!("Grüße, 日本 ✉");
    body["from"] = json!("\"Zoë, Acme\" <hello@acme.test>");
    body["to"] = json!("José <jose@bücher.example>");
    let (e, raw) = content(&app, &body).await;
    // Headers are 7-bit on the wire (RFC 2047 words), and decode back.
    let head = String::from_utf8_lossy(&raw);
    let head = head.split("\r\n\r\n").next().unwrap();
    assert!(head.is_ascii(), "{head}");
    let m = parse(&raw);
    assert_eq!(m.subject(), Some("Grüße, 日本 ✉"));
    assert_eq!(m.from().unwrap().first().unwrap().name(), Some("Zoë, Acme"));
    let to = m.to().unwrap().first().unwrap();
    assert_eq!(to.name(), Some("José"));
    assert_eq!(e["subject"], "Grüße, 日本 ✉");
}
