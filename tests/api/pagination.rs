//! Cursor pagination of `GET /v1/emails`: newest first, no gap and no duplicate, also while
//! other clients insert.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::helpers::{TestApp, mail, spawn_app};

/// Walks every page with `limit`; returns the ids in the order seen and the page count.
async fn walk(app: &TestApp, limit: usize, pause: Duration) -> (Vec<String>, usize) {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    let mut pages = 0;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/emails?limit={limit}&cursor={c}"),
            None => format!("/v1/emails?limit={limit}"),
        };
        let res = app.get(&path, &app.test_key).await;
        assert_eq!(res.status(), 200);
        let page: Value = res.json().await.unwrap();
        pages += 1;
        let data = page["data"].as_array().unwrap();
        assert!(data.len() <= limit);
        ids.extend(data.iter().map(|e| e["id"].as_str().unwrap().to_string()));
        match (
            page["has_more"].as_bool().unwrap(),
            page["next_cursor"].as_str(),
        ) {
            (true, Some(c)) => {
                assert_eq!(data.len(), limit, "a page before the last is full");
                cursor = Some(c.to_string());
            }
            (false, None) => return (ids, pages),
            other => panic!("has_more and next_cursor disagree: {other:?}"),
        }
        tokio::time::sleep(pause).await;
    }
}

async fn make(app: &TestApp, n: usize) -> Vec<String> {
    let items: Vec<Value> = (0..n)
        .map(|i| {
            let mut m = mail();
            m["subject"] = json!(format!("Email {i}"));
            m
        })
        .collect();
    let res = app
        .post("/v1/emails/batch", &app.test_key, &json!(items))
        .await;
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn pages_cover_every_email_once_newest_first() {
    let app = spawn_app().await;
    let mut created = make(&app, 30).await;
    for _ in 0..17 {
        created.push(app.send(&mail()).await["id"].as_str().unwrap().to_string());
    }
    for limit in [1, 10, 20, 47, 100] {
        let (seen, pages) = walk(&app, limit, Duration::ZERO).await;
        let expected: Vec<String> = created.iter().rev().cloned().collect();
        assert_eq!(seen, expected, "limit {limit}");
        assert_eq!(pages, 47usize.div_ceil(limit), "limit {limit}");
    }
    // The default page is 20.
    let page: Value = app
        .get("/v1/emails", &app.test_key)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(page["data"].as_array().unwrap().len(), 20);
    assert_eq!(page["has_more"], true);
}

#[tokio::test]
async fn no_gap_or_duplicate_while_others_insert() {
    let app = Arc::new(spawn_app().await);
    let before: Vec<String> = make(&app, 48).await;
    let writer = {
        let app = app.clone();
        tokio::spawn(async move {
            let mut made = Vec::new();
            for i in 0..40 {
                let mut m = mail();
                m["subject"] = json!(format!("Concurrent {i}"));
                made.push(app.send(&m).await["id"].as_str().unwrap().to_string());
                if i % 5 == 0 {
                    made.extend(make(&app, 3).await);
                }
            }
            made
        })
    };
    let (seen, _) = walk(&app, 7, Duration::from_millis(15)).await;
    let made = writer.await.unwrap();
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(unique.len(), seen.len(), "a page repeated an email");
    assert!(seen.windows(2).all(|w| w[0] > w[1]), "not newest first");
    // Every email that existed when the walk began is there exactly once; the walk may also
    // show some made during it (on the first page), never one twice.
    for id in &before {
        assert!(unique.contains(id), "{id} was skipped");
    }
    let known: HashSet<&String> = before.iter().chain(made.iter()).collect();
    assert!(seen.iter().all(|id| known.contains(id)));
    // Afterwards, a fresh walk sees everything.
    let (all, _) = walk(&app, 100, Duration::ZERO).await;
    assert_eq!(all.len(), before.len() + made.len());
}
