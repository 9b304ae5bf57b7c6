//! Spawning the app for a test (zero2prod's `spawn_app`): a temp directory with the
//! database, `server.listen` on port 0, keys made like `mailsflux keys create` does.

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use actix_web::dev::ServerHandle;
use mailsflux::config::{DeliveryMode, RelayTls};
use mailsflux::keys::{self, Mode, Permission};
use mailsflux::store::Db;
use mailsflux::{Application, Config};
use serde_json::Value;
use tempfile::TempDir;
use tokio::task::JoinHandle;

pub struct TestApp {
    pub address: String,
    pub port: u16,
    pub dir: std::sync::Arc<TempDir>,
    pub config: Config,
    pub client: reqwest::Client,
    pub test_key: String,
    pub live_key: String,
    pub send_key: String,
    handle: ServerHandle,
    join: Option<JoinHandle<std::io::Result<()>>>,
}

/// A config for tests: a temp database, a free port, relay mode to a closed port (a test
/// that delivers points it at its own SMTP server), a short retry schedule.
pub fn test_config(dir: &TempDir) -> Config {
    let mut c = Config::default();
    c.server.listen = "127.0.0.1:0".parse().unwrap();
    c.database.path = dir.path().join("mailsflux.db");
    c.delivery.mode = DeliveryMode::Relay;
    c.delivery.relay.host = "127.0.0.1".into();
    c.delivery.relay.port = 9;
    c.delivery.relay.tls = RelayTls::None;
    c.delivery.require_verified_domain = false;
    c.delivery.retry_schedule = ["1s", "1s", "2s"]
        .iter()
        .map(|s| mailsflux::config::DurationSetting::parse(s).unwrap())
        .collect();
    c.webhooks.allow_private_targets = true;
    c
}

