//! The SMTP client: one transaction per call with a result per recipient, over pooled
//! sessions.
//!
//! mail-send speaks the protocol; this module drives it command by command because
//! `SmtpClient::send` aborts the whole message when one RCPT is refused, because
//! `implicit_tls(false)` demands STARTTLS (port-25 delivery wants it *if offered*), and
//! because its default timeout is an hour. Policy (retries, statuses, suppressions) is
//! the worker's: this module reports what the server said ([`Outcome`]) or why no
//! server said anything ([`SessionError`]).
//!
//! TLS uses rustls with the process-wide crypto provider (ring).

use std::{
    collections::HashMap,
    fmt,
    net::{IpAddr, SocketAddr},
    str::FromStr,
    sync::{
        Arc, Mutex, MutexGuard, Weak,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use hickory_resolver::TokioResolver;
use mail_send::{Credentials, SmtpClient, SmtpClientBuilder};
use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
    sync::Semaphore,
    task::JoinSet,
};

use super::mx::{MxError, MxHost, resolve_mx};

/// `smtp_proto::EXT_START_TLS` (mail-send does not re-export smtp-proto; the value is part
/// of smtp-proto's stable 0.x API).
const EXT_START_TLS: u32 = 1 << 24;
/// `smtp_proto::EXT_PIPELINING` (RFC 2920), likewise.
const EXT_PIPELINING: u32 = 1 << 19;

/// Addresses tried per direct delivery before giving up (Postfix's
/// `smtp_mx_address_limit`).
pub const MAX_MX_ADDRESSES: usize = 5;

/// How long a QUIT may take before the connection is simply dropped.
const QUIT_TIMEOUT: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------
// Destinations and settings

/// How the session is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsMode {
    /// Plain text (`delivery.relay.tls = "none"`).
    None,
    /// STARTTLS is required; the session fails if the server does not offer it.
    StartTls,
    /// TLS from the first byte (submissions port 465).
    Implicit,
    /// STARTTLS when the server offers it, plain text otherwise (direct MX delivery on
    /// port 25, RFC 3207 / RFC 7435). A failed handshake falls back to plain text.
    Opportunistic,
}

impl FromStr for TlsMode {
    type Err = String;

    /// Parses the config spelling: `none`, `starttls`, `implicit`, `opportunistic`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Ok(TlsMode::None),
            "starttls" => Ok(TlsMode::StartTls),
            "implicit" => Ok(TlsMode::Implicit),
            "opportunistic" => Ok(TlsMode::Opportunistic),
            other => Err(format!(
                "unknown TLS mode {other:?} (expected none, starttls, implicit or opportunistic)"
            )),
        }
    }
}

/// `delivery.direct.starttls`: whether port-25 delivery may fall back to plain text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum StartTlsPolicy {
    /// STARTTLS if offered, else plain text.
    #[default]
    Opportunistic,
    /// Refuse to deliver to MX hosts that do not offer STARTTLS.
    Required,
}

impl StartTlsPolicy {
    /// The TLS mode for a direct MX session under this policy.
    pub fn tls_mode(self) -> TlsMode {
        match self {
            StartTlsPolicy::Opportunistic => TlsMode::Opportunistic,
            StartTlsPolicy::Required => TlsMode::StartTls,
        }
    }
}

impl FromStr for StartTlsPolicy {
    type Err = String;

    /// Parses `opportunistic` or `required`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "opportunistic" => Ok(StartTlsPolicy::Opportunistic),
            "required" => Ok(StartTlsPolicy::Required),
            other => Err(format!(
                "unknown STARTTLS policy {other:?} (expected opportunistic or required)"
            )),
        }
    }
}

/// Where one SMTP session goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination {
    /// Host name: the TLS server name and the name in error messages.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// The address to connect to; `None` resolves `host` with the system resolver (relay).
    pub ip: Option<IpAddr>,
    /// How the session is secured.
    pub tls: TlsMode,
    /// AUTH user name and password (relay only).
    pub credentials: Option<(String, String)>,
    /// Accept any server certificate. Tests use it against self-signed servers; direct MX
    /// delivery uses it too, because port-25 TLS is unauthenticated encryption (RFC 7435:
    /// MX certificates are routinely self-signed or name the wrong host).
    pub allow_invalid_certs: bool,
}

impl Destination {
    /// A smarthost from `[delivery.relay]`: certificates are verified.
    pub fn relay(
        host: impl Into<String>,
        port: u16,
        tls: TlsMode,
        credentials: Option<(String, String)>,
    ) -> Self {
        Destination {
            host: host.into(),
            port,
            ip: None,
            tls,
            credentials: credentials.filter(|(user, _)| !user.is_empty()),
            allow_invalid_certs: false,
        }
    }

    /// One address of an MX host (from [`super::mx::resolve_mx`]) for direct delivery.
    pub fn mx(host: impl Into<String>, ip: IpAddr, port: u16, starttls: StartTlsPolicy) -> Self {
        Destination {
            host: host.into(),
            port,
            ip: Some(ip),
            tls: starttls.tls_mode(),
            credentials: None,
            allow_invalid_certs: true,
        }
    }

    fn key(&self) -> DestKey {
        DestKey {
            host: self.host.to_ascii_lowercase(),
            port: self.port,
            ip: self.ip,
            tls: self.tls,
            credentials: self.credentials.clone(),
            allow_invalid_certs: self.allow_invalid_certs,
        }
    }
}

impl fmt::Display for Destination {
    /// `host:port`, or `host[ip]:port` when the address is fixed and differs from the host.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.ip {
            Some(ip) if ip.to_string() != self.host => {
                write!(f, "{}[{}]:{}", self.host, ip, self.port)
            }
            _ => write!(f, "{}:{}", self.host, self.port),
        }
    }
}

/// Sessions are pooled per destination key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct DestKey {
    host: String,
    port: u16,
    ip: Option<IpAddr>,
    tls: TlsMode,
    /// Sessions are authenticated: a different user or password needs its own session.
    credentials: Option<(String, String)>,
    allow_invalid_certs: bool,
}

