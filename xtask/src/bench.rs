//! `cargo xtask bench`: mcpsec against the reference Node filesystem server
//! and rust-mcp-filesystem, on the same workload, in the same invocation.
//!
//! For every server: the median time from spawn to the `initialize`
//! response; `read_text_file` calls per second on a 4 KiB file with 1 and
//! with 16 requests in flight (a raw pipelining JSON-RPC client over stdio);
//! and peak resident memory (`VmHWM`). Beside it: audit verify and grep, a
//! token check, the scanner, grant latency, the cost of undo on
//! overwrites, and the HTTP load run (`bench/http.rs`: N clients of
//! `serve --http`). See BENCHMARKS.md for the method and the latest figures.

// The task exists to print a report.
#![allow(clippy::print_stdout)]
// The bench's own fixture, state and log files, not tool calls.
#![allow(clippy::disallowed_methods)]

mod client;
mod extra;
mod http;
mod layout;
mod peers;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use serde_json::json;

use client::Session;
use peers::Server;

const USAGE: &str = "\
cargo xtask bench [options]

  --seconds S        measured seconds per throughput run (default 3)
  --warmup S         unmeasured warm-up seconds before each run (default 0.5)
  --runs N           throughput runs per server and depth, and HTTP load runs; median kept (default 5)
  --startup-runs N   spawns timed per server for startup; median kept (default 10)
  --only A,B         bench only these servers (mcpsec, mcpsec/changes, mcpsec/token,
                     rust-mcp-filesystem, node-reference, mcpsec/proxy, http)
  --clients N        concurrent clients of the HTTP load run (`http`; default 64)
  --no-build         use the existing target/release/mcpsec instead of building it
  --audit-records N  records in the generated log for audit verify/grep (default 1000000)
  --serve-only       skip the audit, token-check, scanner and grant-latency benchmarks
                     (the serve rows and the undo cost on overwrites still run)
  --undo-only        run only the undo cost on overwrites (mcpsec, undo on and off)
  --json             print the results as JSON instead of a table

