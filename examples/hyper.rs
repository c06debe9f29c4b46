//! The layer in a plain hyper 1.x server, no axum.
//!
//! ```text
//! RINGYO_WEBHOOK_SECRET=whsec_... cargo run --example hyper
//! ```
//!
//! The layer wraps a `service_fn`; the handler deserializes the verified payload the layer left
//! in the request's extensions with `RingyoEvent::from_extensions`.

use std::{convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{body::Incoming, server::conn::http1, Request, Response};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use ringyo_webhook::{middleware::RequestBody, Event, RingyoEvent, RingyoWebhookLayer};
use tokio::{net::TcpListener, sync::Semaphore};
use tower::{Service, ServiceBuilder};

/// A connection that has not sent a request's headers within this long (one that sends
/// nothing, trickles header lines, or idles between requests) is closed.
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// At most this many connections are served at once; more wait in the accept queue.
const MAX_CONNECTIONS: usize = 1024;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Not `std::env::var(..)?`: its error would print a secret that is not UTF-8.
    let layer = RingyoWebhookLayer::from_env("RINGYO_WEBHOOK_SECRET")?;
    let listener = TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    serve(listener, layer, HEADER_READ_TIMEOUT).await
}

/// Accepts connections forever, each served by the layer around [`handle`], closing those
/// that do not send a request's headers within `header_read_timeout`.
pub(crate) async fn serve(
    listener: TcpListener,
    layer: RingyoWebhookLayer,
    header_read_timeout: Duration,
) -> Result<(), Box<dyn std::error::Error>> {
    let service = ServiceBuilder::new().layer(layer).service_fn(handle);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let slot = Arc::clone(&slots).acquire_owned().await?;
        let (stream, _) = listener.accept().await?;
        let service = TowerToHyperService::new(service.clone());
        tokio::spawn(async move {
            // hyper's header-read timer runs whenever the connection waits for headers.
            let served = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(header_read_timeout)
                .serve_connection(TokioIo::new(stream), service)
                .await;
            if let Err(err) = served {
                eprintln!("connection error: {err}");
            }
            drop(slot);
        });
    }
}

/// Only verified requests get here.
pub(crate) async fn handle(req: Request<RequestBody>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(
        match RingyoEvent::<Event>::from_extensions(req.extensions()) {
            Ok(event) => Response::new(Full::new(Bytes::from(event.kind.to_string()))),
            // The same JSON errors the axum extractor answers with.
            Err(rejection) => rejection.to_response().map(Full::new),
        },
    )
}

// The layered service must be a hyper service over hyper's own request body.
#[allow(dead_code)]
fn assert_hyper_compatible(layer: RingyoWebhookLayer) {
    fn is_service<S: Service<Request<Incoming>>>(_: &S) {}
    is_service(&ServiceBuilder::new().layer(layer).service_fn(handle));
}