/// Timeouts and pool limits.
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    /// The EHLO name (`delivery.hostname`).
    pub helo_name: String,
    /// TCP connect (each address), and the TLS handshake.
    pub connect_timeout: Duration,
    /// Each command's reply, including the greeting.
    pub command_timeout: Duration,
    /// Sending the message body and reading the final reply.
    pub data_timeout: Duration,
    /// Idle pooled sessions older than this are closed with QUIT.
    pub idle_timeout: Duration,
    /// After this many messages a session is closed instead of pooled (at least 1).
    pub max_messages_per_connection: usize,
    /// Sessions open at once to one destination (at least 1); more deliveries wait.
    pub max_sessions_per_destination: usize,
}

impl Default for SmtpSettings {
    /// RFC 5321 §4.5.3.2 inspired, shortened where an API user waits for an answer.
    fn default() -> Self {
        SmtpSettings {
            helo_name: "localhost".to_string(),
            connect_timeout: Duration::from_secs(30),
            command_timeout: Duration::from_secs(120),
            data_timeout: Duration::from_secs(600),
            idle_timeout: Duration::from_secs(30),
            max_messages_per_connection: 100,
            max_sessions_per_destination: 8,
        }
    }
}

// ---------------------------------------------------------------------------------------
// Replies and results

/// An SMTP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The basic reply code (RFC 5321 §4.2).
    pub code: u16,
    /// The enhanced status code (RFC 3463), when the server sent one.
    pub enhanced: Option<(u8, u16, u16)>,
    /// The text, lines joined with a space.
    pub text: String,
}

impl Reply {
    /// Builds a reply from its parts; an enhanced code of `0.0.0` means none was sent.
    pub fn new(code: u16, esc: [u8; 3], text: &str) -> Self {
        let enhanced = (esc[0] != 0).then(|| (esc[0], u16::from(esc[1]), u16::from(esc[2])));
        let text = text
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        Reply {
            code,
            enhanced,
            text,
        }
    }

    /// 2xx.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// 4xx: try again later.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// 5xx: do not retry.
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }

    /// A reply made up here (never sent by a server), for envelope addresses that cannot
    /// be put on the wire.
    fn local(code: u16, enhanced: (u8, u16, u16), text: &str) -> Self {
        Reply {
            code,
            enhanced: Some(enhanced),
            text: text.to_string(),
        }
    }
}

impl fmt::Display for Reply {
    /// `250 2.0.0 Ok: queued as X`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.code)?;
        if let Some((class, subject, detail)) = self.enhanced {
            write!(f, " {class}.{subject}.{detail}")?;
        }
        if !self.text.is_empty() {
            write!(f, " {}", self.text)?;
        }
        Ok(())
    }
}

/// Converts a mail-send/smtp-proto `Response<String>` (a type this crate cannot name).
macro_rules! reply_of {
    ($response:expr) => {{
        let response = $response;
        Reply::new(response.code, response.esc, &response.message)
    }};
}

/// What happened to one recipient.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The server took responsibility for the message (the final reply to DATA).
    Accepted(Reply),
    /// 5xx at MAIL, RCPT or DATA: a permanent refusal.
    Rejected(Reply),
    /// 4xx (or an unexpected code) at MAIL, RCPT or DATA: try again later.
    Deferred(Reply),
}

impl Outcome {
    fn from_refusal(reply: Reply) -> Self {
        if reply.is_permanent() {
            Outcome::Rejected(reply)
        } else {
            Outcome::Deferred(reply)
        }
    }

    /// The reply behind the outcome.
    pub fn reply(&self) -> &Reply {
        match self {
            Outcome::Accepted(r) | Outcome::Rejected(r) | Outcome::Deferred(r) => r,
        }
    }
}

/// The result for one recipient of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RcptResult {
    /// The address as given to [`SmtpPool::deliver`].
    pub recipient: String,
    /// What the server said about it.
    pub outcome: Outcome,
}

/// The SMTP stage a session fault happened in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    Connect,
    Greeting,
    Ehlo,
    StartTls,
    Auth,
    MailFrom,
    RcptTo,
    Data,
    Rset,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Connect => "connect",
            Stage::Greeting => "greeting",
            Stage::Ehlo => "EHLO",
            Stage::StartTls => "STARTTLS",
            Stage::Auth => "AUTH",
            Stage::MailFrom => "MAIL FROM",
            Stage::RcptTo => "RCPT TO",
            Stage::Data => "DATA",
            Stage::Rset => "RSET",
        })
    }
}

/// No usable answer about the recipients: the caller defers all of them (a soft
/// [`super::bounce::Classification::NETWORK`]). The message says what failed.
#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    /// The relay host name did not resolve.
    #[error("cannot resolve {target}: {message}")]
    Resolve { target: String, message: String },
    /// TCP connection refused.
    #[error("connection to {target} refused")]
    Refused { target: String },
    /// Other TCP connect failures (unreachable, reset).
    #[error("connection to {target} failed: {source}")]
    Connect {
        target: String,
        #[source]
        source: std::io::Error,
    },
    /// A timeout at some stage.
    #[error("timeout at {stage} with {target}")]
    Timeout { target: String, stage: Stage },
    /// The TLS handshake failed (bad certificate, no common protocol).
    #[error("TLS with {target} failed: {message}")]
    Tls { target: String, message: String },
    /// `TlsMode::StartTls` but the server's EHLO did not offer STARTTLS.
    #[error("STARTTLS required but not offered by {target}")]
    StartTlsNotOffered { target: String },
    /// The server refused the session before the envelope (greeting, EHLO, STARTTLS).
    #[error("{target} refused the session at {stage}: {reply}")]
    SessionRefused {
        target: String,
        stage: Stage,
        reply: Reply,
    },
    /// AUTH failed or no common mechanism: a configuration problem for the operator.
    #[error("authentication with {target} failed: {message}")]
    Auth {
        target: String,
        message: String,
        reply: Option<Reply>,
    },
    /// The connection broke mid-session.
    #[error("network error with {target} at {stage}: {source}")]
    Network {
        target: String,
        stage: Stage,
        #[source]
        source: std::io::Error,
    },
    /// The server closed the connection or sent something that is not SMTP.
    #[error("protocol error with {target} at {stage}: {message}")]
    Protocol {
        target: String,
        stage: Stage,
        message: String,
    },
    /// [`SmtpPool::shutdown`] was called.
    #[error("the SMTP pool is shut down")]
    ShutDown,
}