mcpsec rows: `mcpsec` runs the defaults ([audit] sync = \"always\"), `mcpsec/changes`
runs [audit] sync = \"changes\", `mcpsec/token` puts reads in token mode so every
call carries a capability token to check. `mcpsec/proxy` is `mcpsec proxy` in front
of the reference Node server (compare it with node-reference: the gateway's cost).
";

/// Requests kept in flight, in table order.
const DEPTHS: [usize; 2] = [1, 16];

/// Size of the file every server reads.
const FIXTURE_BYTES: usize = 4096;
const FIXTURE_NAME: &str = "bench-4k.txt";

#[derive(Debug)]
struct Options {
    seconds: f64,
    warmup: f64,
    runs: usize,
    startup_runs: usize,
    only: Option<Vec<String>>,
    /// Clients of the HTTP load run.
    clients: usize,
    build: bool,
    json: bool,
    /// Records in the generated audit log (0: skip the audit, token and
    /// grant benchmarks).
    audit_records: u64,
    /// Only the undo cost (no serve rows, no other goals).
    undo_only: bool,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options {
        seconds: 3.0,
        warmup: 0.5,
        runs: 5,
        startup_runs: 10,
        only: None,
        clients: 64,
        build: true,
        json: false,
        audit_records: 1_000_000,
        undo_only: false,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |flag: &str| it.next().cloned().with_context(|| format!("{flag} needs a value\n\n{USAGE}"));
        match arg.as_str() {
            "--seconds" => o.seconds = positive(&value("--seconds")?, "--seconds")?,
            "--warmup" => o.warmup = value("--warmup")?.parse().context("--warmup")?,
            "--runs" => o.runs = count(&value("--runs")?, "--runs")?,
            "--startup-runs" => o.startup_runs = count(&value("--startup-runs")?, "--startup-runs")?,
            "--only" => {
                let names: Vec<String> = value("--only")?.split(',').map(|s| s.trim().to_owned()).collect();
                for n in &names {
                    if !peers::ALL.contains(&n.as_str()) && n != "http" {
                        bail!("unknown server `{n}` in --only\n\n{USAGE}");
                    }
                }
                o.only = Some(names);
            }
            "--clients" => o.clients = count(&value("--clients")?, "--clients")?,
            "--no-build" => o.build = false,
            "--audit-records" => {
                o.audit_records = value("--audit-records")?.parse().context("--audit-records")?;
            }
            "--serve-only" => o.audit_records = 0,
            "--undo-only" => {
                o.undo_only = true;
                o.audit_records = 0;
                o.only = Some(vec![peers::MCPSEC.to_owned()]);
            }
            "--json" => o.json = true,
            "-h" | "--help" => {
                eprint!("{USAGE}");
                std::process::exit(0);
            }
            other => bail!("unknown option `{other}`\n\n{USAGE}"),
        }
    }
    if !(0.0..=60.0).contains(&o.warmup) {
        bail!("--warmup must be between 0 and 60 seconds");
    }
    Ok(o)
}

fn positive(s: &str, flag: &str) -> Result<f64> {
    let v: f64 = s.parse().with_context(|| format!("{flag}: `{s}`"))?;
    if !(v > 0.0 && v <= 600.0) {
        bail!("{flag} must be in (0, 600] seconds");
    }
    Ok(v)
}

fn count(s: &str, flag: &str) -> Result<usize> {
    let v: usize = s.parse().with_context(|| format!("{flag}: `{s}`"))?;
    if !(1..=1000).contains(&v) {
        bail!("{flag} must be between 1 and 1000");
    }
    Ok(v)
}

/// What was measured for one server; `None` where it was not.
#[derive(Debug, Default)]
struct Figures {
    startup_ms: Vec<f64>,
    protocol_version: Option<String>,
    /// Per depth (index into DEPTHS), calls/s of each run.
    calls: [Vec<f64>; 2],
    /// Per depth, the median call latency (ms) of each run.
    p50_ms: [Vec<f64>; 2],
    /// Per depth, what each run's measured window cost in CPU.
    cpu: [Vec<client::CpuWindow>; 2],
    /// Per depth, each run's peak RSS (bytes).
    rss: [Vec<u64>; 2],
    error: Option<String>,
}

impl Figures {
    fn startup_median(&self) -> Option<f64> {
        median(&self.startup_ms)
    }
    fn calls_median(&self, depth: usize) -> Option<f64> {
        median(&self.calls[depth])
    }
    fn p50_median(&self, depth: usize) -> Option<f64> {
        median(&self.p50_ms[depth])
    }
    /// Per depth, the medians over the runs of the server's and its
    /// children's CPU ms per call, and of the machine's idle share.
    fn cpu_median(&self, depth: usize) -> Option<(f64, f64, Option<f64>)> {
        let runs = &self.cpu[depth];
        let ms = |f: fn(&client::CpuWindow) -> Duration| {
            median(&runs.iter().map(|w| f(w).as_secs_f64() * 1e3).collect::<Vec<_>>())
        };
        let idle = median(&runs.iter().filter_map(|w| w.machine_idle).collect::<Vec<_>>());
        Some((ms(|w| w.server)?, ms(|w| w.children)?, idle))
    }
    fn rss_mib(&self) -> Option<f64> {
        self.rss.iter().flatten().max().map(|&b| mib(b))
    }
}

/// Bytes as MiB.
fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

#[derive(Debug)]
struct Entry {
    name: &'static str,
    /// `Err` is why the server was skipped.
    server: std::result::Result<Server, String>,
    figures: Figures,
}

/// Scratch space: the served root, the servers' state and their stderr.
#[derive(Debug)]
struct Scratch {
    dir: PathBuf,
    root: PathBuf,
    state: PathBuf,
    fixture: String,
    content: String,
}

impl Scratch {
    fn create() -> Result<Self> {
        let dir = std::env::temp_dir().join(format!("mcpsec-bench-{}", std::process::id()));
        let root = dir.join("root");
        let state = dir.join("state");
        for d in [&root, &state, &dir.join("logs")] {
            std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
        }
        // Canonical, so no server sees a symlinked temp dir as an escape.
        let root = std::fs::canonicalize(&root).context("canonicalizing bench root")?;
        let content = fixture_content(FIXTURE_BYTES);
        let path = root.join(FIXTURE_NAME);
        std::fs::write(&path, &content).with_context(|| format!("writing {}", path.display()))?;
        let fixture = path.to_str().context("temp dir path is not UTF-8")?.to_owned();
        Ok(Self { dir, root, state, fixture, content })
    }

    fn log(&self, server: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{}.stderr", server.replace('/', "-")))
    }
}

/// Deterministic ASCII letters and digits, no newline: it appears verbatim
/// (no JSON escaping) inside every correct reply, which makes the check cheap.
fn fixture_content(len: usize) -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            char::from(ALPHABET[(x % ALPHABET.len() as u64) as usize])
        })
        .collect()
}

