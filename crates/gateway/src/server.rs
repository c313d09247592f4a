//! Listeners: the gateway (optionally TLS-terminated) and the admin API, with graceful shutdown.
//!
//! Each accepted connection is served by hyper's auto builder (HTTP/1.1, and HTTP/2 by prior
//! knowledge or ALPN). HTTP/1 limits on the request head (size, header count, read timeout) are
//! enforced here, before any stage runs: hyper answers 431 / 408 itself. Each listener serves at
//! most `limits.max_connections` connections; one more is answered 503 and closed at once. A write
//! to a client that waits `limits.send_timeout_secs` without progress closes its connection
//! (`crate::send_timeout`); under HTTP/2, a response stream the client grants no window for that
//! long is cut and its connection closed (`crate::unasked`), idle connections are pinged (a peer that stops answering is
//! dropped), and a connection carries at most 128 concurrent streams.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::config::{Limits, TlsFiles};
use crate::error::{Error, Result};
use crate::gateway::Gateway;
use crate::send_timeout::SendTimeout;

/// A started gateway: its bound addresses and a handle to stop it.
pub struct Running {
    /// Gateway listener address (useful when configured with port 0).
    pub addr: SocketAddr,
    /// Admin listener address.
    pub admin_addr: SocketAddr,
    /// The shared state (tests reach the store through it).
    pub gateway: Arc<Gateway>,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// The operator's stop (SIGTERM): `/readyz` turns 503 at once while requests are still
    /// served for `limits.shutdown_delay` (a load balancer's or Kubernetes' endpoints catch up),
    /// then [`Running::shutdown`].
    pub async fn drain(self) {
        let delay = self.gateway.config.limits.shutdown_delay;
        self.gateway.draining.store(true, std::sync::atomic::Ordering::Relaxed);
        if !delay.is_zero() {
            tracing::info!(
                delay_secs = delay.as_secs(),
                "shutting down: /readyz answers 503; still serving until the delay ends"
            );
            tokio::time::sleep(delay).await;
        }
        self.shutdown().await;
    }

    /// Stops accepting, lets in-flight requests finish (up to `limits.shutdown_grace`), writes
    /// what the writers hold, then returns.
    pub async fn shutdown(self) {
        let grace = self.gateway.config.limits.shutdown_grace;
        tracing::info!(
            grace_secs = grace.as_secs(),
            "shutting down: no new connections; finishing in-flight requests"
        );
        self.gateway.draining.store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = self.stop.send(true);
        // One deadline for the whole drain: connections first, then requests that outlived theirs.
        let deadline = tokio::time::Instant::now() + grace;
        for t in self.tasks {
            let _ = tokio::time::timeout_at(deadline + Duration::from_secs(1), t).await;
        }
        // Requests whose client hung up run on without a connection, so the connections' drain
        // does not wait for them: wait (within the grace) until every in-flight place is back —
        // a place returns only once its request is recorded — before the writers flush.
        let all = u32::try_from(self.gateway.config.limits.max_in_flight).unwrap_or(u32::MAX);
        let settled = tokio::time::timeout_at(deadline, self.gateway.in_flight.acquire_many(all)).await;
        if settled.is_err() {
            tracing::warn!(
                in_flight = self.gateway.config.limits.max_in_flight - self.gateway.in_flight.available_permits(),
                "requests still in flight at shutdown after the grace period; their records may be lost"
            );
        }
        // The audit records first: they depend only on the local disk. Then what needs the store
        // (folded spend, budget holds and leases), each bounded: with PostgreSQL away at stop
        // time the process still exits — the ledger keeps nothing it could not write, and what a
        // replica held counts as spent until reaped — instead of hanging until SIGKILL.
        let gw = self.gateway.clone();
        let _ = tokio::task::spawn_blocking(move || gw.audit.sync()).await;
        if tokio::time::timeout(STORE_FLUSH, self.gateway.ledger.flush())
            .await
            .is_err()
        {
            tracing::warn!(
                secs = STORE_FLUSH.as_secs(),
                "the spend ledger could not be written at shutdown in time; the audit log has every request"
            );
        }
        match tokio::time::timeout(STORE_FLUSH, self.gateway.state.budgets.drain()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "returning budget holds and leases at shutdown failed; they count as spent until reaped")
            }
            Err(_) => tracing::warn!(
                secs = STORE_FLUSH.as_secs(),
                "returning budget holds and leases timed out at shutdown; they count as spent until reaped"
            ),
        }
        let gw = self.gateway.clone();
        let _ = tokio::task::spawn_blocking(move || gw.audit.sync()).await;
        // Every request settled and the writes done: the audit head as it ends goes into the store
        // (the checkpoint a later `audit verify` compares against), then the embedded store seals
        // itself, so the next start can tell a store damaged at rest from this clean stop. (With
        // requests still out, no seal: they may write after it.)
        if settled.is_err() {
            return;
        }
        match tokio::time::timeout(STORE_FLUSH, self.gateway.checkpoint_audit()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "checkpointing the audit head into the store at shutdown failed")
            }
            Err(_) => tracing::warn!(
                secs = STORE_FLUSH.as_secs(),
                "checkpointing the audit head into the store at shutdown timed out"
            ),
        }
        if let Err(e) = self.gateway.state.meta.close().await {
            tracing::warn!(error = %e, "the store could not be sealed at shutdown; the next start cannot check it for damage at rest");
        }
    }
}

