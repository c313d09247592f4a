//! The audit log: one metadata-only record per request, whatever happened, in append-only,
//! hash-chained JSON-lines files under `<data_dir>/audit/` (one file per UTC day).
//!
//! - **What a record holds** ([`AuditRecord`]): ids, principal, client family, provider, path,
//!   model, status, error class, timings, sizes, tokens, cost, findings (category, rule, mode,
//!   location), the policy-set digest, a hashed session id. Never a body, a prompt, a completion, a
//!   query string or a key: the type has no field that could carry one.
//! - **Chain**: each line carries `seq` and `prev`, the SHA-256 of the previous line's bytes;
//!   `HEAD` holds the last `seq` and hash, `ANCHOR` where the chain starts after retention removed
//!   older days. [`chain::verify`] re-walks it and names the first record altered or removed.
//! - **Writer**: the request path only sends the record into a channel; one thread assigns `seq`,
//!   chains, appends and syncs. `durability = "group"` (default) takes records in batches (sleeping
//!   5 ms between them, so requests never wake it one by one) and syncs at most every 100 ms — a
//!   process crash loses only what is still queued, a power loss at most the last ~100 ms. `"strict"` syncs
//!   before acknowledging, and the response's last byte waits for that acknowledgement
//!   ([`Pending`]).
//! - **When the directory cannot be written** (full, unwritable, a failed `fsync`): the file is cut
//!   back to its last whole (after a failed `fsync`, last synced) line, the records are held and
//!   retried every 100 ms, [`AuditLog::failing`] names the cause (strict mode refuses requests on
//!   it, `/readyz` reports it), strict acknowledgements answer "not durable", and held records
//!   count in [`AuditLog::backlog`]. Beyond 64 MiB held, records are dropped and counted, and an
//!   `audit-gap` record says how many once writing works again.
//! - **Retention**: whole day files older than `retention_days` are deleted (hourly), with the
//!   policy findings of those days.
//!
//! Metrics (`crate::metrics`) are folded from the same records on the writer thread, so the
//! request path pays one channel send for both.

pub mod chain;
pub mod export;
pub mod fields;
pub mod metrics;
pub mod otlp;
pub mod rot;

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::metrics::Metrics;
use conduit_core::error::{Error, Result};

/// How long a written record may wait for `fsync` in group mode.
pub const GROUP_COMMIT_WINDOW: Duration = Duration::from_millis(100);

/// `[audit]` in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    /// `group` (default: fsync at most every 100 ms) or `strict` (fsync before the response's last
    /// byte). Env `CONDUIT_AUDIT_DURABILITY`.
    pub durability: Option<String>,
    /// Days of audit records (and policy findings) to keep; 0 keeps everything. Default 400.
    pub retention_days: Option<u32>,
    /// Directory of the day files; default `<data_dir>/audit`.
    pub dir: Option<PathBuf>,
    /// Records queued for the writer above which new requests are refused (503, `retry-after`)
    /// until it catches up. Default 20000.
    pub max_backlog: Option<usize>,
}

/// When a record counts as written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Synced within [`GROUP_COMMIT_WINDOW`]; never waited for.
    Group,
    /// Synced before the client receives the response's last byte.
    Strict,
}

/// Validated `[audit]`.
#[derive(Debug, Clone)]
pub struct AuditConfig {
    /// Durability mode.
    pub durability: Durability,
    /// Days to keep; `None` keeps everything.
    pub retention_days: Option<u32>,
    /// Directory of the day files.
    pub dir: PathBuf,
    /// Queued records above which new requests are refused.
    pub max_backlog: usize,
}

impl RawAudit {
    /// Validates against the data directory and the environment.
    pub fn validate(self, data_dir: &Path, env: &dyn Fn(&str) -> Option<String>) -> Result<AuditConfig> {
        let durability = match env("CONDUIT_AUDIT_DURABILITY").or(self.durability).as_deref() {
            None | Some("group") => Durability::Group,
            Some("strict") => Durability::Strict,
            Some(other) => {
                return Err(Error::msg(format!(
                    "audit.durability = {other:?}: expected \"group\" (fsync every 100 ms) or \"strict\" (fsync before each response ends)"
                )));
            }
        };
        Ok(AuditConfig {
            durability,
            retention_days: match self.retention_days.unwrap_or(400) {
                0 => None,
                d => Some(d),
            },
            dir: self.dir.unwrap_or_else(|| data_dir.join("audit")),
            max_backlog: self.max_backlog.unwrap_or(20_000).max(1),
        })
    }
}

/// One finding as the audit record shows it: what kind and where, never the value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditFinding {
    /// Dotted category (`secret.aws-access-key`).
    pub category: String,
    /// Rule or term id.
    pub rule: String,
    /// `alert` or `block`.
    pub mode: String,
    /// JSON path of the segment and byte span (`messages[0].content[1].text:17-57`), or `request`.
    pub location: String,
}