/// Set in the environment of the optimized re-run, so it does not re-run
/// itself; carries the load average read before that build.
const RELEASE_ENV: &str = "MCPSEC_BENCH_OPTIMIZED";

/// `cargo xtask hot-symbols`: see `bench/layout.rs`.
pub fn hot_symbols() -> Result<()> {
    layout::run(&workspace()?)
}

fn workspace() -> Result<PathBuf> {
    Ok(Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("xtask has no parent directory")?.to_path_buf())
}

pub fn run(args: &[String]) -> Result<()> {
    let opts = parse(args)?;
    let load = match std::env::var(RELEASE_ENV) {
        Ok(v) => v.parse().ok(),
        Err(_) => loadavg(),
    };
    // `cargo xtask` builds xtask unoptimized, and an unoptimized client
    // measurably slows the servers it drives on a small machine (in one
    // trial, calls/s at 1 in flight fell by a third). Re-run optimized.
    if cfg!(debug_assertions) && std::env::var_os(RELEASE_ENV).is_none() {
        let mut cargo_args = vec!["run", "--release", "--quiet", "-p", "xtask", "--", "bench"];
        cargo_args.extend(args.iter().map(String::as_str));
        let load = load.map_or_else(|| "-".to_owned(), |l| l.to_string());
        return crate::cargo(&cargo_args, &[(RELEASE_ENV, &load)]);
    }
    let workspace = workspace()?;

    let mut entries: Vec<Entry> = peers::ALL
        .iter()
        .filter(|n| opts.only.as_ref().is_none_or(|o| o.iter().any(|x| x == *n)))
        .map(|&name| {
            let server = peers::prepare(name, &workspace, opts.build);
            if let Err(why) = &server {
                eprintln!("bench: skipping {name}: {why}");
            }
            Entry { name, server, figures: Figures::default() }
        })
        .collect();
    if !entries.is_empty() && entries.iter().all(|e| e.server.is_err()) {
        bail!("no server could be prepared; nothing to bench");
    }

    let scratch = Scratch::create()?;
    if !opts.undo_only {
        measure_all(&opts, &scratch, &mut entries);
    }

    // Audit, token and grant figures, with the default-config mcpsec.
    let mut extra = Vec::new();
    let mcpsec = entries.iter().find(|e| e.name == peers::MCPSEC).and_then(|e| e.server.as_ref().ok());
    // Part of the serve benchmark: a write-heavy workload, undo on and off.
    if let Some(mcpsec) = mcpsec {
        let warmup = Duration::from_secs_f64(opts.warmup);
        let measure = Duration::from_secs_f64(opts.seconds);
        match extra::undo_cost(mcpsec, &scratch.root, &scratch.dir, opts.runs, warmup, measure) {
            Ok(figures) => extra.extend(figures),
            Err(e) => eprintln!("bench: undo cost failed: {e:#}"),
        }
    }
    if opts.only.as_ref().is_none_or(|o| o.iter().any(|n| n == "http")) {
        let warmup = Duration::from_secs_f64(opts.warmup);
        let measure = Duration::from_secs_f64(opts.seconds);
        match http::bench(mcpsec, &workspace, opts.build, &scratch, opts.clients, opts.runs, warmup, measure) {
            Ok(figures) => extra.extend(figures),
            Err(e) => eprintln!("bench: HTTP load run failed: {e:#}"),
        }
    }
    if let (Some(mcpsec), true) = (mcpsec, opts.audit_records > 0) {
        let mut add = |what: &str, r: Result<Vec<extra::Figure>>| match r {
            Ok(figures) => extra.extend(figures),
            Err(e) => eprintln!("bench: {what} failed: {e:#}"),
        };
        add("audit", extra::audit(&workspace, mcpsec, &scratch.dir, opts.audit_records));
        add("token check", extra::token_check(&workspace).map(|f| vec![f]));
        add("scanner", extra::scan_speed(&workspace).map(|f| vec![f]));
        let grant_state = scratch.dir.join("grant-state");
        std::fs::create_dir_all(&grant_state)?;
        add(
            "grant latency",
            extra::grant_latency(mcpsec, &scratch.root, &grant_state, &scratch.log("grant")).map(|f| vec![f]),
        );
    }

    if opts.json {
        let mut v = to_json(&opts, &entries, load);
        v["other_goals"] = serde_json::Value::Array(
            extra
                .iter()
                .map(|f| {
                    json!({"what": f.what, "value": f.value, "unit": f.unit.trim(), "goal": f.goal,
                           "at_least": f.at_least, "pass": f.pass(), "detail": f.detail})
                })
                .collect(),
        );
        println!("{v:#}");
    } else {
        if opts.undo_only || entries.is_empty() {
            println!("load average (1 min) before the run: {}", fmt_opt(load, 2));
            println!("scratch directory (roots, state, audit logs): {}", filesystem(&scratch.dir));
        } else {
            print_table(&opts, &entries, load);
        }
        if !extra.is_empty() {
            println!();
            println!("other mcpsec goals");
            for f in &extra {
                println!(
                    "  {:<36} {:>10}  (goal {} {}{})  {}   {}",
                    f.what,
                    format!("{:.2}{}", f.value, f.unit),
                    if f.at_least { ">=" } else { "<=" },
                    f.goal,
                    f.unit,
                    f.verdict(),
                    f.detail
                );
            }
        }
    }

    let failed = entries.iter().any(|e| e.figures.error.is_some());
    if failed {
        eprintln!("bench: kept {} for the servers' stderr", scratch.dir.display());
    } else if let Err(e) = std::fs::remove_dir_all(&scratch.dir) {
        eprintln!("bench: could not remove {}: {e}", scratch.dir.display());
    }
    Ok(())
}

