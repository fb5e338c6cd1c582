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
        out.insert(name, settings);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
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
