//! Configuration: one TOML file plus environment overrides, validated once at start-up.
//!
//! [`RawConfig`] mirrors the file (every field documented, every field optional); [`Config::load`]
//! applies the environment on top and turns it into typed values, or refuses with a message that
//! names the key, the offending value and the fix. Nothing reads configuration after start-up.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::error::{Error, Result};
pub use conduit_wire::protocol::{AuthStyle, Protocol};
pub use conduit_wire::upstream::{Azure, Bedrock, RawUpstream, Upstream, Upstreams, parse_upstream};

/// The file as written by the operator. See `docs/configuration.md` for an annotated example.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Gateway listener, `host:port` (env `CONDUIT_LISTEN`; default `127.0.0.1:8080`).
    pub listen: Option<String>,
    /// Admin listener (env `CONDUIT_ADMIN_LISTEN`; default `127.0.0.1:8081`).
    pub admin_listen: Option<String>,
    /// Where the store and generated secrets live (env `CONDUIT_DATA_DIR`; default `./conduit-data`).
    pub data_dir: Option<PathBuf>,
    /// File holding the base64 master key (env `CONDUIT_MASTER_KEY_FILE`). `CONDUIT_MASTER_KEY` wins.
    pub master_key_file: Option<PathBuf>,
    /// Admin bearer token (prefer env `CONDUIT_ADMIN_TOKEN`); generated into the data dir if unset.
    pub admin_token: Option<Redacted>,
    /// A file holding the admin bearer token — a mounted secret (env `CONDUIT_ADMIN_TOKEN_FILE`).
    /// `CONDUIT_ADMIN_TOKEN` and `admin_token` win.
    pub admin_token_file: Option<PathBuf>,
    /// Logging.
    #[serde(default)]
    pub log: RawLog,
    /// Request limits.
    #[serde(default)]
    pub limits: RawLimits,
    /// Outbound connections.
    #[serde(default)]
    pub network: RawNetwork,
    /// Per-family upstreams: `[upstream.anthropic]`, `[upstream.openai]`.
    #[serde(default)]
    pub upstream: HashMap<String, RawUpstream>,
    /// TLS termination on the gateway listener.
    pub tls: Option<RawTls>,
    /// Budgets by scope: `[budgets.org]`, `[budgets."team:payments"]`, `[budgets."key:key_…"]`.
    /// Budgets set with the CLI or the admin API override these for the same scope.
    #[serde(default)]
    pub budgets: HashMap<String, RawBudget>,
    /// The policy stage: `[policies]`, `[policies.modes]`, `[policies.builtin.<name>]`.
    #[serde(default)]
    pub policies: crate::policy::RawPolicies,
    /// The audit log: `[audit]` durability, retention, directory.
    #[serde(default)]
    pub audit: crate::audit::RawAudit,
    /// Optional OTLP trace export: `[otlp] endpoint`, off unless set.
    #[serde(default)]
    pub otlp: crate::audit::otlp::RawOtlp,
    /// Prices: `[prices] unpriced`, `[prices.ceiling]`.
    #[serde(default)]
    pub prices: crate::prices::RawPrices,
    /// What may leave besides the endpoints Conduit understands: `[egress]`.
    #[serde(default)]
    pub egress: crate::egress::RawEgress,
    /// Where the state lives: `[store]` (embedded sled by default, or PostgreSQL for replicas).
    #[serde(default)]
    pub store: RawStore,
    /// Sign-in with the org's IdP (`docs/sign-in.md`).
    #[serde(default)]
    pub signin: crate::idp::RawSignIn,
    /// The admin API's own settings.
    #[serde(default)]
    pub admin: RawAdmin,
}

/// `[store]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    /// `sled` (default: embedded, one process) or `postgres` (several replicas on one database).
    pub kind: Option<String>,
    /// PostgreSQL connection URL (prefer env `CONDUIT_STORE_URL`, or `url_file`: it may hold a password).
    pub url: Option<Redacted>,
    /// A file holding the URL (a mounted secret).
    pub url_file: Option<PathBuf>,
    /// `verify-full` (default) or `disable`.
    pub tls: Option<String>,
    /// PEM of the CA that signed PostgreSQL's certificate (default: the system's roots).
    pub ca_file: Option<PathBuf>,
    /// Connections per replica (default 16).
    pub pool_size: Option<usize>,
    /// Bound on every statement, milliseconds (default 5000).
    pub statement_timeout_ms: Option<u64>,
    /// This replica's stable name (env `CONDUIT_REPLICA_ID`; default: the host name).
    pub replica_id: Option<String>,
    /// Seconds before an unsettled budget hold of a vanished replica counts as spent (default 900).
    pub hold_ttl_secs: Option<u64>,
    /// Admit requests only team / org budgets apply to against slices this replica holds (default
    /// true: no database round trip for them); `false` reserves every budgeted request in the database.
    pub leases: Option<bool>,
    /// Seconds without a heartbeat after which a replica is taken for dead and what it held counts
    /// as spent (default 15).
    pub heartbeat_stale_secs: Option<u64>,
    /// Seconds a cached key or credential lookup may be served without re-reading the store, if
    /// the store's change announcements stop arriving (default 10; changes invalidate at once).
    pub cache_ttl_secs: Option<u64>,
}

impl Config {
    /// This gateway's name among replicas (`[store] replica_id`); `local` on the embedded store.
    pub fn replica_id(&self) -> &str {
        match &self.store {
            StoreConfig::Sled => "local",
            StoreConfig::Postgres(pg) => &pg.replica_id,
        }
    }
}

