//! What the figures of one run are held against. Every goal here is a
//! ratio to something measured in the same run on the same machine: a
//! floor (the same stack with no security layer: `floor`, `relay`,
//! `http_floor`) or a peer. What a machine manages at all moves from run to
//! run and from machine to machine; how close mcpsec comes to the limit of
//! its own stack does not, or much less.
//!
//! Also here: what each security layer costs a call (the floor's rungs) and
//! what the gateway costs (against the relay and the direct server).

use serde_json::json;

use super::{Entry, Figures, peers};

/// One goal and what was measured for it.
#[derive(Debug, Clone)]
pub(crate) struct Goal {
    pub(crate) what: String,
    /// Measured (a ratio, ms, µs or MiB), if every side of it was.
    pub(crate) value: Option<f64>,
    pub(crate) unit: &'static str,
    pub(crate) goal: f64,
    /// The value must be at least (`true`) or at most (`false`) the goal.
    pub(crate) at_least: bool,
    /// What the value is made of (the two figures of a ratio).
    pub(crate) detail: String,
}

impl Goal {
    pub(crate) fn pass(&self) -> Option<bool> {
        self.value.map(|v| if self.at_least { v >= self.goal } else { v <= self.goal })
    }

    pub(crate) fn verdict(&self) -> &'static str {
        match self.pass() {
            Some(true) => "PASS",
            Some(false) => "MISS",
            None => "n/a",
        }
    }

    /// One line of the table: the goal, its verdict and what it is made of.
    pub(crate) fn line(&self) -> String {
        format!("{}  {}", self.short_line(), self.detail)
    }

    /// The goal and its verdict.
    pub(crate) fn short_line(&self) -> String {
        let cmp = if self.at_least { ">=" } else { "<=" };
        let value = self.value.map_or_else(|| "—".into(), |v| format!("{v:.2}{}", self.unit));
        let goal = format!("(goal {cmp} {}{})", self.goal, self.unit);
        format!("  {:<48} {:>11}  {goal:<18} {:<4}", self.what, value, self.verdict())
    }

    pub(crate) fn to_json(&self) -> serde_json::Value {
        json!({
            "what": self.what,
            "value": self.value,
            "unit": self.unit.trim(),
            "goal": self.goal,
            "at_least": self.at_least,
            "pass": self.pass(),
            "detail": self.detail,
        })
    }
}

/// mcpsec with every layer on and the default sync, against the stdio
/// floor: at least this share of its calls/s, at 1 and at 16 in flight.
pub(crate) const STDIO_VS_FLOOR: f64 = 0.80;
/// Start-up against the fastest peer (rust-mcp-filesystem): at most this
/// multiple of its median.
pub(crate) const STARTUP_VS_RUST: f64 = 1.0;
/// The gateway's CPU a call against the relay's: at most this multiple.
pub(crate) const GATEWAY_CPU_VS_RELAY: f64 = 2.0;
/// The latency the gateway adds at 1 in flight (its p50 minus the direct
/// server's), in µs: at most this.
pub(crate) const GATEWAY_ADDED_US: f64 = 80.0;

fn figures<'a>(entries: &'a [Entry], name: &str) -> Option<&'a Figures> {
    entries.iter().find(|e| e.name == name && e.server.is_ok() && e.figures.error.is_none()).map(|e| &e.figures)
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    }
}

fn num(v: Option<f64>, decimals: usize) -> String {
    v.map_or_else(|| "—".into(), |v| format!("{v:.decimals$}"))
}