impl SessionError {
    /// The stage the fault happened at, when known.
    pub fn stage(&self) -> Option<Stage> {
        match self {
            SessionError::Timeout { stage, .. }
            | SessionError::SessionRefused { stage, .. }
            | SessionError::Network { stage, .. }
            | SessionError::Protocol { stage, .. } => Some(*stage),
            SessionError::Resolve { .. }
            | SessionError::Refused { .. }
            | SessionError::Connect { .. } => Some(Stage::Connect),
            SessionError::Tls { .. } | SessionError::StartTlsNotOffered { .. } => {
                Some(Stage::StartTls)
            }
            SessionError::Auth { .. } => Some(Stage::Auth),
            SessionError::ShutDown => None,
        }
    }

    /// True when the session broke during STARTTLS: refused, handshake failed, or the
    /// connection closed. Opportunistic TLS then falls back to plain text.
    fn is_starttls_failure(&self) -> bool {
        matches!(
            self,
            SessionError::Tls { .. }
                | SessionError::Network {
                    stage: Stage::StartTls,
                    ..
                }
                | SessionError::Protocol {
                    stage: Stage::StartTls,
                    ..
                }
                | SessionError::Timeout {
                    stage: Stage::StartTls,
                    ..
                }
                | SessionError::SessionRefused {
                    stage: Stage::StartTls,
                    ..
                }
        )
    }

    fn from_mail_send(target: &str, stage: Stage, error: mail_send::Error) -> Self {
        let target = target.to_string();
        match error {
            mail_send::Error::Io(source) => SessionError::Network {
                target,
                stage,
                source,
            },
            mail_send::Error::Tls(e) => SessionError::Tls {
                target,
                message: e.to_string(),
            },
            mail_send::Error::InvalidTLSName => SessionError::Tls {
                target,
                message: "the host is not a valid TLS server name".to_string(),
            },
            mail_send::Error::Timeout => SessionError::Timeout { target, stage },
            mail_send::Error::UnparseableReply => SessionError::Protocol {
                target,
                stage,
                message: "connection closed or reply unparseable".to_string(),
            },
            mail_send::Error::UnexpectedReply(response) if stage == Stage::Auth => {
                let reply = reply_of!(response);
                SessionError::Auth {
                    target,
                    message: reply.to_string(),
                    reply: Some(reply),
                }
            }
            mail_send::Error::UnexpectedReply(response) => SessionError::SessionRefused {
                target,
                stage,
                reply: reply_of!(response),
            },
            mail_send::Error::AuthenticationFailed(response) => {
                let reply = reply_of!(response);
                SessionError::Auth {
                    target,
                    message: reply.to_string(),
                    reply: Some(reply),
                }
            }
            mail_send::Error::UnsupportedAuthMechanism => SessionError::Auth {
                target,
                message: "the server offers no supported AUTH mechanism".to_string(),
                reply: None,
            },
            mail_send::Error::MissingStartTls => SessionError::StartTlsNotOffered { target },
            other => SessionError::Protocol {
                target,
                stage,
                message: other.to_string(),
            },
        }
    }
}

