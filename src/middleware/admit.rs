//! The admission decision: which checks run, in which order, and what each answers. Plain,
//! synchronous functions, unit-tested without I/O; the [future](super::future) only carries
//! their verdicts from one state to the next.
//!
//! 1. [`precheck`], before any body byte is read: the signature header's shape, then the
//!    announced length of a body its client sends only when asked.
//! 2. [`admit`], once the body is in: the signature over its bytes, then freshness, then what
//!    to ask the delivery store.
//! 3. [`claim_verdict`], once the store has answered: run the handler, answer as a duplicate,
//!    or refuse.
//! 4. [`is_handled`], once the handler has answered: record the delivery, or release it.

use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{header, HeaderName, HeaderValue, Request, Response};
use http_body::Body;

use super::{
    buffer::too_large,
    config::{Config, RequestSecrets, StoreFailure},
};
use crate::{
    extract::VerifiedPayload,
    rejection::{Rejection, RejectionKind},
    replay::{Claim, ClaimCall, ClaimGuard, ClaimToken, DeliveryStore, StoreError},
    verify::{after, check, DeliveryId, Signature},
};

/// The header on a 200 that answers an already handled delivery without running the handler:
/// `x-webhook-duplicate: true`. See
/// [`RingyoWebhookLayer::delivery_store`](crate::RingyoWebhookLayer::delivery_store).
///
/// ```
/// assert_eq!(ringyo_webhook::middleware::DUPLICATE_HEADER, "x-webhook-duplicate");
/// ```
pub const DUPLICATE_HEADER: HeaderName = HeaderName::from_static("x-webhook-duplicate");

/// The checks that need no body: a missing, malformed or conflicting signature header (401),
/// then, for a client that waits to be asked for its body (`Expect: 100-continue`), a
/// `Content-Length` (or a body's own lower bound) over the limit (413).
///
/// Any other body announced over the limit is read and thrown away before the 413 (see
/// [`buffer`](super::buffer)): its client may be sending it already, and would find its
/// connection reset. One that waits for `100 Continue` sends nothing until asked, and hyper
/// asks only when the body is read, so it can be answered at once.
pub(super) fn precheck<B: Body>(req: &Request<B>, limit: usize) -> Result<Signature, Rejection> {
    let signature = Signature::from_headers(req.headers())?;
    let header = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok()?.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let declared = header.max(req.body().size_hint().lower());
    let waits = req
        .headers()
        .get(header::EXPECT)
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    if waits && declared > limit as u64 {
        return Err(too_large(limit));
    }
    Ok(signature)
}

/// A delivery that passed every check on its bytes.
#[derive(Debug)]
pub(super) struct Admitted {
    /// The verified bytes, and what verification found (the event's name among it).
    pub(super) payload: VerifiedPayload,
    /// What to claim first, with a delivery store.
    pub(super) claim: Option<ClaimTicket>,
}

/// A claim to ask the delivery store for, and what it needs once granted.
pub(super) struct ClaimTicket {
    pub(super) store: Arc<dyn DeliveryStore>,
    pub(super) id: DeliveryId,
    /// This request's, so the store settles only its own claim.
    pub(super) token: ClaimToken,
    pub(super) now: DateTime<Utc>,
    pub(super) lease_until: DateTime<Utc>,
    /// How long a handled delivery is remembered: while a copy could still pass freshness.
    pub(super) keep_until: DateTime<Utc>,
}

impl ClaimTicket {
    /// Asks the store for the claim.
    pub(super) fn claim(&self) -> ClaimCall {
        ClaimCall::new(
            Arc::clone(&self.store),
            self.id,
            self.token,
            self.now,
            self.lease_until,
        )
    }

    /// The guard that holds the granted claim while the handler runs.
    pub(super) fn into_guard(self) -> ClaimGuard {
        ClaimGuard::new(self.store, self.id, self.token, self.keep_until)
    }
}

