//! A body wrapper that watches a stream go by without holding it.
//!
//! [`Observed`] counts bytes, optionally keeps a copy of the first `limit` bytes (only ever used
//! for manifests, capped at 4 MiB), and calls its `on_end` exactly once: when the stream ended
//! (`complete: true`), failed, or was dropped before the end (`complete: false`, e.g. the client
//! went away). Frames are passed on untouched, so backpressure is the inner body's.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use hyper::body::{Body as HttpBody, Frame, SizeHint};

/// What a finished (or abandoned) body amounted to.
#[derive(Debug, Default)]
pub struct BodyOutcome {
    /// Data bytes that went through.
    pub bytes: u64,
    /// The stream reached its end without error.
    pub complete: bool,
    /// The captured copy, if capture was asked for and the body fit the limit.
    pub captured: Option<Bytes>,
}

type OnEnd = Box<dyn FnOnce(BodyOutcome) + Send + 'static>;

struct Capture {
    buf: BytesMut,
    limit: usize,
    overflow: bool,
}

pin_project_lite::pin_project! {
    /// See the module doc.
    #[project = ObservedProj]
    pub struct Observed<B: HttpBody> {
        #[pin]
        inner: B,
        bytes: u64,
        capture: Option<Capture>,
        on_end: Option<OnEnd>,
    }

    impl<B: HttpBody> PinnedDrop for Observed<B> {
        fn drop(this: Pin<&mut Self>) {
            // An empty body (HEAD, 201, 202) may never be polled: it is complete all the same.
            let complete = this.inner.is_end_stream();
            finish(this.project(), complete);
        }
    }
}

impl<B: HttpBody<Data = Bytes>> Observed<B> {
    /// Watch `inner`; `on_end` runs once when it ends or is dropped.
    pub fn new(inner: B, on_end: impl FnOnce(BodyOutcome) + Send + 'static) -> Self {
        Self {
            inner,
            bytes: 0,
            capture: None,
            on_end: Some(Box::new(on_end)),
        }
    }

    /// Also keep a copy of the data, up to `limit` bytes (beyond it, nothing is kept).
    pub fn capturing(mut self, limit: usize, expected: Option<u64>) -> Self {
        let cap = expected.map(|n| n.min(limit as u64) as usize).unwrap_or(0);
        self.capture = Some(Capture {
            buf: BytesMut::with_capacity(cap),
            limit,
            overflow: false,
        });
        self
    }
}

fn finish<B: HttpBody>(this: ObservedProj<'_, B>, complete: bool) {
    if let Some(f) = this.on_end.take() {
        let captured = match this.capture.take() {
            Some(c) if complete && !c.overflow => Some(c.buf.freeze()),
            _ => None,
        };
        f(BodyOutcome {
            bytes: *this.bytes,
            complete,
            captured,
        });
    }
}

impl<B: HttpBody<Data = Bytes>> HttpBody for Observed<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        let res = this.inner.as_mut().poll_frame(cx);
        match &res {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    *this.bytes += data.len() as u64;
                    if let Some(c) = this.capture.as_mut()
                        && !c.overflow
                    {
                        if c.buf.len() + data.len() > c.limit {
                            c.overflow = true;
                            c.buf = BytesMut::new();
                        } else {
                            c.buf.extend_from_slice(data);
                        }
                    }
                }
                if this.inner.is_end_stream() {
                    finish(this, true);
                }
            }
            Poll::Ready(None) => finish(this, true),
            Poll::Ready(Some(Err(_))) => finish(this, false),
            Poll::Pending => {}
        }
        res
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full, StreamBody};
    use std::sync::{Arc, Mutex};

    fn recorder() -> (
        Arc<Mutex<Option<BodyOutcome>>>,
        impl FnOnce(BodyOutcome) + Send + 'static,
    ) {
        let slot = Arc::new(Mutex::new(None));
        let s2 = slot.clone();
        (slot, move |o| *s2.lock().unwrap() = Some(o))
    }

    #[tokio::test]
    async fn counts_captures_and_reports_completion() {
        let (slot, f) = recorder();
        let body = Observed::new(Full::new(Bytes::from_static(b"hello")), f).capturing(16, Some(5));
        let out = body.collect().await.unwrap().to_bytes();
        assert_eq!(out, "hello");
        let o = slot.lock().unwrap().take().unwrap();
        assert_eq!(o.bytes, 5);
        assert!(o.complete);
        assert_eq!(o.captured.unwrap(), "hello");
    }

    #[tokio::test]
    async fn capture_over_limit_keeps_nothing_but_passes_everything() {
        let (slot, f) = recorder();
        let chunks =
            futures_util::stream::iter((0..4).map(|_| {
                Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"abcd")))
            }));
        let body = Observed::new(StreamBody::new(chunks), f).capturing(10, None);
        let out = body.collect().await.unwrap().to_bytes();
        assert_eq!(out.len(), 16);
        let o = slot.lock().unwrap().take().unwrap();
        assert_eq!(o.bytes, 16);
        assert!(o.complete);
        assert!(o.captured.is_none());
    }

    #[tokio::test]
    async fn dropped_early_is_incomplete() {
        let (slot, f) = recorder();
        let chunks =
            futures_util::stream::iter((0..4).map(|_| {
                Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from_static(b"abcd")))
            }));
        let mut body = Observed::new(StreamBody::new(chunks), f);
        let _ = body.frame().await;
        drop(body);
        let o = slot.lock().unwrap().take().unwrap();
        assert_eq!(o.bytes, 4);
        assert!(!o.complete);
    }

    #[tokio::test]
    async fn empty_body_dropped_unpolled_is_complete() {
        let (slot, f) = recorder();
        drop(Observed::new(http_body_util::Empty::<Bytes>::new(), f));
        assert!(slot.lock().unwrap().take().unwrap().complete);
    }
}
