//! The gateway's line to its upstream server: the child process, the
//! transport rmcp's client runs on, and a direct path for `tools/call`.
//!
//! rmcp's client serves the handshake, listings, resources, prompts and the
//! upstream's notifications. A `tools/call` to an upstream that speaks a
//! protocol with a handshake (2025-11-25 and before) takes the direct path
//! instead: [`Direct::call`] writes the request itself, under an id of its
//! own (`"mcpsec-N"`, a string; rmcp's are numbers), and the transport's
//! reader hands the answer with that id straight back to the waiting call.
//! That skips rmcp's request bookkeeping (a progress token, and the
//! `_meta` it puts on every request, which the upstream then has to parse)
//! and a hop through its service loop on the hot path. Everything else on
//! the line is rmcp's, as before.
//!
//! Everything written to the upstream — rmcp's messages, direct requests,
//! cancellation notes — goes through one bounded queue to one writer task,
//! in the order it was queued: a call's `notifications/cancelled` can never
//! reach the upstream before the request it cancels, and messages queued
//! while the pipe was busy go out in one `write(2)`.
//!
//! The upstream is untrusted here as everywhere: an answer is only taken
//! for an id this process is waiting for, once; anything else with our
//! prefix is dropped (and logged), never passed to rmcp.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::RoleClient;
use rmcp::model::{CallToolResult, ErrorData, JsonObject};
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::{mpsc, oneshot};

use crate::proxy::upstream_text;
use crate::transport::{LineReader, Read};

/// The prefix of the ids [`Direct`] gives its requests.
const ID_PREFIX: &str = "mcpsec-";

/// How long a closing upstream gets to exit before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// Messages queued for the upstream and not yet written: past this, a call
/// is refused at once rather than queued behind an upstream that does not
/// read its input (the queue's memory stays bounded).
const QUEUE: usize = 1024;

/// The most bytes of queued messages put into one `write(2)`.
const BATCH_BYTES: usize = 64 << 10;

/// The longest line taken from the upstream (rmcp's own stdio transport
/// allowed as much); a longer one is dropped.
pub(crate) const MAX_UPSTREAM_LINE: usize = 16 << 20;

/// The upstream's answer to a direct call.
#[derive(Debug)]
pub(crate) enum Answer {
    /// A result.
    Result(CallToolResult),
    /// A JSON-RPC error.
    Error(ErrorData),
    /// Something that is neither (what serde said about it).
    Malformed(String),
}

/// Why a direct call has no answer.
#[derive(Debug)]
pub(crate) enum NoAnswer {
    /// The upstream's output ended (it exited or crashed) before it answered,
    /// or its input could not be written.
    Closed(String),
    /// The request was not sent: the upstream has not read the last
    /// [`QUEUE`] messages written to it.
    Backlog,
    /// No answer within the timeout (the request was cancelled upstream).
    TimedOut,
}

/// What the writer task takes from the queue.
#[derive(Debug)]
enum Out {
    /// One message, newline included.
    Line(Vec<u8>),
    /// Write what came before, then close the child's stdin.
    Close,
}

/// The direct `tools/call` path, shared by the transport (which delivers
/// answers) and the gateway (which calls).
#[derive(Debug)]
pub(crate) struct Direct {
    /// The queue to the writer task, which owns the child's stdin.
    out: mpsc::Sender<Out>,
    calls: Mutex<Calls>,
    next: AtomicU64,
}

/// The calls waiting for an answer, and whether any more can be.
#[derive(Debug, Default)]
struct Calls {
    waiting: HashMap<u64, oneshot::Sender<Answer>>,
    /// Why no call can be answered any more (the output ended, or the
    /// input could not be written); set once.
    ended: Option<&'static str>,
}

