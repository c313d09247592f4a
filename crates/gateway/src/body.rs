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

use crate::audit::Pending;
use crate::usage::{Observed, UsageTap};
use conduit_state::ratelimit::StreamSlot;

/// Error type of gateway bodies.
pub use conduit_wire::BoxError;

pin_project_lite::pin_project! {
    /// Body of every response the gateway writes.
    #[project = GatewayBodyProj]
    pub enum GatewayBody {
        /// Fully known bytes.
        Full { #[pin] inner: Full<Bytes> },
        /// The upstream's body, streamed.
        Upstream { #[pin] inner: UpstreamBody },
        /// Chunks produced elsewhere (an audit export written on a blocking thread).
        Channel { rx: tokio::sync::mpsc::Receiver<Result<Bytes, BoxError>> },
        /// A streamed body under HTTP/2, cut if the client grants it no window (`crate::unasked`).
        Watched { #[pin] inner: crate::unasked::Watched<GatewayBody> },
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

    /// Under HTTP/2: a streamed body (an upstream's, an audit export's) watched for a client that
    /// grants it no window (`crate::unasked`); `connection` is told when it is cut. A buffered body
    /// holds no place, upstream or thread, and is returned as it is.
    pub fn watched(self, limit: std::time::Duration, connection: std::sync::Arc<tokio::sync::Notify>) -> GatewayBody {
        match self {
            GatewayBody::Upstream { .. } | GatewayBody::Channel { .. } => GatewayBody::Watched {
                inner: crate::unasked::Watched::new(self, limit, connection),
            },
            other => other,
        }
    }
}

impl Body for GatewayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project() {
            GatewayBodyProj::Full { inner } => inner.poll_frame(cx).map_err(|never| match never {}),
            GatewayBodyProj::Upstream { inner } => inner.poll_frame(cx),
            GatewayBodyProj::Channel { rx } => rx.poll_recv(cx).map(|c| c.map(|r| r.map(Frame::data))),
            GatewayBodyProj::Watched { inner } => inner.poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            GatewayBody::Full { inner } => inner.is_end_stream(),
            GatewayBody::Upstream { inner } => inner.is_end_stream(),
            GatewayBody::Channel { .. } => false,
            GatewayBody::Watched { inner } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            GatewayBody::Full { inner } => inner.size_hint(),
            GatewayBody::Upstream { inner } => inner.size_hint(),
            GatewayBody::Channel { .. } => SizeHint::default(),
            GatewayBody::Watched { inner } => inner.size_hint(),
        }
    }
}

/// A [`std::io::Write`] that feeds a [`GatewayBody::Channel`] in 64 KiB chunks from a blocking
/// thread; writing fails once the client is gone, which stops the producer.
pub struct ChannelWriter {
    tx: tokio::sync::mpsc::Sender<Result<Bytes, BoxError>>,
    buf: Vec<u8>,
}

impl ChannelWriter {
    /// A writer and the body it feeds (at most four chunks in flight: constant memory).
    pub fn new() -> (ChannelWriter, GatewayBody) {
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        (
            ChannelWriter {
                tx,
                buf: Vec::with_capacity(CHUNK),
            },
            GatewayBody::Channel { rx },
        )
    }

    /// Ends the body with an error the client sees as a broken transfer.
    pub fn fail(self, message: String) {
        let _ = self.tx.blocking_send(Err(message.into()));
    }
}

const CHUNK: usize = 64 * 1024;

impl std::io::Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away"))
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
    /// The client went away before the end; `drained`: the rest of the upstream body was then
    /// read to its end (so the usage the tap saw is final), not cut by the drain's time or size
    /// bound, the idle timeout or an upstream error.
    ClientGone { drained: bool },
}

impl StreamEnd {
    /// Short name for logs and audit.
    pub fn as_str(&self) -> &'static str {
        match self {
            StreamEnd::Complete => "complete",
            StreamEnd::UpstreamError(_) => "upstream_error",
            StreamEnd::IdleTimeout => "idle_timeout",
            StreamEnd::ClientGone { .. } => "client_gone",
        }
    }
}

/// What reached the client of a streamed body.
#[derive(Debug, Clone, Copy)]
pub struct Sent {
    /// Body bytes handed to the client.
    pub bytes: u64,
    /// When the first body byte was handed over.
    pub first_byte: Option<std::time::Instant>,
}

/// Called once when a streamed body ends: what was sent, how it ended, and what the usage tap saw
/// (all bytes the upstream sent, including any drained after the client left). It may return an
/// acknowledgement (strict audit durability): the end of the body — its last frame, or the end of
/// a chunked stream — is held back until it arrives.
pub type OnEnd = Box<dyn FnOnce(Sent, StreamEnd, Observed) -> Option<Pending> + Send>;

