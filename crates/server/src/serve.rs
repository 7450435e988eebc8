//! Accepting connections: TLS (or plain HTTP behind a proxy), HTTP/1.1 and HTTP/2, and
//! graceful shutdown that stops accepting, lets in-flight requests finish within a bound,
//! then returns.
//!
//! Written over hyper-util rather than `axum::serve` because axum's helper cannot
//! terminate TLS itself, and this loop needs the peer address, handshake timeouts and a
//! drain bound.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// A client gets this long to complete the TLS handshake, and to send request headers.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A bound listener and what it serves.
#[derive(Debug)]
pub struct Server {
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: Router,
    grace: Duration,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every in-flight connection finished within the grace period.
    Clean,
    /// The grace period ran out and remaining connections were dropped.
    TimedOut,
}

impl Server {
    pub async fn bind(
        addr: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
        app: Router,
        grace: Duration,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Self::from_listener(listener, tls, app, grace))
    }

    /// Serves on a listener that is already bound.
    pub fn from_listener(
        listener: TcpListener,
        tls: Option<Arc<rustls::ServerConfig>>,
        app: Router,
        grace: Duration,
    ) -> Self {
        Self { listener, tls, app, grace }
    }

    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `shutdown` resolves, then drains.
    pub async fn run(self, shutdown: impl Future<Output = ()>) -> Drained {
        let graceful = GracefulShutdown::new();
        let acceptor = self.tls.map(TlsAcceptor::from);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => break,
                accepted = self.listener.accept() => {
                    let (tcp, peer) = match accepted {
                        Ok(x) => x,
                        Err(e) => {
                            // EMFILE and friends: back off briefly instead of spinning.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    let _ = tcp.set_nodelay(true);
                    let app = self.app.clone();
                    let acceptor = acceptor.clone();
                    let watcher = graceful.watcher();
                    tokio::spawn(async move {
                        let svc = app.map_request(move |mut req: http::Request<hyper::body::Incoming>| {
                            req.extensions_mut().insert(ConnectInfo(peer));
                            req
                        });
                        let svc = TowerToHyperService::new(svc);
                        let mut builder = auto::Builder::new(TokioExecutor::new());
                        builder
                            .http1()
                            .timer(TokioTimer::new())
                            .header_read_timeout(HANDSHAKE_TIMEOUT);
                        let result = match acceptor {
                            Some(acceptor) => {
                                let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                                    Ok(Ok(s)) => s,
                                    Ok(Err(e)) => {
                                        tracing::debug!(error = %e, "TLS handshake refused");
                                        return;
                                    }
                                    Err(_) => return,
                                };
                                let conn = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc);
                                watcher.watch(conn.into_owned()).await
                            }
                            None => {
                                let conn = builder.serve_connection_with_upgrades(TokioIo::new(tcp), svc);
                                watcher.watch(conn.into_owned()).await
                            }
                        };
                        if let Err(e) = result {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                    });
                }
            }
        }
        drop(self.listener);
        tracing::info!(
            grace_secs = self.grace.as_secs(),
            "shutting down: draining in-flight requests"
        );
        tokio::select! {
            () = graceful.shutdown() => Drained::Clean,
            () = tokio::time::sleep(self.grace) => Drained::TimedOut,
        }
    }
}

/// Resolves on SIGTERM or SIGINT.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let term = signal(SignalKind::terminate());
    let int = signal(SignalKind::interrupt());
    match (term, int) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => tracing::info!("SIGTERM received"),
                _ = int.recv() => tracing::info!("SIGINT received"),
            }
        }
        _ => {
            tracing::error!("cannot install signal handlers; falling back to Ctrl-C only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