/// One request, as recorded. Field order is the line's field order (and the CSV's columns).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuditRecord {
    /// Position in the chain (1-based, no gaps).
    #[serde(default)]
    pub seq: u64,
    /// SHA-256 (hex) of the previous line; 64 zeros for the first.
    #[serde(default)]
    pub prev: String,
    /// `x-conduit-request-id`.
    pub request_id: String,
    /// Start, Unix milliseconds.
    pub start_ms: i64,
    /// End (response finished, refused, or abandoned), Unix milliseconds.
    pub end_ms: i64,
    /// Stand-in key id (absent before authentication).
    pub key_id: Option<String>,
    /// Key owner.
    pub owner: Option<String>,
    /// Key team.
    pub team: Option<String>,
    /// Client family from the user-agent (`claude-code`, `codex`, `anthropic-python`, …).
    pub client: String,
    /// Client address.
    pub client_ip: String,
    /// API family (`anthropic`, `openai`), once routed.
    pub provider: Option<String>,
    /// Upstream `host:port`.
    pub upstream: Option<String>,
    /// HTTP method.
    pub method: String,
    /// The endpoint's path template (`/v1/messages`, `/v1/files/{id}`), or `(refused path)`:
    /// never the client's raw path.
    pub path: String,
    /// How the request was treated: `inspected`, `passthrough:json|text|opaque`,
    /// `inspected+opaque-parts` (an upload with binary parts forwarded unread), `refused`.
    #[serde(default)]
    pub treatment: String,
    /// Requested model.
    pub model: Option<String>,
    /// Status the client received.
    pub status: u16,
    /// How it ended: `complete`, `client_gone`, `upstream_error`, `idle_timeout`, or the gateway's
    /// refusal kind (`unauthenticated`, `budget_exceeded`, `policy_blocked`, …).
    pub outcome: String,
    /// Coarse failure class (see docs/audit.md); absent on success.
    pub error_class: Option<String>,
    /// Client asked for a stream.
    pub stream: bool,
    /// Start → first response byte to the client, ms.
    pub ttfb_ms: Option<f64>,
    /// Start → end, ms.
    pub duration_ms: f64,
    /// Time the gateway spent before the request left for the upstream, ms.
    pub overhead_ms: Option<f64>,
    /// Time in the policy stage, ms.
    pub policy_ms: Option<f64>,
    /// Request body bytes.
    pub bytes_in: u64,
    /// Response body bytes sent to the client.
    pub bytes_out: u64,
    /// Uncached input tokens.
    pub input_tokens: u64,
    /// Output tokens.
    pub output_tokens: u64,
    /// Cache-read input tokens.
    pub cache_read_tokens: u64,
    /// Cache-write input tokens.
    pub cache_write_tokens: u64,
    /// Cost in micro-dollars; absent when nothing could price it.
    pub cost_micros: Option<u64>,
    /// How the cost was priced: `listed` (the shipped table), `override` (the organisation's own
    /// price) or `ceiling` (the model has no price: its provider's dearest rates); absent when
    /// nothing was billed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price: Option<String>,
    /// Tokens are an estimate (the response carried no usage).
    pub estimated: bool,
    /// Policy findings.
    pub findings: Vec<AuditFinding>,
    /// Digest of the policy set that judged the request.
    pub policy_set: Option<String>,
    /// Hashed client session id (`X-Claude-Code-Session-Id`, Codex `session_id`).
    pub session: Option<String>,
    /// On a `suppressed` record: how many further refusals of the same kind, from the same address,
    /// in the same minute, it stands for (unauthenticated refusals beyond the first few are
    /// counted, not written one by one).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub suppressed: u64,
    /// On an admin action (admin API, dashboard, CLI through the API): who did what to which object.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin: Option<AdminAction>,
}

/// An administrator's action, as the audit chain keeps it: never a secret (a credential's value,
/// a key's secret, a token), only what changed.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AdminAction {
    /// `sso:alice@corp.example`, `token:adm_…`, or `bootstrap-token`.
    pub actor: String,
    /// The roles the actor acted with (`admin`, `finance`, …), comma-separated.
    pub roles: String,
    /// What (`budget.set`, `key.revoke`, `policy.mode`, …).
    pub action: String,
    /// Which object (`team:payments`, `key_…`, `secrets`), if one.
    #[serde(default)]
    pub object: Option<String>,
    /// `{"before": …, "after": …}` for a changed setting, as JSON text.
    #[serde(default)]
    pub change: Option<String>,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

impl AuditRecord {
    /// All input tokens (uncached + cache read + cache write): the context size.
    pub fn context_tokens(&self) -> u64 {
        self.input_tokens + self.cache_read_tokens + self.cache_write_tokens
    }
}

/// The genesis `prev`.
pub const ZERO_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// SHA-256 of a line (without its newline), hex.
pub fn line_hash(line: &[u8]) -> String {
    conduit_core::hex::encode(&Sha256::digest(line))
}

