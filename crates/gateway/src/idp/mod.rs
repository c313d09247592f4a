//! The gateway's side of the org's IdP, below the gateway that holds it and the sign-in and admin
//! endpoints that use it: the `[signin]` configuration ([`config`]), the OIDC relying party
//! ([`oidc`]: discovery, JWKS with rotation, code exchange, refresh) and ID-token verification
//! ([`jwt`]), and the per-address limiters and cookie reading both the device page and the
//! dashboard session need. What is done with an identity — device grants, sessions, keys, admin
//! sessions — is in `signin` and `admin_auth`, above.

pub mod config;
pub mod jwt;
pub mod oidc;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{HeaderMap, header};

pub use config::{RawSignIn, SignInConfig};

/// Sign-in, when configured.
pub struct SignIn {
    /// The validated `[signin]`.
    pub config: SignInConfig,
    /// The IdP: discovery, JWKS, code exchange, refresh, ID-token verification.
    pub provider: oidc::Provider,
    /// Device-page code attempts per client address.
    pub verify_attempts: Limiter,
    /// Device authorizations per client address.
    pub device_requests: Limiter,
    /// Dashboard sign-ins started per client address.
    pub admin_logins: Limiter,
    /// When sign-in records were last pruned (Unix seconds).
    pub last_prune: std::sync::atomic::AtomicI64,
    /// OTLP forwards under way.
    pub otlp_in_flight: Arc<tokio::sync::Semaphore>,
    /// The client the IdP and the OTLP collector are reached through.
    pub http: crate::upstream::UpstreamClient,
}

impl SignIn {
    /// Sign-in over `config`, reaching the IdP through `http`.
    pub fn new(config: SignInConfig, http: crate::upstream::UpstreamClient) -> SignIn {
        let provider = oidc::Provider::new(
            oidc::Client {
                issuer: config.issuer.clone(),
                client_id: config.client_id.clone(),
                client_secret: config.client_secret.clone(),
                scopes: config.scopes.clone(),
                extra: config.extra_auth_params.clone(),
            },
            http.clone(),
        );
        SignIn {
            config,
            provider,
            // RFC 8628 §5.1: code guessing is bounded per client address.
            verify_attempts: Limiter::new(20, Duration::from_secs(60)),
            device_requests: Limiter::new(30, Duration::from_secs(60)),
            admin_logins: Limiter::new(30, Duration::from_secs(60)),
            last_prune: std::sync::atomic::AtomicI64::new(0),
            otlp_in_flight: Arc::new(tokio::sync::Semaphore::new(16)),
            http,
        }
    }
}

/// A per-address fixed-window limiter. IPv6 clients count per /64 (one host usually holds a whole
/// /64); at most [`Limiter::ADDRESSES`] addresses are tracked, and while that many are live,
/// every new one shares a single allowance — a flood from many addresses is refused, not
/// remembered.
pub struct Limiter {
    max: u32,
    window: Duration,
    seen: Mutex<HashMap<IpAddr, (Instant, u32)>>,
}

impl Limiter {
    /// Addresses tracked at most.
    pub const ADDRESSES: usize = 10_000;

    /// At most `max` per address per `window`.
    pub fn new(max: u32, window: Duration) -> Limiter {
        Limiter {
            max,
            window,
            seen: Mutex::new(HashMap::new()),
        }
    }

    /// Counts one from `ip`; false once its window's allowance is spent.
    pub fn allow(&self, ip: IpAddr) -> bool {
        let key = Self::key(ip);
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let key = if seen.len() < Self::ADDRESSES || seen.contains_key(&key) {
            key
        } else {
            seen.retain(|_, (t, _)| now.duration_since(*t) < self.window);
            if seen.len() < Self::ADDRESSES {
                key
            } else {
                IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)
            }
        };
        let entry = seen.entry(key).or_insert((now, 0));
        if now.duration_since(entry.0) >= self.window {
            *entry = (now, 0);
        }
        entry.1 = entry.1.saturating_add(1);
        entry.1 <= self.max
    }

    fn key(ip: IpAddr) -> IpAddr {
        match ip {
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => IpAddr::V4(v4),
                None => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
            },
            v4 => v4,
        }
    }
}

/// A cookie's name as set and read: `__Host-` prefixed when it is `Secure`, so neither a sibling
/// subdomain nor a plain-HTTP page can plant or overwrite it (a browser takes a `__Host-` cookie
/// only when it is Secure, has `Path=/` and names no domain).
pub fn cookie_name(secure: bool, name: &str) -> String {
    if secure {
        format!("__Host-{name}")
    } else {
        name.to_string()
    }
}

/// Whether dashboard cookies are `Secure`: the dashboard is reached over HTTPS.
pub fn admin_cookies_secure(config: &SignInConfig) -> bool {
    config
        .admin_public_url
        .as_deref()
        .is_some_and(|u| u.starts_with("https://"))
}

/// A cookie's value by exact name.
pub fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn the_limiter_counts_per_address() {
        let l = Limiter::new(2, Duration::from_secs(60));
        let (a, b): (IpAddr, IpAddr) = ("10.0.0.1".parse().unwrap(), "10.0.0.2".parse().unwrap());
        assert!(l.allow(a) && l.allow(a) && !l.allow(a));
        assert!(l.allow(b));
        // One /64 is one client; a v4-mapped address is its v4 one.
        let (c, d): (IpAddr, IpAddr) = (
            "2001:db8:1:2::1".parse().unwrap(),
            "2001:db8:1:2:ffff::9".parse().unwrap(),
        );
        assert!(l.allow(c) && l.allow(d) && !l.allow(c));
        assert!(l.allow("::ffff:10.0.0.2".parse().unwrap()) && !l.allow(b));
        // Full: new addresses share one allowance.
        let l = Limiter::new(1, Duration::from_secs(60));
        for i in 0..Limiter::ADDRESSES as u32 {
            assert!(l.allow(IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i))));
        }
        assert!(l.allow("192.0.2.1".parse().unwrap()));
        assert!(!l.allow("192.0.2.2".parse().unwrap()));
        assert_eq!(l.seen.lock().unwrap().len(), Limiter::ADDRESSES + 1);
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("xconduit_csrf=1; conduit_csrf=abc; other=2"),
        );
        assert_eq!(cookie(&h, "conduit_csrf"), Some("abc"));
        assert_eq!(cookie(&h, "missing"), None);
    }
}
