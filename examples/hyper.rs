//! The layer in a plain hyper 1.x server, no axum.
//!
//! ```text
//! RINGYO_WEBHOOK_SECRET=whsec_... cargo run --example hyper
//! ```
//!
//! The layer wraps a `service_fn`; the handler deserializes the verified payload the layer left
//! in the request's extensions with `RingyoEvent::from_extensions`.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{body::Incoming, server::conn::http1, Request, Response};
use hyper_util::{rt::TokioIo, service::TowerToHyperService};
use ringyo_webhook::{middleware::RequestBody, Event, RingyoEvent, RingyoWebhookLayer};
use tokio::net::TcpListener;
use tower::{Service, ServiceBuilder};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // Not `std::env::var(..)?`: its error would print a secret that is not UTF-8.
    let layer = RingyoWebhookLayer::from_env("RINGYO_WEBHOOK_SECRET")?;
    let listener = TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    serve(listener, layer).await
}

/// Accepts connections forever, each served by the layer around [`handle`].
pub(crate) async fn serve(
    listener: TcpListener,
    layer: RingyoWebhookLayer,
) -> Result<(), Box<dyn std::error::Error>> {
    let service = ServiceBuilder::new().layer(layer).service_fn(handle);
    loop {
        let (stream, _) = listener.accept().await?;
        let service = TowerToHyperService::new(service.clone());
        tokio::spawn(async move {
            if let Err(err) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                eprintln!("connection error: {err}");
            }
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
