//! Project automation, `cargo xtask <task>` (see `cargo xtask help`).
//!
//! Needs nothing but cargo and rustc for `ci`; the benchmark installs its
//! peers (npm, cargo install) into `target/bench-peers` on first use.

use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, ExitCode, Stdio};
use std::thread::JoinHandle;

use anyhow::{Context, Result, bail};

mod bench;
mod conformance;
mod docs;
mod interop;

const HELP: &str = "\
cargo xtask <task>

tasks:
  ci      fmt check, clippy -D warnings, all tests, docs with warnings denied
  bench   serve benchmark: mcpsec vs the reference Node server and rust-mcp-filesystem
  hot-symbols  list the functions the stdio server runs, for the release build's code layout (needs valgrind)
  docs    regenerate docs/configuration.md from mcpsec-core's config reference
  man     man pages, one per subcommand, into target/man (or `cargo xtask man DIR`)
  interop the official Python SDK and the MCP Inspector CLI against mcpsec (installs into target/interop)
  conformance  the official MCP conformance suite against `mcpsec serve --http` (installs into target/conformance)
  help    this text
";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("ci") => ci(),
        Some("bench") => bench::run(&args[1..]),
        Some("hot-symbols") => bench::hot_symbols(),
        Some("docs") => docs::run(),
        Some("man") => man(args.get(1).map(String::as_str)),
        Some("interop") => interop::run_all(),
        Some("conformance") => conformance::run(),
        Some("help") | None => {
            eprint!("{HELP}");
            Ok(())
        }
        Some(other) => Err(anyhow::anyhow!("unknown task `{other}`\n\n{HELP}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `cargo` with `args`, failing if it fails.
pub(crate) fn cargo(args: &[&str], envs: &[(&str, &str)]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("$ cargo {}", args.join(" "));
    let status = Command::new(cargo)
        .args(args)
        .envs(envs.iter().copied())
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("`cargo {}` failed ({status})", args.join(" "));
    }
    Ok(())
}

/// Builds `mcpsec` and has it write its man pages (clap_mangen, from the
/// same clap definition as `--help`), so xtask needs no clap of its own.
fn man(dir: Option<&str>) -> Result<()> {
    let root = docs::root();
    // Explicit --target-dir: the binary must be where we run it from even
    // when CARGO_TARGET_DIR points elsewhere.
    let target = root.join("target").to_string_lossy().into_owned();
    cargo(&["build", "--locked", "-p", "mcpsec-cli", "--target-dir", &target], &[])?;
    let out = dir.map_or_else(|| root.join("target/man"), std::path::PathBuf::from);
    let bin = root.join("target/debug/mcpsec");
    let status = Command::new(&bin)
        .arg("man")
        .arg("--out")
        .arg(&out)
        .status()
        .with_context(|| format!("running {}", bin.display()))?;
    if !status.success() {
        bail!("`mcpsec man --out {}` failed ({status})", out.display());
    }
    Ok(())
}

fn ci() -> Result<()> {
    let started = std::time::Instant::now();
    cargo(&["fmt", "--all", "--", "--check"], &[])?;
    cargo(&["clippy", "--workspace", "--all-targets", "--locked", "--", "-D", "warnings"], &[])?;
    // The build with glibc's allocator (`--no-default-features`) must keep compiling.
    cargo(&["clippy", "-p", "mcpsec-cli", "--no-default-features", "--locked", "--", "-D", "warnings"], &[])?;
    // The end-to-end tests spawn the real binary; build it first so that
    // they find it without racing the build.
    cargo(&["build", "--locked", "-p", "mcpsec-cli"], &[])?;
    // The gateway tests run the reference MCP servers from npm.
    install_test_deps()?;
    cargo_test(&["test", "--workspace", "--locked", "--no-fail-fast"])?;
    cargo(&["doc", "--workspace", "--no-deps", "--locked"], &[("RUSTDOCFLAGS", "-D warnings")])?;
    eprintln!("xtask ci: all green in {:.0?}", started.elapsed());
    Ok(())
}

/// Runs `cargo ARGS` (a `cargo test`), passing its output through as it
/// comes, and on failure ends with the failed tests by name and how to rerun
/// each test binary: the last lines of a red CI say what broke.
fn cargo_test(args: &[&str]) -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("$ cargo {}", args.join(" "));
    let mut child = Command::new(cargo)
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    let failed = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let pass = |stream: Box<dyn std::io::Read + Send>, to_stderr: bool| {
        let failed = failed.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines().map_while(Result::ok) {
                // Each stream goes where it came from.
                if to_stderr {
                    eprintln!("{line}");
                } else {
                    let _ = writeln!(std::io::stdout(), "{line}");
                }
                if let Some(what) = failed_line(&line) {
                    failed.lock().unwrap_or_else(|p| p.into_inner()).push(what);
                }
            }
        })
    };
    let out = pass(Box::new(child.stdout.take().context("no stdout")?), false);
    let err = pass(Box::new(child.stderr.take().context("no stderr")?), true);
    let status = child.wait().context("waiting for cargo test")?;
    let _ = (out.join(), err.join());
    if status.success() {
        return Ok(());
    }
    let failed = failed.lock().unwrap_or_else(|p| p.into_inner()).clone();
    eprintln!("\nxtask ci: `cargo {}` failed ({status}):", args.join(" "));
    for f in &failed {
        eprintln!("  {f}");
    }
    if failed.is_empty() {
        eprintln!("  (no test named as failed: a build or a test binary failed; see above)");
    }
    bail!("{} test line(s) failed", failed.len())
}

