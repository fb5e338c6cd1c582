//! `cargo xtask bench`: mcpsec against floors and peers, on the same
//! workload, in the same invocation.
//!
//! For every row: the median time from spawn to the `initialize` response;
//! `read_text_file` calls per second on a 4 KiB file with 1 and with 16
//! requests in flight (a raw pipelining JSON-RPC client over stdio), the
//! median latency, the server's CPU a call; and peak resident memory
//! (`VmHWM`). The rows are mcpsec (every layer on, and variants), the
//! stdio floor (`stdio_floor`: mcpsec's stack with no security layer) and
//! its rungs (mcpsec's layers added back one at a time, which price each
//! layer), the two peers, and the gateway in front of the reference server
//! beside a bare relay (`stdio_relay`) in front of it. The goals are ratios
//! to a floor or a peer of the same run (`bench/goals.rs`). Beside them:
//! audit verify and grep, a token check, the scanner, grant latency, the
//! cost of undo on overwrites, and the HTTP load run against `http_floor`
//! (`bench/http.rs`). See BENCHMARKS.md for the method and the latest
//! figures.

// The task exists to print a report.
#![allow(clippy::print_stdout)]
// The bench's own fixture, state and log files, not tool calls.
#![allow(clippy::disallowed_methods)]

mod client;
mod extra;
mod goals;
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
  --only A,B         bench only these rows: mcpsec, mcpsec/always, mcpsec/token, floor,
                     floor+rate-limit, floor+authorize, floor+guard, floor+scan, floor+marking,
                     floor+audit, rust-mcp-filesystem, node-reference, relay, mcpsec/proxy;
                     `layers` (the floor and its rungs), `gateway` (node-reference, relay,
                     mcpsec/proxy), `http` (the HTTP load run)
  --clients N        concurrent clients of the HTTP load run (`http`; default 64)
  --no-build         use the existing release builds instead of building them
  --audit-records N  records in the generated log for audit verify/grep (default 1000000)
  --serve-only       skip the audit, token-check, scanner and grant-latency benchmarks
                     (the serve rows and the undo cost on overwrites still run)
  --undo-only        run only the undo cost on overwrites (mcpsec, undo on and off)
  --json             print the results as JSON instead of a table

rows: `mcpsec` is every layer on with the default sync ([audit] sync = \"changes\", set
explicitly); `mcpsec/always` the same with sync = \"always\"; `mcpsec/token` reads in token
mode, so every call carries a capability token to check. `floor` is the stdio floor
(crates/mcpsec-server/examples/stdio_floor.rs: mcpsec's transport, runtime and allocator, no
security layer); each `floor+X` row is the row above it plus mcpsec's layer X, which prices the
layers. `mcpsec/proxy` is `mcpsec proxy` in front of the reference Node server, `relay` a bare
line relay (examples/stdio_relay.rs) in front of it: the gateway's floor.
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
                let mut names: Vec<String> = Vec::new();
                for n in value("--only")?.split(',').map(str::trim) {
                    let rows = peers::expand(n);
                    if rows.is_empty() {
                        bail!("unknown row `{n}` in --only\n\n{USAGE}");
                    }
                    names.extend(rows.into_iter().map(str::to_owned));
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

    let headline = headline(&entries, &extra);
    if opts.json {
        let mut v = to_json(&opts, &entries, load);
        v["other_goals"] = extra.iter().map(|f| f.goal().to_json()).collect();
        v["floor_goals"] = headline.iter().map(goals::Goal::to_json).collect();
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
                println!("{}", f.goal().line());
            }
        }
        print_headline(&headline);
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