/// Where the state lives.
#[derive(Debug, Clone)]
pub enum StoreConfig {
    /// The embedded sled store under `data_dir`.
    Sled,
    /// A PostgreSQL database shared by every replica.
    Postgres(conduit_state_postgres::PgConfig),
}

impl RawStore {
    fn validate(self, env: &dyn Fn(&str) -> Option<String>) -> Result<StoreConfig> {
        let url_env = env("CONDUIT_STORE_URL").filter(|v| !v.trim().is_empty());
        let kind = self.kind.clone().unwrap_or_else(|| {
            if url_env.is_some() {
                "postgres".into()
            } else {
                "sled".into()
            }
        });
        match kind.as_str() {
            "sled" => {
                if self.url.is_some() || self.url_file.is_some() {
                    return Err(Error::msg(
                        "[store] url is set but kind is \"sled\"; set kind = \"postgres\" or remove the url",
                    ));
                }
                Ok(StoreConfig::Sled)
            }
            "postgres" => {
                let url = match (url_env, self.url, &self.url_file) {
                    (Some(u), _, _) => u,
                    (None, Some(u), _) => u.into_inner(),
                    (None, None, Some(f)) => read_secret_file(f, "[store] url_file")?,
                    (None, None, None) => {
                        return Err(Error::msg(
                            "[store] kind = \"postgres\" needs a URL: set CONDUIT_STORE_URL, [store] url_file or [store] url (postgres://USER@HOST:PORT/DB)",
                        ));
                    }
                };
                let mut pg = conduit_state_postgres::PgConfig::new(url);
                if let Some(t) = &self.tls {
                    pg.tls = conduit_state_postgres::TlsMode::parse(t)?;
                }
                pg.ca_file = self.ca_file;
                if let Some(n) = self.pool_size {
                    if n == 0 || n > 1024 {
                        return Err(Error::msg(format!("[store] pool_size = {n} must be 1..=1024")));
                    }
                    pg.pool_size = n;
                }
                if let Some(ms) = self.statement_timeout_ms {
                    if ms == 0 {
                        return Err(Error::msg("[store] statement_timeout_ms must be at least 1"));
                    }
                    pg.statement_timeout = Duration::from_millis(ms);
                }
                if let Some(id) = env("CONDUIT_REPLICA_ID").filter(|v| !v.is_empty()).or(self.replica_id) {
                    if id.len() > 128 || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)) {
                        return Err(Error::msg(format!(
                            "replica id {id:?} is not valid; use up to 128 letters, digits, '.', '_' or '-'"
                        )));
                    }
                    pg.replica_id = id;
                }
                if let Some(s) = self.hold_ttl_secs {
                    if s < 60 {
                        return Err(Error::msg(format!(
                            "[store] hold_ttl_secs = {s} is shorter than a request may run; use at least 60"
                        )));
                    }
                    pg.hold_ttl = Duration::from_secs(s);
                }
                if let Some(l) = self.leases {
                    pg.leases = l;
                }
                if let Some(s) = self.heartbeat_stale_secs {
                    if !(2..=3600).contains(&s) {
                        return Err(Error::msg(format!(
                            "[store] heartbeat_stale_secs = {s} must be 2..=3600"
                        )));
                    }
                    pg.heartbeat_stale = Duration::from_secs(s);
                }
                Ok(StoreConfig::Postgres(pg))
            }
            other => Err(Error::msg(format!(
                "[store] kind = {other:?} is not a store; use \"sled\" (embedded) or \"postgres\""
            ))),
        }
    }
}

/// `[budgets.<scope>]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBudget {
    /// USD per UTC day, as a string for exactness (`"25.50"`).
    pub daily_usd: Option<String>,
    /// USD per UTC calendar month.
    pub monthly_usd: Option<String>,
}

/// `[log]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLog {
    /// `text` or `json` (env `CONDUIT_LOG_FORMAT`; default `text`).
    pub format: Option<String>,
    /// A tracing filter such as `info` or `conduit=debug` (env `CONDUIT_LOG`; default `info`).
    pub level: Option<String>,
}

/// `[limits]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Largest request body accepted (env `CONDUIT_MAX_BODY_BYTES`; default 32 MiB). Larger → 413.
    pub max_body_bytes: Option<u64>,
    /// Largest request head (request line + headers) in bytes (default 64 KiB).
    pub max_header_bytes: Option<usize>,
    /// Most request headers (default 100).
    pub max_headers: Option<usize>,
    /// Seconds a client may take to send its body (default 60).
    pub body_read_timeout_secs: Option<u64>,
    /// Seconds a client may take to send a request head, and the longest an idle keep-alive
    /// connection waits for its next one (default 30).
    pub header_read_timeout_secs: Option<u64>,
    /// Seconds a write to a client may wait without progress — a client that stopped reading
    /// its response — before its connection is closed (default 60).
    pub send_timeout_secs: Option<u64>,
    /// Connections each listener serves at once (default 10,000); more are answered 503 and
    /// closed at once, so established streams and the admin listener are unaffected.
    pub max_connections: Option<usize>,
    /// Requests the gateway works on at once, streams included (default 4096); more are shed at
    /// once with a provider-shaped 503 and `retry-after: 1`.
    pub max_in_flight: Option<usize>,
    /// Output tokens assumed for a budget reservation when a request sets no `max_tokens`
    /// (default 64000).
    pub default_max_output_tokens: Option<u64>,
    /// Deepest JSON nesting a body may have (default 128); deeper → 400.
    pub max_json_depth: Option<usize>,
    /// Most JSON values in one body (default 4,000,000); more → 413.
    pub max_json_values: Option<usize>,
    /// Most separate pieces of text one request may carry (default 100,000); more → 413.
    pub max_text_values: Option<usize>,
    /// Seconds between SIGTERM and closing the listeners, during which `/readyz` answers 503
    /// `draining` and requests are still served — time for a load balancer or Kubernetes'
    /// endpoints to stop sending new ones (default 0; the Kubernetes manifests set 5).
    pub shutdown_delay_secs: Option<u64>,
    /// Seconds, after the listeners close, that in-flight requests and streams may take to finish
    /// before the process flushes its ledger and audit log and exits (default 30).
    pub shutdown_grace_secs: Option<u64>,
}

