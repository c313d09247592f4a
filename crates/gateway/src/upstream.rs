//! The outbound HTTP client: pooled hyper connections, rustls with the system and webpki roots plus
//! an optional extra CA bundle, and `HTTPS_PROXY`/`NO_PROXY` support through CONNECT tunnels.
//!
//! One client serves every upstream; connection pools are per host. HTTP/2 is used where the
//! upstream offers it through ALPN, HTTP/1.1 otherwise.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::connect::proxy::Tunnel;
use hyper_util::client::proxy::matcher::Matcher;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use tokio::net::TcpStream;
use tower_service::Service;

use crate::error::{Error, Result};
use conduit_wire::BoxError;

/// Outbound settings.
#[derive(Debug, Clone)]
pub struct Network {
    /// Connect (TCP + TLS) timeout.
    pub connect_timeout: Duration,
    /// Time to response headers.
    pub response_timeout: Duration,
    /// Idle time between response body frames.
    pub idle_timeout: Duration,
    /// Extra trusted CAs.
    pub extra_ca_file: Option<PathBuf>,
    /// Egress proxy, if any (every upstream is reached through a CONNECT tunnel on it).
    pub proxy: Option<ProxySettings>,
}

/// Egress proxy settings.
#[derive(Clone)]
pub struct ProxySettings {
    /// Proxy for `http://` upstreams.
    pub http: Option<String>,
    /// Proxy for `https://` upstreams.
    pub https: Option<String>,
    /// Bypass list.
    pub no: String,
}

impl std::fmt::Debug for ProxySettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Proxy URLs may carry credentials: show hosts only.
        let host = |u: &Option<String>| {
            u.as_deref()
                .and_then(|u| u.parse::<http::Uri>().ok())
                .and_then(|u| u.host().map(str::to_owned))
        };
        f.debug_struct("ProxySettings")
            .field("http", &host(&self.http))
            .field("https", &host(&self.https))
            .field("no", &self.no)
            .finish()
    }
}

/// The client every forwarded request goes through.
pub type UpstreamClient = Client<hyper_rustls::HttpsConnector<UpstreamConnector>, Full<Bytes>>;

/// Builds the client from the network settings.
pub fn build_client(net: &Network) -> Result<UpstreamClient> {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    // System roots too: an org's own CA is often installed there. Unreadable entries are skipped.
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = &net.extra_ca_file {
        let shown = path.display().to_string();
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| Error::msg(format!("network.extra_ca_file {shown:?}: {e}")))?
            .collect::<std::result::Result<Vec<_>, _>>()
            .map_err(|e| Error::msg(format!("network.extra_ca_file {shown:?}: {e}")))?;
        if certs.is_empty() {
            return Err(Error::msg(format!(
                "network.extra_ca_file {shown:?} holds no PEM certificate"
            )));
        }
        let (added, _) = roots.add_parsable_certificates(certs);
        tracing::info!(file = %shown, added, "trusting extra CA certificates upstream");
    }
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::msg(format!("TLS setup: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();

    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(net.connect_timeout));
    let proxy = net.proxy.as_ref().map(|p| {
        tracing::info!(proxy = ?p, "upstream connections go through the egress proxy");
        let mut m = Matcher::builder().no(p.no.clone());
        if let Some(h) = &p.http {
            m = m.http(h.clone());
        }
        if let Some(h) = &p.https {
            m = m.https(h.clone());
        }
        Arc::new(m.build())
    });
    let connector = UpstreamConnector { http, proxy };

    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(connector);
    Ok(Client::builder(TokioExecutor::new())
        .pool_idle_timeout(std::time::Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .build(https))
}

/// TCP to the upstream, or a CONNECT tunnel through the proxy the environment names for it.
#[derive(Clone)]
pub struct UpstreamConnector {
    http: HttpConnector,
    proxy: Option<Arc<Matcher>>,
}

impl Service<Uri> for UpstreamConnector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = std::result::Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<std::result::Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        if let Some(intercept) = self.proxy.as_ref().and_then(|m| m.intercept(&dst)) {
            let mut tunnel = Tunnel::new(intercept.uri().clone(), self.http.clone());
            if let Some(auth) = intercept.basic_auth() {
                tunnel = tunnel.with_auth(auth.clone());
            }
            return Box::pin(async move { tunnel.call(dst).await.map_err(BoxError::from) });
        }
        let mut http = self.http.clone();
        Box::pin(async move { http.call(dst).await.map_err(BoxError::from) })
    }
}
