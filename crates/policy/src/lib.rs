//! The policy runtime: Wasm components that look at what a request sends out and report
//! findings (secrets, the org's sensitive terms, models outside an allow-list).
//!
//! ```text
//! config ─▶ PolicyConfig ─▶ Policies::open ──▶ PolicySet (built-ins + signed files in policies/)
//!                                   │                │  one Engine, compiled once (disk cache),
//!                                   │                │  pooled pre-configured instances
//!                      hot reload ──┘                ▼
//! request ─▶ content::json (segments) ─▶ Policies::scan ─▶ VerdictCache (per segment text) ─▶ Outcome
//!                                                     Modes (off | alert | block per category)
//! ```
//!
//! Modules: [`runtime`] (engine, sandbox, instance pool), [`signature`] (ECDSA P-256 /
//! SHA-256, cosign-compatible), [`segments`] (decoded text with JSON paths), [`cache`]
//! (incremental scanning), [`modes`] (what a finding does), [`set`] (loading, the directory,
//! hot reload), [`config`]. The request stage that uses them is `stages::scan`.

/// The built-in components (signed at build time), and paths of the components built with them
/// for tests and examples.
pub mod builtin {
    include!(concat!(env!("OUT_DIR"), "/builtin_policies.rs"));
}
pub mod cache;
pub mod config;
pub mod modes;
pub mod runtime;
pub use conduit_wire::segments;
pub mod set;
pub mod signature;

pub use config::{OnError, PolicyConfig, RawPolicies};
pub use modes::{Mode, Modes};
pub use set::{Decision, Outcome, Policies, PolicyStatus, ReportedFinding};
