//! The request body the layer hands inward, and the response body it hands back.

use std::{
    convert::Infallible,
    fmt,
    pin::Pin,
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;

/// The request body the layer passes to the inner service: the bytes that were verified.
///
/// It yields them in one frame. They share memory with
/// [`VerifiedPayload`](crate::VerifiedPayload): reading both costs no copy. See the
/// [module docs](super) for a service that takes it.
pub struct RequestBody {
    bytes: Option<Bytes>,
}

impl RequestBody {
    pub(crate) fn new(bytes: Bytes) -> Self {
        Self {
            bytes: Some(bytes).filter(|bytes| !bytes.is_empty()),
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.bytes.take().map(|bytes| Ok(Frame::data(bytes))))
    }

    fn is_end_stream(&self) -> bool {
        self.bytes.is_none()
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.bytes.as_ref().map_or(0, |bytes| bytes.len() as u64))
    }
}

impl fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The length only: a body may hold phone numbers and transcripts.
        f.debug_struct("RequestBody")
            .field("len", &self.bytes.as_ref().map_or(0, Bytes::len))
            .finish()
    }
}

pin_project! {
    /// The response body of [`RingyoWebhook`](super::RingyoWebhook): either the inner
    /// service's body, or the JSON body of a [`Rejection`](crate::Rejection) (or of a
    /// duplicate's empty answer). See the [module docs](super) for an example.
    pub struct ResponseBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Inner { #[pin] body: B },
        Own { body: Option<Bytes> },
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn inner(body: B) -> Self {
        Self {
            kind: Kind::Inner { body },
        }
    }

    pub(crate) fn own(body: Bytes) -> Self {
        Self {
            kind: Kind::Own {
                body: Some(body).filter(|body| !body.is_empty()),
            },
        }
    }
}

impl<B> Body for ResponseBody<B>
where
    B: Body<Data = Bytes>,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        match self.project().kind.project() {
            KindProj::Inner { body } => body.poll_frame(cx),
            KindProj::Own { body } => Poll::Ready(body.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Inner { body } => body.is_end_stream(),
            Kind::Own { body } => body.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Inner { body } => body.size_hint(),
            Kind::Own { body } => SizeHint::with_exact(body.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}

/// An empty body, whatever `B` is: what a layer outside this one answers with when it makes
/// its own response, such as tower-http's `TimeoutLayer` with its 408.
///
/// ```
/// use http_body::Body;
/// use ringyo_webhook::middleware::ResponseBody;
///
/// let empty = ResponseBody::<http_body_util::Full<bytes::Bytes>>::default();
/// assert!(empty.is_end_stream());
/// assert_eq!(empty.size_hint().exact(), Some(0));
/// ```
impl<B> Default for ResponseBody<B> {
    fn default() -> Self {
        Self {
            kind: Kind::Own { body: None },
        }
    }
}

impl<B> fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::Inner { .. } => "Inner",
            Kind::Own { .. } => "Own",
        };
        f.debug_tuple("ResponseBody").field(&kind).finish()
    }
}
