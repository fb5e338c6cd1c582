//! The configuration reference: one table of every section and key the
//! parser accepts, with its default and what it does.
//!
//! Two documents are generated from [`SECTIONS`] and nothing else: the
//! commented default config that `mcpsec init` writes
//! ([`default_config_toml`]) and `docs/configuration.md`
//! ([`reference_markdown`], written by `cargo xtask docs`). Tests hold the
//! table to the parser: the generated file parses to exactly
//! [`Config::default`](crate::Config::default), and the set of keys in the
//! table is exactly the set the parser accepts (read off the parser's own
//! serde structs), so neither can drift from the other.
//!
//! Adding a section to the configuration is adding one [`Section`] here
//! (the drift test fails until it is).

/// A `[section]` of the config file (`name` is empty for top-level keys).
#[derive(Debug, Clone, Copy)]
pub struct Section {
    /// The table name, e.g. `rate_limit`; empty for the top level.
    pub name: &'static str,
    /// One line on what the section is for.
    pub doc: &'static str,
    /// Its keys, in the order they are written.
    pub keys: &'static [Key],
}

impl Section {
    /// Whether the section is written once per name (`[proxy.NAME]`).
    pub fn is_template(&self) -> bool {
        self.name.contains("NAME")
    }
}

/// One key of a section.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    /// The key as written in the file.
    pub name: &'static str,
    /// Its value as TOML, and whether it is written set or commented out.
    pub value: Value,
    /// One line on what it does.
    pub doc: &'static str,
}