/// `[network]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawNetwork {
    /// Seconds to establish an upstream connection, TLS included (default 10).
    pub connect_timeout_secs: Option<u64>,
    /// Seconds to wait for upstream response headers (default 600: non-streamed completions are slow).
    pub response_timeout_secs: Option<u64>,
    /// Seconds without a byte from the upstream before a response body is cut (default 300).
    /// There is no total limit: a stream that keeps sending runs as long as it needs.
    pub idle_timeout_secs: Option<u64>,
    /// PEM bundle of extra CA certificates trusted upstream, e.g. for TLS inspection
    /// (env `CONDUIT_EXTRA_CA_FILE`).
    pub extra_ca_file: Option<PathBuf>,
    /// Honour `HTTPS_PROXY` / `HTTP_PROXY` / `ALL_PROXY` / `NO_PROXY` (and lowercase forms) when
    /// `proxy` is not set here (default true).
    pub use_env_proxy: Option<bool>,
    /// Egress proxy for all upstreams, e.g. `http://user:pass@proxy.corp:3128`; overrides the env.
    pub proxy: Option<String>,
    /// Hosts that bypass the proxy, curl `NO_PROXY` syntax (`localhost,.corp.internal,10.0.0.0/8`).
    pub no_proxy: Option<String>,
}

/// `[tls]`
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTls {
    /// PEM certificate chain (env `CONDUIT_TLS_CERT_FILE`).
    pub cert_file: PathBuf,
    /// PEM private key (env `CONDUIT_TLS_KEY_FILE`).
    pub key_file: PathBuf,
}

/// Validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Gateway listener.
    pub listen: SocketAddr,
    /// Admin listener.
    pub admin_listen: SocketAddr,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Where the master key comes from.
    pub master_key: MasterKeySource,
    /// Admin token from config/env; `None` → generated file in the data dir.
    pub admin_token: Option<Redacted>,
    /// Log format and filter.
    pub log: LogConfig,
    /// Request limits.
    pub limits: Limits,
    /// Outbound connection settings.
    pub network: Network,
    /// One upstream per family.
    pub upstreams: Upstreams,
    /// TLS termination files.
    pub tls: Option<TlsFiles>,
    /// Budgets from the file, by scope.
    pub budgets: Vec<(String, crate::records::BudgetLimit)>,
    /// Policies.
    pub policies: crate::policy::PolicyConfig,
    /// The audit log.
    pub audit: crate::audit::AuditConfig,
    /// OTLP trace export, when configured.
    pub otlp: Option<crate::audit::otlp::OtlpConfig>,
    /// What unknown models are billed at.
    pub prices: crate::prices::PriceConfig,
    /// Declared passthroughs and upload treatment.
    pub egress: crate::egress::EgressConfig,
    /// Where the state lives.
    pub store: StoreConfig,
    /// How long a cached key or credential lookup may live (`[store] cache_ttl_secs`).
    pub cache_ttl: Duration,
    /// Sign-in with the org's IdP, when `[signin] issuer` is set.
    pub signin: Option<crate::idp::SignInConfig>,
    /// The admin API's own settings.
    pub admin: AdminConfig,
}

pub use crate::upstream::{Network, ProxySettings};
pub use conduit_core::seal::Redacted;

/// Where the master key is read from.
#[derive(Clone)]
pub enum MasterKeySource {
    /// `CONDUIT_MASTER_KEY` (base64).
    Env(zeroize::Zeroizing<String>),
    /// A file holding base64.
    File(PathBuf),
    /// `<data_dir>/master.key`, generated on first use (development default; logged loudly).
    Generated(PathBuf),
}

impl std::fmt::Debug for MasterKeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MasterKeySource::Env(_) => f.write_str("Env(CONDUIT_MASTER_KEY)"),
            MasterKeySource::File(p) => write!(f, "File({p:?})"),
            MasterKeySource::Generated(p) => write!(f, "Generated({p:?})"),
        }
    }
}

/// Log settings.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// JSON lines instead of text.
    pub json: bool,
    /// tracing filter directive.
    pub level: String,
}

/// Request limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Body bytes.
    pub max_body_bytes: u64,
    /// Request head bytes.
    pub max_header_bytes: usize,
    /// Number of headers.
    pub max_headers: usize,
    /// Time to receive the body.
    pub body_read_timeout: Duration,
    /// Time to receive a request head.
    pub header_read_timeout: Duration,
    /// Time a write to a client may wait without progress.
    pub send_timeout: Duration,
    /// Connections served at once per listener.
    pub max_connections: usize,
    /// Requests worked on at once.
    pub max_in_flight: usize,
    /// Worst-case output tokens for budget reservations.
    pub default_max_output_tokens: u64,
    /// What one body may hold (each limit refuses).
    pub body: crate::content::BodyLimits,
    /// SIGTERM → listeners closed: still serving, `/readyz` 503.
    pub shutdown_delay: Duration,
    /// Listeners closed → exit: in-flight requests finish within it.
    pub shutdown_grace: Duration,
}