impl Direct {
    fn calls(&self) -> std::sync::MutexGuard<'_, Calls> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Calls `tool` with `arguments`; the answer, or why there is none
    /// within `timeout`.
    pub(crate) async fn call(
        self: &Arc<Self>,
        tool: &str,
        arguments: JsonObject,
        timeout: Duration,
    ) -> Result<Answer, NoAnswer> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let request = serde_json::json!({
            "jsonrpc": "2.0",
            "id": format!("{ID_PREFIX}{n}"),
            "method": "tools/call",
            "params": { "name": tool, "arguments": arguments },
        });
        let mut bytes = serde_json::to_vec(&request).map_err(|e| NoAnswer::Closed(e.to_string()))?;
        bytes.push(b'\n');
        let (tx, rx) = oneshot::channel();
        {
            let mut calls = self.calls();
            // Checked under the lock the reader ends it under: no call
            // waits on an upstream whose output has ended.
            if let Some(why) = calls.ended {
                return Err(NoAnswer::Closed(why.into()));
            }
            // Queued before anything that could cancel it.
            match self.out.try_send(Out::Line(bytes)) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => return Err(NoAnswer::Backlog),
                Err(mpsc::error::TrySendError::Closed(_)) => {
                    return Err(NoAnswer::Closed("writing to it failed".into()));
                }
            }
            calls.waiting.insert(n, tx);
        }
        // From here on a dropped call (the client went away) stops waiting
        // and tells the upstream. The timeout covers the queue and the
        // write: an upstream that stops reading cannot hold a call.
        let mut guard = Waiting { direct: self.clone(), n, unanswered: true };
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) => {
                guard.unanswered = false;
                Ok(answer)
            }
            Ok(Err(_)) => {
                guard.unanswered = false;
                Err(NoAnswer::Closed(self.calls().ended.unwrap_or("its output ended").into()))
            }
            Err(_) => Err(NoAnswer::TimedOut),
        }
    }

    /// Hands an answer to its waiting call; false if nobody waits for it.
    fn deliver(&self, n: u64, answer: Answer) -> bool {
        match self.calls().waiting.remove(&n) {
            Some(tx) => tx.send(answer).is_ok(),
            None => false,
        }
    }

    /// No call can be answered any more (`why`): every waiting call learns
    /// it now, and later ones are refused.
    fn end(&self, why: &'static str) {
        let mut calls = self.calls();
        calls.ended.get_or_insert(why);
        calls.waiting.clear();
    }

    /// Whether no call can be answered any more (the session is over).
    pub(crate) fn ended(&self) -> bool {
        self.calls().ended.is_some()
    }
}

/// The writer task: takes messages from the queue in order and writes them
/// to the child's stdin, as many as are queued (up to [`BATCH_BYTES`]) in
/// one write. Stops on [`Out::Close`], when every sender is gone, or when a
/// write fails (the calls waiting then learn it); stdin closes as it stops.
async fn write_out(mut stdin: ChildStdin, mut queue: mpsc::Receiver<Out>, direct: std::sync::Weak<Direct>) {
    let mut batch = Vec::new();
    while let Some(first) = queue.recv().await {
        let mut close = false;
        let mut next = Some(first);
        while let Some(out) = next.take() {
            match out {
                Out::Line(bytes) if batch.is_empty() => batch = bytes,
                Out::Line(bytes) => batch.extend_from_slice(&bytes),
                Out::Close => close = true,
            }
            if !close && batch.len() < BATCH_BYTES {
                next = queue.try_recv().ok();
            }
        }
        if !batch.is_empty() {
            if let Err(e) = stdin.write_all(&batch).await {
                tracing::warn!("writing to the upstream failed: {e}");
                if let Some(direct) = direct.upgrade() {
                    direct.end("writing to it failed");
                }
                return;
            }
            batch.clear();
        }
        if close {
            return;
        }
    }
}

/// A call in progress; dropped before its answer, it stops waiting and
/// sends `notifications/cancelled` (best effort) so the upstream can stop.
struct Waiting {
    direct: Arc<Direct>,
    n: u64,
    /// Whether the upstream may still be working on it.
    unanswered: bool,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        self.direct.calls().waiting.remove(&self.n);
        if !self.unanswered || self.direct.ended() {
            return;
        }
        let note = serde_json::json!({
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": { "requestId": format!("{ID_PREFIX}{}", self.n), "reason": "mcpsec stopped waiting for the answer" },
        });
        let Ok(mut bytes) = serde_json::to_vec(&note) else { return };
        bytes.push(b'\n');
        // Behind the request in the queue; best effort (dropped if the
        // queue is full).
        let _ = self.direct.out.try_send(Out::Line(bytes));
    }
}

/// The transport rmcp's client runs on: the child's stdin and stdout,
/// with the direct path's answers taken out of the stream.
#[derive(Debug)]
pub(crate) struct UpstreamTransport {
    child: Option<Child>,
    lines: LineReader<ChildStdout>,
    direct: Arc<Direct>,
}

