//! The running gateway's shared state, built once at start-up by [`Gateway::open`]: validated
//! config, the [`State`] (opened in one place, [`open_state`]), the master key (checked against
//! the state), the upstream client. `main` and the tests build the gateway the same way, through
//! this type and `server::start`.

use std::path::Path;
use std::sync::{Arc, RwLock};

use zeroize::Zeroizing;

use conduit_state::State;
use conduit_state::ledger::Ledger;
use conduit_state::ratelimit::RateLimiter;
use conduit_state::records::META_MASTER_KEY_ID;
use conduit_state::store::MetaStore;

use crate::config::{Config, MasterKeySource, StoreConfig};
use crate::error::{Error, Result};
use crate::prices::{PriceRow, PriceTable};
use crate::seal::MasterKey;
use crate::upstream::{UpstreamClient, build_client};
use conduit_core::ids::RequestIds;

/// Shared state of a running gateway.
pub struct Gateway {
    /// Validated configuration.
    pub config: Config,
    /// Durable state: keys, credentials, budgets, spend, findings, modes, prices, uploads.
    pub state: State,
    /// Upstream HTTP client.
    pub client: UpstreamClient,
    /// Request id source.
    pub request_ids: RequestIds,
    /// Admin bearer token.
    pub(crate) admin_token: Zeroizing<String>,
    /// The spend ledger writer.
    pub ledger: Ledger,
    /// Per-key rate-limit state.
    pub rate_limiter: Arc<RateLimiter>,
    /// The Wasm policy set (`None` when `[policies] enabled = false`).
    pub policies: Option<Arc<crate::policy::Policies>>,
    /// The hash-chained audit log writer.
    pub audit: crate::audit::AuditLog,
    /// Requests in flight, at most `limits.max_in_flight`.
    pub in_flight: Arc<tokio::sync::Semaphore>,
    /// Prometheus metrics, folded from the audit records.
    pub metrics: Arc<crate::audit::metrics::Metrics>,
    /// Sign-in with the org's IdP, when configured.
    pub signin: Option<Arc<crate::idp::SignIn>>,
    /// Set once shutdown begins: `/readyz` answers 503 so no new work is routed here.
    pub draining: std::sync::atomic::AtomicBool,
    master_keys: RwLock<MasterKeys>,
    credential_writes: tokio::sync::Mutex<()>,
    prices: RwLock<Arc<PriceTable>>,
}

impl Gateway {
    /// Opens the store, resolves and checks the master key, resolves the admin token and builds
    /// the upstream client. Any failure here stops start-up with a specific message.
    pub async fn open(config: Config) -> Result<Gateway> {
        let state = open_state(&config).await?;
        Self::open_with_state(config, state).await
    }

    /// As [`Gateway::open`], over state the caller opened (another backend, or a test double).
    pub async fn open_with_state(mut config: Config, state: State) -> Result<Gateway> {
        check_state_files(&config)?;
        let master_key = resolve_master_key(&config.master_key, state.meta.as_ref(), true).await?;
        let admin_token = resolve_admin_token(&config, true)?;
        // Compiled policy artifacts are trusted only under a key derived from the master key.
        config.policies.cache_key = crate::policy::runtime::CacheKey::from_master(&master_key);
        let client = build_client(&config.network)?;
        let prices = PriceTable::shipped()?
            .with_overrides(state.prices.overrides().await?)
            .with_config(config.prices.clone());
        let ledger = Ledger::start(state.spend.clone());
        let metrics = Arc::new(crate::audit::metrics::Metrics::default());
        let otlp = match &config.otlp {
            Some(c) => Some(crate::audit::otlp::Exporter::start(
                c.clone(),
                build_client(&config.network)?,
            )?),
            None => None,
        };
        let audit = crate::audit::AuditLog::start(&config.audit, metrics.clone(), Some(prune_findings(&state)), otlp)?;
        let policies = if config.policies.enabled {
            let stored = state.policy_modes.list().await?;
            let pc = config.policies.clone();
            // Compiling the components is seconds of CPU: not on an async worker.
            let p = tokio::task::spawn_blocking(move || crate::policy::Policies::open(pc, &stored))
                .await
                .map_err(|e| Error::msg(format!("loading the policies failed: {e}")))??;
            p.watch();
            Some(p)
        } else {
            None
        };
        let signin = config
            .signin
            .clone()
            .map(|c| Arc::new(crate::idp::SignIn::new(c, client.clone())));
        let in_flight = Arc::new(tokio::sync::Semaphore::new(config.limits.max_in_flight));
        Ok(Gateway {
            in_flight,
            draining: std::sync::atomic::AtomicBool::new(false),
            signin,
            config,
            state,
            client,
            request_ids: RequestIds::new(),
            admin_token,
            ledger,
            rate_limiter: Arc::default(),
            policies,
            audit,
            metrics,
            master_keys: RwLock::new(MasterKeys {
                current: Arc::new(master_key),
                next: None,
            }),
            credential_writes: tokio::sync::Mutex::new(()),
            prices: RwLock::new(Arc::new(prices)),
        })
    }

