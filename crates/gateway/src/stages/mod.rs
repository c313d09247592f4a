//! The request stages, one module each, in the order `pipeline` runs them. Each module says what it
//! reads, what it decides and what it returns; any stage may end the request with a
//! [`GatewayError`](crate::error::GatewayError), which `error_shape` renders in the family's shape.

pub mod accept;
pub mod admit;
pub mod authenticate;
pub mod credential;
pub mod forward;
pub mod inspect;
pub mod record;
pub mod route;
pub mod scan;
pub mod settle;
