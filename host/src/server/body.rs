//! Request bodies: read with a size limit and a deadline; and the response
//! body, which can keep an unread request body open until the answer is
//! sent.
//!
//! A server that answers before reading the body (an unknown policy, a body
//! over the limit) must not simply drop it: an HTTP/1.1 socket closed with
//! unread data sends a TCP reset that can overtake the response, and over
//! HTTP/2 a stream reset while the client still uploads is an error to some
//! clients (curl 7.x reports "Stream error in the HTTP/2 framing layer"
//! even for RFC 9113's NO_ERROR). See `http::early`.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};

/// How much of a refused body is read and discarded before answering;
/// beyond it the connection is given up.
const DRAIN_LIMIT: usize = 64 << 20;
/// A refused body whose next part takes longer than this is not waited for:
/// its client may be waiting for the answer before it sends more.
const DRAIN_STALL: Duration = Duration::from_millis(500);

/// Why a body was not read.
#[derive(Debug)]
pub enum BodyError {
    /// Larger than the limit (reading stopped there).
    TooLarge,
    /// Not received within the deadline.
    Timeout,
    /// The connection failed while reading.
    Read(hyper::Error),
}

/// Reads `body` whole if it is at most `limit` bytes and arrives within
/// `deadline`; stops reading as soon as it is over the limit.
pub async fn read(
    body: &mut Incoming,
    limit: usize,
    deadline: Duration,
) -> Result<Bytes, BodyError> {
    tokio::time::timeout(deadline, read_up_to(body, limit))
        .await
        .unwrap_or(Err(BodyError::Timeout))
}

/// Reads and discards the rest of `body` while it keeps coming: up to
/// [`DRAIN_LIMIT`] bytes, `deadline` in all, [`DRAIN_STALL`] between parts.
pub async fn drain(body: &mut Incoming, deadline: Duration) {
    let drained = async {
        let mut seen = 0usize;
        while let Ok(Some(Ok(frame))) = tokio::time::timeout(DRAIN_STALL, body.frame()).await {
            seen = seen.saturating_add(frame.data_ref().map_or(0, Bytes::len));
            if seen > DRAIN_LIMIT {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(deadline, drained).await;
}

async fn read_up_to(body: &mut Incoming, limit: usize) -> Result<Bytes, BodyError> {
    let mut kept = BytesMut::new();
    let mut seen = 0usize;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame.map_err(BodyError::Read)?.into_data() else {
            continue; // trailers
        };
        seen = seen.saturating_add(data.len());
        if seen > limit {
            return Err(BodyError::TooLarge);
        }
        kept.extend_from_slice(&data);
    }
    Ok(kept.freeze())
}

/// The webhook's response body: the answer, and possibly the request body
/// it was given before, dropped only when the answer is sent.
#[derive(Debug)]
pub struct Answer {
    answer: Full<Bytes>,
    _request_body: Option<Incoming>,
}

impl Answer {
    /// `answer`, keeping `request_body` open until it is sent.
    pub fn holding(answer: Full<Bytes>, request_body: Incoming) -> Self {
        Self {
            answer,
            _request_body: Some(request_body),
        }
    }
}

impl From<Full<Bytes>> for Answer {
    fn from(answer: Full<Bytes>) -> Self {
        Self {
            answer,
            _request_body: None,
        }
    }
}

impl Body for Answer {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Pin::new(&mut self.get_mut().answer).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.answer.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.answer.size_hint()
    }
}
