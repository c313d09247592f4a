//! Response bodies the gateway sends: a small buffered one (local answers, errors), or the upstream's
//! body passed through frame by frame.
//!
//! [`UpstreamBody`] never buffers or rewrites: each frame read from the upstream is handed to hyper
//! as-is, so an SSE event reaches the client as soon as the upstream sends it. It adds an idle
//! timeout (no total timeout: long streams are fine), counts bytes, and calls a completion hook
//! exactly once — on the end of the stream, an upstream error, or the client going away.

use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

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

/// Called once when a streamed body ends, with bytes sent and how it ended.
pub type OnEnd = Box<dyn FnOnce(u64, StreamEnd) + Send>;

pin_project_lite::pin_project! {
    /// The upstream response body, passed through unchanged.
    pub struct UpstreamBody {
        #[pin]
        inner: Incoming,
        #[pin]
        idle: Sleep,
        idle_timeout: Duration,
        bytes: u64,
        on_end: Option<OnEnd>,
    }

    impl PinnedDrop for UpstreamBody {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(f) = this.on_end.take() {
                // An empty body (HEAD, 204) may be dropped without ever being polled.
                let end = if this.inner.is_end_stream() { StreamEnd::Complete } else { StreamEnd::ClientGone };
                f(*this.bytes, end);
            }
        }
    }
}

impl UpstreamBody {
    /// Wraps `inner`; `on_end` runs once when it ends or is dropped.
    pub fn new(inner: Incoming, idle_timeout: Duration, on_end: OnEnd) -> Self {
        UpstreamBody {
            inner,
            idle: tokio::time::sleep(idle_timeout),
            idle_timeout,
            bytes: 0,
            on_end: Some(on_end),
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        match this.inner.as_mut().poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *this.bytes += data.len() as u64;
                }
                this.idle.as_mut().reset(Instant::now() + *this.idle_timeout);
                if this.inner.is_end_stream()
                    && let Some(f) = this.on_end.take()
                {
                    f(*this.bytes, StreamEnd::Complete);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                if let Some(f) = this.on_end.take() {
                    f(*this.bytes, StreamEnd::UpstreamError(e.to_string()));
                }
                Poll::Ready(Some(Err(e.into())))
            }
            Poll::Ready(None) => {
                if let Some(f) = this.on_end.take() {
                    f(*this.bytes, StreamEnd::Complete);
                }
                Poll::Ready(None)
            }
            Poll::Pending => {
                ready!(this.idle.as_mut().poll(cx));
                let secs = this.idle_timeout.as_secs();
                if let Some(f) = this.on_end.take() {
                    f(*this.bytes, StreamEnd::IdleTimeout);
                }
                Poll::Ready(Some(Err(format!(
                    "upstream sent nothing for {secs} s (network.idle_timeout_secs)"
                )
                .into())))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

use std::future::Future;
