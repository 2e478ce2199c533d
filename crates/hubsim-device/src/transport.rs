//! The device side of a transport: MQTT over TLS (8883), or MQTT over WebSocket over TLS (443,
//! `/$iothub/websocket?iothub-no-client-cert=true`, subprotocol `mqtt`) — exactly what the SDKs open against
//! IoT Hub (reference §1). Both are adapted to one byte stream, [`Transport`], before the MQTT layer.

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::sync::Arc;
use thiserror::Error;
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

/// Why a transport could not be opened or used.
#[derive(Debug, Error)]
pub enum TransportError {
    #[error("the CA certificate: {0}")]
    Ca(String),
    #[error("TLS settings: {0}")]
    TlsConfig(#[from] rustls::Error),
    #[error("'{0}' is not a valid TLS server name")]
    ServerName(String),
    #[error("connecting to {addr}: {source}")]
    Connect { addr: String, source: std::io::Error },
    #[error("TLS handshake with {addr}: {source}")]
    Handshake { addr: String, source: std::io::Error },
    #[error("WebSocket handshake with {addr}: {source}")]
    WebSocket { addr: String, source: Box<tokio_tungstenite::tungstenite::Error> },
    #[error("sending: {0}")]
    Send(String),
}

/// TLS settings trusting either the given CA (PEM) or the public web roots (the real IoT Hub).
pub fn tls_config(ca_pem: Option<&[u8]>) -> Result<Arc<rustls::ClientConfig>, TransportError> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_pem {
        Some(pem) => {
            for c in CertificateDer::pem_slice_iter(pem) {
                let c = c.map_err(|e| TransportError::Ca(e.to_string()))?;
                roots.add(c).map_err(|e| TransportError::Ca(e.to_string()))?;
            }
            if roots.is_empty() {
                return Err(TransportError::Ca("no certificate in the PEM text".into()));
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
pub enum Transport {
    Tls(Box<TlsStream<TcpStream>>),
    Ws(Box<WebSocketStream<TlsStream<TcpStream>>>),
}

impl Transport {
    /// Opens `host:port` (TLS server name `host`) and, for [`Via::Ws`], runs the WebSocket handshake.
    pub async fn open(
        tls: Arc<rustls::ClientConfig>,
        host: &str,
        port: u16,
        via: Via,
    ) -> Result<Transport, TransportError> {
        let addr = format!("{host}:{port}");
        let tcp = TcpStream::connect((host, port))
            .await
            .map_err(|source| TransportError::Connect { addr: addr.clone(), source })?;
        let _ = tcp.set_nodelay(true);
        let name = ServerName::try_from(host.to_owned()).map_err(|_| TransportError::ServerName(host.to_owned()))?;
        let stream = tokio_rustls::TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .map_err(|source| TransportError::Handshake { addr: addr.clone(), source })?;
        match via {
            Via::Mqtt => Ok(Transport::Tls(Box::new(stream))),
            Via::Ws => {
                let ws_err = |e| TransportError::WebSocket { addr: addr.clone(), source: Box::new(e) };
                let mut req =
                    hubsim_proto::endpoint::websocket_url(host, Some(port)).into_client_request().map_err(ws_err)?;
                req.headers_mut().insert(
                    "Sec-WebSocket-Protocol",
                    tokio_tungstenite::tungstenite::http::HeaderValue::from_static(
                        hubsim_proto::endpoint::WEBSOCKET_SUBPROTOCOL,
                    ),
                );
                let (ws, _) = tokio_tungstenite::client_async(req, stream).await.map_err(ws_err)?;
                Ok(Transport::Ws(Box::new(ws)))
            }
        }
    }

    /// Writes `b` (whole MQTT packets) whole: over WebSocket as binary messages of whole packets, at most
    /// [`WS_MESSAGE_TARGET`](hubsim_proto::packet::WS_MESSAGE_TARGET) bytes each unless one packet is larger.
    pub async fn send(&mut self, b: Bytes) -> Result<(), TransportError> {
        let failed = |e: tokio_tungstenite::tungstenite::Error| TransportError::Send(e.to_string());
        match self {
            Transport::Tls(s) => s.write_all(&b).await.map_err(|e| TransportError::Send(e.to_string())),
            Transport::Ws(ws) => {
                for message in hubsim_proto::packet::ws_messages(b, hubsim_proto::packet::WS_MESSAGE_TARGET) {
                    ws.feed(Message::Binary(message)).await.map_err(failed)?;
                }
                ws.flush().await.map_err(failed)
            }
        }
    }

    /// Next bytes; `None` when the peer closed or the transport failed. Cancel-safe.
    pub async fn recv(&mut self, buf: &mut [u8]) -> Option<Bytes> {
        match self {
            Transport::Tls(s) => match s.read(buf).await {
                Ok(0) | Err(_) => None,
                Ok(n) => Some(Bytes::copy_from_slice(&buf[..n])),
            },
            Transport::Ws(ws) => loop {
                match ws.next().await {
                    Some(Ok(Message::Binary(b))) => return Some(b),
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
                    Some(Ok(Message::Text(_) | Message::Close(_))) | Some(Err(_)) | None => return None,
                }
            },
        }
    }
}
