//! The servers under test, and getting them onto disk.
//!
//! Peers are installed into `target/bench-peers/` on first use and reused
//! afterwards; a peer that cannot be installed is reported and skipped, it
//! does not stop the others from being measured.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// How a server is started; every one is given the same single root.
#[derive(Debug, Clone)]
pub(crate) struct Server {
    /// Short name used in the table, the JSON and `--only`.
    pub(crate) name: &'static str,
    program: PathBuf,
    /// Arguments before the root directory.
    args: Vec<String>,
    /// Put the root after `--root` rather than as a positional argument.
    root_flag: bool,
    /// Pass a state directory through `MCPSEC_STATE_DIR` and hide any user
    /// configuration.
    state_env: bool,
    /// mcpsec only: a config file's text for this variant.
    pub(crate) config: Option<&'static str>,
    /// mcpsec only: mint a token for this capability before each run and
    /// pass it as `capability_token` (token mode on the hot path).
    token_for: Option<&'static str>,
}

impl Server {
    /// The mcpsec binary, for `grant` and `audit` runs.
    pub(crate) fn program(&self) -> &Path {
        &self.program
    }

    /// `mcpsec grant CAPABILITY` against this variant's state: the token.
    pub(crate) fn grant(&self, capability: &str, state_dir: &Path) -> Result<String, String> {
        // The same environment (state dir, config) as the server gets.
        let cmd = self.command(Path::new("/"), state_dir);
        let out = Command::new(&self.program)
            .args(["grant", capability, "--ttl", "1h"])
            .envs(cmd.get_envs().filter_map(|(k, v)| v.map(|v| (k.to_owned(), v.to_owned()))))
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("running mcpsec grant: {e}"))?;
        if !out.status.success() {
            return Err(format!("mcpsec grant failed: {}", String::from_utf8_lossy(&out.stderr)));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
    }

    /// The token this row's calls carry, granted against `state_dir`
    /// (`None` for a row that sends none).
    pub(crate) fn token(&self, state_dir: &Path) -> anyhow::Result<Option<String>> {
        self.token_for.map(|capability| self.grant(capability, state_dir).map_err(anyhow::Error::msg)).transpose()
    }

    /// A row's server that is never started (the goals' tests).
    #[cfg(test)]
    pub(crate) fn fake(name: &'static str) -> Server {
        Server {
            name,
            program: PathBuf::from("/nonexistent"),
            args: Vec::new(),
            root_flag: false,
            state_env: false,
            config: None,
            token_for: None,
        }
    }

    /// The same binary as another row, with its own config.
    pub(crate) fn variant(&self, name: &'static str, config: &'static str) -> Server {
        Server { name, config: Some(config), token_for: None, ..self.clone() }
    }

    /// The command that serves `root` over stdio.
    pub(crate) fn command(&self, root: &Path, state_dir: &Path) -> Command {
        let mut cmd = Command::new(&self.program);
        cmd.args(&self.args);
        if self.root_flag {
            cmd.arg("--root");
        }
        cmd.arg(root);
        if self.state_env {
            // A fresh state directory, no user config file, default logging.
            cmd.env("MCPSEC_STATE_DIR", state_dir)
                .env("XDG_CONFIG_HOME", state_dir.join("no-config"))
                .env_remove("MCPSEC_CONFIG")
                .env_remove("RUST_LOG");
            // `MCPSEC_BENCH_CONFIG=FILE` replaces the config of the plain
            // mcpsec row and of the proxy row (e.g. to try `[audit] sync =
            // "batch"`); else each row's own.
            let override_config =
                std::env::var_os("MCPSEC_BENCH_CONFIG").filter(|_| self.name == MCPSEC || self.name == MCPSEC_PROXY);
            if let Some(config) = override_config {
                cmd.env("MCPSEC_CONFIG", config);
            } else if let Some(text) = self.config {
                let file = state_dir.join(format!("{}.toml", self.name.replace('/', "-")));
                // The gateway's upstream runs confined: it is granted the
                // root it serves (read only: the bench only reads).
                let text = if self.name == MCPSEC_PROXY {
                    format!("{text}\n[proxy.fs]\nread = [{:?}]\n", root.display().to_string())
                } else {
                    text.to_owned()
                };
                #[allow(clippy::disallowed_methods)] // the bench's own scratch directory
                let written = std::fs::write(&file, text);
                if written.is_ok() {
                    cmd.env("MCPSEC_CONFIG", file);
                }
            }
        }
        cmd
    }
}

/// Every mcpsec row runs with the rate limiter on, but with a limit the
/// bench never reaches (the default, 100 calls a minute per principal, would
/// refuse almost every call of a throughput run).
macro_rules! rate_limit {
    () => {
        "[rate_limit]\ncalls = 1000000000\n"
    };
}

