//! Newline-delimited JSON-RPC over stdin/stdout.
//!
//! rmcp's own stdio transport drops a line that is not JSON without a word;
//! JSON-RPC 2.0 asks for a `-32700 Parse error` reply (with `id: null`), and
//! an operator debugging a client deserves one. This transport answers every
//! malformed line (not JSON, not a JSON-RPC message, too long) with an error
//! and keeps serving. Nothing but JSON-RPC is ever written to stdout.
//!
//! It also holds a server's requests until its start is recorded
//! ([`StartGate`]): the handshake is answered at once, and nothing else is
//! handed to the server before the start record is durable; if it cannot
//! be written, every such request is refused with the reason.

use std::sync::Arc;

use rmcp::RoleServer;
use rmcp::model::{ClientRequest, JsonRpcMessage};
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{Mutex, watch};

/// The longest request line accepted (a `write_file` carries the whole
/// file). Longer lines are discarded with an error reply.
pub const MAX_LINE: usize = 64 << 20;

/// A JSON-RPC transport over a byte stream pair.
#[derive(Debug)]
pub struct LineTransport<R, W> {
    lines: LineReader<R>,
    writer: Arc<Mutex<W>>,
    /// Until the server's start is recorded: what requests wait for
    /// (`None` once it is, or for a transport without one).
    gate: Option<StartGate>,
    /// A request read while the gate was closed, waiting for it. Kept here,
    /// not on the stack: rmcp cancels `receive`, and a cancelled wait must
    /// not lose the request.
    held: Option<RxJsonRpcMessage<RoleServer>>,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> LineTransport<R, W> {
    /// A transport reading requests from `reader`, writing to `writer`.
    pub fn new(reader: R, writer: W) -> Self {
        LineTransport { lines: LineReader::new(reader), writer: Arc::new(Mutex::new(writer)), gate: None, held: None }
    }

    /// This transport, handing the server no request but the handshake's
    /// (`initialize`, `ping`, `server/discover`) until `gate` opens; if it
    /// opens with an error, every other request is answered with that error
    /// and never reaches the server. Notifications pass.
    pub fn with_start_gate(mut self, gate: StartGate) -> Self {
        self.gate = Some(gate);
        self
    }
}

/// Whether a server's start is recorded durably: what a [`LineTransport`]
/// holds requests for. Made with [`StartGate::new`], opened by its
/// [`StartRecorded`].
#[derive(Debug, Clone)]
pub struct StartGate {
    state: watch::Receiver<Option<Result<(), String>>>,
}

/// Opens a [`StartGate`]: once, with whether the start record is durable.
/// Dropped without opening, the gate opens with an error (no call acts on
/// a start nobody vouched for).
#[derive(Debug)]
pub struct StartRecorded {
    state: watch::Sender<Option<Result<(), String>>>,
}

impl StartGate {
    /// A closed gate and what opens it.
    pub fn new() -> (StartGate, StartRecorded) {
        let (tx, rx) = watch::channel(None);
        (StartGate { state: rx }, StartRecorded { state: tx })
    }