impl std::fmt::Debug for ClaimTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClaimTicket")
            .field("id", &self.id)
            .field("lease_until", &self.lease_until)
            .field("keep_until", &self.keep_until)
            .finish_non_exhaustive()
    }
}

/// The checks on the whole body: the signature over its exact bytes (401), then the freshness
/// of its signed `timestamp` (401 `timestamp_out_of_tolerance`; 422 `invalid_timestamp` when
/// there is none, 422 `invalid_envelope`, `json_too_deep` or `number_out_of_range`, or 400
/// `invalid_json`, when the body is no envelope the full parse reads), then its `event` (422
/// `invalid_envelope`); then, with a store, the claim to ask for.
pub(super) fn admit(
    config: &Config,
    bytes: Bytes,
    signature: &Signature,
    secrets: RequestSecrets,
) -> Result<Admitted, Rejection> {
    let verified = check(secrets.keys(config), &bytes, signature)?;
    let tenant = match secrets {
        RequestSecrets::Fixed => None,
        RequestSecrets::Found(resolved) => resolved.into_tenant(),
    };
    let verified = tenant
        .as_ref()
        .map_or(verified, |tenant| verified.for_tenant(tenant.as_str()));
    let now = config.verifier.now();
    let fresh = config.verifier.check_fresh(&bytes, now)?;
    // What is let in must be what the inbox's worker can read later: a 2xx is the last Ringyo
    // hears of a delivery. With the timestamp check off too.
    fresh.head.readable(&bytes)?;
    let claim = config.store.as_ref().map(|store| ClaimTicket {
        store: Arc::clone(store),
        id: verified.delivery_id(),
        token: ClaimToken::new(),
        now,
        lease_until: after(now, config.claim_lease),
        keep_until: fresh.keep_until,
    });
    Ok(Admitted {
        payload: VerifiedPayload::new(bytes, verified, tenant, fresh.head),
        claim,
    })
}

/// What the delivery store's answer to a claim means.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum ClaimVerdict {
    /// The claim is ours: run the handler.
    Run,
    /// The store failed and the layer runs handlers unchecked then: run it without a claim.
    RunUnclaimed,
    /// Handled before: answer 200 with [`DUPLICATE_HEADER`], without running the handler.
    Duplicate,
    /// Being handled right now (409), or the store failed (503): both retryable.
    Refuse(Rejection),
}

pub(super) fn claim_verdict(
    claim: &Result<Claim, StoreError>,
    on_failure: StoreFailure,
) -> ClaimVerdict {
    match (claim, on_failure) {
        (Ok(Claim::Claimed), _) => ClaimVerdict::Run,
        (Ok(Claim::Handled), _) => ClaimVerdict::Duplicate,
        (Ok(Claim::InFlight), _) => ClaimVerdict::Refuse(RejectionKind::DeliveryInProgress.into()),
        (Err(_), StoreFailure::RunHandler) => ClaimVerdict::RunUnclaimed,
        (Err(_), _) => ClaimVerdict::Refuse(RejectionKind::StoreUnavailable.into()),
    }
}

/// The answer to a delivery handled before.
pub(super) fn duplicate_response() -> Response<Bytes> {
    let mut response = Response::new(Bytes::new());
    response
        .headers_mut()
        .insert(DUPLICATE_HEADER, HeaderValue::from_static("true"));
    response
}

/// Whether the handler's answer records the delivery as handled: a 2xx. Anything else (an
/// error status, or the service's own error) releases it, so Ringyo's retry runs it again.
pub(super) fn is_handled<B, E>(output: &Result<Response<B>, E>) -> bool {
    output
        .as_ref()
        .is_ok_and(|response| response.status().is_success())
}

#[cfg(test)]
mod tests {
    use http::StatusCode;

    use super::*;
    use crate::event::EventKind;
    use crate::{
        replay::MemoryDeliveryStore,
        secrets::Resolved,
        verify::{Secrets, Verifier},
    };

