//! A fault proxy between the gateway and the mock upstream: each connection is relayed, and the
//! upstream's answer is damaged the way networks and providers damage it — closed before a byte,
//! reset after the response head, trickled a byte at a time, cut after N bytes, held back, or held silent.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What happens to the upstream's answer on the next connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Relayed as it is.
    None,
    /// The connection is reset as soon as the request arrives: no byte of an answer.
    ResetBeforeHead,
    /// The response head and `n` more bytes go through, then a reset.
    ResetAfter(usize),
    /// Every byte of the answer is written on its own, with a pause.
    Trickle,
    /// The answer is cut cleanly (FIN) after `n` bytes.
    TruncateAfter(usize),
    /// The request is taken and nothing ever comes back.
    Silent,
    /// The answer is held back this long, then relayed as it is (a slow provider).
    Hold(Duration),
}

pub struct FaultProxy {
    pub addr: SocketAddr,
    fault: Arc<Mutex<Fault>>,
}

impl FaultProxy {
    /// Relays 127.0.0.1:<port> → `to`.
    pub async fn start(to: SocketAddr) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let fault = Arc::new(Mutex::new(Fault::None));
        let current = fault.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                tokio::spawn(relay(client, to, current.clone()));
            }
        });
        FaultProxy { addr, fault }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The fault for connections opened from now on.
    pub fn set(&self, f: Fault) {
        *self.fault.lock().unwrap() = f;
    }
}

/// Closes with a TCP reset (RST), as a crashed peer or a middlebox does.
fn reset(s: TcpStream) {
    let _ = s.set_zero_linger();
    drop(s);
}

/// Relays one connection. The fault is read for each piece of the answer (a pooled connection
/// picks up a fault set after it opened); counts start again when it changes.
async fn relay(mut client: TcpStream, to: SocketAddr, current: Arc<Mutex<Fault>>) {
    let Ok(mut upstream) = TcpStream::connect(to).await else {
        return;
    };
    let mut buf = vec![0u8; 16 * 1024];
    let mut cbuf = vec![0u8; 16 * 1024];
    let mut sent = 0usize;
    let mut head_seen: Option<usize> = None;
    let mut seen = Vec::new();
    let mut fault = Fault::None;
    let end = loop {
        let n = tokio::select! {
            r = client.read(&mut cbuf) => match r {
                Ok(0) | Err(_) => break Fault::None,
                Ok(n) => {
                    if upstream.write_all(&cbuf[..n]).await.is_err() {
                        break Fault::None;
                    }
                    // A held answer is held again for the next request on a pooled connection.
                    if matches!(*current.lock().unwrap(), Fault::Hold(_)) {
                        sent = 0;
                    }
                    continue;
                }
            },
            r = upstream.read(&mut buf) => match r {
                Ok(0) | Err(_) => break Fault::None,
                Ok(n) => n,
            },
        };
        let now = *current.lock().unwrap();
        if now != fault {
            (fault, sent, head_seen) = (now, 0, None);
            seen.clear();
        }
        let chunk = &buf[..n];
        match fault {
            Fault::None => {
                if client.write_all(chunk).await.is_err() {
                    break Fault::None;
                }
            }
            Fault::ResetBeforeHead => break fault,
            Fault::Hold(d) => {
                if sent == 0 {
                    tokio::time::sleep(d).await;
                }
                sent += n;
                if client.write_all(chunk).await.is_err() {
                    break Fault::None;
                }
            }
            Fault::Silent => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                break fault;
            }
            Fault::Trickle => {
                for b in chunk {
                    if client.write_all(std::slice::from_ref(b)).await.is_err() {
                        return;
                    }
                    tokio::time::sleep(Duration::from_micros(200)).await;
                }
            }
            Fault::TruncateAfter(limit) | Fault::ResetAfter(limit) => {
                if head_seen.is_none() {
                    seen.extend_from_slice(chunk);
                    if let Some(i) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                        head_seen = Some(i + 4);
                    }
                }
                let allowed = match (fault, head_seen) {
                    (Fault::ResetAfter(_), Some(head)) => head + limit,
                    (Fault::ResetAfter(_), None) => usize::MAX,
                    _ => limit,
                };
                let take = n.min(allowed.saturating_sub(sent));
                if client.write_all(&chunk[..take]).await.is_err() {
                    break Fault::None;
                }
                sent += take;
                if sent >= allowed {
                    break fault;
                }
            }
        }
    };
    match end {
        Fault::ResetBeforeHead | Fault::ResetAfter(_) => reset(client),
        _ => {
            let _ = client.shutdown().await;
        }
    }
}