/// Startup rounds first (servers interleaved round-robin), then throughput
/// runs, interleaved by run and depth, one fresh process per measurement.
fn measure_all(opts: &Options, scratch: &Scratch, entries: &mut [Entry]) {
    let warmup = Duration::from_secs_f64(opts.warmup);
    let measure = Duration::from_secs_f64(opts.seconds);

    // One untimed spawn each, so no server pays for a cold page cache.
    for e in entries.iter_mut() {
        if let Ok(server) = &e.server {
            eprintln!("bench: {}: warming up", e.name);
            if let Err(err) = startup_once(server, scratch) {
                e.figures.error = Some(format!("{err:#}"));
                eprintln!("bench: {}: failed: {err:#}", e.name);
            }
        }
    }
    eprintln!("bench: startup, {} spawns per server", opts.startup_runs);
    for _ in 0..opts.startup_runs {
        for e in live(entries) {
            let Ok(server) = &e.server else { continue };
            match startup_once(server, scratch) {
                Ok(h) => {
                    e.figures.startup_ms.push(h.startup.as_secs_f64() * 1e3);
                    e.figures.protocol_version = Some(h.protocol_version);
                }
                Err(err) => fail(e, err),
            }
        }
    }
    for run in 0..opts.runs {
        for (d, &depth) in DEPTHS.iter().enumerate() {
            for e in live(entries) {
                let Ok(server) = &e.server else { continue };
                eprintln!("bench: {}: run {}/{}, {depth} in flight", e.name, run + 1, opts.runs);
                match throughput_once(server, scratch, depth, warmup, measure) {
                    Ok((rate, p50, rss, cpu)) => {
                        e.figures.calls[d].push(rate);
                        e.figures.p50_ms[d].extend(p50);
                        e.figures.cpu[d].extend(cpu);
                        e.figures.rss[d].push(rss);
                    }
                    Err(err) => fail(e, err),
                }
            }
        }
    }
}

fn live(entries: &mut [Entry]) -> impl Iterator<Item = &mut Entry> {
    entries.iter_mut().filter(|e| e.server.is_ok() && e.figures.error.is_none())
}

fn fail(e: &mut Entry, err: anyhow::Error) {
    eprintln!("bench: {}: failed: {err:#}", e.name);
    e.figures.error = Some(format!("{err:#}"));
}

fn startup_once(server: &Server, scratch: &Scratch) -> Result<client::Handshake> {
    let cmd = server.command(&scratch.root, &scratch.state);
    let mut s = Session::spawn(cmd, &scratch.content, &scratch.log(server.name))?;
    let h = s.initialize()?;
    s.close()?;
    Ok(h)
}

