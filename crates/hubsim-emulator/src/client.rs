//! The device side of a transport, for `hubsim simulate`: MQTT over TLS, or MQTT over WebSocket over TLS with
//! subprotocol `mqtt` — exactly what the SDKs open against IoT Hub.

use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Which transport to open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// MQTT over TLS (8883).
    Mqtt,
    /// MQTT over WebSocket over TLS (443, `/$iothub/websocket`).
    Ws,
}

/// TLS settings trusting either the given CA (PEM) or the public web roots (the real IoT Hub).
pub fn tls_config(ca_pem: Option<&[u8]>) -> Result<Arc<rustls::ClientConfig>> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            for c in CertificateDer::pem_slice_iter(pem) {
                roots.add(c.context("parsing the CA certificate")?).context("adding the CA certificate")?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(cfg))
}

/// An open device transport.
pub enum ClientTransport {
    Tls(Box<TlsStream<TcpStream>>),
    Ws(Box<WebSocketStream<TlsStream<TcpStream>>>),
}

impl ClientTransport {
    /// Opens `host:port` (TLS server name `host`).
    pub async fn open(tls: Arc<rustls::ClientConfig>, host: &str, port: u16, via: Via) -> Result<ClientTransport> {
        let tcp = TcpStream::connect((host, port)).await.with_context(|| format!("connecting to {host}:{port}"))?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(host.to_owned()).map_err(|e| anyhow!("bad host name {host}: {e}"))?;
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .with_context(|| format!("TLS with {host}:{port}"))?;
        match via {
            Via::Mqtt => Ok(ClientTransport::Tls(Box::new(stream))),
            Via::Ws => {
                let mut req = format!("wss://{host}:{port}/$iothub/websocket?iothub-no-client-cert=true")
                    .into_client_request()?;
                req.headers_mut().insert("Sec-WebSocket-Protocol", "mqtt".parse()?);
                let (ws, _) = tokio_tungstenite::client_async(req, stream).await.context("WebSocket handshake")?;
                Ok(ClientTransport::Ws(Box::new(ws)))
            }
        }
    }

    pub async fn send(&mut self, b: Bytes) -> Result<()> {
        match self {
            ClientTransport::Tls(s) => s.write_all(&b).await?,
            ClientTransport::Ws(ws) => ws.send(Message::Binary(b)).await?,
        }
        Ok(())
    }

    /// Next bytes; `None` when the peer closed. Cancel-safe.
    pub async fn recv(&mut self, buf: &mut [u8]) -> Option<Bytes> {
        match self {
            ClientTransport::Tls(s) => match s.read(buf).await {
                Ok(0) | Err(_) => None,
                Ok(n) => Some(Bytes::copy_from_slice(&buf[..n])),
            },
            ClientTransport::Ws(ws) => loop {
                match ws.next().await {
                    Some(Ok(Message::Binary(b))) => return Some(b),
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                    _ => return None,
                }
            },
        }
    }
}
