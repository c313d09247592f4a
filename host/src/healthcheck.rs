//! `conduit healthcheck`: asks the running gateway's admin listener whether it is ready (or, with
//! `--live`, alive) and exits 0 or 1 — a container `HEALTHCHECK` / exec probe with no curl or wget
//! in the image. The wait is bounded: a hung gateway is unhealthy, not a hung probe.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use http::Method;
use zeroize::Zeroizing;

use conduit_gateway::error::{Error, Result};

use crate::admin_client::AdminClient;

/// The longest a probe waits for an answer.
const TIMEOUT: Duration = Duration::from_secs(3);

/// Probes `/readyz` (or `/livez`) on `admin` (neither needs a token). Ok with `PATH: STATUS`.
pub async fn probe(admin: SocketAddr, live: bool) -> Result<String> {
    // A listener on the unspecified address is reached on loopback.
    let addr = match admin.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => SocketAddr::new(Ipv4Addr::LOCALHOST.into(), admin.port()),
        IpAddr::V6(ip) if ip.is_unspecified() => SocketAddr::new(Ipv6Addr::LOCALHOST.into(), admin.port()),
        _ => admin,
    };
    let path = if live { "/livez" } else { "/readyz" };
    let client = AdminClient::new(addr, Zeroizing::new(String::new()));
    let answer: serde_json::Value = tokio::time::timeout(TIMEOUT, client.call(Method::GET, path, None))
        .await
        .map_err(|_| Error::msg(format!("{addr}{path} did not answer within {} s", TIMEOUT.as_secs())))??;
    Ok(format!("{path}: {}", answer["status"].as_str().unwrap_or("ok")))
}