/// Why [`SmtpPool::deliver_direct`] got no answer about the recipients.
#[derive(Debug, thiserror::Error)]
pub enum DirectError {
    /// The domain has no usable mail host ([`MxError::is_permanent`] says whether to
    /// bounce; [`MxError::reply`] gives a reply to record).
    #[error(transparent)]
    Mx(#[from] MxError),
    /// Every mail host tried failed at the session level (the last fault is kept):
    /// defer every recipient.
    #[error("no mail host for {domain} took the message: {last}")]
    Unreachable { domain: String, last: SessionError },
}

/// Errors creating a pool.
#[derive(Debug, thiserror::Error)]
#[error("cannot set up TLS for SMTP: {0}")]
pub struct PoolSetupError(String);

// ---------------------------------------------------------------------------------------
// Sessions

/// Any byte stream a session runs over (plain TCP or TLS), boxed so both kinds pool
/// together.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// One open SMTP session.
struct Session {
    client: SmtpClient<Box<dyn Stream>>,
    messages: usize,
    /// The server offered PIPELINING (RFC 2920) in its last EHLO answer.
    pipelining: bool,
    /// A transaction ran on this session: the next one starts with RSET, which also
    /// checks that a pooled session still answers.
    used: bool,
    _open: OpenGuard,
}

/// Counts open sessions for the metric; decrements when the session is dropped.
struct OpenGuard(Arc<AtomicUsize>);

impl OpenGuard {
    fn new(counter: &Arc<AtomicUsize>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        OpenGuard(counter.clone())
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Session {
    /// Sends QUIT (bounded by [`QUIT_TIMEOUT`]) and closes.
    async fn quit(mut self) {
        self.client.timeout = QUIT_TIMEOUT;
        let _ = self.client.quit().await;
    }
}

fn boxed<T: Stream + 'static>(client: SmtpClient<T>) -> SmtpClient<Box<dyn Stream>> {
    SmtpClient {
        stream: Box::new(client.stream),
        timeout: client.timeout,
    }
}

/// Reads the greeting; anything but 220 refuses the session.
async fn read_greeting<T: AsyncRead + AsyncWrite + Unpin>(
    client: &mut SmtpClient<T>,
    target: &str,
) -> Result<(), SessionError> {
    let response = tokio::time::timeout(client.timeout, client.read())
        .await
        .map_err(|_| SessionError::Timeout {
            target: target.to_string(),
            stage: Stage::Greeting,
        })?
        .map_err(|e| SessionError::from_mail_send(target, Stage::Greeting, e))?;
    let reply = reply_of!(response);
    if reply.code == 220 {
        Ok(())
    } else {
        Err(SessionError::SessionRefused {
            target: target.to_string(),
            stage: Stage::Greeting,
            reply,
        })
    }
}

/// What the server's EHLO answer offered (nothing after a HELO).
#[derive(Debug, Clone, Copy, Default)]
struct Offered {
    starttls: bool,
    pipelining: bool,
}

/// Says EHLO (HELO if the server does not know EHLO), authenticates when credentials are
/// given, and tells what the server offers.
async fn hello<T: AsyncRead + AsyncWrite + Unpin>(
    client: &mut SmtpClient<T>,
    helo_name: &str,
    credentials: Option<&Credentials<String>>,
    target: &str,
) -> Result<Offered, SessionError> {
    let ehlo = match client.ehlo(helo_name).await {
        Ok(ehlo) => Some(ehlo),
        Err(mail_send::Error::UnexpectedReply(response)) if matches!(response.code, 500 | 502) => {
            let response = client
                .cmd(format!("HELO {helo_name}\r\n"))
                .await
                .map_err(|e| SessionError::from_mail_send(target, Stage::Ehlo, e))?;
            let reply = reply_of!(response);
            if !reply.is_positive() {
                return Err(SessionError::SessionRefused {
                    target: target.to_string(),
                    stage: Stage::Ehlo,
                    reply,
                });
            }
            None
        }
        Err(e) => return Err(SessionError::from_mail_send(target, Stage::Ehlo, e)),
    };
    if let Some(credentials) = credentials {
        let Some(ehlo) = &ehlo else {
            return Err(SessionError::Auth {
                target: target.to_string(),
                message: "the server does not speak ESMTP (no AUTH)".to_string(),
                reply: None,
            });
        };
        client
            .authenticate(credentials, ehlo)
            .await
            .map_err(|e| SessionError::from_mail_send(target, Stage::Auth, e))?;
    }
    Ok(Offered {
        starttls: ehlo
            .as_ref()
            .is_some_and(|e| e.has_capability(EXT_START_TLS)),
        pipelining: ehlo
            .as_ref()
            .is_some_and(|e| e.has_capability(EXT_PIPELINING)),
    })
}

// ---------------------------------------------------------------------------------------
// The pool

/// SMTP sessions pooled per destination, shared by all delivery tasks (cheap to clone).
///
/// - A session carries several messages (each transaction after the first starts with
///   RSET, pipelined with its commands when the server offers PIPELINING; a pooled session
///   the server closed meanwhile is replaced and the transaction run again) and is closed
///   after `max_messages_per_connection`.
/// - Idle sessions older than `idle_timeout` are closed with QUIT, by a background task
///   (when created inside a tokio runtime) and on every checkout.
/// - At most `max_sessions_per_destination` sessions per destination are open; further
///   deliveries wait for one.
/// - A session that had a fault is dropped, never pooled.
#[derive(Clone)]
pub struct SmtpPool {
    inner: Arc<PoolInner>,
}

struct PoolInner {
    settings: SmtpSettings,
    /// Holds mail-send's TLS connector that verifies certificates (platform roots).
    verifying: SmtpClientBuilder<String>,
    /// Holds the connector that accepts any certificate.
    insecure: SmtpClientBuilder<String>,
    dests: Mutex<HashMap<DestKey, Arc<DestPool>>>,
    open: Arc<AtomicUsize>,
    closed: AtomicBool,
}

struct DestPool {
    /// One permit per session in use; idle sessions hold none.
    permits: Arc<Semaphore>,
    /// Idle sessions, most recently used last.
    idle: Mutex<Vec<IdleSession>>,
}

struct IdleSession {
    session: Session,
    since: Instant,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl fmt::Debug for SmtpPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SmtpPool")
            .field("settings", &self.inner.settings)
            .field("open_sessions", &self.open_sessions())
            .finish_non_exhaustive()
    }
}

impl SmtpPool {
    /// Creates a pool. Inside a tokio runtime this also starts the idle reaper, which
    /// stops when the last clone of the pool is dropped or on [`SmtpPool::shutdown`].
    pub fn new(settings: SmtpSettings) -> Result<Self, PoolSetupError> {
        let mut settings = settings;
        settings.max_messages_per_connection = settings.max_messages_per_connection.max(1);
        settings.max_sessions_per_destination = settings.max_sessions_per_destination.max(1);
        let verifying = SmtpClientBuilder::new("localhost".to_string(), 25)
            .map_err(PoolSetupError)?
            .helo_host(settings.helo_name.clone());
        let insecure = verifying.clone().allow_invalid_certs();
        let inner = Arc::new(PoolInner {
            settings,
            verifying,
            insecure,
            dests: Mutex::new(HashMap::new()),
            open: Arc::new(AtomicUsize::new(0)),
            closed: AtomicBool::new(false),
        });
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(reaper(Arc::downgrade(&inner)));
        }
        Ok(SmtpPool { inner })
    }

    /// The settings in use.
    pub fn settings(&self) -> &SmtpSettings {
        &self.inner.settings
    }

    /// Sessions open now, in use or idle (for the `smtp_sessions_open` metric).
    pub fn open_sessions(&self) -> usize {
        self.inner.open.load(Ordering::Relaxed)
    }

    /// Idle sessions waiting in the pool.
    pub fn idle_sessions(&self) -> usize {
        let dests = lock(&self.inner.dests);
        dests.values().map(|d| lock(&d.idle).len()).sum()
    }

