//! A tonic gRPC server that also hosts the webhook route.
//!
//! ```text
//! RINGYO_WEBHOOK_SECRET=whsec_... cargo run --example tonic
//! ```
//!
//! tonic's routes are an axum router, so the webhook route joins them with the layer on its
//! method router, exactly as in plain axum; gRPC services are untouched by it. HTTP/1.1 is
//! enabled because webhook senders use it, while gRPC keeps using HTTP/2.
//!
//! tonic's server has no setting for a cap on connections or a deadline on its graceful
//! shutdown, so both are added around it here ([`Limits`]); its HTTP/1.1 header-read time-out
//! is hyper's default, 30 s, and not configurable, which the maximum connection age bounds too.

use std::{
    future::Future,
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use axum::{http::StatusCode, routing::post};
use futures_util::Stream;
use ringyo_receiver::signal;
use ringyo_webhook::{RingyoEvent, RingyoWebhookLayer};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
};
use tonic::{
    service::Routes,
    transport::{server::Connected, Server},
};

/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long to wait before accepting again after `accept` failed (out of descriptors, say),
/// rather than spin on the error.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// How the server treats connections; [`Default`] gives the documented defaults.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// Every connection is closed this long after it opened, so a client that sends nothing,
    /// trickles its headers or idles cannot hold one for longer. Webhook deliveries are short;
    /// gRPC clients reconnect. Default 30 s.
    max_connection_age: Duration,
    /// How long a request in flight may still finish once its connection reached its age.
    /// Default 10 s.
    connection_grace: Duration,
    /// At most this many connections are served at once; more wait in the kernel's accept
    /// queue. Default 1 024.
    max_connections: usize,
    /// On shutdown, how long open connections may finish their requests before the server
    /// stops regardless. Default 20 s, inside the usual 30 s between SIGTERM and SIGKILL.
    shutdown_deadline: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_connection_age: Duration::from_secs(30),
            connection_grace: Duration::from_secs(10),
            max_connections: 1024,
            shutdown_deadline: Duration::from_secs(20),
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt::init();
    // Not `std::env::var(..)?`: its error would print a secret that is not UTF-8.
    let layer = RingyoWebhookLayer::from_env("RINGYO_WEBHOOK_SECRET")?;
    let listener = TcpListener::bind("127.0.0.1:3000").await?;
    println!(
        "gRPC and POST /webhooks/ringyo on {}",
        listener.local_addr()?
    );
    serve(
        listener,
        layer,
        Limits::default(),
        signal::shutdown_signal(),
    )
    .await?;
    Ok(())
}

/// Serves the gRPC health service and the webhook route on `listener` within `limits` until
/// `shutdown` resolves, then lets open connections finish for up to the shutdown deadline.
async fn serve(
    listener: TcpListener,
    layer: RingyoWebhookLayer,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let (_reporter, health) = tonic_health::server::health_reporter();
    let routes = Routes::new(health)
        .into_axum_router()
        .route("/webhooks/ringyo", post(webhook).route_layer(layer));
    let (stopping, mut stopped) = tokio::sync::watch::channel(false);
    let server = Server::builder()
        .accept_http1(true)
        .timeout(REQUEST_TIMEOUT)
        .max_connection_age(limits.max_connection_age)
        .max_connection_age_grace(limits.connection_grace)
        .add_routes(Routes::from(routes))
        .serve_with_incoming_shutdown(capped(listener, limits.max_connections), async move {
            shutdown.await;
            let _ = stopping.send(true);
        });
    // tonic's graceful shutdown waits for every connection; this bounds the wait.
    let deadline = async move {
        let _ = stopped.wait_for(|stopped| *stopped).await;
        tokio::time::sleep(limits.shutdown_deadline).await;
    };
    tokio::select! {
        served = server => served,
        () = deadline => {
            tracing::warn!("shutdown deadline passed: stopping with connections still open");
            Ok(())
        }
    }
}

async fn webhook(event: RingyoEvent) -> (StatusCode, String) {
    (StatusCode::OK, event.kind.to_string())
}

/// The connections `listener` accepts, at most `max` open at once: the next one is accepted
/// only once an open one has closed.
fn capped(listener: TcpListener, max: usize) -> impl Stream<Item = io::Result<Slotted>> {
    let slots = Arc::new(Semaphore::new(max.max(1)));
    futures_util::stream::unfold(listener, move |listener| {
        let slots = Arc::clone(&slots);
        async move {
            // The semaphore is never closed.
            let slot = slots.acquire_owned().await.ok()?;
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        let _ = stream.set_nodelay(true);
                        return Some((
                            Ok(Slotted {
                                stream,
                                _slot: slot,
                            }),
                            listener,
                        ));
                    }
                    Err(err) => {
                        tracing::debug!("accept failed: {err}");
                        tokio::time::sleep(ACCEPT_BACKOFF).await;
                    }
                }
            }
        }
    })
}

