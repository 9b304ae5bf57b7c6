//! An in-process SMTP server for integration tests: real TCP on 127.0.0.1, optional
//! STARTTLS or implicit TLS (self-signed rcgen certificate), AUTH PLAIN/LOGIN, and replies
//! programmable per recipient. It records every accepted message and session counters.
//!
//! Used as `mod support;` from tests: only std, tokio, tokio-rustls and rcgen.
#![allow(dead_code)]

use std::{
    collections::HashMap,
    io,
    net::SocketAddr,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    sync::Notify,
    task::JoinHandle,
};
use tokio_rustls::{
    TlsAcceptor,
    rustls::{
        self, ServerConfig,
        pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer},
    },
};

/// Longest command or data line accepted (RFC 5321 says 1000; be lenient).
const MAX_LINE: usize = 64 * 1024;

/// How the server starts.
#[derive(Debug, Clone)]
pub struct SmtpServerOptions {
    /// Name in the greeting and EHLO reply.
    pub hostname: String,
    /// Offer STARTTLS (with a self-signed certificate).
    pub starttls: bool,
    /// TLS from the first byte (like port 465); STARTTLS is then not offered.
    pub implicit_tls: bool,
    /// Require AUTH PLAIN/LOGIN with these credentials before MAIL.
    pub credentials: Option<(String, String)>,
    /// Advertised SIZE; larger messages get 552 5.3.4.
    pub max_size: usize,
    /// Wait this long before the final reply to DATA.
    pub data_delay: Option<Duration>,
    /// Offer STARTTLS, answer 220, then break the handshake (send garbage and close):
    /// for testing the opportunistic fallback to plain text.
    pub broken_starttls: bool,
    /// Address to listen on; `None` is 127.0.0.1 on a free port. Direct-mode tests bind a
    /// second server on another loopback address (127.0.0.2) with the first one's port,
    /// since `delivery.direct.port` is one port for every MX host.
    pub bind: Option<SocketAddr>,
    /// Offer PIPELINING (RFC 2920) in the EHLO answer, as every common MTA does.
    pub pipelining: bool,
    /// Close the connection, without a word, after this many messages in one session:
    /// like a server that drops sessions the client keeps idle in its pool.
    pub close_after_messages: Option<usize>,
}

impl Default for SmtpServerOptions {
    fn default() -> Self {
        SmtpServerOptions {
            hostname: "smtp.test".to_string(),
            starttls: false,
            implicit_tls: false,
            credentials: None,
            max_size: 10 * 1024 * 1024,
            data_delay: None,
            broken_starttls: false,
            bind: None,
            pipelining: true,
            close_after_messages: None,
        }
    }
}

/// Where a programmed reply is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// The reply to `RCPT TO` for that recipient.
    Rcpt,
    /// The final reply to DATA (after the message) when that recipient was accepted; it
    /// applies to the whole message, which is then not recorded.
    Data,
}

/// A programmed reply.
#[derive(Debug, Clone)]
pub struct Rule {
    pub at: At,
    /// e.g. 550.
    pub code: u16,
    /// e.g. "5.1.1 User unknown" (the enhanced code, if any, goes in the text).
    pub text: String,
    /// How many more times to answer this way; `None` = forever.
    pub remaining: Option<usize>,
    /// Instead of replying, close the connection.
    pub disconnect: bool,
}

/// One accepted message.
#[derive(Debug, Clone)]
pub struct ReceivedMessage {
    /// Session number (1, 2, ...) that carried it.
    pub session_id: u64,
    /// Index of the message within its session (0 first).
    pub index_in_session: usize,
    pub mail_from: String,
    /// Accepted recipients only.
    pub rcpt_to: Vec<String>,
    /// The message as sent, dot-unstuffed, ending with the last line's CRLF.
    pub data: Vec<u8>,
    /// Whether the session was encrypted.
    pub tls: bool,
    /// The authenticated user, if any.
    pub auth_user: Option<String>,
}

