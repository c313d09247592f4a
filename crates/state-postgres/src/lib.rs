//! # conduit-state-postgres
//!
//! The shared state backend: every `conduit-state` trait on one PostgreSQL database, so several
//! gateway replicas (and the CLI, from anywhere) see one state. The only crate that names
//! PostgreSQL.
//!
//! - **Connections**: a pool ([`deadpool_postgres`]) of `tokio-postgres` connections, TLS through
//!   rustls with the certificate and host name verified (`verify-full`) unless the operator says
//!   `tls = "disable"`; every statement bounded by `statement_timeout`.
//! - **Schema**: numbered migrations ([`schema`]) applied by `conduit migrate` under an advisory
//!   lock; [`open`] refuses a database whose version is not this build's, naming both.
//! - **Changes from other replicas**: every write also sends `NOTIFY conduit_changes` in the same
//!   statement (so it is delivered when, and only if, the write commits); one listening connection
//!   per process ([`listen`]) relays what other processes wrote to this process's watchers. A
//!   process's own writes reach its watchers before the call returns, as the traits require.
//! - **Budgets** ([`budget`]): the counters live in the database and only `conduit_reserve`, one
//!   conditional statement per request, raises them, so N replicas cannot admit more than the cap.

pub mod budget;
mod lease;
mod listen;
pub mod schema;
pub mod testing;
pub mod tls;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use serde::de::DeserializeOwned;

use conduit_core::error::{Error, Result};
use conduit_core::keys::KeyHash;
use conduit_core::seal::SealedCredential;
use conduit_state::State;
use conduit_state::records::{BudgetLimit, FindingRecord, KeyRecord, META_MASTER_KEY_ID, SpendRow, UploadRecord};
use conduit_state::store::{
    BudgetLimitStore, CredentialChange, CredentialStore, FindingStore, Hub, KeyChange, KeyStore, MetaStore,
    PolicyModeStore, PriceStore, SignInStore, SpendStore, UploadStore, Watch,
};
use conduit_wire::prices::PriceRow;

pub use schema::SCHEMA_VERSION;

/// What a change names when the listener reconnected after a gap (see `conduit_state::store`).
pub(crate) const RESYNC: &str = conduit_state::store::EVERYTHING;

/// The NOTIFY channel every write announces itself on.
const CHANNEL: &str = "conduit_changes";

/// How the gateway reaches PostgreSQL (`[store] kind = "postgres"`).
#[derive(Clone)]
pub struct PgConfig {
    /// `postgres://user:password@host:port/db` or a `key=value` connection string.
    pub url: String,
    /// Verify the server's certificate and host name (`verify-full`), or no TLS at all.
    pub tls: TlsMode,
    /// The CA that signed the server's certificate (PEM); the system's roots when `None`.
    pub ca_file: Option<PathBuf>,
    /// Connections in the pool.
    pub pool_size: usize,
    /// Bound on every statement (and on waiting for a pooled connection).
    pub statement_timeout: Duration,
    /// Bound on opening a connection.
    pub connect_timeout: Duration,
    /// This replica's name in budget holds (stable across restarts: a restarted replica counts
    /// its previous life's unsettled holds as spent at once).
    pub replica_id: String,
    /// How long a hold may stay unsettled before any replica counts it as spent.
    pub hold_ttl: Duration,
    /// Admit requests only shared budgets (team, org) apply to against slices held locally.
    pub leases: bool,
    /// A process whose heartbeat is older than this is taken for dead: what it held (budget
    /// holds, slices) counts as spent. Heartbeats go out every fifth of it.
    pub heartbeat_stale: Duration,
}

impl std::fmt::Debug for PgConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgConfig")
            .field("url", &"<redacted>")
            .field("tls", &self.tls)
            .field("pool_size", &self.pool_size)
            .field("replica_id", &self.replica_id)
            .finish_non_exhaustive()
    }
}

impl PgConfig {
    /// Defaults for everything but the URL.
    pub fn new(url: impl Into<String>) -> PgConfig {
        PgConfig {
            url: url.into(),
            tls: TlsMode::VerifyFull,
            ca_file: None,
            pool_size: 16,
            statement_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            replica_id: default_replica_id(),
            hold_ttl: Duration::from_secs(15 * 60),
            leases: true,
            heartbeat_stale: Duration::from_secs(15),
        }
    }
}

/// The replica id when none is configured: the host name (a pod's name on Kubernetes).
pub fn default_replica_id() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "conduit".into())
}

/// TLS to PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    /// Certificate chain and host name verified.
    VerifyFull,
    /// Plain TCP (a database on loopback or a private socket only).
    Disable,
}

impl TlsMode {
    /// `verify-full` or `disable`.
    pub fn parse(s: &str) -> Result<TlsMode> {
        match s {
            "verify-full" => Ok(TlsMode::VerifyFull),
            "disable" => Ok(TlsMode::Disable),
            other => Err(Error::msg(format!(
                "[store] tls = {other:?} is not a mode; use \"verify-full\" (the default) or \"disable\""
            ))),
        }
    }
}

