//! # conduit-core
//!
//! The leaf of Conduit's crate graph: what every other crate needs and nothing that needs them.
//! No I/O beyond the file-permission helpers, no async, no HTTP.
//!
//! - [`error`]: [`Error`] (one specific sentence) and [`GatewayError`] (a request-path failure
//!   with its [`ErrorKind`] and the party at [`Fault`]).
//! - [`clock`]: Unix time, civil dates, RFC 3339, the `--since/--until` parser.
//! - [`money`]: micro-dollars, exactly.
//! - [`hex`], [`percent`]: encodings.
//! - [`seal`]: the master key, AES-256-GCM sealed credentials, [`seal::Redacted`].
//! - [`keys`]: stand-in keys (generation, hashing, the `ck_` shape); [`ids`]: request ids.
//! - [`fsperm`]: owner-only data directories and files.

pub mod clock;
pub mod error;
pub mod fsperm;
pub mod hex;
pub mod ids;
pub mod keys;
pub mod money;
pub mod percent;
pub mod seal;

#[doc(hidden)]
pub mod testing;

pub use error::{Error, ErrorKind, Fault, GatewayError, Result};