/// HTTP/2: streams one connection may carry at once (each request still needs a place under
/// `limits.max_in_flight`), and how often an idle connection is pinged and how long a ping may go
/// unanswered (at least `limits.send_timeout_secs`) before the connection is dropped (a peer gone
/// without a FIN frees its slot).
const H2_MAX_STREAMS: u32 = 128;
const H2_PING_EVERY: Duration = Duration::from_secs(30);
const H2_PING_TIMEOUT: Duration = Duration::from_secs(20);

/// The longest shutdown waits for the store (ledger flush, budget drain) after the grace.
const STORE_FLUSH: Duration = Duration::from_secs(5);

/// What a connection over `limits.max_connections` reads before it is closed: an Anthropic-shaped
/// 503 (an HTTP/1 client shows it; anything else just sees the connection close).
static OVER_CAPACITY: std::sync::LazyLock<Vec<u8>> = std::sync::LazyLock::new(|| {
    let body = r#"{"type":"error","error":{"type":"overloaded_error","message":"conduit: too many connections (limits.max_connections); retry shortly"}}"#;
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
});

/// Binds both listeners and serves until [`Running::shutdown`].
pub async fn start(gateway: Gateway) -> Result<Running> {
    let gateway = Arc::new(gateway);
    crate::gateway::follow_changes(&gateway);
    crate::gateway::checkpoint_audit(&gateway);
    crate::gateway::return_idle_memory(&gateway);
    let config = &gateway.config;
    let tls = config.tls.as_ref().map(load_tls).transpose()?;
    let listener = TcpListener::bind(config.listen).await.map_err(|e| {
        Error::msg(format!(
            "binding the gateway listener on {} (CONDUIT_LISTEN): {e}",
            config.listen
        ))
    })?;
    let admin = TcpListener::bind(config.admin_listen).await.map_err(|e| {
        Error::msg(format!(
            "binding the admin listener on {} (CONDUIT_ADMIN_LISTEN): {e}",
            config.admin_listen
        ))
    })?;
    let addr = listener.local_addr()?;
    let admin_addr = admin.local_addr()?;
    let (stop, stopped) = watch::channel(false);

    let gw = gateway.clone();
    let limits = config.limits;
    let gateway_task = tokio::spawn(serve(listener, tls, limits, stopped.clone(), move |peer| {
        let gw = gw.clone();
        service_fn(move |req| {
            let gw = gw.clone();
            // Each request runs on a task of its own, so a client that hangs up does not cancel
            // it halfway: a request already upstream is answered, billed and audited as
            // `client_gone` (its body drained for the provider's usage) instead of vanishing
            // with its reservation and record. The stages bound how long that can take.
            let exchange = tokio::spawn(async move {
                let http1 = req.version() < http::Version::HTTP_2;
                let mut response = crate::pipeline::handle(&gw, req, peer).await;
                // Draining: a kept-alive HTTP/1 connection (a load balancer's pool) is closed
                // after this answer, so its next request goes to another replica instead of
                // meeting a listener that is about to close. The body is untouched.
                if http1 && gw.draining.load(std::sync::atomic::Ordering::Relaxed) {
                    response
                        .headers_mut()
                        .insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
                }
                response
            });
            async move {
                Ok::<_, std::convert::Infallible>(match exchange.await {
                    Ok(response) => response,
                    Err(e) => {
                        tracing::error!(error = %e, %peer, "a request's task failed");
                        crate::pipeline::internal_error()
                    }
                })
            }
        })
    }));
    let gw = gateway.clone();
    let admin_task = tokio::spawn(serve(admin, None, limits, stopped, move |peer| {
        let gw = gw.clone();
        service_fn(move |req| {
            let gw = gw.clone();
            async move { Ok::<_, std::convert::Infallible>(crate::admin::handle(&gw, req, peer).await) }
        })
    }));
    let scheme = if config.tls.is_some() { "https" } else { "http" };
    tracing::info!(
        gateway = %format!("{scheme}://{addr}"),
        admin = %format!("http://{admin_addr}"),
        anthropic_upstream = %config.upstreams.anthropic.base_url(),
        openai_upstream = %config.upstreams.openai.base_url(),
        "conduit listening"
    );
    Ok(Running {
        addr,
        admin_addr,
        gateway,
        stop,
        tasks: vec![gateway_task, admin_task],
    })
}

