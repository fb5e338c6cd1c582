//! `[confine]`: building how the processes mcpsec starts are confined,
//! from the config and the environment (the mcpsec executable, `HOME`,
//! `PATH`, the state directory and the config file).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use mcpsec_confine::{Grants, Launcher, Limits, Mode, Network, Never};
use mcpsec_core::Config;
use mcpsec_core::confine::{ConfineMode, NetworkSetting};
use mcpsec_server::confine::Confinement;

use crate::usage;

/// Tests only, honoured by debug builds only: behave as if the kernel had
/// no Landlock (`required` must then refuse).
const PRETEND_NO_LANDLOCK: &str = "MCPSEC_TEST_ONLY_PRETEND_NO_LANDLOCK";

/// Where mcpsec keeps what it must never let a confined process reach.
#[derive(Debug)]
pub(crate) struct Sources<'a> {
    pub state: &'a Path,
    pub audit_log: &'a Path,
    pub config_file: Option<&'a Path>,
    /// The roots (`serve`), none for a gateway.
    pub roots: Vec<&'a Path>,
}

/// The launcher every confined process of this mcpsec goes through, or
/// `None` when `[confine] mode = "off"`. A `[confine] read`/`write` entry
/// that overlaps a never-path is a usage error naming both.
pub(crate) fn launcher(config: &Config, src: &Sources<'_>) -> Result<Option<Arc<Launcher>>> {
    let c = &config.confine;
    let mode = match c.mode {
        ConfineMode::Off => return Ok(None),
        ConfineMode::Required => Mode::Required,
        ConfineMode::BestEffort => Mode::BestEffort,
    };
    let never = never(config, src);
    for (key, entries) in [("[confine] read", &c.read), ("[confine] write", &c.write)] {
        mcpsec_confine::check_overlap(key, entries, &never).map_err(|e| usage(e.to_string()))?;
    }
    let mut base = Grants::default();
    for p in mcpsec_confine::default_read().iter().chain(&c.read) {
        base.read(p, &never);
    }
    for p in &c.write {
        base.write(p, &never);
    }
    // The running executable itself, even after an upgrade replaced or
    // removed the file (a child resolves `/proc/self/exe` after the fork).
    let proc_exe = PathBuf::from("/proc/self/exe");
    #[allow(clippy::disallowed_methods)] // mcpsec's own executable, not a tool call
    let exe = if std::fs::metadata(&proc_exe).is_ok() {
        proc_exe
    } else {
        std::env::current_exe().context("finding the mcpsec executable (to start confined processes)")?
    };
    Ok(Some(Arc::new(Launcher {
        exe,
        mode,
        never,
        base,
        limits: Limits {
            open_files: c.max_open_files,
            processes: c.max_processes,
            file_size: c.max_file_size,
            address_space: c.max_address_space,
        },
        test_only_pretend_no_landlock: cfg!(debug_assertions)
            && std::env::var_os(PRETEND_NO_LANDLOCK).is_some_and(|v| v == "1"),
    })))
}

/// The confinement of `execute_command` programs: besides the roots (added
/// per call), each allowed program's installation, for reading.
pub(crate) fn shell(launcher: Option<&Arc<Launcher>>, config: &Config) -> Confinement {
    let confinement = match launcher {
        None => Confinement::off(),
        Some(l) => {
            let home = home();
            let mut extra = Grants::default();
            for name in &config.shell.allow {
                for p in installation(&[name.into()], home.as_deref()).0 {
                    extra.read(&p, &l.never);
                }
            }
            Confinement::new(l.clone(), extra, network(&config.confine.network), None)
        }
    };
    warn("execute_command programs", &confinement);
    confinement
}