impl ReceivedMessage {
    /// The data as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.data).into_owned()
    }
}

#[derive(Default)]
struct State {
    messages: Vec<ReceivedMessage>,
    /// Keyed by lower-case recipient, or "*" for any.
    rules: HashMap<String, Vec<Rule>>,
    sessions_opened: u64,
    sessions_active: u64,
    quits: u64,
    /// Messages accepted per session id.
    per_session: HashMap<u64, usize>,
    data_delay: Option<Duration>,
    /// Commands seen (upper-cased verb), for assertions like "RSET was sent".
    commands: Vec<String>,
}

struct Shared {
    options: SmtpServerOptions,
    state: Mutex<State>,
    changed: Notify,
    tls: Option<TlsAcceptor>,
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A running test SMTP server; stops when dropped.
pub struct TestSmtpServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for TestSmtpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestSmtpServer {
    /// Binds 127.0.0.1:0 and starts accepting sessions.
    pub async fn start(options: SmtpServerOptions) -> TestSmtpServer {
        let bind = options
            .bind
            .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));
        let listener = TcpListener::bind(bind)
            .await
            .expect("bind test SMTP server");
        let addr = listener.local_addr().expect("local addr");
        let tls = (options.starttls || options.implicit_tls || options.broken_starttls)
            .then(|| tls_acceptor(&options));
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                data_delay: options.data_delay,
                ..State::default()
            }),
            options,
            changed: Notify::new(),
            tls,
        });
        let accept_shared = shared.clone();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((tcp, _)) = accepted else { continue };
                        connections.spawn(connection(tcp, accept_shared.clone()));
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        });
        TestSmtpServer { addr, shared, task }
    }

    /// Plain server with default options.
    pub async fn plain() -> TestSmtpServer {
        Self::start(SmtpServerOptions::default()).await
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Programs a reply for `recipient` ("*" = any recipient). Rules for the same
    /// recipient and stage are used in the order they were added.
    pub fn add_rule(&self, recipient: &str, rule: Rule) {
        self.shared
            .state()
            .rules
            .entry(recipient.to_ascii_lowercase())
            .or_default()
            .push(rule);
    }

    /// Answer `code text` at RCPT for `recipient`, `times` times (`None` = forever).
    pub fn fail_rcpt(&self, recipient: &str, code: u16, text: &str, times: Option<usize>) {
        self.add_rule(
            recipient,
            Rule {
                at: At::Rcpt,
                code,
                text: text.to_string(),
                remaining: times,
                disconnect: false,
            },
        );
    }

    /// Answer `code text` after DATA for messages to `recipient`, `times` times.
    pub fn fail_data(&self, recipient: &str, code: u16, text: &str, times: Option<usize>) {
        self.add_rule(
            recipient,
            Rule {
                at: At::Data,
                code,
                text: text.to_string(),
                remaining: times,
                disconnect: false,
            },
        );
    }

    /// Close the connection (no reply) at `at` for `recipient`, `times` times.
    pub fn disconnect_at(&self, recipient: &str, at: At, times: Option<usize>) {
        self.add_rule(
            recipient,
            Rule {
                at,
                code: 0,
                text: String::new(),
                remaining: times,
                disconnect: true,
            },
        );
    }

    /// Removes all programmed replies.
    pub fn clear_rules(&self) {
        self.shared.state().rules.clear();
    }

    /// Sets (or clears) the delay before the final DATA reply.
    pub fn set_data_delay(&self, delay: Option<Duration>) {
        self.shared.state().data_delay = delay;
    }

    /// All accepted messages so far.
    pub fn messages(&self) -> Vec<ReceivedMessage> {
        self.shared.state().messages.clone()
    }

    /// Accepted messages to `recipient`.
    pub fn messages_to(&self, recipient: &str) -> Vec<ReceivedMessage> {
        self.messages()
            .into_iter()
            .filter(|m| m.rcpt_to.iter().any(|r| r.eq_ignore_ascii_case(recipient)))
            .collect()
    }

    /// Forgets recorded messages and counters (rules stay).
    pub fn reset(&self) {
        let mut state = self.shared.state();
        state.messages.clear();
        state.per_session.clear();
        state.commands.clear();
        state.sessions_opened = 0;
        state.quits = 0;
    }

    /// Waits until at least `n` messages were accepted; panics after `timeout`.
    pub async fn wait_for(&self, n: usize, timeout: Duration) -> Vec<ReceivedMessage> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.changed.notified();
            let messages = self.messages();
            if messages.len() >= n {
                return messages;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!(
                    "test SMTP server: {} message(s) after {:?}, wanted {}",
                    self.messages().len(),
                    timeout,
                    n
                );
            }
        }
    }

    /// Waits until the number of open connections is `n`; panics after `timeout`.
    pub async fn wait_for_active_sessions(&self, n: u64, timeout: Duration) {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.shared.changed.notified();
            let active = self.sessions_active();
            if active == n {
                return;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("test SMTP server: {active} open session(s) after {timeout:?}, wanted {n}");
            }
        }
    }

    /// Connections accepted so far.
    pub fn sessions_opened(&self) -> u64 {
        self.shared.state().sessions_opened
    }

    /// Connections open now.
    pub fn sessions_active(&self) -> u64 {
        self.shared.state().sessions_active
    }

    /// QUIT commands received.
    pub fn quits(&self) -> u64 {
        self.shared.state().quits
    }

    /// Messages accepted per session id.
    pub fn messages_per_session(&self) -> HashMap<u64, usize> {
        self.shared.state().per_session.clone()
    }

    /// Command verbs received, in order (EHLO, MAIL, RCPT, DATA, RSET, QUIT, ...).
    pub fn commands(&self) -> Vec<String> {
        self.shared.state().commands.clone()
    }
}