/// The mcpsec rows goals are reported for: `mcpsec` is the product's, the
/// others are shown for comparison.
const MCPSEC_VARIANTS: [&str; 3] = [peers::MCPSEC, peers::MCPSEC_ALWAYS, peers::MCPSEC_TOKEN];

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
    println!("CPU µs: the row's own process (all threads) a call; its children (an upstream) are not counted");
    println!();
    println!(
        "{:<20} {:>10} {:>11} {:>12} {:>10} {:>11} {:>10} {:>11} {:>9}",
        "row",
        "startup ms",
        "calls/s @1",
        "calls/s @16",
        "p50 ms @1",
        "p50 ms @16",
        "CPU µs @1",
        "CPU µs @16",
        "RSS MiB"
    );
    for e in entries {
        let f = &e.figures;
        let cpu = |d: usize| f.cpu_median(d).map(|c| c.0 * 1e3);
        println!(
            "{:<20} {:>10} {:>11} {:>12} {:>10} {:>11} {:>10} {:>11} {:>9}",
            e.name,
            fmt_opt(f.startup_median(), 2),
            fmt_opt(f.calls_median(0), 0),
            fmt_opt(f.calls_median(1), 0),
            fmt_opt(f.p50_median(0), 3),
            fmt_opt(f.p50_median(1), 3),
            fmt_opt(cpu(0), 1),
            fmt_opt(cpu(1), 1),
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
        let what = if variant == peers::MCPSEC { " (the product's goals)" } else { " (for comparison)" };
        println!("{variant} goals{what}");
        for g in goals::stdio(entries, variant) {
            println!("{}", g.line());
        }
    }
    goals::print_layers(entries);
    goals::print_gateway(entries);
}

/// The goals of the floors issue, from every part of the run: stdio and
/// start-up (the `mcpsec` row), the gateway, HTTP.
fn headline(entries: &[Entry], extra: &[extra::Figure]) -> Vec<goals::Goal> {
    let mut out: Vec<goals::Goal> = Vec::new();
    if entries.iter().any(|e| e.name == peers::MCPSEC) {
        out.extend(goals::stdio(entries, peers::MCPSEC).into_iter().take(3).map(|mut g| {
            g.what = format!("mcpsec {}", g.what);
            g
        }));
    }
    if let Some(g) = goals::gateway(entries) {
        out.extend(g.goals);
    }
    out.extend(extra.iter().filter(|f| f.what.starts_with("http ") && f.unit != " MiB").map(extra::Figure::goal));
    out
}

fn print_headline(goals: &[goals::Goal]) {
    if goals.is_empty() {
        return;
    }
    let count = |p: Option<bool>| goals.iter().filter(|g| g.pass() == p).count();
    println!();
    println!(
        "the floor goals at a glance: {} PASS, {} MISS, {} not measured",
        count(Some(true)),
        count(Some(false)),
        count(None)
    );
    for g in goals {
        println!("{}", g.short_line());
    }
}

fn to_json(opts: &Options, entries: &[Entry], load: Option<f64>) -> serde_json::Value {
    let (cpus, model) = machine();
    let servers: Vec<_> = entries
        .iter()
        .map(|e| {
            let f = &e.figures;
            let cpu = |d: usize| f.cpu_median(d);
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
                "cpu_ms_per_call_1_in_flight": cpu(0).map(|c| c.0),
                "cpu_ms_per_call_16_in_flight": cpu(1).map(|c| c.0),
                "children_cpu_ms_per_call_1_in_flight": cpu(0).map(|c| c.1),
                "children_cpu_ms_per_call_16_in_flight": cpu(1).map(|c| c.1),
                "machine_idle_1_in_flight": cpu(0).and_then(|c| c.2),
                "machine_idle_16_in_flight": cpu(1).and_then(|c| c.2),
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
            let list: Vec<_> = goals::stdio(entries, variant).iter().map(goals::Goal::to_json).collect();
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
        "layers": goals::layers_json(entries),
        "gateway": goals::gateway_json(entries),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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
        // Group names stand for their rows.
        let o = parse(&args("--only gateway,http")).expect("valid");
        assert_eq!(o.only.as_deref().map(<[String]>::len), Some(4));
        let o = parse(&args("--only layers")).expect("valid");
        assert_eq!(o.only.as_ref().map(|o| o[0].as_str()), Some(peers::FLOOR));
        assert_eq!(o.only.as_ref().map(Vec::len), Some(1 + peers::RUNGS.len()));
        assert!(parse(&args("--seconds 0")).is_err());
        assert!(parse(&args("--runs")).is_err());
    }
}
