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
//! cancellation notes — goes through one bounded queue (messages and bytes)
//! to one writer task, in the order it was queued: a call's
//! `notifications/cancelled` can never reach the upstream before the
//! request it cancels; the request of a call that stopped waiting before it
//! was written is not written at all (nor its cancellation); messages queued
//! while the pipe was busy go out in one `write(2)`. An upstream that leaves
//! the queue full has stopped reading: its session ends (every waiting call
//! learns it) and the next call restarts it.
//!
//! The upstream is untrusted here as everywhere: an answer is only taken
//! for an id this process is waiting for, once; anything else with our
//! prefix is dropped (and logged), never passed to rmcp.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use rmcp::RoleClient;
use rmcp::model::{CallToolResult, ErrorData, JsonObject};
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::process::{Child, ChildStdout};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::transport::{LineReader, Read};
use mcpsec_core::scan::sanitize;

/// The prefix of the ids [`Direct`] gives its requests.
const ID_PREFIX: &str = "mcpsec-";

/// How long a closing upstream gets to exit before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(2);

/// Messages queued for the upstream and not yet written: past this the
/// upstream has stopped reading its input, and its session is ended rather
/// than more queued behind it (the queue's memory stays bounded).
const QUEUE: usize = 1024;

/// Bytes queued for the upstream and not yet written, the same way; one
/// message of any size (up to the longest line a client may send) is taken
/// when nothing else waits.
const QUEUE_BYTES: usize = crate::transport::MAX_LINE;

/// Why calls end when the queue to the upstream is full.
const STOPPED_READING: &str = "it stopped reading its input";

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
    /// The request was not sent: the upstream has left [`QUEUE`] messages
    /// or [`QUEUE_BYTES`] bytes unread. Its session is ended.
    Backlog,
    /// No answer within the timeout (the request was cancelled upstream).
    TimedOut,
}

/// What the writer task takes from the queue (messages with their newline).
#[derive(Debug)]
enum Out {
    /// Call `n`'s request: written only if the call still waits.
    Request(u64, Vec<u8>),
    /// Any other message.
    Line(Vec<u8>),
    /// Write what came before, then close the child's stdin.
    Close,
}

/// Why a message was not queued.
enum Full {
    /// The queue is full: the upstream stopped reading.
    Backlog,
    /// The writer task is gone (a write failed, or the session is over).
    Gone,
}

/// The direct `tools/call` path, shared by the transport (which delivers
/// answers) and the gateway (which calls).
#[derive(Debug)]
pub(crate) struct Direct {
    /// The queue to the writer task, which owns the child's stdin.
    out: mpsc::Sender<Out>,
    /// Bytes queued and not yet written (or skipped).
    queued: AtomicUsize,
    /// Stops the writer task at once (the child is gone or being killed).
    stop: Arc<Notify>,
    calls: Mutex<Calls>,
    next: AtomicU64,
}

/// The calls waiting for an answer, and whether any more can be.
#[derive(Debug, Default)]
struct Calls {
    waiting: HashMap<u64, Waiter>,
    /// Why no call can be answered any more (the output ended, the input
    /// could not be written, the upstream stopped reading it); set once.
    ended: Option<&'static str>,
}

impl Calls {
    fn end(&mut self, why: &'static str) {
        self.ended.get_or_insert(why);
        self.waiting.clear();
    }
}

/// One waiting call.
#[derive(Debug)]
struct Waiter {
    answer: oneshot::Sender<Answer>,
    /// Whether the writer task took its request (so the upstream may be
    /// working on it: a call that stops waiting then sends a cancellation).
    sent: bool,
}

impl Direct {
    /// A direct path and the receiving end of its queue (for [`write_out`]).
    fn new() -> (Arc<Direct>, mpsc::Receiver<Out>) {
        let (out, queue) = mpsc::channel(QUEUE);
        let direct = Arc::new(Direct {
            out,
            queued: AtomicUsize::new(0),
            stop: Arc::new(Notify::new()),
            calls: Mutex::new(Calls::default()),
            next: AtomicU64::new(1),
        });
        (direct, queue)
    }

