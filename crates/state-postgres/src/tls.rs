//! TLS to PostgreSQL through rustls: the server's certificate is verified against the configured
//! CA file (or the system's roots) and the host name in the URL — `verify-full`, the only mode
//! besides `disable`. No channel binding is offered (SCRAM still authenticates both sides'
//! knowledge of the password; the certificate check is what binds the server).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use rustls::ClientConfig;
use rustls_pki_types::ServerName;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_postgres::tls::{ChannelBinding, MakeTlsConnect, TlsConnect};

use conduit_core::error::{Error, Result};

/// Makes a verifying rustls connection per PostgreSQL connection.
#[derive(Clone)]
pub struct MakeRustls(Arc<ClientConfig>);

impl MakeRustls {
    /// Trusts the certificates in `ca_file` (PEM), or the system's roots when `None`.
    pub fn new(ca_file: Option<&std::path::Path>) -> Result<MakeRustls> {
        let mut roots = rustls::RootCertStore::empty();
        match ca_file {
            Some(path) => {
                let shown = path.display().to_string();
                let pem = std::fs::read(path)
                    .map_err(|e| Error::msg(format!("reading the PostgreSQL CA file {shown:?}: {e}")))?;
                let mut added = 0;
                for cert in rustls_pki_types::pem::PemObject::pem_slice_iter(&pem) {
                    let cert: rustls_pki_types::CertificateDer<'static> =
                        cert.map_err(|e| Error::msg(format!("the PostgreSQL CA file {shown:?} is not PEM: {e:?}")))?;
                    roots
                        .add(cert)
                        .map_err(|e| Error::msg(format!("a certificate in {shown:?} is not usable: {e}")))?;
                    added += 1;
                }
                if added == 0 {
                    return Err(Error::msg(format!(
                        "the PostgreSQL CA file {shown:?} holds no certificate; give the PEM of the CA that signed the server's"
                    )));
                }
            }
            None => {
                for cert in rustls_native_certs::load_native_certs().certs {
                    let _ = roots.add(cert);
                }
                if roots.is_empty() {
                    return Err(Error::msg(
                        "no system CA certificates were found to verify PostgreSQL's; set [store] ca_file",
                    ));
                }
            }
        }
        let config = ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| Error::msg(format!("TLS setup: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(MakeRustls(Arc::new(config)))
    }
}

impl<S> MakeTlsConnect<S> for MakeRustls
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type TlsConnect = RustlsConnect;
    type Error = io::Error;

    fn make_tls_connect(&mut self, domain: &str) -> io::Result<RustlsConnect> {
        let name = ServerName::try_from(domain.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{domain:?}: {e}")))?;
        Ok(RustlsConnect {
            config: self.0.clone(),
            name,
        })
    }
}

/// One connection's TLS handshake.
pub struct RustlsConnect {
    config: Arc<ClientConfig>,
    name: ServerName<'static>,
}

impl<S> TlsConnect<S> for RustlsConnect
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    type Stream = RustlsStream<S>;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<RustlsStream<S>>> + Send>>;

    fn connect(self, stream: S) -> Self::Future {
        let connector = tokio_rustls::TlsConnector::from(self.config);
        Box::pin(async move { Ok(RustlsStream(connector.connect(self.name, stream).await?)) })
    }
}

/// A TLS stream to PostgreSQL.
pub struct RustlsStream<S>(tokio_rustls::client::TlsStream<S>);

impl<S: AsyncRead + AsyncWrite + Unpin> tokio_postgres::tls::TlsStream for RustlsStream<S> {
    fn channel_binding(&self) -> ChannelBinding {
        ChannelBinding::none()
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for RustlsStream<S> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for RustlsStream<S> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}
