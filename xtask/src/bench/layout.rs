//! `cargo xtask hot-symbols`: which functions of `mcpsec` the stdio server
//! runs, written to `crates/mcpsec-cli/hot-symbols.txt` for the linker to
//! place first (`--symbol-ordering-file`, see `crates/mcpsec-cli/build.rs`).
//!
//! The kernel maps a binary's code 64 KiB around each page that faults, so
//! the resident code of a server is the number of 64 KiB windows its
//! functions are spread over, not their size: 9 MiB of a 13 MiB text for
//! about 2.5 MB of functions run. Laid out together, they take a few windows.
//!
//! The workload is the bench's: the `mcpsec`, `mcpsec/token` and
//! `mcpsec/always` rows (start, handshake, `read_text_file` at 16 and at 1
//! in flight, stop), each under valgrind's callgrind, which names every
//! function executed. The list is sorted by instructions executed, hottest
//! first. It is a snapshot: functions renamed since are ignored by the
//! linker (the benefit fades, nothing breaks); rerun after large changes.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail};

use super::client::Session;
use super::{DEPTHS, Scratch, peers};

/// Where the list goes, relative to the workspace.
const LIST: &str = "crates/mcpsec-cli/hot-symbols.txt";

/// Calls made per depth under callgrind (about 50 times slower than native).
const MEASURE: Duration = Duration::from_secs(2);

pub(crate) fn run(workspace: &Path) -> Result<()> {
    let valgrind = Command::new("valgrind").arg("--version").output();
    if !valgrind.is_ok_and(|o| o.status.success()) {
        bail!("hot-symbols needs valgrind on PATH (e.g. `apt install valgrind`)");
    }
    let scratch = Scratch::create()?;
    let mut cost: HashMap<String, u64> = HashMap::new();
    for (i, name) in [peers::MCPSEC, peers::MCPSEC_TOKEN, peers::MCPSEC_ALWAYS].into_iter().enumerate() {
        // The first row builds the release binary, the others reuse it.
        let server = peers::prepare(name, workspace, i == 0).map_err(|e| anyhow::anyhow!(e))?;
        let token = server.token(&scratch.state)?;
        let out = scratch.dir.join(format!("callgrind.{}", name.replace('/', "-")));
        let cmd = server.command(&scratch.root, &scratch.state);
        let mut wrapped = Command::new("valgrind");
        wrapped
            .args(["--tool=callgrind", "--demangle=no", "--compress-strings=no", "--compress-pos=no"])
            .arg(format!("--callgrind-out-file={}", out.display()))
            .arg(cmd.get_program())
            .args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => wrapped.env(k, v),
                None => wrapped.env_remove(k),
            };
        }
        eprintln!("hot-symbols: {name} under callgrind");
        let mut s = Session::spawn(wrapped, &scratch.content, &scratch.log(name))?;
        s.initialize()?;
        for depth in DEPTHS.iter().rev() {
            s.pipeline(&scratch.fixture, token.as_deref(), *depth, Duration::ZERO, MEASURE)?;
        }
        s.close()?;
        let text = std::fs::read_to_string(&out)
            .with_context(|| format!("reading {} (did the server exit in time?)", out.display()))?;
        let before = cost.len();
        add_costs(&text, "mcpsec", &mut cost);
        eprintln!("hot-symbols: {name}: {} functions, {} new", cost.len(), cost.len() - before);
    }
    let list = workspace.join(LIST);
    std::fs::write(&list, render(&cost)).with_context(|| format!("writing {}", list.display()))?;
    eprintln!("hot-symbols: {} functions written to {LIST}; rebuild the release binary to use them", cost.len());
    let _ = std::fs::remove_dir_all(&scratch.dir);
    Ok(())
}

/// Adds the instructions each function of the object named `object` ran
/// (its self cost) from a callgrind output written with
/// `--compress-strings=no --compress-pos=no`.
fn add_costs(text: &str, object: &str, cost: &mut HashMap<String, u64>) {
    let mut in_object = false;
    let mut function: Option<String> = None;
    let mut after_call = false;
    for line in text.lines() {
        // The line after `calls=` is the call's inclusive cost, not the
        // caller's own.
        if std::mem::take(&mut after_call) {
            continue;
        }
        if let Some(ob) = line.strip_prefix("ob=") {
            in_object = Path::new(ob.trim()).file_name().is_some_and(|f| f == object);
        } else if let Some(name) = line.strip_prefix("fn=") {
            // `'2` and up mark recursion depths of the same function.
            let name = name.trim();
            let name = match name.rsplit_once('\'') {
                Some((base, depth)) if depth.bytes().all(|b| b.is_ascii_digit()) => base,
                _ => name,
            };
            function = (in_object && !name.starts_with("0x") && !name.starts_with('(')).then(|| name.to_owned());
            if let Some(f) = &function {
                cost.entry(f.clone()).or_insert(0);
            }
        } else if line.starts_with("calls=") {
            after_call = true;
        } else if let Some(f) = &function
            && line.starts_with(|c: char| c.is_ascii_digit() || c == '+' || c == '-' || c == '*')
            && let Some(n) = line.split_whitespace().nth(1).and_then(|n| n.parse::<u64>().ok())
        {
            *cost.entry(f.clone()).or_insert(0) += n;
        }
    }
}

/// The list, hottest first (ties by name, so a rerun on the same build
/// writes the same file), under a comment saying what it is.
fn render(cost: &HashMap<String, u64>) -> String {
    let mut names: Vec<(&String, &u64)> = cost.iter().collect();
    names.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let mut out = String::from(
        "# Written by `cargo xtask hot-symbols`: the functions the stdio server runs (the bench's\n\
         # mcpsec, mcpsec/token and mcpsec/always rows under callgrind), hottest first. The\n\
         # release build's linker places them first (crates/mcpsec-cli/build.rs); see\n\
         # BENCHMARKS.md, \"Code layout\".\n",
    );
    for (name, _) in names {
        let _ = writeln!(out, "{name}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
version: 1
events: Ir
ob=/usr/lib/libc.so.6
fn=memcpy
0 500
ob=/work/target/release/mcpsec
fl=???
fn=_ZN6mcpsec4main17habcE
0 10
cob=/usr/lib/libc.so.6
cfn=memcpy
calls=1 0
0 500
0 5
fn=_ZN4core3fmt5write17hdefE'2
0 7
fn=_ZN4core3fmt5write17hdefE
0 3
fn=0x00000000002b3c20
0 9
fn=_ZN5tokio4park17h123E
";

    #[test]
    fn self_costs_of_the_binary_only_without_call_costs_or_recursion_marks() {
        let mut cost = HashMap::new();
        add_costs(SAMPLE, "mcpsec", &mut cost);
        assert_eq!(cost.get("_ZN6mcpsec4main17habcE"), Some(&15), "the call's 500 is memcpy's, not main's");
        assert_eq!(cost.get("_ZN4core3fmt5write17hdefE"), Some(&10));
        assert_eq!(cost.get("_ZN5tokio4park17h123E"), Some(&0), "run, even if no cost line follows");
        assert!(!cost.contains_key("memcpy"), "libc is not ours to order");
        assert_eq!(cost.len(), 3, "no addresses without a symbol: {cost:?}");
    }

    #[test]
    fn the_list_is_hottest_first_and_stable() {
        let mut cost = HashMap::new();
        add_costs(SAMPLE, "mcpsec", &mut cost);
        let text = render(&cost);
        let names: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(names, ["_ZN6mcpsec4main17habcE", "_ZN4core3fmt5write17hdefE", "_ZN5tokio4park17h123E"]);
        assert_eq!(text, render(&cost));
    }
}
