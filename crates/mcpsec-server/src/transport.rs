//! Newline-delimited JSON-RPC over stdin/stdout.
//!
//! rmcp's own stdio transport drops a line that is not JSON without a word;
//! JSON-RPC 2.0 asks for a `-32700 Parse error` reply (with `id: null`), and
//! an operator debugging a client deserves one. This transport answers every
//! malformed line (not JSON, not a JSON-RPC message, too long) with an error
//! and keeps serving. Nothing but JSON-RPC is ever written to stdout.

use std::sync::Arc;

use rmcp::RoleServer;
use rmcp::service::{RxJsonRpcMessage, TxJsonRpcMessage};
use rmcp::transport::Transport;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::Mutex;

/// The longest request line accepted (a `write_file` carries the whole
/// file). Longer lines are discarded with an error reply.
pub const MAX_LINE: usize = 64 << 20;

/// A JSON-RPC transport over a byte stream pair.
#[derive(Debug)]
pub struct LineTransport<R, W> {
    lines: LineReader<R>,
    writer: Arc<Mutex<W>>,
}

impl<R: AsyncRead + Unpin, W: AsyncWrite + Unpin> LineTransport<R, W> {
    /// A transport reading requests from `reader`, writing to `writer`.
    pub fn new(reader: R, writer: W) -> Self {
        LineTransport { lines: LineReader::new(reader), writer: Arc::new(Mutex::new(writer)) }
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
                        Some(Ok(msg)) => return Some(msg),
                        Some(Err(reply)) => reply,
                    }
                }
            };
            // Written by a task of its own, so that a cancelled `receive`
            // never leaves half an error line on stdout.
            let writer = self.writer.clone();
            tokio::spawn(async move {
                if let Err(e) = write_line(&writer, &reply).await {
                    tracing::error!("writing stdout failed: {e}");
                }
            });
        }
    }

    async fn close(&mut self) -> Result<(), Self::Error> {
        let mut w = self.writer.lock().await;
        w.flush().await
    }
}
