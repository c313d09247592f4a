//! # conduit-wire
//!
//! What Conduit knows about the providers' wire formats, and nothing about serving them: no
//! sockets, no async runtime, no state. Every function here is a pure transformation of bytes and
//! headers, which is what lets the request stages, the mock providers and the CLI share it.
//!
//! - [`protocol`]: the API families ([`protocol::Protocol`]) and the providers behind them
//!   ([`protocol::Provider`]).
//! - [`upstream`]: `[upstream.*]` — where each family's requests go and how they authenticate.
//! - [`endpoint`]: the catalogue of understood endpoints; everything else is refused.
//! - [`egress`]: the header allow-list and the operator's declared passthroughs.
//! - [`content`]: one strict parse of a request body into its facts and text [`segments`].
//! - [`usage`]: the usage tap on response bodies (SSE, JSON, event-stream, compressed).
//! - [`prices`]: the price table, ceilings and worst cases; [`billing`]: the tier and multipliers.
//! - [`eventstream`], [`sigv4`], [`bedrock`]: AWS framing, signing and the one body translation.
//! - [`error_shape`]: each family's error body, so clients raise their usual errors.

pub mod bedrock;
pub mod billing;
pub mod content;
pub mod egress;
pub mod endpoint;
pub mod error_shape;
pub mod eventstream;
pub mod prices;
pub mod protocol;
pub mod segments;
pub mod sigv4;
pub mod upstream;
pub mod usage;

pub use protocol::{Protocol, Provider};

/// Error type of bodies that wrap the wire's transformations.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