/// A PostgreSQL failure while doing `what`, as one sentence (the server's own message when it
/// sent one; never the connection string).
pub(crate) fn pg_err(what: &str, e: tokio_postgres::Error) -> Error {
    match e.as_db_error() {
        Some(db) => Error::msg(format!("{what}: PostgreSQL said: {}", db.message())),
        None => Error::msg(format!("{what}: PostgreSQL: {e}")),
    }
}

/// Where the database is, for messages: `host:port/db`, no user or password.
fn describe(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(h)) => h.clone(),
        #[cfg(unix)]
        Some(tokio_postgres::config::Host::Unix(p)) => p.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}/{}", config.get_dbname().unwrap_or("(default)"))
}

/// The parsed connection settings and the TLS connector.
#[derive(Clone)]
pub(crate) struct Connector {
    pub(crate) config: tokio_postgres::Config,
    pub(crate) tls: tls::MakeRustls,
    pub(crate) shown: String,
}

impl Connector {
    fn new(c: &PgConfig) -> Result<Connector> {
        let mut config = tokio_postgres::Config::from_str(&c.url).map_err(|e| {
            Error::msg(format!(
                "[store] url is not a PostgreSQL connection string ({e}); give postgres://USER@HOST:PORT/DB"
            ))
        })?;
        config.ssl_mode(match c.tls {
            TlsMode::VerifyFull => tokio_postgres::config::SslMode::Require,
            TlsMode::Disable => tokio_postgres::config::SslMode::Disable,
        });
        config.connect_timeout(c.connect_timeout);
        config.options(format!(
            "-c statement_timeout={} -c idle_in_transaction_session_timeout={}",
            c.statement_timeout.as_millis(),
            c.statement_timeout.as_millis().saturating_mul(4)
        ));
        config.application_name(format!("conduit {}", c.replica_id));
        let shown = describe(&config);
        let tls = tls::MakeRustls::new(c.ca_file.as_deref())?;
        Ok(Connector { config, tls, shown })
    }

    /// One connection outside the pool (migrations, the listener), its driver spawned.
    pub(crate) async fn connect(&self) -> Result<tokio_postgres::Client> {
        let (client, connection) = self
            .config
            .connect(self.tls.clone())
            .await
            .map_err(|e| pg_err(&format!("connecting to PostgreSQL at {}", self.shown), e))?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "a PostgreSQL connection ended");
            }
        });
        Ok(client)
    }
}

/// Applies the migrations this build has and the database lacks (`conduit migrate`); returns the
/// versions applied.
pub async fn migrate(config: &PgConfig) -> Result<Vec<i32>> {
    let connector = Connector::new(config)?;
    let mut client = connector.connect().await?;
    schema::migrate(&mut client).await
}

/// Opens the shared state: connects, checks the schema version, starts the change listener and
/// the budget worker. `budget_defaults` are the config file's budgets (every replica must have
/// the same file).
pub async fn open(config: &PgConfig, budget_defaults: &[(String, BudgetLimit)]) -> Result<State> {
    let pg = Pg::open(config).await?;
    let budgets = budget::PgBudgets::open(pg.clone(), config, budget_defaults).await?;
    Ok(State {
        keys: Arc::new(pg.clone()),
        credentials: Arc::new(pg.clone()),
        budgets: Arc::new(budgets),
        budget_limits: Arc::new(pg.clone()),
        spend: Arc::new(pg.clone()),
        findings: Arc::new(pg.clone()),
        policy_modes: Arc::new(pg.clone()),
        prices: Arc::new(pg.clone()),
        uploads: Arc::new(pg.clone()),
        meta: Arc::new(pg.clone()),
        signin: Arc::new(pg),
    })
}

/// The watchers of each kind of change: this process's writes and, through the listener, every
/// other process's.
#[derive(Default)]
pub(crate) struct Hubs {
    pub(crate) keys: Hub<KeyChange>,
    pub(crate) credentials: Hub<CredentialChange>,
    pub(crate) budgets: Hub<String>,
    pub(crate) spend: Hub<String>,
    pub(crate) findings: Hub<String>,
    pub(crate) modes: Hub<String>,
    pub(crate) prices: Hub<()>,
    pub(crate) meta: Hub<String>,
    /// Another replica needs room in a shared budget: `scope|period` whose unused lease to give back.
    pub(crate) lease_returns: Hub<String>,
}

/// A change, as it travels in a NOTIFY payload: `<origin> <kind> <data>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    Key(KeyChange),
    Credential(CredentialChange),
    Budget(String),
    Spend(String),
    Finding(String),
    Mode(String),
    Prices,
    Meta(String),
    LeaseReturn(String),
}

