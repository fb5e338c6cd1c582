//! A POST's answer on the way out: counted for shutdown until its body
//! is sent, its event stream held until its first message.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::http::header;
use axum::response::Response;

/// A POST's answer: counted for shutdown until its body is sent, its event
/// stream (if it is one) held until its first message.
pub(super) async fn answer(answering: &Arc<Answering>, response: Response) -> Response {
    let event_stream =
        response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"text/event-stream"));
    // Counted from here, before the hold: a shutdown must wait for an
    // answer that is still being held.
    let counted = Answering::begin(answering);
    let (parts, mut body) = response.into_parts();
    let mut held = Held::default();
    if event_stream {
        held.until_first_message(&mut body).await;
    }
    Response::from_parts(parts, axum::body::Body::new(TrackedBody { inner: body, held, _guard: counted }))
}

/// How long a POST's event stream may wait for its first message before its
/// headers go out alone.
pub(super) const FIRST_MESSAGE_WAIT: Duration = Duration::from_millis(20);

/// The start of a POST's event stream, held back until its first message.
/// rmcp answers a 2025-11-25 POST with an event stream that opens with a
/// priming event (an id to resume from), ready at once; hyper would send the
/// headers and that event in one write and the answer in a second, a second
/// wakeup of the client on every call. Held, the headers, the priming event
/// and the answer go out together. A call that takes longer than
/// [`FIRST_MESSAGE_WAIT`] gets its headers and priming event then, as before.
#[derive(Default)]
pub(super) struct Held {
    pub(super) frames: std::collections::VecDeque<hyper::body::Frame<axum::body::Bytes>>,
    /// What ended the stream while it was held: its end (`None`) or an error.
    pub(super) end: Option<Option<axum::Error>>,
}

impl Held {
    pub(super) async fn until_first_message(&mut self, body: &mut axum::body::Body) {
        use hyper::body::Body as _;
        use std::task::Poll;
        // The timer only once the stream has to be waited for: a stream whose
        // message is ready at once (every 2026-07-28 answer) costs none.
        let mut wait: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
        std::future::poll_fn(|cx| {
            loop {
                match std::pin::Pin::new(&mut *body).poll_frame(cx) {
                    Poll::Ready(Some(Ok(frame))) => {
                        let message = frame.data_ref().is_some_and(|d| carries_message(d));
                        self.frames.push_back(frame);
                        if message {
                            return Poll::Ready(());
                        }
                    }
                    Poll::Ready(Some(Err(e))) => {
                        self.end = Some(Some(e));
                        return Poll::Ready(());
                    }
                    Poll::Ready(None) => {
                        self.end = Some(None);
                        return Poll::Ready(());
                    }
                    // Ready once the wait is over: the headers go without the message.
                    Poll::Pending => {
                        return wait
                            .get_or_insert_with(|| Box::pin(tokio::time::sleep(FIRST_MESSAGE_WAIT)))
                            .as_mut()
                            .poll(cx);
                    }
                }
            }
        })
        .await;
    }
}

/// Whether an event-stream chunk carries a JSON-RPC message (a `data:` line
/// with something on it), as opposed to a priming event or a comment. Every
/// POST's answer passes here: a message's `data:` line is recognised by its
/// first bytes, without scanning the (possibly large) payload for its end.
pub(super) fn carries_message(chunk: &[u8]) -> bool {
    let mut rest = chunk;
    loop {
        if let Some(data) = rest.strip_prefix(b"data:") {
            match data.iter().find(|&&b| b != b' ' && b != b'\t') {
                Some(b'\n' | b'\r') | None => {}
                Some(_) => return true,
            }
        }
        match rest.iter().position(|&b| b == b'\n') {
            Some(end) => rest = &rest[end + 1..],
            None => return false,
        }
    }
}

/// How many POST answers are still being sent: a shutdown waits for them
/// before it closes the sessions, or a call that finished just before
/// could lose its answer.
#[derive(Default)]
pub(super) struct Answering {
    pub(super) count: std::sync::atomic::AtomicUsize,
    pub(super) done: tokio::sync::Notify,
}