/// Calls/s and median latency (ms) at `depth` in flight, the process's
/// peak RSS in bytes, and the CPU the measured window cost.
fn throughput_once(
    server: &Server,
    scratch: &Scratch,
    depth: usize,
    warmup: Duration,
    measure: Duration,
) -> Result<(f64, Option<f64>, u64, Option<client::CpuWindow>)> {
    let token = server.token(&scratch.state)?;
    let cmd = server.command(&scratch.root, &scratch.state);
    let mut s = Session::spawn(cmd, &scratch.content, &scratch.log(server.name))?;
    s.initialize()?;
    let (rate, p50) = s.pipeline(&scratch.fixture, token.as_deref(), depth, warmup, measure)?;
    // Read just before stdin closes: the server is still alive and has
    // served every request.
    let rss = s.peak_rss()?;
    let cpu = s.last_cpu();
    s.close()?;
    Ok((rate, p50, rss, cpu))
}

fn median(xs: &[f64]) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 })
}

/// One of mcpsec's performance goals.
#[derive(Debug)]
struct Goal {
    what: &'static str,
    /// Measured value (a ratio, ms or MiB), if both sides were measured.
    value: Option<f64>,
    unit: &'static str,
    goal: f64,
    /// The value must be at least (`true`) or at most (`false`) the goal.
    at_least: bool,
}

impl Goal {
    fn pass(&self) -> Option<bool> {
        self.value.map(|v| if self.at_least { v >= self.goal } else { v <= self.goal })
    }
    fn verdict(&self) -> &'static str {
        match self.pass() {
            Some(true) => "PASS",
            Some(false) => "MISS",
            None => "n/a",
        }
    }
}

/// The mcpsec rows goals are reported for.
const MCPSEC_VARIANTS: [&str; 3] = [peers::MCPSEC, peers::MCPSEC_CHANGES, peers::MCPSEC_TOKEN];

fn goals(entries: &[Entry], variant: &str) -> Vec<Goal> {
    let get = |name: &str| entries.iter().find(|e| e.name == name && e.figures.error.is_none()).map(|e| &e.figures);
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let me = get(variant);
    let rust = get(peers::RUST_PEER);
    let node = get(peers::NODE_PEER);
    vec![
        Goal {
            what: "calls/s @16 vs rust-mcp-filesystem",
            value: ratio(me.and_then(|f| f.calls_median(1)), rust.and_then(|f| f.calls_median(1))),
            unit: "x",
            goal: 1.5,
            at_least: true,
        },
        Goal {
            what: "calls/s @1 vs node-reference",
            value: ratio(me.and_then(|f| f.calls_median(0)), node.and_then(|f| f.calls_median(0))),
            unit: "x",
            goal: 3.0,
            at_least: true,
        },
        Goal {
            what: "startup (median)",
            value: me.and_then(Figures::startup_median),
            unit: " ms",
            goal: 10.0,
            at_least: false,
        },
        Goal { what: "peak RSS", value: me.and_then(Figures::rss_mib), unit: " MiB", goal: 16.0, at_least: false },
    ]
}

fn machine() -> (usize, String) {
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, m)| m.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    (cpus, model)
}

/// The filesystem `path` is on, as the figures depend on it: its type and
/// device, and for ext4 whether it has a journal (without one, every file
/// creation scans the inodes freed in the last minutes, which costs undo,
/// whose kept files take new inodes, up to milliseconds a call).
fn filesystem(path: &Path) -> String {
    let Ok(path) = std::fs::canonicalize(path) else { return "filesystem unknown".into() };
    let Ok(mountinfo) = std::fs::read_to_string("/proc/self/mountinfo") else { return "filesystem unknown".into() };
    // Fields: id parent major:minor root mount-point options [optional] - type source super-options.
    let best = mountinfo
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mount_point = left.split_whitespace().nth(4)?;
            let mut r = right.split_whitespace();
            let (fstype, source) = (r.next()?, r.next().unwrap_or("?"));
            path.starts_with(mount_point).then_some((mount_point.len(), mount_point, fstype, source))
        })
        .max_by_key(|m| m.0);
    let Some((_, mount_point, fstype, source)) = best else { return "filesystem unknown".into() };
    let journal = if fstype == "ext4" {
        let device = source.rsplit('/').next().unwrap_or(source);
        let journaled = std::fs::read_dir("/proc/fs/jbd2").ok().is_some_and(|entries| {
            entries.flatten().any(|e| e.file_name().to_str().is_some_and(|n| n.starts_with(&format!("{device}-"))))
        });
        if journaled { " with a journal" } else { " without a journal" }
    } else {
        ""
    };
    format!("{fstype}{journal} on {source} at {mount_point}")
}

/// The 1-minute load average, to tell a quiet machine from a busy one. Read
/// before anything is built or spawned: while the bench runs, its client and
/// the server under test keep it near 2 by themselves.
fn loadavg() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