impl Change {
    fn payload(&self, origin: &str) -> String {
        let (kind, data) = match self {
            Change::Key(k) => ("key", format!("{} {}", conduit_core::hex::encode(&k.hash.0), k.id)),
            Change::Credential(c) => ("credential", format!("{} {}", c.provider, c.id)),
            Change::Budget(s) => ("budget", s.clone()),
            Change::Spend(d) => ("spend", d.clone()),
            Change::Finding(id) => ("finding", id.clone()),
            Change::Mode(m) => ("mode", m.clone()),
            Change::Prices => ("prices", String::new()),
            Change::Meta(n) => ("meta", n.clone()),
            Change::LeaseReturn(k) => ("lease-return", k.clone()),
        };
        format!("{origin} {kind} {data}")
    }

    /// A payload another process sent: `(origin, change)`; `None` if it is not one of ours.
    fn parse(payload: &str) -> Option<(&str, Change)> {
        let mut parts = payload.splitn(3, ' ');
        let (origin, kind, data) = (parts.next()?, parts.next()?, parts.next().unwrap_or(""));
        let change = match kind {
            "key" => {
                let (hash, id) = data.split_once(' ')?;
                let bytes = conduit_core::hex::decode(hash)?;
                Change::Key(KeyChange {
                    id: id.into(),
                    hash: KeyHash(bytes.try_into().ok()?),
                })
            }
            "credential" => {
                let (provider, id) = data.split_once(' ')?;
                Change::Credential(CredentialChange {
                    provider: provider.into(),
                    id: id.into(),
                })
            }
            "budget" => Change::Budget(data.into()),
            "spend" => Change::Spend(data.into()),
            "finding" => Change::Finding(data.into()),
            "mode" => Change::Mode(data.into()),
            "prices" => Change::Prices,
            "meta" => Change::Meta(data.into()),
            "lease-return" => Change::LeaseReturn(data.into()),
            _ => return None,
        };
        Some((origin, change))
    }
}

impl Hubs {
    pub(crate) fn send(&self, change: Change) {
        match change {
            Change::Key(k) => self.keys.send(k),
            Change::Credential(c) => self.credentials.send(c),
            Change::Budget(s) => self.budgets.send(s),
            Change::Spend(d) => self.spend.send(d),
            Change::Finding(id) => self.findings.send(id),
            Change::Mode(m) => self.modes.send(m),
            Change::Prices => self.prices.send(()),
            Change::Meta(n) => self.meta.send(n),
            Change::LeaseReturn(k) => self.lease_returns.send(k),
        }
    }
}

/// The pool, this process's origin tag and its hubs. Cheap to clone.
#[derive(Clone)]
pub struct Pg(Arc<Inner>);

pub(crate) struct Inner {
    pub(crate) pool: Pool,
    pub(crate) connector: Connector,
    /// Tags this process's NOTIFY payloads, so the listener skips its own.
    pub(crate) origin: String,
    pub(crate) hubs: Hubs,
    /// Whether the listener is connected (changes from other replicas are being heard).
    pub(crate) listening: Arc<AtomicBool>,
    listener: std::sync::Mutex<Option<tokio::task::AbortHandle>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(h) = self.listener.lock().unwrap_or_else(|p| p.into_inner()).take() {
            h.abort();
        }
    }
}

impl Pg {
    /// Connects, checks the schema and starts the listener.
    pub async fn open(config: &PgConfig) -> Result<Pg> {
        let connector = Connector::new(config)?;
        let manager = Manager::from_config(
            connector.config.clone(),
            connector.tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(config.statement_timeout))
            .create_timeout(Some(config.connect_timeout))
            .recycle_timeout(Some(config.connect_timeout))
            .build()
            .map_err(|e| Error::msg(format!("building the PostgreSQL pool: {e}")))?;
        let mut origin = [0u8; 8];
        getrandom::fill(&mut origin).map_err(|e| Error::msg(format!("OS random source failed: {e}")))?;
        let pg = Pg(Arc::new(Inner {
            pool,
            connector,
            origin: conduit_core::hex::encode(&origin),
            hubs: Hubs::default(),
            listening: Arc::new(AtomicBool::new(false)),
            listener: std::sync::Mutex::new(None),
        }));
        schema::check(&*pg.client().await?).await?;
        let handle = listen::start(&pg).await?;
        *pg.0.listener.lock().unwrap_or_else(|p| p.into_inner()) = Some(handle);
        Ok(pg)
    }