impl Answering {
    /// One more answer being sent, until the guard is dropped (with the
    /// [`TrackedBody`] that carries it).
    pub(super) fn begin(this: &Arc<Answering>) -> AnswerGuard {
        this.count.fetch_add(1, Ordering::SeqCst);
        AnswerGuard(this.clone())
    }

    /// Returns once no answer is being sent.
    pub(super) async fn none(&self) {
        loop {
            let notified = self.done.notified();
            if self.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}

pub(super) struct AnswerGuard(Arc<Answering>);

impl Drop for AnswerGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.done.notify_waiters();
        }
    }
}

/// A response body that holds an [`AnswerGuard`] until it is dropped, and
/// sends its [`Held`] start first.
pub(super) struct TrackedBody {
    pub(super) inner: axum::body::Body,
    pub(super) held: Held,
    pub(super) _guard: AnswerGuard,
}

impl hyper::body::Body for TrackedBody {
    type Data = axum::body::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        if let Some(frame) = self.held.frames.pop_front() {
            return std::task::Poll::Ready(Some(Ok(frame)));
        }
        match self.held.end.take() {
            // Ended while held: not polled again.
            Some(end) => {
                self.held.end = Some(None);
                std::task::Poll::Ready(end.map(Err))
            }
            None => std::pin::Pin::new(&mut self.inner).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        if !self.held.frames.is_empty() {
            return false;
        }
        match &self.held.end {
            Some(None) => true,
            Some(Some(_)) => false,
            None => self.inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        if self.held.frames.is_empty() && self.held.end.is_none() {
            self.inner.size_hint()
        } else {
            hyper::body::SizeHint::default()
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_priming_event_or_a_comment_is_not_a_message() {
        assert!(!carries_message(b"data: \nid: 0/257\nretry: 3000\n\n"), "rmcp's priming event");
        assert!(!carries_message(b"data:\n\n"));
        assert!(!carries_message(b": keep-alive\n\n"));
        assert!(carries_message(b"data: {\"jsonrpc\":\"2.0\",\"id\":1,\"result\":{}}\nid: 0/258\n\n"));
        assert!(carries_message(b"event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"x\"}\n\n"));
        assert!(carries_message(b"id: 0/2\r\ndata:[{}]"), "no space, no line end");
        assert!(!carries_message(b"data: \r\n\r\n"));
        assert!(!carries_message(b""));
    }

    /// A body of `chunks`, each ready `gap` after the one before, then an
    /// error once if `fails`.
    struct Slow {
        chunks: &'static [&'static str],
        next: usize,
        gap: Duration,
        sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
        fails: bool,
    }

    impl hyper::body::Body for Slow {
        type Data = axum::body::Bytes;
        type Error = std::io::Error;

        fn poll_frame(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
            let this = &mut *self;
            let Some(chunk) = this.chunks.get(this.next) else {
                let error = std::mem::take(&mut this.fails).then(|| Err(std::io::Error::other("the stream broke")));
                return std::task::Poll::Ready(error);
            };
            let gap = this.gap;
            let sleep = this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(gap)));
            std::task::ready!(sleep.as_mut().poll(cx));
            this.sleep = None;
            this.next += 1;
            std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(axum::body::Bytes::from_static(chunk.as_bytes())))))
        }
    }

    fn slow_body(chunks: &'static [&'static str], gap: Duration) -> axum::body::Body {
        axum::body::Body::new(Slow { chunks, next: 0, gap, sleep: None, fails: false })
    }

    /// The tracked body's next frame.
    async fn poll_frame(
        tracked: &mut TrackedBody,
    ) -> Option<Result<hyper::body::Frame<axum::body::Bytes>, axum::Error>> {
        use hyper::body::Body as _;
        std::future::poll_fn(|cx| std::pin::Pin::new(&mut *tracked).poll_frame(cx)).await
    }

    /// Everything the tracked body sends, and whether it then says it ended.
    async fn all_of(body: axum::body::Body, held: Held) -> (String, bool) {
        use hyper::body::Body as _;
        let answering = Arc::new(Answering::default());
        let mut tracked = TrackedBody { inner: body, held, _guard: Answering::begin(&answering) };
        let mut out = Vec::new();
        while let Some(frame) = poll_frame(&mut tracked).await {
            out.extend_from_slice(frame.unwrap().data_ref().unwrap());
        }
        (String::from_utf8(out).unwrap(), tracked.is_end_stream())
    }

    #[tokio::test(start_paused = true)]
    async fn an_event_stream_is_held_until_its_first_message_and_loses_nothing() {
        const CHUNKS: &[&str] = &["data: \nid: 0/1\n\n", "data: {\"id\":1}\n\n", "data: {\"id\":2}\n\n"];
        let mut body = slow_body(CHUNKS, Duration::from_millis(1));
        let mut held = Held::default();
        held.until_first_message(&mut body).await;
        assert_eq!(held.frames.len(), 2, "the priming event and the first message");
        assert!(held.end.is_none());
        assert_eq!(all_of(body, held).await.0, CHUNKS.concat());
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_first_message_lets_the_headers_go_after_the_wait() {
        const CHUNKS: &[&str] = &["data: {\"id\":1}\n\n"];
        let mut body = slow_body(CHUNKS, FIRST_MESSAGE_WAIT * 5);
        let mut held = Held::default();
        held.until_first_message(&mut body).await;
        assert!(held.frames.is_empty() && held.end.is_none(), "the headers went without waiting for the message");
        assert_eq!(all_of(body, held).await.0, CHUNKS.concat());
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_being_held_already_counts_for_shutdown() {
        const CHUNKS: &[&str] = &["data: \nid: 0/1\n\n", "data: {\"id\":1}\n\n"];
        let answering = Arc::new(Answering::default());
        let response = Response::builder()
            .header(header::CONTENT_TYPE, "text/event-stream")
            .body(slow_body(CHUNKS, Duration::from_millis(5)))
            .unwrap();
        let held = tokio::spawn({
            let answering = answering.clone();
            async move { answer(&answering, response).await }
        });
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert!(!held.is_finished(), "still waiting for the message");
        let stopping = tokio::time::timeout(Duration::from_millis(20), answering.none()).await;
        assert!(stopping.is_err(), "a shutdown must not go ahead while an answer is held");
        let response = held.await.unwrap();
        assert_eq!(answering.count.load(Ordering::SeqCst), 1, "counted until the body is sent");
        drop(response);
        answering.none().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_that_fails_while_held_passes_the_error_on_once() {
        use hyper::body::Body as _;
        const CHUNKS: &[&str] = &["data: \nid: 0/1\n\n"];
        let mut body =
            axum::body::Body::new(Slow { chunks: CHUNKS, next: 0, gap: Duration::ZERO, sleep: None, fails: true });
        let mut held = Held::default();
        held.until_first_message(&mut body).await;
        assert!(matches!(held.end, Some(Some(_))), "the error ended the hold");
        let answering = Arc::new(Answering::default());
        let mut tracked = TrackedBody { inner: body, held, _guard: Answering::begin(&answering) };
        let first = poll_frame(&mut tracked).await.unwrap().unwrap();
        assert_eq!(first.data_ref().unwrap().as_ref(), CHUNKS[0].as_bytes(), "the held event first");
        assert!(poll_frame(&mut tracked).await.unwrap().is_err(), "then the error, so hyper aborts the response");
        assert!(poll_frame(&mut tracked).await.is_none(), "and nothing after it");
        assert!(tracked.is_end_stream());
        drop(tracked);
        answering.none().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_that_ends_while_held_ends_once() {
        const CHUNKS: &[&str] = &["data: \nid: 0/1\n\n"];
        let mut body = slow_body(CHUNKS, Duration::ZERO);
        let mut held = Held::default();
        held.until_first_message(&mut body).await;
        assert!(matches!(held.end, Some(None)));
        assert_eq!(all_of(body, held).await, (CHUNKS.concat(), true), "sent once, then ended");
    }
}
