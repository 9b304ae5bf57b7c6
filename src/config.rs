//! Typed configuration: embedded defaults, then `mailsflux.toml` (or `--config FILE`), then
//! `MAILSFLUX_<SECTION>__<KEY>` environment variables.
//!
//! Every key of API.md is accepted from the first release, also where its feature is small
//! today, so that a file written against the contract never stops a start. An unknown key or
//! a bad value is a [`ConfigError`] that names the setting and what it allows; `main` turns it
//! into exit code 2.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Serialized, Toml};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The whole configuration. Each section mirrors a `[section]` of `mailsflux.toml`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub delivery: DeliveryConfig,
    pub domains: DomainsConfig,
    pub dns: DnsConfig,
    pub webhooks: WebhooksConfig,
    pub limits: LimitsConfig,
    pub postal: PostalConfig,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Base of tracking, unsubscribe and dashboard links.
    pub public_url: String,
    pub max_body_bytes: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8825)),
            public_url: "http://127.0.0.1:8825".into(),
            max_body_bytes: 40 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DatabaseConfig {
    pub path: PathBuf,
    pub synchronous: Synchronous,
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            path: PathBuf::from("mailsflux.db"),
            synchronous: Synchronous::Normal,
        }
    }
}

/// SQLite's `synchronous` pragma. `full` fsyncs every commit; group commit keeps it cheap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Synchronous {
    Normal,
    Full,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    pub mode: DeliveryMode,
    /// EHLO name and the Message-ID domain fallback.
    pub hostname: String,
    /// SMTP sessions at once.
    pub concurrency: usize,
    pub retry_schedule: Vec<DurationSetting>,
    pub require_verified_domain: bool,
    pub direct: DirectConfig,
    pub relay: RelayConfig,
    /// SMTP timeouts and pool limits. Not settable from the file or the environment (the
    /// defaults suit every deployment we know of); tests shorten them in-process.
    #[serde(skip)]
    pub tuning: DeliveryTuning,
}

/// SMTP timeouts and pool limits of the delivery worker (see `delivery::smtp::SmtpSettings`).
#[derive(Debug, Clone)]
pub struct DeliveryTuning {
    /// TCP connect (each address) and the TLS handshake.
    pub connect_timeout: Duration,
    /// Each command's reply, including the greeting.
    pub command_timeout: Duration,
    /// Sending the message body and reading the final reply.
    pub data_timeout: Duration,
    /// Idle pooled SMTP sessions older than this are closed with QUIT.
    pub idle_timeout: Duration,
    /// Messages per SMTP session before it is closed and a fresh one is opened.
    pub max_messages_per_connection: usize,
    /// SMTP sessions open at once to one destination: one recipient domain / MX address in
    /// direct mode (20, Postfix's `default_destination_concurrency_limit`). The relay is
    /// the only destination of relay mode, so there the limit is `delivery.concurrency`.
    /// `Some` overrides both.
    pub max_sessions_per_destination: Option<usize>,
    /// How long a claimed recipient stays leased without renewal (see
    /// `delivery::queue::LEASE`; tests shorten it).
    pub lease: Duration,
}

impl Default for DeliveryTuning {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(30),
            command_timeout: Duration::from_secs(120),
            data_timeout: Duration::from_secs(600),
            idle_timeout: Duration::from_secs(30),
            max_messages_per_connection: 1000,
            max_sessions_per_destination: None,
            lease: crate::delivery::queue::LEASE,
        }
    }
}

