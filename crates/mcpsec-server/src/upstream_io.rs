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
//! The upstream is untrusted here as everywhere: an answer is only taken
//! for an id this process is waiting for, once; anything else with our
//! prefix is dropped (and logged), never passed to rmcp.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rmcp::RoleClient;
use rmcp::model::{CallToolResult, ErrorData, JsonObject};
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, ChildStdin, ChildStdout};
use tokio::sync::oneshot;

use crate::proxy::upstream_text;
use crate::transport::{LineReader, Read};

/// The prefix of the ids [`Direct`] gives its requests.
const ID_PREFIX: &str = "mcpsec-";

/// How long a closing upstream gets to exit before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(2);

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
    /// or the request could not be written.
    Closed(String),
    /// No answer within the timeout (the request was cancelled upstream).
    TimedOut,
}

/// The direct `tools/call` path, shared by the transport (which delivers
/// answers) and the gateway (which calls).
#[derive(Debug)]
pub(crate) struct Direct {
    /// The child's stdin; `None` once the transport closed it.
    writer: tokio::sync::Mutex<Option<ChildStdin>>,
    waiting: Mutex<HashMap<u64, oneshot::Sender<Answer>>>,
    next: AtomicU64,
    closed: AtomicBool,
}

impl Direct {
    fn waiting(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Answer>>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn write(&self, bytes: &[u8]) -> std::io::Result<()> {
        let mut w = self.writer.lock().await;
        let w = w.as_mut().ok_or_else(|| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        w.write_all(bytes).await?;
        w.flush().await
    }

    /// Writes `bytes` whole even if the caller is dropped meanwhile: half a
    /// line would corrupt the stream for every later message.
    async fn write_whole(self: &Arc<Self>, bytes: Vec<u8>) -> std::io::Result<()> {
        let direct = self.clone();
        match tokio::spawn(async move { direct.write(&bytes).await }).await {
            Ok(r) => r,
            Err(e) => Err(std::io::Error::other(e)),
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
        // One deadline for writing the request and waiting for its answer:
        // an upstream that stops reading its stdin cannot hold a call.
        let deadline = tokio::time::Instant::now() + timeout;
        let (tx, rx) = oneshot::channel();
        {
            let mut waiting = self.waiting();
            // Checked under the lock the reader drains it under: no call
            // waits on an upstream whose output has ended.
            if self.closed.load(Ordering::Acquire) {
                return Err(NoAnswer::Closed("its output had ended".into()));
            }
            waiting.insert(n, tx);
        }
        // From here on a dropped call (timeout, or the client went away)
        // stops waiting and tells the upstream.
        let mut guard = Waiting { direct: self.clone(), n, unanswered: true };
        let request = serde_json::json!({
            "jsonrpc": "2.0",
            "id": format!("{ID_PREFIX}{n}"),
            "method": "tools/call",
            "params": { "name": tool, "arguments": arguments },
        });
        let mut bytes = serde_json::to_vec(&request).map_err(|e| NoAnswer::Closed(e.to_string()))?;
        bytes.push(b'\n');
        match tokio::time::timeout_at(deadline, self.write_whole(bytes)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(NoAnswer::Closed(format!("writing to it failed: {e}"))),
            Err(_) => return Err(NoAnswer::TimedOut),
        }
        match tokio::time::timeout_at(deadline, rx).await {
            Ok(Ok(answer)) => {
                guard.unanswered = false;
                Ok(answer)
            }
            Ok(Err(_)) => {
                guard.unanswered = false;
                Err(NoAnswer::Closed("its output ended".into()))
            }
            Err(_) => Err(NoAnswer::TimedOut),
        }
    }

    /// Hands an answer to its waiting call; false if nobody waits for it.
    fn deliver(&self, n: u64, answer: Answer) -> bool {
        match self.waiting().remove(&n) {
            Some(tx) => tx.send(answer).is_ok(),
            None => false,
        }
    }

    /// The upstream's output ended: every waiting call learns it now.
    fn close(&self) {
        let mut waiting = self.waiting();
        self.closed.store(true, Ordering::Release);
        waiting.clear();
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
        self.direct.waiting().remove(&self.n);
        if !self.unanswered || self.direct.closed.load(Ordering::Acquire) {
            return;
        }
        let note = serde_json::json!({
            "jsonrpc": "2.0",
            "method": "notifications/cancelled",
            "params": { "requestId": format!("{ID_PREFIX}{}", self.n), "reason": "mcpsec stopped waiting for the answer" },
        });
        let Ok(mut bytes) = serde_json::to_vec(&note) else { return };
        bytes.push(b'\n');
        // A drop cannot wait: a task of its own writes it.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let direct = self.direct.clone();
            runtime.spawn(async move {
                let _ = direct.write(&bytes).await;
            });
        }
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
    /// the transport is dropped).
    pub(crate) fn spawn(mut cmd: tokio::process::Command) -> std::io::Result<(UpstreamTransport, Arc<Direct>)> {
        cmd.stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true);
        let mut child = cmd.spawn()?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            return Err(std::io::Error::other("the child's stdin or stdout was not piped"));
        };
        let direct = Arc::new(Direct {
            writer: tokio::sync::Mutex::new(Some(stdin)),
            waiting: Mutex::new(HashMap::new()),
            next: AtomicU64::new(1),
            closed: AtomicBool::new(false),
        });
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
        let direct = self.direct.clone();
        async move {
            let mut bytes = serde_json::to_vec(&item).map_err(std::io::Error::other)?;
            bytes.push(b'\n');
            direct.write(&bytes).await
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
                    self.direct.close();
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
        self.direct.close();
        let Some(mut child) = self.child.take() else { return Ok(()) };
        // Its stdin closed is the stdio transport's way to say "exit"; the
        // lock is part of the grace period (a writer may be stuck on a full
        // pipe), and the kill releases whatever still waits on it.
        let direct = self.direct.clone();
        let graceful = async {
            drop(direct.writer.lock().await.take());
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
    /// learn it now; the child is killed (`kill_on_drop`).
    fn drop(&mut self) {
        self.direct.close();
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
        assert!(direct.waiting().is_empty(), "nobody waits any more");
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
        assert!(direct.waiting().is_empty());
    }
}
