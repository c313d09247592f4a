//! The change listener: one connection per process, `LISTEN conduit_changes`, relaying what
//! other processes wrote to this process's watchers. While it is disconnected,
//! [`crate::Pg::listening`] is false (readiness reports it) and it reconnects with backoff; on
//! reconnecting it tells every watcher that anything may have changed (changes sent while it was
//! away were not queued for it).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio_postgres::AsyncMessage;

use conduit_core::error::Result;

use crate::{CHANNEL, Change, Inner, Pg};

/// Connects the listener (the first time, before `open` returns, so a change made right after is
/// heard) and spawns its loop; aborting the handle stops it.
pub(crate) async fn start(pg: &Pg) -> Result<tokio::task::AbortHandle> {
    let first = connect(&pg.0).await?;
    let weak = Arc::downgrade(&pg.0);
    let task = tokio::spawn(run(weak, first));
    Ok(task.abort_handle())
}

/// How often the listening connection is checked.
const PING: Duration = Duration::from_secs(5);

type Notifications = tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::Notification>;

/// A listening connection: the notifications it receives, and its driver.
async fn connect(inner: &Inner) -> Result<(tokio_postgres::Client, Notifications, tokio::task::JoinHandle<()>)> {
    let (client, mut connection) = inner
        .connector
        .config
        .connect(inner.connector.tls.clone())
        .await
        .map_err(|e| {
            crate::pg_err(
                &format!("connecting the change listener to {}", inner.connector.shown),
                e,
            )
        })?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let driver = tokio::spawn(async move {
        loop {
            match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                Some(Ok(AsyncMessage::Notification(n))) => {
                    if tx.send(n).is_err() {
                        return;
                    }
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "the PostgreSQL change listener lost its connection");
                    return;
                }
                None => return,
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .await
        .map_err(|e| crate::pg_err("starting the change listener", e))?;
    inner.listening.store(true, Ordering::Relaxed);
    Ok((client, rx, driver))
}

async fn run(weak: Weak<Inner>, first: (tokio_postgres::Client, Notifications, tokio::task::JoinHandle<()>)) {
    let mut current = Some(first);
    let mut backoff = Duration::from_millis(100);
    loop {
        if let Some((client, mut notes, driver)) = current.take() {
            // A connection can die without a word (a half-open TCP connection): it is pinged
            // every PING, and a ping unanswered within PING counts as lost.
            let mut ping = tokio::time::interval(PING);
            ping.tick().await;
            loop {
                tokio::select! {
                    n = notes.recv() => {
                        let Some(n) = n else { break };
                        let Some(inner) = weak.upgrade() else { return };
                        if let Some((origin, change)) = Change::parse(n.payload())
                            && origin != inner.origin
                        {
                            inner.hubs.send(change);
                        }
                    }
                    _ = ping.tick() => {
                        let alive = tokio::time::timeout(PING, client.simple_query("SELECT 1")).await;
                        if !matches!(alive, Ok(Ok(_))) {
                            tracing::warn!("the PostgreSQL change listener stopped answering; reconnecting");
                            break;
                        }
                    }
                }
            }
            drop(client);
            driver.abort();
            let Some(inner) = weak.upgrade() else { return };
            inner.listening.store(false, Ordering::Relaxed);
        }
        tokio::time::sleep(backoff).await;
        let Some(inner) = weak.upgrade() else { return };
        match connect(&inner).await {
            Ok(c) => {
                backoff = Duration::from_millis(100);
                resync(&inner);
                tracing::info!("the PostgreSQL change listener reconnected");
                current = Some(c);
            }
            Err(e) => {
                backoff = (backoff * 2).min(Duration::from_secs(5));
                tracing::warn!(error = %e, "the PostgreSQL change listener cannot reconnect yet");
            }
        }
    }
}

/// After a gap: every watcher is told that what it caches may be stale. Budget limits, modes and
/// prices are re-read by their watchers on any change of their kind; key and credential watchers
/// get [`crate::RESYNC`] as the id, meaning "all of them".
fn resync(inner: &Inner) {
    inner.hubs.send(Change::Key(conduit_state::store::KeyChange {
        id: crate::RESYNC.into(),
        hash: conduit_core::keys::KeyHash([0; 32]),
    }));
    inner
        .hubs
        .send(Change::Credential(conduit_state::store::CredentialChange {
            provider: crate::RESYNC.into(),
            id: crate::RESYNC.into(),
        }));
    inner.hubs.send(Change::Budget(crate::RESYNC.into()));
    inner.hubs.send(Change::Mode(crate::RESYNC.into()));
    inner.hubs.send(Change::Prices);
    inner.hubs.send(Change::Meta(crate::RESYNC.into()));
}