/// Hashes a client session id: records can be grouped by session without holding the id itself.
pub fn session_hash(id: &str) -> String {
    let digest = Sha256::digest([b"conduit-session\0".as_slice(), id.as_bytes()].concat());
    conduit_core::hex::encode(&digest[..8])
}

/// Client family from a user-agent (and Claude Code's `x-app`).
pub fn client_family(user_agent: Option<&str>) -> &'static str {
    let Some(ua) = user_agent else { return "unknown" };
    let ua = ua.trim();
    let starts = |p: &str| ua.len() >= p.len() && ua[..p.len()].eq_ignore_ascii_case(p);
    if starts("claude-cli/") || starts("claude-code/") {
        "claude-code"
    } else if starts("codex") {
        "codex"
    } else if starts("cursor") {
        "cursor"
    } else if starts("Anthropic/Python") {
        "anthropic-python"
    } else if starts("Anthropic/JS") {
        "anthropic-js"
    } else if starts("OpenAI/Python") {
        "openai-python"
    } else if starts("OpenAI/JS") {
        "openai-js"
    } else if starts("aws-sdk-") {
        "aws-sdk"
    } else if starts("curl/") {
        "curl"
    } else if starts("python-httpx") || starts("python-requests") {
        "python"
    } else {
        "other"
    }
}

/// Acknowledgement of a record (strict mode): `Ok(true)` once it is durable; `Ok(false)` when it
/// could not be made durable (the disk is full or unwritable: the writer keeps it and retries),
/// and an error when the writer is gone. Anything but `Ok(true)` means the client must not see
/// the response complete.
pub type Pending = tokio::sync::oneshot::Receiver<bool>;

/// Records held in memory while the audit directory cannot be written, at most this many bytes;
/// beyond it records are dropped, counted, and the count written as an `audit-gap` record once
/// writing works again (the log itself says what it is missing).
const MAX_HELD_BYTES: usize = 64 << 20;

/// Whether the writer can write, shared with the request path.
#[derive(Default)]
struct Health {
    /// Whether `why` holds a cause: read on every request without taking the lock.
    failing: std::sync::atomic::AtomicBool,
    /// The last write, sync or open error while it persists.
    why: std::sync::Mutex<Option<String>>,
    /// Records taken by the writer and not yet durable (held while failing).
    held: std::sync::atomic::AtomicUsize,
}

enum Msg {
    Record(Box<AuditRecord>, Option<tokio::sync::oneshot::Sender<bool>>),
    /// Everything before it written and synced.
    Sync(mpsc::Sender<()>),
}

/// Handle to the audit writer. Cheap to clone.
#[derive(Clone)]
pub struct AuditLog {
    tx: mpsc::Sender<Msg>,
    durability: Durability,
    dir: Arc<PathBuf>,
    /// Records sent and not yet taken by the writer.
    backlog: Arc<std::sync::atomic::AtomicUsize>,
    health: Arc<Health>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").field("dir", &self.dir).finish()
    }
}

/// Called by the audit writer with each retention cutoff (Unix seconds); it must not block.
pub type RetentionHook = Box<dyn Fn(i64) + Send>;

impl AuditLog {
    /// Recovers the chain head from `config.dir` (cutting a torn last line a crash left) and starts
    /// the writer thread. `on_retention`, when retention is on, hears each cutoff (Unix seconds)
    /// the writer prunes its day files to, so what else is kept (policy findings) ages alike.
    pub fn start(
        config: &AuditConfig,
        metrics: Arc<Metrics>,
        on_retention: Option<RetentionHook>,
        otlp: Option<otlp::Exporter>,
    ) -> Result<AuditLog> {
        conduit_core::fsperm::create_private_dir(&config.dir)
            .map_err(|e| Error::msg(format!("creating the audit directory {}: {e}", config.dir.display())))?;
        let head = chain::recover(&config.dir)?;
        let latest_day = chain::day_files(&config.dir)?.last().map_or(i64::MIN, |(day, _)| *day);
        let (tx, rx) = mpsc::channel::<Msg>();
        let backlog = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let health = Arc::new(Health::default());
        let mut writer = Writer {
            backlog: backlog.clone(),
            health: health.clone(),
            day: 0,
            started: (conduit_core::clock::now_ms(), Instant::now()),
            latest_day,
            behind_warned: false,
            file_len: 0,
            synced_len: 0,
            unsynced: Vec::new(),
            unsynced_records: 0,
            buf_records: 0,
            dropped: 0,
            pending_cut: None,
            aggregate: Aggregator::default(),
            dir: config.dir.clone(),
            durability: config.durability,
            retention_days: config.retention_days,
            head,
            file: None,
            dirty: false,
            last_sync: Instant::now(),
            last_prune: None,
            metrics,
            on_retention,
            otlp,
            buf: Vec::with_capacity(64 * 1024),
        };
        std::thread::Builder::new()
            .name("conduit-audit".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| Error::msg(format!("starting the audit writer: {e}")))?;
        Ok(AuditLog {
            tx,
            durability: config.durability,
            dir: Arc::new(config.dir.clone()),
            backlog,
            health,
        })
    }

