//! The accept loops: MQTT over TLS, HTTPS (the TLS WebSocket endpoint and the service API) and plain HTTP.
//! Each TLS handshake runs in its own task, bounded in time; every connection task is tracked by the hub so
//! shutdown can wait for it. A failed accept or handshake is logged and the loop goes on.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::conn;
use crate::hub::Hub;

/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

async fn accept_tls<F, Fut>(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    hub: Arc<Hub>,
    stop: CancellationToken,
    serve: F,
) where
    F: Fn(tokio_rustls::server::TlsStream<tokio::net::TcpStream>, SocketAddr) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.cancelled() => return,
        };
        let (tcp, remote) = match accepted {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, serve) = (acceptor.clone(), serve.clone());
        hub.tasks.spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => serve(tls, remote).await,
                Ok(Err(e)) => tracing::info!(%remote, "TLS handshake failed: {e}"),
                Err(_) => tracing::info!(%remote, "TLS handshake timed out"),
            }
        });
    }
}

pub(crate) async fn accept_mqtt(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    hub: Arc<Hub>,
    stop: CancellationToken,
) {
    let h = hub.clone();
    accept_tls(listener, acceptor, hub, stop, move |tls, remote| {
        let hub = h.clone();
        async move { conn::serve(hub, conn::Transport::Stream(Box::new(tls)), "mqtt", remote.to_string()).await }
    })
    .await
}

pub(crate) async fn accept_https(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    router: axum::Router,
    hub: Arc<Hub>,
    stop: CancellationToken,
) {
    use hyper_util::rt::{TokioExecutor, TokioIo};
    use hyper_util::service::TowerToHyperService;
    let conn_stop = stop.clone();
    accept_tls(listener, acceptor, hub, stop, move |tls, remote| {
        let router = router.clone().layer(axum::Extension(axum::extract::ConnectInfo(remote)));
        let stop = conn_stop.clone();
        async move {
            let service = TowerToHyperService::new(router);
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => if let Err(e) = r {
                    tracing::debug!(%remote, "HTTPS connection ended: {e}");
                },
                _ = stop.cancelled() => conn.as_mut().graceful_shutdown(),
            }
        }
    })
    .await
}

pub(crate) async fn serve_http(listener: TcpListener, router: axum::Router, stop: CancellationToken) {
    let served = axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(stop.cancelled_owned())
        .await;
    if let Err(e) = served {
        tracing::error!("HTTP server stopped: {e}");
    }
}
