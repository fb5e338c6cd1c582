//! The configuration's tests: parsing, defaults and the error for every bad key.
use super::*;

fn err(text: &str) -> String {
    Config::from_toml_str(text).unwrap_err().to_string()
}

#[test]
fn empty_file_is_the_defaults() {
    assert_eq!(Config::from_toml_str("").unwrap(), Config::default());
    let c = Config::default();
    assert_eq!(c.paths.readonly, vec!["**/.git/**"]);
    assert_eq!(c.paths.deny.len(), 6);
    assert_eq!(c.limits.max_read, 10 << 20);
}

#[test]
fn full_file_parses() {
    let c = Config::from_toml_str(
        r#"
        roots = ["./workspace"]
        [policy]
        read_files = "allow"
        write_files = "allow"
        delete_files = "deny"
        [paths]
        readonly = ["docs/**"]
        deny = ["**/secret*"]
        [limits]
        max_read = "1MiB"
        "#,
    )
    .unwrap();
    assert_eq!(c.roots, vec![PathBuf::from("./workspace")]);
    assert_eq!(c.policy.mode(Capability::WriteFiles), Mode::Allow);
    assert_eq!(c.paths.readonly, vec!["docs/**"]);
    assert_eq!(c.limits.max_read, 1 << 20);
}

#[test]
fn http_section_parses_and_checks_its_values() {
    let c = Config::from_toml_str(
        "[http]\nallowed_hosts = [\"mcp.example.com\"]\nallowed_origins = [\"https://app.example.com:443\"]\n\
         max_body = \"1MiB\"\nmax_concurrent = 8\nrequest_timeout = \"5s\"\nfailed_auth = 3\n\
         max_connections = 100\nheader_timeout = \"2s\"\nmax_sessions = 4",
    )
    .unwrap();
    assert_eq!(c.http.allowed_hosts, ["mcp.example.com"]);
    assert_eq!(c.http.max_body, 1 << 20);
    assert_eq!((c.http.max_concurrent, c.http.failed_auth), (8, 3));
    assert_eq!(c.http.request_timeout, Duration::from_secs(5));
    assert_eq!((c.http.max_connections, c.http.max_sessions), (100, 4));
    assert_eq!(c.http.header_timeout, Duration::from_secs(2));
    assert!(err("[http]\nmax_connections = 0").contains("http.max_connections"));
    assert!(err("[http]\nmax_connections_per_address = 0").contains("http.max_connections_per_address"));
    let c = Config::from_toml_str("[http]\nmax_connections_per_address = 8").unwrap();
    assert_eq!(c.http.max_connections_per_address, 8);
    assert!(err("[http]\nheader_timeout = \"0s\"").contains("http.header_timeout"));
    assert!(err("[http]\nmax_sessions = 0").contains("http.max_sessions"));
    assert_eq!(Config::default().http.allowed_hosts, ["localhost", "127.0.0.1", "::1"]);
    assert!(err("[http]\nallowed_origins = [\"app.example.com\"]").contains("http.allowed_origins"));
    assert!(err("[http]\nmax_body = \"0\"").contains("http.max_body"));
    assert!(err("[http]\nmax_concurrent = 0").contains("http.max_concurrent"));
    assert!(err("[http]\nallowed_host = []").contains("allowed_host"));
}

#[test]
fn unknown_keys_are_named() {
    assert!(err("rootz = []").contains("rootz"), "{}", err("rootz = []"));
    assert!(err("[policy]\nread_file = \"allow\"").contains("read_file"));
    assert!(err("[paths]\nreadonlyy = []").contains("readonlyy"));
    assert!(err("[limits]\nmax_reads = \"1MiB\"").contains("max_reads"));
}

#[test]
fn bad_values_are_named() {
    assert!(err("[policy]\nread_files = \"sometimes\"").contains("sometimes"));
    assert!(err("[limits]\nmax_read = \"ten megs\"").contains("limits.max_read"));
    assert!(err("[limits]\nmax_read = \"0\"").contains("limits.max_read"));
    assert!(err("[paths]\ndeny = [\"a/[\"]").contains("paths.deny"));
    assert!(err("[paths]\nreadonly = [\"/etc/**\"]").contains("paths.readonly"));
    assert!(err("roots = \"x\"").contains("roots"));
}