    /// The prices in force.
    pub fn prices(&self) -> Arc<PriceTable> {
        self.prices.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Stores price overrides and puts them in force for the next request.
    pub async fn add_price_overrides(&self, rows: Vec<PriceRow>) -> Result<usize> {
        self.state.prices.put_overrides(&rows).await?;
        self.reload_prices().await?;
        Ok(rows.len())
    }

    /// Re-reads the stored overrides and puts the table in force.
    async fn reload_prices(&self) -> Result<()> {
        let table = PriceTable::shipped()?
            .with_overrides(self.state.prices.overrides().await?)
            .with_config(self.config.prices.clone());
        *self.prices.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(table);
        Ok(())
    }

    /// Copies the audit chain's synced head into the store now (the checkpoint task does it every
    /// few seconds); returns it, or `None` before the first record.
    pub async fn checkpoint_audit(&self) -> Result<Option<crate::audit::chain::Head>> {
        let dir = self.audit.dir().to_path_buf();
        let head = tokio::task::spawn_blocking(move || crate::audit::chain::read_head(&dir))
            .await
            .map_err(|e| Error::msg(format!("reading the audit head failed: {e}")))??;
        let Some(head) = head else { return Ok(None) };
        let name = audit_checkpoint_name(self.config.replica_id());
        let value = serde_json::to_string(&head)?;
        if self.state.meta.get(&name).await?.as_deref() != Some(value.as_str()) {
            self.state.meta.set(&name, &value).await?;
        }
        Ok(Some(head))
    }

    /// The current master key (what new credentials are sealed under).
    pub fn master_key(&self) -> Arc<MasterKey> {
        self.master_keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .current
            .clone()
    }

    /// The key that unseals a credential sealed under `master_key_id`: the current one, or —
    /// while a rotation is re-sealing — the next, so no request fails mid-rotation.
    pub fn unsealing_key(&self, master_key_id: &str) -> Arc<MasterKey> {
        let keys = self.master_keys.read().unwrap_or_else(|p| p.into_inner());
        match &keys.next {
            Some(next) if next.id() == master_key_id => next.clone(),
            _ => keys.current.clone(),
        }
    }

    /// Changes a policy mode at run time: persisted first, then applied to the running set, so a
    /// restart keeps what this process enforces.
    pub async fn set_policy_mode(&self, category: &str, mode: &str) -> Result<()> {
        let policies = self
            .policies
            .as_ref()
            .ok_or_else(|| Error::msg("the policy stage is disabled ([policies] enabled = false)"))?;
        let m = crate::policy::Mode::parse_arg(mode)?;
        crate::policy::config::modes_key_ok(category)?;
        self.state.policy_modes.set(category, Some(m.as_str())).await?;
        policies.set_mode(category, m)
    }

    /// Seals and stores a provider credential under the current master key.
    pub async fn set_credential(
        &self,
        provider: &str,
        secret: Zeroizing<String>,
    ) -> Result<conduit_state::operator::CredentialInfo> {
        let _writes = self.credential_writes.lock().await;
        conduit_state::operator::set_credential(self.state.credentials.as_ref(), &self.master_key(), provider, secret)
            .await
    }

    /// Re-seals every credential under `new` and switches to it. Credential writes wait for it;
    /// requests keep unsealing throughout (by the key id each credential names).
    pub async fn rotate_master_key(&self, new: MasterKey) -> Result<usize> {
        let _writes = self.credential_writes.lock().await;
        let (old, new) = (self.master_key(), Arc::new(new));
        self.master_keys.write().unwrap_or_else(|p| p.into_inner()).next = Some(new.clone());
        let rotated = conduit_state::operator::rotate_master(self.state.credentials.as_ref(), &old, &new).await;
        // A failure may still have committed (a sync failing after the re-seal): the store's
        // recorded key id says which key now seals the credentials, so switch to that one.
        let sealed_under_new = match &rotated {
            Ok(_) => true,
            Err(_) => self.state.meta.get(META_MASTER_KEY_ID).await.ok().flatten().as_deref() == Some(new.id()),
        };
        // The key file first: a gateway restarted from it must find the key the store names.
        let saved = match &self.config.master_key {
            MasterKeySource::Generated(path) if sealed_under_new => {
                match replace_secret_file(path, new.to_base64().as_bytes()) {
                    Ok(()) => {
                        tracing::warn!(path = %path.display(), "the generated master key file now holds the rotated key");
                        Ok(())
                    }
                    Err(e) => Err(Error::msg(format!(
                        "the credentials are re-sealed under master key {}, but the generated key file {:?} still holds the old key ({e}); put the new key (the one you rotated to) in that file before the gateway restarts",
                        new.id(),
                        path.display().to_string()
                    ))),
                }
            }
            _ => Ok(()),
        };
        // Memory follows the store whether or not the file could be written: the credentials are
        // sealed under whichever key the store records, and so must be the next one written.
        let mut keys = self.master_keys.write().unwrap_or_else(|p| p.into_inner());
        keys.next = None;
        if sealed_under_new {
            keys.current = new;
        }
        drop(keys);
        saved?;
        rotated
    }
}

/// The master key in force and, during a rotation, the one replacing it.
struct MasterKeys {
    current: Arc<MasterKey>,
    next: Option<Arc<MasterKey>>,
}

/// Findings age out with the audit log: the writer thread's retention cutoff, applied on the
/// runtime that opened the gateway.
fn prune_findings(state: &State) -> crate::audit::RetentionHook {
    let (findings, runtime) = (state.findings.clone(), tokio::runtime::Handle::current());
    Box::new(move |cutoff| {
        let findings = findings.clone();
        runtime.spawn(async move {
            match findings.prune(cutoff).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(findings = n, "policy findings past the audit retention removed"),
                Err(e) => tracing::error!(error = %e, "pruning policy findings failed"),
            }
        });
    })
}

