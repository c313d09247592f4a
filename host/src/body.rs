//! Response bodies the gateway sends: a small buffered one (local answers, errors), or the upstream's
//! body passed through frame by frame.
//!
//! [`UpstreamBody`] never buffers or rewrites: each frame read from the upstream is handed to hyper
//! as-is, so an SSE event reaches the client as soon as the upstream sends it. It adds an idle
//! timeout (no total timeout: long streams are fine), counts bytes, shows each frame to the usage
//! tap, and calls a completion hook exactly once — on the end of the stream, an upstream error, or
//! after the client went away and the rest of the upstream body was drained for metering.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::admission::StreamSlot;
use crate::usage::{Observed, UsageTap};

/// Error type of gateway bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

pin_project_lite::pin_project! {
    /// Body of every response the gateway writes.
    #[project = GatewayBodyProj]
    pub enum GatewayBody {
        /// Fully known bytes.
        Full { #[pin] inner: Full<Bytes> },
        /// The upstream's body, streamed.
        Upstream { #[pin] inner: UpstreamBody },
    }
}

impl GatewayBody {
    /// A buffered body.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        GatewayBody::Full {
            inner: Full::new(bytes.into()),
        }
    }

    /// An empty body.
    pub fn empty() -> Self {
        GatewayBody::full(Bytes::new())
    }
}

impl Body for GatewayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            GatewayBodyProj::Full { inner } => inner.poll_frame(cx).map_err(|never| match never {}),
            GatewayBodyProj::Upstream { inner } => inner.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            GatewayBody::Full { inner } => inner.is_end_stream(),
            GatewayBody::Upstream { inner } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            GatewayBody::Full { inner } => inner.size_hint(),
            GatewayBody::Upstream { inner } => inner.size_hint(),
        }
    }
}

/// How a streamed response body ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StreamEnd {
    /// The upstream finished and the client received everything.
    Complete,
    /// The upstream connection failed mid-body.
    UpstreamError(String),
    /// No bytes from the upstream for the idle timeout.
    IdleTimeout,
    /// The client went away before the end.
    ClientGone,
}

impl StreamEnd {
    /// Short name for logs and audit.
    pub fn as_str(&self) -> &'static str {
        match self {
            StreamEnd::Complete => "complete",
            StreamEnd::UpstreamError(_) => "upstream_error",
            StreamEnd::IdleTimeout => "idle_timeout",
            StreamEnd::ClientGone => "client_gone",
        }
    }
}

/// Called once when a streamed body ends: bytes sent to the client, how it ended, and what the
/// usage tap saw (all bytes the upstream sent, including any drained after the client left).
pub type OnEnd = Box<dyn FnOnce(u64, StreamEnd, Observed) + Send>;

/// After the client leaves mid-stream, keep reading the upstream for at most this long and this
/// many bytes, so the usage the provider bills is the usage recorded.
const DRAIN_TIME: Duration = Duration::from_secs(600);
const DRAIN_BYTES: u64 = 64 * 1024 * 1024;

pin_project_lite::pin_project! {
    /// The upstream response body, passed through unchanged.
    pub struct UpstreamBody {
        inner: Option<Incoming>,
        #[pin]
        idle: Sleep,
        idle_timeout: Duration,
        bytes: u64,
                tap: Option<UsageTap>,
        // The last frame handed on, shown to the tap at the next poll — after hyper has written it,
        // so metering never delays a frame (a `Bytes` clone is a reference count).
        unmetered: Option<Bytes>,
        on_end: Option<OnEnd>,
        // Freed with the body: when the client's response ends or the client goes away.
        slot: Option<StreamSlot>,
    }

    impl PinnedDrop for UpstreamBody {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
                        let Some(on_end) = this.on_end.take() else { return };
            meter(this.tap, this.unmetered);
            let tap = this.tap.take();
            let bytes = *this.bytes;
            match this.inner.take() {
                // An empty body (HEAD, 204) may be dropped without ever being polled.
                Some(inner) if !inner.is_end_stream() => drain(inner, tap, *this.idle_timeout, bytes, on_end),
                _ => on_end(bytes, StreamEnd::Complete, tap.map(UsageTap::finish).unwrap_or_default()),
            }
        }
    }
}

/// The client is gone: read the rest of the upstream body on a task of its own, then report.
fn drain(mut inner: Incoming, mut tap: Option<UsageTap>, idle: Duration, sent: u64, on_end: OnEnd) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return on_end(
            sent,
            StreamEnd::ClientGone,
            tap.map(UsageTap::finish).unwrap_or_default(),
        );
    };
    runtime.spawn(async move {
        use http_body_util::BodyExt;
        let deadline = Instant::now() + DRAIN_TIME;
        let mut drained = 0u64;
        while drained < DRAIN_BYTES {
            let next = tokio::time::timeout_at(deadline.min(Instant::now() + idle), inner.frame()).await;
            let Ok(Some(Ok(frame))) = next else { break };
            if let Some(data) = frame.data_ref() {
                drained += data.len() as u64;
                if let Some(t) = tap.as_mut() {
                    t.observe(data);
                }
            }
        }
        on_end(
            sent,
            StreamEnd::ClientGone,
            tap.map(UsageTap::finish).unwrap_or_default(),
        );
    });
}

impl UpstreamBody {
    /// Wraps `inner`; `tap` sees every data frame; `on_end` runs once when it ends or is dropped.
    pub fn new(
        inner: Incoming,
        idle_timeout: Duration,
        tap: UsageTap,
        on_end: OnEnd,
        slot: Option<StreamSlot>,
    ) -> Self {
        UpstreamBody {
            inner: Some(inner),
            idle: tokio::time::sleep(idle_timeout),
            idle_timeout,
            bytes: 0,
            tap: Some(tap),
            unmetered: None,
            on_end: Some(on_end),
            slot,
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        meter(this.tap, this.unmetered);
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        match Pin::new(&mut *inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *this.bytes += data.len() as u64;
                    *this.unmetered = Some(data.clone());
                }
                this.idle.as_mut().reset(Instant::now() + *this.idle_timeout);
                if inner.is_end_stream() {
                    meter(this.tap, this.unmetered);
                    finish(this.on_end, this.tap, *this.bytes, StreamEnd::Complete);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                finish(
                    this.on_end,
                    this.tap,
                    *this.bytes,
                    StreamEnd::UpstreamError(e.to_string()),
                );
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                finish(this.on_end, this.tap, *this.bytes, StreamEnd::Complete);
                Poll::Ready(None)
            }
            Poll::Pending => {
                ready!(this.idle.as_mut().poll(cx));
                let secs = this.idle_timeout.as_secs();
                finish(this.on_end, this.tap, *this.bytes, StreamEnd::IdleTimeout);
                Poll::Ready(Some(Err(format!(
                    "upstream sent nothing for {secs} s (network.idle_timeout_secs)"
                )
                .into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.as_ref().is_none_or(|i| i.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map(|i| i.size_hint())
            .unwrap_or_else(|| SizeHint::with_exact(0))
    }
}

/// Shows the tap the frame handed on last, if any.
fn meter(tap: &mut Option<UsageTap>, unmetered: &mut Option<Bytes>) {
    if let (Some(t), Some(data)) = (tap.as_mut(), unmetered.take()) {
        t.observe(&data);
    }
}

fn finish(on_end: &mut Option<OnEnd>, tap: &mut Option<UsageTap>, bytes: u64, end: StreamEnd) {
    if let Some(f) = on_end.take() {
        f(bytes, end, tap.take().map(UsageTap::finish).unwrap_or_default());
    }
}
