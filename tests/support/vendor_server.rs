//! A local HTTP server standing in for a vendor's REST API (Lob, EasyPost) in contract tests:
//! it records every request (method, path, headers, body) and answers with what the test's
//! responder returns, which follows the vendor's documented response shapes.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use actix_web::dev::ServerHandle;
use actix_web::web::{self, Bytes};
use actix_web::{App, HttpRequest, HttpResponse, HttpServer};
use serde_json::Value;

/// One request the fake vendor received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
}

impl Recorded {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }
}

/// Answers a request: an HTTP status and a JSON body.
pub type Responder = Arc<dyn Fn(&Recorded) -> (u16, Value) + Send + Sync>;

pub struct FakeVendor {
    pub url: String,
    requests: Arc<Mutex<Vec<Recorded>>>,
    handle: ServerHandle,
}

struct Shared {
    requests: Arc<Mutex<Vec<Recorded>>>,
    responder: Responder,
}

async fn answer(shared: web::Data<Shared>, req: HttpRequest, body: Bytes) -> HttpResponse {
    let recorded = Recorded {
        method: req.method().to_string(),
        path: req.path().to_string(),
        headers: req
            .headers()
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_ascii_lowercase(),
                    v.to_str().unwrap_or("").to_string(),
                )
            })
            .collect(),
        body: body.to_vec(),
    };
    let (status, json) = (shared.responder)(&recorded);
    shared.requests.lock().unwrap().push(recorded);
    HttpResponse::build(actix_web::http::StatusCode::from_u16(status).unwrap())
        .content_type("application/json")
        .body(json.to_string())
}

impl FakeVendor {
    pub async fn start(
        responder: impl Fn(&Recorded) -> (u16, Value) + Send + Sync + 'static,
    ) -> FakeVendor {
        let requests = Arc::new(Mutex::new(Vec::new()));
        let shared = web::Data::new(Shared {
            requests: requests.clone(),
            responder: Arc::new(responder),
        });
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(shared.clone())
                .app_data(web::PayloadConfig::new(50 * 1024 * 1024))
                .default_service(web::to(answer))
        })
        .listen(listener)
        .unwrap()
        .workers(1)
        .disable_signals()
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        FakeVendor {
            url: format!("http://127.0.0.1:{port}"),
            requests,
            handle,
        }
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }

    /// The requests with this method whose path starts with `prefix`.
    pub fn matching(&self, method: &str, prefix: &str) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == method && r.path.starts_with(prefix))
            .collect()
    }

    pub async fn stop(&self) {
        self.handle.stop(false).await;
    }
}