/// After the client leaves mid-stream, keep reading the upstream for at most this long and this
/// many bytes, so the usage the provider bills is the usage recorded.
const DRAIN_TIME: Duration = Duration::from_secs(600);
const DRAIN_BYTES: u64 = 64 * 1024 * 1024;

/// Where an upstream body's frames come from: the upstream's own body, or — for an Anthropic
/// client served by Bedrock, the one translated case (`crate::bedrock`) — its event-stream turned
/// into SSE, or an error body rewritten into the client's shape.
#[derive(Debug)]
pub enum Source {
    /// The upstream's body, unchanged.
    Plain(Incoming),
    /// Bedrock event-stream → Anthropic SSE.
    Sse(crate::bedrock::SseFromEventStream<Incoming>),
    /// A body already read and rewritten.
    Ready(Option<Bytes>),
}

impl Body for Source {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Source::Plain(b) => Pin::new(b).poll_frame(cx).map_err(BoxError::from),
            Source::Sse(b) => Pin::new(b).poll_frame(cx),
            Source::Ready(b) => Poll::Ready(b.take().map(|d| Ok(Frame::data(d)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Source::Plain(b) => b.is_end_stream(),
            Source::Sse(b) => b.is_end_stream(),
            Source::Ready(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Source::Plain(b) => b.size_hint(),
            Source::Sse(b) => b.size_hint(),
            Source::Ready(b) => SizeHint::with_exact(b.as_ref().map_or(0, |d| d.len() as u64)),
        }
    }
}

pin_project_lite::pin_project! {
    /// The upstream response body, passed through unchanged.
    pub struct UpstreamBody {
        inner: Option<Source>,
        #[pin]
        idle: Sleep,
        idle_timeout: Duration,
        bytes: u64,
        // The upstream's declared length: the frame that completes it is the last one, even
        // before the upstream body says it has ended.
        expected: Option<u64>,
        first_byte: Option<std::time::Instant>,
        tap: Option<UsageTap>,
        // The last frame handed on, shown to the tap at the next poll — after hyper has written it,
        // so metering never delays a frame (a `Bytes` clone is a reference count).
        unmetered: Option<Bytes>,
        on_end: Option<OnEnd>,
        // Strict audit: the record's acknowledgement, and what to hand on once it arrives.
        ack: Option<Pending>,
        held: Option<Option<Result<Frame<Bytes>, BoxError>>>,
        // Freed with the body: when the client's response ends or the client goes away.
        slot: Option<StreamSlot>,
    }

    impl PinnedDrop for UpstreamBody {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            let Some(on_end) = this.on_end.take() else { return };
            meter(this.tap, this.unmetered);
            let tap = this.tap.take();
            let sent = Sent { bytes: *this.bytes, first_byte: *this.first_byte };
            match this.inner.take() {
                // An empty body (HEAD, 204) may be dropped without ever being polled.
                Some(inner) if !inner.is_end_stream() => drain(inner, tap, *this.idle_timeout, sent, on_end),
                _ => {
                    let _ = on_end(sent, StreamEnd::Complete, tap.map(UsageTap::finish).unwrap_or_default());
                }
            }
        }
    }
}

/// The client is gone: read the rest of the upstream body on a task of its own, then report.
fn drain(mut inner: Source, mut tap: Option<UsageTap>, idle: Duration, sent: Sent, on_end: OnEnd) {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        let _ = on_end(
            sent,
            StreamEnd::ClientGone { drained: false },
            tap.map(UsageTap::finish).unwrap_or_default(),
        );
        return;
    };
    runtime.spawn(async move {
        use http_body_util::BodyExt;
        let deadline = Instant::now() + DRAIN_TIME;
        let (mut read, mut ended) = (0u64, false);
        while read < DRAIN_BYTES {
            let next = tokio::time::timeout_at(deadline.min(Instant::now() + idle), inner.frame()).await;
            let frame = match next {
                Ok(Some(Ok(frame))) => frame,
                Ok(None) => {
                    ended = true;
                    break;
                }
                _ => break,
            };
            if let Some(data) = frame.data_ref() {
                read += data.len() as u64;
                if let Some(t) = tap.as_mut() {
                    t.observe(data);
                }
            }
            if inner.is_end_stream() {
                ended = true;
                break;
            }
        }
        // A drain cut short saw only part of the usage: settled as incomplete (billed at least
        // the text seen, flagged estimated), never as the provider's final word.
        let _ = on_end(
            sent,
            StreamEnd::ClientGone { drained: ended },
            tap.map(UsageTap::finish).unwrap_or_default(),
        );
    });
}