/// The confinement of the upstream `name` started by `command`: its
/// installation, `[proxy.NAME] read`/`write`, a private directory under
/// the state directory (its `TMPDIR`), and its network.
pub(crate) fn upstream(
    launcher: Option<&Arc<Launcher>>,
    config: &Config,
    name: &str,
    command: &[OsString],
    state: &Path,
) -> Result<Confinement> {
    let Some(launcher) = launcher else {
        let off = Confinement::off();
        warn(&format!("the upstream `{name}`"), &off);
        return Ok(off);
    };
    let settings = config.proxy.get(name).map(|s| s.confine.clone()).unwrap_or_default();
    for (key, entries) in [("read", &settings.read), ("write", &settings.write)] {
        mcpsec_confine::check_overlap(&format!("[proxy.{name}] {key}"), entries, &launcher.never)
            .map_err(|e| usage(e.to_string()))?;
    }
    let home = home();
    let (read, write) = installation(command, home.as_deref());
    let mut extra = Grants::default();
    for p in read.iter().chain(&settings.read) {
        extra.read(p, &launcher.never);
    }
    for p in write.iter().chain(&settings.write) {
        extra.write(p, &launcher.never);
    }
    let private = state.join("confine").join(name);
    create_private_dir(&private)?;
    extra.write_private(&private);
    let confinement = Confinement::new(launcher.clone(), extra, network(&settings.network), Some(private));
    if let Some(why) = confinement.refusal() {
        return Err(usage(format!("the upstream `{name}` is not started: {why}")));
    }
    warn(&format!("the upstream `{name}`"), &confinement);
    Ok(confinement)
}

/// Start-up warnings for `best_effort` and `off`.
fn warn(what: &str, c: &Confinement) {
    match c.mode() {
        Mode::Off => tracing::warn!(
            "[confine] mode = \"off\": {what} run with the full rights of mcpsec's user (files, network, \
             mcpsec's own state)"
        ),
        Mode::BestEffort if !c.missing().is_empty() => tracing::warn!(
            "[confine] mode = \"best_effort\": for {what}, this kernel does not enforce: {}",
            c.missing().join("; ")
        ),
        _ => {}
    }
}

fn network(n: &NetworkSetting) -> Network {
    match n {
        NetworkSetting::None => Network::None,
        NetworkSetting::All => Network::All,
        NetworkSetting::Ports(p) => Network::Ports(p.clone()),
    }
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME").filter(|h| !h.is_empty()).map(PathBuf::from)
}

/// What a confined process may never reach: the state directory, the audit
/// log, the config file (and its directory unless a root or a configured
/// `read`/`write` entry lies within it: a project's own `mcpsec.toml`), the
/// home credential stores and the system's secrets. Each under its
/// canonical path too.
fn never(config: &Config, src: &Sources<'_>) -> Never {
    let mut list: Vec<(String, PathBuf)> = vec![
        ("the state directory".into(), src.state.to_path_buf()),
        ("the audit log".into(), src.audit_log.to_path_buf()),
    ];
    if let Some(file) = src.config_file {
        list.push(("the config file".into(), file.to_path_buf()));
        let dir = canonical(file.parent().unwrap_or(Path::new(".")));
        let c = &config.confine;
        let upstreams = config.proxy.values().flat_map(|p| p.confine.read.iter().chain(&p.confine.write));
        let mut granted =
            src.roots.iter().copied().chain(c.read.iter().chain(&c.write).chain(upstreams).map(PathBuf::as_path));
        if !granted.any(|r| canonical(r).starts_with(&dir)) {
            list.push(("the config file's directory".into(), dir));
        }
    }
    if let Some(home) = home() {
        list.extend(mcpsec_confine::credential_stores(&home));
    }
    list.extend(mcpsec_confine::system_secrets());
    let mut never = Never::default();
    for (what, p) in list {
        let c = canonical(&p);
        if c != p {
            never.push(what.clone(), c);
        }
        never.push(what, p);
    }
    never
}

#[allow(clippy::disallowed_methods)] // mcpsec's own set-up, not a tool call
fn canonical(p: &Path) -> PathBuf {
    std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf())
}

#[allow(clippy::disallowed_methods)] // mcpsec's own state directory
fn create_private_dir(p: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(p)
        .with_context(|| format!("creating {}", p.display()))
}