    /// A pooled connection.
    pub(crate) async fn client(&self) -> Result<deadpool_postgres::Object> {
        self.0.pool.get().await.map_err(|e| {
            let why = match e {
                deadpool_postgres::PoolError::Backend(e) => pg_err("", e).to_string(),
                other => other.to_string(),
            };
            Error::msg(format!(
                "PostgreSQL at {} is unreachable{}",
                self.0.connector.shown,
                if why.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", why.trim_start_matches(": "))
                }
            ))
        })
    }

    /// Announces `change` to the other processes only (nothing was written).
    pub(crate) async fn announce(&self, change: Change) -> Result<()> {
        let payload = change.payload(&self.0.origin);
        self.client()
            .await?
            .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
            .await
            .map_err(|e| pg_err("announcing a change", e))?;
        Ok(())
    }

    /// Whether changes from other replicas are being heard right now.
    pub fn listening(&self) -> bool {
        self.0.listening.load(Ordering::Relaxed)
    }

    /// Runs one statement that writes and announces `change` (in the same statement, so the
    /// NOTIFY goes out when and only if the write commits), then tells this process's watchers.
    /// `sql` must end with a `SELECT` the notify can join: it is wrapped as
    /// `WITH w AS (<sql>) SELECT count(*), pg_notify(..) FROM w` when `gate` (announce only if
    /// rows were written), else the notify is unconditional.
    async fn write(
        &self,
        what: &str,
        sql: &str,
        params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
        change: Change,
        gate: bool,
    ) -> Result<u64> {
        let payload = change.payload(&self.0.origin);
        let n = params.len() + 1;
        let wrapped = if gate {
            format!(
                "WITH w AS ({sql} RETURNING 1), n AS (SELECT pg_notify('{CHANNEL}', ${n}) FROM (SELECT 1 FROM w LIMIT 1) AS one) SELECT (SELECT count(*) FROM w), (SELECT count(*) FROM n)"
            )
        } else {
            format!(
                "WITH w AS ({sql} RETURNING 1), n AS (SELECT pg_notify('{CHANNEL}', ${n})) SELECT (SELECT count(*) FROM w), (SELECT count(*) FROM n)"
            )
        };
        let mut all: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = params.to_vec();
        all.push(&payload);
        let row = self
            .client()
            .await?
            .query_one(wrapped.as_str(), &all)
            .await
            .map_err(|e| pg_err(what, e))?;
        let written = row.get::<_, i64>(0) as u64;
        if written > 0 || !gate {
            self.0.hubs.send(change);
        }
        Ok(written)
    }
}