    const SECRET: &str = "whsec_test";

    fn config() -> Config {
        let now: DateTime<Utc> = "2024-01-15T10:35:00Z".parse().unwrap();
        Config::new(Verifier::new(SECRET).unwrap().clock(move || now))
    }

    fn signature(body: &[u8]) -> Signature {
        Verifier::new(SECRET).unwrap().sign(body)
    }

    /// Admits `body`, signed over `signed`, with the layer's fixed secrets.
    fn admit_fixed(
        config: &Config,
        body: &'static [u8],
        signed: &[u8],
    ) -> Result<Admitted, Rejection> {
        admit(
            config,
            Bytes::from_static(body),
            &signature(signed),
            RequestSecrets::Fixed,
        )
    }

    fn request(signature: Option<&str>, content_length: Option<&str>) -> Request<String> {
        request_expecting(signature, content_length, None)
    }

    fn request_expecting(
        signature: Option<&str>,
        content_length: Option<&str>,
        expect: Option<&str>,
    ) -> Request<String> {
        let mut request = Request::builder();
        if let Some(expect) = expect {
            request = request.header("expect", expect);
        }
        if let Some(signature) = signature {
            request = request.header("x-ringyo-signature", signature);
        }
        if let Some(length) = content_length {
            request = request.header("content-length", length);
        }
        request.body(String::new()).unwrap()
    }

    fn kind<T: std::fmt::Debug>(result: Result<T, Rejection>) -> RejectionKind {
        result.unwrap_err().kind()
    }

    const FRESH: &[u8] = br#"{"event":"credits.low","timestamp":"2024-01-15T10:30:00Z"}"#;

    #[test]
    fn precheck_refuses_bad_headers_before_the_length() {
        let good = "ab".repeat(32);
        assert!(precheck(&request(Some(&good), Some("1024")), 1024).is_ok());
        assert_eq!(
            kind(precheck(&request(None, Some("999999")), 1024)),
            RejectionKind::MissingSignature
        );
        assert_eq!(
            kind(precheck(&request(Some("zz"), None), 1024)),
            RejectionKind::MalformedSignature
        );
        // Over the limit, however far: read and thrown away, then 413 (the buffer's), as the
        // client may be sending it already.
        assert!(precheck(&request(Some(&good), Some("2048")), 1024).is_ok());
        assert!(precheck(&request(Some(&good), Some("17000000")), 1024).is_ok());
        // Unless it waits to be asked for it: then at once.
        let waits = |length| request_expecting(Some(&good), Some(length), Some("100-Continue"));
        assert_eq!(
            kind(precheck(&waits("1025"), 1024)),
            RejectionKind::PayloadTooLarge
        );
        assert!(precheck(&waits("1024"), 1024).is_ok());
        // A garbled length is left to the streaming limit, not trusted and not refused.
        assert!(precheck(&request(Some(&good), Some("lots")), 1024).is_ok());
    }

    #[test]
    fn admit_checks_the_signature_then_freshness() {
        let config = config();
        let admitted = admit_fixed(&config, FRESH, FRESH).unwrap();
        assert_eq!(admitted.payload.head().kind(), Some(&EventKind::CreditsLow));
        assert!(admitted.claim.is_none(), "no store, nothing to claim");
        assert_eq!(admitted.payload.bytes(), FRESH);

        let stale = br#"{"event":"credits.low","timestamp":"2024-01-15T08:30:00Z"}"#;
        // A stale body under a wrong signature is a signature failure: nothing unverified is
        // parsed.
        assert_eq!(
            kind(admit_fixed(&config, stale, FRESH)),
            RejectionKind::SignatureMismatch
        );
        assert_eq!(
            kind(admit_fixed(&config, stale, stale)),
            RejectionKind::TimestampOutOfTolerance
        );
        let untimed = br#"{"event":"credits.low"}"#;
        assert_eq!(
            kind(admit_fixed(&config, untimed, untimed)),
            RejectionKind::InvalidTimestamp
        );
    }