    /// Resolves once the gate is open: `Ok` if the start is recorded
    /// durably, else why not. Cancel-safe.
    pub async fn wait(&mut self) -> Result<(), String> {
        match self.state.wait_for(Option::is_some).await {
            Ok(state) => state.clone().unwrap_or_else(|| Err("the server's start was not recorded".into())),
            Err(_) => Err("the server's start was not recorded (its writer stopped)".into()),
        }
    }
}

impl StartRecorded {
    /// Opens the gate: requests go through (`Ok`), or are refused with
    /// the error.
    pub fn open(self, recorded: Result<(), String>) {
        self.state.send_replace(Some(recorded));
    }
}

/// Whether a request may reach the server before its start is recorded:
/// the handshake's, which act on nothing.
fn before_start(msg: &RxJsonRpcMessage<RoleServer>) -> bool {
    match msg {
        JsonRpcMessage::Request(r) => matches!(
            r.request,
            ClientRequest::InitializeRequest(_) | ClientRequest::PingRequest(_) | ClientRequest::DiscoverRequest(_)
        ),
        // Notifications (`notifications/initialized` ends the handshake),
        // and anything else a client sends that is not a request.
        _ => true,
    }
}

/// Newline-delimited lines from a byte stream, each at most a limit long
/// ([`MAX_LINE`] unless said otherwise).
#[derive(Debug)]
pub(crate) struct LineReader<R> {
    reader: BufReader<R>,
    /// The longest line kept.
    max: usize,
    /// The line being read. rmcp cancels `receive` (it selects over it), so
    /// everything consumed from the reader lives here, not on the stack:
    /// a cancelled read resumes the same line instead of losing its start.
    line: Vec<u8>,
    /// Whether the line being read is over the limit (and discarded).
    too_long: bool,
}

async fn write_line<W: AsyncWrite + Unpin>(writer: &Mutex<W>, bytes: &[u8]) -> std::io::Result<()> {
    let mut w = writer.lock().await;
    w.write_all(bytes).await?;
    w.flush().await
}

fn error_line(id: &serde_json::Value, code: i64, message: &str) -> Vec<u8> {
    let mut out = serde_json::to_vec(&serde_json::json!({
        "jsonrpc": "2.0",
        "id": id,
        "error": { "code": code, "message": message },
    }))
    .unwrap_or_default();
    out.push(b'\n');
    out
}

/// What [`LineReader::read_line`] found.
pub(crate) enum Read {
    /// A line, in [`LineReader::line`].
    Line,
    /// A line longer than the limit, discarded.
    TooLong,
    /// The end of the stream.
    Eof,
}

impl<R: AsyncRead + Unpin> LineReader<R> {
    pub(crate) fn new(reader: R) -> Self {
        LineReader::with_limit(reader, MAX_LINE)
    }

    /// A reader that discards lines longer than `max` bytes.
    pub(crate) fn with_limit(reader: R, max: usize) -> Self {
        LineReader {
            reader: BufReader::with_capacity(64 << 10, reader),
            max,
            line: Vec::with_capacity(8 << 10),
            too_long: false,
        }
    }

    /// The line read, without its `\r\n` or `\n`.
    pub(crate) fn line(&self) -> &[u8] {
        self.line.strip_suffix(b"\r").unwrap_or(&self.line)
    }

    /// Forgets the line read (the caller is done with it).
    pub(crate) fn clear(&mut self) {
        self.line.clear();
    }

    /// [`LineReader::read_line`], with a read error logged (naming
    /// `source`) and taken as the end of the stream.
    pub(crate) async fn next(&mut self, source: &str) -> Read {
        self.read_line().await.unwrap_or_else(|e| {
            tracing::error!("reading {source} failed: {e}");
            Read::Eof
        })
    }

    /// Reads one line into `self.line` (without the newline), discarding
    /// the rest of a line longer than the limit. Cancel-safe: the only
    /// await is `fill_buf`, and what was consumed before it is in `self`.
    /// The caller clears the line once it has used it.
    async fn read_line(&mut self) -> std::io::Result<Read> {
        loop {
            let buf = self.reader.fill_buf().await?;
            if buf.is_empty() {
                let read = match (self.too_long, self.line.is_empty()) {
                    (true, _) => Read::TooLong,
                    (false, true) => Read::Eof,
                    (false, false) => Read::Line,
                };
                self.too_long = false;
                return Ok(read);
            }
            let newline = memchr(buf);
            let chunk = &buf[..newline.unwrap_or(buf.len())];
            if !self.too_long {
                if self.line.len() + chunk.len() > self.max {
                    self.too_long = true;
                    self.line = Vec::new();
                } else {
                    self.line.extend_from_slice(chunk);
                }
            }
            let used = newline.map_or(buf.len(), |i| i + 1);
            self.reader.consume(used);
            if newline.is_some() {
                let read = if self.too_long { Read::TooLong } else { Read::Line };
                self.too_long = false;
                return Ok(read);
            }
        }
    }
}

impl<R, W> LineTransport<R, W>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send + 'static,
{
    /// What to do with the line just read: a message, or an error reply.
    fn parse_line(&self) -> Option<Result<RxJsonRpcMessage<RoleServer>, Vec<u8>>> {
        let line = self.lines.line();
        if line.iter().all(u8::is_ascii_whitespace) {
            return None;
        }
        Some(match serde_json::from_slice::<RxJsonRpcMessage<RoleServer>>(line) {
            Ok(msg) => Ok(msg),
            Err(e) if e.is_syntax() || e.is_eof() => {
                tracing::debug!("unparsable message: {e}");
                Err(error_line(&serde_json::Value::Null, -32700, &format!("Parse error: {e}")))
            }
            Err(e) => {
                tracing::debug!("not a JSON-RPC message: {e}");
                // Answer with the request's id when it has a usable one.
                let id = serde_json::from_slice::<serde_json::Value>(line)
                    .ok()
                    .and_then(|v| v.get("id").cloned())
                    .filter(|id| id.is_string() || id.is_number())
                    .unwrap_or(serde_json::Value::Null);
                Err(error_line(&id, -32600, &format!("Invalid Request: {e}")))
            }
        })
    }
}

impl<R, W: AsyncWrite + Unpin + Send + 'static> LineTransport<R, W> {
    /// Writes `line` from a task of its own, so that a cancelled `receive`
    /// never leaves half a line on stdout.
    fn write_detached(&self, line: Vec<u8>) {
        let writer = self.writer.clone();
        tokio::spawn(async move {
            if let Err(e) = write_line(&writer, &line).await {
                tracing::error!("writing stdout failed: {e}");
            }
        });
    }
}