/// Keeps what this process holds in memory in step with the state when another process (another
/// replica on a shared store, or the CLI) changes it: price overrides and policy modes. A watcher
/// that falls behind re-reads everything. The tasks end with the gateway.
pub fn follow_changes(gateway: &Arc<Gateway>) {
    let weak = Arc::downgrade(gateway);
    let mut prices = gateway.state.prices.watch();
    tokio::spawn(async move {
        while !matches!(
            prices.recv().await,
            Err(tokio::sync::broadcast::error::RecvError::Closed)
        ) {
            let Some(gw) = weak.upgrade() else { return };
            if let Err(e) = gw.reload_prices().await {
                tracing::warn!(error = %e, "re-reading price overrides after a change failed; the previous table stays in force");
            }
        }
    });
    if gateway.policies.is_none() {
        return;
    }
    let weak = Arc::downgrade(gateway);
    let mut modes = gateway.state.policy_modes.watch();
    tokio::spawn(async move {
        while !matches!(
            modes.recv().await,
            Err(tokio::sync::broadcast::error::RecvError::Closed)
        ) {
            let Some(gw) = weak.upgrade() else { return };
            let Some(policies) = &gw.policies else { return };
            match gw.state.policy_modes.list().await {
                Ok(stored) => {
                    let current = policies.modes();
                    for (key, mode) in stored {
                        match crate::policy::Mode::parse(&mode) {
                            Some(m) if current.entries().get(&key) == Some(&m) => {}
                            Some(m) => {
                                if let Err(e) = policies.set_mode(&key, m) {
                                    tracing::warn!(category = %key, error = %e, "ignoring a stored policy mode");
                                }
                            }
                            None => {
                                tracing::warn!(category = %key, mode = %mode, "ignoring an unknown stored policy mode")
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "re-reading policy modes after a change failed"),
            }
        }
    });
}

/// How often the audit chain's head is checkpointed into the store.
pub const AUDIT_CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// The store's name for a replica's audit checkpoint.
pub fn audit_checkpoint_name(replica: &str) -> String {
    format!("audit_checkpoint:{replica}")
}

/// Copies the audit chain's synced head into the store every [`AUDIT_CHECKPOINT_EVERY`], so a
/// rewrite of this replica's files — even a consistent one, `HEAD` included — is found by
/// `audit verify` against the store (which the files' writer cannot rewrite: another host, or at
/// least another trust boundary).
pub fn checkpoint_audit(gateway: &Arc<Gateway>) {
    let weak = Arc::downgrade(gateway);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(AUDIT_CHECKPOINT_EVERY);
        loop {
            tick.tick().await;
            let Some(gw) = weak.upgrade() else { return };
            if let Err(e) = gw.checkpoint_audit().await {
                tracing::warn!(error = %e, "checkpointing the audit head into the store failed");
            }
        }
    });
}

/// How often the gateway looks whether it went idle (no request began since the last look).
pub const IDLE_CHECK_EVERY: std::time::Duration = std::time::Duration::from_secs(10);

/// Gives memory back to the OS once the gateway goes idle after serving (and once after
/// start-up: compiling and configuring policies leaves tens of MiB freed but held). glibc keeps
/// memory freed by a thread in that thread's arena for reuse; a burst of large bodies or a
/// policy compile would otherwise hold its peak for the process's life (the suite measured an
/// idle gateway at 121 MiB, of which `malloc_trim` returns ~30). It runs only while no request
/// began for [`IDLE_CHECK_EVERY`], on a blocking thread, so it never delays a request.
pub fn return_idle_memory(gateway: &Arc<Gateway>) {
    let weak = Arc::downgrade(gateway);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(IDLE_CHECK_EVERY);
        let mut idle = IdleWatch::default();
        loop {
            tick.tick().await;
            let Some(gw) = weak.upgrade() else { return };
            let issued = gw.request_ids.issued();
            drop(gw);
            if idle.went_idle(issued) {
                let _ = tokio::task::spawn_blocking(trim_heap).await;
            }
        }
    });
}