fn tls_acceptor(options: &SmtpServerOptions) -> TlsAcceptor {
    let names = vec![
        options.hostname.clone(),
        "localhost".to_string(),
        "127.0.0.1".to_string(),
    ];
    let certified = rcgen::generate_simple_self_signed(names).expect("self-signed certificate");
    let cert: CertificateDer<'static> = certified.cert.der().clone();
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(
        certified.signing_key.serialize_der(),
    ));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .expect("TLS server config");
    TlsAcceptor::from(Arc::new(config))
}

/// Per-connection protocol state that survives STARTTLS.
struct Conn {
    id: u64,
    shared: Arc<Shared>,
    tls: bool,
    greeted: bool,
    auth_user: Option<String>,
    mail_from: Option<String>,
    rcpt_to: Vec<String>,
    messages: usize,
}

enum After {
    Close,
    StartTls,
}

async fn connection(tcp: TcpStream, shared: Arc<Shared>) {
    let id = {
        let mut state = shared.state();
        state.sessions_opened += 1;
        state.sessions_active += 1;
        state.sessions_opened
    };
    shared.changed.notify_waiters();
    let mut conn = Conn {
        id,
        shared: shared.clone(),
        tls: false,
        greeted: false,
        auth_user: None,
        mail_from: None,
        rcpt_to: Vec::new(),
        messages: 0,
    };
    let _ = run(tcp, &mut conn).await;
    shared.state().sessions_active -= 1;
    shared.changed.notify_waiters();
}

async fn run(tcp: TcpStream, conn: &mut Conn) -> io::Result<()> {
    let acceptor = conn.shared.tls.clone();
    let greeting = format!("220 {} ESMTP test server\r\n", conn.shared.options.hostname);
    if conn.shared.options.implicit_tls {
        let acceptor = acceptor.ok_or_else(|| io::Error::other("no TLS"))?;
        let mut tls = acceptor.accept(tcp).await?;
        conn.tls = true;
        tls.write_all(greeting.as_bytes()).await?;
        session(BufReader::new(tls), conn).await?;
        return Ok(());
    }
    let mut tcp = tcp;
    tcp.write_all(greeting.as_bytes()).await?;
    if let (After::StartTls, reader) = session(BufReader::new(tcp), conn).await? {
        let acceptor = acceptor.ok_or_else(|| io::Error::other("no TLS"))?;
        let tls = acceptor.accept(reader.into_inner()).await?;
        conn.tls = true;
        conn.greeted = false;
        conn.auth_user = None;
        conn.mail_from = None;
        conn.rcpt_to.clear();
        session(BufReader::new(tls), conn).await?;
    }
    Ok(())
}

