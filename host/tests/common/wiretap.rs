//! A TCP relay that records the raw bytes a client sends, so a test can prove what reached the
//! upstream is byte-identical to what a real client sent (without trusting the gateway's word).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Client→server bytes of one connection.
type Recording = Arc<Mutex<Vec<u8>>>;

pub struct Wiretap {
    pub addr: SocketAddr,
    streams: Arc<Mutex<Vec<Recording>>>,
}

/// One HTTP/1.1 request as seen on the wire.
#[derive(Debug)]
pub struct WireRequest {
    pub method: String,
    pub target: String,
    pub body: Vec<u8>,
}

impl Wiretap {
    /// Relays 127.0.0.1:<port> → `to`, recording client→server bytes per connection.
    pub async fn start(to: SocketAddr) -> Wiretap {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let streams: Arc<Mutex<Vec<Recording>>> = Arc::default();
        let all = streams.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let record = Arc::new(Mutex::new(Vec::new()));
                all.lock().unwrap().push(record.clone());
                tokio::spawn(relay(client, to, record));
            }
        });
        Wiretap { addr, streams }
    }

    /// Every request recorded so far, parsed (Content-Length or chunked bodies).
    pub fn requests(&self) -> Vec<WireRequest> {
        let mut out = Vec::new();
        for s in self.streams.lock().unwrap().iter() {
            let bytes = s.lock().unwrap().clone();
            parse_requests(&bytes, &mut out);
        }
        out
    }
}

async fn relay(mut client: TcpStream, to: SocketAddr, record: Recording) {
    let Ok(mut server) = TcpStream::connect(to).await else {
        return;
    };
    let (mut cr, mut cw) = client.split();
    let (mut sr, mut sw) = server.split();
    let up = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            let n = match cr.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            record.lock().unwrap().extend_from_slice(&buf[..n]);
            if sw.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = sw.shutdown().await;
    };
    let down = async {
        let _ = tokio::io::copy(&mut sr, &mut cw).await;
        let _ = cw.shutdown().await;
    };
    tokio::join!(up, down);
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn parse_requests(mut b: &[u8], out: &mut Vec<WireRequest>) {
    while let Some(end) = find(b, b"\r\n\r\n") {
        let head = String::from_utf8_lossy(&b[..end]).into_owned();
        b = &b[end + 4..];
        let mut lines = head.split("\r\n");
        let mut first = lines.next().unwrap_or("").split(' ');
        let method = first.next().unwrap_or("").to_string();
        let target = first.next().unwrap_or("").to_string();
        let header = |name: &str| {
            head.split("\r\n").skip(1).find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
            })
        };
        let mut body = Vec::new();
        if let Some(len) = header("content-length").and_then(|v| v.parse::<usize>().ok()) {
            let len = len.min(b.len());
            body.extend_from_slice(&b[..len]);
            b = &b[len..];
        } else if header("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            loop {
                let Some(eol) = find(b, b"\r\n") else { return };
                let size =
                    usize::from_str_radix(String::from_utf8_lossy(&b[..eol]).split(';').next().unwrap().trim(), 16)
                        .unwrap_or(0);
                b = &b[eol + 2..];
                if size == 0 {
                    let Some(t) = find(b, b"\r\n") else { return };
                    b = &b[t + 2..];
                    break;
                }
                body.extend_from_slice(&b[..size.min(b.len())]);
                b = &b[(size + 2).min(b.len())..];
            }
        }
        out.push(WireRequest { method, target, body });
    }
}