impl UpstreamTransport {
    /// Starts `cmd` (stdin and stdout piped, stderr inherited, killed when
    /// the transport is dropped) and the task that writes to it. Needs a
    /// tokio runtime.
    pub(crate) fn spawn(mut cmd: tokio::process::Command) -> std::io::Result<(UpstreamTransport, Arc<Direct>)> {
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true);
        let mut child = cmd.spawn()?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(std::io::Error::other("the child's stdin or stdout was not piped"));
        };
        let (out, queue) = mpsc::channel(QUEUE);
        let direct = Arc::new(Direct { out, calls: Mutex::new(Calls::default()), next: AtomicU64::new(1) });
        tokio::spawn(write_out(stdin, queue, Arc::downgrade(&direct)));
        let lines = LineReader::with_limit(stdout, MAX_UPSTREAM_LINE);
        Ok((UpstreamTransport { child: Some(child), lines, direct: direct.clone() }, direct))
    }

    /// What to do with one line from the upstream: a message for rmcp, or
    /// nothing (an answer to a direct call, delivered; or a line dropped).
    fn route(&self, line: &[u8]) -> Option<RxJsonRpcMessage<RoleClient>> {
        if line.iter().all(u8::is_ascii_whitespace) {
            return None;
        }
        // Ours: no method, and an id this process gave out. Anything else
        // (a line that is not an object included) is rmcp's to parse.
        let ours = match peek(line) {
            Some(Peek { id: Some(RouteId(Some(n))), method: None }) => Some(n),
            _ => None,
        };
        let Some(n) = ours else {
            return match serde_json::from_slice(line) {
                Ok(msg) => Some(msg),
                Err(e) => {
                    // serde names what it did not expect: the upstream's words, sanitised.
                    let e = upstream_text(&e.to_string());
                    tracing::warn!("the upstream wrote something that is not a JSON-RPC message ({e}); ignored");
                    None
                }
            };
        };
        let answer = match serde_json::from_slice::<DirectReply>(line) {
            Ok(DirectReply { result: Some(r), error: None }) => Answer::Result(r),
            Ok(DirectReply { result: None, error: Some(e) }) => Answer::Error(e),
            Ok(_) => Answer::Malformed("neither a result nor an error".into()),
            Err(e) => Answer::Malformed(e.to_string()),
        };
        if !self.direct.deliver(n, answer) {
            tracing::warn!(
                "the upstream answered a request nobody waits for (a repeated id, or a late answer); ignored"
            );
        }
        None
    }
}

/// What routing reads of a line that is a JSON object (serde would also
/// fill the struct from an array).
fn peek(line: &[u8]) -> Option<Peek> {
    let object = line.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{');
    if object { serde_json::from_slice(line).ok() } else { None }
}

/// What routing reads of a line: its id and whether it has a method.
#[derive(serde::Deserialize)]
struct Peek {
    #[serde(default)]
    id: Option<RouteId>,
    #[serde(default)]
    method: Option<serde::de::IgnoredAny>,
}

/// An answer to a direct call.
#[derive(serde::Deserialize)]
struct DirectReply {
    #[serde(default)]
    result: Option<CallToolResult>,
    #[serde(default)]
    error: Option<ErrorData>,
}

/// A line's id as routing sees it: the number of one of our ids, or
/// `None` for any other id. Skips any other value without keeping it.
struct RouteId(Option<u64>);

/// `N` of `"mcpsec-N"` exactly as [`Direct::call`] writes it (decimal, no
/// sign, no leading zero).
fn our_number(id: &str) -> Option<u64> {
    let digits = id.strip_prefix(ID_PREFIX)?;
    let canonical = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0');
    if canonical { digits.parse().ok() } else { None }
}

impl<'de> serde::Deserialize<'de> for RouteId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RouteId;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON-RPC id")
            }
            fn visit_str<E>(self, s: &str) -> Result<RouteId, E> {
                Ok(RouteId(our_number(s)))
            }
            fn visit_u64<E>(self, _: u64) -> Result<RouteId, E> {
                Ok(RouteId(None))
            }
            fn visit_i64<E>(self, _: i64) -> Result<RouteId, E> {
                Ok(RouteId(None))
            }
            fn visit_f64<E>(self, _: f64) -> Result<RouteId, E> {
                Ok(RouteId(None))
            }
            fn visit_bool<E>(self, _: bool) -> Result<RouteId, E> {
                Ok(RouteId(None))
            }
            fn visit_unit<E>(self) -> Result<RouteId, E> {
                Ok(RouteId(None))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<RouteId, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(RouteId(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<RouteId, A::Error> {
                while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(RouteId(None))
            }
        }
        d.deserialize_any(V)
    }
}

