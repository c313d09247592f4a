//! A small client for the admin API, used by the CLI while a gateway is running.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::de::DeserializeOwned;
use zeroize::Zeroizing;

use conduit_core::error::{Error, Result};

/// Talks to one gateway's admin listener.
pub struct AdminClient {
    addr: SocketAddr,
    token: Zeroizing<String>,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl AdminClient {
    /// A client for the admin API at `addr`.
    pub fn new(addr: SocketAddr, token: Zeroizing<String>) -> Self {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(Duration::from_secs(2)));
        AdminClient {
            addr,
            token,
            client: Client::builder(TokioExecutor::new()).build(http),
        }
    }

    /// Whether something accepts connections on the admin address (a gateway is running).
    pub async fn is_listening(addr: SocketAddr) -> bool {
        matches!(
            tokio::time::timeout(Duration::from_millis(500), tokio::net::TcpStream::connect(addr)).await,
            Ok(Ok(_))
        )
    }

    /// GETs `path` and copies the answer's body to `out` as it arrives (exports).
    pub async fn stream_to(&self, path: &str, out: &mut dyn std::io::Write) -> Result<()> {
        let req = Request::builder()
            .uri(format!("http://{}{path}", self.addr))
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token.as_str()))
            .body(Full::new(Bytes::new()))
            .map_err(|e| Error::msg(format!("building admin request: {e}")))?;
        let resp = self
            .client
            .request(req)
            .await
            .map_err(|e| Error::msg(format!("calling the admin API at {}: {e}", self.addr)))?;
        let status = resp.status();
        let mut body = resp.into_body();
        if !status.is_success() {
            let bytes = body
                .collect()
                .await
                .map_err(|e| Error::msg(format!("reading the admin API answer: {e}")))?
                .to_bytes();
            let message = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            return Err(Error::msg(format!("{message} (admin API GET {path}: {status})")));
        }
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| Error::msg(format!("the admin API stream broke off: {e}")))?;
            if let Some(data) = frame.data_ref() {
                out.write_all(data)
                    .map_err(|e| Error::msg(format!("writing the output: {e}")))?;
            }
        }
        out.flush().map_err(|e| Error::msg(format!("writing the output: {e}")))
    }

    /// Calls `method path` with an optional JSON body and decodes the JSON answer.
    pub async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<T> {
        let payload = body.map(|b| Bytes::from(b.to_string())).unwrap_or_default();
        let req = Request::builder()
            .method(method.clone())
            .uri(format!("http://{}{path}", self.addr))
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token.as_str()))
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(payload))
            .map_err(|e| Error::msg(format!("building admin request: {e}")))?;
        let resp = tokio::time::timeout(Duration::from_secs(60), self.client.request(req))
            .await
            .map_err(|_| Error::msg(format!("the admin API at {} did not answer within 60 s", self.addr)))?
            .map_err(|e| Error::msg(format!("calling the admin API at {}: {e}", self.addr)))?;
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| Error::msg(format!("reading the admin API answer: {e}")))?
            .to_bytes();
        if !status.is_success() {
            let message = serde_json::from_slice::<serde_json::Value>(&bytes)
                .ok()
                .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
                .unwrap_or_else(|| String::from_utf8_lossy(&bytes).into_owned());
            return Err(Error::msg(format!("{message} (admin API {method} {path}: {status})")));
        }
        serde_json::from_slice(&bytes).map_err(|e| Error::msg(format!("unexpected admin API answer: {e}")))
    }
}