/// The answer to a request while the server's start could not be recorded.
fn start_refusal(why: &str) -> String {
    format!(
        "refused: the server's start could not be recorded in the audit log ({why}), and mcpsec does not act \
         without a record. The operator can check the disk and the log with `mcpsec audit verify`, then restart \
         the server"
    )
}

fn memchr(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|&b| b == b'\n')
}

impl<R, W> Transport<RoleServer> for LineTransport<R, W>
where
    R: AsyncRead + Unpin + Send,
    W: AsyncWrite + Unpin + Send + 'static,
{
    type Error = std::io::Error;

    fn send(
        &mut self,
        item: TxJsonRpcMessage<RoleServer>,
    ) -> impl Future<Output = Result<(), Self::Error>> + Send + 'static {
        let writer = self.writer.clone();
        async move {
            let mut bytes = serde_json::to_vec(&item).map_err(std::io::Error::other)?;
            bytes.push(b'\n');
            write_line(&writer, &bytes).await
        }
    }

    async fn receive(&mut self) -> Option<RxJsonRpcMessage<RoleServer>> {
        loop {
            if self.held.is_some() {
                let opened = match &mut self.gate {
                    // The only await while a request is held; it stays in `self`.
                    Some(gate) => gate.wait().await,
                    None => Ok(()),
                };
                let msg = self.held.take()?;
                match opened {
                    Ok(()) => {
                        self.gate = None;
                        return Some(msg);
                    }
                    Err(why) => {
                        let id = match &msg {
                            JsonRpcMessage::Request(r) => serde_json::to_value(&r.id).unwrap_or_default(),
                            _ => serde_json::Value::Null,
                        };
                        let reply = error_line(&id, -32603, &start_refusal(&why));
                        self.write_detached(reply);
                        continue;
                    }
                }
            }
            let read = self.lines.next("stdin").await;
            // No await from here on: a line is used and cleared in one go.
            let reply = match read {
                Read::Eof => return None,
                Read::TooLong => error_line(
                    &serde_json::Value::Null,
                    -32600,
                    "Invalid Request: the message is longer than the 64 MiB limit",
                ),
                Read::Line => {
                    let parsed = self.parse_line();
                    self.lines.clear();
                    match parsed {
                        None => continue,
                        Some(Ok(msg)) if self.gate.is_none() || before_start(&msg) => return Some(msg),
                        Some(Ok(msg)) => {
                            self.held = Some(msg);
                            continue;
                        }
                        Some(Err(reply)) => reply,
                    }
                }
            };
            self.write_detached(reply);
        }
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        let mut w = self.writer.lock().await;
        w.flush().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INIT: &str = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}"#;
    const CALL: &str = r#"{"jsonrpc":"2.0","id":7,"method":"tools/call","params":{"name":"write_file","arguments":{"path":"x","content":"y"}}}"#;
    const INITIALIZED: &str = r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#;

    type Duplex = tokio::io::DuplexStream;

    /// A gated transport with `lines` already sent to it (and its input
    /// closed after them), what opens its gate, and its output.
    async fn gated(lines: &[&str]) -> (LineTransport<Duplex, Duplex>, StartRecorded, BufReader<Duplex>) {
        let (mut client_in, server_in) = tokio::io::duplex(1 << 16);
        let (server_out, client_out) = tokio::io::duplex(1 << 16);
        for line in lines {
            client_in.write_all(format!("{line}\n").as_bytes()).await.unwrap();
        }
        drop(client_in);
        let (gate, recorded) = StartGate::new();
        (LineTransport::new(server_in, server_out).with_start_gate(gate), recorded, BufReader::new(client_out))
    }

    fn method(msg: Option<RxJsonRpcMessage<RoleServer>>) -> String {
        match msg {
            Some(JsonRpcMessage::Request(r)) => r.request.method().to_owned(),
            Some(JsonRpcMessage::Notification(_)) => "a notification".into(),
            Some(_) => "something else".into(),
            None => "the end".into(),
        }
    }

    /// `receive` polled once: what it returns if it does not wait (for the
    /// gate: the input is all there). Dropping it cancels it, as rmcp does.
    async fn without_waiting(t: &mut LineTransport<Duplex, Duplex>) -> Option<String> {
        tokio::select! {
            biased;
            msg = t.receive() => Some(method(msg)),
            () = std::future::ready(()) => None,
        }
    }

    #[tokio::test]
    async fn a_call_waits_for_the_start_record_and_the_handshake_does_not() {
        let (mut t, recorded, _out) = gated(&[INIT, INITIALIZED, CALL]).await;
        assert_eq!(method(t.receive().await), "initialize");
        assert_eq!(method(t.receive().await), "a notification");
        // The call is held, and a cancelled wait keeps it.
        assert_eq!(without_waiting(&mut t).await, None);
        assert_eq!(without_waiting(&mut t).await, None);
        recorded.open(Ok(()));
        assert_eq!(method(t.receive().await), "tools/call");
        assert_eq!(method(t.receive().await), "the end");
    }

    #[tokio::test]
    async fn a_start_record_that_failed_refuses_every_call_with_the_reason() {
        let (mut t, recorded, mut out) = gated(&[INIT, CALL, INITIALIZED, CALL]).await;
        recorded.open(Err("audit log /s/audit.log is full".into()));
        assert_eq!(method(t.receive().await), "initialize");
        // Neither call reaches the server; the notification between them does.
        assert_eq!(method(t.receive().await), "a notification");
        assert_eq!(method(t.receive().await), "the end");
        for _ in 0..2 {
            let mut line = String::new();
            out.read_line(&mut line).await.unwrap();
            let reply: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert_eq!(reply["id"], 7, "{line}");
            assert_eq!(reply["error"]["code"], -32603, "{line}");
            let message = reply["error"]["message"].as_str().unwrap();
            assert!(message.starts_with("refused: the server's start could not be recorded"), "{message}");
            assert!(message.contains("is full") && message.contains("mcpsec audit verify"), "{message}");
        }
    }

    #[tokio::test]
    async fn a_start_nobody_vouched_for_refuses_calls() {
        let (mut t, recorded, mut out) = gated(&[CALL]).await;
        drop(recorded);
        assert_eq!(method(t.receive().await), "the end");
        let mut line = String::new();
        out.read_line(&mut line).await.unwrap();
        assert!(line.contains("refused") && line.contains("its writer stopped"), "{line}");
    }

    #[tokio::test]
    async fn without_a_gate_nothing_is_held() {
        let (mut client_in, server_in) = tokio::io::duplex(1 << 16);
        let (server_out, _client_out) = tokio::io::duplex(1 << 16);
        client_in.write_all(format!("{CALL}\n").as_bytes()).await.unwrap();
        let mut t = LineTransport::new(server_in, server_out);
        assert_eq!(method(t.receive().await), "tools/call");
    }
}