/// A connection that holds one of the server's slots until tonic drops it.
struct Slotted {
    stream: TcpStream,
    _slot: OwnedSemaphorePermit,
}

impl Connected for Slotted {
    type ConnectInfo = <TcpStream as Connected>::ConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        self.stream.connect_info()
    }
}

impl AsyncRead for Slotted {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Slotted {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use std::{future::pending, time::Duration};

    use ringyo_test_support as support;
    use serde_json::json;
    use support::{deliver, envelope, sign};
    use tonic_health::pb::{
        health_check_response::ServingStatus, health_client::HealthClient, HealthCheckRequest,
    };

    use super::*;

    #[tokio::test]
    async fn tonic_server_hosts_webhook_route_beside_grpc() {
        let (listener, addr) = support::local_listener().await;
        tokio::spawn(async move {
            serve(listener, support::layer(), Limits::default(), pending())
                .await
                .unwrap()
        });

        let body = envelope("appointment.created", json!({"id": "appt_1"}));
        let (status, _, _) =
            deliver(addr, "/webhooks/ringyo", body.clone(), Some(&sign(&body))).await;
        assert_eq!(status, 200);
        let (status, json, _) = deliver(addr, "/webhooks/ringyo", body, None).await;
        assert_eq!(status, 401);
        assert_eq!(json["error"], "missing_signature");

        // The gRPC service beside it is not behind the layer.
        let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .unwrap();
        let mut health = HealthClient::new(channel);
        let reply = health
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await
            .unwrap();
        assert_eq!(reply.into_inner().status, ServingStatus::Serving as i32);
    }

    /// Every connection is closed at its maximum age (and grace): one that sends nothing or
    /// trickles its headers is gone by then, and a webhook is served meanwhile.
    #[tokio::test]
    async fn tonic_example_closes_stalled_connections_at_their_maximum_age() {
        let (listener, addr) = support::local_listener().await;
        let limits = Limits {
            max_connection_age: Duration::from_millis(300),
            connection_grace: Duration::from_millis(300),
            ..Limits::default()
        };
        tokio::spawn(async move {
            serve(listener, support::layer(), limits, pending())
                .await
                .unwrap()
        });
        support::stalled_connections_are_closed_while_a_delivery_is_served(
            addr,
            "/webhooks/ringyo",
            Duration::from_secs(5),
        )
        .await;
    }

    /// Past the cap, a connection waits for a slot rather than being served beside the others;
    /// the slot frees once the connection holding it reaches its maximum age.
    #[tokio::test]
    async fn tonic_example_past_the_connection_cap_a_client_waits_for_a_slot_and_is_then_served() {
        let (listener, addr) = support::local_listener().await;
        let limits = Limits {
            max_connection_age: Duration::from_millis(800),
            connection_grace: Duration::from_millis(200),
            max_connections: 1,
            ..Limits::default()
        };
        tokio::spawn(async move {
            serve(listener, support::layer(), limits, pending())
                .await
                .unwrap()
        });
        let silent = TcpStream::connect(addr).await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        let started = std::time::Instant::now();
        let body = envelope("credits.low", json!({}));
        let (status, _, _) =
            deliver(addr, "/webhooks/ringyo", body.clone(), Some(&sign(&body))).await;
        assert_eq!(status, 200);
        assert!(
            started.elapsed() >= Duration::from_millis(600),
            "served only once the slot was free: {:?}",
            started.elapsed()
        );
        drop(silent);
    }

    /// A client stalled mid-body holds no shutdown past its deadline.
    #[tokio::test]
    async fn tonic_example_stops_by_its_shutdown_deadline_despite_a_stalled_client() {
        let deadline = Duration::from_millis(500);
        let (listener, addr) = support::local_listener().await;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let limits = Limits {
            shutdown_deadline: deadline,
            ..Limits::default()
        };
        let served = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            serve(listener, support::layer(), limits, shutdown)
                .await
                .map_err(|err| err.to_string())
        });
        support::stops_by_its_deadline_despite_a_stalled_client(addr, stop, served, deadline).await;
    }
}
