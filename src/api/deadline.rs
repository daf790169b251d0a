//! The request-body deadline: a body must arrive whole within `server.request_body_timeout_ms`
//! of its request head, so a client that trickles or stalls its body cannot hold a connection
//! and a worker's attention open.
//!
//! Owns the middleware that wraps a request's payload in a stream ending with a timed-out
//! error at the deadline; whoever reads the body (the JSON extractor, `read_body`) turns that
//! error into `408 request_body_timeout` ([`super::ApiError::BodyTimeout`]). Does not own
//! reading bodies, nor the head timeout (actix's `client_request_timeout`, set in `app`).

use std::time::Duration;

use actix_web::body::MessageBody;
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::header::{CONTENT_LENGTH, TRANSFER_ENCODING};
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage};
use futures::StreamExt;

use super::AppState;

/// What a timed-out body read carries inside its `io::Error`, so [`timed_out_after`] can tell
/// it from a connection error of the same kind.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive whole within {after_ms} ms")]
struct BodyTimedOut {
    after_ms: u64,
}

/// Wraps the payload of a request that has a body in the deadline.
pub async fn body_deadline(
    mut req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let timeout = req
        .app_data::<web::Data<AppState>>()
        .map(|state| state.body_timeout);
    if let Some(timeout) = timeout.filter(|_| has_body(&req)) {
        let payload = req.take_payload();
        req.set_payload(Payload::Stream {
            payload: Box::pin(within(payload, timeout)),
        });
    }
    next.call(req).await
}

/// Whether the request announces a body (a length above zero, or a chunked one): bodiless
/// requests, most of them, skip the timer.
fn has_body(req: &ServiceRequest) -> bool {
    let headers = req.headers();
    let length = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    length.is_some_and(|n| n > 0) || headers.contains_key(TRANSFER_ENCODING)
}

/// `payload`, ending with a timed-out error once `timeout` has passed.
fn within(
    payload: Payload,
    timeout: Duration,
) -> impl futures::Stream<Item = Result<web::Bytes, PayloadError>> {
    let deadline = Box::pin(tokio::time::sleep(timeout));
    futures::stream::unfold(Some((payload, deadline)), move |state| async move {
        let (mut payload, mut deadline) = state?;
        tokio::select! {
            chunk = payload.next() => chunk.map(|c| (c, Some((payload, deadline)))),
            _ = &mut deadline => {
                let after_ms = timeout.as_millis() as u64;
                let error = std::io::Error::new(std::io::ErrorKind::TimedOut, BodyTimedOut { after_ms });
                Some((Err(PayloadError::Io(error)), None))
            }
        }
    })
}

/// The deadline (ms) when `error` is the deadline's.
pub fn timed_out_after(error: &PayloadError) -> Option<u64> {
    match error {
        PayloadError::Io(e) => e
            .get_ref()
            .and_then(|inner| inner.downcast_ref::<BodyTimedOut>())
            .map(|t| t.after_ms),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A payload fed by the test: each sent chunk arrives; dropping the sender ends it.
    fn fed() -> (tokio::sync::mpsc::UnboundedSender<web::Bytes>, Payload) {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|chunk| (Ok(chunk), rx))
        });
        (
            tx,
            Payload::Stream {
                payload: Box::pin(stream),
            },
        )
    }

    #[actix_web::test]
    async fn a_stalled_body_ends_with_the_timeout_error() {
        let (tx, payload) = fed();
        tx.send(web::Bytes::from_static(b"{\"a\"")).unwrap();
        let mut body = Box::pin(within(payload, Duration::from_millis(50)));
        assert_eq!(body.next().await.unwrap().unwrap(), &b"{\"a\""[..]);
        let error = body.next().await.unwrap().unwrap_err();
        assert_eq!(timed_out_after(&error), Some(50), "{error}");
        assert!(body.next().await.is_none());
    }

    #[actix_web::test]
    async fn a_prompt_body_passes_whole() {
        let (tx, payload) = fed();
        tx.send(web::Bytes::from_static(b"{}")).unwrap();
        drop(tx);
        let mut body = Box::pin(within(payload, Duration::from_secs(5)));
        assert_eq!(body.next().await.unwrap().unwrap(), &b"{}"[..]);
        assert!(body.next().await.is_none());
    }
}
