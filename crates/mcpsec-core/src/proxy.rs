//! `[proxy.NAME]`: how `mcpsec proxy --name NAME` treats an upstream server.
//!
//! ```toml
//! [proxy.fs]
//! call_timeout   = "60s"      # a call the upstream does not answer in time is a tool error
//! hold_new_tools = true       # a tool that appears after the first run waits for `mcpsec pins approve`
//! unmapped       = "deny"     # a tool no glob below matches is withheld (default: "annotations")
//!
//! [proxy.fs.tools]            # tool-name glob → capability; config always beats annotations
//! "delete_*"       = "delete_files"
//! "read_text_file" = "read_files"
//! ```
//!
//! Without a mapping, a tool's capability comes from its annotations
//! ([`capability_from_hints`]); upstream annotations are untrusted, so the
//! absence of a hint never makes a tool read-only. With `unmapped = "deny"`
//! they are not consulted at all: only the tools the config maps are offered.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

use crate::capability::Capability;
use crate::config::{ConfigError, value_error};
use crate::units;

/// The default [`ProxySettings::call_timeout`].
pub const DEFAULT_CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// The settings of one upstream server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxySettings {
    /// How long a call may take upstream before it is a tool error (60 s).
    pub call_timeout: Duration,
    /// Whether tools that appear after the first run are withheld until a
    /// human approves them (`true`).
    pub hold_new_tools: bool,
    /// Tool-name globs and the capability each one maps to, as written.
    pub tools: Vec<(String, Capability)>,
    /// What becomes of a tool that no glob of `tools` matches.
    pub unmapped: Unmapped,
    /// `read`, `write`, `network`: what the upstream's process may touch.
    pub confine: crate::confine::UpstreamConfine,
}

/// `[proxy.NAME] unmapped`: what becomes of a tool the config does not map.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Unmapped {
    /// Its capability comes from its annotations ([`capability_from_hints`]).
    #[default]
    Annotations,
    /// It is withheld from `tools/list` and refused on call (deny by default).
    Deny,
}

impl Default for ProxySettings {
    fn default() -> Self {
        ProxySettings {
            call_timeout: DEFAULT_CALL_TIMEOUT,
            hold_new_tools: true,
            tools: Vec::new(),
            unmapped: Unmapped::Annotations,
            confine: crate::confine::UpstreamConfine::default(),
        }
    }
}

impl ProxySettings {
    /// The capability the config maps `tool` to, if any pattern matches.
    /// When several match with different capabilities, the most powerful
    /// one wins (fail closed: a broad `"*" = "read_files"` cannot weaken a
    /// narrower `"delete_*" = "delete_files"`).
    pub fn capability_for(&self, tool: &str) -> Option<Capability> {
        self.tools.iter().filter(|(pattern, _)| tool_glob_matches(pattern, tool)).map(|(_, c)| *c).max()
    }
}

/// A tool's capability from its MCP annotations, which come from an
/// untrusted upstream: `destructiveHint: true` → `delete_files`, else
/// `readOnlyHint: true` → `read_files`, else (no hint, or `false`)
/// `write_files`. A tool is never read-only by default.
pub fn capability_from_hints(read_only: Option<bool>, destructive: Option<bool>) -> Capability {
    match (read_only, destructive) {
        (_, Some(true)) => Capability::DeleteFiles,
        (Some(true), _) => Capability::ReadFiles,
        _ => Capability::WriteFiles,
    }
}

/// Whether `name` can name an upstream: ASCII letters, digits, `_`, `-`
/// and `.`, 1 to 64 of them (it appears in audit records as `NAME/TOOL`
/// and in commands a human types).
pub fn validate_upstream_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name != "."
        && name != ".."
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!("`{name}` is not a valid upstream name: use 1 to 64 ASCII letters, digits, `_`, `-` or `.`"))
    }
}