impl UpstreamBody {
    /// Wraps `inner`; `tap` sees every data frame; `on_end` runs once when it ends or is dropped.
    pub fn new(inner: Source, idle_timeout: Duration, tap: UsageTap, on_end: OnEnd, slot: Option<StreamSlot>) -> Self {
        UpstreamBody {
            expected: inner.size_hint().exact(),
            inner: Some(inner),
            idle: tokio::time::sleep(idle_timeout),
            idle_timeout,
            bytes: 0,
            first_byte: None,
            tap: Some(tap),
            unmetered: None,
            on_end: Some(on_end),
            ack: None,
            held: None,
            slot,
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        if let Some(ack) = this.ack.as_mut() {
            // Strict audit: the end goes out once the record is durable; if it cannot be, the
            // response is cut short instead (the client sees an incomplete response, never a
            // complete unaudited one).
            let durable = matches!(ready!(Pin::new(ack).poll(cx)), Ok(true));
            *this.ack = None;
            let held = this.held.take().flatten();
            return Poll::Ready(if durable { held } else { Some(Err(not_durable())) });
        }
        meter(this.tap, this.unmetered);
        let Some(inner) = this.inner.as_mut() else {
            return Poll::Ready(None);
        };
        let (result, end) = match Pin::new(&mut *inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *this.bytes += data.len() as u64;
                    *this.unmetered = Some(data.clone());
                    this.first_byte.get_or_insert_with(std::time::Instant::now);
                }
                this.idle.as_mut().reset(Instant::now() + *this.idle_timeout);
                let last = inner.is_end_stream() || this.expected.is_some_and(|n| *this.bytes >= n);
                if last {
                    meter(this.tap, this.unmetered);
                }
                (Some(Ok(frame)), last.then_some(StreamEnd::Complete))
            }
            Poll::Ready(Some(Err(e))) => {
                let end = StreamEnd::UpstreamError(e.to_string());
                (Some(Err(e)), Some(end))
            }
            Poll::Ready(None) => (None, Some(StreamEnd::Complete)),
            Poll::Pending => {
                ready!(this.idle.as_mut().poll(cx));
                let secs = this.idle_timeout.as_secs();
                let err: BoxError = format!("upstream sent nothing for {secs} s (network.idle_timeout_secs)").into();
                (Some(Err(err)), Some(StreamEnd::IdleTimeout))
            }
        };
        let Some(end) = end else {
            return Poll::Ready(result);
        };
        let sent = Sent {
            bytes: *this.bytes,
            first_byte: *this.first_byte,
        };
        let Some(mut ack) = finish(this.on_end, this.tap, sent, end) else {
            return Poll::Ready(result);
        };
        match Pin::new(&mut ack).poll(cx) {
            Poll::Ready(Ok(true)) => Poll::Ready(result),
            Poll::Ready(_) => Poll::Ready(Some(Err(not_durable()))),
            Poll::Pending => {
                *this.ack = Some(ack);
                *this.held = Some(result);
                Poll::Pending
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        // Not ended until the completion hook ran and any acknowledgement arrived, so hyper polls
        // once more and the end of the response can wait for a durable audit record.
        self.on_end.is_none()
            && self.ack.is_none()
            && self.held.is_none()
            && self.inner.as_ref().is_none_or(|i| i.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        self.inner
            .as_ref()
            .map(|i| i.size_hint())
            .unwrap_or_else(|| SizeHint::with_exact(0))
    }
}

/// Why a strict-mode response was cut short.
fn not_durable() -> BoxError {
    "the audit record of this response could not be written (audit.durability = \"strict\"); the response is cut short"
        .into()
}

/// Shows the tap the frame handed on last, if any.
fn meter(tap: &mut Option<UsageTap>, unmetered: &mut Option<Bytes>) {
    if let (Some(t), Some(data)) = (tap.as_mut(), unmetered.take()) {
        t.observe(&data);
    }
}

fn finish(on_end: &mut Option<OnEnd>, tap: &mut Option<UsageTap>, sent: Sent, end: StreamEnd) -> Option<Pending> {
    on_end
        .take()
        .and_then(|f| f(sent, end, tap.take().map(UsageTap::finish).unwrap_or_default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_streamed_bodies_are_watched() {
        let connection = std::sync::Arc::new(tokio::sync::Notify::new());
        let full = GatewayBody::full("x").watched(Duration::from_secs(5), connection.clone());
        assert!(matches!(full, GatewayBody::Full { .. }));
        let (_writer, channel) = ChannelWriter::new();
        let channel = channel.watched(Duration::from_secs(5), connection);
        assert!(matches!(channel, GatewayBody::Watched { .. }));
    }
}
