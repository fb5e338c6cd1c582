//! A raw JSON-RPC client over a server's stdio: the handshake, the startup
//! measurement and the pipelined `read_text_file` loop.
//!
//! Deliberately not an MCP SDK: the client must cost as little CPU as possible
//! (the machine it runs on also runs the server) and must treat every server
//! the same way, byte for byte.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};

/// The protocol version the client offers; servers may answer with another.
pub(crate) const PROTOCOL_VERSION: &str = "2025-11-25";

/// How long any single wait on a server may take before the run is abandoned.
const STALL: Duration = Duration::from_secs(15);

/// How long a server gets to exit after its stdin is closed before it is killed.
const EXIT_GRACE: Duration = Duration::from_secs(5);

/// One line from the server, already classified by the reader thread.
enum Reply {
    /// A tool result that is not an error and carries the whole file: when
    /// it arrived, and its id (if numeric).
    Good(Instant, Option<u64>),
    /// Anything else: the handshake response, a notification, a failure.
    Other(String),
    /// The server closed stdout, or reading failed.
    Closed(String),
}

/// A running server and the thread reading its stdout.
#[derive(Debug)]
pub(crate) struct Session {
    child: Child,
    stdin: Option<ChildStdin>,
    replies: Receiver<ReplyMsg>,
    reader: Option<JoinHandle<()>>,
    spawned_at: Instant,
    /// The CPU the last [`Session::pipeline_tool`] window cost.
    last_cpu: Option<CpuWindow>,
}

/// What the processes used during a throughput window, per call counted
/// in it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuWindow {
    /// The server process (all its threads).
    pub(crate) server: Duration,
    /// Its child processes together (the gateway's upstream).
    pub(crate) children: Duration,
    /// The share of the machine's CPU time that was idle (or waiting for
    /// I/O) during the window, 0 to 1.
    pub(crate) machine_idle: Option<f64>,
}

/// One reading of the counters a [`CpuWindow`] is the difference of.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuSample {
    server: Duration,
    children: Duration,
    /// Idle and total jiffies of the whole machine (`/proc/stat`).
    machine: Option<(u64, u64)>,
}

impl CpuSample {
    pub(crate) fn take(pid: u32) -> Option<CpuSample> {
        let server = cpu_time(pid).ok()?;
        // A child is listed under the thread that spawned it: read every
        // thread's list (a runtime's worker thread may have spawned it).
        #[allow(clippy::disallowed_methods)] // reading /proc, not serving a tool call
        let children: Duration = std::fs::read_dir(format!("/proc/{pid}/task"))
            .into_iter()
            .flatten()
            .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("children")).ok())
            .flat_map(|list| list.split_whitespace().filter_map(|c| c.parse::<u32>().ok()).collect::<Vec<_>>())
            .filter_map(|c| cpu_time(c).ok())
            .sum();
        #[allow(clippy::disallowed_methods)] // reading /proc, not serving a tool call
        let machine = std::fs::read_to_string("/proc/stat").ok().and_then(|s| machine_jiffies(&s));
        Some(CpuSample { server, children, machine })
    }

    /// From `self` to `later`, per call.
    pub(crate) fn window(self, later: CpuSample, calls: u64) -> Option<CpuWindow> {
        let calls = u32::try_from(calls).ok().filter(|&c| c > 0)?;
        let machine_idle = self.machine.zip(later.machine).and_then(|((i0, t0), (i1, t1))| {
            let total = t1.checked_sub(t0).filter(|&t| t > 0)?;
            Some(i1.saturating_sub(i0) as f64 / total as f64)
        });
        Some(CpuWindow {
            server: later.server.saturating_sub(self.server) / calls,
            children: later.children.saturating_sub(self.children) / calls,
            machine_idle,
        })
    }
}

/// Idle (idle + iowait) and total jiffies from the `cpu` line of
/// `/proc/stat` (user nice system idle iowait irq softirq steal …).
fn machine_jiffies(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let v: Vec<u64> = line.split_whitespace().skip(1).take(8).map(|f| f.parse().ok()).collect::<Option<_>>()?;
    (v.len() == 8).then(|| (v[3] + v[4], v.iter().sum()))
}