    /// Runs one SMTP transaction: `MAIL FROM`, one `RCPT TO` per recipient, and `DATA`
    /// when at least one recipient was accepted. Returns one result per recipient, in
    /// order. A refusal at MAIL FROM applies to every recipient, and the DATA reply to
    /// every recipient accepted at RCPT.
    ///
    /// `message` is the complete message (CRLF line endings); it is dot-stuffed here.
    /// `Err` means no usable answer (connect, TLS, timeout, broken connection): defer
    /// every recipient. A fault after the message was sent but before the final reply is
    /// also an `Err`, so delivery is at least once.
    pub async fn deliver(
        &self,
        dest: &Destination,
        envelope_from: &str,
        recipients: &[String],
        message: &[u8],
    ) -> Result<Vec<RcptResult>, SessionError> {
        if recipients.is_empty() {
            return Ok(Vec::new());
        }
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(SessionError::ShutDown);
        }
        let dest_pool = self.dest_pool(dest);
        let permit = dest_pool
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| SessionError::ShutDown)?;

        let target = dest.to_string();
        let settings = &self.inner.settings;
        let (mut session, mut pooled) = match self.take_idle(&dest_pool) {
            Some(session) => (session, true),
            None => (self.open(dest).await?, false),
        };
        let results = loop {
            let attempt = transaction(
                &mut session,
                settings,
                &target,
                envelope_from,
                recipients,
                message,
            )
            .await;
            match attempt {
                Ok(results) => break results,
                Err(failure) if pooled && failure.before_message => {
                    // The server closed the pooled session while it waited (or it broke):
                    // nothing of this transaction was taken, so it runs once more on a new
                    // session.
                    tracing::debug!(target = %target, error = %failure.error, "pooled SMTP session unusable; opening a new one");
                    session = self.open(dest).await?;
                    pooled = false;
                }
                Err(failure) => return Err(failure.error),
            }
        };

        session.messages += 1;
        if session.messages >= settings.max_messages_per_connection
            || self.inner.closed.load(Ordering::Acquire)
        {
            session.quit().await;
        } else {
            lock(&dest_pool.idle).push(IdleSession {
                session,
                since: Instant::now(),
            });
        }
        drop(permit);
        Ok(results)
    }

    /// Direct delivery to `domain` (the recipients' domain): resolves its mail hosts and
    /// runs the transaction with the first address that answers, in MX order
    /// (RFC 5321 §5.1). A session fault (refused, TLS, greeting refusal, timeout) moves on
    /// to the next address, at most [`MAX_MX_ADDRESSES`] of them; a fault after DATA
    /// started stops there (the message may have arrived). Certificates are not verified
    /// (see [`Destination::mx`]); `starttls` is `delivery.direct.starttls`.
    #[allow(clippy::too_many_arguments)]
    pub async fn deliver_direct(
        &self,
        resolver: &TokioResolver,
        domain: &str,
        port: u16,
        starttls: StartTlsPolicy,
        envelope_from: &str,
        recipients: &[String],
        message: &[u8],
    ) -> Result<Vec<RcptResult>, DirectError> {
        let hosts = resolve_mx(resolver, domain).await?;
        let mut last = None;
        // Collected: a lazy iterator of closures held across the awaits below makes the
        // future fail the `Send` check of `tokio::spawn` (rustc's higher-ranked lifetimes).
        let candidates: Vec<(&MxHost, IpAddr)> = hosts
            .iter()
            .flat_map(|host| host.addrs.iter().map(move |ip| (host, *ip)))
            .take(MAX_MX_ADDRESSES)
            .collect();
        for (host, ip) in candidates {
            let dest = Destination::mx(host.host.clone(), ip, port, starttls);
            match self
                .deliver(&dest, envelope_from, recipients, message)
                .await
            {
                Ok(results) => return Ok(results),
                Err(e) if matches!(e, SessionError::ShutDown) || e.stage() == Some(Stage::Data) => {
                    last = Some(e);
                    break;
                }
                Err(e) => {
                    tracing::debug!(target = %dest, error = %e, "mail host failed; trying the next");
                    last = Some(e);
                }
            }
        }
        Err(DirectError::Unreachable {
            domain: domain.to_string(),
            last: last.unwrap_or(SessionError::Resolve {
                target: domain.to_string(),
                message: "no mail host".to_string(),
            }),
        })
    }

    /// Closes idle sessions with QUIT and refuses further deliveries. Sessions in use
    /// finish their transaction and are then closed.
    pub async fn shutdown(&self) {
        self.inner.closed.store(true, Ordering::Release);
        let sessions: Vec<Session> = {
            let dests = lock(&self.inner.dests);
            dests
                .values()
                .flat_map(|d| lock(&d.idle).drain(..).collect::<Vec<_>>())
                .map(|idle| idle.session)
                .collect()
        };
        quit_all(sessions).await;
    }

    /// Closes idle sessions older than `idle_timeout` now (the reaper does this
    /// periodically) and forgets destinations with no session.
    pub async fn close_idle(&self) {
        let expired = self.inner.take_expired();
        quit_all(expired).await;
    }

    fn dest_pool(&self, dest: &Destination) -> Arc<DestPool> {
        let mut dests = lock(&self.inner.dests);
        dests
            .entry(dest.key())
            .or_insert_with(|| {
                Arc::new(DestPool {
                    permits: Arc::new(Semaphore::new(
                        self.inner.settings.max_sessions_per_destination,
                    )),
                    idle: Mutex::new(Vec::new()),
                })
            })
            .clone()
    }

    /// The most recent idle session; expired ones are closed. Whether it still works shows
    /// in its next transaction, which starts with RSET (see [`transaction`]).
    fn take_idle(&self, dest_pool: &DestPool) -> Option<Session> {
        let idle_timeout = self.inner.settings.idle_timeout;
        loop {
            let idle = lock(&dest_pool.idle).pop()?;
            if idle.since.elapsed() >= idle_timeout {
                tokio::spawn(idle.session.quit());
                continue;
            }
            return Some(idle.session);
        }
    }

    /// Opens a new session, falling back to plain text when an opportunistic STARTTLS
    /// handshake fails.
    async fn open(&self, dest: &Destination) -> Result<Session, SessionError> {
        match self.connect(dest, true).await {
            Err(e) if dest.tls == TlsMode::Opportunistic && e.is_starttls_failure() => {
                tracing::warn!(target = %dest, error = %e, "STARTTLS failed; retrying in plain text");
                self.connect(dest, false).await
            }
            other => other,
        }
    }

    async fn connect(
        &self,
        dest: &Destination,
        try_starttls: bool,
    ) -> Result<Session, SessionError> {
        let settings = &self.inner.settings;
        let target = dest.to_string();
        let tcp = connect_tcp(dest, settings.connect_timeout, &target).await?;
        let builder = if dest.allow_invalid_certs {
            &self.inner.insecure
        } else {
            &self.inner.verifying
        };
        let connector = &builder.tls_connector;
        let credentials = dest
            .credentials
            .as_ref()
            .map(|(user, pass)| Credentials::new(user.clone(), pass.clone()));
        let helo = settings.helo_name.as_str();
        let tls_error = |e| SessionError::from_mail_send(&target, Stage::StartTls, e);

        let mut client = SmtpClient {
            stream: tcp,
            timeout: settings.connect_timeout,
        };
        let (client, offered) = match dest.tls {
            TlsMode::Implicit => {
                let mut client = boxed(
                    client
                        .into_tls(connector, &dest.host)
                        .await
                        .map_err(tls_error)?,
                );
                client.timeout = settings.command_timeout;
                read_greeting(&mut client, &target).await?;
                let offered = hello(&mut client, helo, credentials.as_ref(), &target).await?;
                (client, offered)
            }
            mode => {
                client.timeout = settings.command_timeout;
                read_greeting(&mut client, &target).await?;
                let wants_tls = match mode {
                    TlsMode::StartTls => true,
                    TlsMode::Opportunistic => try_starttls,
                    _ => false,
                };
                let offered = hello(
                    &mut client,
                    helo,
                    credentials.as_ref().filter(|_| !wants_tls),
                    &target,
                )
                .await?;
                if mode == TlsMode::StartTls && !offered.starttls {
                    return Err(SessionError::StartTlsNotOffered {
                        target: target.clone(),
                    });
                }
                if wants_tls && offered.starttls {
                    let response = client.cmd(b"STARTTLS\r\n").await.map_err(tls_error)?;
                    let reply = reply_of!(response);
                    if reply.code != 220 {
                        return Err(SessionError::SessionRefused {
                            target: target.clone(),
                            stage: Stage::StartTls,
                            reply,
                        });
                    }
                    client.timeout = settings.connect_timeout;
                    let mut client = boxed(
                        client
                            .into_tls(connector, &dest.host)
                            .await
                            .map_err(tls_error)?,
                    );
                    client.timeout = settings.command_timeout;
                    let offered = hello(&mut client, helo, credentials.as_ref(), &target).await?;
                    (client, offered)
                } else {
                    if wants_tls && credentials.is_some() {
                        // Opportunistic TLS was not offered: authenticate in plain text.
                        hello(&mut client, helo, credentials.as_ref(), &target).await?;
                    }
                    (boxed(client), offered)
                }
            }
        };
        Ok(Session {
            client,
            messages: 0,
            pipelining: offered.pipelining,
            used: false,
            _open: OpenGuard::new(&self.inner.open),
        })
    }
}