#[test]
fn naming_programs_enables_execute_command_in_token_mode() {
    let c = Config::from_toml_str("[shell]\nallow = [\"git\"]").unwrap();
    assert_eq!(c.policy.mode(Capability::ExecuteShell), Mode::Token);
    let c = Config::from_toml_str("[policy]\nexecute_shell = \"deny\"\n[shell]\nallow = [\"git\"]").unwrap();
    assert_eq!(c.policy.mode(Capability::ExecuteShell), Mode::Deny);
    assert_eq!(Config::default().policy.mode(Capability::ExecuteShell), Mode::Deny);
}

#[test]
fn shell_section() {
    let c =
        Config::from_toml_str("[shell]\nallow = [\"git\", \"ls\"]\ntimeout = \"10s\"\nmax_output = \"1KiB\"").unwrap();
    assert_eq!(c.shell.allow, vec!["git", "ls"]);
    assert_eq!((c.shell.timeout, c.shell.max_output), (Duration::from_secs(10), 1024));
    assert!(Config::default().shell.allow.is_empty());
    assert!(err("[shell]\nallow = [\"/bin/rm\"]").contains("shell.allow"));
    assert!(err("[shell]\ntimeout = \"10m\"").contains("shell.timeout"));
}

#[test]
fn injection_section() {
    assert_eq!(Config::default().injection, InjectionMode::Warn);
    assert_eq!(Config::from_toml_str("[injection]\nmode = \"block\"").unwrap().injection, InjectionMode::Block);
    assert!(err("[injection]\nmode = \"shout\"").contains("shout"));
}

#[test]
fn rate_limit_section() {
    let c = Config::default();
    assert_eq!(
        (c.rate_limit.calls, c.rate_limit.window, c.rate_limit.failed_token_checks),
        (100, Duration::from_secs(60), 10)
    );
    let c = Config::from_toml_str("[rate_limit]\ncalls = 5\nwindow = \"10s\"\n[rate_limit.tools]\ndelete_file = 2\n")
        .unwrap();
    assert_eq!(c.rate_limit.calls, 5);
    assert_eq!(c.rate_limit.tools, vec![("delete_file".to_string(), 2)]);
    assert!(err("[rate_limit]\ncalls = 0").contains("rate_limit.calls"));
    assert!(err("[rate_limit]\nwindow = \"soon\"").contains("rate_limit.window"));
    assert!(err("[rate_limit]\nper_minute = 3").contains("per_minute"));
}

#[test]
fn audit_section() {
    let c =
        Config::from_toml_str("[audit]\npath = \"/var/log/mcpsec.log\"\nsync = \"batch\"\nsync_interval = \"200ms\"\n")
            .unwrap();
    assert_eq!(c.audit.path, PathBuf::from("/var/log/mcpsec.log"));
    assert_eq!(c.audit.sync, AuditSync::Batch(Duration::from_millis(200)));
    // The default is `changes`, with a 10ms interval.
    assert_eq!(Config::default().audit.sync, AuditSync::Changes(Duration::from_millis(10)));
    assert_eq!(Config::from_toml_str("").unwrap().audit.sync, AuditSync::Changes(Duration::from_millis(10)));
    assert_eq!(Config::from_toml_str("[audit]\n").unwrap().audit.sync, AuditSync::Changes(Duration::from_millis(10)));
    let c = Config::from_toml_str("[audit]\nsync = \"changes\"\n").unwrap();
    assert_eq!(c.audit.sync, AuditSync::Changes(Duration::from_millis(10)));
    // `sync_interval` alone applies to the default mode.
    let c = Config::from_toml_str("[audit]\nsync_interval = \"50ms\"\n").unwrap();
    assert_eq!(c.audit.sync, AuditSync::Changes(Duration::from_millis(50)));
    let c = Config::from_toml_str("[audit]\nsync = \"always\"\n").unwrap();
    assert_eq!(c.audit.sync, AuditSync::Always);
    assert!(err("[audit]\nsync = \"sometimes\"").contains("audit.sync"));
    let e = err("[audit]\nsync = \"always\"\nsync_interval = \"1s\"");
    assert!(e.contains("audit.sync_interval") && e.contains("does not apply"), "{e}");
    assert!(err("[audit]\nrotate_size = \"10\"").contains("audit.rotate_size"));
    assert!(err("[audit]\nfsync = true").contains("fsync"));
}

