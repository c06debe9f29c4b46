//! [`serve`]: the accept loop, its connection cap, and the shutdown with a deadline.

use std::{error::Error as StdError, future::Future, io, sync::Arc, time::Duration};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper_util::service::TowerToHyperService;
use tokio::{
    net::TcpListener,
    sync::{watch, Semaphore},
    task::JoinSet,
};
use tower_service::Service;

use super::{connection::serve_connection, ServerLimits};

/// How long to wait before accepting again after `accept` failed (out of descriptors, say),
/// rather than spin on the error.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `service` over HTTP/1.1 on `listener` within `limits` until `shutdown` resolves,
/// then lets open connections finish their requests for up to the shutdown deadline.
///
/// It takes what `axum::serve` takes (a listener and a router, or any tower service of
/// `Request<Incoming>`) and adds the [`ServerLimits`]: a header-read time-out, a cap on
/// connections and a deadline on the graceful shutdown. Each connection runs on a task of its
/// own with hyper's HTTP/1.1 builder; HTTP/2 is not served (Ringyo delivers over HTTP/1.1).
///
/// - A connection that has not sent a request's headers within the header-read time-out is
///   closed (an idle client may first get hyper's 408).
/// - Past `max_connections`, the next connection is accepted only once one closes.
/// - An `accept` that fails (a connection reset before it was accepted, or out of file
///   descriptors) is logged at debug level and retried after 100 ms.
/// - Once `shutdown` resolves, the listener is closed, each connection finishes the request in
///   flight and closes, and past the shutdown deadline the rest are closed (logged as a
///   warning with their count). `serve` returns when all are closed.
///
/// ```
/// use axum::{routing::post, Router};
/// use ringyo_webhook::{
///     serve::{serve, ServerLimits},
///     Event, RingyoEvent, RingyoWebhookLayer,
/// };
///
/// async fn handle(event: RingyoEvent<Event>) {
///     println!("{} {}", event.delivery_id, event.kind);
/// }
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let layer = RingyoWebhookLayer::from_env("RINGYO_WEBHOOK_SECRET")?;
/// let app = Router::new().route("/webhooks/ringyo", post(handle).route_layer(layer));
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
/// // Any future: here Ctrl-C. An orchestrator sends SIGTERM, so wait for that too.
/// let shutdown = async {
///     let _ = tokio::signal::ctrl_c().await;
/// };
/// serve(listener, app, ServerLimits::default(), shutdown).await?;
/// # Ok(())
/// # }
/// ```
///
/// # Errors
///
/// None today: a failed `accept` is retried and a failed connection ends only itself. The
/// result is `axum::serve`'s, an [`io::Result`], so that a call replaces
/// `axum::serve(listener, app).await?` as it stands, and so that an error of the listener can
/// stop the server in a later version without a breaking change.
pub async fn serve<S, B>(
    listener: TcpListener,
    service: S,
    limits: ServerLimits,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    B: http_body::Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    let (closing, closed) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        // A slot first: past the cap, new connections wait in the accept queue.
        let slot = tokio::select! {
            () = &mut shutdown => break,
            // An error only if the semaphore were closed, which nothing does.
            slot = Arc::clone(&slots).acquire_owned() => slot.map_err(io::Error::other)?,
        };
        let stream = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    tracing::debug!("accept failed: {err}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        let service = TowerToHyperService::new(service.clone());
        let closed = closed.clone();
        // The connection holds its slot until it ends.
        connections.spawn(async move {
            serve_connection(stream, service, limits.header_read_timeout, closed).await;
            drop(slot);
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