/// The goals of one mcpsec row (`mcpsec`, `mcpsec/always`, `mcpsec/token`).
/// The floor goals are the product's for the `mcpsec` row; the variants'
/// are shown for comparison.
pub(crate) fn stdio(entries: &[Entry], variant: &str) -> Vec<Goal> {
    let me = figures(entries, variant);
    let floor = figures(entries, peers::FLOOR);
    let rust = figures(entries, peers::RUST_PEER);
    let node = figures(entries, peers::NODE_PEER);
    let calls = |f: Option<&Figures>, d: usize| f.and_then(|f| f.calls_median(d));
    let vs = |other: &str, f: Option<&Figures>, d: usize| {
        format!("{} vs {other}'s {} calls/s", num(calls(me, d), 0), num(calls(f, d), 0))
    };
    let startup = |f: Option<&Figures>| f.and_then(Figures::startup_median);
    vec![
        Goal {
            what: "calls/s @1 vs the stdio floor".into(),
            value: ratio(calls(me, 0), calls(floor, 0)),
            unit: "x",
            goal: STDIO_VS_FLOOR,
            at_least: true,
            detail: vs("the floor", floor, 0),
        },
        Goal {
            what: "calls/s @16 vs the stdio floor".into(),
            value: ratio(calls(me, 1), calls(floor, 1)),
            unit: "x",
            goal: STDIO_VS_FLOOR,
            at_least: true,
            detail: vs("the floor", floor, 1),
        },
        Goal {
            what: "startup vs rust-mcp-filesystem (medians)".into(),
            value: ratio(startup(me), startup(rust)),
            unit: "x",
            goal: STARTUP_VS_RUST,
            at_least: false,
            detail: format!("{} ms vs {} ms", num(startup(me), 2), num(startup(rust), 2)),
        },
        Goal {
            what: "calls/s @16 vs rust-mcp-filesystem".into(),
            value: ratio(calls(me, 1), calls(rust, 1)),
            unit: "x",
            goal: 1.5,
            at_least: true,
            detail: vs(peers::RUST_PEER, rust, 1),
        },
        Goal {
            what: "calls/s @1 vs node-reference".into(),
            value: ratio(calls(me, 0), calls(node, 0)),
            unit: "x",
            goal: 3.0,
            at_least: true,
            detail: vs(peers::NODE_PEER, node, 0),
        },
        Goal {
            what: "peak RSS".into(),
            value: me.and_then(Figures::rss_mib),
            unit: " MiB",
            goal: 16.0,
            at_least: false,
            detail: "the largest of every run".into(),
        },
    ]
}

/// What one layer costs a call: the difference between two rows, in µs.
#[derive(Debug, Clone)]
pub(crate) struct LayerCost {
    pub(crate) layer: &'static str,
    /// Which rows it is the difference of.
    pub(crate) from: &'static str,
    /// Wall time a call at 1 in flight (1 / calls/s): the latency it adds.
    pub(crate) time_us_1: Option<f64>,
    /// The server's CPU a call (all its threads), at 1 and at 16 in flight.
    pub(crate) cpu_us: [Option<f64>; 2],
}

/// Per row, µs of wall time a call at 1 in flight and of CPU at each depth.
fn per_call_us(f: Option<&Figures>) -> (Option<f64>, [Option<f64>; 2]) {
    let time = f.and_then(|f| f.calls_median(0)).filter(|&c| c > 0.0).map(|c| 1e6 / c);
    let cpu = |d: usize| f.and_then(|f| f.cpu_median(d)).map(|c| c.0 * 1e3);
    (time, [cpu(0), cpu(1)])
}

fn diff(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(a? - b?)
}

/// The layer costs, if the floor was measured: the floor itself (absolute),
/// each rung minus the one below it, `mcpsec` minus the top rung (what the
/// pipeline adds beyond its layers), and `mcpsec` minus the floor.
pub(crate) fn layers(entries: &[Entry]) -> Option<Vec<LayerCost>> {
    let floor = figures(entries, peers::FLOOR)?;
    let cost = |layer, from, upper: Option<&Figures>, lower: Option<&Figures>| {
        let (u, l) = (per_call_us(upper), per_call_us(lower));
        LayerCost { layer, from, time_us_1: diff(u.0, l.0), cpu_us: [diff(u.1[0], l.1[0]), diff(u.1[1], l.1[1])] }
    };
    let (time, cpu) = per_call_us(Some(floor));
    let mut out = vec![LayerCost { layer: "the floor itself", from: "floor", time_us_1: time, cpu_us: cpu }];
    let mut below = (peers::FLOOR, Some(floor));
    for (rung, layer) in peers::RUNGS {
        let here = figures(entries, rung);
        out.push(cost(layer, rung, here, below.1));
        below = (rung, here);
    }
    let me = figures(entries, peers::MCPSEC);
    out.push(cost("the rest of the pipeline", "mcpsec - floor+audit", me, below.1));
    out.push(cost("mcpsec, every layer", "mcpsec - floor", me, Some(floor)));
    Some(out)
}