fn fmt_opt(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "—".into(), |v| format!("{v:.decimals$}"))
}

fn print_table(opts: &Options, entries: &[Entry], load: Option<f64>) {
    let (cpus, model) = machine();
    println!();
    println!(
        "read_text_file of a {FIXTURE_BYTES}-byte file; {}s measured after {}s warm-up, \
         median of {} run(s); startup median of {} spawns; {cpus} CPUs, {model}",
        opts.seconds, opts.warmup, opts.runs, opts.startup_runs
    );
    println!(
        "1-minute load average when the bench started: {} (other work on the machine skews the figures)",
        fmt_opt(load, 2)
    );
    println!("scratch directory (roots, state, audit logs): {}", filesystem(&std::env::temp_dir()));
    println!();
    println!(
        "{:<22} {:>11} {:>13} {:>14} {:>11} {:>12} {:>13}",
        "server", "startup ms", "calls/s @1", "calls/s @16", "p50 ms @1", "p50 ms @16", "peak RSS MiB"
    );
    for e in entries {
        let f = &e.figures;
        println!(
            "{:<22} {:>11} {:>13} {:>14} {:>11} {:>12} {:>13}",
            e.name,
            fmt_opt(f.startup_median(), 1),
            fmt_opt(f.calls_median(0), 0),
            fmt_opt(f.calls_median(1), 0),
            fmt_opt(f.p50_median(0), 3),
            fmt_opt(f.p50_median(1), 3),
            fmt_opt(f.rss_mib(), 1),
        );
    }
    for e in entries {
        match (&e.server, &e.figures.error) {
            (Err(why), _) => println!("  {}: skipped: {why}", e.name),
            (Ok(_), Some(err)) => println!("  {}: failed: {err}", e.name),
            _ => {}
        }
    }
    for variant in MCPSEC_VARIANTS {
        if !entries.iter().any(|e| e.name == variant && e.server.is_ok()) {
            continue;
        }
        println!();
        println!("{variant} goals");
        for g in goals(entries, variant) {
            let cmp = if g.at_least { ">=" } else { "<=" };
            println!(
                "  {:<36} {:>10}  (goal {cmp} {}{})  {}",
                g.what,
                g.value.map_or_else(|| "—".into(), |v| format!("{v:.2}{}", g.unit)),
                g.goal,
                g.unit,
                g.verdict()
            );
        }
    }
    print_proxy_cost(entries);
}

/// The gateway against the server behind it: calls/s ratios and added
/// median latency (ms) at each depth, if both rows were measured.
fn proxy_cost(entries: &[Entry]) -> Option<([f64; 2], [Option<f64>; 2])> {
    let get = |name: &str| entries.iter().find(|e| e.name == name && e.figures.error.is_none()).map(|e| &e.figures);
    let (proxy, direct) = (get(peers::MCPSEC_PROXY)?, get(peers::NODE_PEER)?);
    let ratio = |d: usize| Some(proxy.calls_median(d)? / direct.calls_median(d)?);
    let added = |d: usize| Some(proxy.p50_median(d)? - direct.p50_median(d)?);
    Some(([ratio(0)?, ratio(1)?], [added(0), added(1)]))
}

/// The gateway's goal: at 16 in flight, at least this share of the direct
/// server's throughput (it costs at most 15%).
const PROXY_GOAL: f64 = 0.85;

