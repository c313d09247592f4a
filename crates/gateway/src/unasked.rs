//! An HTTP/2 response the client grants no window: the stream's own `limits.send_timeout_secs`.
//!
//! Under HTTP/1 a client that stops reading blocks the socket, and [`crate::send_timeout`] cuts
//! it. Under HTTP/2 one connection carries many streams, each with its own flow-control window: a
//! client that keeps reading the connection (answering pings, serving other streams) but never
//! sends a WINDOW_UPDATE for one stream — `SETTINGS_INITIAL_WINDOW_SIZE = 0` and silence is
//! enough — leaves that stream's body unpolled for as long as the connection lives. hyper holds the
//! frame it has and asks for no more; the socket stays writable, so no write waits; the body's
//! idle timer runs only while the body is polled. Left alone, such a stream would hold its
//! upstream response, its place under `limits.max_in_flight` and its key's stream slot for ever,
//! and one valid key could pin every place with a handful of streams.
//!
//! [`Watched`] wraps a streamed body under HTTP/2 (an upstream's, or an audit export's) and keeps
//! a watchdog beside it: once the body has handed hyper a frame and is not asked for the next one
//! within the limit, the watchdog drops the body — which settles it as a client that went away
//! (the rest of the upstream body drained for its usage, billed, recorded `client_gone`, places
//! returned) — and tells the connection, which closes: hyper would otherwise hold the stream, its
//! last frame and its place among the connection's streams until the client grants window, and a
//! client answering pings could park streams for as long as it liked. (Like a socket that stops
//! taking bytes under HTTP/1, a stalled stream costs the client its connection.) A body waiting
//! for its upstream is not "unasked" (hyper is waiting for it, and the upstream idle timeout covers
//! silence). Frames are handed on in pieces of at most 16 KiB (HTTP/2's default frame size), so a
//! client that keeps granting window keeps being asked: one reading 300 bytes a second survives
//! the default 60 s, as a slow HTTP/1 reader does.
//!
//! The cost, HTTP/2 streamed responses only: a task with a timer per response, and an uncontended
//! lock and a clock read per frame.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::Notify;
use tokio::time::Instant;

use conduit_wire::BoxError;

/// A streamed body whose frames must be asked for within a limit (see the module docs).
pub struct Watched<B> {
    shared: Arc<Shared<B>>,
    limit: Duration,
}

struct Shared<B> {
    state: Mutex<State<B>>,
    /// Told when hyper lets go of the body, so the watchdog ends with it.
    gone: Notify,
}

struct State<B> {
    /// `None` once the watchdog cut it (or hyper let go).
    body: Option<Pin<Box<B>>>,
    /// The rest of a data frame larger than [`PIECE`], handed on first.
    rest: Bytes,
    /// Since when the body has waited to be asked for its next frame; `None` while hyper waits
    /// for the body.
    unasked_since: Option<Instant>,
}

/// The largest piece of a data frame handed to hyper at once.
const PIECE: usize = 16 * 1024;

/// Streams cut so far (logged at powers of two: a hostile client cannot flood the log).
static CUT: AtomicU64 = AtomicU64::new(0);

impl<B> Watched<B>
where
    B: Body<Data = Bytes, Error = BoxError> + Send + 'static,
{
    /// Watches `body` (the caller picks which bodies: `GatewayBody::watched`); `connection` is
    /// told when the body is cut.
    pub fn new(body: B, limit: Duration, connection: Arc<Notify>) -> Watched<B> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                body: Some(Box::pin(body)),
                rest: Bytes::new(),
                // hyper asks for the first frame as soon as the head is out; until then the clock runs.
                unasked_since: Some(Instant::now()),
            }),
            gone: Notify::new(),
        });
        tokio::spawn(watchdog(shared.clone(), limit, connection));
        Watched { shared, limit }
    }
}

impl<B> Shared<B> {
    fn lock(&self) -> MutexGuard<'_, State<B>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

async fn watchdog<B>(shared: Arc<Shared<B>>, limit: Duration, connection: Arc<Notify>) {
    loop {
        let wake = {
            let state = shared.lock();
            if state.body.is_none() {
                return;
            }
            state
                .unasked_since
                .map_or_else(|| Instant::now() + limit, |t| t + limit)
        };
        tokio::select! {
            _ = shared.gone.notified() => return,
            _ = tokio::time::sleep_until(wake) => {}
        }
        let cut = {
            let mut state = shared.lock();
            match state.unasked_since {
                Some(t) if t + limit <= Instant::now() => {
                    state.rest = Bytes::new();
                    state.body.take()
                }
                _ => None,
            }
        };
        if let Some(body) = cut {
            // Dropped outside the lock: the drop settles the request (drain, bill, record).
            drop(body);
            connection.notify_one();
            let n = CUT.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                tracing::warn!(
                    send_timeout_secs = limit.as_secs(),
                    cut = n,
                    "an HTTP/2 client granted a response stream no window for limits.send_timeout_secs; the stream was cut and its request settled as client_gone (count logged at powers of two)"
                );
            }
            return;
        }
    }
}

impl<B> Drop for Watched<B> {
    fn drop(&mut self) {
        let body = self.shared.lock().body.take();
        drop(body);
        self.shared.gone.notify_one();
    }
}

