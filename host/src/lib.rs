//! # conduit (the CLI)
//!
//! The `conduit` binary: `serve` runs a gateway (crate `conduit-gateway`); every other command is
//! an operator's action — keys, credentials, budgets, policies, prices, spend, audit — taken
//! through one [`operate::Operator`] trait, against the local store (gateway stopped) or a running
//! gateway's admin API. `demo` runs a gateway over the mock provider with synthetic traffic.
//! Logging for both is set up here ([`telemetry`]): a library does not pick the subscriber.

pub mod admin_client;
pub mod cli;
pub mod cli_audit;
pub mod cli_policy;
pub mod demo;
pub mod healthcheck;
pub mod login;
pub mod operate;
pub mod store_copy;
pub mod telemetry;