/// The default sync, set explicitly: a row measures the same thing whatever
/// the default of the build.
macro_rules! sync_changes {
    () => {
        "[audit]\nsync = \"changes\"\n"
    };
}

/// The config of the `mcpsec` and `mcpsec/proxy` rows: every layer on, the
/// default sync.
const MCPSEC_CONFIG: &str = concat!(sync_changes!(), rate_limit!());

pub(crate) const MCPSEC: &str = "mcpsec";
/// mcpsec with `[audit] sync = "always"`.
pub(crate) const MCPSEC_ALWAYS: &str = "mcpsec/always";
/// mcpsec with reads in `token` mode: every call carries a token to check.
pub(crate) const MCPSEC_TOKEN: &str = "mcpsec/token";
/// The stdio floor: `stdio_floor`, mcpsec's stack with no security layer.
pub(crate) const FLOOR: &str = "floor";
/// The floor with mcpsec's layers added back one at a time (`stdio_floor
/// --layers`): each rung is the one before it plus its layer.
pub(crate) const RUNGS: [(&str, &str); 6] = [
    ("floor+rate-limit", "rate-limit"),
    ("floor+authorize", "authorize"),
    ("floor+guard", "guard"),
    ("floor+scan", "scan"),
    ("floor+marking", "marking"),
    ("floor+audit", "audit"),
];
pub(crate) const RUST_PEER: &str = "rust-mcp-filesystem";
pub(crate) const NODE_PEER: &str = "node-reference";
/// `stdio_relay` in front of the reference Node server: the gateway's floor.
pub(crate) const RELAY: &str = "relay";
/// `mcpsec proxy` in front of the reference Node server (the gateway's cost).
pub(crate) const MCPSEC_PROXY: &str = "mcpsec/proxy";

/// All server names, in table order.
pub(crate) const ALL: [&str; 14] = [
    MCPSEC,
    MCPSEC_ALWAYS,
    MCPSEC_TOKEN,
    FLOOR,
    RUNGS[0].0,
    RUNGS[1].0,
    RUNGS[2].0,
    RUNGS[3].0,
    RUNGS[4].0,
    RUNGS[5].0,
    RUST_PEER,
    NODE_PEER,
    RELAY,
    MCPSEC_PROXY,
];

/// What an `--only` name stands for: a row, several (`layers`, `gateway`),
/// or the HTTP load run (`http`); nothing if it is unknown.
pub(crate) fn expand(name: &str) -> Vec<&'static str> {
    match name {
        "http" => vec!["http"],
        "layers" => std::iter::once(FLOOR).chain(RUNGS.iter().map(|r| r.0)).collect(),
        "gateway" => vec![NODE_PEER, RELAY, MCPSEC_PROXY],
        other => ALL.iter().copied().filter(|n| *n == other).collect(),
    }
}

/// Makes `name` ready to run, building or installing it if needed.
/// `Err` carries a human-readable reason to skip it.
pub(crate) fn prepare(name: &str, workspace: &Path, build: bool) -> Result<Server, String> {
    match name {
        MCPSEC => mcpsec(workspace, build),
        // The variants reuse the binary the first entry built.
        MCPSEC_ALWAYS => mcpsec(workspace, false).map(|s| Server {
            name: MCPSEC_ALWAYS,
            config: Some(concat!("[audit]\nsync = \"always\"\n", rate_limit!())),
            ..s
        }),
        MCPSEC_TOKEN => mcpsec(workspace, false).map(|s| Server {
            name: MCPSEC_TOKEN,
            config: Some(concat!("[policy]\nread_files = \"token\"\n", sync_changes!(), rate_limit!())),
            token_for: Some("read_files"),
            ..s
        }),
        // Built here too: `--only mcpsec/proxy,node-reference` needs the binary.
        MCPSEC_PROXY => {
            let node = node_peer(workspace)?;
            let built = mcpsec(workspace, build)?;
            let mut args = vec!["proxy".to_owned(), "--name".to_owned(), "fs".to_owned(), "--".to_owned()];
            args.push(node.program.to_string_lossy().into_owned());
            args.extend(node.args);
            Ok(Server { name: MCPSEC_PROXY, args, root_flag: false, ..built })
        }
        FLOOR => example(workspace, build, "stdio_floor").map(|program| Server {
            name: FLOOR,
            program,
            args: Vec::new(),
            root_flag: false,
            // The audit rung's log goes into the state directory.
            state_env: true,
            config: None,
            token_for: None,
        }),
        RELAY => {
            let node = node_peer(workspace)?;
            let program = example(workspace, build, "stdio_relay")?;
            let mut args = vec!["--".to_owned(), node.program.to_string_lossy().into_owned()];
            args.extend(node.args);
            Ok(Server { name: RELAY, program, args, ..node })
        }
        RUST_PEER => rust_peer(workspace),
        NODE_PEER => node_peer(workspace),
        other => match RUNGS.iter().position(|(rung, _)| *rung == other) {
            Some(i) => {
                let layers: Vec<&str> = RUNGS[..=i].iter().map(|(_, layer)| *layer).collect();
                let floor = prepare(FLOOR, workspace, build)?;
                Ok(Server { name: RUNGS[i].0, args: vec!["--layers".into(), layers.join(",")], ..floor })
            }
            None => Err(format!("unknown server `{other}`")),
        },
    }
}