impl Transport<RoleClient> for UpstreamTransport {
    type Error = std::io::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleClient>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let out = self.direct.out.clone();
        async move {
            let mut bytes = serde_json::to_vec(&item).map_err(std::io::Error::other)?;
            bytes.push(b'\n');
            // Queued (waiting for room, in order); the writer task writes it.
            out.send(Out::Line(bytes)).await.map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))
        }
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleClient>> {
        loop {
            let read = match self.lines.read_line().await {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!("reading the upstream's output failed: {e}");
                    Read::Eof
                }
            };
            // No await from here on: a line is used and cleared in one go.
            match read {
                Read::Eof => {
                    self.direct.end("its output ended");
                    return None;
                }
                Read::TooLong => {
                    tracing::warn!("the upstream wrote a line over {MAX_UPSTREAM_LINE} bytes; ignored");
                }
                Read::Line => {
                    let msg = self.route(self.lines.line());
                    self.lines.clear();
                    if msg.is_some() {
                        return msg;
                    }
                }
            }
        }
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        self.direct.end("the gateway closed its connection to it");
        let Some(mut child) = self.child.take() else { return Ok(()) };
        // Its stdin closed is the stdio transport's way to say "exit": the
        // writer task closes it once what was queued before is written.
        // Queueing is part of the grace period (the queue may be full of
        // messages the upstream does not read), and the kill ends the
        // writer task's write, if it is stuck on a full pipe.
        let out = self.direct.out.clone();
        let graceful = async {
            let _ = out.send(Out::Close).await;
            child.wait().await
        };
        if tokio::time::timeout(EXIT_GRACE, graceful).await.is_err() {
            let _ = child.start_kill();
            child.wait().await?;
        }
        Ok(())
    }
}