/// Says once per quiet spell that the gateway went idle: no request began between two looks,
/// and requests (or start-up) came since the last time it said so.
#[derive(Debug, Default)]
struct IdleWatch {
    seen: Option<u64>,
    said_at: Option<u64>,
}

impl IdleWatch {
    fn went_idle(&mut self, issued: u64) -> bool {
        let idle = self.seen == Some(issued) && self.said_at != Some(issued);
        if idle {
            self.said_at = Some(issued);
        }
        self.seen = Some(issued);
        idle
    }
}

/// Returns the allocator's free memory to the OS (glibc `malloc_trim`; elsewhere nothing).
fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: `malloc_trim` takes no pointer, is thread-safe (it locks each arena in turn) and
    // only releases pages of free chunks: no memory in use is touched. The second audited
    // `unsafe` in the workspace (see Cargo.toml's lints).
    #[allow(unsafe_code)]
    unsafe {
        libc::malloc_trim(0);
    }
}

/// The audit checkpoint the store holds for `replica`.
pub async fn audit_checkpoint(state: &State, replica: &str) -> Result<Option<crate::audit::chain::Head>> {
    match state.meta.get(&audit_checkpoint_name(replica)).await? {
        Some(v) => serde_json::from_str(&v).map(Some).map_err(|e| {
            Error::msg(format!(
                "the store's audit checkpoint for {replica:?} is not valid: {e}"
            ))
        }),
        None => Ok(None),
    }
}