    #[test]
    fn admit_asks_a_store_to_claim_until_the_lease_and_keep_until_the_window() {
        let mut config = config();
        config.store = Some(Arc::new(MemoryDeliveryStore::new()));
        let admitted = admit_fixed(&config, FRESH, FRESH).unwrap();
        let ticket = admitted.claim.unwrap();
        assert_eq!(ticket.id, admitted.payload.delivery_id());
        assert_eq!(ticket.now.to_rfc3339(), "2024-01-15T10:35:00+00:00");
        assert_eq!(ticket.lease_until.to_rfc3339(), "2024-01-15T10:35:15+00:00");
        assert_eq!(ticket.keep_until.to_rfc3339(), "2024-01-15T11:30:00+00:00");
    }

    #[test]
    fn store_answers_map_to_one_verdict_each() {
        let reject = StoreFailure::Reject;
        assert_eq!(
            claim_verdict(&Ok(Claim::Claimed), reject),
            ClaimVerdict::Run
        );
        assert_eq!(
            claim_verdict(&Ok(Claim::Handled), reject),
            ClaimVerdict::Duplicate
        );
        assert_eq!(
            claim_verdict(&Ok(Claim::InFlight), StoreFailure::RunHandler),
            ClaimVerdict::Refuse(RejectionKind::DeliveryInProgress.into())
        );
        let failed = Err(StoreError::new("connection refused"));
        assert_eq!(
            claim_verdict(&failed, reject),
            ClaimVerdict::Refuse(RejectionKind::StoreUnavailable.into())
        );
        assert_eq!(
            claim_verdict(&failed, StoreFailure::RunHandler),
            ClaimVerdict::RunUnclaimed
        );
        let duplicate = duplicate_response();
        assert_eq!(duplicate.status(), StatusCode::OK);
        assert_eq!(duplicate.headers()[DUPLICATE_HEADER], "true");
    }

    #[test]
    fn only_a_2xx_records_the_delivery() {
        let answer = |status: u16| {
            let mut response = Response::new(());
            *response.status_mut() = StatusCode::from_u16(status).unwrap();
            Ok::<_, ()>(response)
        };
        assert!(is_handled(&answer(200)));
        assert!(is_handled(&answer(202)));
        assert!(!is_handled(&answer(409)));
        assert!(!is_handled(&answer(500)));
        assert!(!is_handled::<(), ()>(&Err(())));
    }

    #[test]
    fn a_tenant_is_part_of_the_delivery_id_and_an_unknown_one_never_verifies() {
        use crate::secrets::Tenant;
        let config = config();
        let shared = Secrets::new(SECRET).unwrap();
        let admit_for = |name: &str| {
            let resolved = Resolved::tenant(Tenant::new(name).unwrap(), shared.clone());
            admit(
                &config,
                Bytes::from_static(FRESH),
                &signature(FRESH),
                RequestSecrets::Found(resolved),
            )
        };
        let (acme, globex) = (admit_for("acme").unwrap(), admit_for("globex").unwrap());
        assert_eq!(acme.payload.tenant().unwrap().as_str(), "acme");
        // One secret, one body, two tenants: two deliveries, neither the untenanted one.
        let fixed = admit_fixed(&config, FRESH, FRESH);
        let ids = [
            acme.payload.delivery_id(),
            globex.payload.delivery_id(),
            fixed.unwrap().payload.delivery_id(),
        ];
        assert!(ids[0] != ids[1] && ids[0] != ids[2] && ids[1] != ids[2]);

        let unknown = RequestSecrets::Found(Resolved::unknown());
        let decoy_signed = Secrets::decoy().sign(FRESH);
        assert_eq!(
            kind(admit(
                &config,
                Bytes::from_static(FRESH),
                &decoy_signed,
                unknown
            )),
            RejectionKind::SignatureMismatch
        );
    }
}