/// TLS termination files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// Certificate chain.
    pub cert_file: PathBuf,
    /// Private key.
    pub key_file: PathBuf,
}

impl Config {
    /// Reads `path` (if given) and the process environment.
    pub fn load(path: Option<&Path>) -> Result<Config> {
        Self::load_with(path, &|k| std::env::var(k).ok())
    }

    /// As [`Config::load`], with an explicit environment (tests).
    pub fn load_with(path: Option<&Path>, env: &dyn Fn(&str) -> Option<String>) -> Result<Config> {
        let raw = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|e| Error::msg(format!("reading config file {:?}: {e}", p.display().to_string())))?;
                toml::from_str::<RawConfig>(&text)
                    .map_err(|e| Error::msg(format!("config file {:?}: {e}", p.display().to_string())))?
            }
            None => RawConfig::default(),
        };
        raw.validate(env)
    }
}

impl RawConfig {
    /// Applies environment overrides and validates every field.
    pub fn validate(self, env: &dyn Fn(&str) -> Option<String>) -> Result<Config> {
        let env_or = |name: &str, file: Option<String>| env(name).filter(|v| !v.is_empty()).or(file);

        let listen = parse_addr(
            "listen",
            "CONDUIT_LISTEN",
            env_or("CONDUIT_LISTEN", self.listen),
            "127.0.0.1:8080",
        )?;
        let admin_listen = parse_addr(
            "admin_listen",
            "CONDUIT_ADMIN_LISTEN",
            env_or("CONDUIT_ADMIN_LISTEN", self.admin_listen),
            "127.0.0.1:8081",
        )?;
        if listen == admin_listen && listen.port() != 0 {
            return Err(Error::msg(format!(
                "listen and admin_listen are both {listen}; give the admin API its own port (e.g. CONDUIT_ADMIN_LISTEN=127.0.0.1:8081)"
            )));
        }
        let data_dir = env("CONDUIT_DATA_DIR")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or(self.data_dir)
            .unwrap_or_else(|| PathBuf::from("conduit-data"));

        let master_key = if let Some(v) = env("CONDUIT_MASTER_KEY").filter(|v| !v.is_empty()) {
            // Checked here so a bad key stops start-up before anything listens.
            crate::seal::MasterKey::from_base64(&v, "CONDUIT_MASTER_KEY")?;
            MasterKeySource::Env(zeroize::Zeroizing::new(v))
        } else if let Some(p) = env("CONDUIT_MASTER_KEY_FILE")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
            .or(self.master_key_file)
        {
            MasterKeySource::File(p)
        } else {
            MasterKeySource::Generated(data_dir.join("master.key"))
        };

        let admin_token = match env_or("CONDUIT_ADMIN_TOKEN", self.admin_token.map(Redacted::into_inner)) {
            Some(t) => Some(t),
            None => match env("CONDUIT_ADMIN_TOKEN_FILE")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .or(self.admin_token_file)
            {
                Some(p) => Some(read_secret_file(&p, "admin_token_file (CONDUIT_ADMIN_TOKEN_FILE)")?),
                None => None,
            },
        };
        if let Some(t) = &admin_token
            && t.len() < 16
        {
            return Err(Error::msg(format!(
                "admin token (CONDUIT_ADMIN_TOKEN / admin_token / admin_token_file) is {} characters; use at least 16 random characters, e.g. `openssl rand -hex 24`",
                t.len()
            )));
        }

        let format = env_or("CONDUIT_LOG_FORMAT", self.log.format).unwrap_or_else(|| "text".into());
        let json = match format.as_str() {
            "text" => false,
            "json" => true,
            other => {
                return Err(Error::msg(format!(
                    "log.format (CONDUIT_LOG_FORMAT) is {other:?}; expected \"text\" or \"json\""
                )));
            }
        };
        let log = LogConfig {
            json,
            level: env_or("CONDUIT_LOG", self.log.level).unwrap_or_else(|| "info".into()),
        };

        let max_body_bytes = match env("CONDUIT_MAX_BODY_BYTES").filter(|v| !v.is_empty()) {
            Some(v) => v.trim().parse::<u64>().map_err(|_| {
                Error::msg(format!(
                    "CONDUIT_MAX_BODY_BYTES is {v:?}; expected a whole number of bytes, e.g. 33554432"
                ))
            })?,
            None => self.limits.max_body_bytes.unwrap_or(32 * 1024 * 1024),
        };
        if max_body_bytes == 0 {
            return Err(Error::msg(
                "limits.max_body_bytes is 0; expected a positive number of bytes (default 33554432)",
            ));
        }
        let limits = Limits {
            max_body_bytes,
            max_header_bytes: positive("limits.max_header_bytes", self.limits.max_header_bytes, 64 * 1024)?.max(8192),
            max_headers: positive("limits.max_headers", self.limits.max_headers, 100)?,
            body_read_timeout: secs("limits.body_read_timeout_secs", self.limits.body_read_timeout_secs, 60)?,
            header_read_timeout: secs(
                "limits.header_read_timeout_secs",
                self.limits.header_read_timeout_secs,
                30,
            )?,
            send_timeout: secs("limits.send_timeout_secs", self.limits.send_timeout_secs, 60)?,
            max_connections: positive("limits.max_connections", self.limits.max_connections, 10_000)?,
            max_in_flight: positive("limits.max_in_flight", self.limits.max_in_flight, 4096)?,
            default_max_output_tokens: self.limits.default_max_output_tokens.unwrap_or(64_000).max(1),
            body: crate::content::BodyLimits {
                max_depth: positive("limits.max_json_depth", self.limits.max_json_depth, 128)?,
                max_values: positive("limits.max_json_values", self.limits.max_json_values, 4_000_000)?,
                max_segments: positive("limits.max_text_values", self.limits.max_text_values, 100_000)?,
            },
            shutdown_delay: Duration::from_secs(self.limits.shutdown_delay_secs.unwrap_or(0)),
            shutdown_grace: secs("limits.shutdown_grace_secs", self.limits.shutdown_grace_secs, 30)?,
        };
        for (key, value) in [
            ("limits.shutdown_delay_secs", limits.shutdown_delay),
            ("limits.shutdown_grace_secs", limits.shutdown_grace),
        ] {
            if value > Duration::from_secs(3600) {
                return Err(Error::msg(format!(
                    "{key} is {}; expected at most 3600 seconds (Kubernetes uses 5–15 for the delay, 30 for the grace)",
                    value.as_secs()
                )));
            }
        }

        let proxy = proxy_settings(&self.network, env)?;
        let network = Network {
            connect_timeout: secs("network.connect_timeout_secs", self.network.connect_timeout_secs, 10)?,
            response_timeout: secs("network.response_timeout_secs", self.network.response_timeout_secs, 600)?,
            idle_timeout: secs("network.idle_timeout_secs", self.network.idle_timeout_secs, 300)?,
            extra_ca_file: env("CONDUIT_EXTRA_CA_FILE")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .or(self.network.extra_ca_file),
            proxy,
        };
        if let Some(p) = &network.extra_ca_file
            && !p.is_file()
        {
            return Err(Error::msg(format!(
                "network.extra_ca_file (CONDUIT_EXTRA_CA_FILE) is {:?}, which is not a readable file; point it at a PEM bundle",
                p.display().to_string()
            )));
        }

        let upstreams = conduit_wire::upstream::build_upstreams(self.upstream, env)?;

        let tls = match (
            env("CONDUIT_TLS_CERT_FILE").filter(|v| !v.is_empty()),
            env("CONDUIT_TLS_KEY_FILE").filter(|v| !v.is_empty()),
            self.tls,
        ) {
            (Some(c), Some(k), _) => Some(TlsFiles {
                cert_file: c.into(),
                key_file: k.into(),
            }),
            (None, None, Some(t)) => Some(TlsFiles {
                cert_file: t.cert_file,
                key_file: t.key_file,
            }),
            (None, None, None) => None,
            _ => {
                return Err(Error::msg(
                    "only one of CONDUIT_TLS_CERT_FILE and CONDUIT_TLS_KEY_FILE is set; TLS termination needs both (or neither)",
                ));
            }
        };

        let mut budgets = Vec::new();
        for (scope, b) in self.budgets {
            crate::budget::validate_scope(&scope).map_err(|e| e.context(format!("[budgets.{scope:?}]")))?;
            let usd = |what: &str, v: Option<String>| {
                v.map(|v| crate::money::parse_usd(&format!("[budgets.{scope:?}].{what}"), &v))
                    .transpose()
            };
            let limit = crate::records::BudgetLimit {
                daily_micros: usd("daily_usd", b.daily_usd)?,
                monthly_micros: usd("monthly_usd", b.monthly_usd)?,
            };
            budgets.push((scope, limit));
        }

        let policies = self.policies.validate(&data_dir, env)?;
        let audit = self.audit.validate(&data_dir, env)?;
        let otlp = self.otlp.validate(env)?;
        let prices = self.prices.validate()?;
        let egress = self.egress.validate()?;
        let cache_ttl = Duration::from_secs(self.store.cache_ttl_secs.unwrap_or(10));
        let store = self.store.validate(env)?;
        let signin = self.signin.validate(env, listen.ip().is_loopback())?;
        Ok(Config {
            admin: self.admin.validate(),
            signin,
            store,
            cache_ttl,
            prices,
            egress,
            policies,
            audit,
            otlp,
            listen,
            admin_listen,
            data_dir,
            master_key,
            admin_token: admin_token.map(Redacted::new),
            log,
            limits,
            network,
            upstreams,
            tls,
            budgets,
        })
    }
}