/// What a line of `cargo test` output says failed, if it says so: a test
/// (`test NAME ... FAILED`) or a test binary (`error: test failed, to rerun
/// pass …`).
fn failed_line(line: &str) -> Option<String> {
    if let Some(name) = line.strip_prefix("test ").and_then(|l| l.strip_suffix(" ... FAILED")) {
        return Some(format!("FAILED {name}"));
    }
    line.strip_prefix("error: test failed, to rerun pass ").map(|hint| format!("rerun with {hint}"))
}

/// Installs the npm packages the end-to-end tests run behind `mcpsec proxy`
/// (`tests/fixtures/npm`, pinned by its lock file) into `target/test-deps`.
/// (The test harness does the same on demand, so `cargo test` alone works.)
fn install_test_deps() -> Result<()> {
    npm_ci("tests/fixtures/npm", "target/test-deps").map(|_| ())
}

/// Installs the npm packages pinned by `SOURCE/package.json` and
/// `SOURCE/package-lock.json` (paths relative to the workspace) into `DEST`
/// with `npm ci`, unless the installed tree is from the same lock file.
/// Returns `DEST`, absolute.
pub(crate) fn npm_ci(source: &str, dest: &str) -> Result<std::path::PathBuf> {
    let workspace = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().context("no workspace")?;
    let source = workspace.join(source);
    let deps = workspace.join(dest);
    let lock = std::fs::read(source.join("package-lock.json"))
        .with_context(|| format!("reading {}", source.join("package-lock.json").display()))?;
    if std::fs::read(deps.join("package-lock.json")).ok().as_ref() == Some(&lock) && deps.join("node_modules").is_dir()
    {
        return Ok(deps);
    }
    let tmp = std::path::PathBuf::from(format!("{}.tmp-{}", deps.display(), std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    for f in ["package.json", "package-lock.json"] {
        std::fs::copy(source.join(f), tmp.join(f)).with_context(|| format!("copying {f}"))?;
    }
    eprintln!("$ npm ci ({} → {})", source.display(), deps.display());
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--ignore-scripts"])
        .current_dir(&tmp)
        .status()
        .context("running npm (Node.js 20 or later is needed)")?;
    if !status.success() {
        bail!("`npm ci` in {} failed ({status})", tmp.display());
    }
    let _ = std::fs::remove_dir_all(&deps);
    std::fs::rename(&tmp, &deps).with_context(|| format!("moving {} into place", tmp.display()))?;
    Ok(deps)
}

/// `mcpsec users add NAME` with `envs` (the state directory's); returns the
/// key it prints once.
pub(crate) fn add_user<K, V>(mcpsec: &Path, name: &str, envs: impl IntoIterator<Item = (K, V)>) -> Result<String>
where
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    let out = Command::new(mcpsec)
        .args(["users", "add", name])
        .envs(envs)
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .context("running mcpsec users add")?;
    if !out.status.success() {
        bail!("`mcpsec users add {name}` failed ({})", out.status);
    }
    Ok(String::from_utf8(out.stdout).context("the key is not UTF-8")?.trim().to_owned())
}

/// Starts `cmd` (an `mcpsec serve --http 127.0.0.1:0 …`, its stderr
/// piped), reads its log until it says where it listens, and hands every
/// other log line to `sink`, on a thread of its own once it listens.
/// Returns the child, the URL it serves (`None` if it exited first) and the
/// draining thread (it ends when the server does).
pub(crate) fn spawn_http_server(
    cmd: &mut Command,
    mut sink: impl FnMut(&str) + Send + 'static,
) -> Result<(Child, Option<String>, JoinHandle<()>)> {
    let mut child = cmd
        .env("RUST_LOG", "warn,mcpsec_server::http=info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting mcpsec serve --http")?;
    let mut lines = BufReader::new(child.stderr.take().context("no stderr")?).lines();
    let mut url = None;
    for line in lines.by_ref() {
        let line = line?;
        if let Some((_, u)) = line.split_once("listening on ") {
            url = Some(u.trim().to_owned());
            break;
        }
        sink(&line);
    }
    let drain = std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            sink(&line);
        }
    });
    Ok((child, url, drain))
}

#[cfg(test)]
mod tests {
    #[test]
    fn failed_tests_and_binaries_are_named() {
        assert_eq!(
            super::failed_line("test tokens::a_refused_call ... FAILED").as_deref(),
            Some("FAILED tokens::a_refused_call")
        );
        assert_eq!(super::failed_line("test tokens::ok ... ok"), None);
        assert_eq!(
            super::failed_line("error: test failed, to rerun pass `-p mcpsec-e2e --test e2e`").as_deref(),
            Some("rerun with `-p mcpsec-e2e --test e2e`")
        );
    }
}