/// Reads one line (with its line ending); `None` at end of stream.
async fn read_line<S: AsyncRead + Unpin>(io: &mut BufReader<S>) -> io::Result<Option<Vec<u8>>> {
    let mut line = Vec::new();
    let n = (&mut *io)
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut line)
        .await?;
    if n == 0 {
        return Ok(None);
    }
    Ok(Some(line))
}

async fn reply<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut BufReader<S>,
    text: &str,
) -> io::Result<()> {
    let stream = io.get_mut();
    stream.write_all(format!("{text}\r\n").as_bytes()).await?;
    stream.flush().await
}

/// Takes the next matching rule for any of `recipients` at `at`, consuming one use.
fn take_rule(shared: &Shared, recipients: &[String], at: At) -> Option<Rule> {
    let mut state = shared.state();
    let keys = recipients
        .iter()
        .map(|r| r.to_ascii_lowercase())
        .chain(std::iter::once("*".to_string()));
    for key in keys {
        let Some(rules) = state.rules.get_mut(&key) else {
            continue;
        };
        let Some(pos) = rules
            .iter()
            .position(|r| r.at == at && r.remaining != Some(0))
        else {
            continue;
        };
        let rule = rules[pos].clone();
        if let Some(remaining) = &mut rules[pos].remaining {
            *remaining -= 1;
        }
        return Some(rule);
    }
    None
}

fn angle_addr(arg: &str) -> Option<String> {
    let start = arg.find('<')?;
    let end = arg[start..].find('>')? + start;
    Some(arg[start + 1..end].to_string())
}