/// The proxy from `[network]`, else (unless `use_env_proxy = false`) from the environment.
fn proxy_settings(net: &RawNetwork, env: &dyn Fn(&str) -> Option<String>) -> Result<Option<ProxySettings>> {
    let var = |names: &[&str]| names.iter().find_map(|n| env(n).filter(|v| !v.trim().is_empty()));
    let settings = if let Some(p) = &net.proxy {
        ProxySettings {
            http: Some(p.clone()),
            https: Some(p.clone()),
            no: net.no_proxy.clone().unwrap_or_default(),
        }
    } else if net.use_env_proxy.unwrap_or(true) {
        let all = var(&["ALL_PROXY", "all_proxy"]);
        ProxySettings {
            http: var(&["HTTP_PROXY", "http_proxy"]).or(all.clone()),
            https: var(&["HTTPS_PROXY", "https_proxy"]).or(all),
            no: net
                .no_proxy
                .clone()
                .or_else(|| var(&["NO_PROXY", "no_proxy"]))
                .unwrap_or_default(),
        }
    } else {
        return Ok(None);
    };
    for url in settings.http.iter().chain(settings.https.iter()) {
        let uri: http::Uri = url.parse().map_err(|_| {
            Error::msg("the egress proxy URL (network.proxy / HTTPS_PROXY / HTTP_PROXY) is not a valid URL; expected e.g. \"http://proxy.corp:3128\"")
        })?;
        if uri.host().is_none() || uri.scheme_str().is_some_and(|s| s != "http") {
            return Err(Error::msg(format!(
                "the egress proxy URL for host {:?} must be http://host:port (Conduit tunnels TLS through it with CONNECT)",
                uri.host().unwrap_or("")
            )));
        }
    }
    Ok((settings.http.is_some() || settings.https.is_some()).then_some(settings))
}

