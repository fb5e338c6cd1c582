//! `cargo xtask conformance`: the official MCP conformance suite against
//! `mcpsec serve --http`.
//!
//! Installs `@modelcontextprotocol/conformance` (pinned by
//! `tests/conformance/package.json` and its lock file) into
//! `target/conformance` with `npm ci`, starts `mcpsec serve --http
//! 127.0.0.1:0` on a scratch workspace with a fresh user, and runs every
//! server scenario of the suite (`--suite all`) against it. The scenarios
//! mcpsec does not pass, with the reason, are in
//! `tests/conformance/expected-failures.yml`; the task fails on any other
//! failure and on a listed scenario that now passes.
//!
//! The suite has no option to send an `Authorization` header, so it runs
//! with `tests/conformance/bearer.mjs` preloaded (`node --import`), which
//! adds the user's key to the requests it makes to the server (the key is
//! passed in the environment, never on a command line).

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

pub fn run() -> Result<()> {
    let root = crate::docs::root();
    let target = root.join("target").to_string_lossy().into_owned();
    crate::cargo(&["build", "--locked", "-p", "mcpsec-cli", "--target-dir", &target], &[])?;
    let mcpsec = root.join("target/debug/mcpsec");
    let started = Instant::now();
    let suite = crate::npm_ci("tests/conformance", "target/conformance")?;
    let installed = started.elapsed();

    let scratch = suite.join(format!("run-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&scratch);
    let (ws, state) = (scratch.join("ws"), scratch.join("state"));
    for d in [&ws, &state] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    #[allow(clippy::disallowed_methods)] // the scratch workspace's own file, not a tool call
    std::fs::write(ws.join("hello.txt"), "hello from the conformance workspace\n")?;
    let no_config = scratch.join("no-config");
    let env = [("MCPSEC_STATE_DIR", state.as_path()), ("XDG_CONFIG_HOME", no_config.as_path())];

    let key = crate::add_user(&mcpsec, "conformance", env)?;

    // The server's log is shown while the suite runs.
    let (mut server, url, drain) = crate::spawn_http_server(
        Command::new(&mcpsec)
            .arg("serve")
            .arg("--root")
            .arg(&ws)
            .args(["--http", "127.0.0.1:0"])
            .envs(env)
            .current_dir(&scratch),
        |line| eprintln!("mcpsec: {line}"),
    )?;
    let result = match url {
        None => Err(anyhow::anyhow!("mcpsec serve --http exited before listening")),
        Some(url) => run_suite(&root, &suite, &scratch, &url, &key),
    };
    stop(&mut server);
    let _ = drain.join();
    let ran = started.elapsed() - installed;
    eprintln!("xtask conformance: install {installed:.1?}, suite {ran:.1?}");
    if result.is_ok() {
        let _ = std::fs::remove_dir_all(&scratch);
    }
    result
}

fn run_suite(root: &Path, suite: &Path, scratch: &Path, url: &str, key: &str) -> Result<()> {
    let cli = suite.join("node_modules/@modelcontextprotocol/conformance/dist/index.js");
    let mut cmd = Command::new("node");
    cmd.arg("--import")
        .arg(root.join("tests/conformance/bearer.mjs"))
        .arg(&cli)
        .args(["server", "--url", url, "--suite", "all", "--expected-failures"])
        .arg(root.join("tests/conformance/expected-failures.yml"))
        .arg("--output-dir")
        .arg(scratch.join("results"))
        .current_dir(suite)
        .env("MCPSEC_CONFORMANCE_URL", url)
        .env("MCPSEC_CONFORMANCE_KEY", key);
    eprintln!("$ {cmd:?}");
    let status = cmd.status().context("running node (Node.js 20 or later is needed)")?;
    if !status.success() {
        bail!(
            "the conformance suite failed ({status}): a scenario failed that is not in \
             tests/conformance/expected-failures.yml, or one listed there now passes; results in {}",
            scratch.join("results").display()
        );
    }
    Ok(())
}

/// SIGTERM (mcpsec stops gracefully), then wait.
fn stop(server: &mut std::process::Child) {
    let _ = Command::new("kill").arg("-TERM").arg(server.id().to_string()).status();
    let _ = server.wait();
}
