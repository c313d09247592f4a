//! # conduit-gateway
//!
//! The control point an organisation runs between its AI coding tools and the model providers,
//! assembled: the request pipeline and its stages, request and response bodies, the upstream
//! client, the servers, the admin API and dashboard, and the configuration that composes them.
//! Engineers point Claude Code, Codex, Cursor or an SDK at Conduit with one base-URL variable and a
//! stand-in key Conduit issued them; Conduit authenticates the key, attaches the real (sealed)
//! provider credential and forwards the request byte for byte, streaming the response back.
//!
//! Start a gateway in-process (this is what `conduit serve` and the tests do):
//!
//! ```no_run
//! # async fn run() -> Result<(), conduit_gateway::Error> {
//! let config = conduit_gateway::Config::load(None)?;            // defaults + environment
//! let gateway = conduit_gateway::Gateway::open(config).await?;   // state, master key, upstream client
//! let running = conduit_gateway::server::start(gateway).await?;                           // limits.shutdown_grace from the config
//! println!("listening on {}", running.addr);
//! # Ok(()) }
//! ```
//!
//! The request path is in [`pipeline`]; each stage is a module under [`stages`]. The layers below
//! are re-exported under the module names this crate's code uses (`crate::records`,
//! `crate::protocol`, …), so a module reads the same whichever crate holds what it names. The
//! `conduit` binary (crate `host/`) is the operator's CLI over this crate.

pub use conduit_audit as audit;
pub use conduit_core::{clock, error, fsperm, hex, keys, money, percent, seal};
pub use conduit_policy as policy;
pub use conduit_state::{State, budget, ledger, operator, ratelimit, records, store};
pub use conduit_wire::{
    bedrock, billing, content, egress, endpoint, error_shape, eventstream, prices, protocol, segments, sigv4, usage,
};

pub mod admin;
pub mod admin_auth;
pub mod body;
pub mod config;
pub mod dashboard;
pub mod gateway;
pub mod idp;
pub mod mock;
pub mod pipeline;
pub mod roles;
pub mod send_timeout;
pub mod server;
pub mod signin;
pub mod stages;
pub mod unasked;
pub mod upstream;

#[cfg(test)]
pub(crate) use conduit_core::testing;

pub use config::Config;
pub use error::{Error, GatewayError};
pub use gateway::Gateway;