fn parse_addr(key: &str, env_name: &str, value: Option<String>, default: &str) -> Result<SocketAddr> {
    let v = value.unwrap_or_else(|| default.to_string());
    v.trim().parse().map_err(|_| {
        Error::msg(format!(
            "{key} ({env_name}) is {v:?}; expected an IP address and port such as {default:?} (use 0.0.0.0:PORT to listen on all interfaces)"
        ))
    })
}

/// A secret mounted as a file (a Docker / Kubernetes secret): its contents less surrounding
/// whitespace. The error names the setting and the path, never the contents.
fn read_secret_file(path: &Path, setting: &str) -> Result<String> {
    // Held to the same rule as the generated token file: nobody but its owner (or root) may change it.
    crate::fsperm::check_not_writable_by_others(path, setting)?;
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::msg(format!(
            "{setting} is {path:?}, which cannot be read ({e}); mount the secret there or unset the setting"
        ))
    })?;
    let secret = text.trim();
    if secret.is_empty() {
        return Err(Error::msg(format!(
            "{setting} is {path:?}, which is empty; write the secret into it (e.g. `openssl rand -hex 24 > FILE`)"
        )));
    }
    Ok(secret.to_string())
}

fn positive(key: &str, v: Option<usize>, default: usize) -> Result<usize> {
    match v {
        Some(0) => Err(Error::msg(format!(
            "{key} is 0; expected a positive number (default {default})"
        ))),
        Some(n) => Ok(n),
        None => Ok(default),
    }
}

fn secs(key: &str, v: Option<u64>, default: u64) -> Result<Duration> {
    match v {
        Some(0) => Err(Error::msg(format!(
            "{key} is 0; expected a positive number of seconds (default {default})"
        ))),
        Some(n) => Ok(Duration::from_secs(n)),
        None => Ok(Duration::from_secs(default)),
    }
}

/// `[admin]` as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    /// Whether the bootstrap admin token is accepted (default true). Set false once scoped tokens
    /// and SSO are in place.
    pub bootstrap_token: Option<bool>,
}

/// Validated `[admin]`.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// The bootstrap token is accepted.
    pub bootstrap_token: bool,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig { bootstrap_token: true }
    }
}

