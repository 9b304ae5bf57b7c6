//! Per-key rate limits and key revocation.

use std::time::{Duration, Instant};

use mailsflux::keys::{self, Mode, Permission};
use serde_json::json;

use crate::helpers::{assert_error, mail, spawn_app, spawn_app_with};

fn header(res: &reqwest::Response, name: &str) -> u64 {
    res.headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header (status {})", res.status()))
        .to_str()
        .unwrap()
        .parse()
        .unwrap_or_else(|_| panic!("{name} is not an integer"))
}

#[tokio::test]
async fn rate_limit_headers_and_429() {
    let app = spawn_app_with(|c| c.limits.requests_per_second = 3).await;
    let key = app.test_key.clone();
    // Every authenticated answer carries the headers, errors included.
    let ok = app.get("/v1/emails", &key).await;
    assert_eq!(ok.status(), 200);
    assert_eq!(header(&ok, "ratelimit-limit"), 3);
    assert_eq!(header(&ok, "ratelimit-remaining"), 2);
    header(&ok, "ratelimit-reset");
    let not_found = app
        .get("/v1/emails/msg_01JNPXR4KQ8S2V3WZ6B7C9D0EF", &key)
        .await;
    assert_eq!(header(&not_found, "ratelimit-limit"), 3);
    assert_eq!(header(&not_found, "ratelimit-remaining"), 1);
    assert_error(not_found, 404, "not_found").await;
    let mut bad = mail();
    bad["to"] = json!("nope");
    let invalid = app.post("/v1/emails/send", &key, &bad).await;
    assert_eq!(header(&invalid, "ratelimit-remaining"), 0);
    assert_error(invalid, 422, "invalid_recipient").await;
    let limited = app.get("/v1/emails", &key).await;
    let retry_after = header(&limited, "retry-after");
    assert!((1..=2).contains(&retry_after), "Retry-After {retry_after}");
    assert_eq!(header(&limited, "ratelimit-limit"), 3);
    assert_eq!(header(&limited, "ratelimit-remaining"), 0);
    assert!(header(&limited, "ratelimit-reset") >= 1);
    let err = assert_error(limited, 429, "rate_limit_exceeded").await;
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("3 requests per second")
    );
    // The limit is per key: another key is not affected.
    let other = app.get("/v1/emails", &app.live_key).await;
    assert_eq!(other.status(), 200);
    assert_eq!(header(&other, "ratelimit-remaining"), 2);
    // After the wait the key works again.
    tokio::time::sleep(Duration::from_secs(retry_after)).await;
    let again = app.get("/v1/emails", &key).await;
    assert_eq!(again.status(), 200);
    // Public routes are not limited and carry no headers.
    for _ in 0..5 {
        let res = app.client.get(app.url("/healthz")).send().await.unwrap();
        assert_eq!(res.status(), 200);
        assert!(res.headers().get("ratelimit-limit").is_none());
    }
}

#[tokio::test]
async fn without_a_limit_there_are_no_headers() {
    let app = spawn_app().await;
    for _ in 0..30 {
        let res = app.get("/v1/emails", &app.test_key).await;
        assert_eq!(res.status(), 200);
        assert!(res.headers().get("ratelimit-limit").is_none());
    }
}

#[tokio::test]
async fn a_revoked_key_stops_working_within_5_seconds() {
    let app = spawn_app().await;
    let path = app.config.database.path.clone();
    let (id, token) = tokio::task::spawn_blocking({
        let path = path.clone();
        move || {
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.busy_timeout(Duration::from_secs(10)).unwrap();
            let (key, token) =
                keys::create(&conn, "short-lived", Mode::Test, Permission::FullAccess).unwrap();
            (key.id, token)
        }
    })
    .await
    .unwrap();
    // Used once, so it is in the server's key cache when it is revoked.
    assert_eq!(app.get("/v1/emails", &token).await.status(), 200);
    tokio::task::spawn_blocking(move || {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.busy_timeout(Duration::from_secs(10)).unwrap();
        assert!(keys::revoke(&conn, &id).unwrap());
    })
    .await
    .unwrap();
    let revoked_at = Instant::now();
    loop {
        let res = app.get("/v1/emails", &token).await;
        if res.status() == 401 {
            assert_error(res, 401, "invalid_api_key").await;
            break;
        }
        assert_eq!(res.status(), 200);
        assert!(
            revoked_at.elapsed() < Duration::from_secs(5),
            "the revoked key still works after 5 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(revoked_at.elapsed() <= Duration::from_secs(5));
    // Other keys are unaffected.
    assert_eq!(app.get("/v1/emails", &app.test_key).await.status(), 200);
}