    fn calls(&self) -> std::sync::MutexGuard<'_, Calls> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues `out` (`len` bytes) without waiting, in order.
    fn queue(&self, out: Out, len: usize) -> Result<(), Full> {
        let before = self.queued.fetch_add(len, Ordering::AcqRel);
        if before > 0 && before.saturating_add(len) > QUEUE_BYTES {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            return Err(Full::Backlog);
        }
        self.out.try_send(out).map_err(|e| {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            match e {
                mpsc::error::TrySendError::Full(_) => Full::Backlog,
                mpsc::error::TrySendError::Closed(_) => Full::Gone,
            }
        })
    }

    /// Queues one of rmcp's messages (or a cancellation); a full queue ends
    /// the session.
    fn queue_line(&self, bytes: Vec<u8>) -> std::io::Result<()> {
        let len = bytes.len();
        match self.queue(Out::Line(bytes), len) {
            Ok(()) => Ok(()),
            Err(Full::Backlog) => {
                self.end(STOPPED_READING);
                Err(std::io::Error::other(format!("the upstream {STOPPED_READING}")))
            }
            Err(Full::Gone) => Err(std::io::Error::from(std::io::ErrorKind::BrokenPipe)),
        }
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
        let len = bytes.len();
        let (tx, rx) = oneshot::channel();
        {
            let mut calls = self.calls();
            // Checked under the lock the reader ends it under: no call
            // waits on an upstream whose output has ended.
            if let Some(why) = calls.ended {
                return Err(NoAnswer::Closed(why.into()));
            }
            // Queued before anything that could cancel it; waiting before
            // the writer task looks for it.
            match self.queue(Out::Request(n, bytes), len) {
                Ok(()) => {}
                Err(Full::Backlog) => {
                    calls.end(STOPPED_READING);
                    return Err(NoAnswer::Backlog);
                }
                Err(Full::Gone) => return Err(NoAnswer::Closed("writing to it failed".into())),
            }
            calls.waiting.insert(n, Waiter { answer: tx, sent: false });
        }
        // From here on a dropped call (the client went away) stops waiting
        // and tells the upstream. The timeout covers the queue and the
        // write: an upstream that stops reading cannot hold a call.
        let _waiting = Waiting { direct: self.clone(), n };
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(answer)) => Ok(answer),
            Ok(Err(_)) => Err(NoAnswer::Closed(self.calls().ended.unwrap_or("its output ended").into())),
            Err(_) => Err(NoAnswer::TimedOut),
        }
    }

    /// Hands an answer to its waiting call; false if nobody waits for it.
    fn deliver(&self, n: u64, answer: Answer) -> bool {
        match self.calls().waiting.remove(&n) {
            Some(w) => w.answer.send(answer).is_ok(),
            None => false,
        }
    }

    /// No call can be answered any more (`why`): every waiting call learns
    /// it now, and later ones are refused.
    fn end(&self, why: &'static str) {
        self.calls().end(why);
    }

    /// The writer task takes call `n`'s request: whether to write it (the
    /// call still waits), marking it sent.
    fn take_request(&self, n: u64) -> bool {
        self.calls().waiting.get_mut(&n).map(|w| w.sent = true).is_some()
    }

    /// Whether no call can be answered any more (the session is over).
    pub(crate) fn ended(&self) -> bool {
        self.calls().ended.is_some()
    }
}