type Params<'a> = &'a [&'a (dyn tokio_postgres::types::ToSql + Sync)];

impl Pg {
    /// The JSON record in the first column of the row `sql` finds, if any (`doing` names the
    /// read in an error, `what` the record).
    async fn record<T: DeserializeOwned>(
        &self,
        doing: &str,
        what: &str,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Option<T>> {
        let row = self
            .client()
            .await?
            .query_opt(sql, params)
            .await
            .map_err(|e| pg_err(doing, e))?;
        row.map(|r| decode(what, r.get::<_, &str>(0))).transpose()
    }

    /// The JSON records in the first column of every row `sql` returns.
    async fn records<T: DeserializeOwned>(
        &self,
        doing: &str,
        what: &str,
        sql: &str,
        params: Params<'_>,
    ) -> Result<Vec<T>> {
        let rows = self
            .client()
            .await?
            .query(sql, params)
            .await
            .map_err(|e| pg_err(doing, e))?;
        rows.iter().map(|r| decode(what, r.get::<_, &str>(0))).collect()
    }
}

fn decode<T: DeserializeOwned>(what: &str, text: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| Error::msg(format!("corrupt {what} record in PostgreSQL: {e}")))
}

fn encode<T: serde::Serialize>(what: &str, value: &T) -> Result<String> {
    serde_json::to_string(value).map_err(|e| Error::msg(format!("encoding a {what} record: {e}")))
}

/// A counter as PostgreSQL's `bigint` (counters never reach 2⁶³).
fn big(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[async_trait]
impl KeyStore for Pg {
    async fn insert(&self, hash: &KeyHash, record: &KeyRecord) -> Result<()> {
        let text = encode("key", record)?;
        let change = Change::Key(KeyChange {
            id: record.id.clone(),
            hash: *hash,
        });
        self.write(
            "adding a key",
            "INSERT INTO conduit_keys (hash, id, created_at, record) VALUES ($1, $2, $3, $4)",
            &[&&hash.0[..], &record.id, &record.created_at, &text],
            change,
            true,
        )
        .await
        .map_err(|e| {
            if e.to_string().contains("duplicate key") {
                Error::msg(format!(
                    "a key with id {:?} (or with the same secret) already exists",
                    record.id
                ))
            } else {
                e
            }
        })?;
        Ok(())
    }

    async fn by_hash(&self, hash: &KeyHash) -> Result<Option<KeyRecord>> {
        self.record(
            "looking up a key",
            "key",
            "SELECT record FROM conduit_keys WHERE hash = $1",
            &[&&hash.0[..]],
        )
        .await
    }

    async fn by_id(&self, id: &str) -> Result<Option<KeyRecord>> {
        self.record(
            "looking up a key",
            "key",
            "SELECT record FROM conduit_keys WHERE id = $1",
            &[&id],
        )
        .await
    }

    async fn update(&self, record: &KeyRecord) -> Result<()> {
        let text = encode("key", record)?;
        let client = self.client().await?;
        let row = client
            .query_opt(
                &*format!(
                    "WITH w AS (UPDATE conduit_keys SET record = $2 WHERE id = $1 RETURNING hash) \
                     SELECT hash, pg_notify('{CHANNEL}', $3 || ' key ' || encode(hash, 'hex') || ' ' || $1) FROM w"
                ),
                &[&record.id, &text, &self.0.origin],
            )
            .await
            .map_err(|e| pg_err(&format!("updating key {:?}", record.id), e))?
            .ok_or_else(|| Error::msg(format!("no key with id {:?}", record.id)))?;
        let hash: &[u8] = row.get(0);
        let hash = KeyHash(hash.try_into().map_err(|_| {
            Error::msg(format!(
                "corrupt key {:?} in PostgreSQL: hash is not 32 bytes",
                record.id
            ))
        })?);
        self.0.hubs.send(Change::Key(KeyChange {
            id: record.id.clone(),
            hash,
        }));
        Ok(())
    }

    async fn list(&self) -> Result<Vec<KeyRecord>> {
        self.records(
            "listing keys",
            "key",
            "SELECT record FROM conduit_keys ORDER BY created_at, id",
            &[],
        )
        .await
    }

    async fn entries(&self) -> Result<Vec<(KeyHash, KeyRecord)>> {
        let rows = self
            .client()
            .await?
            .query("SELECT hash, record FROM conduit_keys ORDER BY created_at, id", &[])
            .await
            .map_err(|e| pg_err("listing keys", e))?;
        rows.iter()
            .map(|r| {
                let hash: [u8; 32] = r
                    .get::<_, &[u8]>(0)
                    .try_into()
                    .map_err(|_| Error::msg("corrupt key in PostgreSQL: its hash is not 32 bytes"))?;
                Ok((KeyHash(hash), decode("key", r.get::<_, &str>(1))?))
            })
            .collect()
    }

    fn watch(&self) -> Watch<KeyChange> {
        self.0.hubs.keys.watch()
    }
}

#[async_trait]
impl CredentialStore for Pg {
    async fn put(&self, c: &SealedCredential) -> Result<()> {
        let text = encode("credential", c)?;
        self.write(
            "storing a credential",
            "INSERT INTO conduit_credentials (provider, id, sealed) VALUES ($1, $2, $3) \
             ON CONFLICT (provider, id) DO UPDATE SET sealed = EXCLUDED.sealed",
            &[&c.provider, &c.id, &text],
            Change::Credential(CredentialChange {
                provider: c.provider.clone(),
                id: c.id.clone(),
            }),
            false,
        )
        .await?;
        Ok(())
    }

    async fn get(&self, provider: &str, id: &str) -> Result<Option<SealedCredential>> {
        self.record(
            "reading a credential",
            "credential",
            "SELECT sealed FROM conduit_credentials WHERE provider = $1 AND id = $2",
            &[&provider, &id],
        )
        .await
    }

    async fn list(&self) -> Result<Vec<SealedCredential>> {
        self.records(
            "listing credentials",
            "credential",
            "SELECT sealed FROM conduit_credentials ORDER BY provider, id",
            &[],
        )
        .await
    }

    async fn reseal_all(&self, credentials: &[SealedCredential], master_key_id: &str) -> Result<()> {
        let mut client = self.client().await?;
        let fail = |e| pg_err("re-sealing credentials failed, nothing was changed", e);
        let tx = client.transaction().await.map_err(fail)?;
        for c in credentials {
            let text = encode("credential", c)?;
            tx.execute(
                "INSERT INTO conduit_credentials (provider, id, sealed) VALUES ($1, $2, $3) \
                 ON CONFLICT (provider, id) DO UPDATE SET sealed = EXCLUDED.sealed",
                &[&c.provider, &c.id, &text],
            )
            .await
            .map_err(fail)?;
            let payload = Change::Credential(CredentialChange {
                provider: c.provider.clone(),
                id: c.id.clone(),
            })
            .payload(&self.0.origin);
            tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
                .await
                .map_err(fail)?;
        }
        tx.execute(
            "INSERT INTO conduit_meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
            &[&META_MASTER_KEY_ID, &master_key_id],
        )
        .await
        .map_err(fail)?;
        let payload = Change::Meta(META_MASTER_KEY_ID.into()).payload(&self.0.origin);
        tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
            .await
            .map_err(fail)?;
        tx.commit().await.map_err(fail)?;
        for c in credentials {
            self.0.hubs.send(Change::Credential(CredentialChange {
                provider: c.provider.clone(),
                id: c.id.clone(),
            }));
        }
        self.0.hubs.send(Change::Meta(META_MASTER_KEY_ID.into()));
        Ok(())
    }

    fn watch(&self) -> Watch<CredentialChange> {
        self.0.hubs.credentials.watch()
    }
}

#[async_trait]
impl BudgetLimitStore for Pg {
    async fn list(&self) -> Result<Vec<(String, BudgetLimit)>> {
        let rows = self
            .client()
            .await?
            .query("SELECT scope, limits FROM conduit_budget_limits ORDER BY scope", &[])
            .await
            .map_err(|e| pg_err("listing budgets", e))?;
        rows.iter()
            .map(|r| Ok((r.get::<_, String>(0), decode("budget", r.get::<_, &str>(1))?)))
            .collect()
    }

    async fn put(&self, scope: &str, limit: &BudgetLimit) -> Result<()> {
        let change = Change::Budget(scope.to_string());
        if *limit == BudgetLimit::default() {
            self.write(
                "clearing a budget",
                "DELETE FROM conduit_budget_limits WHERE scope = $1",
                &[&scope],
                change,
                false,
            )
            .await?;
        } else {
            let text = encode("budget", limit)?;
            self.write(
                "setting a budget",
                "INSERT INTO conduit_budget_limits (scope, limits) VALUES ($1, $2) \
                 ON CONFLICT (scope) DO UPDATE SET limits = EXCLUDED.limits",
                &[&scope, &text],
                change,
                false,
            )
            .await?;
        }
        Ok(())
    }

    fn watch(&self) -> Watch<String> {
        self.0.hubs.budgets.watch()
    }
}

#[async_trait]
impl SpendStore for Pg {
    async fn add(&self, deltas: &[SpendRow]) -> Result<()> {
        // One row per (day, key, model): an upsert may touch each row once per statement.
        let mut folded: BTreeMap<(&str, &str, &str), SpendRow> = BTreeMap::new();
        for d in deltas {
            folded.entry((&d.day, &d.key_id, &d.model)).or_default().merge_row(d);
        }
        let Some(first_day) = deltas.first().map(|d| d.day.clone()) else {
            return Ok(());
        };
        let rows: Vec<&SpendRow> = folded.values().collect();
        let col = |f: fn(&SpendRow) -> u64| rows.iter().map(|r| big(f(r))).collect::<Vec<i64>>();
        let text = |f: fn(&SpendRow) -> &str| rows.iter().map(|r| f(r).to_string()).collect::<Vec<String>>();
        let (day, key_id, model, owner, team, provider) = (
            text(|r| &r.day),
            text(|r| &r.key_id),
            text(|r| &r.model),
            text(|r| &r.owner),
            text(|r| &r.team),
            text(|r| &r.provider),
        );
        let counters = [
            col(|r| r.requests),
            col(|r| r.errors),
            col(|r| r.estimated),
            col(|r| r.unpriced),
            col(|r| r.input),
            col(|r| r.output),
            col(|r| r.cache_read),
            col(|r| r.cache_write),
            col(|r| r.cache_write_1h),
            col(|r| r.web_searches),
            col(|r| r.cost_micros),
        ];
        let names = [
            "requests",
            "errors",
            "estimated",
            "unpriced",
            "input",
            "output",
            "cache_read",
            "cache_write",
            "cache_write_1h",
            "web_searches",
            "cost_micros",
        ];
        let casts: Vec<String> = (7..7 + names.len()).map(|i| format!("${i}::bigint[]")).collect();
        let updates: Vec<String> = names
            .iter()
            .map(|n| format!("{n} = conduit_spend.{n} + EXCLUDED.{n}"))
            .collect();
        let sql = format!(
            "INSERT INTO conduit_spend (day, key_id, model, owner, team, provider, {cols}) \
             SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], {casts}) \
             ON CONFLICT (day, key_id, model) DO UPDATE SET owner = EXCLUDED.owner, team = EXCLUDED.team, \
             provider = EXCLUDED.provider, {updates}",
            cols = names.join(", "),
            casts = casts.join(", "),
            updates = updates.join(", ")
        );
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            vec![&day, &key_id, &model, &owner, &team, &provider];
        for c in &counters {
            params.push(c);
        }
        self.write(
            &format!("adding {} spend rows", rows.len()),
            &sql,
            &params,
            Change::Spend(first_day),
            false,
        )
        .await?;
        Ok(())
    }

    async fn range(&self, since: &str, until: &str) -> Result<Vec<SpendRow>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT day, key_id, model, owner, team, provider, requests, errors, estimated, unpriced, input, output, \
                 cache_read, cache_write, cache_write_1h, web_searches, cost_micros FROM conduit_spend \
                 WHERE day >= $1 AND day <= $2 ORDER BY day, key_id, model",
                &[&since, &until],
            )
            .await
            .map_err(|e| pg_err("reading spend", e))?;
        Ok(rows
            .iter()
            .map(|r| {
                let n = |i: usize| r.get::<_, i64>(i).max(0) as u64;
                SpendRow {
                    day: r.get(0),
                    key_id: r.get(1),
                    model: r.get(2),
                    owner: r.get(3),
                    team: r.get(4),
                    provider: r.get(5),
                    requests: n(6),
                    errors: n(7),
                    estimated: n(8),
                    unpriced: n(9),
                    input: n(10),
                    output: n(11),
                    cache_read: n(12),
                    cache_write: n(13),
                    cache_write_1h: n(14),
                    web_searches: n(15),
                    cost_micros: n(16),
                }
            })
            .collect())
    }

    fn watch(&self) -> Watch<String> {
        self.0.hubs.spend.watch()
    }
}

