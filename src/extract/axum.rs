//! The axum side: the extractors, and the rejection as a response (feature `axum`).

use axum_core::{
    extract::FromRequestParts,
    response::{IntoResponse, Response},
};
use http::request::Parts;

use super::{event::payload, RingyoEvent, VerifiedPayload};
use crate::{event::FromEventData, rejection::Rejection, verify::DeliveryId};

impl IntoResponse for Rejection {
    fn into_response(self) -> Response {
        self.to_response().map(axum_core::body::Body::from)
    }
}

impl<T: FromEventData, S: Send + Sync> FromRequestParts<S> for RingyoEvent<T> {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Rejection> {
        Self::from_extensions(&parts.extensions)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for VerifiedPayload {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Rejection> {
        payload(&parts.extensions).cloned()
    }
}

/// The delivery's id, for handlers that deduplicate on their own.
impl<S: Send + Sync> FromRequestParts<S> for DeliveryId {
    type Rejection = Rejection;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Rejection> {
        payload(&parts.extensions).map(VerifiedPayload::delivery_id)
    }
}