    /// The durability mode.
    pub fn durability(&self) -> Durability {
        self.durability
    }

    /// The directory of the day files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Queues a record. In strict mode returns the acknowledgement to wait for before the client
    /// may see the end of the response.
    pub fn record(&self, record: AuditRecord) -> Option<Pending> {
        let (ack, pending) = match self.durability {
            Durability::Strict => {
                let (tx, rx) = tokio::sync::oneshot::channel();
                (Some(tx), Some(rx))
            }
            Durability::Group => (None, None),
        };
        self.backlog.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if self.tx.send(Msg::Record(Box::new(record), ack)).is_err() {
            tracing::error!("audit writer is gone; record dropped");
        }
        pending
    }

    /// Records not yet durable: queued for the writer, or held by it while the directory cannot
    /// be written (the request path refuses new requests above `audit.max_backlog`, so memory
    /// stays bounded when the disk is slow or full).
    pub fn backlog(&self) -> usize {
        self.backlog.load(std::sync::atomic::Ordering::Relaxed)
            + self.health.held.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Why records cannot be written right now (a full or unwritable directory), while it lasts.
    pub fn failing(&self) -> Option<String> {
        if !self.health.failing.load(std::sync::atomic::Ordering::Acquire) {
            return None;
        }
        self.health.why.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Returns once every record queued before this call is written and synced.
    pub fn sync(&self) {
        let (done, wait) = mpsc::channel();
        if self.tx.send(Msg::Sync(done)).is_ok() {
            let _ = wait.recv();
        }
    }
}

struct Writer {
    dir: PathBuf,
    durability: Durability,
    retention_days: Option<u32>,
    head: chain::Head,
    /// Open day file and its UTC day number.
    file: Option<(i64, File)>,
    dirty: bool,
    last_sync: Instant,
    last_prune: Option<Instant>,
    metrics: Arc<Metrics>,
    on_retention: Option<RetentionHook>,
    otlp: Option<otlp::Exporter>,
    buf: Vec<u8>,
    backlog: Arc<std::sync::atomic::AtomicUsize>,
    aggregate: Aggregator,
    health: Arc<Health>,
    /// UTC day of the records in `buf`.
    day: i64,
    /// The wall clock and the monotonic clock when the writer started (retention's "now").
    started: (i64, Instant),
    /// The latest day file written (or found at start): day files never go back in time, so a
    /// wall clock set back (an NTP step, a VM restored from a snapshot) cannot append later records
    /// to an earlier day's file, out of the chain's order. A record is filed under its own day or
    /// this one, whichever is later; its timestamps stay as its clock gave them.
    latest_day: i64,
    /// Whether the clock being behind the latest day file was logged (once per process).
    behind_warned: bool,
    /// Bytes of whole lines in the open file, and of those the synced ones: a failed write or
    /// sync cuts the file back, so no torn line is left for the next write to follow.
    file_len: u64,
    synced_len: u64,
    /// Written since the last sync, kept to write again if the sync fails.
    unsynced: Vec<u8>,
    unsynced_records: usize,
    buf_records: usize,
    /// Records dropped while failing and over [`MAX_HELD_BYTES`], not yet told in the log.
    dropped: u64,
    /// A cut-back that failed: the length the file must be cut to when it is next opened, before
    /// anything is written to it (else a torn or duplicated line would follow).
    pending_cut: Option<u64>,
}

/// Unauthenticated refusals — anyone can send them, as fast as they like — are written in full
/// only for the first [`Aggregator::FULL`] per client address, refusal kind and minute; the rest
/// are counted and written as one `suppressed` record when the minute ends. Metrics count every
/// one. At most [`Aggregator::KEYS`] addresses are tracked per minute; more share one bucket.
#[derive(Default)]
struct Aggregator {
    minute: i64,
    seen: std::collections::HashMap<(String, String), Bucket>,
}

struct Bucket {
    written: u32,
    suppressed: u64,
    last: Option<AuditRecord>,
}

impl Aggregator {
    const FULL: u32 = 10;
    const KEYS: usize = 10_000;

    fn is_unauthenticated_refusal(r: &AuditRecord) -> bool {
        r.key_id.is_none() && r.status >= 400 && r.suppressed == 0
    }

    /// Whether to write `r` in full; when it is counted instead, `None`.
    fn take(&mut self, r: AuditRecord) -> Option<AuditRecord> {
        if !Self::is_unauthenticated_refusal(&r) {
            return Some(r);
        }
        let minute = r.start_ms.div_euclid(60_000);
        if minute > self.minute {
            self.minute = minute; // the caller flushes the old minute first
        }
        let ip = if self.seen.len() >= Self::KEYS && !self.seen.contains_key(&(r.client_ip.clone(), r.outcome.clone()))
        {
            "(other addresses)".to_string()
        } else {
            r.client_ip.clone()
        };
        let b = self.seen.entry((ip, r.outcome.clone())).or_insert(Bucket {
            written: 0,
            suppressed: 0,
            last: None,
        });
        if b.written < Self::FULL {
            b.written += 1;
            return Some(r);
        }
        b.suppressed += 1;
        b.last = Some(r);
        None
    }

    /// The summary records of a minute that has ended (all of them when `now_ms` is `None`).
    fn flush(&mut self, now_ms: Option<i64>) -> Vec<AuditRecord> {
        if now_ms.is_some_and(|ms| ms.div_euclid(60_000) <= self.minute) {
            return Vec::new();
        }
        let mut out = Vec::new();
        for ((ip, outcome), b) in self.seen.drain() {
            if let Some(mut last) = b.last {
                last.request_id = format!("suppressed:{}", last.request_id);
                last.client_ip = ip;
                last.error_class = Some(outcome);
                last.outcome = "suppressed".into();
                last.suppressed = b.suppressed;
                last.start_ms = self.minute * 60_000;
                last.end_ms = last.start_ms + 60_000 - 1;
                out.push(last);
            }
        }
        out.sort_by(|a, b| (&a.client_ip, &a.error_class).cmp(&(&b.client_ip, &b.error_class)));
        out
    }
}

const MAX_BATCH: usize = 4096;
/// Group mode: after a batch, the writer sleeps this long before taking the next one.
const GROUP_POLL: Duration = Duration::from_millis(5);
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

impl Writer {
    fn run(&mut self, rx: mpsc::Receiver<Msg>) {
        self.prune();
        loop {
            let first = if self.dirty || !self.buf.is_empty() {
                // Also while records are held after a failure: retried every window.
                let wait = GROUP_COMMIT_WINDOW.saturating_sub(self.last_sync.elapsed());
                match rx.recv_timeout(wait) {
                    Ok(m) => Some(m),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            } else {
                // Wake for a minute of aggregated refusals to be written.
                let wait = if self.aggregate.seen.is_empty() {
                    PRUNE_EVERY
                } else {
                    Duration::from_secs(61)
                };
                match rx.recv_timeout(wait) {
                    Ok(m) => Some(m),
                    Err(mpsc::RecvTimeoutError::Timeout) => None,
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            };
            let mut acks = Vec::new();
            let mut syncs = Vec::new();
            let dropped_before = self.dropped;
            let mut next = first;
            let mut taken = 0;
            while let Some(msg) = next {
                match msg {
                    Msg::Record(record, ack) => {
                        self.backlog.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                        let minute = record.start_ms.div_euclid(60_000);
                        if minute > self.aggregate.minute {
                            for summary in self.aggregate.flush(Some(record.start_ms)) {
                                self.append(summary);
                            }
                        }
                        // Metrics count every request; the log holds the aggregated form.
                        self.metrics.observe(&record);
                        if let Some(r) = self.aggregate.take(*record) {
                            self.append(r);
                        }
                        acks.extend(ack);
                    }
                    Msg::Sync(done) => {
                        // Everything before the sync is written: counted refusals included.
                        for summary in self.aggregate.flush(None) {
                            self.append(summary);
                        }
                        syncs.push(done);
                    }
                }
                taken += 1;
                next = if taken < MAX_BATCH { rx.try_recv().ok() } else { None };
            }
            // A minute of refusals that has ended is written even when no new record comes.
            for summary in self.aggregate.flush(Some(conduit_core::clock::now_unix() * 1000)) {
                self.append(summary);
            }
            let written = self.write_out();
            let due = self.dirty && self.last_sync.elapsed() >= GROUP_COMMIT_WINDOW;
            let synced = if !acks.is_empty() || !syncs.is_empty() || due {
                self.sync()
            } else {
                true
            };
            // A record dropped over the cap is not durable: none of this batch is acknowledged so.
            let dropped = self.dropped != dropped_before;
            if written && synced && self.dropped > 0 {
                self.tell_gap();
            }
            let durable = written && synced && self.buf.is_empty() && !dropped;
            for ack in acks {
                let _ = ack.send(durable);
            }
            for done in syncs {
                let _ = done.send(());
            }
            if self.last_prune.is_none_or(|t| t.elapsed() >= PRUNE_EVERY) {
                self.prune();
            }
            if self.durability == Durability::Group && taken > 0 {
                // Let records gather instead of being woken by every request's send.
                std::thread::sleep(GROUP_POLL);
            }
        }
        for summary in self.aggregate.flush(None) {
            self.append(summary);
        }
        self.write_out();
        self.sync();
    }

    /// Chains and serialises one record into the batch buffer.
    fn append(&mut self, mut record: AuditRecord) {
        if let Some(exporter) = &self.otlp {
            exporter.export(&record);
        }
        let own = record.end_ms.div_euclid(86_400_000);
        let day = own.max(self.latest_day);
        if day > own + 1 && !self.behind_warned {
            self.behind_warned = true;
            tracing::warn!(
                latest_day_file = %chain::day_path(&self.dir, day).display(),
                "the wall clock is behind the audit log's latest day file (set back, or that file was written under a clock set ahead); records are filed in it to keep the chain in order"
            );
        }
        self.latest_day = day;
        if self.file.as_ref().is_some_and(|(d, _)| *d != day) && self.write_out() && self.sync() {
            // The day changed: what was buffered went to the old file. (While writing fails, the
            // new day's records follow the old day's into the old file.)
            self.file = None;
        }
        if self.file.is_none() && self.buf.is_empty() {
            self.day = day;
        }
        let held = self.buf.len() + self.unsynced.len();
        if held > MAX_HELD_BYTES && self.health_failing() {
            self.dropped += 1;
            if self.dropped == 1 || self.dropped.is_power_of_two() {
                tracing::error!(
                    dropped = self.dropped,
                    held_bytes = held,
                    "the audit directory cannot be written and the records held in memory reached their cap; records are being dropped (an audit-gap record will say how many)"
                );
            }
            return;
        }
        record.seq = self.head.seq + 1;
        record.prev = std::mem::take(&mut self.head.hash);
        let start = self.buf.len();
        if serde_json::to_writer(&mut self.buf, &record).is_err() {
            self.buf.truncate(start);
            self.head.hash = record.prev;
            tracing::error!(request_id = %record.request_id, "could not encode an audit record");
            return;
        }
        self.head.hash = line_hash(&self.buf[start..]);
        self.head.seq = record.seq;
        self.buf.push(b'\n');
        self.buf_records += 1;
        self.publish_held();
    }

    /// Writes the buffered lines; false (the file cut back to its last whole line, the lines
    /// kept for the next try) when the directory cannot be written.
    fn write_out(&mut self) -> bool {
        if self.buf.is_empty() {
            return true;
        }
        if self.file.is_none() {
            match open_day(&self.dir, self.day).and_then(|f| {
                let len = f
                    .metadata()
                    .map_err(|e| Error::msg(format!("reading the size of the audit file: {e}")))?
                    .len();
                Ok((f, len))
            }) {
                Ok((f, len)) => {
                    let len = match self.pending_cut {
                        Some(cut) if len > cut => match f.set_len(cut) {
                            Ok(()) => cut,
                            Err(e) => {
                                return self.fail(format!("cutting the audit file back to its last good line: {e}"));
                            }
                        },
                        _ => len,
                    };
                    self.pending_cut = None;
                    self.file = Some((self.day, f));
                    (self.file_len, self.synced_len) = (len, len);
                }
                Err(e) => return self.fail(e.to_string()),
            }
        }
        let Some((day, f)) = self.file.as_mut() else {
            return false;
        };
        match f.write_all(&self.buf) {
            Ok(()) => {
                self.file_len += self.buf.len() as u64;
                self.unsynced.extend_from_slice(&self.buf);
                self.unsynced_records += self.buf_records;
                self.buf.clear();
                self.buf_records = 0;
                self.dirty = true;
                true
            }
            Err(e) => {
                let path = chain::day_path(&self.dir, *day);
                if f.set_len(self.file_len).is_err() {
                    // Cut when it is reopened, before the next write.
                    (self.pending_cut, self.file) = (Some(self.file_len), None);
                }
                self.fail(format!("writing {}: {e}", path.display()))
            }
        }
    }

    /// Syncs what was written; false when the sync fails — then everything since the last good
    /// sync is cut from the file and held to be written again (after a failed fsync the kernel
    /// may have dropped those pages: a retried fsync could report success for lost data).
    fn sync(&mut self) -> bool {
        if !self.dirty {
            return self.buf.is_empty();
        }
        let Some((day, f)) = self.file.as_ref() else {
            return false;
        };
        if let Err(e) = f.sync_data() {
            let path = chain::day_path(&self.dir, *day);
            if f.set_len(self.synced_len).is_err() {
                (self.pending_cut, self.file) = (Some(self.synced_len), None);
            }
            self.file_len = self.synced_len;
            let mut again = std::mem::take(&mut self.unsynced);
            again.extend_from_slice(&self.buf);
            self.buf = again;
            self.buf_records += std::mem::take(&mut self.unsynced_records);
            self.dirty = false;
            return self.fail(format!("syncing {}: {e}", path.display()));
        }
        self.synced_len = self.file_len;
        self.unsynced.clear();
        self.unsynced_records = 0;
        if let Err(e) = chain::write_head(&self.dir, &self.head) {
            // HEAD lagging the file is recoverable (the file's last line is the head); it only
            // weakens truncation detection until the next successful write.
            tracing::error!(error = %e, "writing the audit head failed");
        }
        self.dirty = false;
        self.last_sync = Instant::now();
        self.publish_held();
        if self.health.failing.swap(false, std::sync::atomic::Ordering::AcqRel) {
            *self.health.why.lock().unwrap_or_else(|p| p.into_inner()) = None;
            tracing::warn!("the audit directory is writable again; held records are written");
        }
        true
    }

    /// Marks the writer failing with `why`; false, for the caller to return.
    fn fail(&mut self, why: String) -> bool {
        self.publish_held();
        let mut held = self.health.why.lock().unwrap_or_else(|p| p.into_inner());
        if held.as_deref() != Some(why.as_str()) {
            tracing::error!(error = %why, held = self.buf_records, "the audit log cannot be written; records are held in memory and retried");
        }
        *held = Some(why);
        self.health.failing.store(true, std::sync::atomic::Ordering::Release);
        self.last_sync = Instant::now();
        false
    }

    fn health_failing(&self) -> bool {
        self.health.failing.load(std::sync::atomic::Ordering::Acquire)
    }

    fn publish_held(&self) {
        self.health.held.store(
            self.buf_records + self.unsynced_records,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    /// Writes the `audit-gap` record for records dropped while failing.
    fn tell_gap(&mut self) {
        let now = conduit_core::clock::now_ms();
        let n = std::mem::take(&mut self.dropped);
        self.append(AuditRecord {
            request_id: format!("audit-gap:{}", self.head.seq + 1),
            start_ms: now,
            end_ms: now,
            client: "conduit".into(),
            client_ip: "-".into(),
            treatment: "audit".into(),
            outcome: "audit-gap".into(),
            error_class: Some(format!(
                "{n} records were dropped while the audit directory could not be written"
            )),
            suppressed: n,
            ..Default::default()
        });
        if !(self.write_out() && self.sync()) {
            tracing::error!(dropped = n, "the audit-gap record could not be written yet");
        }
    }

    fn prune(&mut self) {
        self.last_prune = Some(Instant::now());
        let Some(days) = self.retention_days else { return };
        let cutoff_day = retention_cutoff_day(conduit_core::clock::now_ms(), self.started, days);
        match chain::prune(&self.dir, cutoff_day) {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                files = n,
                retention_days = days,
                "audit retention removed old day files"
            ),
            Err(e) => tracing::error!(error = %e, "audit retention failed"),
        }
        if let Some(hook) = &self.on_retention {
            hook(cutoff_day * 86_400);
        }
    }
}

/// The first day retention keeps. "Now" is the earlier of the wall clock and the start time plus
/// the monotonic time since: a wall clock stepped forward (a VM restored on a host whose clock is
/// ahead, a mistyped date) cannot make retention delete days of audit log that have not aged —
/// retention deletes less under a jump, never more. (A restart takes the wall clock as it is.)
fn retention_cutoff_day(wall_ms: i64, started: (i64, Instant), days: u32) -> i64 {
    let monotonic_ms = started.0.saturating_add(started.1.elapsed().as_millis() as i64);
    wall_ms.min(monotonic_ms).div_euclid(86_400_000) - i64::from(days)
}

fn open_day(dir: &Path, day: i64) -> Result<File> {
    let path = chain::day_path(dir, day);
    let mut opts = OpenOptions::new();
    opts.create(true).append(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    opts.open(&path)
        .map_err(|e| Error::msg(format!("opening {}: {e}", path.display())))
}

/// `--since` / `--until` as an audit filter, parsed by the one range parser
/// (`conduit_core::clock::TimeRange`: UTC dates or times; a date-only `until` includes its day).
pub fn time_filter(since: Option<&str>, until: Option<&str>, default_days: Option<i64>) -> Result<chain::Filter> {
    let range = conduit_core::clock::TimeRange::parse(since, until, default_days)?;
    Ok(chain::Filter {
        since_ms: range.since_ms,
        until_ms: range.until_ms,
        team: None,
        key: None,
    })
}

/// The context-rot report over the records matching `filter`.
pub fn rot_report(dir: &Path, filter: &chain::Filter, by: rot::By) -> Result<serde_json::Value> {
    let mut b = rot::RotBuilder::new(by);
    let scanned = chain::scan(dir, filter, |r, _| {
        b.add(&r);
        true
    })?;
    Ok(serde_json::json!({
        "by": by,
        "since": filter.since_ms.map(export::rfc3339_ms),
        "until": filter.until_ms.map(export::rfc3339_ms),
        "records": scanned,
        "buckets": rot::BUCKETS.iter().map(|b| b.2).collect::<Vec<_>>(),
        "groups": b.finish(),
    }))
}

/// The sessions report over the records matching `filter`.
pub fn sessions_report(dir: &Path, filter: &chain::Filter, limit: usize) -> Result<rot::Sessions> {
    let mut b = rot::SessionsBuilder::default();
    chain::scan(dir, filter, |r, _| {
        b.add(&r);
        true
    })?;
    Ok(b.finish(limit))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_families() {
        assert_eq!(
            client_family(Some("claude-cli/2.1.197 (external, sdk-cli)")),
            "claude-code"
        );
        assert_eq!(
            client_family(Some("codex_exec/0.171.0 (Debian 12.0.0; x86_64) xterm")),
            "codex"
        );
        assert_eq!(client_family(Some("Anthropic/Python 2.14.0")), "anthropic-python");
        assert_eq!(client_family(Some("OpenAI/Python 3.57.0")), "openai-python");
        assert_eq!(client_family(Some("aws-sdk-js/3.936.0 ua/2.1")), "aws-sdk");
        assert_eq!(client_family(Some("Bun/1.4.0")), "other");
        assert_eq!(client_family(None), "unknown");
        assert_eq!(client_family(Some("é")), "other");
    }

    /// Fuzzing (`fuzz/`, target `audit_lines`) found a line with only the chain's fields passing
    /// `verify` while export refused it: verify now reads whole records.
    #[test]
    fn verify_refuses_a_line_that_is_not_a_whole_record() {
        let dir = tempfile::tempdir().unwrap();
        let line = format!("{{\"seq\":1,\"prev\":\"{ZERO_HASH}\"}}\n");
        std::fs::write(chain::day_path(dir.path(), 20_000), line).unwrap();
        let v = chain::verify(dir.path()).unwrap();
        assert!(!v.ok, "{v:?}");
        assert!(v.problem.unwrap().contains("is not a valid record"));
        assert!(chain::scan(dir.path(), &chain::Filter::default(), |_, _| true).is_err());
    }

    /// Issue 20, wall-clock jumps: a clock set back a day (an NTP step, a VM restored from a
    /// snapshot) — while running and across a restart — must not file later records into an
    /// earlier day's file, where `verify` (which reads the files in day order) would find the
    /// chain out of order and report the log as tampered with.
    #[test]
    fn a_clock_set_back_never_files_records_out_of_chain_order() {
        let dir = tempfile::tempdir().unwrap();
        let config = AuditConfig {
            durability: Durability::Strict,
            retention_days: None,
            dir: dir.path().to_path_buf(),
            max_backlog: 1000,
        };
        let day = 20_400 * 86_400_000i64;
        let at = |ms: i64| AuditRecord {
            request_id: format!("req_{ms}"),
            start_ms: ms,
            end_ms: ms,
            ..AuditRecord::default()
        };
        {
            let log = AuditLog::start(&config, Arc::default(), None, None).unwrap();
            log.record(at(day + 3_600_000));
            log.record(at(day - 3_600_000)); // the clock is set back into yesterday…
            log.record(at(day + 7_200_000)); // …and forward again
            log.sync();
        }
        {
            // A restart while the clock is still behind.
            let log = AuditLog::start(&config, Arc::default(), None, None).unwrap();
            log.record(at(day - 1_800_000));
            log.record(at(day - 3 * 86_400_000)); // three days back
            log.sync();
        }
        let v = chain::verify(dir.path()).unwrap();
        assert!(v.ok, "{v:?}");
        let files: Vec<i64> = chain::day_files(dir.path())
            .unwrap()
            .into_iter()
            .map(|(d, _)| d)
            .collect();
        assert_eq!(files, vec![20_400], "every record went into the latest day's file");
        let mut ends = Vec::new();
        chain::scan(dir.path(), &chain::Filter::default(), |r, _| {
            ends.push(r.end_ms - day);
            true
        })
        .unwrap();
        assert_eq!(
            ends,
            vec![3_600_000, -3_600_000, 7_200_000, -1_800_000, -3 * 86_400_000],
            "the records keep the times their clock gave them"
        );
        // An export up to a time finds the records stamped before it, in whichever file.
        let until = |ms: i64| {
            let filter = chain::Filter {
                until_ms: Some(ms),
                ..chain::Filter::default()
            };
            chain::scan(dir.path(), &filter, |_, _| true).unwrap()
        };
        assert_eq!(until(day), 3, "the records stamped before the day, filed in its file");
        assert_eq!(
            until(day - 2 * 86_400_000),
            1,
            "a record filed days after its own day is still found by --until"
        );
    }

    #[test]
    fn a_wall_clock_stepped_forward_does_not_age_the_audit_log() {
        let day = 86_400_000i64;
        let started = (20_400 * day, Instant::now());
        // The clocks agree: 30 days of retention keep from day 20_370.
        assert_eq!(retention_cutoff_day(20_400 * day, started, 30), 20_370);
        // The wall clock jumps two years ahead: nothing more is deleted than before the jump.
        assert_eq!(retention_cutoff_day(21_130 * day, started, 30), 20_370);
        // Set back: retention follows the earlier wall clock (it keeps more).
        assert_eq!(retention_cutoff_day(20_390 * day, started, 30), 20_360);
    }

    #[test]
    fn session_hash_is_stable_and_hides_the_id() {
        let id = "6f6d783b-9cf8-4d07-834b-7bc0d1cae803";
        let h = session_hash(id);
        assert_eq!(h, session_hash(id));
        assert_eq!(h.len(), 16);
        assert!(!h.contains("6f6d783b"));
        assert_ne!(h, session_hash("other"));
    }
}