/// The name `mcpsec proxy` gives an upstream started as `command` when
/// `--name` is not given: the package or script a launcher runs, else the
/// program's file name. Two servers started through the same launcher
/// (`npx -y @modelcontextprotocol/server-filesystem`, `npx -y
/// @acme/server-git`) so get names of their own (`server-filesystem`,
/// `server-git`) rather than sharing `npx`, and with it their pins, their
/// `[proxy.NAME]` section and their name in the audit log.
///
/// - `npx`, `bunx`, `pnpx`, `uvx`, `pipx run`: the first argument that is not
///   a flag (or `--package`/`-p`/`--from`'s value), without its scope
///   (`@scope/`) or version (`@1.2`, `==1.2`, `[extra]`);
/// - `python`, `python3`, `node`, `deno run`, `bun run`: `-m MODULE`'s
///   module, else the script's file name without its extension;
/// - anything else: the program's file name.
///
/// Only that one argument is used, never the others (which may hold
/// secrets). Characters a name cannot hold become `-`, and it is cut to 64;
/// if nothing is left, the program's file name is the name.
pub fn default_upstream_name(command: &[std::ffi::OsString]) -> String {
    let file_name = |s: &str| s.rsplit('/').next().unwrap_or(s).to_owned();
    let Some(program) = command.first().map(|p| file_name(&p.to_string_lossy())) else {
        return String::new();
    };
    let args: Vec<String> = command[1..].iter().map(|a| a.to_string_lossy().into_owned()).collect();
    let launcher = program.strip_suffix(".exe").unwrap_or(&program);
    let derived = match launcher {
        "npx" | "bunx" | "pnpx" | "uvx" => package_argument(&args).map(|p| package_name(&p)),
        "pipx" if args.first().is_some_and(|a| a == "run") => package_argument(&args[1..]).map(|p| package_name(&p)),
        "deno" | "bun" if args.first().is_some_and(|a| a == "run") => script_argument(&args[1..]),
        "bun" => script_argument(&args),
        l if l == "node" || l == "python" || l.starts_with("python3") => script_argument(&args),
        _ => None,
    };
    let clean = |n: &str| -> String {
        let mut out: String = n
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.') { c } else { '-' })
            .take(64)
            .collect();
        while out.starts_with('.') {
            out.remove(0);
        }
        out
    };
    match derived.map(|d| clean(&d)) {
        Some(d) if validate_upstream_name(&d).is_ok() => d,
        _ => clean(&program),
    }
}

/// The package a package runner runs: `--package`/`-p`/`--from`'s value,
/// else the first argument that is not a flag.
fn package_argument(args: &[String]) -> Option<String> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if let Some(v) = a.strip_prefix("--package=").or_else(|| a.strip_prefix("--from=")) {
            return Some(v.to_owned());
        }
        if matches!(a.as_str(), "--package" | "-p" | "--from") {
            return it.next().cloned();
        }
        if a == "--" {
            return it.next().cloned();
        }
        if !a.starts_with('-') {
            return Some(a.clone());
        }
    }
    None
}

/// `@scope/name@1.2` → `name`; `name==1.2`, `name[extra]`, `name>=1` → `name`.
fn package_name(spec: &str) -> String {
    let unscoped = match spec.strip_prefix('@') {
        Some(rest) => rest.split_once('/').map_or(rest, |(_, name)| name),
        None => spec,
    };
    let end = unscoped.find(['@', '=', '<', '>', '~', '!', '[', ';', ' ']).unwrap_or(unscoped.len());
    unscoped[..end].rsplit('/').next().unwrap_or_default().to_owned()
}

/// `-m MODULE`'s module, else the first argument that is not a flag, as a
/// file name without its extension.
fn script_argument(args: &[String]) -> Option<String> {
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "-m" {
            return it.next().map(|m| m.rsplit('/').next().unwrap_or(m).to_owned());
        }
        if !a.starts_with('-') {
            let name = a.rsplit('/').next().unwrap_or(a);
            let stem = match name.rsplit_once('.') {
                Some((stem, _)) if !stem.is_empty() => stem,
                _ => name,
            };
            return Some(stem.to_owned());
        }
    }
    None
}

