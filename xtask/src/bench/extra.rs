//! The benchmarks beside the serve run: the audit log's verify and grep
//! against `sha256sum` and `grep -c` on a generated log, a capability
//! token check (criterion), and the time from `mcpsec grant` returning to a
//! running server honouring the token.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use super::client::Session;
use super::peers::Server;

/// One figure with its goal.
pub(crate) struct Figure {
    pub(crate) what: String,
    pub(crate) value: f64,
    pub(crate) unit: &'static str,
    pub(crate) goal: f64,
    /// The value must be at least (`true`) or at most (`false`) the goal.
    pub(crate) at_least: bool,
    pub(crate) detail: String,
}

impl Figure {
    /// The figure as a goal (a value that is not a number is one not measured).
    pub(crate) fn goal(&self) -> super::goals::Goal {
        super::goals::Goal {
            what: self.what.clone(),
            value: Some(self.value).filter(|v| v.is_finite()),
            unit: self.unit,
            goal: self.goal,
            at_least: self.at_least,
            detail: self.detail.clone(),
        }
    }
}

fn time_cmd(cmd: &mut Command) -> Result<(Duration, String)> {
    let start = Instant::now();
    let out = cmd.stdin(Stdio::null()).output().with_context(|| format!("running {cmd:?}"))?;
    let took = start.elapsed();
    if !out.status.success() && out.status.code() != Some(1) {
        bail!("{cmd:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok((took, String::from_utf8_lossy(&out.stdout).trim().to_owned()))
}

fn median_of(runs: usize, mut f: impl FnMut() -> Result<(Duration, String)>) -> Result<(f64, String)> {
    let mut times = Vec::new();
    let mut last = String::new();
    for _ in 0..runs {
        let (t, out) = f()?;
        times.push(t.as_secs_f64());
        last = out;
    }
    times.sort_by(f64::total_cmp);
    Ok((times[times.len() / 2], last))
}

/// Generates a log of `records` records and times verify and grep against
/// `sha256sum` and `grep -c` (median of 3 each).
pub(crate) fn audit(workspace: &Path, mcpsec: &Server, dir: &Path, records: u64) -> Result<Vec<Figure>> {
    let target = workspace.join("target");
    crate::cargo(
        &[
            "build",
            "--release",
            "-p",
            "mcpsec-audit",
            "--example",
            "synthetic_log",
            "--target-dir",
            &target.to_string_lossy(),
        ],
        &[],
    )?;
    let state = dir.join("audit-state");
    std::fs::create_dir_all(&state)?;
    let log = state.join("audit.log");
    eprintln!("bench: writing a {records}-record audit log");
    let status = Command::new(target.join("release/examples/synthetic_log"))
        .arg(&log)
        .arg(records.to_string())
        .status()
        .context("running synthetic_log")?;
    if !status.success() {
        bail!("synthetic_log failed ({status})");
    }
    let size = std::fs::metadata(&log)?.len();
    let mcpsec_cmd = |args: &[&str]| {
        let mut c = Command::new(mcpsec.program());
        c.arg("--state-dir")
            .arg(&state)
            .args(args)
            .env_remove("MCPSEC_CONFIG")
            .env("XDG_CONFIG_HOME", state.join("nc"));
        c
    };
    // Warm the page cache once, so both sides read from memory.
    time_cmd(Command::new("sha256sum").arg(&log))?;
    eprintln!("bench: audit verify vs sha256sum");
    let (verify, out) = median_of(3, || time_cmd(&mut mcpsec_cmd(&["audit", "verify"])))?;
    if !out.starts_with(&format!("ok: {records} records")) {
        bail!("audit verify said: {out}");
    }
    let (sha, _) = median_of(3, || time_cmd(Command::new("sha256sum").arg(&log)))?;
    eprintln!("bench: audit grep --count vs grep -c");
    let (agrep, n1) = median_of(3, || time_cmd(&mut mcpsec_cmd(&["audit", "grep", "--count", "delete_file"])))?;
    let (grep, n2) = median_of(3, || time_cmd(Command::new("grep").args(["-c", "delete_file"]).arg(&log)))?;
    if n1 != n2 {
        bail!("audit grep --count found {n1} records, grep -c {n2} lines");
    }
    let mib = size as f64 / (1 << 20) as f64;
    Ok(vec![
        Figure {
            what: "audit verify / sha256sum".into(),
            value: verify / sha,
            unit: "x",
            goal: 3.0,
            at_least: false,
            detail: format!("{:.0} ms vs {:.0} ms on {records} records ({mib:.0} MiB)", verify * 1e3, sha * 1e3),
        },
        Figure {
            what: "audit grep --count / grep -c".into(),
            value: agrep / grep,
            unit: "x",
            goal: 2.0,
            at_least: false,
            detail: format!("{:.0} ms vs {:.0} ms, {n1} matches", agrep * 1e3, grep * 1e3),
        },
    ])
}

/// Runs the criterion benchmark of a token check and returns its median.
pub(crate) fn token_check(workspace: &Path) -> Result<Figure> {
    eprintln!("bench: token check (criterion)");
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(workspace)
        .args(["bench", "-p", "mcpsec-caps", "--bench", "token_check", "--", "--warm-up-time", "1"])
        // A criterion filter is a regex: no parentheses.
        .args(["--measurement-time", "3", "seen, unlimited"])
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo bench")?;
    let text = String::from_utf8_lossy(&out.stdout);
    // criterion: `time:   [4.35 µs 4.45 µs 4.56 µs]`
    let line = text.lines().find(|l| l.contains("time:")).context("no criterion figure in cargo bench output")?;
    let inner = line.split('[').nth(1).and_then(|s| s.split(']').next()).context("unexpected criterion line")?;
    let parts: Vec<&str> = inner.split_whitespace().collect();
    let (value, unit) = (parts.get(2).context("criterion line")?, parts.get(3).context("criterion line")?);
    let v: f64 = value.parse().context("criterion value")?;
    let us = match *unit {
        "ns" => v / 1e3,
        "µs" | "us" => v,
        "ms" => v * 1e3,
        other => bail!("unexpected unit {other}"),
    };
    Ok(Figure {
        what: "token check, seen token".into(),
        value: us,
        unit: " µs",
        goal: 5.0,
        at_least: false,
        detail: "criterion median, HMAC + cache check against the database's data_version".into(),
    })
}

/// Runs the criterion benchmark of the untrusted-content scanner and
/// returns the slowest throughput it reports, in MB/s (goal ≥ 200).
pub(crate) fn scan_speed(workspace: &Path) -> Result<Figure> {
    eprintln!("bench: untrusted-content scanner (criterion)");
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .current_dir(workspace)
        .args(["bench", "-p", "mcpsec-core", "--bench", "scan", "--", "--warm-up-time", "1", "--measurement-time", "3"])
        .stderr(Stdio::inherit())
        .output()
        .context("running cargo bench")?;
    let mb_s = slowest_throughput(&String::from_utf8_lossy(&out.stdout))?;
    Ok(Figure {
        what: "untrusted-content scan".into(),
        value: mb_s,
        unit: " MB/s",
        goal: 200.0,
        at_least: true,
        detail: "criterion, the slower of two 1 MiB corpora (source and prose; non-ASCII prose)".into(),
    })
}

/// The slowest `thrpt:` figure in criterion's output, in MB/s. Lines of
/// percentages (criterion's comparison with the previous run) are skipped.
fn slowest_throughput(text: &str) -> Result<f64> {
    let mut slowest: Option<f64> = None;
    for line in text.lines().filter(|l| l.contains("thrpt:") && !l.contains('%')) {
        let inner = line.split('[').nth(1).and_then(|s| s.split(']').next()).context("unexpected criterion line")?;
        let parts: Vec<&str> = inner.split_whitespace().collect();
        let (value, unit) = (parts.get(2).context("criterion line")?, parts.get(3).context("criterion line")?);
        let v: f64 = value.parse().context("criterion value")?;
        let mb_s = match *unit {
            "GiB/s" => v * 1024.0 * 1.048_576,
            "MiB/s" => v * 1.048_576,
            "KiB/s" => v / 1024.0 * 1.048_576,
            "GB/s" => v * 1000.0,
            "MB/s" => v,
            other => bail!("unexpected unit {other}"),
        };
        slowest = Some(slowest.map_or(mb_s, |s: f64| s.min(mb_s)));
    }
    slowest.context("no criterion throughput in cargo bench output")
}

/// From `mcpsec grant` exiting to the running server accepting the token
/// (median of 10): the store is shared, so no restart and no stale cache.
pub(crate) fn grant_latency(mcpsec: &Server, root: &Path, state: &Path, logs: &Path) -> Result<Figure> {
    eprintln!("bench: grant -> honoured");
    let cmd = mcpsec.command(root, state);
    // The "expected content" is never in a reply: every reply comes back as a line.
    let mut s = Session::spawn(cmd, "\u{1}never\u{1}", logs)?;
    s.initialize()?;
    let mut lat = Vec::new();
    for i in 0..10u64 {
        let file = root.join(format!("grant-{i}.txt"));
        std::fs::write(&file, "x")?;
        let token = mcpsec.grant("delete_files", state).map_err(|e| anyhow::anyhow!(e))?;
        let granted = Instant::now();
        let call = serde_json::json!({
            "jsonrpc": "2.0", "id": 1000 + i, "method": "tools/call",
            "params": { "name": "delete_file", "arguments": { "path": file, "capability_token": token } },
        });
        // Bounded: at most 200 attempts, each waits for its reply.
        let mut honoured = None;
        for _ in 0..200 {
            let reply = s.request(&call.to_string())?.unwrap_or_default();
            if reply.contains("\"isError\":false") {
                honoured = Some(granted.elapsed());
                break;
            }
        }
        lat.push(honoured.context("the server never honoured a fresh grant")?.as_secs_f64() * 1e3);
    }
    s.close()?;
    lat.sort_by(f64::total_cmp);
    Ok(Figure {
        what: "grant returns -> token honoured".into(),
        value: lat[lat.len() / 2],
        unit: " ms",
        goal: 100.0,
        at_least: false,
        detail: format!("median of 10; worst {:.2} ms; the first call after the grant succeeded", lat[lat.len() - 1]),
    })
}

/// The cost of each pair of slices, sorted: a pair is two consecutive
/// slices of each variant (calls/s `with` and `without`), its cost
/// `1 - with / without` over the pair's calls.
fn paired_costs(with: &[f64], without: &[f64]) -> Vec<f64> {
    let mut costs: Vec<f64> = with
        .chunks(2)
        .zip(without.chunks(2))
        .map(|(w, wo)| 1.0 - w.iter().sum::<f64>() / wo.iter().sum::<f64>())
        .collect();
    costs.sort_by(f64::total_cmp);
    costs
}

/// Overwrites of a 4 KiB file (`write_file`, writes allowed) with undo on
/// (the defaults) and off, at 1 and 16 in flight: both servers side by
/// side, `runs` pairs of slices (ABBA: on, off, off, on), each on a fresh
/// state directory kept until every depth is done (on ext4 without a
/// journal, removing a trash of thousands of files slows the creations
/// that follow, whichever variant makes them). The cost is the median of
/// the pairs'.
pub(crate) fn undo_cost(
    mcpsec: &Server,
    root: &Path,
    dir: &Path,
    runs: usize,
    warmup: Duration,
    measure: Duration,
) -> Result<Vec<Figure>> {
    const WRITES: &str =
        "[policy]\nwrite_files = \"allow\"\n[audit]\nsync = \"changes\"\n[rate_limit]\ncalls = 1000000000\n";
    let on = mcpsec.variant("mcpsec/undo-on", WRITES);
    let off = mcpsec.variant(
        "mcpsec/undo-off",
        concat!(
            "[policy]\nwrite_files = \"allow\"\n[audit]\nsync = \"changes\"\n[rate_limit]\ncalls = 1000000000\n",
            "[undo]\nenabled = false\n"
        ),
    );
    let file = root.join("bench-overwrite.txt");
    std::fs::write(&file, "x")?;
    let args = serde_json::json!({ "path": file, "content": super::fixture_content(super::FIXTURE_BYTES) }).to_string();
    // Both servers run side by side, and the measurement alternates between
    // them in short slices (which goes first alternates too): this disk's
    // speed drifts by tens of percent within seconds, and a slice of each
    // variant back to back sees the same disk. The cost is the median of
    // the pairs' costs. Each pair is `measure` of each variant, split in
    // two slices.
    let slice = measure / 2;
    let slices = runs * 2;
    let mut figures = Vec::new();
    for depth in [1usize, 16] {
        let mut sessions = Vec::new();
        for (v, server) in [&on, &off].into_iter().enumerate() {
            let state = dir.join(format!("undo-state-{v}-{depth}"));
            std::fs::create_dir_all(&state)?;
            let log = dir.join("logs").join(format!("undo-{v}-{depth}.stderr"));
            let mut s = Session::spawn(server.command(root, &state), "Successfully wrote to", &log)?;
            s.initialize()?;
            // Warm both up before the first slice.
            if !warmup.is_zero() {
                s.pipeline_tool("write_file", &args, depth, Duration::ZERO, warmup)?;
            }
            sessions.push(s);
        }
        eprintln!("bench: undo on / off: {slices} slices of {:.1}s each, {depth} in flight", slice.as_secs_f64());
        let mut rates = [Vec::new(), Vec::new()];
        for i in 0..slices {
            let order = if i % 2 == 0 { [0, 1] } else { [1, 0] };
            for v in order {
                let (rate, _) = sessions[v].pipeline_tool("write_file", &args, depth, Duration::ZERO, slice)?;
                rates[v].push(rate);
            }
        }
        for s in sessions {
            s.close()?;
        }
        let costs = paired_costs(&rates[0], &rates[1]);
        let (lo, hi) = (costs[0], costs[costs.len() - 1]);
        let total = |r: &[f64]| r.iter().sum::<f64>() / r.len() as f64;
        let (with, without) = (total(&rates[0]), total(&rates[1]));
        figures.push(Figure {
            what: format!("undo cost, 4 KiB overwrites @{depth}"),
            value: costs[costs.len() / 2] * 100.0,
            unit: " %",
            goal: 20.0,
            at_least: false,
            detail: format!(
                "median of {} pairs (range {:.0} to {:.0} %); mean {with:.0} calls/s with undo, {without:.0} without; {}",
                costs.len(),
                lo * 100.0,
                hi * 100.0,
                super::filesystem(dir)
            ),
        });
    }
    for depth in [1usize, 16] {
        for v in 0..2 {
            let _ = std::fs::remove_dir_all(dir.join(format!("undo-state-{v}-{depth}")));
        }
    }
    Ok(figures)
}

#[cfg(test)]
mod tests {
    use super::{paired_costs, slowest_throughput};

    #[test]
    fn pairs_are_two_slices_of_each_variant_sorted_by_cost() {
        // Pair 1: 150 vs 200 calls → 25 %; pair 2: 100 vs 100 → 0 %;
        // pair 3: 120 vs 100 → −20 % (undo faster in that pair).
        let costs = paired_costs(&[70.0, 80.0, 50.0, 50.0, 60.0, 60.0], &[100.0, 100.0, 40.0, 60.0, 50.0, 50.0]);
        let rounded: Vec<i64> = costs.iter().map(|c| (c * 100.0).round() as i64).collect();
        assert_eq!(rounded, [-20, 0, 25]);
    }

    #[test]
    fn criterion_throughput_lines_are_read_and_comparisons_skipped() {
        let out = "scan/a\n  time: [1 ms 2 ms 3 ms]\n  thrpt:  [588.38 MiB/s 635.23 MiB/s 687.54 MiB/s]\n                    change:\n  thrpt:  [-5.1% +2.3% +8.0%]\nscan/b\n  thrpt:  [1.0 GiB/s 1.1 GiB/s 1.2 GiB/s]\n";
        let v = slowest_throughput(out).unwrap();
        assert!((v - 635.23 * 1.048_576).abs() < 0.01, "{v}");
        assert!(slowest_throughput("nothing here").is_err());
    }
}