fn print_proxy_cost(entries: &[Entry]) {
    let Some((ratio, added)) = proxy_cost(entries) else { return };
    let ms = |v: Option<f64>| v.map_or_else(|| "—".into(), |v| format!("{v:+.3} ms"));
    println!();
    println!("mcpsec/proxy vs node-reference direct (the gateway's cost)");
    println!("  calls/s @1  ratio {:>6.2}x   p50 {}", ratio[0], ms(added[0]));
    println!(
        "  calls/s @16 ratio {:>6.2}x   p50 {}   (goal >= {PROXY_GOAL}x)  {}",
        ratio[1],
        ms(added[1]),
        if ratio[1] >= PROXY_GOAL { "PASS" } else { "MISS" }
    );
    // Where the CPU went at 16 in flight: with both on two cores, the
    // gateway's CPU is taken from the upstream's.
    let get = |name: &str| entries.iter().find(|e| e.name == name).and_then(|e| e.figures.cpu_median(1));
    if let (Some((gateway, upstream, idle)), Some((direct, _, direct_idle))) =
        (get(peers::MCPSEC_PROXY), get(peers::NODE_PEER))
    {
        let pct = |v: Option<f64>| v.map_or_else(|| "?".into(), |v| format!("{:.0} %", v * 100.0));
        println!(
            "  CPU a call @16: gateway {gateway:.3} ms, upstream behind it {upstream:.3} ms, upstream direct \
             {direct:.3} ms; machine idle {} (direct {})",
            pct(idle),
            pct(direct_idle)
        );
        if let Some(b) = proxy_budget(entries) {
            let (calls, cores, others) = b.at(PROXY_GOAL);
            println!(
                "  CPU at the goal ({calls:.0} calls/s): upstream + gateway + client and the rest \
                 ({others:.3} ms a call, from the direct run) = {cores:.2} of {} cores, {:.0} % busy \
                 (direct ran {:.0} % busy)",
                b.cpus,
                cores / b.cpus * 100.0,
                (1.0 - b.direct_idle) * 100.0
            );
        }
    }
}

/// The gateway's CPU budget, if both rows have CPU figures at 16 in flight.
fn proxy_budget(entries: &[Entry]) -> Option<Budget> {
    let figures = |name: &str| entries.iter().find(|e| e.name == name).map(|e| &e.figures);
    let (proxy, direct) = (figures(peers::MCPSEC_PROXY)?, figures(peers::NODE_PEER)?);
    let (gateway_ms, upstream_ms, _) = proxy.cpu_median(1)?;
    let (direct_ms, _, direct_idle) = direct.cpu_median(1)?;
    let budget = Budget {
        cpus: machine().0 as f64,
        direct_calls: direct.calls_median(1)?,
        direct_ms,
        direct_idle: direct_idle?,
        gateway_ms,
        upstream_ms,
    };
    (budget.cpus > 0.0).then_some(budget)
}

/// What the gateway's goal asks of the machine's CPU, from the per-call CPU
/// of one invocation: the upstream behind the gateway and the gateway at
/// their measured cost, and everything else (the bench's client, the
/// system) at what it took a call in the direct run.
struct Budget {
    cpus: f64,
    /// The direct run at 16 in flight: calls/s, the upstream's CPU ms a
    /// call, the machine's idle share.
    direct_calls: f64,
    direct_ms: f64,
    direct_idle: f64,
    /// The gateway run: the gateway's and the upstream's CPU ms a call.
    gateway_ms: f64,
    upstream_ms: f64,
}

impl Budget {
    /// At `ratio` of the direct throughput: the calls/s, the cores the
    /// three would need, and the CPU ms a call of the rest.
    fn at(&self, ratio: f64) -> (f64, f64, f64) {
        let busy = (1.0 - self.direct_idle) * self.cpus;
        let others = ((busy - self.direct_ms * self.direct_calls / 1e3) / self.direct_calls * 1e3).max(0.0);
        let calls = ratio * self.direct_calls;
        (calls, calls * (self.upstream_ms + self.gateway_ms + others) / 1e3, others)
    }
}

