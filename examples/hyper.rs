//! The layer in a plain hyper 1.x server, no axum.
//!
//! ```text
//! RINGYO_WEBHOOK_SECRET=whsec_... cargo run --example hyper
//! ```
//!
//! The layer wraps a `service_fn`; the handler reads the [`VerifiedPayload`] the layer left in
//! the request's extensions and deserializes it with [`RingyoEvent::from_payload`].

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{body::Incoming, server::conn::http1, Request, Response, StatusCode};
use hyper_util::{rt::TokioIo, service::TowerToHyperService};
use ringyo_webhook::{Event, RingyoEvent, RingyoWebhookLayer, VerifiedBody, VerifiedPayload};
use tokio::net::TcpListener;
use tower::{Service, ServiceBuilder};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let secret = std::env::var("RINGYO_WEBHOOK_SECRET")?;
    let listener = TcpListener::bind("127.0.0.1:3000").await?;
    println!("listening on http://{}", listener.local_addr()?);
    serve(listener, RingyoWebhookLayer::new(secret)?).await
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
pub(crate) async fn handle(
    req: Request<VerifiedBody>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let Some(payload) = req.extensions().get::<VerifiedPayload>() else {
        // Only reachable if this function is served without the layer.
        return Ok(reply(
            StatusCode::INTERNAL_SERVER_ERROR,
            "layer missing".into(),
        ));
    };
    Ok(match RingyoEvent::<Event>::from_payload(payload) {
        Ok(event) => reply(StatusCode::OK, format!("{} {}", event.kind, payload.len())),
        Err(rejection) => reply(rejection.status(), rejection.code().into()),
    })
}

fn reply(status: StatusCode, text: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = status;
    response
}

// The layered service must be a hyper service over hyper's own request body.
#[allow(dead_code)]
fn assert_hyper_compatible(layer: RingyoWebhookLayer) {
    fn is_service<S: Service<Request<Incoming>>>(_: &S) {}
    is_service(&ServiceBuilder::new().layer(layer).service_fn(handle));
}