impl RawAdmin {
    /// Validates.
    pub fn validate(self) -> AdminConfig {
        AdminConfig {
            bootstrap_token: self.bootstrap_token.unwrap_or(true),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    /// Issue 20, the configuration boundary (a randomised property test; the file is parsed by
    /// serde + toml, fuzzed upstream, and coverage-guided fuzzing of this crate would instrument
    /// wasmtime too): every config this repository ships — the deployment files and the examples
    /// in docs/configuration.md — mutated 40,000 ways (bytes flipped, cut, lines swapped or
    /// repeated, values replaced by extremes) never panics on parse or validation, and every
    /// refusal says something.
    #[test]
    fn mutated_configurations_are_refused_or_accepted_never_a_panic() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut seeds: Vec<String> = [
            "deploy/k8s/base",
            "deploy/k8s/overlays/ha",
            "deploy/compose/single",
            "deploy/compose/ha",
            "deploy/compose/litellm",
        ]
        .iter()
        .map(|d| std::fs::read_to_string(root.join(d).join("conduit.toml")).unwrap())
        .collect();
        let doc = std::fs::read_to_string(root.join("docs/configuration.md")).unwrap();
        seeds.extend(
            doc.split("```toml\n")
                .skip(1)
                .filter_map(|b| b.split("```").next())
                .map(str::to_owned),
        );
        // And every setting the reference table documents, alone at its documented default.
        for row in doc.lines().filter(|l| l.starts_with("| `")) {
            let cells: Vec<&str> = row.split(" | ").collect();
            let (Some(key), Some(default)) = (cells.first(), cells.get(2)) else {
                continue;
            };
            let key = key.trim_start_matches("| ").trim_matches('`');
            let Some(value) = default.split('`').nth(1) else {
                continue;
            };
            let value = if value.parse::<f64>().is_ok() || value == "true" || value == "false" || value.starts_with('[')
            {
                value.to_string()
            } else {
                format!("{value:?}")
            };
            seeds.push(match key.rsplit_once('.') {
                Some((section, name)) => format!("[{section}]\n{name} = {value}\n"),
                None => format!("{key} = {value}\n"),
            });
        }
        assert!(
            seeds.len() >= 60,
            "the deployment files, the documented examples and settings"
        );
        const EXTREMES: &[&str] = &[
            "0",
            "-1",
            "18446744073709551616",
            "1e309",
            "nan",
            "\"\"",
            "\"\\u0000\"",
            "\"é\\u202e\"",
            "[]",
            "{}",
            "true",
            "\"999.999.999.999:99999\"",
            "\"/\"",
            "\"http://[::1\"",
            "4294967296",
            "9223372036854775807",
        ];
        // xorshift64*: the same mutations every run.
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move |n: usize| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_f491_4f6c_dd1d) % n.max(1) as u64) as usize
        };
        let (mut accepted, mut refused) = (0u32, 0u32);
        for round in 0..40_000 {
            let seed = &seeds[round % seeds.len()];
            let mut lines: Vec<String> = seed.lines().map(str::to_owned).collect();
            for _ in 0..=next(3) {
                let i = next(lines.len());
                match next(6) {
                    0 => {
                        // Replace a value with an extreme.
                        if let Some(eq) = lines[i].find('=') {
                            lines[i] = format!("{}= {}", &lines[i][..eq], EXTREMES[next(EXTREMES.len())]);
                        }
                    }
                    1 => {
                        let j = next(lines.len());
                        lines.swap(i, j);
                    }
                    2 => {
                        let l = lines[i].clone();
                        lines.insert(i, l);
                    }
                    3 => {
                        let l = &mut lines[i];
                        let cut = next(l.len() + 1);
                        l.truncate(l.floor_char_boundary(cut));
                    }
                    4 => {
                        let mut bytes = std::mem::take(&mut lines[i]).into_bytes();
                        if !bytes.is_empty() {
                            let k = next(bytes.len());
                            bytes[k] = b" =[]{}\"'#.,0123456789azAZ\\\n"[next(27)];
                        }
                        lines[i] = String::from_utf8_lossy(&bytes).into_owned();
                    }
                    _ => {
                        lines.remove(i.min(lines.len().saturating_sub(1)));
                        if lines.is_empty() {
                            lines.push(String::new());
                        }
                    }
                }
            }
            let text = lines.join("\n");
            let outcome = std::panic::catch_unwind(|| match toml::from_str::<RawConfig>(&text) {
                Ok(raw) => raw.validate(&env_of(&[])).map(|_| ()).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            });
            match outcome {
                Ok(Ok(())) => accepted += 1,
                Ok(Err(why)) => {
                    assert!(!why.trim().is_empty(), "a refusal that says nothing, for:\n{text}");
                    refused += 1;
                }
                Err(_) => panic!("the configuration below panicked instead of being refused:\n{text}"),
            }
        }
        eprintln!("mutated configurations: {accepted} accepted, {refused} refused, none panicked");
        assert!(accepted > 0 && refused > 0);
    }

    #[test]
    fn defaults() {
        let c = RawConfig::default().validate(&env_of(&[])).unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.admin_listen.to_string(), "127.0.0.1:8081");
        assert_eq!(c.upstreams.anthropic.base_url(), "https://api.anthropic.com");
        assert_eq!(c.upstreams.openai.auth, AuthStyle::Bearer);
        assert_eq!(c.limits.max_body_bytes, 32 * 1024 * 1024);
        assert!(matches!(c.master_key, MasterKeySource::Generated(_)));
        assert!(c.tls.is_none());
    }

    #[test]
    fn the_admin_token_comes_from_a_mounted_file_and_shutdown_has_bounds() {
        let dir = std::env::temp_dir().join(format!("conduit-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("admin-token");
        std::fs::write(&file, "  file-admin-token-0123456789\n").unwrap();
        let path = file.display().to_string();
        let c = RawConfig::default()
            .validate(&env_of(&[("CONDUIT_ADMIN_TOKEN_FILE", &path)]))
            .unwrap();
        assert_eq!(
            c.admin_token.as_ref().map(Redacted::expose),
            Some("file-admin-token-0123456789")
        );
        assert_eq!(c.limits.shutdown_delay, Duration::ZERO);
        assert_eq!(c.limits.shutdown_grace, Duration::from_secs(30));
        // The variable wins over the file.
        let c = RawConfig::default()
            .validate(&env_of(&[
                ("CONDUIT_ADMIN_TOKEN_FILE", &path),
                ("CONDUIT_ADMIN_TOKEN", "env-admin-token-0123456789"),
            ]))
            .unwrap();
        assert_eq!(
            c.admin_token.as_ref().map(Redacted::expose),
            Some("env-admin-token-0123456789")
        );
        // An empty or missing file names the path and the setting, never contents.
        std::fs::write(&file, "\n").unwrap();
        let err = RawConfig::default()
            .validate(&env_of(&[("CONDUIT_ADMIN_TOKEN_FILE", &path)]))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("CONDUIT_ADMIN_TOKEN_FILE") && err.contains("is empty"),
            "{err}"
        );
        let missing = dir.join("nope").display().to_string();
        let err = RawConfig::default()
            .validate(&env_of(&[("CONDUIT_ADMIN_TOKEN_FILE", &missing)]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("cannot be read") && err.contains("nope"), "{err}");
        // A short token from a file is refused like one from the environment.
        std::fs::write(&file, "short").unwrap();
        let err = RawConfig::default()
            .validate(&env_of(&[("CONDUIT_ADMIN_TOKEN_FILE", &path)]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("at least 16"), "{err}");
        // The PostgreSQL URL file is read the same way (one reader for mounted secrets).
        std::fs::write(&file, "\n").unwrap();
        let raw: RawConfig = toml::from_str(&format!("[store]\nkind = \"postgres\"\nurl_file = {path:?}\n")).unwrap();
        let err = raw.validate(&env_of(&[])).unwrap_err().to_string();
        assert!(err.contains("[store] url_file") && err.contains("is empty"), "{err}");
        let raw: RawConfig = toml::from_str("[limits]\nshutdown_delay_secs = 7200\n").unwrap();
        let err = raw.validate(&env_of(&[])).unwrap_err().to_string();
        assert!(err.contains("shutdown_delay_secs is 7200"), "{err}");
        let raw: RawConfig = toml::from_str("[limits]\nshutdown_grace_secs = 0\n").unwrap();
        assert!(raw.validate(&env_of(&[])).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn env_overrides_file_and_prefix_is_kept() {
        let raw: RawConfig = toml::from_str(
            "listen = \"127.0.0.1:9000\"\n[upstream.anthropic]\nurl = \"http://file:1\"\nauth = \"bearer\"\n",
        )
        .unwrap();
        let c = raw
            .validate(&env_of(&[
                ("UPSTREAM_ANTHROPIC_URL", "http://litellm:4000/anthropic/"),
                ("CONDUIT_LISTEN", "127.0.0.1:9100"),
            ]))
            .unwrap();
        assert_eq!(c.listen.port(), 9100);
        assert_eq!(c.upstreams.anthropic.path_prefix, "/anthropic");
        assert_eq!(c.upstreams.anthropic.auth, AuthStyle::Bearer);
    }

    #[test]
    fn rejected_values_name_key_value_and_fix() {
        type Case<'a> = (&'a [(&'a str, &'a str)], &'a [&'a str]);
        let cases: &[Case] = &[
            (
                &[("CONDUIT_LISTEN", "localhost")],
                &["CONDUIT_LISTEN", "\"localhost\"", "127.0.0.1:8080"],
            ),
            (
                &[("UPSTREAM_OPENAI_URL", "ftp://x")],
                &["UPSTREAM_OPENAI_URL", "ftp://x", "http or https"],
            ),
            (
                &[("UPSTREAM_OPENAI_URL", "api.openai.com")],
                &["UPSTREAM_OPENAI_URL", "missing"],
            ),
            (
                &[("CONDUIT_MASTER_KEY", "dG9vIHNob3J0")],
                &["CONDUIT_MASTER_KEY", "32 bytes", "rand -base64 32"],
            ),
            (
                &[("CONDUIT_MAX_BODY_BYTES", "lots")],
                &["CONDUIT_MAX_BODY_BYTES", "\"lots\""],
            ),
            (
                &[("CONDUIT_ADMIN_TOKEN", "short")],
                &["CONDUIT_ADMIN_TOKEN", "at least 16"],
            ),
            (&[("CONDUIT_LOG_FORMAT", "xml")], &["CONDUIT_LOG_FORMAT", "\"xml\""]),
            (&[("CONDUIT_TLS_CERT_FILE", "/x")], &["CONDUIT_TLS_KEY_FILE"]),
            (
                &[("CONDUIT_EXTRA_CA_FILE", "/nonexistent.pem")],
                &["CONDUIT_EXTRA_CA_FILE", "/nonexistent.pem"],
            ),
        ];
        for (env, needles) in cases {
            let err = RawConfig::default().validate(&env_of(env)).unwrap_err().to_string();
            for n in *needles {
                assert!(err.contains(n), "error for {env:?} should mention {n:?}: {err}");
            }
        }
        // The master key value itself must never be echoed.
        let err = RawConfig::default()
            .validate(&env_of(&[("CONDUIT_MASTER_KEY", "dG9vIHNob3J0")]))
            .unwrap_err();
        assert!(!err.to_string().contains("dG9vIHNob3J0"));
    }

    #[test]
    fn secrets_never_show_in_debug_output() {
        let raw: RawConfig = toml::from_str("admin_token = \"file-token-0123456789abcdef\"").unwrap();
        assert!(!format!("{raw:?}").contains("file-token"));
        let (_, key) = crate::seal::MasterKey::generate().unwrap();
        let c = raw
            .validate(&env_of(&[
                ("CONDUIT_ADMIN_TOKEN", "env-token-0123456789abcdef"),
                ("CONDUIT_MASTER_KEY", &key),
            ]))
            .unwrap();
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("token-0123") && !shown.contains(key.as_str()),
            "{shown}"
        );
        assert_eq!(
            c.admin_token.as_ref().map(Redacted::expose),
            Some("env-token-0123456789abcdef")
        );
    }

    #[test]
    fn budgets_from_the_file() {
        let raw: RawConfig = toml::from_str(
            "[budgets.org]\nmonthly_usd = \"5000\"\n[budgets.\"team:payments\"]\ndaily_usd = \"25.5\"\n",
        )
        .unwrap();
        let mut b = raw.validate(&env_of(&[])).unwrap().budgets;
        b.sort_by(|a, b| a.0.cmp(&b.0));
        assert_eq!(b[0].0, "org");
        assert_eq!(b[0].1.monthly_micros, Some(5_000_000_000));
        assert_eq!(b[1].1.daily_micros, Some(25_500_000));
        let raw: RawConfig = toml::from_str("[budgets.payments]\nmonthly_usd = \"1\"\n").unwrap();
        let err = raw.validate(&env_of(&[])).unwrap_err().to_string();
        assert!(err.contains("team:NAME"), "{err}");
        let raw: RawConfig = toml::from_str("[budgets.org]\nmonthly_usd = \"lots\"\n").unwrap();
        assert!(
            raw.validate(&env_of(&[]))
                .unwrap_err()
                .to_string()
                .contains("monthly_usd \"lots\"")
        );
    }

    #[test]
    fn unknown_fields_and_providers_are_refused() {
        assert!(
            toml::from_str::<RawConfig>("lisen = \"x\"")
                .unwrap_err()
                .to_string()
                .contains("lisen")
        );
        let raw: RawConfig = toml::from_str("[upstream.gemini]\nurl = \"https://x\"").unwrap();
        let err = raw.validate(&env_of(&[])).unwrap_err().to_string();
        assert!(err.contains("upstream.gemini"), "{err}");
    }
}