/// Opens the state the configuration names: the one place a backend is chosen — the embedded
/// sled store under `data_dir`, or a PostgreSQL database shared by every replica (the data
/// directory still holds this replica's audit files and generated secrets).
pub async fn open_state(config: &Config) -> Result<State> {
    crate::fsperm::create_private_dir(&config.data_dir).map_err(|e| {
        Error::msg(format!(
            "creating data directory {:?}: {e}",
            config.data_dir.display().to_string()
        ))
    })?;
    check_state_files(config)?;
    let state = match &config.store {
        StoreConfig::Sled => conduit_state_sled::open(&config.data_dir, &config.budgets).await?,
        StoreConfig::Postgres(pg) => conduit_state_postgres::open(pg, &config.budgets).await?,
    };
    Ok(conduit_state::cache::with_caches(state, config.cache_ttl))
}

/// Refuses to start on state another user could change (`crate::fsperm`): the data directory,
/// the master key file, the admin token file, the compiled-policy cache.
pub fn check_state_files(config: &Config) -> Result<()> {
    let check = crate::fsperm::check_not_writable_by_others;
    check(&config.data_dir, "the data directory")?;
    match &config.master_key {
        MasterKeySource::File(p) | MasterKeySource::Generated(p) => check(p, "the master key file")?,
        MasterKeySource::Env(_) => {}
    }
    check(&config.data_dir.join("admin.token"), "the admin token file")?;
    if let Some(dir) = &config.policies.cache_dir {
        check(dir, "the compiled-policy cache")?;
    }
    Ok(())
}

/// Loads the master key from its source and checks it is the one that sealed this store.
///
/// `may_generate`: with no key configured, create `<data_dir>/master.key` on first use
/// (development default). The CLI passes `false` when it only reads.
pub async fn resolve_master_key(
    source: &MasterKeySource,
    meta: &dyn MetaStore,
    may_generate: bool,
) -> Result<MasterKey> {
    let recorded = meta.get(META_MASTER_KEY_ID).await?;
    let key = match source {
        MasterKeySource::Env(v) => MasterKey::from_base64(v, "CONDUIT_MASTER_KEY")?,
        MasterKeySource::File(path) => read_key_file(path)?,
        MasterKeySource::Generated(path) if path.exists() => read_key_file(path)?,
        MasterKeySource::Generated(path) => {
            if let Some(id) = &recorded {
                return Err(Error::msg(format!(
                    "this store's credentials are sealed under master key {id}, but no master key is configured and {:?} does not exist; set CONDUIT_MASTER_KEY (or --master-key-file) to that key",
                    path.display().to_string()
                )));
            }
            if !may_generate {
                return Err(Error::msg(
                    "no master key is configured; set CONDUIT_MASTER_KEY, or start the gateway once to generate a development key",
                ));
            }
            let (key, encoded) = MasterKey::generate()?;
            write_secret_file(path, encoded.as_bytes())?;
            tracing::warn!(
                path = %path.display(),
                master_key_id = key.id(),
                "no master key configured: generated one next to the data for development; in production set CONDUIT_MASTER_KEY from a secret manager and keep it away from the data directory"
            );
            key
        }
    };
    match recorded {
        Some(id) if id != key.id() => Err(Error::msg(format!(
            "the configured master key ({}) is not the one that sealed this store's credentials ({id}); start with the original key, or re-seal with `conduit credentials rotate-master` while holding it",
            key.id()
        ))),
        Some(_) => Ok(key),
        None => {
            meta.set(META_MASTER_KEY_ID, key.id()).await?;
            Ok(key)
        }
    }
}

