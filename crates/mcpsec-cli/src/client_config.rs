//! `mcpsec client-config CLIENT`: the exact snippet that adds mcpsec to an
//! MCP client, with absolute paths.
//!
//! The snippet goes to stdout alone (so it can be piped or redirected); where
//! to put it goes to stderr. Formats, as each client documents them:
//!
//! - Claude Desktop: `claude_desktop_config.json` (macOS
//!   `~/Library/Application Support/Claude/`, Windows `%APPDATA%\Claude\`),
//!   `{"mcpServers": {NAME: {"command", "args", "env"?}}}`; the app starts each
//!   server at launch (modelcontextprotocol.io, "Connect to local MCP servers").
//! - Claude Code: `claude mcp add [--scope local|project|user] NAME -- CMD
//!   [ARGS...]`; every option before the name, the server's command line after
//!   `--` (code.claude.com/docs/en/mcp).
//! - Cursor: `~/.cursor/mcp.json` (every project) or `.cursor/mcp.json` (one
//!   project), the same `mcpServers` shape as Claude Desktop (cursor.com/docs/mcp).
//! - VS Code: `.vscode/mcp.json` or the user profile's `mcp.json` ("MCP: Open
//!   User Configuration"); the top-level key is `servers`, not `mcpServers`, and
//!   an entry has `"type": "stdio"`, `command`, `args`
//!   (code.visualstudio.com/docs/copilot/reference/mcp-configuration).

#![allow(clippy::print_stdout)]
// Canonicalising the roots and the binary's own path: not a tool call.
#![allow(clippy::disallowed_methods)]

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, anyhow};
use clap::{Args, ValueEnum};

use crate::{Global, usage};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Client {
    /// claude_desktop_config.json
    ClaudeDesktop,
    /// a `claude mcp add` command
    ClaudeCode,
    /// ~/.cursor/mcp.json or .cursor/mcp.json
    Cursor,
    /// .vscode/mcp.json or the user mcp.json
    Vscode,
}

#[derive(Debug, Args)]
pub struct ClientConfigArgs {
    /// The client to configure
    #[arg(value_enum)]
    client: Client,
    /// A directory the tools may use (repeatable; must exist)
    #[arg(long = "root", value_name = "DIR")]
    roots: Vec<PathBuf>,
    /// The principal every call is made for [default: the OS user]
    #[arg(long, value_name = "NAME")]
    user: Option<String>,
    /// The server's name in the client's config
    #[arg(long, default_value = "mcpsec", value_name = "NAME")]
    name: String,
}

/// The server's command line: the running binary and `serve` with absolute
/// roots, plus `--config` and `--state-dir` when they are set here (the
/// client does not start mcpsec with this shell's environment).
fn command_line(global: &Global, args: &ClientConfigArgs) -> Result<(String, Vec<String>)> {
    let exe = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .context("finding the path of the running mcpsec binary")?;
    let mut argv = vec!["serve".to_owned()];
    // A snippet for a config that `serve` would refuse would only fail later,
    // inside the client: check it now (an error names the key).
    let (config, _) = crate::load_config(global)?;
    if args.roots.is_empty() && config.roots.is_empty() {
        return Err(usage(
            "name the directories the model may use with `--root DIR` (repeatable), \
             e.g. `mcpsec client-config claude-desktop --root ~/notes`",
        ));
    }
    for root in &args.roots {
        let abs = root.canonicalize().map_err(|e| anyhow!("--root {}: {e}", root.display()))?;
        if !abs.is_dir() {
            return Err(anyhow!("--root {}: not a directory", root.display()));
        }
        argv.push("--root".into());
        argv.push(utf8(&abs)?);
    }
    if let Some(user) = &args.user {
        argv.push("--user".into());
        argv.push(user.clone());
    }
    let cwd = std::env::current_dir().context("reading the current directory")?;
    if let Some(config) = &global.config {
        let abs = cwd.join(config);
        let abs = abs.canonicalize().map_err(|e| anyhow!("--config {}: {e}", config.display()))?;
        argv.push("--config".into());
        argv.push(utf8(&abs)?);
    }
    if let Some(state) = &global.state_dir {
        argv.push("--state-dir".into());
        argv.push(utf8(&cwd.join(state))?);
    }
    Ok((utf8(&exe)?, argv))
}

