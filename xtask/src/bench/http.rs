//! The HTTP load run: N concurrent clients making authenticated
//! `read_text_file` calls to `mcpsec serve --http` (the release build, the
//! default sync, `changes`, set explicitly), for calls/s, p50 and p99 latency and the
//! server's peak RSS. It runs once per protocol generation: 2026-07-28,
//! where every request stands alone (its version in a header and in
//! `_meta`, no handshake, rmcp serves it statelessly), and 2025-11-25, an
//! `initialize` handshake and then a session per client.
//!
//! Before them it runs the same clients against the floor, `http_floor`
//! (an example of mcpsec-server): the same HTTP stack answering a fixed
//! result of the same shape, with no MCP, authentication, audit or file
//! access. Its calls/s are what this machine, loopback TCP and this client
//! allow at all; the goal is a share of it, measured in the same round.
//!
//! The client is deliberately lean, so that on a small machine it leaves
//! the CPU to the server: one OS thread per client, one keep-alive
//! HTTP/1.1 connection each, blocking reads and writes with `TCP_NODELAY`,
//! a hand-written request and a minimal response parser (status line,
//! headers, a `Content-Length` or chunked body). No async runtime, no HTTP
//! library: xtask stays quick to build and the client costs a few syscalls
//! per call.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::peers::Server;

/// What the HTTP load run measured.
#[derive(Debug)]
pub(crate) struct HttpFigures {
    pub(crate) clients: usize,
    pub(crate) calls_per_s: f64,
    pub(crate) p50_ms: f64,
    pub(crate) p99_ms: f64,
    pub(crate) peak_rss: u64,
    /// Calls during the measured window.
    pub(crate) calls: usize,
    /// The CPU the measured window cost, per call completed in it.
    pub(crate) cpu: Option<super::client::CpuWindow>,
}

/// How many clients, for how long.
#[derive(Debug, Clone, Copy)]
struct Shape {
    clients: usize,
    /// Unmeasured, from the moment every client is connected.
    warmup: Duration,
    measure: Duration,
}

/// The goals at 64 clients: calls/s at least this share of the floor's
/// (median over the rounds of each), p99 and RSS at most these.
pub(crate) const GOAL_OF_FLOOR: f64 = 0.50;
pub(crate) const GOAL_P99_MS: f64 = 20.0;
pub(crate) const GOAL_RSS_MIB: f64 = 64.0;

/// Serves `root` over HTTP with `mcpsec` (its default config plus a rate
/// limit the run never reaches), and drives it with `shape.clients` clients
/// speaking `protocol`.
fn run(mcpsec: &Server, scratch: &super::Scratch, shape: Shape, protocol: Protocol) -> Result<HttpFigures> {
    let (root, clients) = (&scratch.root, shape.clients);
    let state = scratch.dir.join(match protocol {
        Protocol::Stateless => "http-state-2026",
        Protocol::Session => "http-state-2025",
    });
    // A fresh state (user, token database, audit log) for every run.
    let _ = std::fs::remove_dir_all(&state);
    std::fs::create_dir_all(&state).with_context(|| format!("creating {}", state.display()))?;
    // Room for every client, all from 127.0.0.1: a connection, a request in flight and a session each.
    let config = format!(
        "[audit]\nsync = \"changes\"\n\n[rate_limit]\ncalls = 1000000000\n\n[http]\nmax_concurrent = {n}\nmax_sessions = {n}\nmax_connections = {c}\nmax_connections_per_address = {n}\n",
        n = clients.max(64),
        c = clients.max(512)
    );
    let file = state.join("http.toml");
    #[allow(clippy::disallowed_methods)] // the bench's own scratch directory
    std::fs::write(&file, config).with_context(|| format!("writing {}", file.display()))?;
    let mut cmd = mcpsec.command(root, &state);
    cmd.env("MCPSEC_CONFIG", &file);
    let envs: Vec<_> = cmd.get_envs().filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))).collect();
    let key: Arc<str> = crate::add_user(mcpsec.program(), "bench", envs)?.into();

    let log = scratch.dir.join("logs").join("mcpsec-http.stderr");
    let mut out = std::fs::File::create(&log).ok();
    let (mut child, url, drain) = crate::spawn_http_server(cmd.args(["--http", "127.0.0.1:0"]), move |line| {
        if let Some(f) = out.as_mut() {
            let _ = writeln!(f, "{line}");
        }
    })?;
    let addr = url.and_then(|u| u.trim_start_matches("http://").trim_end_matches("/mcp").parse::<SocketAddr>().ok());
    let result = match addr {
        None => Err(anyhow::anyhow!("mcpsec serve --http exited before listening")),
        Some(addr) => load(addr, child.id(), &key, scratch, shape, protocol).and_then(|mut f| {
            f.peak_rss = super::client::peak_rss(child.id())?;
            Ok(f)
        }),
    };
    let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
    let _ = child.wait();
    let _ = drain.join();
    result
}