impl PoolInner {
    /// Removes idle sessions past the idle timeout, and destinations with nothing left.
    fn take_expired(&self) -> Vec<Session> {
        let idle_timeout = self.settings.idle_timeout;
        let mut dests = lock(&self.dests);
        let mut expired = Vec::new();
        dests.retain(|_, dest_pool| {
            let mut idle = lock(&dest_pool.idle);
            let (old, fresh): (Vec<_>, Vec<_>) = idle
                .drain(..)
                .partition(|i| i.since.elapsed() >= idle_timeout);
            *idle = fresh;
            expired.extend(old.into_iter().map(|i| i.session));
            // Only the map holds a reference: no delivery is using or waiting on it.
            !idle.is_empty() || Arc::strong_count(dest_pool) > 1
        });
        expired
    }
}

/// Closes expired idle sessions periodically until the pool is dropped or shut down.
async fn reaper(pool: Weak<PoolInner>) {
    let period = match pool.upgrade() {
        Some(inner) => (inner.settings.idle_timeout / 2)
            .clamp(Duration::from_millis(20), Duration::from_secs(15)),
        None => return,
    };
    loop {
        tokio::time::sleep(period).await;
        let Some(inner) = pool.upgrade() else { return };
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        let expired = inner.take_expired();
        drop(inner);
        quit_all(expired).await;
    }
}

async fn quit_all(sessions: Vec<Session>) {
    let mut tasks = JoinSet::new();
    for session in sessions {
        tasks.spawn(session.quit());
    }
    while tasks.join_next().await.is_some() {}
}

/// Connects to the destination's address, or to each address of its host in turn.
async fn connect_tcp(
    dest: &Destination,
    timeout: Duration,
    target: &str,
) -> Result<TcpStream, SessionError> {
    let addrs: Vec<SocketAddr> = match dest.ip {
        Some(ip) => vec![SocketAddr::new(ip, dest.port)],
        None => tokio::time::timeout(
            timeout,
            tokio::net::lookup_host((dest.host.as_str(), dest.port)),
        )
        .await
        .map_err(|_| SessionError::Timeout {
            target: target.to_string(),
            stage: Stage::Connect,
        })?
        .map_err(|e| SessionError::Resolve {
            target: target.to_string(),
            message: e.to_string(),
        })?
        .collect(),
    };
    let mut last_error = SessionError::Resolve {
        target: target.to_string(),
        message: "no addresses".to_string(),
    };
    for addr in addrs {
        match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
                last_error = SessionError::Refused {
                    target: target.to_string(),
                }
            }
            Ok(Err(source)) => {
                last_error = SessionError::Connect {
                    target: target.to_string(),
                    source,
                }
            }
            Err(_) => {
                last_error = SessionError::Timeout {
                    target: target.to_string(),
                    stage: Stage::Connect,
                }
            }
        }
    }
    Err(last_error)
}

// ---------------------------------------------------------------------------------------
// One transaction