fn tool_glob(pattern: &str) -> Result<globset::GlobMatcher, String> {
    globset::GlobBuilder::new(pattern)
        .literal_separator(false)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| format!("`{pattern}` is not a valid glob: {e}"))
}

fn tool_glob_matches(pattern: &str, tool: &str) -> bool {
    // Patterns were validated when the config was parsed.
    tool_glob(pattern).is_ok_and(|g| g.is_match(tool))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawProxy {
    call_timeout: Option<String>,
    hold_new_tools: Option<bool>,
    unmapped: Option<String>,
    tools: Option<BTreeMap<String, String>>,
    read: Option<Vec<std::path::PathBuf>>,
    write: Option<Vec<std::path::PathBuf>>,
    network: Option<toml::Value>,
}

/// Validates every `[proxy.NAME]` section.
pub(crate) fn parse(raw: BTreeMap<String, RawProxy>) -> Result<BTreeMap<String, ProxySettings>, ConfigError> {
    let mut out = BTreeMap::new();
    for (name, section) in raw {
        validate_upstream_name(&name).map_err(|m| value_error(&format!("proxy.{name}"), m))?;
        let mut settings = ProxySettings::default();
        if let Some(t) = section.call_timeout {
            let key = format!("proxy.{name}.call_timeout");
            let d = units::parse_duration(&t).map_err(|m| value_error(&key, m))?;
            if d.is_zero() {
                return Err(value_error(&key, "must be longer than 0"));
            }
            settings.call_timeout = d;
        }
        if let Some(h) = section.hold_new_tools {
            settings.hold_new_tools = h;
        }
        if let Some(u) = section.unmapped {
            settings.unmapped = match u.as_str() {
                "annotations" => Unmapped::Annotations,
                "deny" => Unmapped::Deny,
                _ => {
                    let key = format!("proxy.{name}.unmapped");
                    return Err(value_error(&key, format!("`{u}` is not one of \"annotations\", \"deny\"")));
                }
            };
        }
        for (pattern, capability) in section.tools.unwrap_or_default() {
            let key = format!("proxy.{name}.tools.\"{pattern}\"");
            tool_glob(&pattern).map_err(|m| value_error(&key, m))?;
            let capability: Capability = capability.parse().map_err(|e| value_error(&key, format!("{e}")))?;
            settings.tools.push((pattern, capability));
        }
        settings.confine = crate::confine::parse_upstream(&name, section.read, section.write, section.network)?;
        out.insert(name, settings);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_names_come_from_what_a_launcher_runs() {
        let name = |cmd: &[&str]| default_upstream_name(&cmd.iter().map(Into::into).collect::<Vec<_>>());
        assert_eq!(name(&["npx", "-y", "@modelcontextprotocol/server-filesystem", "/srv/data"]), "server-filesystem");
        assert_eq!(name(&["/usr/bin/npx", "--yes", "@acme/server-git@1.2.3", "--token", "s3cret"]), "server-git");
        assert_eq!(name(&["npx", "-p", "@acme/mcp-tools", "acme-mcp"]), "mcp-tools");
        assert_eq!(name(&["npx", "mcp-server-time@latest"]), "mcp-server-time");
        assert_eq!(name(&["uvx", "mcp-server-fetch==0.6", "--ignore-robots-txt"]), "mcp-server-fetch");
        assert_eq!(name(&["uvx", "--from", "git+https://example.com/x/mcp-git.git", "mcp-git"]), "mcp-git.git");
        assert_eq!(name(&["pipx", "run", "mcp-server-sqlite[cli]"]), "mcp-server-sqlite");
        assert_eq!(name(&["python3", "-m", "mcp_server_time", "--tz", "UTC"]), "mcp_server_time");
        assert_eq!(name(&["node", "--no-warnings", "dist/weather.js"]), "weather");
        assert_eq!(name(&["deno", "run", "-A", "server.ts"]), "server");
        assert_eq!(name(&["/opt/bin/my-mcp-server", "--port", "1"]), "my-mcp-server");
        // Nothing to go by: the launcher's own name.
        assert_eq!(name(&["npx"]), "npx");
        assert_eq!(name(&["node", "-e", "-"]), "node");
        // Whatever a name cannot hold becomes `-`, and it stays valid.
        assert_eq!(name(&["node", "my server!.js"]), "my-server-");
        assert_eq!(name(&["python3", "-m", "../.."]), "python3");
        let long = format!("{}.js", "a".repeat(100));
        assert_eq!(name(&["node", &long]).len(), 64);
        for cmd in [&["npx", "@/"][..], &["uvx", "=="], &["node", ".js"], &["node", "..."]] {
            assert!(validate_upstream_name(&name(cmd)).is_ok(), "{cmd:?} → {}", name(cmd));
        }
    }
    use crate::Config;

    fn err(text: &str) -> String {
        Config::from_toml_str(text).unwrap_err().to_string()
    }

    #[test]
    fn sections_parse_with_defaults() {
        let c = Config::from_toml_str(
            "[proxy.fs]\ncall_timeout = \"5s\"\n[proxy.fs.tools]\n\"delete_*\" = \"delete_files\"\n\"*\" = \"read_files\"\n\
             [proxy.other]\nhold_new_tools = false\n",
        )
        .unwrap();
        let fs = &c.proxy["fs"];
        assert_eq!(fs.call_timeout, Duration::from_secs(5));
        assert!(fs.hold_new_tools);
        assert_eq!(fs.capability_for("delete_file"), Some(Capability::DeleteFiles), "the most powerful match wins");
        assert_eq!(fs.capability_for("read_text_file"), Some(Capability::ReadFiles));
        assert!(!c.proxy["other"].hold_new_tools);
        assert_eq!((fs.unmapped, c.proxy["other"].unmapped), (Unmapped::Annotations, Unmapped::Annotations));
        let deny = Config::from_toml_str("[proxy.fs]\nunmapped = \"deny\"\n").unwrap();
        assert_eq!(deny.proxy["fs"].unmapped, Unmapped::Deny);
        assert_eq!(c.proxy["other"].call_timeout, DEFAULT_CALL_TIMEOUT);
        assert_eq!(c.proxy["other"].capability_for("x"), None);
        assert_eq!(ProxySettings::default().capability_for("anything"), None);
    }

    #[test]
    fn bad_proxy_sections_are_named() {
        assert!(err("[proxy.fs]\ncall_timout = \"5s\"\n").contains("call_timout"));
        assert!(err("[proxy.fs]\ncall_timeout = \"0\"\n").contains("proxy.fs.call_timeout"));
        assert!(err("[proxy.fs.tools]\n\"x\" = \"format_disk\"\n").contains("proxy.fs.tools"));
        assert!(err("[proxy.fs.tools]\n\"[\" = \"read_files\"\n").contains("not a valid glob"));
        assert!(err("[proxy.\"a/b\"]\n").contains("not a valid upstream name"));
        assert!(err("[proxy.fs]\nhold_new_tools = \"yes\"\n").contains("hold_new_tools"));
        assert!(err("[proxy.fs]\nunmapped = \"allow\"\n").contains("proxy.fs.unmapped"));
    }

    #[test]
    fn annotations_never_make_a_tool_read_only_by_default() {
        use Capability::*;
        let cases = [
            ((None, None), WriteFiles),
            ((Some(false), None), WriteFiles),
            ((Some(true), None), ReadFiles),
            ((Some(true), Some(false)), ReadFiles),
            ((None, Some(true)), DeleteFiles),
            ((Some(true), Some(true)), DeleteFiles),
            ((Some(false), Some(false)), WriteFiles),
        ];
        for ((ro, de), want) in cases {
            assert_eq!(capability_from_hints(ro, de), want, "{ro:?} {de:?}");
        }
    }

    #[test]
    fn upstream_names() {
        assert!(validate_upstream_name("fs-1.local_x").is_ok());
        for bad in ["", ".", "..", "a/b", "a b", "é", &"x".repeat(65)] {
            assert!(validate_upstream_name(bad).is_err(), "{bad}");
        }
    }
}