async fn session<S: AsyncRead + AsyncWrite + Unpin>(
    mut io: BufReader<S>,
    conn: &mut Conn,
) -> io::Result<(After, BufReader<S>)> {
    let options = conn.shared.options.clone();
    loop {
        let Some(line) = read_line(&mut io).await? else {
            return Ok((After::Close, io));
        };
        let line = String::from_utf8_lossy(&line).trim_end().to_string();
        let (verb, arg) = match line.split_once(' ') {
            Some((v, a)) => (v.to_ascii_uppercase(), a.trim().to_string()),
            None => (line.to_ascii_uppercase(), String::new()),
        };
        conn.shared.state().commands.push(verb.clone());
        match verb.as_str() {
            "EHLO" => {
                conn.greeted = true;
                conn.mail_from = None;
                conn.rcpt_to.clear();
                let mut lines = vec![options.hostname.clone()];
                lines.push("8BITMIME".into());
                lines.push(format!("SIZE {}", options.max_size));
                if options.pipelining {
                    lines.push("PIPELINING".into());
                }
                if (options.starttls || options.broken_starttls)
                    && !options.implicit_tls
                    && !conn.tls
                {
                    lines.push("STARTTLS".into());
                }
                if options.credentials.is_some() {
                    lines.push("AUTH PLAIN LOGIN".into());
                }
                let last = lines.len() - 1;
                let text: Vec<String> = lines
                    .iter()
                    .enumerate()
                    .map(|(i, l)| format!("250{}{l}", if i == last { ' ' } else { '-' }))
                    .collect();
                reply(&mut io, &text.join("\r\n")).await?;
            }
            "HELO" => {
                conn.greeted = true;
                reply(&mut io, &format!("250 {}", options.hostname)).await?;
            }
            "STARTTLS" => {
                if options.broken_starttls && !conn.tls {
                    reply(&mut io, "220 2.0.0 Ready to start TLS").await?;
                    io.get_mut().write_all(b"this is not TLS\r\n").await?;
                    return Ok((After::Close, io));
                }
                if !options.starttls || conn.tls || options.implicit_tls {
                    reply(&mut io, "502 5.5.1 STARTTLS not available").await?;
                } else {
                    reply(&mut io, "220 2.0.0 Ready to start TLS").await?;
                    return Ok((After::StartTls, io));
                }
            }
            "AUTH" => auth(&mut io, conn, &arg).await?,
            "MAIL" => {
                if !conn.greeted {
                    reply(&mut io, "503 5.5.1 EHLO first").await?;
                } else if options.credentials.is_some() && conn.auth_user.is_none() {
                    reply(&mut io, "530 5.7.0 Authentication required").await?;
                } else if conn.mail_from.is_some() {
                    reply(&mut io, "503 5.5.1 Nested MAIL command").await?;
                } else if let Some(from) = angle_addr(&arg) {
                    conn.mail_from = Some(from);
                    conn.rcpt_to.clear();
                    reply(&mut io, "250 2.1.0 Ok").await?;
                } else {
                    reply(&mut io, "501 5.5.4 Syntax: MAIL FROM:<address>").await?;
                }
            }
            "RCPT" => {
                let Some(rcpt) = angle_addr(&arg) else {
                    reply(&mut io, "501 5.5.4 Syntax: RCPT TO:<address>").await?;
                    continue;
                };
                if conn.mail_from.is_none() {
                    reply(&mut io, "503 5.5.1 MAIL first").await?;
                } else if let Some(rule) =
                    take_rule(&conn.shared, std::slice::from_ref(&rcpt), At::Rcpt)
                {
                    if rule.disconnect {
                        return Ok((After::Close, io));
                    }
                    reply(&mut io, &format!("{} {}", rule.code, rule.text)).await?;
                } else {
                    conn.rcpt_to.push(rcpt);
                    reply(&mut io, "250 2.1.5 Ok").await?;
                }
            }
            "DATA" => {
                if conn.mail_from.is_none() || conn.rcpt_to.is_empty() {
                    reply(&mut io, "503 5.5.1 No valid recipients").await?;
                    continue;
                }
                reply(&mut io, "354 End data with <CR><LF>.<CR><LF>").await?;
                let Some(data) = read_data(&mut io).await? else {
                    return Ok((After::Close, io));
                };
                let delay = conn.shared.state().data_delay;
                if let Some(delay) = delay {
                    tokio::time::sleep(delay).await;
                }
                let rule = take_rule(&conn.shared, &conn.rcpt_to, At::Data);
                let mail_from = conn.mail_from.take().unwrap_or_default();
                let rcpt_to = std::mem::take(&mut conn.rcpt_to);
                if let Some(rule) = rule {
                    if rule.disconnect {
                        return Ok((After::Close, io));
                    }
                    reply(&mut io, &format!("{} {}", rule.code, rule.text)).await?;
                } else if data.len() > options.max_size {
                    reply(&mut io, "552 5.3.4 Message too big").await?;
                } else {
                    let queue_id = {
                        let mut state = conn.shared.state();
                        let message = ReceivedMessage {
                            session_id: conn.id,
                            index_in_session: conn.messages,
                            mail_from,
                            rcpt_to,
                            data,
                            tls: conn.tls,
                            auth_user: conn.auth_user.clone(),
                        };
                        state.messages.push(message);
                        *state.per_session.entry(conn.id).or_default() += 1;
                        state.messages.len()
                    };
                    conn.messages += 1;
                    conn.shared.changed.notify_waiters();
                    reply(&mut io, &format!("250 2.0.0 Ok: queued as T{queue_id}")).await?;
                    if options
                        .close_after_messages
                        .is_some_and(|n| conn.messages >= n)
                    {
                        return Ok((After::Close, io));
                    }
                }
            }
            "RSET" => {
                conn.mail_from = None;
                conn.rcpt_to.clear();
                reply(&mut io, "250 2.0.0 Ok").await?;
            }
            "NOOP" => reply(&mut io, "250 2.0.0 Ok").await?,
            "VRFY" => reply(&mut io, "252 2.0.0 Cannot VRFY user").await?,
            "QUIT" => {
                conn.shared.state().quits += 1;
                reply(&mut io, "221 2.0.0 Bye").await?;
                return Ok((After::Close, io));
            }
            _ => reply(&mut io, "500 5.5.2 Command not recognized").await?,
        }
    }
}