/// True when the address can be put in `MAIL FROM:<...>` / `RCPT TO:<...>` as is.
fn is_wire_safe(address: &str) -> bool {
    !address
        .bytes()
        .any(|b| b.is_ascii_control() || matches!(b, b'<' | b'>' | b' '))
}

/// A transaction that got no usable answer; the session is unusable afterwards.
#[derive(Debug)]
struct Failure {
    error: SessionError,
    /// The fault came before the message was sent (while the commands were answered): on a
    /// pooled session that the server had closed while it waited, the transaction can run
    /// again on a new session with nothing delivered twice.
    before_message: bool,
}

impl Failure {
    fn before_message(error: SessionError) -> Failure {
        Failure {
            error,
            before_message: true,
        }
    }

    fn during_message(error: SessionError) -> Failure {
        Failure {
            error,
            before_message: false,
        }
    }
}

/// The replies to the commands of one transaction.
struct Replies {
    mail: Reply,
    /// One per recipient sent on the wire, in order.
    rcpt: Vec<Reply>,
    /// `None` when DATA was not sent (no recipient was accepted).
    data: Option<Reply>,
}

/// MAIL, RCPT..., DATA and the message on an open session.
///
/// With PIPELINING (RFC 2920) the commands go out in one write (after an RSET when the
/// session carried a transaction before) and their replies come back together: two round
/// trips per message, where one command at a time takes four or five. Without it, one
/// command at a time. The message goes out dot-stuffed in one write.
async fn transaction(
    session: &mut Session,
    settings: &SmtpSettings,
    target: &str,
    envelope_from: &str,
    recipients: &[String],
    message: &[u8],
) -> Result<Vec<RcptResult>, Failure> {
    session.client.timeout = settings.command_timeout;
    let all = |outcome: Outcome| -> Vec<RcptResult> {
        recipients
            .iter()
            .map(|recipient| RcptResult {
                recipient: recipient.clone(),
                outcome: outcome.clone(),
            })
            .collect()
    };
    if !is_wire_safe(envelope_from) {
        return Ok(all(Outcome::Rejected(Reply::local(
            553,
            (5, 1, 7),
            "invalid sender address (not sent)",
        ))));
    }
    let on_wire: Vec<usize> = (0..recipients.len())
        .filter(|i| is_wire_safe(&recipients[*i]))
        .collect();
    let mut results: Vec<RcptResult> = recipients
        .iter()
        .map(|recipient| RcptResult {
            recipient: recipient.clone(),
            outcome: Outcome::Rejected(Reply::local(
                553,
                (5, 1, 3),
                "invalid recipient address (not sent)",
            )),
        })
        .collect();
    if on_wire.is_empty() {
        return Ok(results);
    }
    let wire_rcpts: Vec<&str> = on_wire.iter().map(|i| recipients[*i].as_str()).collect();
    let rset = session.used;
    session.used = true;
    let replies = if session.pipelining {
        pipelined_commands(session, target, rset, envelope_from, &wire_rcpts).await?
    } else {
        one_by_one_commands(session, target, rset, envelope_from, &wire_rcpts).await?
    };
    let client = &mut session.client;

    if !replies.mail.is_positive() {
        if replies.data.as_ref().is_some_and(|d| d.code == 354) {
            end_empty_data(client, target).await?;
        }
        return Ok(all(Outcome::from_refusal(replies.mail)));
    }
    let mut accepted = Vec::new();
    for (slot, reply) in on_wire.iter().zip(replies.rcpt) {
        results[*slot].outcome = if reply.is_positive() {
            accepted.push(*slot);
            Outcome::Accepted(reply)
        } else {
            Outcome::from_refusal(reply)
        };
    }
    let Some(data) = replies.data else {
        return Ok(results);
    };
    if accepted.is_empty() {
        // Pipelined DATA after every RCPT was refused: a server should refuse it (554),
        // but one that answered 354 waits for a message; give it an empty one.
        if data.code == 354 {
            end_empty_data(client, target).await?;
        }
        return Ok(results);
    }
    let final_reply = if data.code == 354 {
        let wire = dot_stuffed(message);
        let response = tokio::time::timeout(settings.data_timeout, async {
            client.stream.write_all(&wire).await?;
            client.stream.flush().await?;
            client.read().await
        })
        .await
        .map_err(|_| {
            Failure::during_message(SessionError::Timeout {
                target: target.to_string(),
                stage: Stage::Data,
            })
        })?
        .map_err(|e| {
            Failure::during_message(SessionError::from_mail_send(target, Stage::Data, e))
        })?;
        reply_of!(response)
    } else {
        data
    };
    let outcome = if final_reply.is_positive() {
        Outcome::Accepted(final_reply)
    } else {
        Outcome::from_refusal(final_reply)
    };
    for slot in accepted {
        results[slot].outcome = outcome.clone();
    }
    Ok(results)
}

/// RSET (when asked), MAIL, every RCPT and DATA in one write; then their replies.
async fn pipelined_commands(
    session: &mut Session,
    target: &str,
    rset: bool,
    envelope_from: &str,
    recipients: &[&str],
) -> Result<Replies, Failure> {
    use std::fmt::Write as _;
    let mut commands = String::with_capacity(64 + 40 * recipients.len());
    if rset {
        commands.push_str("RSET\r\n");
    }
    let _ = write!(commands, "MAIL FROM:<{envelope_from}>\r\n");
    for recipient in recipients {
        let _ = write!(commands, "RCPT TO:<{recipient}>\r\n");
    }
    commands.push_str("DATA\r\n");
    let expected = usize::from(rset) + recipients.len() + 2;
    let stage = if rset { Stage::Rset } else { Stage::MailFrom };
    // One write for every command (mail-send's `cmds` writes each on its own).
    let client = &mut session.client;
    let responses = tokio::time::timeout(client.timeout, async {
        client.stream.write_all(commands.as_bytes()).await?;
        client.stream.flush().await?;
        client.read_many(expected).await
    })
    .await
    .map_err(|_| {
        Failure::before_message(SessionError::Timeout {
            target: target.to_string(),
            stage,
        })
    })?
    .map_err(|e| Failure::before_message(SessionError::from_mail_send(target, stage, e)))?;
    if responses.len() != expected {
        return Err(Failure::before_message(SessionError::Protocol {
            target: target.to_string(),
            stage,
            message: format!(
                "{} replies to {expected} pipelined commands",
                responses.len()
            ),
        }));
    }
    let mut replies = responses.into_iter().map(|r| reply_of!(r));
    let mut next = || replies.next().expect("counted above");
    if rset {
        let reply = next();
        if !reply.is_positive() {
            return Err(Failure::before_message(SessionError::SessionRefused {
                target: target.to_string(),
                stage: Stage::Rset,
                reply,
            }));
        }
    }
    let mail = next();
    let rcpt = (0..recipients.len()).map(|_| next()).collect();
    let data = Some(next());
    Ok(Replies { mail, rcpt, data })
}