fn to_json(opts: &Options, entries: &[Entry], load: Option<f64>) -> serde_json::Value {
    let (cpus, model) = machine();
    let servers: Vec<_> = entries
        .iter()
        .map(|e| {
            let f = &e.figures;
            json!({
                "server": e.name,
                "skipped": e.server.as_ref().err(),
                "error": f.error,
                "protocol_version": f.protocol_version,
                "startup_ms_median": f.startup_median(),
                "startup_ms": f.startup_ms,
                "calls_per_s_1_in_flight": f.calls_median(0),
                "calls_per_s_16_in_flight": f.calls_median(1),
                "p50_ms_1_in_flight": f.p50_median(0),
                "p50_ms_16_in_flight": f.p50_median(1),
                "cpu_ms_per_call_16_in_flight": f.cpu_median(1).map(|c| c.0),
                "children_cpu_ms_per_call_16_in_flight": f.cpu_median(1).map(|c| c.1),
                "machine_idle_16_in_flight": f.cpu_median(1).and_then(|c| c.2),
                "runs_calls_per_s_1_in_flight": f.calls[0],
                "runs_calls_per_s_16_in_flight": f.calls[1],
                "peak_rss_mib": f.rss_mib(),
                "runs_peak_rss_mib_1_in_flight": f.rss[0].iter().map(|&b| mib(b)).collect::<Vec<_>>(),
                "runs_peak_rss_mib_16_in_flight": f.rss[1].iter().map(|&b| mib(b)).collect::<Vec<_>>(),
            })
        })
        .collect();
    let goals: serde_json::Map<String, serde_json::Value> = MCPSEC_VARIANTS
        .iter()
        .map(|variant| {
            let list: Vec<_> = goals(entries, variant)
                .iter()
                .map(|g| {
                    json!({
                        "what": g.what,
                        "value": g.value,
                        "goal": g.goal,
                        "at_least": g.at_least,
                        "pass": g.pass(),
                    })
                })
                .collect();
            ((*variant).to_owned(), serde_json::Value::Array(list))
        })
        .collect();
    json!({
        "machine": { "cpus": cpus, "model": model, "loadavg_1min_at_start": load,
                     "scratch_filesystem": filesystem(&std::env::temp_dir()) },
        "workload": {
            "tool": "read_text_file",
            "file_bytes": FIXTURE_BYTES,
            "seconds": opts.seconds,
            "warmup_seconds": opts.warmup,
            "runs": opts.runs,
            "startup_runs": opts.startup_runs,
            "protocol_version_offered": client::PROTOCOL_VERSION,
        },
        "servers": servers,
        "goals": goals,
        "proxy_vs_direct": proxy_cost(entries).map(|(ratio, added)| json!({
            "calls_per_s_ratio_1_in_flight": ratio[0],
            "calls_per_s_ratio_16_in_flight": ratio[1],
            "p50_added_ms_1_in_flight": added[0],
            "p50_added_ms_16_in_flight": added[1],
            "goal_16_in_flight": PROXY_GOAL,
            "pass": ratio[1] >= PROXY_GOAL,
            "cpu_at_goal": proxy_budget(entries).map(|b| {
                let (calls, cores, others) = b.at(PROXY_GOAL);
                json!({
                    "calls_per_s": calls,
                    "cores_needed": cores,
                    "machine_busy_share_needed": cores / b.cpus,
                    "machine_busy_share_direct": 1.0 - b.direct_idle,
                    "others_cpu_ms_per_call": others,
                })
            }),
        })),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gateways_cpu_budget_adds_the_three_at_the_goal() {
        // Session figures of 2026-12-03: direct 9 686 calls/s, Node 0.126 ms
        // a call, 28 % idle; the gateway 0.071 ms, Node behind it 0.143 ms.
        let b = Budget {
            cpus: 2.0,
            direct_calls: 9686.0,
            direct_ms: 0.126,
            direct_idle: 0.28,
            gateway_ms: 0.071,
            upstream_ms: 0.143,
        };
        let (calls, cores, others) = b.at(0.85);
        assert!((calls - 8233.1).abs() < 0.1, "{calls}");
        // busy 1.44 cores, Node 1.220: the rest 0.220 cores, 0.0227 ms a call.
        assert!((others - 0.0227).abs() < 0.0001, "{others}");
        assert!((cores - 8233.1 * (0.143 + 0.071 + 0.0227) / 1e3).abs() < 0.001, "{cores}");
        // A run with more idle than the upstream's share leaves nothing negative.
        let idle = Budget { direct_idle: 0.99, ..b };
        assert_eq!(idle.at(0.85).2, 0.0);
    }

    #[test]
    fn median_of_odd_even_and_empty() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&[]), None);
    }

    #[test]
    fn fixture_is_exactly_sized_and_needs_no_json_escaping() {
        let c = fixture_content(FIXTURE_BYTES);
        assert_eq!(c.len(), FIXTURE_BYTES);
        assert!(c.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert_eq!(serde_json::Value::from(c.as_str()).to_string(), format!("\"{c}\""));
    }

    #[test]
    fn options_parse_and_reject() {
        let args = |s: &str| s.split_whitespace().map(String::from).collect::<Vec<_>>();
        let o = parse(&args("--seconds 1.5 --runs 2 --only mcpsec,node-reference --json --no-build")).expect("valid");
        assert_eq!(o.seconds, 1.5);
        assert_eq!(o.runs, 2);
        assert_eq!(o.only.as_deref(), Some(&["mcpsec".to_owned(), "node-reference".to_owned()][..]));
        assert!(o.json && !o.build);
        assert!(parse(&args("--only nginx")).is_err());
        assert!(parse(&args("--seconds 0")).is_err());
        assert!(parse(&args("--runs")).is_err());
    }
}
