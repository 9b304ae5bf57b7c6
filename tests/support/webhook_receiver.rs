//! A real HTTP server in the test process that receives webhook calls: it records each call
//! (path, headers, body, time) and answers what the test programmed per path (status,
//! delay, headers), by default `200`.
#![allow(dead_code)]

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};

/// One answer to give.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub delay: Duration,
    pub headers: Vec<(String, String)>,
}

impl Reply {
    pub fn status(status: u16) -> Reply {
        Reply {
            status,
            delay: Duration::ZERO,
            headers: Vec::new(),
        }
    }

    pub fn delay(mut self, delay: Duration) -> Reply {
        self.delay = delay;
        self
    }

    pub fn header(mut self, name: &str, value: &str) -> Reply {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// One recorded call.
#[derive(Clone, Debug)]
pub struct Call {
    pub path: String,
    /// As `http` 1 headers (what Standard Webhooks verifiers take).
    pub headers: reqwest::header::HeaderMap,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Call {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the webhook body is JSON")
    }

    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

#[derive(Default)]
struct Shared {
    calls: Mutex<Vec<Call>>,
    /// Programmed answers per path, used in order; then the default.
    script: Mutex<HashMap<String, VecDeque<Reply>>>,
    defaults: Mutex<HashMap<String, Reply>>,
}

pub struct WebhookReceiver {
    pub port: u16,
    shared: Arc<Shared>,
    handle: ServerHandle,
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        let handle = self.handle.clone();
        tokio::spawn(async move { handle.stop(false).await });
    }
}

async fn receive(req: HttpRequest, body: web::Bytes, shared: web::Data<Shared>) -> HttpResponse {
    let path = req.path().to_string();
    let mut headers = reqwest::header::HeaderMap::new();
    for (name, value) in req.headers() {
        if let (Ok(n), Ok(v)) = (
            reqwest::header::HeaderName::from_bytes(name.as_str().as_bytes()),
            reqwest::header::HeaderValue::from_bytes(value.as_bytes()),
        ) {
            headers.append(n, v);
        }
    }
    let reply = {
        let mut script = shared.script.lock().unwrap();
        script.get_mut(&path).and_then(VecDeque::pop_front)
    }
    .or_else(|| shared.defaults.lock().unwrap().get(&path).cloned())
    .unwrap_or_else(|| Reply::status(200));
    shared.calls.lock().unwrap().push(Call {
        path,
        headers,
        body: body.to_vec(),
        at: Instant::now(),
    });
    if !reply.delay.is_zero() {
        tokio::time::sleep(reply.delay).await;
    }
    let mut res = HttpResponse::build(
        actix_web::http::StatusCode::from_u16(reply.status).expect("a valid status"),
    );
    for (n, v) in &reply.headers {
        res.insert_header((n.as_str(), v.as_str()));
    }
    res.body("ok")
}

impl WebhookReceiver {
    /// Starts on a free port of 127.0.0.1.
    pub async fn start() -> WebhookReceiver {
        let shared = web::Data::new(Shared::default());
        let data = shared.clone();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .default_service(web::to(receive))
        })
        .workers(2)
        .disable_signals()
        .listen(listener)
        .unwrap()
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        WebhookReceiver {
            port,
            shared: shared.into_inner(),
            handle,
        }
    }

    /// `http://127.0.0.1:<port><path>`
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Queues answers for `path`, used one per call in order.
    pub fn script(&self, path: &str, replies: impl IntoIterator<Item = Reply>) {
        self.shared
            .script
            .lock()
            .unwrap()
            .entry(path.to_string())
            .or_default()
            .extend(replies);
    }

    /// The answer for `path` once its script is used up.
    pub fn set_default(&self, path: &str, reply: Reply) {
        self.shared
            .defaults
            .lock()
            .unwrap()
            .insert(path.to_string(), reply);
    }

    /// The calls to `path` so far.
    pub fn calls(&self, path: &str) -> Vec<Call> {
        self.shared
            .calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| c.path == path)
            .cloned()
            .collect()
    }

    /// Waits until `path` got at least `n` calls (panics after `timeout`).
    pub async fn wait_calls(&self, path: &str, n: usize, timeout: Duration) -> Vec<Call> {
        let deadline = Instant::now() + timeout;
        loop {
            let calls = self.calls(path);
            if calls.len() >= n {
                return calls;
            }
            if Instant::now() > deadline {
                panic!(
                    "{path} got {} webhook calls in {timeout:?}, expected {n}: {:?}",
                    calls.len(),
                    calls.iter().map(|c| c.json()).collect::<Vec<_>>()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