/// What an upstream needs of its own installation: the program's prefix
/// (`…/bin/node` → `…`), and for an interpreter the script's package (a
/// `node_modules` tree, else the nearest directory with a `package.json` or
/// `pyproject.toml`, else the script's directory) and the package caches
/// its launcher runs from (`npx`: `~/.npm`; `uvx`: `~/.cache/uv`). Never
/// `/` or `HOME` itself.
fn installation(command: &[OsString], home: Option<&Path>) -> (Vec<PathBuf>, Vec<PathBuf>) {
    let (mut read, mut write) = (Vec::new(), Vec::new());
    let Some((program, args)) = command.split_first() else { return (read, write) };
    let broad = |p: &Path| p.parent().is_none() || Some(p) == home;
    let Some(found) = which(Path::new(program)) else { return (read, write) };
    for exe in [found.clone(), canonical(&found)] {
        let Some(dir) = exe.parent() else { continue };
        let prefix = match dir.parent() {
            Some(up) if dir.file_name().is_some_and(|n| n == "bin") && !broad(up) => up,
            _ => dir,
        };
        if !broad(prefix) {
            read.push(prefix.to_path_buf());
        }
    }
    // The script: the first argument that is an existing file.
    #[allow(clippy::disallowed_methods)] // the operator's command line, at start-up
    if let Some(script) = args.iter().map(Path::new).find(|a| std::fs::metadata(a).is_ok_and(|m| m.is_file())) {
        let script = canonical(script);
        if let Some(pkg) = package_dir(&script).filter(|p| !broad(p)) {
            read.push(pkg);
        }
    }
    let name = canonical(&found).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let launcher = Path::new(program).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    if let Some(home) = home {
        if launcher == "npx" || launcher == "npm" || name.starts_with("npx") {
            write.push(home.join(".npm"));
        }
        if launcher == "uvx" || launcher == "uv" {
            write.push(home.join(".cache/uv"));
            read.push(home.join(".local/share/uv"));
        }
        if launcher.starts_with("python") || launcher == "pipx" {
            read.push(home.join(".local/lib"));
            read.push(home.join(".local/share/pipx"));
        }
    }
    read.dedup();
    (read, write)
}

/// `program` itself when it names a path, else its first match in `PATH`.
#[allow(clippy::disallowed_methods)] // the operator's command line, at start-up
fn which(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return Some(program.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|d| d.join(program)).find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file()))
}

/// The package a script belongs to.
#[allow(clippy::disallowed_methods)] // the operator's command line, at start-up
fn package_dir(script: &Path) -> Option<PathBuf> {
    let mut top_modules = None;
    for a in script.ancestors() {
        if a.file_name().is_some_and(|n| n == "node_modules") {
            top_modules = Some(a.to_path_buf());
        }
    }
    if top_modules.is_some() {
        return top_modules;
    }
    for a in script.ancestors().skip(1).take(4) {
        if ["package.json", "pyproject.toml", "setup.py"].iter().any(|f| a.join(f).is_file()) {
            return Some(a.to_path_buf());
        }
    }
    script.parent().map(Path::to_path_buf)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::disallowed_methods)]
mod tests {
    use super::*;

    #[test]
    fn an_upstream_is_granted_its_installation_and_its_package_not_home() {
        let tmp = tempfile::tempdir().unwrap();
        let home = tmp.path().join("home");
        let prefix = home.join(".nvm/versions/node/v20");
        std::fs::create_dir_all(prefix.join("bin")).unwrap();
        std::fs::write(prefix.join("bin/node"), "").unwrap();
        let proj = home.join("proj");
        std::fs::create_dir_all(proj.join("node_modules/srv/dist")).unwrap();
        std::fs::write(proj.join("node_modules/srv/dist/index.js"), "").unwrap();
        let cmd: Vec<OsString> = vec![
            prefix.join("bin/node").into(),
            "--no-warnings".into(),
            proj.join("node_modules/srv/dist/index.js").into(),
        ];
        let (read, write) = installation(&cmd, Some(&home));
        assert!(read.contains(&prefix), "{read:?}");
        assert!(read.contains(&proj.join("node_modules")), "{read:?}");
        assert!(!read.contains(&home) && write.is_empty(), "{read:?} {write:?}");
        // A program right in HOME/bin: its directory, not HOME.
        std::fs::create_dir_all(home.join("bin")).unwrap();
        std::fs::write(home.join("bin/tool"), "").unwrap();
        let (read, _) = installation(&[home.join("bin/tool").into()], Some(&home));
        assert_eq!(read, vec![home.join("bin")]);
        let (_, write) = installation(&["npx".into(), "-y".into(), "pkg".into()], Some(&home));
        if which(Path::new("npx")).is_some() {
            assert_eq!(write, vec![home.join(".npm")]);
        }
    }
}
