//! The records Conduit keeps, as every backend stores them: JSON-compatible, new fields added with
//! `#[serde(default)]` so old records still load. No backend, no I/O: `store` says where they
//! live, `conduit-state-sled` (and later others) how.

use serde::{Deserialize, Serialize};

use conduit_wire::usage::Usage;

/// Metadata name holding the id of the master key that sealed the credentials.
pub const META_MASTER_KEY_ID: &str = "master_key_id";

/// Who a request is attributed to: the stand-in key that authenticated it and what its record
/// says. Carried by the request from authentication on; budgets, rate limits, the ledger, findings
/// and the audit record all read it from here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Key id (`key_…`).
    pub key_id: String,
    /// Owner of the key.
    pub owner: String,
    /// Team, if set.
    pub team: Option<String>,
    /// The key's rate limits.
    pub limits: RateLimits,
    /// The sign-in session, when the key is a short-lived access token issued at an IdP sign-in
    /// (`crate::signin`); then `owner` is the IdP user and budgets of `user:OWNER` apply too.
    pub session: Option<String>,
}

impl Principal {
    /// The principal a key record grants.
    pub fn of(record: KeyRecord) -> Principal {
        Principal {
            key_id: record.id,
            owner: record.owner,
            team: record.team,
            limits: record.limits,
            session: record.session,
        }
    }

    /// The budget scopes that apply, narrowest first: `key:ID`, `user:EMAIL` (a signed-in user's
    /// access token: the budget follows the person across the tokens each refresh issues),
    /// `team:NAME`, `org`.
    pub fn scopes(&self) -> Vec<String> {
        let mut s = vec![format!("key:{}", self.key_id)];
        if self.session.is_some() {
            s.push(format!("user:{}", self.owner));
        }
        if let Some(t) = &self.team {
            s.push(format!("team:{t}"));
        }
        s.push("org".into());
        s
    }
}

/// A stand-in key as stored: everything but the secret.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KeyRecord {
    /// Public id (`key_…`).
    pub id: String,
    /// Last four characters of the secret, to help a person match key and id.
    pub hint: String,
    /// The engineer it was issued to.
    pub owner: String,
    /// Team for attribution.
    #[serde(default)]
    pub team: Option<String>,
    /// Free-form label (`laptop`, `ci`).
    #[serde(default)]
    pub name: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds after which the key is refused.
    #[serde(default)]
    pub expires_at: Option<i64>,
    /// Unix seconds when revoked; refused from then on.
    #[serde(default)]
    pub revoked_at: Option<i64>,
    /// Per-key rate limits.
    #[serde(default)]
    pub limits: RateLimits,
    /// Set on a short-lived access token issued at an IdP sign-in: the session it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<String>,
}

impl KeyRecord {
    /// Why the key may not be used at `now`, if it may not.
    pub fn unusable_reason(&self, now: i64) -> Option<String> {
        if let Some(t) = self.revoked_at {
            return Some(format!("was revoked at {}", conduit_core::clock::format_rfc3339(t)));
        }
        match self.expires_at {
            Some(t) if now >= t => Some(format!("expired at {}", conduit_core::clock::format_rfc3339(t))),
            _ => None,
        }
    }
}

/// Per-key rate limits (from the key record).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimits {
    /// Requests per minute.
    #[serde(default)]
    pub rpm: Option<u32>,
    /// Input + output tokens per minute.
    #[serde(default)]
    pub tpm: Option<u64>,
    /// Concurrent streaming responses.
    #[serde(default)]
    pub max_streams: Option<u32>,
}

impl RateLimits {
    /// Whether any limit is set.
    pub fn any(&self) -> bool {
        self.rpm.is_some() || self.tpm.is_some() || self.max_streams.is_some()
    }
}

/// Budget amounts of one scope, micro-dollars.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetLimit {
    /// Per UTC day.
    #[serde(default)]
    pub daily_micros: Option<u64>,
    /// Per UTC calendar month.
    #[serde(default)]
    pub monthly_micros: Option<u64>,
}

/// A file uploaded through the gateway.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UploadRecord {
    /// Provider (`openai`, `anthropic`, `azure`).
    pub provider: String,
    /// The provider's file id.
    pub id: String,
    /// `purpose` of the upload (`batch`, `assistants`, …).
    pub purpose: String,
    /// The key that uploaded it.
    pub key_id: String,
    /// Unix seconds.
    pub created: i64,
    /// Bytes.
    pub bytes: u64,
    /// A batch file's requests (their facts: model, input bytes, max output, tier).
    #[serde(default)]
    pub requests: Vec<conduit_wire::content::RequestFacts>,
}