/// The same commands one at a time, for servers without PIPELINING.
async fn one_by_one_commands(
    session: &mut Session,
    target: &str,
    rset: bool,
    envelope_from: &str,
    recipients: &[&str],
) -> Result<Replies, Failure> {
    let client = &mut session.client;
    let fault = |stage: Stage| {
        move |e| Failure::before_message(SessionError::from_mail_send(target, stage, e))
    };
    if rset {
        client.rset().await.map_err(fault(Stage::Rset))?;
    }
    let response = client
        .cmd(format!("MAIL FROM:<{envelope_from}>\r\n"))
        .await
        .map_err(fault(Stage::MailFrom))?;
    let mail = reply_of!(response);
    if !mail.is_positive() {
        return Ok(Replies {
            mail,
            rcpt: Vec::new(),
            data: None,
        });
    }
    let mut rcpt = Vec::with_capacity(recipients.len());
    for recipient in recipients {
        let response = client
            .cmd(format!("RCPT TO:<{recipient}>\r\n"))
            .await
            .map_err(fault(Stage::RcptTo))?;
        rcpt.push(reply_of!(response));
    }
    let data = if rcpt.iter().any(Reply::is_positive) {
        let response = client.cmd(b"DATA\r\n").await.map_err(fault(Stage::Data))?;
        Some(reply_of!(response))
    } else {
        None
    };
    Ok(Replies { mail, rcpt, data })
}

/// Ends a DATA the server opened although no recipient was accepted.
async fn end_empty_data<T: AsyncRead + AsyncWrite + Unpin>(
    client: &mut SmtpClient<T>,
    target: &str,
) -> Result<(), Failure> {
    client
        .cmd(b".\r\n")
        .await
        .map(|_| ())
        .map_err(|e| Failure::during_message(SessionError::from_mail_send(target, Stage::Data, e)))
}

/// The message as it goes on the wire after DATA: a line that starts with a dot gets one
/// more (RFC 5321 §4.5.2), the last line ends with CRLF, and `.` CRLF ends it.
fn dot_stuffed(message: &[u8]) -> Vec<u8> {
    let mut wire = Vec::with_capacity(message.len() + message.len() / 64 + 5);
    // Whole runs between the dots that start a line, found with memchr: copying byte by
    // byte was a thirteenth of the delivery worker's time.
    let mut copied = 0;
    if message.first() == Some(&b'.') {
        wire.push(b'.');
    }
    for newline in memchr::memchr_iter(b'\n', message) {
        if message.get(newline + 1) == Some(&b'.') {
            wire.extend_from_slice(&message[copied..=newline]);
            wire.push(b'.');
            copied = newline + 1;
        }
    }
    wire.extend_from_slice(&message[copied..]);
    if !wire.is_empty() && !wire.ends_with(b"\r\n") {
        wire.extend_from_slice(b"\r\n");
    }
    wire.extend_from_slice(b".\r\n");
    wire
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_stuffing() {
        assert_eq!(dot_stuffed(b""), b".\r\n");
        assert_eq!(dot_stuffed(b"a\r\nb\r\n"), b"a\r\nb\r\n.\r\n");
        assert_eq!(dot_stuffed(b"a\r\nb"), b"a\r\nb\r\n.\r\n");
        assert_eq!(
            dot_stuffed(b".a\r\n..b\r\nc.d\r\n.\r\n."),
            b"..a\r\n...b\r\nc.d\r\n..\r\n..\r\n.\r\n"
        );
    }

    #[test]
    fn reply_display() {
        let reply = Reply::new(250, [2, 0, 0], "Ok: queued as X");
        assert_eq!(reply.to_string(), "250 2.0.0 Ok: queued as X");
        let reply = Reply::new(550, [0, 0, 0], "No such user\nhere");
        assert_eq!(reply.enhanced, None);
        assert_eq!(reply.to_string(), "550 No such user here");
    }

    #[test]
    fn parse_modes() {
        assert_eq!("STARTTLS".parse::<TlsMode>(), Ok(TlsMode::StartTls));
        assert_eq!("none".parse::<TlsMode>(), Ok(TlsMode::None));
        assert!("tls".parse::<TlsMode>().is_err());
        assert_eq!(
            "required"
                .parse::<StartTlsPolicy>()
                .map(StartTlsPolicy::tls_mode),
            Ok(TlsMode::StartTls)
        );
    }

    #[test]
    fn wire_safety() {
        assert!(is_wire_safe("a.b+c@example.org"));
        assert!(is_wire_safe(""));
        assert!(!is_wire_safe("a@b>\r\nRCPT TO:<c@d"));
    }

    #[test]
    fn destination_display() {
        let dest = Destination::mx(
            "mx.example.org",
            "192.0.2.1".parse().unwrap(),
            25,
            StartTlsPolicy::Opportunistic,
        );
        assert_eq!(dest.to_string(), "mx.example.org[192.0.2.1]:25");
        let dest = Destination::relay("smtp.example.org", 587, TlsMode::StartTls, None);
        assert_eq!(dest.to_string(), "smtp.example.org:587");
    }
}