/// What the layer table says about how it was measured.
pub(crate) const LAYERS_NOTE: &str = "\
  Each floor+X row is the row above it plus X, through mcpsec's own code (stdio_floor --layers: the rate
  limiter, the authorizer under the default policy, the built-in read_text_file and its path guard, the
  scanner, the untrusted-data marking, the audit append with sync = \"changes\"). Config cannot switch these off
  in mcpsec itself (only [injection] mode = \"off\" skips the scan), hence the rungs. \"the rest\" is what the
  pipeline adds beyond its layers (the call's facts, the record's fields, the tool table, the token argument).
  Time @1 is 1/calls-per-second at 1 in flight; CPU is the server's, all threads, from /proc/PID/stat.
  A difference within the run-to-run spread (see --json) can be negative.";

/// The gateway in front of the reference server, against the relay in
/// front of it and the server alone.
#[derive(Debug, Clone)]
pub(crate) struct Gateway {
    pub(crate) rows: Vec<Middle>,
    pub(crate) goals: Vec<Goal>,
}

/// A process between the client and the reference server (`relay`,
/// `mcpsec/proxy`), per depth (1 and 16 in flight).
#[derive(Debug, Clone)]
pub(crate) struct Middle {
    pub(crate) name: &'static str,
    /// Its own CPU a call, µs.
    pub(crate) cpu_us: [Option<f64>; 2],
    /// The latency it adds, µs: its p50 minus the direct server's.
    pub(crate) added_us: [Option<f64>; 2],
    /// Its calls/s over the direct server's.
    pub(crate) of_direct: [Option<f64>; 2],
}

pub(crate) fn gateway(entries: &[Entry]) -> Option<Gateway> {
    let direct = figures(entries, peers::NODE_PEER);
    let relay = figures(entries, peers::RELAY);
    let proxy = figures(entries, peers::MCPSEC_PROXY);
    if relay.is_none() && proxy.is_none() {
        return None;
    }
    let cpu = |f: Option<&Figures>, d: usize| f.and_then(|f| f.cpu_median(d)).map(|c| c.0 * 1e3);
    let added = |f: Option<&Figures>, d: usize| {
        diff(f.and_then(|f| f.p50_median(d)), direct.and_then(|f| f.p50_median(d))).map(|ms| ms * 1e3)
    };
    let of_direct = |f: Option<&Figures>, d: usize| {
        ratio(f.and_then(|f| f.calls_median(d)), direct.and_then(|f| f.calls_median(d)))
    };
    let row = |name, f| Middle {
        name,
        cpu_us: [cpu(f, 0), cpu(f, 1)],
        added_us: [added(f, 0), added(f, 1)],
        of_direct: [of_direct(f, 0), of_direct(f, 1)],
    };
    let rows = vec![row(peers::RELAY, relay), row(peers::MCPSEC_PROXY, proxy)];
    let cpu_goal = |d: usize, depth: usize| Goal {
        what: format!("gateway CPU a call @{depth} vs the relay's"),
        value: ratio(cpu(proxy, d), cpu(relay, d)),
        unit: "x",
        goal: GATEWAY_CPU_VS_RELAY,
        at_least: false,
        detail: format!("{} µs vs {} µs", num(cpu(proxy, d), 1), num(cpu(relay, d), 1)),
    };
    let goals = vec![
        cpu_goal(0, 1),
        cpu_goal(1, 16),
        Goal {
            what: "gateway latency added @1 (p50 - direct p50)".into(),
            value: added(proxy, 0),
            unit: " µs",
            goal: GATEWAY_ADDED_US,
            at_least: false,
            detail: format!(
                "the relay adds {} µs; the gateway's p50 is {} µs over the relay's",
                num(added(relay, 0), 0),
                num(diff(added(proxy, 0), added(relay, 0)), 0)
            ),
        },
    ];
    Some(Gateway { rows, goals })
}

pub(crate) fn print_layers(entries: &[Entry]) {
    let Some(costs) = layers(entries) else { return };
    let us = |v: Option<f64>, sign: bool| match v {
        Some(v) if sign => format!("{v:+.1}"),
        Some(v) => format!("{v:.1}"),
        None => "—".into(),
    };
    println!();
    println!("what each layer costs a call, µs (mcpsec's layers added to the stdio floor one at a time)");
    println!("  {:<26} {:>10} {:>10} {:>10}   rows", "layer", "time @1", "CPU @1", "CPU @16");
    for (i, c) in costs.iter().enumerate() {
        let sign = i > 0;
        println!(
            "  {:<26} {:>10} {:>10} {:>10}   {}",
            c.layer,
            us(c.time_us_1, sign),
            us(c.cpu_us[0], sign),
            us(c.cpu_us[1], sign),
            c.from
        );
    }
    println!("{LAYERS_NOTE}");
}

pub(crate) fn layers_json(entries: &[Entry]) -> serde_json::Value {
    layers(entries).map_or(serde_json::Value::Null, |costs| {
        costs
            .iter()
            .map(|c| {
                json!({
                    "layer": c.layer,
                    "rows": c.from,
                    "time_us_1_in_flight": c.time_us_1,
                    "cpu_us_1_in_flight": c.cpu_us[0],
                    "cpu_us_16_in_flight": c.cpu_us[1],
                })
            })
            .collect()
    })
}

pub(crate) fn print_gateway(entries: &[Entry]) {
    let Some(g) = gateway(entries) else { return };
    println!();
    println!(
        "the gateway in front of node-reference, against a relay in front of it (CPU of the middle process alone)"
    );
    println!(
        "  {:<14} {:>10} {:>10} {:>16} {:>16} {:>14} {:>14}",
        "middle", "CPU µs @1", "CPU µs @16", "added p50 @1 µs", "added p50 @16 µs", "calls/s @1", "calls/s @16"
    );
    for m in &g.rows {
        let x = |v: Option<f64>| v.map_or_else(|| "—".into(), |v| format!("{v:.2}x direct"));
        println!(
            "  {:<14} {:>10} {:>10} {:>16} {:>16} {:>14} {:>14}",
            m.name,
            num(m.cpu_us[0], 1),
            num(m.cpu_us[1], 1),
            num(m.added_us[0], 0),
            num(m.added_us[1], 0),
            x(m.of_direct[0]),
            x(m.of_direct[1]),
        );
    }
    println!(
        "  (the calls/s ratios are for information: on a small machine the gateway's CPU is taken from the upstream's)"
    );
    for goal in &g.goals {
        println!("{}", goal.line());
    }
}

pub(crate) fn gateway_json(entries: &[Entry]) -> serde_json::Value {
    gateway(entries).map_or(serde_json::Value::Null, |g| {
        json!({
            "direct": peers::NODE_PEER,
            "middles": g.rows.iter().map(|m| json!({
                "row": m.name,
                "cpu_us_per_call_1_in_flight": m.cpu_us[0],
                "cpu_us_per_call_16_in_flight": m.cpu_us[1],
                "p50_added_us_1_in_flight": m.added_us[0],
                "p50_added_us_16_in_flight": m.added_us[1],
                "calls_per_s_vs_direct_1_in_flight": m.of_direct[0],
                "calls_per_s_vs_direct_16_in_flight": m.of_direct[1],
            })).collect::<Vec<_>>(),
            "goals": g.goals.iter().map(Goal::to_json).collect::<Vec<_>>(),
        })
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::bench::client::CpuWindow;

    /// A measured row: calls/s, p50 ms and CPU µs a call at 1 and 16 in flight.
    fn row(name: &'static str, calls: [f64; 2], p50_ms: [f64; 2], cpu_us: [u64; 2]) -> Entry {
        let cpu = |us| CpuWindow { server: Duration::from_micros(us), children: Duration::ZERO, machine_idle: None };
        let mut figures = Figures::default();
        for d in 0..2 {
            figures.calls[d] = vec![calls[d]];
            figures.p50_ms[d] = vec![p50_ms[d]];
            figures.cpu[d] = vec![cpu(cpu_us[d])];
        }
        Entry { name, server: Ok(peers::Server::fake(name)), figures }
    }

    fn close(a: Option<f64>, b: f64) -> bool {
        a.is_some_and(|a| (a - b).abs() < 1e-6)
    }

    #[test]
    fn each_layer_is_its_rung_minus_the_one_below() {
        let mut entries = vec![row(peers::FLOOR, [10_000.0, 40_000.0], [0.1, 0.4], [40, 20])];
        // Each rung: 1 µs more a call at 1 in flight, 2 µs more CPU.
        for (i, (rung, _)) in peers::RUNGS.iter().enumerate() {
            let n = (i + 1) as f64;
            let us = 100.0 + n;
            entries.push(row(rung, [1e6 / us, 40_000.0], [0.1, 0.4], [40 + 2 * (i as u64 + 1), 20]));
        }
        // mcpsec: 10 µs over the top rung.
        entries.push(row(peers::MCPSEC, [1e6 / 116.0, 30_000.0], [0.12, 0.5], [60, 30]));
        let costs = layers(&entries).unwrap();
        assert_eq!(costs.len(), 1 + peers::RUNGS.len() + 2);
        assert_eq!(costs[0].layer, "the floor itself");
        assert!(close(costs[0].time_us_1, 100.0) && close(costs[0].cpu_us[0], 40.0));
        for c in &costs[1..=peers::RUNGS.len()] {
            assert!(close(c.time_us_1, 1.0), "{c:?}");
            assert!(close(c.cpu_us[0], 2.0) && close(c.cpu_us[1], 0.0), "{c:?}");
        }
        let rest = &costs[peers::RUNGS.len() + 1];
        assert!(close(rest.time_us_1, 10.0) && close(rest.cpu_us[0], 8.0), "{rest:?}");
        let total = &costs[peers::RUNGS.len() + 2];
        assert!(close(total.time_us_1, 16.0) && close(total.cpu_us[1], 10.0), "{total:?}");
        // Without the floor there is no table; without a rung, its cost and the next are unknown.
        assert!(layers(&entries[1..]).is_none());
        entries.remove(2);
        let costs = layers(&entries).unwrap();
        assert!(costs[2].time_us_1.is_none() && costs[3].time_us_1.is_none() && costs[1].time_us_1.is_some());
    }

    #[test]
    fn the_gateway_is_held_against_the_relay_and_the_direct_server() {
        let entries = vec![
            row(peers::NODE_PEER, [1000.0, 4000.0], [1.0, 4.0], [900, 250]),
            row(peers::RELAY, [950.0, 3900.0], [1.02, 4.1], [50, 25]),
            row(peers::MCPSEC_PROXY, [900.0, 3000.0], [1.07, 5.0], [120, 50]),
        ];
        let g = gateway(&entries).unwrap();
        let verdicts: Vec<_> =
            g.goals.iter().map(|g| (g.value.map(|v| (v * 100.0).round() / 100.0), g.verdict())).collect();
        // CPU @1: 120 / 50 = 2.4 (miss); @16: 50 / 25 = 2.0 (pass); added @1: 70 µs (pass).
        assert_eq!(verdicts, [(Some(2.4), "MISS"), (Some(2.0), "PASS"), (Some(70.0), "PASS")]);
        assert!(close(g.rows[0].added_us[0].map(|v| v.round()), 20.0));
        assert!(close(g.rows[1].of_direct[1], 0.75));
        // No relay: the CPU goals are not measured, not passed.
        let without_relay = [
            row(peers::NODE_PEER, [1000.0, 4000.0], [1.0, 4.0], [900, 250]),
            row(peers::MCPSEC_PROXY, [900.0, 3000.0], [1.07, 5.0], [120, 50]),
        ];
        let g = gateway(&without_relay).unwrap();
        assert_eq!(g.goals[0].verdict(), "n/a");
    }

    #[test]
    fn the_stdio_goals_are_ratios_to_the_floor_and_the_peers() {
        let entries = vec![
            row(peers::MCPSEC, [8_000.0, 30_000.0], [0.12, 0.5], [60, 30]),
            row(peers::FLOOR, [10_000.0, 40_000.0], [0.1, 0.4], [40, 20]),
        ];
        let goals = stdio(&entries, peers::MCPSEC);
        assert!(close(goals[0].value, 0.8) && goals[0].verdict() == "PASS");
        assert!(close(goals[1].value, 0.75) && goals[1].verdict() == "MISS");
        // No rust-mcp-filesystem row: its goals are not measured.
        assert_eq!(goals[2].verdict(), "n/a");
    }
}
