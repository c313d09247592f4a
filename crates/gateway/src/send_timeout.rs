//! A client connection whose writes must make progress (`limits.send_timeout_secs`).
//!
//! A client that stops reading its response — a frozen laptop, a hostile peer, a proxy that
//! buffers nothing — leaves the gateway's writes blocked once the socket buffers are full. Left
//! alone, that request would hold its upstream stream, its place under `limits.max_in_flight`
//! and its stream slot for as long as the TCP connection lives. [`SendTimeout`] wraps the
//! socket (under TLS, when terminated here): a write (or flush) that makes no progress for the
//! limit fails with `TimedOut`, hyper closes the connection, and the response body's end runs as
//! for any client that went away — the rest of the upstream body is drained for its usage,
//! billed and recorded `client_gone`. Like nginx's `send_timeout`, the clock runs only while a
//! write waits: a slow reader that keeps taking bytes is never cut.
//!
//! The cost on the hot path is one branch per write; the timer exists only after a write first
//! had to wait, and is re-armed in place after that.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// `io` with a deadline on writes that wait.
pub struct SendTimeout<IO> {
    io: IO,
    limit: Duration,
    /// The deadline of the write now waiting; `None` while writes go through.
    waiting: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl<IO> SendTimeout<IO> {
    /// Wraps `io`; a write blocked for `limit` fails.
    pub fn new(io: IO, limit: Duration) -> Self {
        SendTimeout {
            io,
            limit,
            waiting: None,
            armed: false,
        }
    }

    /// The wrapped connection.
    pub fn get_ref(&self) -> &IO {
        &self.io
    }

    /// Called with the result of a write-side poll: disarms on progress; on `Pending`, arms the
    /// deadline (once per wait) and fails the write when it has passed.
    fn watch<T>(&mut self, cx: &mut Context<'_>, polled: Poll<io::Result<T>>) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.armed = false;
            return polled;
        }
        let deadline = Instant::now() + self.limit;
        let timer = match self.waiting.as_mut() {
            Some(t) => {
                if !self.armed {
                    t.as_mut().reset(deadline);
                }
                t
            }
            None => self.waiting.insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        self.armed = true;
        ready!(timer.as_mut().poll(cx));
        Poll::Ready(Err(io::Error::new(
            io::ErrorKind::TimedOut,
            format!(
                "the client read nothing of its response for {} s (limits.send_timeout_secs)",
                self.limit.as_secs()
            ),
        )))
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for SendTimeout<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for SendTimeout<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.watch(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.watch(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        self.watch(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test(start_paused = true)]
    async fn a_write_that_waits_past_the_limit_fails_and_progress_resets_the_clock() {
        // A pipe with a 64-byte buffer stands in for a socket whose peer stopped reading.
        let (near, mut far) = tokio::io::duplex(64);
        let mut conn = SendTimeout::new(near, Duration::from_secs(5));
        conn.write_all(&[7; 64]).await.unwrap();
        // The buffer is full: a write waits, and 4 s of waiting is not yet too long…
        let blocked = tokio::time::timeout(Duration::from_secs(4), conn.write_all(&[7; 64])).await;
        assert!(blocked.is_err(), "the write waited");
        // …the peer then reads, and the clock starts again from that progress.
        let mut got = [0u8; 64];
        far.read_exact(&mut got).await.unwrap();
        conn.write_all(&[7; 64]).await.unwrap();
        let start = Instant::now();
        let err = conn.write_all(&[7; 64]).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(err.to_string().contains("limits.send_timeout_secs"), "{err}");
        assert_eq!(start.elapsed().as_secs(), 5, "cut after exactly the limit of waiting");
    }
}