/// `Reply` behind a newtype so `Session` can derive `Debug` cheaply.
struct ReplyMsg(Reply);

impl std::fmt::Debug for ReplyMsg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReplyMsg")
    }
}

/// What `Session::initialize` learned.
#[derive(Debug)]
pub(crate) struct Handshake {
    /// Spawn to `initialize` response.
    pub(crate) startup: Duration,
    /// The version the server answered with.
    pub(crate) protocol_version: String,
}

impl Session {
    /// Spawns `cmd` with piped stdin/stdout; `expected` is the fixture's
    /// content, which every good `read_text_file` reply must contain.
    pub(crate) fn spawn(mut cmd: Command, expected: &str, stderr_log: &Path) -> Result<Self> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(stderr_log)
            .with_context(|| format!("opening {}", stderr_log.display()))?;
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::from(log));
        let spawned_at = Instant::now();
        let mut child = cmd.spawn().with_context(|| format!("spawning {:?}", cmd.get_program()))?;
        let stdin = child.stdin.take().context("child stdin was not piped")?;
        let stdout = child.stdout.take().context("child stdout was not piped")?;
        let (tx, replies) = mpsc::channel();
        let expected = expected.to_owned();
        let reader = std::thread::Builder::new()
            .name("bench-reader".into())
            .spawn(move || {
                let mut stdout = BufReader::with_capacity(64 * 1024, stdout);
                let mut line = String::with_capacity(8 * 1024);
                loop {
                    line.clear();
                    let msg = match stdout.read_line(&mut line) {
                        Ok(0) => Reply::Closed("server closed stdout".into()),
                        Err(e) => Reply::Closed(format!("reading server stdout: {e}")),
                        Ok(_) => classify(&line, &expected),
                    };
                    let closed = matches!(msg, Reply::Closed(_));
                    if tx.send(ReplyMsg(msg)).is_err() || closed {
                        break;
                    }
                }
            })
            .context("spawning reader thread")?;
        Ok(Self { child, stdin: Some(stdin), replies, reader: Some(reader), spawned_at, last_cpu: None })
    }

    /// What the last [`Session::pipeline_tool`] window cost in CPU, if
    /// `/proc` could be read at both ends of it.
    pub(crate) fn last_cpu(&self) -> Option<CpuWindow> {
        self.last_cpu
    }

    /// Operating-system process id, for `/proc/PID/status`.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    fn send(&mut self, bytes: &[u8]) -> Result<()> {
        let stdin = self.stdin.as_mut().context("stdin already closed")?;
        stdin.write_all(bytes).context("writing to server stdin")
    }

    fn next(&self, deadline: Instant) -> Result<Reply> {
        let wait = deadline.saturating_duration_since(Instant::now());
        match self.replies.recv_timeout(wait) {
            Ok(ReplyMsg(Reply::Closed(why))) => bail!("{why}"),
            Ok(ReplyMsg(reply)) => Ok(reply),
            Err(RecvTimeoutError::Timeout) => bail!("no reply from server within {STALL:?}"),
            Err(RecvTimeoutError::Disconnected) => bail!("reader thread ended"),
        }
    }

    /// Sends one JSON-RPC request line and returns the next reply line
    /// (`None` for a good `read_text_file` result, which carries no line).
    pub(crate) fn request(&mut self, line: &str) -> Result<Option<String>> {
        self.send(format!("{line}\n").as_bytes())?;
        match self.next(Instant::now() + STALL)? {
            Reply::Good(..) => Ok(None),
            Reply::Other(l) => Ok(Some(l)),
            Reply::Closed(why) => bail!("{why}"),
        }
    }

    /// Sends `initialize`, waits for its response, then sends
    /// `notifications/initialized`. Startup is measured from spawn to the
    /// response.
    pub(crate) fn initialize(&mut self) -> Result<Handshake> {
        let init = serde_json::json!({
            "jsonrpc": "2.0",
            "id": 0,
            "method": "initialize",
            "params": {
                "protocolVersion": PROTOCOL_VERSION,
                "capabilities": {},
                "clientInfo": { "name": "mcpsec-bench", "version": env!("CARGO_PKG_VERSION") },
            },
        });
        self.send(format!("{init}\n").as_bytes())?;
        let deadline = Instant::now() + STALL;
        // Bounded: each iteration consumes one line or hits the deadline.
        loop {
            let line = match self.next(deadline)? {
                Reply::Other(line) => line,
                Reply::Good(..) => bail!("tool result before initialize response"),
                Reply::Closed(why) => bail!("{why}"),
            };
            let startup = self.spawned_at.elapsed();
            let msg: serde_json::Value =
                serde_json::from_str(&line).with_context(|| format!("server sent non-JSON: {}", clip(&line)))?;
            if msg.get("id").is_none() {
                continue; // a notification (logging, etc.) before the response
            }
            let Some(result) = msg.get("result") else {
                bail!("initialize failed: {}", clip(&line));
            };
            let protocol_version =
                result.get("protocolVersion").and_then(serde_json::Value::as_str).unwrap_or("?").to_owned();
            self.send(b"{\"jsonrpc\":\"2.0\",\"method\":\"notifications/initialized\"}\n")?;
            return Ok(Handshake { startup, protocol_version });
        }
    }

    /// Keeps exactly `in_flight` `read_text_file` calls outstanding for
    /// `warmup + measure`, and returns the good replies per second received
    /// during `measure`, with their median latency in ms. Any bad reply
    /// fails the run.
    pub(crate) fn pipeline(
        &mut self,
        path: &str,
        token: Option<&str>,
        in_flight: usize,
        warmup: Duration,
        measure: Duration,
    ) -> Result<(f64, Option<f64>)> {
        let mut args = serde_json::json!({ "path": path });
        if let Some(t) = token {
            args["capability_token"] = serde_json::Value::from(t);
        }
        self.pipeline_tool("read_text_file", &args.to_string(), in_flight, warmup, measure)
    }

    /// Calls/s of `tool` with `arguments` (a JSON object's text), keeping
    /// `in_flight` requests outstanding, and the median latency in ms; every
    /// reply must be good (see [`Session::spawn`]).
    pub(crate) fn pipeline_tool(
        &mut self,
        tool: &str,
        arguments: &str,
        in_flight: usize,
        warmup: Duration,
        measure: Duration,
    ) -> Result<(f64, Option<f64>)> {
        let mut next_id: u64 = 1;
        let request = |id: u64| {
            format!(
                "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":\"tools/call\",\"params\":\
                 {{\"name\":\"{tool}\",\"arguments\":{arguments}}}}}\n"
            )
        };
        let start = Instant::now();
        let window_start = start + warmup;
        let window_end = window_start + measure;
        let mut outstanding = 0usize;
        let mut counted = 0u64;
        // Send time per request id, and the latencies (ms) of the replies
        // counted in the window.
        let mut sent: std::collections::HashMap<u64, Instant> = std::collections::HashMap::new();
        let mut latencies: Vec<f64> = Vec::new();
        // CPU counters at the first reply in the window and once it is over.
        let pid = self.pid();
        let (mut at_start, mut at_end): (Option<Option<CpuSample>>, Option<Option<CpuSample>>) = (None, None);
        self.last_cpu = None;
        for _ in 0..in_flight {
            let req = request(next_id);
            sent.insert(next_id, Instant::now());
            next_id += 1;
            self.send(req.as_bytes())?;
            outstanding += 1;
        }
        // Bounded: requests stop at `window_end`, after which the loop only
        // drains the (at most `in_flight`) outstanding replies, and every wait
        // is capped by STALL.
        while outstanding > 0 {
            match self.next(Instant::now() + STALL)? {
                Reply::Good(at, id) => {
                    outstanding -= 1;
                    let sent_at = id.and_then(|id| sent.remove(&id));
                    if at >= window_start && at < window_end {
                        if at_start.is_none() {
                            at_start = Some(CpuSample::take(pid));
                        }
                        counted += 1;
                        if let Some(t) = sent_at {
                            latencies.push(at.saturating_duration_since(t).as_secs_f64() * 1e3);
                        }
                    }
                    if Instant::now() < window_end {
                        let req = request(next_id);
                        sent.insert(next_id, Instant::now());
                        next_id += 1;
                        self.send(req.as_bytes())?;
                        outstanding += 1;
                    } else if at_end.is_none() {
                        at_end = Some(CpuSample::take(pid));
                    }
                }
                Reply::Other(line) => {
                    let is_notification = serde_json::from_str::<serde_json::Value>(&line)
                        .is_ok_and(|v| v.get("id").is_none() && v.get("method").is_some());
                    if !is_notification {
                        bail!("bad {tool} reply (an error, or not the expected result): {}", clip(&line));
                    }
                }
                Reply::Closed(why) => bail!("{why}"),
            }
        }
        if let (Some(Some(from)), Some(Some(until))) = (at_start, at_end) {
            self.last_cpu = from.window(until, counted);
        }
        latencies.sort_by(f64::total_cmp);
        let p50 = latencies.get(latencies.len() / 2).copied();
        Ok((counted as f64 / measure.as_secs_f64(), p50))
    }

    /// Peak resident set size so far (`VmHWM`), in bytes.
    pub(crate) fn peak_rss(&self) -> Result<u64> {
        peak_rss(self.pid())
    }

    /// Closes stdin and waits for the server to exit, killing it if it
    /// does not within a grace period.
    pub(crate) fn close(mut self) -> Result<()> {
        self.stdin = None;
        let deadline = Instant::now() + EXIT_GRACE;
        // Bounded by EXIT_GRACE.
        let exited = loop {
            if self.child.try_wait().context("waiting for server")?.is_some() {
                break true;
            }
            if Instant::now() >= deadline {
                break false;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        if !exited {
            eprintln!("  (server did not exit within {EXIT_GRACE:?} of stdin closing; killed)");
            self.kill();
        }
        if let Some(reader) = self.reader.take() {
            reader.join().map_err(|_| anyhow!("reader thread panicked"))?;
        }
        Ok(())
    }

    fn kill(&mut self) {
        // Errors mean it already exited; either way, reap it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // Only reached with a live child on an error path; never leak it.
        if self.reader.is_some() {
            self.stdin = None;
            self.kill();
        }
    }
}

/// The reader thread's check of one line: a good reply is a successful tool
/// result (not `isError`) carrying the fixture's full content.
fn classify(line: &str, expected: &str) -> Reply {
    let now = Instant::now();
    if line.contains(expected) && line.contains("\"result\"") && !line.contains("\"isError\":true") {
        Reply::Good(now, reply_id(line))
    } else {
        Reply::Other(line.trim_end().to_owned())
    }
}

/// The numeric `"id"` of a JSON-RPC reply line, found without parsing the
/// whole (file-sized) line.
fn reply_id(line: &str) -> Option<u64> {
    let at = line.find("\"id\":")? + 5;
    let digits: String = line[at..].trim_start().chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

/// `VmHWM` of `pid`, in bytes.
pub(crate) fn peak_rss(pid: u32) -> Result<u64> {
    let path = format!("/proc/{pid}/status");
    #[allow(clippy::disallowed_methods)] // reading /proc, not serving a tool call
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).with_context(|| format!("no VmHWM in {path}"))?;
    let kib: u64 = line
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .with_context(|| format!("parsing `{line}`"))?;
    Ok(kib * 1024)
}

/// The CPU time (user + system, all threads) process `pid` has used so
/// far, from `/proc/PID/stat`. Linux reports it in clock ticks of
/// `USER_HZ`, which is 100 on every architecture it runs on here.
pub(crate) fn cpu_time(pid: u32) -> Result<Duration> {
    let path = format!("/proc/{pid}/stat");
    #[allow(clippy::disallowed_methods)] // reading /proc, not serving a tool call
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    cpu_time_of(&stat).with_context(|| format!("parsing {path}"))
}

/// [`cpu_time`] from the text of a `stat` file. The command name (field 2)
/// is in parentheses and may itself hold spaces and parentheses, so the
/// fields are counted from the last `)`: `utime` and `stime` are fields 14
/// and 15.
fn cpu_time_of(stat: &str) -> Result<Duration> {
    const USER_HZ: u64 = 100;
    let rest = stat.rsplit_once(')').map(|(_, r)| r).context("no `)` after the command name")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the name: field 3 (state) is at index 0, so field N is at N - 3.
    let tick = |n: usize| -> Result<u64> {
        let f = fields.get(n - 3).with_context(|| format!("no field {n}"))?;
        f.parse::<u64>().with_context(|| format!("field {n} is `{f}`"))
    };
    let ticks = tick(14)? + tick(15)?;
    Ok(Duration::from_millis(ticks * 1000 / USER_HZ))
}

fn clip(s: &str) -> String {
    const MAX: usize = 300;
    if s.len() <= MAX {
        return s.to_owned();
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &s[..end], s.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_successful_result_with_the_whole_content_is_good() {
        let want = "abc123";
        let good = r#"{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"abc123"}]}}"#;
        assert!(matches!(classify(good, want), Reply::Good(_, Some(7))));
        let tool_error =
            r#"{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"abc123"}],"isError":true}}"#;
        assert!(matches!(classify(tool_error, want), Reply::Other(_)));
        let truncated = r#"{"jsonrpc":"2.0","id":7,"result":{"content":[{"type":"text","text":"abc12"}]}}"#;
        assert!(matches!(classify(truncated, want), Reply::Other(_)));
        let rpc_error = r#"{"jsonrpc":"2.0","id":7,"error":{"code":-32602,"message":"abc123"}}"#;
        assert!(matches!(classify(rpc_error, want), Reply::Other(_)));
    }

    #[test]
    fn cpu_time_counts_user_and_system_ticks_after_an_awkward_command_name() {
        // Fields 14 and 15 (utime 250, stime 50 ticks) after a name holding `) (`.
        let stat = "4242 (a) (b c) S 1 4242 4242 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 3 0 123 456 789";
        assert_eq!(cpu_time_of(stat).unwrap(), Duration::from_millis(3000));
        assert!(cpu_time_of("4242 (cut short) S 1 2").is_err());
        assert!(cpu_time_of("no name at all").is_err());
        // This process: it parses, and it does not run backwards.
        let before = cpu_time(std::process::id()).unwrap();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        assert!(cpu_time(std::process::id()).unwrap() >= before);
    }

    #[test]
    fn children_spawned_by_any_thread_are_counted() {
        // The test runs on a thread other than the process's main one, so
        // the busy child is listed under this thread, not the main one.
        let mut child = std::process::Command::new("sh").args(["-c", "while :; do :; done"]).spawn().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        let counted = loop {
            let sample = CpuSample::take(std::process::id()).unwrap();
            if sample.children > Duration::ZERO || Instant::now() > deadline {
                break sample.children;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(counted > Duration::ZERO, "the busy child's CPU was not counted");
    }

    #[test]
    fn a_cpu_window_is_per_call_and_the_machine_idle_share_counts_iowait() {
        let stat = "cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\n";
        assert_eq!(machine_jiffies(stat), Some((850, 1000)));
        assert_eq!(machine_jiffies("cpu 1 2 3\n"), None);
        let ms = Duration::from_millis;
        let from = CpuSample { server: ms(1000), children: ms(500), machine: Some((850, 1000)) };
        let until = CpuSample { server: ms(1400), children: ms(1300), machine: Some((950, 1400)) };
        let w = from.window(until, 200).unwrap();
        assert_eq!((w.server, w.children), (ms(2), ms(4)));
        assert_eq!(w.machine_idle, Some(0.25));
        assert!(from.window(until, 0).is_none(), "no calls, no per-call figure");
        // A child that exited during the window does not make it negative.
        let gone = CpuSample { children: ms(0), ..until };
        assert_eq!(from.window(gone, 200).unwrap().children, Duration::ZERO);
    }
}