#[async_trait]
impl FindingStore for Pg {
    async fn record(&self, findings: &[FindingRecord]) -> Result<()> {
        let Some(first) = findings.first() else {
            return Ok(());
        };
        let ids: Vec<&str> = findings.iter().map(|f| f.id.as_str()).collect();
        let times: Vec<i64> = findings.iter().map(|f| f.time).collect();
        let records = findings
            .iter()
            .map(|f| encode("finding", f))
            .collect::<Result<Vec<String>>>()?;
        self.write(
            "recording findings",
            "INSERT INTO conduit_findings (id, time, record) SELECT * FROM unnest($1::text[], $2::bigint[], $3::text[]) \
             ON CONFLICT (id) DO NOTHING",
            &[&ids, &times, &records],
            Change::Finding(first.id.clone()),
            false,
        )
        .await?;
        Ok(())
    }

    async fn list(&self, limit: usize) -> Result<Vec<FindingRecord>> {
        self.records(
            "listing findings",
            "finding",
            "SELECT record FROM conduit_findings ORDER BY id DESC LIMIT $1",
            &[&(limit.min(i64::MAX as usize) as i64)],
        )
        .await
    }

    async fn mark_false_positive(&self, id: &str, by: &str) -> Result<Option<FindingRecord>> {
        let mut client = self.client().await?;
        let fail = |e| pg_err(&format!("marking finding {id:?}"), e);
        let tx = client.transaction().await.map_err(fail)?;
        let Some(row) = tx
            .query_opt("SELECT record FROM conduit_findings WHERE id = $1 FOR UPDATE", &[&id])
            .await
            .map_err(fail)?
        else {
            return Ok(None);
        };
        let mut record: FindingRecord = decode("finding", row.get::<_, &str>(0))?;
        record.false_positive = Some(by.to_string());
        let text = encode("finding", &record)?;
        tx.execute("UPDATE conduit_findings SET record = $2 WHERE id = $1", &[&id, &text])
            .await
            .map_err(fail)?;
        let payload = Change::Finding(id.into()).payload(&self.0.origin);
        tx.execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &payload])
            .await
            .map_err(fail)?;
        tx.commit().await.map_err(fail)?;
        self.0.hubs.send(Change::Finding(id.into()));
        Ok(Some(record))
    }

    async fn prune(&self, before: i64) -> Result<usize> {
        let n = self
            .client()
            .await?
            .execute("DELETE FROM conduit_findings WHERE time < $1", &[&before])
            .await
            .map_err(|e| pg_err("pruning findings", e))?;
        Ok(n as usize)
    }

    fn watch(&self) -> Watch<String> {
        self.0.hubs.findings.watch()
    }
}

