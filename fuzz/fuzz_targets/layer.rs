//! The whole layer, driven with arbitrary headers and a body in arbitrary chunks: an answer
//! every time (no panic, no hang, no 500), and the handler reached only with a valid signature.
#![no_main]

use std::{
    convert::Infallible,
    sync::atomic::{AtomicBool, Ordering},
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use libfuzzer_sys::fuzz_target;
use ringyo_webhook::{middleware::RequestBody, RingyoWebhookLayer, Verifier};
use tower::{service_fn, ServiceBuilder, ServiceExt};

static REACHED: AtomicBool = AtomicBool::new(false);

fuzz_target!(|data: &[u8]| {
    // data = [header length][header bytes][sign?][chunk sizes...] body
    let Some((&header_len, rest)) = data.split_first() else {
        return;
    };
    let (header, rest) = rest.split_at(rest.len().min(usize::from(header_len) % 80));
    let Some((&mode, body)) = rest.split_first() else {
        return;
    };
    let mut layer = RingyoWebhookLayer::new("whsec_fuzz")
        .unwrap()
        .body_limit(4096);
    if mode & 2 == 2 {
        // Any signed body reaches the handler, whatever its timestamp.
        layer = layer.skip_timestamp_check();
    }
    let header = if mode & 1 == 1 {
        // A valid signature over the body: the handler may be reached.
        Verifier::new("whsec_fuzz")
            .unwrap()
            .sign(body)
            .to_string()
            .into_bytes()
    } else {
        header.to_vec()
    };
    let chunk = usize::from(mode >> 2).max(1);
    let chunks: Vec<Result<http_body::Frame<Bytes>, Infallible>> = body
        .chunks(chunk)
        .map(|part| Ok(http_body::Frame::data(Bytes::copy_from_slice(part))))
        .collect();
    let mut request = Request::post("/")
        .body(StreamBody::new(futures_util::stream::iter(chunks)))
        .unwrap();
    if let Ok(value) = http::HeaderValue::from_bytes(&header) {
        request.headers_mut().insert("x-ringyo-signature", value);
    }
    let valid = mode & 1 == 1;
    REACHED.store(false, Ordering::SeqCst);
    let service =
        ServiceBuilder::new()
            .layer(layer)
            .service(service_fn(|_: Request<RequestBody>| async {
                REACHED.store(true, Ordering::SeqCst);
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
            }));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let response = runtime.block_on(async {
        let response = service.oneshot(request).await.unwrap();
        let status = response.status();
        let _ = response.into_body().collect().await;
        status
    });
    assert_ne!(response, StatusCode::INTERNAL_SERVER_ERROR);
    if REACHED.load(Ordering::SeqCst) {
        assert!(valid, "the handler was reached without a valid signature");
    }
});
