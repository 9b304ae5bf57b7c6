//! End to end in headless Chromium (Debian's `chromium` driven through `chromedriver`, both
//! installed by `scripts/test`): sign in, create an API key and see it once, send through the
//! API with it, and find the email in the test inbox.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use crate::helpers::spawn_app;

const EMAIL: &str = "browser@example.org";
const PASSWORD: &str = "a long browser password";

/// A chromedriver process, killed on drop.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn start_driver() -> Driver {
    let exe = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .expect("chromedriver is not installed: run scripts/test, which installs chromium and chromium-driver");
    let port = free_port();
    let child = Command::new(exe)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver = Driver { child, port };
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return driver;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("chromedriver did not listen on port {port}");
}

async fn browser(driver: &Driver) -> Client {
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-quic", "--no-first-run", "--disable-background-networking",
                     "--disable-component-update", "--disable-sync", "--window-size=1280,900"]
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(caps)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a Chromium session")
}

async fn body_text(c: &Client) -> String {
    c.find(Locator::Css("body"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_in_create_a_key_send_and_find_it_in_the_inbox() {
    let app = spawn_app().await;
    app.create_admin(EMAIL, PASSWORD).await;
    let driver = start_driver().await;
    let c = browser(&driver).await;

    c.goto(&app.url("/dashboard/")).await.unwrap();
    assert!(
        c.current_url()
            .await
            .unwrap()
            .path()
            .ends_with("/dashboard/login"),
        "signed-out visitors are sent to sign in"
    );
    c.find(Locator::Css("input[name=email]"))
        .await
        .unwrap()
        .send_keys(EMAIL)
        .await
        .unwrap();
    c.find(Locator::Css("input[name=password]"))
        .await
        .unwrap()
        .send_keys(PASSWORD)
        .await
        .unwrap();
    c.find(Locator::Css("form button[type=submit]"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .for_element(Locator::Css("svg.chart"))
        .await
        .unwrap();

    c.find(Locator::LinkText("Settings → API Keys"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .for_element(Locator::Css("input[name=name]"))
        .await
        .unwrap();
    c.find(Locator::Css("input[name=name]"))
        .await
        .unwrap()
        .send_keys("browser key")
        .await
        .unwrap();
    c.find(Locator::XPath("//button[text()='Create key']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let key = c
        .wait()
        .for_element(Locator::Id("new-key"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(key.starts_with("mf_test_sk_"), "{key}");
    c.refresh().await.unwrap();
    assert!(
        !body_text(&c).await.contains(&key),
        "the key is shown only once"
    );

    let sent = app
        .send_with(
            &key,
            &json!({"from": "Shop <shop@acme.test>", "to": "buyer@example.org",
                                 "subject": "Browser receipt 42", "html": "<p>Thanks!</p>"}),
        )
        .await;
    let id = sent["id"].as_str().unwrap().to_string();
    app.wait_email(&key, &id, Duration::from_secs(10), |e| {
        e["status"] == "delivered"
    })
    .await;

    c.find(Locator::LinkText("Test inbox"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .for_element(Locator::LinkText("Browser receipt 42"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .for_element(Locator::Css("iframe.preview"))
        .await
        .unwrap();
    let text = body_text(&c).await;
    assert!(text.contains(&id) && text.contains("delivered"), "{text}");

    // A domain's records, ready to copy.
    let res = app
        .post("/v1/domains", &key, &json!({"name": "browser-shop.test"}))
        .await;
    assert_eq!(res.status(), 201);
    c.find(Locator::LinkText("Domains"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .for_element(Locator::LinkText("browser-shop.test"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    c.wait()
        .for_element(Locator::Css("table.records"))
        .await
        .unwrap();
    let text = body_text(&c).await;
    assert!(
        text.contains("mf._domainkey.browser-shop.test") && text.contains("v=DKIM1"),
        "{text}"
    );
    assert!(
        c.find_all(Locator::Css("table.records button.copy"))
            .await
            .unwrap()
            .len()
            >= 8
    );
    c.close().await.unwrap();
}
