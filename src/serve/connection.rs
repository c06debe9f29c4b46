//! One connection: hyper's HTTP/1.1 builder with the header-read time-out, until the client
//! closes it or the server stops.

use std::{error::Error as StdError, time::Duration};

use hyper::{body::Incoming, service::HttpService};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpStream, sync::watch};

/// Serves `stream` with `service` until the connection ends. Once `closing` turns true, the
/// request in flight finishes and the connection is closed; the server's shutdown deadline
/// bounds how long that may take, by dropping this future.
pub(super) async fn serve_connection<S>(
    stream: TcpStream,
    service: S,
    header_read_timeout: Duration,
    mut closing: watch::Receiver<bool>,
) where
    S: HttpService<Incoming>,
    S::Error: Into<Box<dyn StdError + Send + Sync>>,
    S::ResBody: 'static,
    <S::ResBody as http_body::Body>::Error: Into<Box<dyn StdError + Send + Sync>>,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    // The timer is what makes the time-out run: without one, hyper ignores it.
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    // The guard `wait_for` returns is not `Send`: dropped before the select resumes.
    let closed = async move {
        let _ = closing.wait_for(|closing| *closing).await;
    };
    let served = tokio::select! {
        served = conn.as_mut() => served,
        () = closed => {
            // Finish the request in flight, then close.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(err) = served {
        tracing::debug!("connection ended: {err}");
    }
}