#[async_trait]
impl PolicyModeStore for Pg {
    async fn list(&self) -> Result<Vec<(String, String)>> {
        let rows = self
            .client()
            .await?
            .query("SELECT name, mode FROM conduit_policy_modes ORDER BY name", &[])
            .await
            .map_err(|e| pg_err("listing policy modes", e))?;
        Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn set(&self, key: &str, mode: Option<&str>) -> Result<()> {
        let change = Change::Mode(key.to_string());
        match mode {
            Some(m) => {
                self.write(
                    "setting a policy mode",
                    "INSERT INTO conduit_policy_modes (name, mode) VALUES ($1, $2) \
                     ON CONFLICT (name) DO UPDATE SET mode = EXCLUDED.mode",
                    &[&key, &m],
                    change,
                    false,
                )
                .await?
            }
            None => {
                self.write(
                    "clearing a policy mode",
                    "DELETE FROM conduit_policy_modes WHERE name = $1",
                    &[&key],
                    change,
                    false,
                )
                .await?
            }
        };
        Ok(())
    }

    fn watch(&self) -> Watch<String> {
        self.0.hubs.modes.watch()
    }
}

#[async_trait]
impl PriceStore for Pg {
    async fn overrides(&self) -> Result<Vec<PriceRow>> {
        self.records(
            "reading price overrides",
            "price",
            "SELECT row FROM conduit_prices ORDER BY provider, model",
            &[],
        )
        .await
    }

