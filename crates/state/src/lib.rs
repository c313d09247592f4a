//! # conduit-state
//!
//! What Conduit keeps and the rules for keeping it, with no backend in it: the [`records`], one
//! narrow async trait per kind of state with a way to watch its changes ([`store`], bundled in
//! [`State`]), budget enforcement ([`budget`]: reserve all-or-nothing, settle to the real cost),
//! per-key rate limits ([`ratelimit`]), short-lived key and credential caches invalidated by the
//! stores' watches ([`cache`]), the spend [`ledger`] writer and its reports, the
//! [`operator`]'s actions shared by the admin API and the CLI, and the [`conformance`] suite
//! every backend must pass.
//!
//! Backends are crates of their own: `conduit-state-sled` (embedded, one process) is the only one
//! that names sled.

pub mod budget;
pub mod cache;
pub mod conformance;
pub mod ledger;
pub mod operator;
pub mod ratelimit;
pub mod records;
pub mod signin;
pub mod store;

pub use budget::{BudgetBook, Budgets, Reservation};
pub use records::Principal;

use std::sync::Arc;

use store::{
    BudgetLimitStore, CredentialStore, FindingStore, KeyStore, MetaStore, PolicyModeStore, PriceStore, SignInStore,
    SpendStore, UploadStore,
};

/// Everything Conduit keeps, as one value: what a backend's `open` returns and what the gateway,
/// the admin API and the CLI hold. Cheap to clone; fields can be replaced one by one (a test that
/// makes the key lookups fail wraps `keys` and nothing else).
#[derive(Clone)]
pub struct State {
    /// Stand-in keys.
    pub keys: Arc<dyn KeyStore>,
    /// Sealed provider credentials.
    pub credentials: Arc<dyn CredentialStore>,
    /// Budget limits in force and what is spent and reserved against them.
    pub budgets: Arc<dyn Budgets>,
    /// Stored budget limits (what [`State::budgets`] layers over the config file's).
    pub budget_limits: Arc<dyn BudgetLimitStore>,
    /// The spend ledger's rows.
    pub spend: Arc<dyn SpendStore>,
    /// Policy findings.
    pub findings: Arc<dyn FindingStore>,
    /// Run-time policy modes.
    pub policy_modes: Arc<dyn PolicyModeStore>,
    /// Price overrides.
    pub prices: Arc<dyn PriceStore>,
    /// Uploads through the gateway.
    pub uploads: Arc<dyn UploadStore>,
    /// Metadata.
    pub meta: Arc<dyn MetaStore>,
    /// Sign-in grants, sessions and users.
    pub signin: Arc<dyn SignInStore>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("State")
    }
}
