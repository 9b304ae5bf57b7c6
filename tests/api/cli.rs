//! The command line, run as the real binary: `--version`, `--help`, `keys`, `serve` (first
//! start, bad settings, one server per database, SIGTERM).

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tempfile::TempDir;

const BIN: &str = env!("CARGO_BIN_EXE_mailsflux");

/// The binary with a clean `MAILSFLUX_*` environment, run in `dir` (so no stray
/// `mailsflux.toml` is read) on the database `dir/mailsflux.db`.
fn mailsflux(dir: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    for (name, _) in std::env::vars() {
        if name.starts_with("MAILSFLUX_") || name == "RUST_LOG" {
            cmd.env_remove(name);
        }
    }
    cmd.current_dir(dir)
        .env("MAILSFLUX_DATABASE__PATH", dir.join("mailsflux.db"))
        .env("NO_COLOR", "1");
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.stdin(Stdio::null()).output().expect("run mailsflux")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// An HTTP client for the server under test. reqwest is built without a TLS crypto
/// provider (the app installs ring when it starts): these tests start no app in this
/// process, so run alone they must install it themselves.
fn http_client() -> reqwest::blocking::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::blocking::Client::new()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_exit(child: &mut Child, timeout: Duration) -> Option<i32> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("mailsflux did not exit within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A running `serve` whose output is collected in the background.
struct Server {
    child: Child,
    stdout: Arc<Mutex<String>>,
    stderr: Arc<Mutex<String>>,
    port: u16,
}

impl Server {
    fn start(dir: &Path) -> Server {
        let port = free_port();
        let mut child = mailsflux(dir)
            .arg("serve")
            // As a service manager starts it: the log must be plain without being asked.
            .env_remove("NO_COLOR")
            .env("MAILSFLUX_SERVER__LISTEN", format!("127.0.0.1:{port}"))
            // Not a setting (no double underscore): must not stop the start.
            .env("MAILSFLUX_ADMIN_PASSWORD", "not-a-setting")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start serve");
        let stdout = Arc::new(Mutex::new(String::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        for (pipe, sink) in [
            (
                Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
                stdout.clone(),
            ),
            (Box::new(child.stderr.take().unwrap()), stderr.clone()),
        ] {
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines() {
                    let Ok(line) = line else { break };
                    let mut s = sink.lock().unwrap();
                    s.push_str(&line);
                    s.push('\n');
                }
            });
        }
        let server = Server {
            child,
            stdout,
            stderr,
            port,
        };
        server.wait_ready();
        server
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn wait_ready(&self) {
        let client = http_client();
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(res) = client.get(self.url("/healthz")).send()
                && res.status() == 200
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!(
            "serve did not get ready; stderr:\n{}",
            self.stderr.lock().unwrap()
        );
    }

    fn sigterm(&mut self) -> Option<i32> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        wait_exit(&mut self.child, Duration::from_secs(30))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn version_and_help() {
    let dir = TempDir::new().unwrap();
    let out = run(mailsflux(dir.path()).arg("--version"));
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        text(&out.stdout).trim(),
        format!("mailsflux {}", env!("CARGO_PKG_VERSION"))
    );
    let out = run(mailsflux(dir.path()).arg("--help"));
    assert_eq!(out.status.code(), Some(0));
    let help = text(&out.stdout);
    for word in ["serve", "keys", "migrate", "--config"] {
        assert!(help.contains(word), "--help lacks {word}:\n{help}");
    }
    let out = run(mailsflux(dir.path()).args(["keys", "--help"]));
    assert_eq!(out.status.code(), Some(0));
    for word in ["create", "list", "revoke"] {
        assert!(text(&out.stdout).contains(word));
    }
    // Usage errors exit 2.
    let out = run(mailsflux(dir.path()).arg("fly"));
    assert_eq!(out.status.code(), Some(2));
    let out = run(mailsflux(dir.path()).args(["keys", "create", "--name", "x", "--mode", "prod"]));
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("prod"));
    // Nothing was created by a usage error.
    assert!(!dir.path().join("mailsflux.db").exists());
}

#[test]
fn keys_create_list_and_revoke() {
    let dir = TempDir::new().unwrap();
    // Before any database exists, listing or revoking says so and creates none (run in
    // the wrong directory, it would otherwise answer from a new, empty one).
    for args in [&["keys", "list"][..], &["keys", "revoke", "key_x"]] {
        let out = run(mailsflux(dir.path()).args(args));
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(stderr.contains("no database at"), "{stderr}");
        assert!(stderr.contains("MAILSFLUX_DATABASE__PATH"), "{stderr}");
        assert!(
            !dir.path().join("mailsflux.db").exists(),
            "{args:?} created it"
        );
    }
    let out = run(mailsflux(dir.path()).args(["keys", "create", "--name", "ci", "--mode", "live"]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    // The key alone on standard output: KEY=$(mailsflux keys create ...) works.
    assert_eq!(stdout.lines().count(), 1, "{stdout:?}");
    let token = stdout.trim_end_matches('\n');
    assert!(token.starts_with("mf_live_sk_"), "{token}");
    assert_eq!(token.len(), "mf_live_sk_".len() + 43);
    assert!(
        token["mf_live_sk_".len()..]
            .chars()
            .all(|c| c.is_ascii_alphanumeric())
    );
    let stderr = text(&out.stderr);
    assert!(stderr.contains("key_"), "{stderr}");
    assert!(!stderr.contains(token), "the secret goes to stdout only");

    let out = run(mailsflux(dir.path()).args([
        "keys",
        "create",
        "--name",
        "sender",
        "--permission",
        "sending_access",
    ]));
    assert_eq!(out.status.code(), Some(0));
    let second = text(&out.stdout).trim().to_string();
    assert!(
        second.starts_with("mf_test_sk_"),
        "test is the default mode"
    );

    let out = run(mailsflux(dir.path()).args(["keys", "list"]));
    assert_eq!(out.status.code(), Some(0));
    let list = text(&out.stdout);
    let secret = &token["mf_live_sk_".len()..];
    assert!(
        !list.contains(secret) && !list.contains(&second[11..]),
        "{list}"
    );
    let ci = list
        .lines()
        .find(|l| l.ends_with(" ci"))
        .unwrap_or_else(|| panic!("no ci key in:\n{list}"));
    assert!(ci.contains("live") && ci.contains("full_access") && ci.contains("active"));
    assert!(ci.contains("never"), "a key not used yet: {ci}");
    let sender = list.lines().find(|l| l.ends_with(" sender")).unwrap();
    assert!(sender.contains("test") && sender.contains("sending_access"));
    let id = ci.split_whitespace().next().unwrap().to_string();
    assert!(id.starts_with("key_"));

    let out = run(mailsflux(dir.path()).args(["keys", "revoke", &id]));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = run(mailsflux(dir.path()).args(["keys", "list"]));
    let list = text(&out.stdout);
    let ci = list.lines().find(|l| l.ends_with(" ci")).unwrap();
    assert!(ci.contains("revoked"), "{ci}");
    // Revoking again, or an unknown id, fails with exit 1 and says why.
    let out = run(mailsflux(dir.path()).args(["keys", "revoke", &id]));
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains(&id));
    let out = run(mailsflux(dir.path()).args(["keys", "revoke", "key_nope"]));
    assert_eq!(out.status.code(), Some(1));
    let out = run(mailsflux(dir.path()).args(["keys", "create", "--name", " "]));
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn bad_settings_stop_serve_with_exit_2_naming_them() {
    let dir = TempDir::new().unwrap();
    let check = |cmd: &mut Command, names: &[&str]| {
        let out = run(cmd.arg("serve"));
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        for name in names {
            assert!(
                stderr.contains(name),
                "the message does not name {name}: {stderr}"
            );
        }
    };
    check(
        mailsflux(dir.path()).env("MAILSFLUX_DELIVERY__MODE", "carrier-pigeon"),
        &["delivery.mode", "carrier-pigeon", "relay"],
    );
    check(mailsflux(dir.path()).env("MAILSFLUX_X__Y", "1"), &["'x'"]);
    check(
        mailsflux(dir.path()).env("MAILSFLUX_DELIVERY__RELAY__PROT", "2525"),
        &["delivery.relay.prot", "MAILSFLUX_DELIVERY__RELAY__PROT"],
    );
    check(
        mailsflux(dir.path()).env("MAILSFLUX_SERVER__MAX_BODY_BYTES", "lots"),
        &["server.max_body_bytes", "\"lots\"", "a whole number"],
    );
    check(
        mailsflux(dir.path()).env("MAILSFLUX_WEBHOOKS__TIMEOUT", "soon"),
        &["webhooks.timeout"],
    );
    check(
        mailsflux(dir.path()).env("MAILSFLUX_DATABASE__SYNCHRONOUS", "sometimes"),
        &["database.synchronous"],
    );
    std::fs::write(
        dir.path().join("mailsflux.toml"),
        "[server]\nlisten_adress = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    check(
        &mut mailsflux(dir.path()),
        &[
            "'server.listen_adress'",
            "env MAILSFLUX_SERVER__LISTEN_ADRESS)",
        ],
    );
    std::fs::write(
        dir.path().join("mailsflux.toml"),
        "[sever]\nlisten = \"127.0.0.1:0\"\n",
    )
    .unwrap();
    check(
        &mut mailsflux(dir.path()),
        &["'sever'", "env MAILSFLUX_SEVER)"],
    );
    let other = dir.path().join("other.toml");
    std::fs::write(&other, "[delivery]\nconcurrency = 0\n").unwrap();
    check(
        mailsflux(dir.path()).arg("--config").arg(&other),
        &["delivery.concurrency"],
    );
    check(
        mailsflux(dir.path()).args(["--config", "missing.toml"]),
        &["missing.toml"],
    );
    // None of them created the database.
    assert!(!dir.path().join("mailsflux.db").exists());
}

#[test]
fn serve_first_start_one_server_per_database_and_sigterm() {
    let dir = TempDir::new().unwrap();
    let mut server = Server::start(dir.path());
    // The first start printed a test key and a curl command that uses it.
    let stdout = server.stdout.lock().unwrap().clone();
    let token = stdout
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("mf_test_sk_"))
        .unwrap_or_else(|| panic!("no key printed:\n{stdout}"))
        .to_string();
    assert!(stdout.contains("curl"), "{stdout}");
    assert!(
        stdout.contains(&format!("Authorization: Bearer {token}")),
        "{stdout}"
    );
    let client = http_client();
    let res = client
        .post(server.url("/v1/emails/send"))
        .bearer_auth(&token)
        .json(&serde_json::json!({
            "from": "Acme <hello@acme.test>", "to": "delivered@test.mailsflux",
            "subject": "Hello", "text": "It works"
        }))
        .send()
        .unwrap();
    assert_eq!(res.status(), 200);
    let id = res.json::<serde_json::Value>().unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();

    // A second server on the same database refuses to start.
    let out = run(mailsflux(dir.path()).arg("serve").env(
        "MAILSFLUX_SERVER__LISTEN",
        format!("127.0.0.1:{}", free_port()),
    ));
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("already"), "{stderr}");
    // The first one still serves.
    assert_eq!(
        client.get(server.url("/healthz")).send().unwrap().status(),
        200
    );

    // SIGTERM: a clean stop, exit 0.
    assert_eq!(
        server.sigterm(),
        Some(0),
        "{}",
        server.stderr.lock().unwrap()
    );
    // The log went to a pipe, not a terminal: plain text, no colour escape codes (they
    // would clutter a log file, journald and `docker logs`).
    let log = server.stderr.lock().unwrap().clone();
    assert!(log.contains("mailsflux is serving"), "{log}");
    assert!(!log.contains('\u{1b}'), "escape codes in the log:\n{log}");

    // The stop wrote when the key was last used: `keys list` shows it.
    let out = run(mailsflux(dir.path()).args(["keys", "list"]));
    let list = text(&out.stdout);
    assert!(list.contains("LAST USED"), "{list}");
    let used = list
        .lines()
        .find(|l| l.ends_with("default test key"))
        .unwrap_or_else(|| panic!("no default key in:\n{list}"));
    let today = time::OffsetDateTime::now_utc().date().to_string();
    assert!(
        !used.contains("never") && used.matches(&today).count() == 2,
        "created and used today: {used}"
    );

    // The next start keeps the data and prints no new key.
    let mut again = Server::start(dir.path());
    let res = client
        .get(again.url(&format!("/v1/emails/{id}")))
        .bearer_auth(&token)
        .send()
        .unwrap();
    assert_eq!(res.status(), 200);
    std::thread::sleep(Duration::from_millis(200));
    assert!(
        !again.stdout.lock().unwrap().contains("mf_test_sk_"),
        "a key was printed again"
    );
    assert_eq!(again.sigterm(), Some(0));
}

#[test]
fn migrate_creates_the_database() {
    let dir = TempDir::new().unwrap();
    let out = run(mailsflux(dir.path()).arg("migrate"));
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(dir.path().join("mailsflux.db").exists());
    let out = run(mailsflux(dir.path()).arg("migrate"));
    assert_eq!(out.status.code(), Some(0));
}
