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
mod tests;