async fn serve<F, S>(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    limits: Limits,
    mut stopped: watch::Receiver<bool>,
    make_service: F,
) where
    F: Fn(SocketAddr) -> S,
    S: hyper::service::Service<
            http::Request<hyper::body::Incoming>,
            Response = http::Response<crate::body::GatewayBody>,
            Error = std::convert::Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_buf_size(limits.max_header_bytes.max(8192))
        .max_headers(limits.max_headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(limits.max_header_bytes as u32)
        .max_concurrent_streams(H2_MAX_STREAMS)
        .keep_alive_interval(Some(H2_PING_EVERY))
        // A ping's answer queues behind what the socket already holds: on a slow link a long
        // download would otherwise be dropped while still taking bytes.
        .keep_alive_timeout(H2_PING_TIMEOUT.max(limits.send_timeout));
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    // One slot per connection: over the cap, a connection is answered and closed at once rather
    // than left in the kernel's queue (where it would hold an FD and wait unseen).
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let mut refused: u64 = 0;
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = stopped.changed() => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            refused += 1;
            if refused.is_power_of_two() {
                tracing::warn!(
                    max_connections = limits.max_connections,
                    refused,
                    "connection cap reached (limits.max_connections); new connections are answered 503 and closed"
                );
            }
            if tls.is_none() {
                // Best effort, never waiting: an HTTP/1 client reads why.
                let _ = stream.try_write(&OVER_CAPACITY);
            }
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        // A client that stops reading cannot hold its request open (`send_timeout`).
        let stream = SendTimeout::new(stream, limits.send_timeout);
        // HTTP/2: a streamed answer the client grants no window for `send_timeout` is cut
        // (`crate::unasked`; both listeners: an audit export holds a blocking thread), and then
        // its connection is closed — hyper would hold that stream (and its place among the
        // connection's streams) until the client granted window — as a socket that stops taking
        // bytes is.
        let cut = Arc::new(tokio::sync::Notify::new());
        let service = {
            let (inner, cut, limit) = (make_service(peer), cut.clone(), limits.send_timeout);
            service_fn(move |req: http::Request<hyper::body::Incoming>| {
                let http2 = req.version() == http::Version::HTTP_2;
                let (answer, cut) = (inner.call(req), cut.clone());
                async move {
                    let response = answer.await?;
                    Ok::<_, std::convert::Infallible>(if http2 {
                        response.map(|body| body.watched(limit, cut))
                    } else {
                        response
                    })
                }
            })
        };
        let builder = builder.clone();
        match &tls {
            None => {
                let conn = builder.serve_connection(TokioIo::new(stream), service).into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    let _slot = slot;
                    tokio::select! {
                        ended = conn => if let Err(e) = ended {
                            tracing::debug!(error = %e, %peer, "connection ended with an error");
                        },
                        _ = cut.notified() => tracing::debug!(%peer, "connection closed: a stream was granted no window for limits.send_timeout_secs"),
                    }
                });
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                let watcher = graceful.watcher();
                tokio::spawn(async move {
                    let _slot = slot;
                    let tls_stream = match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(stream)).await
                    {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            return tracing::debug!(error = %e, %peer, "TLS handshake failed");
                        }
                        Err(_) => return tracing::debug!(%peer, "TLS handshake timed out"),
                    };
                    let conn = builder.serve_connection(TokioIo::new(tls_stream), service).into_owned();
                    tokio::select! {
                        ended = watcher.watch(conn) => if let Err(e) = ended {
                            tracing::debug!(error = %e, %peer, "connection ended with an error");
                        },
                        _ = cut.notified() => tracing::debug!(%peer, "connection closed: a stream was granted no window for limits.send_timeout_secs"),
                    }
                });
            }
        }
    }
    drop(listener);
    if tokio::time::timeout(limits.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_secs = limits.shutdown_grace.as_secs(),
            "in-flight requests did not finish within the grace period"
        );
    }
}

fn load_tls(files: &TlsFiles) -> Result<TlsAcceptor> {
    let cert_shown = files.cert_file.display().to_string();
    let key_shown = files.key_file.display().to_string();
    let certs = CertificateDer::pem_file_iter(&files.cert_file)
        .map_err(|e| Error::msg(format!("tls.cert_file {cert_shown:?}: {e}")))?
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| Error::msg(format!("tls.cert_file {cert_shown:?}: {e}")))?;
    if certs.is_empty() {
        return Err(Error::msg(format!(
            "tls.cert_file {cert_shown:?} holds no PEM certificate"
        )));
    }
    let key = PrivateKeyDer::from_pem_file(&files.key_file)
        .map_err(|e| Error::msg(format!("tls.key_file {key_shown:?}: {e} (expected a PEM private key)")))?;
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::msg(format!("TLS setup: {e}")))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| Error::msg(format!("tls.cert_file / tls.key_file do not form a usable pair: {e}")))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