impl DeliveryConfig {
    /// SMTP sessions open at once to one destination (see
    /// [`DeliveryTuning::max_sessions_per_destination`]).
    pub fn sessions_per_destination(&self) -> usize {
        let limit = match (self.tuning.max_sessions_per_destination, self.mode) {
            (Some(n), _) => n,
            (None, DeliveryMode::Relay) => self.concurrency,
            (None, DeliveryMode::Direct) => 20,
        };
        limit.max(1)
    }
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            mode: DeliveryMode::Direct,
            hostname: "localhost".into(),
            concurrency: 64,
            retry_schedule: ["1m", "5m", "15m", "1h", "3h", "6h", "12h", "24h"]
                .iter()
                .map(|s| DurationSetting::parse(s).expect("valid default"))
                .collect(),
            require_verified_domain: true,
            direct: DirectConfig::default(),
            relay: RelayConfig::default(),
            tuning: DeliveryTuning::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryMode {
    Direct,
    Relay,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DirectConfig {
    /// The MX port; tests point it elsewhere.
    pub port: u16,
    pub starttls: DirectStartTls,
}

impl Default for DirectConfig {
    fn default() -> Self {
        Self {
            port: 25,
            starttls: DirectStartTls::Opportunistic,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DirectStartTls {
    Opportunistic,
    Required,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RelayConfig {
    pub host: String,
    pub port: u16,
    pub tls: RelayTls,
    #[serde(deserialize_with = "string_like")]
    pub username: String,
    #[serde(deserialize_with = "string_like")]
    pub password: String,
    /// Accept any relay certificate (self-signed test servers). Tests only: it cannot be
    /// set from the file or the environment, so a production relay is always verified.
    #[serde(skip)]
    pub accept_invalid_certs_for_tests: bool,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 25,
            tls: RelayTls::Starttls,
            username: String::new(),
            password: String::new(),
            accept_invalid_certs_for_tests: false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RelayTls {
    None,
    Starttls,
    Implicit,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DomainsConfig {
    pub dkim_selector: String,
    /// The SPF value to publish; `{hostname}` stands for `delivery.hostname`.
    pub spf: String,
    /// Not a setting (no file or environment key): the timings of domain checks, fixed in
    /// code; tests shorten them.
    #[serde(skip)]
    pub timings: DomainTimings,
}

impl Default for DomainsConfig {
    fn default() -> Self {
        Self {
            dkim_selector: "mf".into(),
            spf: "v=spf1 a:{hostname} ~all".into(),
            timings: DomainTimings::default(),
        }
    }
}

/// How often domains are checked again in the background, and how long a domain may stay
/// unverified (pending, or a verified domain that lost a record) before it is `failed`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DomainTimings {
    /// Verified domains: every 6 hours.
    pub recheck_verified: Duration,
    /// Pending, partially verified and temporarily failing domains: every 15 minutes.
    pub recheck_pending: Duration,
    /// 72 hours, as Resend and Postmark do.
    pub give_up_after: Duration,
}

impl Default for DomainTimings {
    fn default() -> Self {
        Self {
            recheck_verified: Duration::from_secs(6 * 3600),
            recheck_pending: Duration::from_secs(15 * 60),
            give_up_after: Duration::from_secs(72 * 3600),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// Empty means the system's resolvers.
    pub nameservers: Vec<Nameserver>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    pub allow_private_targets: bool,
    pub timeout: DurationSetting,
    pub retry_schedule: Vec<DurationSetting>,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        Self {
            allow_private_targets: false,
            timeout: DurationSetting(Duration::from_secs(10)),
            retry_schedule: [
                "0s", "5s", "5m", "30m", "2h", "5h", "10h", "14h", "20h", "24h",
            ]
            .iter()
            .map(|s| DurationSetting::parse(s).expect("valid default"))
            .collect(),
        }
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Per API key; 0 turns the limit off.
    pub requests_per_second: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PostalConfig {
    pub vendor: PostalVendorName,
    pub parcel_vendor: ParcelVendorName,
    pub simulator: SimulatorConfig,
    pub lob: LobConfig,
    pub easypost: EasyPostConfig,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PostalVendorName {
    #[default]
    Simulator,
    Lob,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParcelVendorName {
    #[default]
    Simulator,
    Easypost,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SimulatorConfig {
    /// Time between tracking steps.
    pub step: DurationSetting,
}

impl Default for SimulatorConfig {
    fn default() -> Self {
        Self {
            step: DurationSetting(Duration::from_secs(60)),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LobConfig {
    #[serde(deserialize_with = "string_like")]
    pub api_key: String,
    pub base_url: String,
    #[serde(deserialize_with = "string_like")]
    pub webhook_secret: String,
}

impl Default for LobConfig {
    fn default() -> Self {
        Self {
            api_key: String::new(),
            base_url: "https://api.lob.com".into(),
            webhook_secret: String::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EasyPostConfig {
    #[serde(deserialize_with = "string_like")]
    pub api_key: String,
    pub base_url: String,
    pub carrier: String,
    pub service: String,
}

impl Default for EasyPostConfig {
    fn default() -> Self {
        Self {
            api_key: String::new(),
            base_url: "https://api.easypost.com".into(),
            carrier: "USPS".into(),
            service: "GroundAdvantage".into(),
        }
    }
}

/// A duration written as a string such as `"500ms"`, `"30s"`, `"5m"` or `"2h"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DurationSetting(pub Duration);

impl DurationSetting {
    pub fn parse(s: &str) -> Result<Self, String> {
        humantime::parse_duration(s.trim())
            .map(DurationSetting)
            .map_err(|_| {
                format!(
                    "'{s}' is not a duration; write it like \"500ms\", \"30s\", \"5m\" or \"2h\""
                )
            })
    }
}

impl Serialize for DurationSetting {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(self.0).to_string())
    }
}

impl<'de> Deserialize<'de> for DurationSetting {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        DurationSetting::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A DNS server address; the port defaults to 53.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Nameserver(pub SocketAddr);

impl Serialize for Nameserver {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_string())
    }
}

impl<'de> Deserialize<'de> for Nameserver {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        if let Ok(addr) = s.parse::<SocketAddr>() {
            return Ok(Nameserver(addr));
        }
        if let Ok(ip) = s.trim_matches(['[', ']']).parse::<std::net::IpAddr>() {
            return Ok(Nameserver(SocketAddr::new(ip, 53)));
        }
        Err(serde::de::Error::custom(format!(
            "'{s}' is not a nameserver address; write an IP with an optional port, like \"127.0.0.1:5353\""
        )))
    }
}

/// Accepts numbers and booleans for text settings: the file may say `password = 123456`.
fn string_like<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    struct Text;
    impl serde::de::Visitor<'_> for Text {
        type Value = String;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a text")
        }
        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<String, E> {
            Ok(v.to_string())
        }
        fn visit_bool<E: serde::de::Error>(self, v: bool) -> Result<String, E> {
            Ok(v.to_string())
        }
    }
    d.deserialize_any(Text)
}

/// A configuration problem that stops the start (exit code 2).
#[derive(Debug)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

const ENV_PREFIX: &str = "MAILSFLUX_";

/// One `MAILSFLUX_<SECTION>__<KEY>` variable as a configuration source.
///
/// figment's own `Env` parses every value as if it were TOML, so a password `0123` became
/// the number 123 and came back as the string "123", and one starting with `[` was refused
/// as a list. Here a value is kept as the text it is (the extraction is lossy, so "2525"
/// still fills a port and "true" a switch); only a value that starts like a list, a table
/// or a quoted string is parsed, which is how lists are written (`'["1s","2s"]'`) and how a
/// text starting with `[` can still be given (`'"[abc"'`).
struct EnvSetting {
    /// The setting's dotted path, e.g. `delivery.relay.port`.
    key: String,
    value: figment::value::Value,
}

impl EnvSetting {
    /// `figment` with the settings among the environment variables `vars` over it.
    fn merge_into(figment: Figment, vars: impl IntoIterator<Item = (String, String)>) -> Figment {
        vars.into_iter()
            .fold(figment, |figment, (name, text)| match setting_key(&name) {
                Some(key) => figment.merge(EnvSetting {
                    key,
                    value: env_value(&text),
                }),
                None => figment,
            })
    }
}

/// The dotted setting a variable named `MAILSFLUX_<SECTION>__<KEY>` (in any case) sets. A
/// name without a double underscore (`MAILSFLUX_ADMIN_PASSWORD`) is not a setting.
fn setting_key(name: &str) -> Option<String> {
    let rest = name
        .get(..ENV_PREFIX.len())
        .filter(|p| p.eq_ignore_ascii_case(ENV_PREFIX))
        .map(|_| &name[ENV_PREFIX.len()..])?;
    if !rest.contains("__") {
        return None;
    }
    let key = rest
        .split("__")
        .filter(|part| !part.is_empty())
        .map(str::to_ascii_lowercase)
        .collect::<Vec<_>>()
        .join(".");
    (!key.is_empty()).then_some(key)
}

/// The value of an environment variable, as [`EnvSetting`] reads it.
fn env_value(text: &str) -> figment::value::Value {
    if text.trim_start().starts_with(['[', '{', '"']) {
        text.parse().expect("parsing a figment value is infallible")
    } else {
        figment::value::Value::from(text.to_string())
    }
}

impl figment::Provider for EnvSetting {
    fn metadata(&self) -> figment::Metadata {
        // The name figment's `Env` gives, which error messages quote as the source.
        figment::Metadata::named(format!("`{ENV_PREFIX}` environment variable(s)"))
    }

    fn data(
        &self,
    ) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        let nested = figment::util::nest(&self.key, self.value.clone())
            .into_dict()
            .expect("a non-empty key nests into a table");
        Ok(figment::Profile::Default.collect(nested))
    }
}

impl Config {
    /// Loads defaults, then the file (an explicit `--config` must exist; `./mailsflux.toml` is
    /// read when present), then the environment, and checks every value.
    pub fn load(file: Option<&Path>) -> Result<Config, ConfigError> {
        let config: Config = Self::figment(file)?
            .extract_lossy()
            .map_err(describe_figment_error)?;
        config.check()?;
        Ok(config)
    }

    /// Only the `[database]` section, for the one-shot commands (`keys`, `migrate`): a bad
    /// setting elsewhere stops `serve`, not the commands that never use it.
    pub fn load_database(file: Option<&Path>) -> Result<DatabaseConfig, ConfigError> {
        let database: DatabaseConfig = Self::figment(file)?
            .extract_inner_lossy("database")
            .map_err(describe_figment_error)?;
        if database.path.as_os_str().is_empty() {
            return Err(ConfigError(format!(
                "invalid setting 'database.path' ({}): must not be empty",
                env_name("database.path")
            )));
        }
        Ok(database)
    }

    fn figment(file: Option<&Path>) -> Result<Figment, ConfigError> {
        let mut vars = Vec::new();
        for (name, value) in std::env::vars_os() {
            let Some(name) = name.to_str() else { continue };
            match value.into_string() {
                Ok(value) => vars.push((name.to_string(), value)),
                Err(_) if setting_key(name).is_some() => {
                    return Err(ConfigError(format!(
                        "the environment variable {name} is not valid UTF-8; settings are text"
                    )));
                }
                Err(_) => {}
            }
        }
        Self::figment_with(file, vars)
    }

    /// [`Config::figment`] with the environment's variables given.
    fn figment_with(
        file: Option<&Path>,
        vars: Vec<(String, String)>,
    ) -> Result<Figment, ConfigError> {
        let mut figment = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(path) => {
                if !path.is_file() {
                    return Err(ConfigError(format!(
                        "the configuration file {} does not exist (given with --config)",
                        path.display()
                    )));
                }
                figment = figment.merge(Toml::file_exact(path));
            }
            None => {
                let default = Path::new("mailsflux.toml");
                if default.is_file() {
                    figment = figment.merge(Toml::file_exact(default));
                }
            }
        }
        Ok(EnvSetting::merge_into(figment, vars))
    }

    /// Rules that types alone cannot say.
    fn check(&self) -> Result<(), ConfigError> {
        let fail = |setting: &str, what: String| {
            Err(ConfigError(format!(
                "invalid setting '{setting}' ({}): {what}",
                env_name(setting)
            )))
        };
        if url::Url::parse(&self.server.public_url)
            .map(|u| !matches!(u.scheme(), "http" | "https"))
            .unwrap_or(true)
        {
            return fail(
                "server.public_url",
                format!(
                    "'{}' is not an http(s) URL; write it like \"https://mail.example.com\"",
                    self.server.public_url
                ),
            );
        }
        if self.server.max_body_bytes < 1024 {
            return fail(
                "server.max_body_bytes",
                "must be at least 1024 bytes".to_string(),
            );
        }
        if self.database.path.as_os_str().is_empty() {
            return fail("database.path", "must not be empty".to_string());
        }
        if self.delivery.concurrency == 0 {
            return fail(
                "delivery.concurrency",
                "must be at least 1 SMTP session".to_string(),
            );
        }
        if self.delivery.hostname.trim().is_empty()
            || self.delivery.hostname.contains(char::is_whitespace)
        {
            return fail(
                "delivery.hostname",
                "must be a host name such as \"mail.example.com\"".to_string(),
            );
        }
        if self.delivery.relay.host.trim().is_empty() {
            return fail(
                "delivery.relay.host",
                "must name the relay host".to_string(),
            );
        }
        if self.domains.dkim_selector.is_empty()
            || !self
                .domains
                .dkim_selector
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
        {
            return fail(
                "domains.dkim_selector",
                "must be letters, digits and dashes, like \"mf\"".to_string(),
            );
        }
        if !self.domains.spf.starts_with("v=spf1") {
            return fail(
                "domains.spf",
                "must be an SPF record starting with \"v=spf1\"".to_string(),
            );
        }
        if self.webhooks.timeout.0.is_zero() {
            return fail("webhooks.timeout", "must be longer than 0s".to_string());
        }
        if self.postal.simulator.step.0.is_zero() {
            return fail(
                "postal.simulator.step",
                "must be longer than 0s".to_string(),
            );
        }
        // A vendor without its key could only fail every piece: stop the start instead.
        if self.postal.vendor == PostalVendorName::Lob && self.postal.lob.api_key.is_empty() {
            return fail(
                "postal.lob.api_key",
                "must be set when postal.vendor is \"lob\" (a secret key from Lob's dashboard)"
                    .to_string(),
            );
        }
        if self.postal.parcel_vendor == ParcelVendorName::Easypost
            && self.postal.easypost.api_key.is_empty()
        {
            return fail(
                "postal.easypost.api_key",
                "must be set when postal.parcel_vendor is \"easypost\"".to_string(),
            );
        }
        for (name, url) in [
            ("postal.lob.base_url", &self.postal.lob.base_url),
            ("postal.easypost.base_url", &self.postal.easypost.base_url),
        ] {
            if url::Url::parse(url).is_err() {
                return fail(name, format!("'{url}' is not a URL"));
            }
        }
        Ok(())
    }

    /// The retry schedule as plain durations.
    pub fn delivery_retry_schedule(&self) -> Vec<Duration> {
        self.delivery.retry_schedule.iter().map(|d| d.0).collect()
    }
}

/// `delivery.relay.port` -> `MAILSFLUX_DELIVERY__RELAY__PORT`.
pub fn env_name(setting: &str) -> String {
    format!(
        "{ENV_PREFIX}{}",
        setting.replace('.', "__").to_ascii_uppercase()
    )
}

/// What serde expected, in words for the person editing the file rather than Rust's
/// type names (`u16` means nothing to someone setting a port).
fn plain_expected(expected: &str) -> &str {
    match expected {
        "u8" => "a whole number from 0 to 255",
        "u16" => "a whole number from 0 to 65535",
        "u32" => "a whole number from 0 to 4294967295",
        "u64" | "usize" => "a whole number, 0 or more",
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number",
        "f32" | "f64" => "a number",
        "a boolean" => "true or false",
        "a string" | "a text" => {
            "a text (in quotes in the TOML file; in an environment variable, a text starting \
             with '[' is written in quotes: '\"[...\"')"
        }
        "a sequence" => {
            "a list in brackets, like [\"1s\", \"5m\"] (also in an environment variable)"
        }
        other => other,
    }
}

fn describe_figment_error(err: figment::Error) -> ConfigError {
    let mut lines = Vec::new();
    for e in err {
        let mut path: Vec<String> = e.path.clone();
        // Name the unknown key itself: depending on the source figment reports it on its
        // parent or already on the key.
        if let figment::error::Kind::UnknownField(field, _) = &e.kind
            && path.last() != Some(field)
        {
            path.push(field.clone());
        }
        let setting = path.join(".");
        let source = e
            .metadata
            .as_ref()
            .map(|m| m.name.to_string())
            .unwrap_or_else(|| "configuration".into());
        let what = match &e.kind {
            figment::error::Kind::UnknownField(field, expected) => format!(
                "'{field}' is not a setting{}",
                if expected.is_empty() {
                    String::new()
                } else {
                    format!("; the settings here are: {}", expected.join(", "))
                }
            ),
            figment::error::Kind::UnknownVariant(value, expected) => format!(
                "'{value}' is not allowed; use one of: {}",
                expected
                    .iter()
                    .map(|v| format!("\"{v}\""))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            figment::error::Kind::InvalidType(actual, expected)
            | figment::error::Kind::InvalidValue(actual, expected) => {
                format!("found {actual}, expected {}", plain_expected(expected))
            }
            other => other.to_string(),
        };
        // An entry of a list (`retry_schedule.1`) is set by the list's variable.
        let variable: Vec<&str> = path
            .iter()
            .map(String::as_str)
            .take_while(|part| !part.chars().all(|c| c.is_ascii_digit()))
            .collect();
        let env_hint = if variable.is_empty() {
            String::new()
        } else {
            format!(", env {}", env_name(&variable.join(".")))
        };
        lines.push(format!(
            "invalid setting '{setting}' (from {source}{env_hint}): {what}"
        ));
    }
    ConfigError(lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        Config::default().check().unwrap();
    }

    #[test]
    fn durations_parse() {
        assert_eq!(
            DurationSetting::parse("500ms").unwrap().0,
            Duration::from_millis(500)
        );
        assert_eq!(
            DurationSetting::parse("2h").unwrap().0,
            Duration::from_secs(7200)
        );
        assert!(DurationSetting::parse("soon").is_err());
    }

    #[test]
    fn test_only_settings_cannot_be_set_from_a_file() {
        for toml in [
            "[delivery.relay]\naccept_invalid_certs_for_tests = true",
            "[delivery.tuning]\nidle_timeout = \"1s\"",
        ] {
            let result: Result<Config, _> = Figment::from(Serialized::defaults(Config::default()))
                .merge(Toml::string(toml))
                .extract();
            assert!(result.is_err(), "{toml} was accepted");
        }
    }

    #[test]
    fn the_example_file_lists_the_defaults() {
        let example: Config = Figment::new()
            .merge(Toml::string(include_str!("../mailsflux.toml.example")))
            .extract()
            .expect("mailsflux.toml.example parses with no unknown key");
        let defaults = serde_json::to_value(Config::default()).unwrap();
        assert_eq!(serde_json::to_value(example).unwrap(), defaults);
    }

    #[test]
    fn a_remote_postal_vendor_needs_its_key() {
        let mut c = Config::default();
        c.postal.vendor = PostalVendorName::Lob;
        assert!(c.check().unwrap_err().0.contains("postal.lob.api_key"));
        c.postal.lob.api_key = "live_x".into();
        c.postal.parcel_vendor = ParcelVendorName::Easypost;
        assert!(c.check().unwrap_err().0.contains("postal.easypost.api_key"));
        c.postal.easypost.api_key = "EZAK".into();
        c.check().unwrap();
    }

    /// The configuration from the defaults and `vars` alone, as `Config::load` reads it.
    fn from_env(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars = vars
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect::<Vec<_>>();
        let defaults = Figment::from(Serialized::defaults(Config::default()));
        EnvSetting::merge_into(defaults, vars)
            .extract_lossy()
            .map_err(describe_figment_error)
    }

    #[test]
    fn environment_values_keep_their_text() {
        let c = from_env(&[
            ("MAILSFLUX_DELIVERY__RELAY__PASSWORD", "0123"),
            ("MAILSFLUX_DELIVERY__RELAY__USERNAME", "1e5"),
            ("MAILSFLUX_DATABASE__PATH", "2026"),
            ("MAILSFLUX_DELIVERY__RELAY__PORT", "2525"),
            ("MAILSFLUX_DELIVERY__REQUIRE_VERIFIED_DOMAIN", "true"),
            ("MAILSFLUX_DELIVERY__RETRY_SCHEDULE", r#"["1s", "2m"]"#),
            ("MAILSFLUX_DELIVERY__RELAY__HOST", r#""[::1]""#),
            // Not settings: no double underscore, or another prefix.
            ("MAILSFLUX_ADMIN_PASSWORD", "x"),
            ("OTHER__DATABASE__PATH", "elsewhere.db"),
            ("MAILSFLUX___", "nothing"),
        ])
        .unwrap();
        assert_eq!(c.delivery.relay.password, "0123");
        assert_eq!(c.delivery.relay.username, "1e5");
        assert_eq!(c.database.path, Path::new("2026"));
        assert_eq!(c.delivery.relay.port, 2525);
        assert!(c.delivery.require_verified_domain);
        let schedule: Vec<Duration> = c.delivery.retry_schedule.iter().map(|d| d.0).collect();
        assert_eq!(schedule, [Duration::from_secs(1), Duration::from_secs(120)]);
        assert_eq!(c.delivery.relay.host, "[::1]");
    }

    #[test]
    fn bad_values_are_named_with_what_is_allowed() {
        let message = |vars: &[(&str, &str)]| from_env(vars).unwrap_err().0;
        let port = message(&[("MAILSFLUX_DELIVERY__RELAY__PORT", "70000")]);
        assert!(port.contains("'delivery.relay.port'"), "{port}");
        assert!(port.contains("from 0 to 65535"), "{port}");
        let switch = message(&[("MAILSFLUX_DELIVERY__REQUIRE_VERIFIED_DOMAIN", "maybe")]);
        assert!(switch.contains("true or false"), "{switch}");
        let list = message(&[("MAILSFLUX_DELIVERY__RETRY_SCHEDULE", "1s")]);
        assert!(list.contains("a list in brackets"), "{list}");
        // An entry of a list is set through the list's variable.
        let entry = message(&[("MAILSFLUX_DELIVERY__RETRY_SCHEDULE", r#"["1s","2x"]"#)]);
        assert!(
            entry.contains("env MAILSFLUX_DELIVERY__RETRY_SCHEDULE)"),
            "{entry}"
        );
        let text = message(&[("MAILSFLUX_DELIVERY__RELAY__PASSWORD", "[a,b]")]);
        assert!(text.contains("written in quotes"), "{text}");
        // An unknown key is named once, from the environment and from a file.
        let unknown = message(&[("MAILSFLUX_SERVER__LISTENX", "1")]);
        assert!(unknown.contains("'server.listenx' ("), "{unknown}");
        let from_file = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string("[server]\nlistenx = 1\n"))
            .extract_lossy::<Config>()
            .map_err(describe_figment_error)
            .unwrap_err()
            .0;
        assert!(from_file.contains("'server.listenx' ("), "{from_file}");
        assert!(
            from_file.contains("env MAILSFLUX_SERVER__LISTENX)"),
            "{from_file}"
        );
    }

    #[test]
    fn env_names() {
        assert_eq!(
            env_name("delivery.relay.port"),
            "MAILSFLUX_DELIVERY__RELAY__PORT"
        );
    }
}