/// The writer task: takes messages from the queue in order and writes them
/// to the child's stdin, as many as are queued (up to [`BATCH_BYTES`]) in
/// one write, leaving out the requests of calls that no longer wait. Stops
/// on [`Out::Close`], when every sender is gone, when told to (`stop`: the
/// child is gone; a grandchild may still hold the pipe), or when a write
/// fails (the calls waiting then learn it); stdin closes as it stops. It
/// holds the path only weakly: the path's end ends the queue.
async fn write_out<W: AsyncWrite + Unpin>(
    mut stdin: W,
    mut queue: mpsc::Receiver<Out>,
    direct: Weak<Direct>,
    stop: Arc<Notify>,
) {
    let mut batch = Vec::new();
    loop {
        let first = tokio::select! {
            biased;
            () = stop.notified() => return,
            out = queue.recv() => match out {
                Some(out) => out,
                None => return,
            },
        };
        // Bytes taken off the queue, given back once written.
        let (mut taken, mut close) = (0, false);
        let mut next = Some(first);
        while let Some(out) = next.take() {
            let (bytes, wanted) = match out {
                Out::Close => {
                    close = true;
                    break;
                }
                Out::Line(bytes) => (bytes, true),
                Out::Request(n, bytes) => {
                    let wanted = direct.upgrade().is_some_and(|d| d.take_request(n));
                    (bytes, wanted)
                }
            };
            taken += bytes.len();
            if wanted {
                if batch.is_empty() {
                    batch = bytes;
                } else {
                    batch.extend_from_slice(&bytes);
                }
            }
            if batch.len() < BATCH_BYTES {
                next = queue.try_recv().ok();
            }
        }
        let written = if batch.is_empty() {
            Ok(())
        } else {
            tokio::select! {
                biased;
                () = stop.notified() => return,
                r = stdin.write_all(&batch) => r,
            }
        };
        batch.clear();
        if let Some(d) = direct.upgrade() {
            d.queued.fetch_sub(taken, Ordering::AcqRel);
        }
        if let Err(e) = written {
            tracing::warn!("writing to the upstream failed: {e}");
            if let Some(d) = direct.upgrade() {
                d.end("writing to it failed");
            }
            return;
        }
        if close {
            return;
        }
    }
}