fn read_key_file(path: &Path) -> Result<MasterKey> {
    let shown = path.display().to_string();
    let text = Zeroizing::new(
        std::fs::read_to_string(path).map_err(|e| Error::msg(format!("reading master key file {shown:?}: {e}")))?,
    );
    MasterKey::from_base64(&text, &format!("master key file {shown:?}"))
}

/// Resolves the admin token: configured, or `<data_dir>/admin.token` (generated by the gateway).
pub fn resolve_admin_token(config: &Config, may_generate: bool) -> Result<Zeroizing<String>> {
    if let Some(t) = &config.admin_token {
        return Ok(Zeroizing::new(t.expose().to_string()));
    }
    let path = config.data_dir.join("admin.token");
    if path.exists() {
        let t = std::fs::read_to_string(&path).map_err(|e| {
            Error::msg(format!(
                "reading admin token file {:?}: {e}",
                path.display().to_string()
            ))
        })?;
        let t = Zeroizing::new(t.trim().to_string());
        if t.len() < 16 {
            return Err(Error::msg(format!(
                "the admin token file {:?} holds {} characters; an admin token is at least 16 random characters — replace it (e.g. `openssl rand -hex 24 > {}`), or delete it to have one generated",
                path.display().to_string(),
                t.len(),
                path.display()
            )));
        }
        return Ok(t);
    }
    if !may_generate {
        return Err(Error::msg(format!(
            "no admin token: set CONDUIT_ADMIN_TOKEN, or start the gateway once so it writes {:?}",
            path.display().to_string()
        )));
    }
    let mut raw = [0u8; 24];
    getrandom::fill(&mut raw).map_err(|e| Error::msg(format!("OS random source failed: {e}")))?;
    let token = Zeroizing::new(format!("cat_{}", crate::hex::encode(&raw)));
    write_secret_file(&path, token.as_bytes())?;
    tracing::info!(path = %path.display(), "generated an admin token (the CLI reads it from there)");
    Ok(token)
}

/// Atomically replaces a secret file (write a sibling, then rename over it).
pub fn replace_secret_file(path: &Path, contents: &[u8]) -> Result<()> {
    let tmp = path.with_extension("new");
    let _ = std::fs::remove_file(&tmp);
    write_secret_file(&tmp, contents)?;
    std::fs::rename(&tmp, path).map_err(|e| Error::msg(format!("replacing {:?}: {e}", path.display().to_string())))
}

/// Writes a file readable by the owner only.
fn write_secret_file(path: &Path, contents: &[u8]) -> Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        crate::fsperm::create_private_dir(dir)?;
    }
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts
        .open(path)
        .map_err(|e| Error::msg(format!("writing {:?}: {e}", path.display().to_string())))?;
    f.write_all(contents)?;
    f.sync_all()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::IdleWatch;

    #[test]
    fn idle_is_said_once_per_quiet_spell() {
        let mut w = IdleWatch::default();
        // Start-up: the first look only sees; quiet at the second (policy compile garbage).
        assert!(!w.went_idle(0));
        assert!(w.went_idle(0));
        assert!(!w.went_idle(0), "once per quiet spell");
        // Busy, then quiet again.
        assert!(!w.went_idle(500));
        assert!(!w.went_idle(900));
        assert!(w.went_idle(900));
        assert!(!w.went_idle(900));
        assert!(!w.went_idle(901));
        assert!(w.went_idle(901));
    }
}