/// Reads the message up to the lone dot, undoing dot-stuffing. `None` if the connection
/// ended first.
async fn read_data<S: AsyncRead + Unpin>(io: &mut BufReader<S>) -> io::Result<Option<Vec<u8>>> {
    let mut data = Vec::new();
    loop {
        let Some(line) = read_line(io).await? else {
            return Ok(None);
        };
        if line == b".\r\n" || line == b".\n" {
            return Ok(Some(data));
        }
        match line.strip_prefix(b".") {
            Some(rest) => data.extend_from_slice(rest),
            None => data.extend_from_slice(&line),
        }
    }
}

async fn auth<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut BufReader<S>,
    conn: &mut Conn,
    arg: &str,
) -> io::Result<()> {
    let Some((user, pass)) = conn.shared.options.credentials.clone() else {
        return reply(io, "502 5.5.1 AUTH not available").await;
    };
    if conn.auth_user.is_some() {
        return reply(io, "503 5.5.1 Already authenticated").await;
    }
    let (mechanism, initial) = match arg.split_once(' ') {
        Some((m, i)) => (m.to_ascii_uppercase(), Some(i.trim().to_string())),
        None => (arg.to_ascii_uppercase(), None),
    };
    let given = match mechanism.as_str() {
        "PLAIN" => {
            let encoded = match initial {
                Some(i) => i,
                None => {
                    reply(io, "334 ").await?;
                    match read_line(io).await? {
                        Some(l) => String::from_utf8_lossy(&l).trim().to_string(),
                        None => return Ok(()),
                    }
                }
            };
            base64_decode(&encoded).and_then(|raw| {
                let mut parts = raw.split(|b| *b == 0);
                let _authzid = parts.next()?;
                let u = String::from_utf8(parts.next()?.to_vec()).ok()?;
                let p = String::from_utf8(parts.next()?.to_vec()).ok()?;
                Some((u, p))
            })
        }
        "LOGIN" => {
            let user_b64 = match initial {
                Some(i) => i,
                None => {
                    reply(io, &format!("334 {}", base64_encode(b"Username:"))).await?;
                    match read_line(io).await? {
                        Some(l) => String::from_utf8_lossy(&l).trim().to_string(),
                        None => return Ok(()),
                    }
                }
            };
            reply(io, &format!("334 {}", base64_encode(b"Password:"))).await?;
            let pass_b64 = match read_line(io).await? {
                Some(l) => String::from_utf8_lossy(&l).trim().to_string(),
                None => return Ok(()),
            };
            let decode = |s: &str| base64_decode(s).and_then(|b| String::from_utf8(b).ok());
            decode(&user_b64).zip(decode(&pass_b64))
        }
        _ => return reply(io, "504 5.5.4 Unrecognized authentication type").await,
    };
    match given {
        Some((u, p)) if u == user && p == pass => {
            conn.auth_user = Some(u);
            reply(io, "235 2.7.0 Authentication successful").await
        }
        _ => reply(io, "535 5.7.8 Authentication credentials invalid").await,
    }
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn base64_encode(input: &[u8]) -> String {
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn base64_decode(input: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut acc = 0u32;
    let mut bits = 0;
    for c in input.bytes().filter(|c| *c != b'=') {
        let v = B64.iter().position(|x| *x == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}
