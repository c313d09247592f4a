//! The dashboard: one self-contained page (HTML, CSS, JS and SVG charts in `index.html`, embedded in
//! the binary — no CDN, no fonts, works offline) served by the admin listener at `/dashboard`.
//!
//! The page itself holds no data. It acts either as an admin token (asked for, or taken from the
//! URL fragment `#token=…`, which browsers never send to a server; kept in `sessionStorage`; sent
//! as `Authorization: Bearer`), or as a dashboard SSO session (`signin::admin`): an HttpOnly,
//! SameSite=Strict cookie, with every change also carrying the session's `x-conduit-csrf` token
//! from `GET /auth/whoami` — a header another site cannot set without a CORS preflight this
//! listener never grants. It shows the caller's roles and greys out what they may not do; the
//! admin API enforces the same (`admin_auth`). A strict Content-Security-Policy allows nothing but
//! this page's own script talking to its own origin.

use http::{HeaderValue, Method, Response, StatusCode, header};

use crate::body::GatewayBody;

const PAGE: &str = include_str!("index.html");

/// The Content-Security-Policy of the page: only its own inline script (pinned by hash), its inline
/// styles, and calls to its own origin.
fn csp() -> &'static HeaderValue {
    static CSP: std::sync::OnceLock<HeaderValue> = std::sync::OnceLock::new();
    CSP.get_or_init(|| {
        use base64::Engine;
        use sha2::Digest;
        let script = PAGE
            .split_once("<script>")
            .and_then(|(_, rest)| rest.split_once("</script>"))
            .map(|(s, _)| s)
            .unwrap_or("");
        let hash = base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(script.as_bytes()));
        let policy = format!(
            "default-src 'none'; script-src 'sha256-{hash}'; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
        );
        HeaderValue::from_str(&policy).unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'"))
    })
}

/// Serves the dashboard for `GET /` and `GET /dashboard` (and an empty favicon); `None` for every
/// other path.
pub fn asset(method: &Method, path: &str) -> Option<Response<GatewayBody>> {
    if method != Method::GET {
        return None;
    }
    if path == "/favicon.ico" {
        // Browsers ask for it; answering keeps a 401 out of their console.
        let mut r = Response::new(GatewayBody::empty());
        *r.status_mut() = StatusCode::NO_CONTENT;
        return Some(r);
    }
    if !(path.is_empty() || path == "/dashboard") {
        return None;
    }
    let mut r = Response::new(GatewayBody::full(PAGE));
    *r.status_mut() = StatusCode::OK;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert("content-security-policy", csp().clone());
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    Some(r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_is_self_contained() {
        assert!(asset(&Method::GET, "/dashboard").is_some());
        assert!(asset(&Method::POST, "/dashboard").is_none());
        assert!(asset(&Method::GET, "/v1/keys").is_none());
        // Nothing fetched from elsewhere: no external scripts, styles, fonts or images. The one
        // URL is the SVG namespace name, which is never fetched.
        assert_eq!(
            PAGE.matches("http").count(),
            PAGE.matches("http://www.w3.org/2000/svg").count()
        );
        for needle in ["<link", "src=", "@import", "url("] {
            assert!(!PAGE.contains(needle), "the dashboard references {needle}");
        }
        assert!(csp().to_str().unwrap_or("").contains("script-src 'sha256-"));
    }
}