impl Drop for UpstreamTransport {
    /// Dropped without `close` (rmcp's task ended otherwise): calls waiting
    /// learn it now; the child is killed (`kill_on_drop`) and the writer
    /// task told to stop.
    fn drop(&mut self) {
        self.direct.end("the gateway's connection to it ended");
        let _ = self.direct.out.try_send(Out::Close);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rmcp::model::{JsonRpcMessage, ServerNotification};

    /// An upstream that runs `script` under `sh`.
    fn upstream(script: &str) -> (UpstreamTransport, Arc<Direct>) {
        let mut cmd = tokio::process::Command::new("sh");
        cmd.arg("-c").arg(script);
        UpstreamTransport::spawn(cmd).unwrap()
    }

    fn call(direct: &Arc<Direct>, timeout: Duration) -> tokio::task::JoinHandle<Result<Answer, NoAnswer>> {
        let direct = direct.clone();
        tokio::spawn(async move { direct.call("echo", JsonObject::new(), timeout).await })
    }

    #[tokio::test]
    async fn an_answer_reaches_its_call_once_and_everything_else_goes_to_rmcp_or_nowhere() {
        let (mut t, direct) = upstream(
            r#"read -r req; case "$req" in *'"id":"mcpsec-1"'*) ;; *) exit 3;; esac
            printf '%s\n' 'not json' '{"jsonrpc":"2.0","id":"mcpsec-77","result":{"content":[]}}' \
              '{"jsonrpc":"2.0","method":"notifications/tools/list_changed"}' \
              '{"jsonrpc":"2.0","id":"mcpsec-1","result":{"content":[{"type":"text","text":"hi"}]}}' \
              '{"jsonrpc":"2.0","id":"mcpsec-1","result":{"content":[{"type":"text","text":"again"}]}}'
            read -r rest"#,
        );
        let pending = call(&direct, Duration::from_secs(10));
        // The line that is not JSON and the answer nobody waits for are
        // dropped; the notification is rmcp's.
        let msg = t.receive().await.expect("the notification");
        assert!(
            matches!(msg, JsonRpcMessage::Notification(ref n) if matches!(n.notification, ServerNotification::ToolListChangedNotification(_))),
            "{msg:?}"
        );
        let answer = tokio::select! {
            a = pending => a.unwrap(),
            _ = t.receive() => panic!("the repeated answer must not reach rmcp"),
        };
        match answer {
            Ok(Answer::Result(r)) => assert_eq!(serde_json::to_value(&r.content).unwrap()[0]["text"], "hi"),
            other => panic!("{other:?}"),
        }
        assert!(direct.calls().waiting.is_empty(), "nobody waits any more");
        t.close().await.unwrap();
    }

    #[tokio::test]
    async fn errors_and_malformed_answers_are_told_apart() {
        let (mut t, direct) = upstream(
            r#"read -r a; read -r b
            printf '%s\n' '{"jsonrpc":"2.0","id":"mcpsec-1","error":{"code":-32602,"message":"no such tool"}}' \
              '{"jsonrpc":"2.0","id":"mcpsec-2","result":{"content":"not a list"}}'
            read -r rest"#,
        );
        let (first, second) = (call(&direct, Duration::from_secs(10)), call(&direct, Duration::from_secs(10)));
        let receiving = async {
            let _ = t.receive().await;
        };
        let both = async { (first.await.unwrap(), second.await.unwrap()) };
        let (a, b) = tokio::select! {
            r = both => r,
            () = receiving => panic!("the upstream's output ended"),
        };
        assert!(matches!(a, Ok(Answer::Error(ref e)) if e.message == "no such tool"), "{a:?}");
        assert!(matches!(b, Ok(Answer::Malformed(_))), "{b:?}");
    }

    #[tokio::test]
    async fn a_call_waiting_when_the_upstream_exits_learns_it_and_later_calls_are_refused() {
        let (mut t, direct) = upstream("read -r req; exit 0");
        let pending = call(&direct, Duration::from_secs(10));
        assert!(t.receive().await.is_none(), "the output ended");
        assert!(matches!(pending.await.unwrap(), Err(NoAnswer::Closed(_))));
        assert!(matches!(call(&direct, Duration::from_secs(10)).await.unwrap(), Err(NoAnswer::Closed(_))));
    }

    #[test]
    fn only_ids_written_exactly_as_ours_are_ours() {
        assert_eq!(our_number("mcpsec-1"), Some(1));
        assert_eq!(our_number("mcpsec-4242"), Some(4242));
        for other in ["mcpsec-", "mcpsec-01", "mcpsec-+1", "mcpsec--1", "mcpsec-1a", "mcpsec-1 ", "x-1", "1"] {
            assert_eq!(our_number(other), None, "{other}");
        }
        let id = |line: &str| peek(line.as_bytes()).and_then(|p| p.id?.0);
        assert_eq!(id(r#" {"id":"mcpsec-3","result":{}}"#), Some(3));
        assert_eq!(id(r#"{"id":3,"result":{}}"#), None);
        assert_eq!(id(r#"{"id":["mcpsec-3",{"a":[1,2]}],"result":{}}"#), None);
        assert_eq!(id(r#"["mcpsec-3"]"#), None, "not an object: rmcp's to parse");
    }

    #[tokio::test]
    async fn an_upstream_that_stops_reading_cannot_hold_a_call_or_its_own_shutdown() {
        // Never reads: the pipe fills and the request cannot be written.
        let (mut t, direct) = upstream("exec sleep 30");
        let mut args = JsonObject::new();
        args.insert("blob".into(), "x".repeat(1 << 20).into());
        let started = std::time::Instant::now();
        let answer = direct.call("echo", args, Duration::from_millis(300)).await;
        assert!(matches!(answer, Err(NoAnswer::TimedOut)), "{answer:?}");
        assert!(started.elapsed() < Duration::from_secs(5), "the timeout covers the write: {:?}", started.elapsed());
        // The writer is still stuck on the full pipe; closing kills the child anyway.
        let started = std::time::Instant::now();
        t.close().await.unwrap();
        assert!(started.elapsed() < EXIT_GRACE + Duration::from_secs(3), "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_call_that_times_out_is_cancelled_upstream() {
        // The upstream echoes the second line it reads: the cancellation.
        let (mut t, direct) = upstream("read -r req; read -r note; printf '%s\\n' \"$note\"; read -r rest");
        let answer = call(&direct, Duration::from_millis(100)).await.unwrap();
        assert!(matches!(answer, Err(NoAnswer::TimedOut)), "{answer:?}");
        let msg = t.receive().await.expect("the echoed cancellation");
        let JsonRpcMessage::Notification(n) = msg else { panic!("{msg:?}") };
        let ServerNotification::CancelledNotification(c) = n.notification else { panic!("{:?}", n.notification) };
        assert_eq!(c.params.request_id, Some(rmcp::model::NumberOrString::String("mcpsec-1".into())));
        assert!(direct.calls().waiting.is_empty());
    }

    #[tokio::test]
    async fn a_cancellation_never_overtakes_the_request_it_cancels() {
        // The upstream reads nothing for a while, so the first call's 1 MiB
        // request fills the pipe and the second call's request waits in the
        // queue when the second call times out. Then it reads three lines
        // and echoes the second and third.
        let (mut t, direct) = upstream(
            "sleep 1; read -r big; read -r req; read -r note; printf '%s\\n' \"$req\" \"$note\"; read -r rest",
        );
        let mut args = JsonObject::new();
        args.insert("blob".into(), "x".repeat(1 << 20).into());
        let first = {
            let direct = direct.clone();
            tokio::spawn(async move { direct.call("echo", args, Duration::from_secs(30)).await })
        };
        tokio::task::yield_now().await;
        let second = call(&direct, Duration::from_millis(100)).await.unwrap();
        assert!(matches!(second, Err(NoAnswer::TimedOut)), "{second:?}");
        // The echoed request is a request from the upstream's side of things:
        // rmcp takes it as one (a `tools/call` to the client) and answers it;
        // what matters is what came before what.
        let req = t.receive().await.expect("the echoed request");
        let JsonRpcMessage::Request(r) = req else { panic!("{req:?}") };
        assert_eq!(r.id, rmcp::model::NumberOrString::String("mcpsec-2".into()));
        let note = t.receive().await.expect("the echoed cancellation");
        let JsonRpcMessage::Notification(n) = note else { panic!("{note:?}") };
        let ServerNotification::CancelledNotification(c) = n.notification else { panic!("{:?}", n.notification) };
        assert_eq!(c.params.request_id, Some(rmcp::model::NumberOrString::String("mcpsec-2".into())));
        first.abort();
        t.close().await.unwrap();
    }

    #[tokio::test]
    #[allow(clippy::disallowed_methods)] // reads /proc to see the child gone, not a tool's file
    async fn a_transport_dropped_without_close_ends_its_calls_and_its_child() {
        let (t, direct) = upstream("read -r req; exec sleep 30");
        let pid = t.child.as_ref().and_then(Child::id).expect("a pid");
        let pending = call(&direct, Duration::from_secs(30));
        // The request is written and read.
        tokio::time::sleep(Duration::from_millis(200)).await;
        drop(t);
        let answer = tokio::time::timeout(Duration::from_secs(5), pending).await.expect("answered at once").unwrap();
        assert!(matches!(answer, Err(NoAnswer::Closed(_))), "{answer:?}");
        assert!(direct.ended());
        assert!(matches!(call(&direct, Duration::from_secs(1)).await.unwrap(), Err(NoAnswer::Closed(_))));
        // Killed: gone, or a zombie until tokio reaps it.
        let gone = || match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            Ok(stat) => stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
        };
        let started = std::time::Instant::now();
        while !gone() {
            assert!(started.elapsed() < Duration::from_secs(5), "the child {pid} still runs");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    #[tokio::test]
    async fn calls_beyond_the_queue_are_refused_at_once_not_queued() {
        // Never reads: the first request fills the pipe, the writer task is
        // stuck, and the queue fills behind it.
        let (mut t, direct) = upstream("exec sleep 30");
        let mut args = JsonObject::new();
        args.insert("blob".into(), "x".repeat(1 << 20).into());
        let stuck = {
            let direct = direct.clone();
            tokio::spawn(async move { direct.call("echo", args, Duration::from_secs(30)).await })
        };
        tokio::task::yield_now().await;
        let mut calls = Vec::new();
        for _ in 0..QUEUE + 8 {
            calls.push(call(&direct, Duration::from_secs(30)));
        }
        tokio::task::yield_now().await;
        let started = std::time::Instant::now();
        let refused = call(&direct, Duration::from_secs(30)).await.unwrap();
        assert!(matches!(refused, Err(NoAnswer::Backlog)), "{refused:?}");
        assert!(started.elapsed() < Duration::from_secs(1), "refused at once: {:?}", started.elapsed());
        stuck.abort();
        for c in calls {
            c.abort();
        }
        t.close().await.unwrap();
    }
}