/// The floor: the same load against `http_floor` (crates/mcpsec-server/
/// examples), axum on hyper answering a fixed `read_text_file`-shaped
/// result with no MCP, no authentication, no audit and no file access.
fn floor(workspace: &Path, build: bool, scratch: &super::Scratch, shape: Shape) -> Result<HttpFigures> {
    let target = workspace.join("target");
    let bin = target.join("release").join("examples").join("http_floor");
    if build {
        let target_arg = target.to_string_lossy().into_owned();
        let args =
            ["build", "--release", "-p", "mcpsec-server", "--example", "http_floor", "--target-dir", &target_arg];
        crate::cargo(&args, &[]).context("building the http_floor example")?;
    }
    if !bin.is_file() {
        bail!("{} does not exist (run without --no-build)", bin.display());
    }
    let (mut child, url, drain) = crate::spawn_http_server(Command::new(&bin).arg(&scratch.fixture), |_| ())?;
    let addr = url.and_then(|u| u.trim_start_matches("http://").trim_end_matches("/mcp").parse::<SocketAddr>().ok());
    let result = match addr {
        None => Err(anyhow::anyhow!("http_floor exited before listening")),
        Some(addr) => load(addr, child.id(), "", scratch, shape, Protocol::Stateless).and_then(|mut f| {
            f.peak_rss = super::client::peak_rss(child.id())?;
            Ok(f)
        }),
    };
    let _ = child.kill();
    let _ = child.wait();
    let _ = drain.join();
    result
}

fn load(
    addr: SocketAddr,
    server: u32,
    key: &str,
    scratch: &super::Scratch,
    shape: Shape,
    protocol: Protocol,
) -> Result<HttpFigures> {
    let Shape { clients, warmup, measure } = shape;
    let (fixture, content) = (&scratch.fixture, &scratch.content);
    // Every client connects and opens its session before the clock starts.
    let ready = Arc::new(std::sync::Barrier::new(clients + 1));
    let start = Arc::new(std::sync::OnceLock::<Instant>::new());
    let probe = &content[..64];
    let threads: Vec<_> = (0..clients)
        .map(|i| {
            let (key, ready, start) = (key.to_owned(), ready.clone(), start.clone());
            let (fixture, probe) = (fixture.to_owned(), probe.to_owned());
            std::thread::Builder::new()
                .name(format!("http-client-{i}"))
                .stack_size(256 * 1024)
                .spawn(move || -> Result<Vec<u32>> {
                    let opened = Client::open(addr, &key, protocol);
                    ready.wait();
                    let mut client = opened?;
                    let start = *start.wait();
                    let (from, until) = (start + warmup, start + warmup + measure);
                    let mut latencies = Vec::with_capacity(1 << 16);
                    let mut id = 10u64;
                    loop {
                        let sent = Instant::now();
                        if sent >= until {
                            break;
                        }
                        id += 1;
                        let body = client.read_text_file(id, &fixture)?;
                        if !body.contains(&probe) {
                            bail!("unexpected answer: {}", body.chars().take(300).collect::<String>());
                        }
                        if sent >= from {
                            latencies.push(u32::try_from(sent.elapsed().as_micros()).unwrap_or(u32::MAX));
                        }
                    }
                    Ok(latencies)
                })
                .context("spawning a client thread")
        })
        .collect::<Result<_>>()?;
    ready.wait();
    let started = Instant::now();
    let _ = start.set(started);
    // The server's CPU over the same window as the latencies (a sample
    // that fails leaves the figure out rather than the run).
    let window = |at: Instant| {
        std::thread::sleep(at.saturating_duration_since(Instant::now()));
        super::client::CpuSample::take(server)
    };
    let cpu = window(started + warmup).zip(window(started + warmup + measure));
    let mut all = Vec::new();
    let mut first_error = None;
    for t in threads {
        match t.join() {
            Ok(Ok(l)) => all.extend(l),
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(_) => {
                first_error.get_or_insert(anyhow::anyhow!("a client thread panicked"));
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e.context("an HTTP client failed"));
    }
    if all.is_empty() {
        bail!("no call completed in the measured window");
    }
    all.sort_unstable();
    let pct = |p: f64| f64::from(all[((all.len() - 1) as f64 * p).round() as usize]) / 1000.0;
    Ok(HttpFigures {
        clients,
        calls_per_s: all.len() as f64 / measure.as_secs_f64(),
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        peak_rss: 0,
        calls: all.len(),
        cpu: cpu.and_then(|(from, until)| from.window(until, all.len() as u64)),
    })
}

/// One keep-alive connection with one MCP session.
struct Client {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
    /// The request head every call shares (ends before `Content-Length`).
    head: String,
    buf: Vec<u8>,
    /// What a request's params carry besides the call (`,"_meta":{…}` or
    /// nothing).
    meta: &'static str,
}

/// The `_meta` a 2026-07-28 request carries instead of a handshake.
const STATELESS_META: &str = r#","_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{},"io.modelcontextprotocol/clientInfo":{"name":"mcpsec-bench","version":"1"}}"#;

/// Which protocol generation the clients speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Protocol {
    /// 2026-07-28: every request stands alone (rmcp serves it statelessly).
    Stateless,
    /// 2025-11-25: an `initialize` handshake, then a session per client.
    Session,
}

