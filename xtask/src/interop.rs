//! `cargo xtask interop`: mcpsec against other people's MCP clients.
//!
//! Installs, into `target/interop/` (once; later runs reuse it), the official
//! MCP Python SDK (a venv, `pip install -r tests/interop/requirements.txt`)
//! and the MCP Inspector (`npm install`, pinned below), then runs the scripted
//! sessions in `tests/interop/` against `mcpsec serve`: the Python SDK over
//! stdio and over streamable HTTP (`serve --http`, a user's key), the
//! Inspector CLI over stdio. Needs python3 (3.10 or later) and npm, and the
//! registries on first use.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

/// The MCP Inspector release: the newest whose package does not require
/// Node 22 (this machine has Node 20; 0.16 and later declare `node >=22.7.5`).
const INSPECTOR: &str = "0.15.0";

fn run(cmd: &mut Command) -> Result<()> {
    eprintln!("$ {cmd:?}");
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed ({status})");
    }
    Ok(())
}

/// The first Python 3.10+ on PATH.
fn python() -> Result<&'static str> {
    for candidate in ["python3.13", "python3.12", "python3.11", "python3.10", "python3"] {
        let ok = Command::new(candidate)
            .args(["-c", "import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return Ok(candidate);
        }
    }
    bail!("the Python SDK needs Python 3.10 or later on PATH")
}

fn python_sdk(dir: &Path, root: &Path) -> Result<PathBuf> {
    let venv = dir.join("venv");
    let py = venv.join("bin/python");
    if !py.is_file() {
        run(Command::new(python()?).arg("-m").arg("venv").arg(&venv))?;
    }
    run(Command::new(&py)
        .args(["-m", "pip", "install", "--quiet", "--disable-pip-version-check", "-r"])
        .arg(root.join("tests/interop/requirements.txt")))?;
    Ok(py)
}

fn inspector(dir: &Path) -> Result<PathBuf> {
    let prefix = dir.join("inspector");
    let bin = prefix.join("node_modules/.bin/mcp-inspector");
    let manifest = prefix.join("node_modules/@modelcontextprotocol/inspector/package.json");
    let installed = std::fs::read_to_string(&manifest)
        .ok()
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
        .and_then(|v| v["version"].as_str().map(str::to_owned));
    if installed.as_deref() != Some(INSPECTOR) || !bin.exists() {
        std::fs::create_dir_all(&prefix)?;
        std::fs::write(prefix.join("package.json"), "{\"private\": true}\n")?;
        run(Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--loglevel=error", "--prefix"])
            .arg(&prefix)
            .arg(format!("@modelcontextprotocol/inspector@{INSPECTOR}")))?;
    }
    Ok(bin)
}

pub fn run_all() -> Result<()> {
    let root = crate::docs::root();
    let dir = root.join("target/interop");
    std::fs::create_dir_all(&dir)?;
    let target = root.join("target").to_string_lossy().into_owned();
    crate::cargo(&["build", "--locked", "-p", "mcpsec-cli", "--target-dir", &target], &[])?;
    let mcpsec = root.join("target/debug/mcpsec");

    let started = Instant::now();
    let py = python_sdk(&dir, &root)?;
    let inspector = inspector(&dir)?;
    let installed = started.elapsed();

    let started = Instant::now();
    let mut failed = Vec::new();
    if run(Command::new(&py).arg(root.join("tests/interop/python_sdk.py")).arg(&mcpsec)).is_err() {
        failed.push("python-sdk");
    }
    let sdk = started.elapsed();
    let started = Instant::now();
    if run(Command::new(&py).arg(root.join("tests/interop/inspector_cli.py")).arg(&mcpsec).arg(&inspector)).is_err() {
        failed.push("inspector-cli");
    }
    let insp = started.elapsed();
    eprintln!(
        "xtask interop: installs {:.1?}, Python SDK sessions {:.1?}, Inspector CLI sessions {:.1?}",
        installed, sdk, insp
    );
    if !failed.is_empty() {
        bail!("interop failed: {}", failed.join(", "));
    }
    Ok(())
}
