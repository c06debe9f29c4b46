//! [`VerifiedPayload`]: the verified bytes of a delivery, as the layer leaves them.

use std::fmt;

use bytes::Bytes;

use crate::{
    event::{envelope::Head, Subject},
    secrets::Tenant,
    verify::{DeliveryId, Verified},
};

/// The raw body of a delivery whose signature verified, exactly as received.
///
/// The layer puts it in the request's extensions, and only the layer can make one, so holding
/// a `VerifiedPayload` proves the bytes were verified. It shares memory with the request body:
/// the body is buffered once.
///
/// With the `axum` feature it is also an extractor, for handlers that store payloads as
/// received, or that want the bytes even when their event type does not deserialize:
///
/// ```
/// use axum::http::StatusCode;
/// use ringyo_webhook::{Rejection, RingyoEvent, VerifiedPayload};
///
/// async fn handler(
///     payload: VerifiedPayload,
///     event: Result<RingyoEvent, Rejection>,
/// ) -> StatusCode {
///     match event {
///         Ok(event) => println!("{} ({} bytes)", event.kind, payload.len()),
///         // Keep the verified bytes to look at later rather than lose the delivery.
///         Err(_) => store_for_later(payload.bytes().clone()),
///     }
///     StatusCode::OK
/// }
/// # fn store_for_later(_: bytes::Bytes) {}
/// # let _: axum::routing::MethodRouter = axum::routing::post(handler);
/// ```
///
/// Used on a route without [`RingyoWebhookLayer`](crate::RingyoWebhookLayer), the extractor
/// refuses with 500 `webhook_layer_missing` rather than hand over unverified bytes.
///
/// Its bytes are the same allocation as the request body the inner service receives
/// ([`RequestBody`](crate::middleware::RequestBody)): reading both costs no copy.
#[derive(Clone)]
pub struct VerifiedPayload {
    bytes: Bytes,
    verified: Verified,
    tenant: Option<Tenant>,
    /// What the layer read of the envelope while checking freshness.
    head: Head,
}

impl VerifiedPayload {
    pub(crate) fn new(
        bytes: Bytes,
        verified: Verified,
        tenant: Option<Tenant>,
        head: Head,
    ) -> Self {
        Self {
            bytes,
            verified,
            tenant,
            head,
        }
    }

    /// The envelope's `event` and `timestamp`, as the layer read them.
    pub(crate) fn head(&self) -> &Head {
        &self.head
    }

    /// The verified bytes. Cloning the `Bytes` is cheap and copies nothing.
    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    /// Takes the verified bytes.
    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    /// The body length in bytes.
    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    /// Whether the body is empty.
    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Which configured secret matched: 0 for the first, in the order they were added.
    ///
    /// When rotating secrets, an old secret can be removed once no delivery matches it.
    pub fn secret_index(&self) -> usize {
        self.verified.secret_index()
    }

    /// The delivery's identity, the same for every retry of it: a key for your own
    /// idempotency. See [`DeliveryId`].
    pub fn delivery_id(&self) -> DeliveryId {
        self.verified.delivery_id()
    }

    /// The tenant whose secret matched, with a layer built on
    /// [`Tenants`](crate::secrets::Tenants); `None` otherwise.
    pub fn tenant(&self) -> Option<&Tenant> {
        self.tenant.as_ref()
    }

    /// What the event is about (the call, appointment, agent or phone number its `data`
    /// names), as the layer read it, without parsing the body again; see
    /// [`Subject`](crate::Subject). For a lock or a queue of your own per call, say.
    pub fn subject(&self) -> Option<Subject> {
        self.head().subject()
    }
}

impl AsRef<[u8]> for VerifiedPayload {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl fmt::Debug for VerifiedPayload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the bytes: a payload may hold phone numbers and transcripts.
        f.debug_struct("VerifiedPayload")
            .field("len", &self.bytes.len())
            .field("tenant", &self.tenant)
            .field("secret_index", &self.secret_index())
            .field("delivery_id", &self.delivery_id())
            .finish()
    }
}