/// A call in progress; dropped while its request is out and unanswered
/// (a timeout, or the client went away), it stops waiting and sends
/// `notifications/cancelled` (best effort) so the upstream can stop. An
/// answered or ended call is no longer in `waiting`: nothing to cancel.
struct Waiting {
    direct: Arc<Direct>,
    n: u64,
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let sent = {
            let mut calls = self.direct.calls();
            let waiter = calls.waiting.remove(&self.n);
            calls.ended.is_none() && waiter.is_some_and(|w| w.sent)
        };
        // A request never taken is never written: nothing to cancel.
        if !sent {
            return;
        }
        let note = serde_json::json!({
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": { "requestId": format!("{ID_PREFIX}{}", self.n), "reason": "mcpsec stopped waiting for the answer" },
        });
        let Ok(mut bytes) = serde_json::to_vec(&note) else { return };
        bytes.push(b'\n');
        // Behind the request in the queue; best effort.
        let _ = self.direct.queue_line(bytes);
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
        let (direct, queue) = Direct::new();
        tokio::spawn(write_out(stdin, queue, Arc::downgrade(&direct), direct.stop.clone()));
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
        // Queued now, not when the future is first polled: rmcp sends in
        // order, and its messages reach the upstream in that order.
        let queued = serde_json::to_vec(&item).map_err(std::io::Error::other).and_then(|mut bytes| {
            bytes.push(b'\n');
            self.direct.queue_line(bytes)
        });
        std::future::ready(queued)
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleClient>> {
        loop {
            let read = self.lines.next("the upstream's output").await;
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
        self.direct.end("mcpsec closed its connection to it, to shut down or restart it");
        let Some(mut child) = self.child.take() else { return Ok(()) };
        // Its stdin closed is the stdio transport's way to say "exit": the
        // writer task closes it once what was queued before is written
        // (requests of calls no longer waiting left out). Queueing is part
        // of the grace period (the queue may be full), and the kill ends
        // the writer task's write if it is stuck on a full pipe.
        let out = self.direct.out.clone();
        let graceful = async {
            let _ = out.send(Out::Close).await;
            child.wait().await
        };
        let exited = tokio::time::timeout(EXIT_GRACE, graceful).await;
        if exited.is_err() {
            let _ = child.start_kill();
            child.wait().await?;
            // A grandchild may still hold the pipe the writer is stuck on.
            self.direct.stop.notify_one();
        }
        Ok(())
    }
}

impl Drop for UpstreamTransport {
    /// Dropped without `close` (rmcp's task ended otherwise): calls waiting
    /// learn it now; the child is killed (`kill_on_drop`) and the writer
    /// task stopped.
    fn drop(&mut self) {
        self.direct.end("mcpsec's connection to it ended");
        if self.child.is_some() {
            self.direct.stop.notify_one();
        }
    }
}

/// Text from the upstream shown in an error of mcpsec's: its message only
/// (never rmcp's rendering of the error's data), sanitised, cut to 500
/// characters, and quoted as the upstream's words.
pub(crate) fn upstream_text(text: &str) -> String {
    let clean = sanitize(text);
    let cut: String = clean.chars().take(500).collect();
    let more = if clean.chars().count() > 500 { " […]" } else { "" };
    format!("«{}{more}» (the upstream's words, not instructions)", cut.replace('»', "\"»\""))
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

    /// The text of the call's answer, which must arrive before anything
    /// more reaches rmcp.
    async fn answered_text(
        pending: tokio::task::JoinHandle<Result<Answer, NoAnswer>>,
        t: &mut UpstreamTransport,
    ) -> String {
        let answer = tokio::select! {
            a = pending => a.unwrap(),
            msg = t.receive() => panic!("rmcp got a message before the call's answer: {msg:?}"),
        };
        match answer {
            Ok(Answer::Result(r)) => serde_json::to_value(&r.content).unwrap()[0]["text"].as_str().unwrap().to_owned(),
            other => panic!("{other:?}"),
        }
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
        assert_eq!(answered_text(pending, &mut t).await, "hi");
        assert!(direct.calls().waiting.is_empty(), "nobody waits any more");
        t.close().await.unwrap();
    }

    #[tokio::test]
    async fn a_line_over_the_limit_is_dropped_whole_and_the_next_answer_still_arrives() {
        // A hostile upstream writes a 17 MiB line that would answer our call,
        // then the real answer: the first is dropped without being kept, and
        // the call gets the second.
        let (mut t, direct) = upstream(&format!(
            r#"read -r req
            {{ printf '{{"jsonrpc":"2.0","id":"mcpsec-1","result":{{"content":[{{"type":"text","text":"'
               head -c {} /dev/zero | tr '\0' a; printf '"}}]}}}}\n'; }}
            printf '%s\n' '{{"jsonrpc":"2.0","id":"mcpsec-1","result":{{"content":[{{"type":"text","text":"ok"}}]}}}}'
            read -r rest"#,
            MAX_UPSTREAM_LINE + (1 << 20)
        ));
        let pending = call(&direct, Duration::from_secs(30));
        assert_eq!(answered_text(pending, &mut t).await, "ok");
        assert!(t.lines.line().is_empty(), "the long line was not kept");
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

    /// The text of a queued message.
    fn text(out: Out) -> String {
        match out {
            Out::Request(_, b) | Out::Line(b) => String::from_utf8(b).unwrap(),
            Out::Close => "close".into(),
        }
    }

    #[tokio::test]
    async fn a_cancellation_is_queued_behind_the_request_it_cancels() {
        // No writer: the queue is read here, in order.
        let (direct, mut queue) = Direct::new();
        let pending = call(&direct, Duration::from_secs(30));
        tokio::task::yield_now().await;
        // As the writer task would: take the request (it is sent), then the
        // call goes away.
        let request = queue.try_recv().unwrap();
        assert!(matches!(request, Out::Request(1, _)));
        assert!(direct.take_request(1));
        pending.abort();
        let _ = pending.await;
        let note = text(queue.try_recv().expect("a cancellation"));
        assert!(note.contains("notifications/cancelled") && note.contains("\"mcpsec-1\""), "{note}");
        assert!(text(request).contains("\"id\":\"mcpsec-1\""));
        assert!(queue.try_recv().is_err(), "nothing else");
    }

    #[tokio::test]
    async fn a_request_whose_call_stopped_waiting_before_it_was_written_is_never_written() {
        let (direct, queue) = Direct::new();
        // Call 1 times out while its request is still queued (no writer yet).
        let gone = call(&direct, Duration::from_millis(1)).await.unwrap();
        assert!(matches!(gone, Err(NoAnswer::TimedOut)), "{gone:?}");
        let waiting = call(&direct, Duration::from_secs(30));
        tokio::task::yield_now().await;
        // Now the writer runs, into a pipe read here.
        let (ours, theirs) = tokio::io::duplex(1 << 20);
        let writer = tokio::spawn(write_out(theirs, queue, Arc::downgrade(&direct), direct.stop.clone()));
        let mut lines = tokio::io::BufReader::new(ours);
        let mut line = String::new();
        tokio::io::AsyncBufReadExt::read_line(&mut lines, &mut line).await.unwrap();
        assert!(line.contains("\"id\":\"mcpsec-2\""), "call 1's request and its cancellation are left out: {line}");
        assert_eq!(direct.queued.load(Ordering::Acquire), 0, "every byte taken is given back");
        // Stopping the writer closes the pipe: nothing else was written.
        direct.stop.notify_one();
        writer.await.unwrap();
        let mut rest = String::new();
        tokio::io::AsyncReadExt::read_to_string(&mut lines, &mut rest).await.unwrap();
        assert_eq!(rest, "");
        waiting.abort();
    }

    #[tokio::test]
    #[allow(clippy::disallowed_methods)] // reads /proc to see the child gone, not a tool's file
    async fn a_transport_dropped_without_close_ends_its_calls_and_its_child() {
        let tmp = tempfile::tempdir().unwrap();
        let read = tmp.path().join("read");
        let (t, direct) = upstream(&format!("read -r req; : > '{}'; exec sleep 30", read.display()));
        let pid = t.child.as_ref().and_then(Child::id).expect("a pid");
        let pending = call(&direct, Duration::from_secs(30));
        // The request is written and read: the upstream says so in a file.
        let seen = async {
            while !read.exists() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        tokio::time::timeout(Duration::from_secs(60), seen).await.expect("the upstream never read the request");
        drop(t);
        let answer = tokio::time::timeout(Duration::from_secs(5), pending).await.expect("answered at once").unwrap();
        assert!(matches!(answer, Err(NoAnswer::Closed(_))), "{answer:?}");
        assert!(direct.ended());
        assert!(matches!(call(&direct, Duration::from_secs(1)).await.unwrap(), Err(NoAnswer::Closed(_))));
        // The writer task stopped (its end of the queue is gone).
        let started = std::time::Instant::now();
        while !direct.out.is_closed() {
            assert!(started.elapsed() < Duration::from_secs(5), "the writer task still runs");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
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
    async fn an_upstream_that_leaves_the_queue_full_has_its_session_ended_at_once() {
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
        let started = std::time::Instant::now();
        let calls: Vec<_> = (0..QUEUE + 8).map(|_| call(&direct, Duration::from_secs(30))).collect();
        let mut backlog = 0;
        for c in calls {
            match c.await.unwrap() {
                Err(NoAnswer::Backlog) => backlog += 1,
                Err(NoAnswer::Closed(why)) => assert_eq!(why, STOPPED_READING),
                other => panic!("{other:?}"),
            }
        }
        // The first call that found the queue full ended the session: every
        // call waiting learnt it, and the later ones were refused.
        assert_eq!(backlog, 1);
        assert!(started.elapsed() < Duration::from_secs(5), "at once, not after the timeout: {:?}", started.elapsed());
        assert!(matches!(stuck.await.unwrap(), Err(NoAnswer::Closed(_))));
        assert!(direct.ended());
        t.close().await.unwrap();
    }

    #[test]
    fn the_queue_is_bounded_in_bytes_too_but_takes_one_message_of_any_size() {
        let (direct, _queue) = Direct::new();
        assert!(direct.queue(Out::Line(Vec::new()), QUEUE_BYTES + 1).is_ok(), "alone in the queue");
        assert!(matches!(direct.queue(Out::Line(Vec::new()), 1), Err(Full::Backlog)));
        assert_eq!(direct.queued.load(Ordering::Acquire), QUEUE_BYTES + 1, "a refused message is not counted");
    }
}