/// How a key appears in the generated file.
#[derive(Debug, Clone, Copy)]
pub enum Value {
    /// Written set to this TOML value, which is the default.
    Default(&'static str),
    /// Written commented out: setting it to this value alone changes
    /// nothing, but setting it at all changes how other keys behave (the
    /// doc says how).
    Implicit(&'static str),
    /// Written commented out as an example; unset means what the doc says.
    Example(&'static str),
}

impl Value {
    /// The TOML text of the value.
    pub fn toml(self) -> &'static str {
        match self {
            Value::Default(v) | Value::Implicit(v) | Value::Example(v) => v,
        }
    }
}

const fn key(name: &'static str, value: Value, doc: &'static str) -> Key {
    Key { name, value, doc }
}

use Value::{Default as D, Example as E, Implicit as I};

/// Every section and key of the configuration, in file order.
pub const SECTIONS: &[Section] = &[
    Section {
        name: "",
        doc: "",
        keys: &[key(
            "roots",
            D("[]"),
            "Directories the tools may use (relative to this file's directory); `--root` adds to them. \
             With none, `serve` refuses to start: it never defaults to `/` or your home directory.",
        )],
    },
    Section {
        name: "policy",
        doc: "The mode of each capability: allow | confirm | token | deny.",
        keys: &[
            key("read_files", D("\"allow\""), "Reading, listing and searching files."),
            key(
                "write_files",
                D("\"confirm\""),
                "Writing, editing, moving files and creating directories: a token, or a human confirms the call.",
            ),
            key("delete_files", D("\"token\""), "Deleting files and directories: a capability token is required."),
            key(
                "execute_shell",
                I("\"deny\""),
                "Running allowed programs. Unset: deny, or token once `[shell] allow` names programs.",
            ),
        ],
    },
    Section {
        name: "paths",
        doc: "Protected paths: globs relative to a root, matched on the resolved path; no token overrides them.",
        keys: &[
            key("readonly", D("[\"**/.git/**\"]"), "Readable, never written, moved or deleted."),
            key(
                "deny",
                D("[\"**/.env\", \"**/.env.*\", \"**/*.pem\", \"**/*.key\", \"**/id_rsa*\", \"**/id_ed25519*\"]"),
                "Neither readable nor writable, and left out of listings and searches.",
            ),
        ],
    },
    Section {
        name: "tokens",
        doc: "Capability token lifetimes (`mcpsec grant --ttl`).",
        keys: &[
            key(
                "default_ttl",
                E("\"300s\""),
                "The lifetime of a grant without `--ttl`. Unset: 300s, and 60s for execute_shell.",
            ),
            key(
                "max_ttl",
                D("{ read_files = \"1h\", write_files = \"1h\", delete_files = \"1h\", execute_shell = \"300s\" }"),
                "The longest lifetime a grant may ask for, per capability; a longer grant is refused.",
            ),
        ],
    },
    Section {
        name: "rate_limit",
        doc: "Per principal (the `--user`, or the OS user), per server process: each process counts on its own.",
        keys: &[
            key("calls", D("100"), "Tool calls allowed per window."),
            key("window", D("\"60s\""), "The rate-limit window."),
            key("failed_token_checks", D("10"), "Failed capability token checks allowed per window."),
            key(
                "tools",
                E("{ delete_file = 10 }"),
                "Per-tool calls per window, on top of `calls`; an alias counts as its tool (`read_file` as \
                 `read_text_file`). Unset: none.",
            ),
        ],
    },
    Section {
        name: "audit",
        doc: "The hash-chained audit log.",
        keys: &[
            key("path", D("\"audit.log\""), "The log file, relative to the state directory unless absolute."),
            key(
                "sync",
                D("\"changes\""),
                "When records reach the disk: changes (a change's records before it acts and before its answer; \
                 a read's or a refusal's within sync_interval) | always (every record before its answer) | batch \
                 (every record within sync_interval). See docs/audit-format.md.",
            ),
            key(
                "sync_interval",
                I("\"10ms\""),
                "With sync = changes or batch: the longest a record nobody waits for stays unsynced, the most of \
                 them a machine crash can lose. Unset: 10ms with changes, 1s with batch.",
            ),
            key("rotate_size", D("\"256MiB\""), "Rotate the log file past this size."),
            key("max_size", E("\"10GiB\""), "Refuse calls once the log reaches this size. Unset: no limit."),
        ],
    },
    Section {
        name: "shell",
        doc: "execute_command: no shell, an argument vector, a cleared environment.",
        keys: &[
            key("allow", D("[]"), "Program names it may run, e.g. [\"git\", \"ls\"]; mcpsec itself never."),
            key("timeout", D("\"30s\""), "The timeout of a call that names none; kills the whole process group."),
            key("max_timeout", D("\"300s\""), "The longest timeout a call may ask for."),
            key("max_output", D("\"64KiB\""), "Bytes kept of stdout and of stderr."),
        ],
    },
    Section {
        name: "injection",
        doc: "Instruction-like text in what tools return to the model.",
        keys: &[key(
            "mode",
            D("\"warn\""),
            "warn (flag it to the model) | block (refuse the call) | off (do not scan).",
        )],
    },
    Section {
        name: "undo",
        doc: "What destructive calls keep in <state-dir>/trash/ for `mcpsec undo`.",
        keys: &[
            key("enabled", D("true"), "Keep what delete_file, write_file, edit_file and move_file remove."),
            key(
                "disabled_for",
                D("[]"),
                "Capabilities whose calls keep nothing, e.g. [\"write_files\"]; for the others, a call whose \
                 removal cannot be kept is refused.",
            ),
            key("retention", D("\"7d\""), "Entries older than this are purged (in the background)."),
            key(
                "min_keep",
                D("\"10m\""),
                "No automatic purge removes an entry younger than this; a call that would need it is refused.",
            ),
            key("max_size", D("\"1GiB\""), "The most the trash holds; anything larger on its own is refused."),
            key(
                "on_full",
                D("\"purge_oldest\""),
                "purge_oldest (make room by purging the oldest entries) | refuse (refuse destructive calls until \
                 a human runs `mcpsec trash purge`).",
            ),
        ],
    },
    Section {
        name: "proxy.NAME",
        doc: "An upstream server behind `mcpsec proxy --name NAME` (one section per upstream; none by default).",
        keys: &[
            key(
                "call_timeout",
                D("\"60s\""),
                "A call (and the upstream's start-up and tool listing) that takes longer fails.",
            ),
            key(
                "hold_new_tools",
                D("true"),
                "A tool that appears after the first run is withheld until `mcpsec pins approve NAME TOOL`.",
            ),
            key(
                "unmapped",
                D("\"annotations\""),
                "A tool no glob of `tools` matches: annotations (its capability from its annotations, below) | deny \
                 (withheld from tools/list and refused on call: only the tools the config maps are offered).",
            ),
            key(
                "tools",
                E("{ \"delete_*\" = \"delete_files\" }"),
                "Tool-name globs mapped to capabilities; they beat the upstream's annotations (the most powerful \
                 match wins). Unset: readOnlyHint → read_files, destructiveHint → delete_files, else write_files.",
            ),
            key("read", D("[]"), "Extra paths this upstream may read and execute, added to `[confine] read`."),
            key(
                "write",
                D("[]"),
                "Extra paths this upstream may write, added to `[confine] write` (e.g. the directory a filesystem \
                 server serves).",
            ),
            key(
                "network",
                D("\"none\""),
                "TCP connections this upstream may open: \"none\" | \"all\" | a list of ports ([\"443\"]).",
            ),
        ],
    },
    Section {
        name: "confine",
        doc: "What the processes mcpsec starts (execute_command programs, proxied upstreams) may touch, enforced by \
              the kernel (Landlock, seccomp, resource limits).",
        keys: &[
            key(
                "mode",
                D("\"required\""),
                "required (a process is not started unless every rule holds) | best_effort (what the kernel \
                 supports; the rest is warned about) | off (no confinement; warned about).",
            ),
            key("read", D("[]"), "Extra absolute paths every confined process may read and execute."),
            key("write", D("[]"), "Extra absolute paths every confined process may write."),
            key(
                "network",
                D("\"none\""),
                "TCP connections execute_command programs may open: \"none\" | \"all\" | a list of ports ([\"443\"]).",
            ),
            key("max_open_files", D("4096"), "RLIMIT_NOFILE of a confined process."),
            key("max_processes", D("4096"), "RLIMIT_NPROC (processes and threads of the user; not binding for root)."),
            key("max_file_size", D("\"1GiB\""), "RLIMIT_FSIZE: the largest file a confined process may write."),
            key("max_address_space", D("\"16GiB\""), "RLIMIT_AS: the address space of a confined process."),
        ],
    },
    Section {
        name: "limits",
        doc: "Resource limits.",
        keys: &[key("max_read", D("\"10MiB\""), "The largest file a read returns.")],
    },
    Section {
        name: "http",
        doc: "The streamable HTTP transport (`mcpsec serve --http ADDR`); stdio ignores it.",
        keys: &[
            key(
                "allowed_hosts",
                D("[\"localhost\", \"127.0.0.1\", \"::1\"]"),
                "`Host` header values accepted (a name, or name:port), also for the host of an absolute-form \
                 target; any other is refused with 403 (DNS rebinding), and two `Host` headers with 400.",
            ),
            key(
                "allowed_origins",
                D("[]"),
                "`Origin` values accepted (`scheme://host:port`, `:*` for any port); a request with any other \
                 `Origin` is refused with 403, and one with two `Origin` headers with 400. Requests without one \
                 (non-browser clients) pass, and so do those from the server's own loopback origin \
                 (`http://127.0.0.1:PORT` as bound).",
            ),
            key("max_body", D("\"16MiB\""), "The largest request body; a larger one is refused with 413."),
            key("max_concurrent", D("64"), "Requests handled at once; more are refused with 503 and `Retry-After`."),
            key(
                "request_timeout",
                D("\"30s\""),
                "How long a client may take to send a request and the server to start its answer; then 408.",
            ),
            key(
                "failed_auth",
                D("10"),
                "Failed authentications allowed per client address per `rate_limit.window`; then 429.",
            ),
            key(
                "max_connections",
                D("512"),
                "Connections open at once; more are closed as soon as they are accepted. A connection serves one \
                 request at a time (HTTP/1.1).",
            ),
            key(
                "max_connections_per_address",
                D("128"),
                "Connections one client address may hold open at once, within `max_connections`; more from it are \
                 closed as soon as they are accepted, so one client cannot take every connection. Behind a reverse \
                 proxy every connection comes from the proxy's address: raise it to `max_connections` there.",
            ),
            key(
                "header_timeout",
                D("\"10s\""),
                "How long a connection may take to send a request's headers, or stay idle between requests; then \
                 it is closed (slow clients, slowloris).",
            ),
            key(
                "max_sessions",
                D("32"),
                "MCP sessions (protocol 2025-11-25 and earlier) one user may hold open; a further one is refused \
                 with 429 until one is closed.",
            ),
        ],
    },
];

/// The commented default configuration that `mcpsec init` writes.
///
/// Parsed, it is exactly [`Config::default`](crate::Config::default).
pub fn default_config_toml() -> String {
    let mut out = String::from(
        "# mcpsec configuration. Every key is optional: what is shown is the default.\n\
         # An unknown key or a bad value stops mcpsec with a message naming it.\n\
         # Durations: 60, 60s, 5m, 1h, 7d. Sizes: 64KiB, 10MiB, 1GiB.\n\
         # Reference: docs/configuration.md\n",
    );
    for section in SECTIONS {
        out.push('\n');
        // A section per name (`[proxy.NAME]`) is an example: all commented.
        let template = section.is_template();
        if !section.name.is_empty() {
            let hash = if template { "# " } else { "" };
            out.push_str(&format!("# {}\n{hash}[{}]\n", section.doc, section.name));
        }
        for k in section.keys {
            out.push_str(&format!("# {}\n", k.doc));
            let commented = if matches!(k.value, Value::Default(_)) && !template { "" } else { "# " };
            out.push_str(&format!("{commented}{} = {}\n", k.name, k.value.toml()));
        }
    }
    out
}

/// `docs/configuration.md`: the same table as Markdown.
pub fn reference_markdown() -> String {
    let mut out = String::from(
        "<!-- Generated from crates/mcpsec-core/src/reference.rs by `cargo xtask docs`; do not edit. -->\n\
         # Configuration reference\n\n\
         mcpsec reads one TOML file: `--config FILE`, else `$MCPSEC_CONFIG`, else \
         `$XDG_CONFIG_HOME/mcpsec/mcpsec.toml` when it exists. Every key is optional; with no file at all \
         mcpsec runs on the defaults below. An unknown key or a bad value stops start-up with a message \
         naming the key (nothing is silently ignored). `mcpsec init` writes this file with every key and \
         its default, commented.\n\n\
         Durations: `60`, `60s`, `5m`, `1h`, `7d` (`ms` too). Sizes: `64KiB`, `10MiB`, `1GiB`.\n",
    );
    for section in SECTIONS {
        let title = if section.name.is_empty() { "Top level".to_owned() } else { format!("`[{}]`", section.name) };
        out.push_str(&format!("\n## {title}\n\n"));
        if !section.doc.is_empty() {
            out.push_str(&format!("{}\n\n", section.doc));
        }
        out.push_str("| key | default | what it does |\n|---|---|---|\n");
        for k in section.keys {
            let default = match k.value {
                Value::Default(v) | Value::Implicit(v) => format!("`{v}`"),
                Value::Example(v) => format!("unset (e.g. `{v}`)"),
            };
            let cell = |s: &str| s.replace('|', "\\|");
            out.push_str(&format!("| `{}` | {} | {} |\n", k.name, cell(&default), cell(k.doc)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::BTreeSet;

    use serde::Deserialize;
    use serde::de::{self, IntoDeserializer, Visitor};

    use super::*;
    use crate::Config;

    #[test]
    fn the_generated_file_is_exactly_the_defaults() {
        let text = default_config_toml();
        assert_eq!(Config::from_toml_str(&text).unwrap(), Config::default(), "{text}");
    }

    #[test]
    fn implicit_keys_set_alone_to_their_value_change_nothing() {
        for section in SECTIONS {
            for k in section.keys.iter().filter(|k| matches!(k.value, Value::Implicit(_))) {
                let text = format!("[{}]\n{} = {}\n", section.name, k.name, k.value.toml());
                assert_eq!(Config::from_toml_str(&text).unwrap(), Config::default(), "{text}");
            }
        }
    }

    #[test]
    fn examples_parse_and_change_something() {
        for section in SECTIONS {
            for k in section.keys.iter().filter(|k| matches!(k.value, Value::Example(_))) {
                let text = format!("[{}]\n{} = {}\n", section.name, k.name, k.value.toml());
                let parsed = Config::from_toml_str(&text).unwrap_or_else(|e| panic!("{text}: {e}"));
                assert_ne!(parsed, Config::default(), "{text}");
            }
        }
    }

    /// Every key the parser accepts, read off its serde structs: a
    /// deserializer that answers each `deserialize_struct` by visiting every
    /// field the struct declares, and records each leaf's dotted path.
    fn parser_keys() -> BTreeSet<String> {
        let out = RefCell::new(BTreeSet::new());
        crate::config::RawConfig::deserialize(Recorder { path: String::new(), out: &out }).unwrap();
        out.into_inner()
    }

    struct Recorder<'a> {
        path: String,
        out: &'a RefCell<BTreeSet<String>>,
    }

    impl Recorder<'_> {
        fn leaf(&self) {
            self.out.borrow_mut().insert(self.path.clone());
        }
    }

    type E = de::value::Error;

    impl<'de> de::Deserializer<'de> for Recorder<'_> {
        type Error = E;
        fn deserialize_any<V: Visitor<'de>>(self, v: V) -> Result<V::Value, E> {
            self.leaf();
            v.visit_bool(false)
        }
        fn deserialize_str<V: Visitor<'de>>(self, v: V) -> Result<V::Value, E> {
            self.leaf();
            v.visit_str("1")
        }
        fn deserialize_string<V: Visitor<'de>>(self, v: V) -> Result<V::Value, E> {
            self.deserialize_str(v)
        }
        fn deserialize_u32<V: Visitor<'de>>(self, v: V) -> Result<V::Value, E> {
            self.leaf();
            v.visit_u64(1)
        }
        fn deserialize_seq<V: Visitor<'de>>(self, v: V) -> Result<V::Value, E> {
            self.leaf();
            v.visit_seq(de::value::SeqDeserializer::<std::iter::Empty<u8>, E>::new(std::iter::empty()))
        }
        fn deserialize_map<V: Visitor<'de>>(self, v: V) -> Result<V::Value, E> {
            self.leaf();
            v.visit_map(de::value::MapDeserializer::<std::iter::Empty<(u8, u8)>, E>::new(std::iter::empty()))
        }
        fn deserialize_option<V: Visitor<'de>>(self, v: V) -> Result<V::Value, E> {
            v.visit_some(self)
        }
        fn deserialize_enum<V: Visitor<'de>>(
            self,
            _name: &'static str,
            variants: &'static [&'static str],
            v: V,
        ) -> Result<V::Value, E> {
            self.leaf();
            v.visit_enum(variants[0].into_deserializer())
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            v: V,
        ) -> Result<V::Value, E> {
            v.visit_map(Fields { fields, next: 0, path: self.path, out: self.out })
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u64 u128 f32 f64 char bytes byte_buf unit unit_struct
            newtype_struct tuple tuple_struct identifier ignored_any
        }
    }

    struct Fields<'a> {
        fields: &'static [&'static str],
        next: usize,
        path: String,
        out: &'a RefCell<BTreeSet<String>>,
    }

    impl<'de> de::MapAccess<'de> for Fields<'_> {
        type Error = E;
        fn next_key_seed<K: de::DeserializeSeed<'de>>(&mut self, seed: K) -> Result<Option<K::Value>, E> {
            let Some(field) = self.fields.get(self.next) else { return Ok(None) };
            seed.deserialize(IntoDeserializer::<E>::into_deserializer(*field)).map(Some)
        }
        fn next_value_seed<S: de::DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, E> {
            let field = self.fields[self.next];
            self.next += 1;
            let path = if self.path.is_empty() { field.to_owned() } else { format!("{}.{field}", self.path) };
            seed.deserialize(Recorder { path, out: self.out })
        }
    }

    /// Sections a later version implements: the parser names them only to
    /// refuse them ("not supported yet"), so they are not in the table. When
    /// one is implemented, remove it here and add its `Section` to `SECTIONS`
    /// (this test then holds the two to the same keys).
    const REFUSED_SECTIONS: &[&str] = &[];

    #[test]
    fn the_table_holds_exactly_the_keys_the_parser_accepts() {
        let parser: BTreeSet<String> =
            parser_keys().into_iter().filter(|k| !REFUSED_SECTIONS.contains(&k.as_str())).collect();
        assert!(parser.contains("policy.read_files") && parser.contains("tokens.max_ttl.execute_shell"), "{parser:?}");
        // A per-name section (`proxy.NAME`) is one map in the parser.
        let table: BTreeSet<String> = SECTIONS
            .iter()
            .flat_map(|s| {
                s.keys.iter().map(move |k| match s.name.split_once(".NAME") {
                    Some((map, _)) => map.to_owned(),
                    None if s.name.is_empty() => k.name.to_owned(),
                    None => format!("{}.{}", s.name, k.name),
                })
            })
            .collect();
        // A table key stands for the parser's keys beneath it (`max_ttl` is
        // written as one inline table).
        let covered = |leaf: &String| table.iter().any(|t| leaf == t || leaf.starts_with(&format!("{t}.")));
        let missing: Vec<_> = parser.iter().filter(|k| !covered(k)).collect();
        assert!(missing.is_empty(), "keys the parser accepts but reference.rs does not document: {missing:?}");
        let phantom: Vec<_> =
            table.iter().filter(|t| !parser.iter().any(|k| k == *t || k.starts_with(&format!("{t}.")))).collect();
        assert!(phantom.is_empty(), "keys reference.rs documents but the parser refuses: {phantom:?}");
    }

    #[test]
    fn every_section_and_key_is_in_the_markdown() {
        let md = reference_markdown();
        for s in SECTIONS {
            assert!(s.name.is_empty() || md.contains(&format!("## `[{}]`", s.name)), "{}", s.name);
            for k in s.keys {
                assert!(md.contains(&format!("| `{}` |", k.name)), "{}", k.name);
            }
        }
    }
}