impl<B> Body for Watched<B>
where
    B: Body<Data = Bytes, Error = BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut guard = self.shared.lock();
        let state = &mut *guard;
        let Some(body) = state.body.as_mut() else {
            return Poll::Ready(Some(Err(format!(
                "the client granted this HTTP/2 stream no window for {} s (limits.send_timeout_secs)",
                self.limit.as_secs()
            )
            .into())));
        };
        let polled = if state.rest.is_empty() {
            match body.as_mut().poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) if frame.data_ref().is_some_and(|d| d.len() > PIECE) => {
                    let mut data = frame.into_data().unwrap_or_default();
                    let piece = data.split_to(PIECE);
                    state.rest = data;
                    Poll::Ready(Some(Ok(Frame::data(piece))))
                }
                other => other,
            }
        } else {
            let take = state.rest.len().min(PIECE);
            Poll::Ready(Some(Ok(Frame::data(state.rest.split_to(take)))))
        };
        state.unasked_since = matches!(polled, Poll::Ready(Some(Ok(_)))).then(Instant::now);
        polled
    }

    fn is_end_stream(&self) -> bool {
        // A cut body is not ended: hyper asks once more and ends the stream with the error.
        let state = self.shared.lock();
        state.rest.is_empty() && state.body.as_ref().is_some_and(|b| b.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let state = self.shared.lock();
        let Some(body) = state.body.as_ref() else {
            return SizeHint::default();
        };
        let inner = body.size_hint();
        let rest = state.rest.len() as u64;
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + rest);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + rest);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A body fed by the test; its sender sees when the body is dropped.
    struct Fed(tokio::sync::mpsc::Receiver<Result<Bytes, BoxError>>);

    impl Body for Fed {
        type Data = Bytes;
        type Error = BoxError;
        fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
            self.0.poll_recv(cx).map(|c| c.map(|r| r.map(Frame::data)))
        }
    }

    type Sender = tokio::sync::mpsc::Sender<Result<Bytes, BoxError>>;

    fn fed(limit: Duration, connection: Arc<Notify>) -> (Sender, Pin<Box<Watched<Fed>>>) {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        (tx, Box::pin(Watched::new(Fed(rx), limit, connection)))
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_not_asked_for_its_next_frame_within_the_limit_is_cut() {
        let (tx, mut body) = fed(Duration::from_secs(5), Arc::new(Notify::new()));
        tx.send(Ok(Bytes::from_static(b"one"))).await.unwrap();
        // Never asked: 4 s is not yet too long…
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(!tx.is_closed());
        // …a frame is asked for and handed over, which restarts the clock…
        let frame = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await;
        assert!(frame.unwrap().unwrap().is_data());
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert!(!tx.is_closed(), "the clock restarted with the frame");
        // …while hyper waits for the body (nothing to send yet), no clock runs at all…
        let waiting = tokio::time::timeout(
            Duration::from_secs(60),
            std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)),
        )
        .await;
        assert!(
            waiting.is_err() && !tx.is_closed(),
            "a body waiting for its upstream is not cut"
        );
        // …but a frame handed over and no next request for the limit: the body is dropped.
        tx.send(Ok(Bytes::from_static(b"two"))).await.unwrap();
        let frame = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await;
        assert!(frame.unwrap().unwrap().is_data());
        tokio::time::sleep(Duration::from_millis(5100)).await;
        assert!(
            tx.is_closed(),
            "the unasked body was cut (dropped, which settles a streamed request)"
        );
        assert!(!body.is_end_stream(), "hyper asks once more…");
        let after = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await;
        let err = after.unwrap().unwrap_err().to_string();
        assert!(
            err.contains("limits.send_timeout_secs"),
            "…and ends the stream with: {err}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_body_drops_what_it_wraps_and_ends_the_watchdog() {
        let (tx, body) = fed(Duration::from_secs(5), Arc::new(Notify::new()));
        let shared = Arc::downgrade(&body.shared);
        drop(body);
        assert!(tx.is_closed());
        for _ in 0..4 {
            tokio::task::yield_now().await;
        }
        assert!(
            shared.upgrade().is_none(),
            "the watchdog let go at once, not after the limit"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn large_frames_go_out_in_pieces_and_a_cut_tells_the_connection() {
        let connection = Arc::new(Notify::new());
        let (tx, mut body) = fed(Duration::from_secs(5), connection.clone());
        let big = Bytes::from(vec![7u8; 2 * PIECE + 10]);
        tx.send(Ok(big.clone())).await.unwrap();
        let mut got = Vec::new();
        for _ in 0..3 {
            // Each piece is asked for within the limit: a slow reader that keeps reading stays.
            tokio::time::sleep(Duration::from_secs(4)).await;
            let frame = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx))
                .await
                .unwrap()
                .unwrap();
            let data = frame.into_data().unwrap();
            assert!(data.len() <= PIECE);
            got.extend_from_slice(&data);
        }
        assert_eq!(got, big, "the pieces are the frame, in order");
        assert!(!tx.is_closed());
        let told = tokio::time::timeout(Duration::from_secs(6), connection.notified()).await;
        assert!(
            told.is_ok() && tx.is_closed(),
            "the cut dropped the body and told the connection"
        );
    }
}