/// Whether `what` is to be built now: the first time it is asked for in
/// this run (several rows share a binary).
fn first_build(what: &str) -> bool {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap_or_else(|p| p.into_inner());
    if built.iter().any(|b| b == what) {
        return false;
    }
    built.push(what.to_owned());
    true
}

/// Builds (with `build`) the bench example `name` of mcpsec-server, in
/// release mode as mcpsec is, and returns its path.
fn example(workspace: &Path, build: bool, name: &str) -> Result<PathBuf, String> {
    let target = workspace.join("target");
    let bin = target.join("release").join("examples").join(name);
    if build && first_build(name) {
        let target_arg = target.to_string_lossy().into_owned();
        let args = ["build", "--release", "-p", "mcpsec-server", "--example", name, "--target-dir", &target_arg];
        crate::cargo(&args, &[]).map_err(|e| format!("could not build the {name} example: {e:#}"))?;
    }
    if !bin.is_file() {
        return Err(format!("{} does not exist (run without --no-build)", bin.display()));
    }
    Ok(bin)
}

fn mcpsec(workspace: &Path, build: bool) -> Result<Server, String> {
    let target = workspace.join("target");
    let bin = target.join("release").join("mcpsec");
    if build && first_build("mcpsec") {
        // Explicit --target-dir: the binary must land in target/release even
        // when CARGO_TARGET_DIR points elsewhere.
        let target_arg = target.to_string_lossy().into_owned();
        crate::cargo(&["build", "--release", "-p", "mcpsec-cli", "--target-dir", &target_arg], &[])
            .map_err(|e| format!("could not build mcpsec: {e:#}"))?;
    }
    if !bin.is_file() {
        return Err(format!("{} does not exist (run without --no-build)", bin.display()));
    }
    Ok(Server {
        name: MCPSEC,
        program: bin,
        args: vec!["serve".into()],
        root_flag: true,
        state_env: true,
        config: Some(MCPSEC_CONFIG),
        token_for: None,
    })
}

fn rust_peer(workspace: &Path) -> Result<Server, String> {
    let root = workspace.join("target").join("bench-peers").join("rust");
    let bin = root.join("bin").join("rust-mcp-filesystem");
    if !bin.is_file() {
        eprintln!("installing rust-mcp-filesystem into {} …", root.display());
        let root_arg = root.to_string_lossy().into_owned();
        crate::cargo(&["install", "rust-mcp-filesystem", "--locked", "--root", &root_arg], &[])
            .map_err(|e| format!("could not install rust-mcp-filesystem: {e:#}"))?;
    }
    if !bin.is_file() {
        return Err(format!("cargo install succeeded but {} is missing", bin.display()));
    }
    Ok(Server {
        name: RUST_PEER,
        program: bin,
        args: Vec::new(),
        root_flag: false,
        state_env: false,
        config: None,
        token_for: None,
    })
}

fn node_peer(workspace: &Path) -> Result<Server, String> {
    let prefix = workspace.join("target").join("bench-peers").join("node");
    let index = prefix
        .join("node_modules")
        .join("@modelcontextprotocol")
        .join("server-filesystem")
        .join("dist")
        .join("index.js");
    let node_ok = Command::new("node")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !node_ok {
        return Err("`node` is not on PATH; install Node.js to bench the reference server".into());
    }
    if !index.is_file() {
        eprintln!("installing @modelcontextprotocol/server-filesystem into {} …", prefix.display());
        #[allow(clippy::disallowed_methods)] // the bench's own peer directory
        std::fs::create_dir_all(&prefix).map_err(|e| format!("creating {}: {e}", prefix.display()))?;
        let status = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&prefix)
            .arg("@modelcontextprotocol/server-filesystem")
            .status()
            .map_err(|e| format!("could not run npm: {e}"))?;
        if !status.success() {
            return Err(format!("npm install @modelcontextprotocol/server-filesystem failed ({status})"));
        }
    }
    if !index.is_file() {
        return Err(format!("npm install succeeded but {} is missing", index.display()));
    }
    Ok(Server {
        name: NODE_PEER,
        program: PathBuf::from("node"),
        args: vec![index.to_string_lossy().into_owned()],
        root_flag: false,
        state_env: false,
        config: None,
        token_for: None,
    })
}