    async fn put_overrides(&self, rows: &[PriceRow]) -> Result<()> {
        // One row per (provider, model) per statement: the last one given wins.
        let mut by: BTreeMap<(&str, &str), &PriceRow> = BTreeMap::new();
        for r in rows {
            by.insert((r.provider.as_str(), &r.model), r);
        }
        let providers: Vec<&str> = by.keys().map(|k| k.0).collect();
        let models: Vec<&str> = by.keys().map(|k| k.1).collect();
        let texts = by
            .values()
            .map(|r| encode("price", r))
            .collect::<Result<Vec<String>>>()?;
        self.write(
            "storing price overrides",
            "INSERT INTO conduit_prices (provider, model, row) SELECT * FROM unnest($1::text[], $2::text[], $3::text[]) \
             ON CONFLICT (provider, model) DO UPDATE SET row = EXCLUDED.row",
            &[&providers, &models, &texts],
            Change::Prices,
            false,
        )
        .await?;
        Ok(())
    }

    fn watch(&self) -> Watch<()> {
        self.0.hubs.prices.watch()
    }
}

#[async_trait]
impl UploadStore for Pg {
    async fn put(&self, record: &UploadRecord) -> Result<()> {
        let text = encode("upload", record)?;
        self.client()
            .await?
            .execute(
                "INSERT INTO conduit_uploads (provider, id, record) VALUES ($1, $2, $3) \
                 ON CONFLICT (provider, id) DO UPDATE SET record = EXCLUDED.record",
                &[&record.provider, &record.id, &text],
            )
            .await
            .map_err(|e| pg_err("recording an upload", e))?;
        Ok(())
    }

    async fn get(&self, provider: &str, id: &str) -> Result<Option<UploadRecord>> {
        self.record(
            "reading an upload",
            "upload",
            "SELECT record FROM conduit_uploads WHERE provider = $1 AND id = $2",
            &[&provider, &id],
        )
        .await
    }

    async fn list(&self) -> Result<Vec<UploadRecord>> {
        self.records(
            "listing uploads",
            "upload",
            "SELECT record FROM conduit_uploads ORDER BY provider, id",
            &[],
        )
        .await
    }
}

#[async_trait]
impl SignInStore for Pg {
    async fn get(&self, name: &str) -> Result<Option<String>> {
        let row = self
            .client()
            .await?
            .query_opt("SELECT value FROM conduit_signin WHERE name = $1", &[&name])
            .await
            .map_err(|e| pg_err("reading a sign-in record", e))?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn swap(&self, name: &str, expected: Option<&str>, new: Option<&str>) -> Result<bool> {
        let client = self.client().await?;
        // Under READ COMMITTED a concurrent writer of the row makes the conditional statement
        // wait, then re-check its condition against the committed value: one winner.
        let written = match (expected, new) {
            (None, None) => return Ok(SignInStore::get(self, name).await?.is_none()),
            (None, Some(v)) => {
                client
                    .execute(
                        "INSERT INTO conduit_signin (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
                        &[&name, &v],
                    )
                    .await
            }
            (Some(old), Some(v)) => {
                client
                    .execute(
                        "UPDATE conduit_signin SET value = $3 WHERE name = $1 AND value = $2",
                        &[&name, &old, &v],
                    )
                    .await
            }
            (Some(old), None) => {
                client
                    .execute(
                        "DELETE FROM conduit_signin WHERE name = $1 AND value = $2",
                        &[&name, &old],
                    )
                    .await
            }
        }
        .map_err(|e| pg_err("writing a sign-in record", e))?;
        Ok(written == 1)
    }

    async fn scan(&self, prefix: &str) -> Result<Vec<(String, String)>> {
        let rows = self
            .client()
            .await?
            .query(
                "SELECT name, value FROM conduit_signin WHERE starts_with(name, $1) ORDER BY name",
                &[&prefix],
            )
            .await
            .map_err(|e| pg_err("reading sign-in records", e))?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }
}

#[async_trait]
impl MetaStore for Pg {
    async fn get(&self, name: &str) -> Result<Option<String>> {
        let row = self
            .client()
            .await?
            .query_opt("SELECT value FROM conduit_meta WHERE name = $1", &[&name])
            .await
            .map_err(|e| pg_err("reading metadata", e))?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn set(&self, name: &str, value: &str) -> Result<()> {
        self.write(
            "writing metadata",
            "INSERT INTO conduit_meta (name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = EXCLUDED.value",
            &[&name, &value],
            Change::Meta(name.to_string()),
            false,
        )
        .await?;
        Ok(())
    }

    async fn ping(&self) -> Result<()> {
        self.client()
            .await?
            .query_one("SELECT 1", &[])
            .await
            .map_err(|e| pg_err("pinging PostgreSQL", e))?;
        if !self.listening() {
            return Err(Error::msg(format!(
                "the PostgreSQL change listener is not connected to {}: changes made on other replicas (revocations, budgets, modes) are not being heard",
                self.0.connector.shown
            )));
        }
        Ok(())
    }

    fn watch(&self) -> Watch<String> {
        self.0.hubs.meta.watch()
    }
}