impl Protocol {
    fn describe(self) -> &'static str {
        match self {
            Protocol::Stateless => "protocol 2026-07-28 (stateless)",
            Protocol::Session => "protocol 2025-11-25 (a session per client)",
        }
    }
}

impl Client {
    fn open(addr: SocketAddr, key: &str, protocol: Protocol) -> Result<Client> {
        let stream = TcpStream::connect(addr).with_context(|| format!("connecting to {addr}"))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        let writer = stream.try_clone()?;
        let base = format!(
            "POST /mcp HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\
             Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
        );
        let mut c = Client {
            reader: BufReader::with_capacity(64 * 1024, stream),
            writer,
            head: base,
            buf: Vec::new(),
            meta: "",
        };
        if protocol == Protocol::Stateless {
            // Every request names its version (header and `_meta`): no handshake, no session.
            // The calls are all `read_text_file`, so their standard headers (SEP-2243) are too.
            c.head
                .push_str("Mcp-Protocol-Version: 2026-07-28\r\nMcp-Method: tools/call\r\nMcp-Name: read_text_file\r\n");
            c.meta = STATELESS_META;
            return Ok(c);
        }
        let init = r#"{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","capabilities":{},"clientInfo":{"name":"mcpsec-bench","version":"1"}}}"#;
        let (status, session) = c.post(init)?;
        if status != 200 {
            bail!("initialize: HTTP {status}: {}", String::from_utf8_lossy(&c.buf));
        }
        let session = session.context("initialize: no mcp-session-id")?;
        c.head.push_str(&format!("Mcp-Session-Id: {session}\r\nMcp-Protocol-Version: 2025-11-25\r\n"));
        let (status, _) = c.post(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)?;
        if status != 202 {
            bail!("notifications/initialized: HTTP {status}");
        }
        Ok(c)
    }

    fn read_text_file(&mut self, id: u64, path: &str) -> Result<&str> {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"read_text_file","arguments":{{"path":"{path}"}}{meta}}}}}"#,
            meta = self.meta
        );
        let (status, _) = self.post(&body)?;
        if status != 200 {
            bail!("tools/call: HTTP {status}: {}", String::from_utf8_lossy(&self.buf));
        }
        std::str::from_utf8(&self.buf).context("the answer is not UTF-8")
    }

    /// Sends one POST and reads its whole answer into `self.buf`: the status
    /// and the session id, if the answer names one.
    fn post(&mut self, body: &str) -> Result<(u16, Option<String>)> {
        let request = format!("{}Content-Length: {}\r\n\r\n{body}", self.head, body.len());
        self.writer.write_all(request.as_bytes()).context("sending a request")?;
        let mut line = String::new();
        self.reader.read_line(&mut line).context("reading the status line")?;
        let status: u16 = line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .with_context(|| format!("bad status line `{}`", line.trim_end()))?;
        let (mut length, mut chunked, mut session) = (None, false, None);
        loop {
            line.clear();
            if self.reader.read_line(&mut line)? == 0 {
                bail!("the connection closed in the headers");
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let Some((name, value)) = l.split_once(':') else { continue };
            let value = value.trim();
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.parse::<usize>().context("bad Content-Length")?);
            } else if name.eq_ignore_ascii_case("transfer-encoding") {
                chunked = value.eq_ignore_ascii_case("chunked");
            } else if name.eq_ignore_ascii_case("mcp-session-id") {
                session = Some(value.to_owned());
            }
        }
        self.buf.clear();
        if chunked {
            loop {
                line.clear();
                self.reader.read_line(&mut line)?;
                let size = usize::from_str_radix(line.trim_end().split(';').next().unwrap_or(""), 16)
                    .with_context(|| format!("bad chunk size `{}`", line.trim_end()))?;
                if size == 0 {
                    // Trailers (none expected), then the empty line.
                    loop {
                        line.clear();
                        if self.reader.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
                            break;
                        }
                    }
                    break;
                }
                let at = self.buf.len();
                self.buf.resize(at + size, 0);
                self.reader.read_exact(&mut self.buf[at..])?;
                let mut crlf = [0u8; 2];
                self.reader.read_exact(&mut crlf)?;
            }
        } else if let Some(n) = length {
            self.buf.resize(n, 0);
            self.reader.read_exact(&mut self.buf)?;
        }
        Ok((status, session))
    }
}