fn make_keys(path: PathBuf) -> (String, String, String) {
    let config = mailsflux::config::DatabaseConfig {
        path,
        ..Default::default()
    };
    let db = Db::open(&config).expect("open the test database");
    let keys = db
        .write_blocking(|c| -> Result<_, mailsflux::store::StoreError> {
            let (_, test) = keys::create(c, "test", Mode::Test, Permission::FullAccess)?;
            let (_, live) = keys::create(c, "live", Mode::Live, Permission::FullAccess)?;
            let (_, send) = keys::create(c, "send", Mode::Test, Permission::SendingAccess)?;
            Ok((test, live, send))
        })
        .expect("create keys");
    db.close();
    keys
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(adjust: impl FnOnce(&mut Config)) -> TestApp {
    let dir = std::sync::Arc::new(TempDir::new().expect("temp dir"));
    let mut config = test_config(&dir);
    adjust(&mut config);
    let path = config.database.path.clone();
    let (test_key, live_key, send_key) = tokio::task::spawn_blocking(move || make_keys(path))
        .await
        .unwrap();
    start(dir, config, test_key, live_key, send_key).await
}

async fn start(
    dir: std::sync::Arc<TempDir>,
    config: Config,
    test_key: String,
    live_key: String,
    send_key: String,
) -> TestApp {
    let app = Application::build(config.clone())
        .await
        .expect("the app starts");
    let port = app.port();
    let handle = app.server_handle();
    let join = tokio::spawn(app.run_until_stopped());
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        port,
        dir,
        config,
        client: reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap(),
        test_key,
        live_key,
        send_key,
        handle,
        join: Some(join),
    }
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    /// A request with `key` as the bearer token (None: no Authorization header).
    pub fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        key: Option<&str>,
    ) -> reqwest::RequestBuilder {
        let mut rb = self.client.request(method, self.url(path));
        if let Some(key) = key {
            rb = rb.bearer_auth(key);
        }
        rb
    }

    pub async fn post(&self, path: &str, key: &str, body: &Value) -> reqwest::Response {
        self.request(reqwest::Method::POST, path, Some(key))
            .json(body)
            .send()
            .await
            .expect("request sent")
    }

    pub async fn get(&self, path: &str, key: &str) -> reqwest::Response {
        self.request(reqwest::Method::GET, path, Some(key))
            .send()
            .await
            .expect("request sent")
    }

    pub async fn delete(&self, path: &str, key: &str) -> reqwest::Response {
        self.request(reqwest::Method::DELETE, path, Some(key))
            .send()
            .await
            .expect("request sent")
    }

    /// Sends with the test key and returns the answer's JSON (asserting 200).
    pub async fn send(&self, body: &Value) -> Value {
        self.send_with(&self.test_key, body).await
    }

    pub async fn send_with(&self, key: &str, body: &Value) -> Value {
        let res = self.post("/v1/emails/send", key, body).await;
        let status = res.status();
        let text = res.text().await.unwrap();
        assert_eq!(status, 200, "send failed: {text}");
        serde_json::from_str(&text).unwrap()
    }

    pub async fn email(&self, key: &str, id: &str) -> Value {
        let res = self.get(&format!("/v1/emails/{id}"), key).await;
        assert_eq!(res.status(), 200);
        res.json().await.unwrap()
    }

    /// Polls the email until `done` holds (or panics after `timeout`).
    pub async fn wait_email(
        &self,
        key: &str,
        id: &str,
        timeout: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let e = self.email(key, id).await;
            if done(&e) {
                return e;
            }
            if tokio::time::Instant::now() > deadline {
                panic!("email {id} did not reach the expected state in {timeout:?}: {e}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the server gracefully (like SIGTERM) and waits for its workers.
    pub async fn stop(&mut self) {
        self.handle.stop(true).await;
        if let Some(join) = self.join.take() {
            join.await.unwrap().unwrap();
        }
    }

    /// Stops, then starts again on the same database (and new port), with `adjust` applied.
    pub async fn restart_with(mut self, adjust: impl FnOnce(&mut Config)) -> TestApp {
        self.stop().await;
        let mut config = self.config.clone();
        adjust(&mut config);
        start(
            self.dir.clone(),
            config,
            self.test_key.clone(),
            self.live_key.clone(),
            self.send_key.clone(),
        )
        .await
    }

    /// Makes a dashboard administrator, like `mailsflux admin create`.
    pub async fn create_admin(&self, email: &'static str, password: &'static str) {
        let config = self.config.database.clone();
        tokio::task::spawn_blocking(move || {
            let db = Db::open(&config).unwrap();
            let hash = mailsflux::dashboard::session::hash_password(password).unwrap();
            db.write_blocking(move |c| {
                mailsflux::dashboard::session::create_admin(c, email, &hash)
            })
            .unwrap();
            db.close();
        })
        .await
        .unwrap();
    }

    pub async fn restart(self) -> TestApp {
        self.restart_with(|_| {}).await
    }
}

/// Asserts the error envelope of API.md and returns its `error` object.
pub async fn assert_error(res: reqwest::Response, status: u16, code: &str) -> Value {
    let got = res.status().as_u16();
    let ct = res
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let text = res.text().await.unwrap();
    assert_eq!(got, status, "expected HTTP {status}, got {got}: {text}");
    assert!(
        ct.starts_with("application/json"),
        "error is not JSON ({ct}): {text}"
    );
    let body: Value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    let err = body["error"].clone();
    assert_eq!(err["code"], code, "{text}");
    assert_eq!(err["status"], status, "{text}");
    let message = err["message"].as_str().expect("message is a string");
    assert!(message.len() >= 8, "message too short: {text}");
    for member in err.as_object().unwrap().keys() {
        assert!(
            ["code", "message", "status", "field", "details"].contains(&member.as_str()),
            "unexpected member {member} in {text}"
        );
    }
    err
}

/// A minimal valid send body.
pub fn mail() -> Value {
    serde_json::json!({
        "from": "Acme <hello@acme.test>",
        "to": "ana@example.org",
        "subject": "Hello",
        "text": "Hi there",
        "html": "<p>Hi there</p>"
    })
}