/// One policy finding, as stored and exported: where and what kind, never the text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FindingRecord {
    /// `f_` + time-ordered hex.
    pub id: String,
    /// Unix seconds.
    pub time: i64,
    /// The request's `x-conduit-request-id`.
    pub request_id: String,
    /// Stand-in key id.
    pub key_id: String,
    /// Its team.
    pub team: Option<String>,
    /// The policy that reported it.
    pub policy: String,
    /// Dotted category.
    pub category: String,
    /// Rule or term id.
    pub rule_id: String,
    /// JSON path of the segment, or `request` for request-level findings.
    pub location: String,
    /// Byte span in the segment.
    pub start: u32,
    pub end: u32,
    /// The category's mode when it was found: `alert` or `block`.
    pub mode: String,
    /// What happened to the request: `forwarded` or `blocked`.
    pub action: String,
    /// Marked as a false positive (by whom).
    #[serde(default)]
    pub false_positive: Option<String>,
}

/// What one finished request adds to the ledger.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpendEntry {
    /// UTC day (YYYY-MM-DD) the request started.
    pub day: String,
    /// Stand-in key id.
    pub key_id: String,
    /// Key owner.
    pub owner: String,
    /// Key team (`-` when none).
    pub team: String,
    /// Provider family.
    pub provider: String,
    /// Requested model (`-` when none).
    pub model: String,
    /// Tokens billed (reported, or estimated).
    pub usage: Usage,
    /// Cost in micro-dollars; `None` only when the provider has no price at all (no ceiling).
    pub cost_micros: Option<u64>,
    /// The model has no price: the cost is its provider's ceiling (`conduit_wire::prices::Basis::Ceiling`).
    #[serde(default)]
    pub ceiling: bool,
    /// Tokens are an estimate (the response carried no usage).
    pub estimated: bool,
    /// The request failed (gateway refusal after authentication, or upstream error).
    pub error: bool,
}

/// Accumulated counters for one day × key × model.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpendRow {
    /// UTC day.
    pub day: String,
    /// Key id.
    pub key_id: String,
    /// Owner.
    pub owner: String,
    /// Team.
    pub team: String,
    /// Provider.
    pub provider: String,
    /// Model.
    pub model: String,
    /// Requests.
    pub requests: u64,
    /// Failed requests.
    pub errors: u64,
    /// Requests whose tokens were estimated.
    pub estimated: u64,
    /// Requests whose model had no price: billed at the provider's ceiling (included in
    /// `cost_micros`), or, without any ceiling, not priced at all.
    pub unpriced: u64,
    /// Uncached input tokens.
    pub input: u64,
    /// Output tokens.
    pub output: u64,
    /// Cache-read tokens.
    pub cache_read: u64,
    /// Cache-write tokens.
    pub cache_write: u64,
    /// Of the cache-write tokens, those with the 1-hour TTL.
    #[serde(default)]
    pub cache_write_1h: u64,
    /// Server-side web searches.
    #[serde(default)]
    pub web_searches: u64,
    /// Cost of the priced requests, micro-dollars.
    pub cost_micros: u64,
}

impl SpendRow {
    /// The row's tokens.
    pub fn usage(&self) -> Usage {
        Usage {
            input: self.input,
            output: self.output,
            cache_read: self.cache_read,
            cache_write: self.cache_write,
            cache_write_1h: self.cache_write_1h,
            web_searches: self.web_searches,
        }
    }

    /// Folds one entry in.
    pub fn add(&mut self, e: &SpendEntry) {
        if self.requests == 0 {
            self.day.clone_from(&e.day);
            self.key_id.clone_from(&e.key_id);
            self.owner.clone_from(&e.owner);
            self.team.clone_from(&e.team);
            self.provider.clone_from(&e.provider);
            self.model.clone_from(&e.model);
        }
        self.requests += 1;
        self.errors += e.error as u64;
        self.estimated += e.estimated as u64;
        self.unpriced += (e.ceiling || e.cost_micros.is_none()) as u64;
        self.input += e.usage.input;
        self.output += e.usage.output;
        self.cache_read += e.usage.cache_read;
        self.cache_write += e.usage.cache_write;
        self.cache_write_1h += e.usage.cache_write_1h;
        self.web_searches += e.usage.web_searches;
        self.cost_micros += e.cost_micros.unwrap_or(0);
    }

    /// Adds another row's counters; takes its identity fields if this row is empty.
    pub fn merge_row(&mut self, o: &SpendRow) {
        if self.requests == 0 {
            self.day.clone_from(&o.day);
            self.key_id.clone_from(&o.key_id);
            self.owner.clone_from(&o.owner);
            self.team.clone_from(&o.team);
            self.provider.clone_from(&o.provider);
            self.model.clone_from(&o.model);
        }
        self.merge(o);
    }

    /// Adds another row's counters, keeping this row's identity fields.
    pub fn merge(&mut self, o: &SpendRow) {
        self.requests += o.requests;
        self.errors += o.errors;
        self.estimated += o.estimated;
        self.unpriced += o.unpriced;
        self.input += o.input;
        self.output += o.output;
        self.cache_read += o.cache_read;
        self.cache_write += o.cache_write;
        self.cache_write_1h += o.cache_write_1h;
        self.web_searches += o.web_searches;
        self.cost_micros += o.cost_micros;
    }
}