/// The HTTP load run as the bench reports it: over `runs` rounds (each the
/// floor, then each protocol on a fresh server), the median calls/s and p99,
/// every run's calls/s in the detail, and the largest peak RSS, against the
/// goals. Uses the mcpsec row's binary if there is one, else prepares
/// (builds) it.
#[allow(clippy::too_many_arguments)]
pub(crate) fn bench(
    mcpsec: Option<&Server>,
    workspace: &Path,
    build: bool,
    scratch: &super::Scratch,
    clients: usize,
    runs: usize,
    warmup: Duration,
    measure: Duration,
) -> Result<Vec<super::extra::Figure>> {
    let prepared;
    let mcpsec = match mcpsec {
        Some(m) => m,
        None => {
            prepared = super::peers::prepare(super::peers::MCPSEC, workspace, build).map_err(anyhow::Error::msg)?;
            &prepared
        }
    };
    const PROTOCOLS: [(Protocol, &str); 2] = [(Protocol::Stateless, "2026"), (Protocol::Session, "2025")];
    let shape = Shape { clients, warmup, measure };
    let mut floors = Vec::new();
    let mut rows: [Vec<HttpFigures>; 2] = [Vec::new(), Vec::new()];
    for round in 0..runs {
        let f = floor(workspace, build && round == 0, scratch, shape)?;
        eprintln!(
            "bench: http floor, run {}/{runs}: {} calls in {measure:.1?} with {} clients",
            round + 1,
            f.calls,
            f.clients
        );
        floors.push(f);
        for (row, (protocol, tag)) in rows.iter_mut().zip(PROTOCOLS) {
            let f = run(mcpsec, scratch, shape, protocol)?;
            eprintln!(
                "bench: http {tag}, run {}/{runs}: {} calls in {measure:.1?} with {} clients",
                round + 1,
                f.calls,
                f.clients
            );
            row.push(f);
        }
    }
    let median_of = |runs: &[HttpFigures], f: fn(&HttpFigures) -> Option<f64>| {
        super::median(&runs.iter().filter_map(f).collect::<Vec<_>>())
    };
    let cpu = |runs: &[HttpFigures]| {
        median_of(runs, |f| f.cpu.map(|w| w.server.as_secs_f64() * 1e3)).map_or("?".to_owned(), |ms| format!("{ms:.3}"))
    };
    let floor_calls = median_of(&floors, |f| Some(f.calls_per_s)).unwrap_or(f64::NAN);
    let mut figures = Vec::new();
    for (row, (protocol, tag)) in rows.iter().zip(PROTOCOLS) {
        let detail = format!("{clients} clients, keep-alive, {}, [audit] sync = \"changes\"", protocol.describe());
        let figure = |what: &str, value: f64, unit: &'static str, goal: f64, at_least: bool, detail: String| {
            super::extra::Figure { what: format!("http {tag} {what}"), value, unit, goal, at_least, detail }
        };
        let calls = median_of(row, |f| Some(f.calls_per_s)).unwrap_or(f64::NAN);
        let each = row.iter().map(|f| format!("{:.0}", f.calls_per_s)).collect::<Vec<_>>().join(", ");
        let idle = median_of(row, |f| f.cpu.and_then(|w| w.machine_idle))
            .map_or("?".to_owned(), |i| format!("{:.0} %", i * 100.0));
        let of_floor = format!(
            "{calls:.0} vs the floor's {floor_calls:.0} calls/s, medians of {runs} (each run: {each}); server CPU {} ms \
             a call (the floor's {}), machine idle {idle}; {detail}",
            cpu(row),
            cpu(&floors),
        );
        let p50 = median_of(row, |f| Some(f.p50_ms)).unwrap_or(f64::NAN);
        let worst_p99 = row.iter().map(|f| f.p99_ms).fold(f64::NAN, f64::max);
        let p99 = median_of(row, |f| Some(f.p99_ms)).unwrap_or(f64::NAN);
        let rss = row.iter().map(|f| f.peak_rss).max().unwrap_or(0);
        figures.extend([
            figure("calls/s vs http_floor", calls / floor_calls, "x", GOAL_OF_FLOOR, true, of_floor),
            figure(
                "p99 latency",
                p99,
                " ms",
                GOAL_P99_MS,
                false,
                format!("median of {runs} (the worst {worst_p99:.2} ms); p50 {p50:.2} ms; {detail}"),
            ),
            figure(
                "server peak RSS",
                super::mib(rss),
                " MiB",
                GOAL_RSS_MIB,
                false,
                format!("the largest of {runs}; {detail}"),
            ),
        ]);
    }
    Ok(figures)
}