#[test]
fn every_mode_is_accepted() {
    let c = Config::from_toml_str("[policy]\ndelete_files = \"token\"\nwrite_files = \"confirm\"").unwrap();
    assert_eq!(c.policy.mode(Capability::DeleteFiles), Mode::Token);
    assert_eq!(c.policy.mode(Capability::WriteFiles), Mode::Confirm);
}

#[test]
fn token_lifetimes() {
    let c = Config::default();
    assert_eq!(c.tokens.default_ttl(Capability::DeleteFiles), Duration::from_secs(300));
    assert_eq!(c.tokens.default_ttl(Capability::ExecuteShell), Duration::from_secs(60));
    assert_eq!(c.tokens.max_ttl(Capability::ExecuteShell), Duration::from_secs(300));
    let c = Config::from_toml_str("[tokens]\ndefault_ttl = \"2m\"\nmax_ttl = { delete_files = \"10m\" }\n").unwrap();
    assert_eq!(c.tokens.default_ttl(Capability::DeleteFiles), Duration::from_secs(120));
    assert_eq!(c.tokens.max_ttl(Capability::DeleteFiles), Duration::from_secs(600));
    assert!(err("[tokens]\nmax_ttl = { format_disk = \"1h\" }").contains("format_disk"));
    assert!(err("[tokens]\ndefault_ttl = \"0\"").contains("tokens.default_ttl"));
}

#[test]
fn every_duration_that_bounds_something_must_be_longer_than_zero() {
    for (section, key, full) in [
        ("http", "request_timeout", "http.request_timeout"),
        ("http", "header_timeout", "http.header_timeout"),
        ("shell", "timeout", "shell.timeout"),
        ("rate_limit", "window", "rate_limit.window"),
        ("tokens", "default_ttl", "tokens.default_ttl"),
        ("tokens.max_ttl", "delete_files", "tokens.max_ttl.delete_files"),
        ("audit", "sync_interval", "audit.sync_interval"),
    ] {
        let sync = if section == "audit" { "sync = \"batch\"\n" } else { "" };
        for value in ["0s", "soon"] {
            let e = err(&format!("[{section}]\n{sync}{key} = \"{value}\"\n"));
            assert!(e.contains(full), "{full} = {value}: {e}");
        }
        assert!(err(&format!("[{section}]\n{sync}{key} = \"0s\"\n")).contains("longer than 0"), "{full}");
    }
}

#[test]
fn unimplemented_sections_are_refused_not_ignored() {
    let e = err("[undo]\nretention = \"0s\"\n");
    assert!(e.contains("undo.retention"), "{e}");
    let e = err("[undo]\non_full = \"drop\"\n");
    assert!(e.contains("on_full"), "{e}");
    let e = err("[undo]\ndisabled_for = [\"write_file\"]\n");
    assert!(e.contains("disabled_for") || e.contains("write_file"), "{e}");
}

#[test]
fn min_keep_defaults_to_ten_minutes_within_the_retention() {
    assert_eq!(Config::default().undo.min_keep, Duration::from_secs(600));
    let c = Config::from_toml_str("[undo]\nmin_keep = \"1h\"\n").unwrap();
    assert_eq!(c.undo.min_keep, Duration::from_secs(3600));
    let c = Config::from_toml_str("[undo]\nmin_keep = \"0s\"\n").unwrap();
    assert_eq!(c.undo.min_keep, Duration::ZERO);
    // A short retention bounds the default, and refuses a longer minimum.
    let c = Config::from_toml_str("[undo]\nretention = \"2m\"\n").unwrap();
    assert_eq!(c.undo.min_keep, Duration::from_secs(120));
    let e = err("[undo]\nretention = \"2m\"\nmin_keep = \"5m\"\n");
    assert!(e.contains("undo.min_keep") && e.contains("retention"), "{e}");
}
