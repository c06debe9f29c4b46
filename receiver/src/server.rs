//! A hardened HTTP/1.1 accept loop on hyper, for the receiver and the crate's hyper example.
//!
//! Not `axum::serve`: it has no header-read time-out, no cap on connections and no deadline
//! on its graceful shutdown, and each of those lets a client that holds connections open
//! (sending nothing, or a header line now and then) exhaust the server or delay its stop.

use std::{error::Error as StdError, future::Future, sync::Arc, time::Duration};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{
    net::TcpListener,
    sync::{watch, Semaphore},
    task::JoinSet,
};
use tower::Service;

/// How long to wait before accepting again after `accept` failed (out of descriptors, say),
/// rather than spin on the error.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How a server treats connections; [`Default`] gives the documented defaults.
///
/// A client that connects and sends nothing, trickles its headers, or keeps an idle
/// connection open is closed after `header_read_timeout` (hyper's timer runs whenever it waits
/// for a request's headers, idle keep-alive included). At most `max_connections` are served at
/// once: more wait in the kernel's accept queue. On shutdown, connections finish their
/// requests for up to `shutdown_deadline`, then are closed, so a stalled client cannot keep
/// the process alive past an orchestrator's patience. (A body that trickles is the request
/// time-out's to cut off: the service's, such as tower-http's `TimeoutLayer`.)
#[derive(Debug, Clone, Copy)]
pub struct ServerLimits {
    /// Default 10 s.
    pub header_read_timeout: Duration,
    /// Default 1 024.
    pub max_connections: usize,
    /// Default 20 s, inside the usual 30 s between SIGTERM and SIGKILL.
    pub shutdown_deadline: Duration,
}

impl Default for ServerLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 1024,
            shutdown_deadline: Duration::from_secs(20),
        }
    }
}

/// Serves `service` on `listener` within `limits` until `shutdown` resolves, then lets open
/// connections finish their requests for up to the shutdown deadline.
pub async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let (closing, close) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        // A slot first: past the cap, new connections wait in the accept queue.
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = Arc::clone(&slots).acquire_owned() => slot.map_err(std::io::Error::other)?,
        };
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                // A connection reset before it was accepted, or out of descriptors: go on.
                Err(err) => {
                    tracing::debug!("accept failed: {err}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        let service = TowerToHyperService::new(service.clone());
        let mut close = close.clone();
        // One connection, HTTP/1.1, until it closes or is closed; it holds its slot till then.
        connections.spawn(async move {
            let _slot = slot;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            // The guard `wait_for` returns is not `Send`: dropped before the select resumes.
            let closing = async move {
                let _ = close.wait_for(|close| *close).await;
            };
            tokio::select! {
                served = conn.as_mut() => {
                    if let Err(err) = served {
                        tracing::debug!("connection ended: {err}");
                    }
                }
                () = closing => {
                    // Finish the request in flight, then close.
                    conn.as_mut().graceful_shutdown();
                    if let Err(err) = conn.await {
                        tracing::debug!("connection ended: {err}");
                    }
                }
            }
        });
    }
    drop(listener);
    let _ = closing.send(true);
    let finished = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(limits.shutdown_deadline, finished)
        .await
        .is_err()
    {
        tracing::warn!(
            open = connections.len(),
            "shutdown deadline passed: closing the connections still open"
        );
        connections.shutdown().await;
    }
    Ok(())
}