fn utf8(p: &Path) -> Result<String> {
    p.to_str()
        .map(str::to_owned)
        .ok_or_else(|| anyhow!("{} is not valid UTF-8; MCP client configs are JSON strings", p.display()))
}

/// Quotes a word for a POSIX shell when it needs it.
fn shell_word(w: &str) -> String {
    let plain = !w.is_empty() && w.chars().all(|c| c.is_ascii_alphanumeric() || "_-./,:=@%+".contains(c));
    if plain { w.to_owned() } else { format!("'{}'", w.replace('\'', r"'\''")) }
}

/// A JSON string.
fn js(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// `{"KEY": {"NAME": {fields…}}}`, pretty, fields in the order given (the
/// order the clients' documentation shows: type, command, args).
fn nested(key: &str, name: &str, fields: &[(&str, String)]) -> String {
    let body: Vec<String> = fields.iter().map(|(k, v)| format!("      {}: {v}", js(k))).collect();
    format!("{{\n  {}: {{\n    {}: {{\n{}\n    }}\n  }}\n}}", js(key), js(name), body.join(",\n"))
}

/// The snippet for `client`, and where it goes.
pub fn snippet(client: Client, name: &str, command: &str, argv: &[String]) -> (String, &'static str) {
    let args = format!("[{}]", argv.iter().map(|a| js(a)).collect::<Vec<_>>().join(", "));
    let fields = [("command", js(command)), ("args", args.clone())];
    match client {
        Client::ClaudeDesktop => (
            nested("mcpServers", name, &fields),
            "merge into \"mcpServers\" of claude_desktop_config.json (macOS: ~/Library/Application Support/Claude/; \
             Windows: %APPDATA%\\Claude\\), then restart Claude Desktop",
        ),
        Client::Cursor => (
            nested("mcpServers", name, &fields),
            "merge into \"mcpServers\" of ~/.cursor/mcp.json (every project) or .cursor/mcp.json (this project)",
        ),
        Client::Vscode => (
            nested("servers", name, &[("type", js("stdio")), ("command", js(command)), ("args", args)]),
            "merge into \"servers\" of .vscode/mcp.json (this workspace) or the user mcp.json \
             (command palette: \"MCP: Open User Configuration\")",
        ),
        Client::ClaudeCode => {
            let mut words = vec!["claude".to_owned(), "mcp".into(), "add".into(), shell_word(name), "--".into()];
            words.push(shell_word(command));
            words.extend(argv.iter().map(|a| shell_word(a)));
            (words.join(" "), "run this in a shell (add `--scope user` before the name for every project)")
        }
    }
}

pub fn run(global: &Global, args: ClientConfigArgs) -> Result<()> {
    if args.name.is_empty() || !args.name.chars().all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)) {
        return Err(usage("--name: letters, digits, `_`, `-` and `.` only"));
    }
    let (command, argv) = command_line(global, &args)?;
    let (text, hint) = snippet(args.client, &args.name, &command, &argv);
    writeln!(std::io::stdout().lock(), "{text}")?;
    eprintln!("{hint}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_words_are_quoted_only_when_needed() {
        assert_eq!(shell_word("/usr/bin/mcpsec"), "/usr/bin/mcpsec");
        assert_eq!(shell_word("/home/a b/it's"), r"'/home/a b/it'\''s'");
        assert_eq!(shell_word(""), "''");
        assert_eq!(shell_word("$(rm -rf ~)"), "'$(rm -rf ~)'");
    }

    #[test]
    fn json_snippets_escape_paths() {
        let (text, _) = snippet(Client::Cursor, "mcpsec", "/bin/mc\"psec", &["serve".into()]);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["mcpServers"]["mcpsec"]["command"], "/bin/mc\"psec");
        let (text, _) = snippet(Client::Vscode, "mcpsec", "/bin/mcpsec", &["serve".into()]);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["servers"]["mcpsec"]["type"], "stdio");
        assert_eq!(v["servers"]["mcpsec"]["args"], serde_json::json!(["serve"]));
        let (text, _) =
            snippet(Client::ClaudeDesktop, "mcpsec", "/bin/mcpsec", &["serve".into(), "--root".into(), "/a b".into()]);
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["mcpServers"]["mcpsec"]["args"][2], "/a b");
    }
}
