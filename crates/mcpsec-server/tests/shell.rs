//! The hardened program runner behind `execute_command`: the allowlist,
//! the argument and working-directory checks, the cleared environment,
//! timeouts that kill the whole process group, and output caps.

// Tests set up their fixtures with std::fs directly.
#![allow(clippy::unwrap_used, clippy::disallowed_methods)]

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use mcpsec_pathguard::{GuardError, Rules, Sandbox, SandboxOptions};
use mcpsec_server::shell::{ExecArgs, ExecOutput, Shell, ShellConfig, ShellError};
use mcpsec_server::tools::ToolError;
use tempfile::TempDir;

/// A root `ws` holding a few files, a second root `ws2`, and beside them
/// `outside` holding a sentinel.
struct Fx {
    _tmp: TempDir,
    root: PathBuf,
    root2: PathBuf,
    outside: PathBuf,
    sandbox: Sandbox,
}

fn fx() -> Fx {
    let tmp = tempfile::tempdir().unwrap();
    let base = fs::canonicalize(tmp.path()).unwrap();
    let (root, root2, outside) = (base.join("ws"), base.join("ws2"), base.join("outside"));
    fs::create_dir_all(root.join("sub/deeper")).unwrap();
    fs::create_dir_all(root.join(".env")).unwrap();
    fs::create_dir_all(&root2).unwrap();
    fs::create_dir_all(&outside).unwrap();
    fs::write(root.join("notes.txt"), "inside notes\n").unwrap();
    fs::write(root2.join("other.txt"), "second root\n").unwrap();
    fs::write(outside.join("secret"), "OUTSIDE-SENTINEL").unwrap();
    std::os::unix::fs::symlink(&outside, root.join("out_link")).unwrap();
    let rules = Rules::new(&[".git/**".to_string()], &["**/.env".to_string()]).unwrap();
    let sandbox = Sandbox::open(&[root.clone(), root2.clone()], SandboxOptions { rules, max_read: 1 << 20 }).unwrap();
    Fx { _tmp: tmp, root, root2, outside, sandbox }
}

fn shell(allow: &[&str]) -> Shell {
    shell_with(allow, |_| {})
}

fn shell_with(allow: &[&str], edit: impl FnOnce(&mut ShellConfig)) -> Shell {
    let mut config = ShellConfig { allow: allow.iter().map(|s| s.to_string()).collect(), ..ShellConfig::default() };
    edit(&mut config);
    Shell::new(config).unwrap()
}

fn call(command: &str, args: &[&str]) -> ExecArgs {
    ExecArgs { command: command.into(), args: args.iter().map(|s| s.to_string()).collect(), cwd: None, timeout_s: None }
}

fn run(sh: &Shell, fx: &Fx, args: ExecArgs) -> ExecOutput {
    sh.run(&fx.sandbox, &args).unwrap_or_else(|e| panic!("{args:?}: {e}"))
}

/// The refusal of a call, which must be a path-guard refusal.
fn guard_refusal(sh: &Shell, fx: &Fx, args: ExecArgs) -> GuardError {
    match sh.run(&fx.sandbox, &args) {
        Err(ToolError::Guard(e)) => {
            assert!(e.is_refusal(), "{args:?}: {e}");
            e
        }
        other => panic!("{args:?} was not refused by the guard: {other:?}"),
    }
}

/// Whether a process is gone (or a zombie waiting for its new parent).
fn gone(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
    }
}

/// A timeout long enough for `sh` to start and set up what a test needs
/// (a loaded machine may take its time), which [`assert_ready`] checks.
const TIMEOUT: f64 = 3.0;

/// The program got to `: > ready` before its timeout: what the test
/// checks happened after the set-up it needs, not during it.
fn assert_ready(fx: &Fx, out: &ExecOutput) {
    assert!(fx.root.join("ready").exists(), "the program was not ready within {TIMEOUT} s: {out:?}");
}

/// Waits for every process of `pids` to be gone (bounded only so that a
/// survivor fails the test instead of hanging it).
fn assert_all_gone(pids: &[u32]) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !pids.iter().all(|&p| gone(p)) {
        assert!(Instant::now() < deadline, "processes survived: {pids:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn pids_in(file: &Path) -> Vec<u32> {
    let pids: Vec<u32> = fs::read_to_string(file).unwrap().split_whitespace().map(|p| p.parse().unwrap()).collect();
    assert!(!pids.is_empty());
    pids
}

#[test]
fn an_allowed_program_runs_with_its_output_and_exit_code() {
    let fx = fx();
    let sh = shell(&["sh", "ls"]);
    let out = run(&sh, &fx, call("sh", &["-c", "echo out; echo err >&2; exit 3"]));
    assert_eq!(
        (out.stdout.as_str(), out.stderr.as_str(), out.exit_code, out.signal),
        ("out\n", "err\n", Some(3), None)
    );
    assert!(!out.stdout_truncated && !out.stderr_truncated && !out.timed_out && !out.streams_left_open);
    assert_eq!(out.cwd, fx.root.display().to_string(), "the first root by default");
    assert!(Path::new(&out.program).is_absolute());
    let out = run(&sh, &fx, call("ls", &[]));
    assert_eq!(out.stdout, "notes.txt\nout_link\nsub\n");
    assert_eq!(out.exit_code, Some(0));
    let json = serde_json::to_value(&out).unwrap();
    for key in ["exit_code", "signal", "stdout", "stderr", "stdout_truncated", "timed_out", "duration_ms"] {
        assert!(json.get(key).is_some(), "{key} in {json}");
    }
    assert_eq!(sh.allowed().collect::<Vec<_>>(), ["sh", "ls"]);
}

#[test]
fn a_program_not_on_the_allowlist_is_refused() {
    let fx = fx();
    let sh = shell(&["ls"]);
    for command in ["rm", "sh", "", "ls "] {
        match sh.run(&fx.sandbox, &call(command, &["notes.txt"])) {
            Err(ToolError::Refused(m)) => {
                assert!(m.starts_with("refused:"), "{m}");
                assert!(m.contains(&format!("`{command}` is not in [shell] allow")), "{m}");
                assert!(m.contains("the operator can add it") && m.contains("ls"), "{m}");
            }
            other => panic!("{command}: {other:?}"),
        }
    }
    assert!(fx.root.join("notes.txt").exists());
    // A path is not a name, even the path of an allowed program.
    for command in ["/usr/bin/ls", "/bin/ls", "./ls"] {
        let Err(ToolError::Refused(m)) = sh.run(&fx.sandbox, &call(command, &[])) else { panic!("{command}") };
        assert!(m.starts_with("refused:") && m.contains("is a path"), "{m}");
    }
    let none = shell(&[]);
    let Err(ToolError::Refused(m)) = none.run(&fx.sandbox, &call("ls", &[])) else { panic!() };
    assert!(m.contains("no program is allowed"), "{m}");
}

#[test]
fn the_allowlist_is_resolved_at_start_up() {
    let config =
        |allow: &[&str]| ShellConfig { allow: allow.iter().map(|s| s.to_string()).collect(), ..Default::default() };
    for name in ["/bin/sh", "./sh", "bin/sh", "", "..", "mcpsec"] {
        match Shell::new(config(&[name])) {
            Err(e @ ShellError::Refused { .. }) => assert!(e.to_string().contains(&format!("`{name}`")), "{e}"),
            other => panic!("{name}: {other:?}"),
        }
    }
    match Shell::new(config(&["ls", "no-such-program-4711"])) {
        Err(e @ ShellError::NotFound { .. }) => assert!(e.to_string().contains("`no-such-program-4711`"), "{e}"),
        other => panic!("{other:?}"),
    }
    // Relative PATH entries are never searched.
    let tmp = tempfile::tempdir().unwrap();
    assert!(matches!(
        Shell::with_search_path(config(&["ls"]), "relative/bin:.".as_ref()),
        Err(ShellError::NotFound { .. })
    ));
    // Not executable: not found.
    fs::write(tmp.path().join("plain"), "#!/bin/sh\n").unwrap();
    assert!(matches!(
        Shell::with_search_path(config(&["plain"]), tmp.path().as_os_str()),
        Err(ShellError::NotFound { .. })
    ));
    // Duplicates are one entry.
    assert_eq!(Shell::new(config(&["ls", "ls"])).unwrap().allowed().count(), 1);
}

#[test]
fn mcpsec_itself_can_never_be_allowed() {
    use std::os::unix::fs::{PermissionsExt, symlink};
    let me = std::env::current_exe().unwrap();
    // Beside the executable, so that a hard link to it can be made.
    let tmp = tempfile::tempdir_in(me.parent().unwrap()).unwrap();
    let bin = tmp.path();
    let config = |name: &str| ShellConfig { allow: vec![name.to_string()], ..Default::default() };
    // The running executable under another name, through a symlink...
    symlink(&me, bin.join("innocent")).unwrap();
    let e = Shell::with_search_path(config("innocent"), bin.as_os_str()).unwrap_err();
    assert!(matches!(e, ShellError::Refused { .. }) && e.to_string().contains("mcpsec itself"), "{e}");
    // ... or a hard link.
    fs::hard_link(&me, bin.join("hardly")).unwrap();
    {
        let e = Shell::with_search_path(config("hardly"), bin.as_os_str()).unwrap_err();
        assert!(matches!(e, ShellError::Refused { .. }), "{e}");
    }
    // Anything whose real name is mcpsec.
    fs::write(bin.join("mcpsec"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(bin.join("mcpsec"), fs::Permissions::from_mode(0o755)).unwrap();
    symlink(bin.join("mcpsec"), bin.join("alias")).unwrap();
    for name in ["mcpsec", "alias"] {
        let e = Shell::with_search_path(config(name), bin.as_os_str()).unwrap_err();
        assert!(matches!(e, ShellError::Refused { .. }), "{name}: {e}");
    }
}

#[test]
fn arguments_naming_paths_outside_the_roots_are_refused() {
    let fx = fx();
    let sh = shell(&["echo", "cat", "rm"]);
    let out = fx.outside.display().to_string();
    let refused_args: Vec<String> = vec![
        "/".into(),
        "/etc/passwd".into(),
        "../x".into(),
        "sub/../../x".into(),
        "--file=/etc/passwd".into(),
        "if=/dev/sda".into(),
        "-I/etc".into(),
        "-o../x".into(),
        "~root".into(),
        "~/../x".into(),
        "out_link/secret".into(),
        "--config=out_link".into(),
        format!("{out}/secret"),
        format!("{}/../outside", fx.root.display()),
        ".env".into(),
        "sub/.env".into(),
    ];
    for arg in &refused_args {
        let e = guard_refusal(&sh, &fx, call("echo", &["ok", arg]));
        assert!(e.to_string().starts_with("refused:"), "{e}");
        assert!(!e.to_string().contains("OUTSIDE-SENTINEL"), "{e}");
    }
    // The classic, even with `rm` allowed.
    let e = guard_refusal(&sh, &fx, call("rm", &["-rf", "/"]));
    assert!(e.to_string().contains("`/` leads outside"), "{e}");
    guard_refusal(&sh, &fx, call("rm", &["-rf", &out]));
    guard_refusal(&sh, &fx, call("cat", &["out_link/secret"]));
    assert!(fx.outside.join("secret").exists());
    // NUL bytes.
    let e = guard_refusal(&sh, &fx, call("echo", &["a\0b"]));
    assert!(matches!(e, GuardError::Invalid { .. }), "{e}");
}

#[test]
fn arguments_inside_the_roots_and_plain_words_are_fine() {
    let fx = fx();
    let sh = shell(&["echo", "cat"]);
    let notes = fx.root.join("notes.txt").display().to_string();
    let other = fx.root2.join("other.txt").display().to_string();
    let args = [
        notes.as_str(),
        &other,
        "notes.txt",
        "sub/../notes.txt",
        "sub/deeper/not-yet/created.txt",
        "--file=notes.txt",
        "-Isub",
        "~",
        "~/notes.txt",
        "-rf",
        "",
        "a commit message, with spaces.. and / slashes",
        "https://example.com/x",
    ];
    let out = run(&sh, &fx, call("echo", &args));
    assert_eq!(out.stdout, format!("{}\n", args.join(" ")));
    let out = run(&sh, &fx, call("cat", &[&notes, "notes.txt", &other]));
    assert_eq!(out.stdout, "inside notes\ninside notes\nsecond root\n");
}

#[test]
fn the_working_directory_must_be_inside_a_root_and_not_denied() {
    let fx = fx();
    let sh = shell(&["pwd", "cat", "echo", "env"]);
    let at = |cwd: &str| ExecArgs { cwd: Some(cwd.into()), ..call("pwd", &["-P"]) };
    assert_eq!(run(&sh, &fx, at("sub")).stdout.trim(), fx.root.join("sub").display().to_string());
    assert_eq!(run(&sh, &fx, at(&fx.root2.display().to_string())).stdout.trim(), fx.root2.display().to_string());
    for cwd in ["/", "/etc", "..", "out_link", &fx.outside.display().to_string(), "sub/../.."] {
        assert!(matches!(guard_refusal(&sh, &fx, at(cwd)), GuardError::Outside { .. }), "{cwd}");
    }
    assert!(matches!(guard_refusal(&sh, &fx, at(".env")), GuardError::Protected { .. }));
    assert!(matches!(sh.run(&fx.sandbox, &at("notes.txt")), Err(ToolError::Guard(GuardError::NotDirectory { .. }))));
    assert!(matches!(sh.run(&fx.sandbox, &at("missing")), Err(ToolError::Guard(GuardError::NotFound { .. }))));
    // Relative arguments are checked from the working directory.
    let in_sub = |args: &[&str]| ExecArgs { cwd: Some("sub".into()), ..call("cat", args) };
    assert_eq!(run(&sh, &fx, in_sub(&["../notes.txt"])).stdout, "inside notes\n");
    guard_refusal(&sh, &fx, in_sub(&["../../outside/secret"]));
    // `HOME` is the working directory: the program's environment says so,
    // and `~/…` arguments are checked from there (the program gets them as
    // given: no shell expands them). A directory named `~` makes their
    // literal meaning resolve too, so that only the `HOME` check decides:
    // were `~` the root, or the caller's home, `~/../..` would lead outside.
    fs::create_dir(fx.root.join("sub/deeper/~")).unwrap();
    let in_deeper = |command: &str, args: &[&str]| ExecArgs { cwd: Some("sub/deeper".into()), ..call(command, args) };
    let env = run(&sh, &fx, in_deeper("env", &[])).stdout;
    let home = format!("HOME={}", fx.root.join("sub/deeper").display());
    assert!(env.lines().any(|l| l == home), "{home} not in {env}");
    let out = run(&sh, &fx, in_deeper("echo", &["~/x", "~", "~/../.."]));
    assert_eq!(out.stdout, "~/x ~ ~/../..\n");
    let e = guard_refusal(&sh, &fx, in_deeper("echo", &["~/../../.."]));
    assert!(matches!(e, GuardError::Outside { .. }), "{e}");
}

#[test]
fn the_environment_is_cleared_but_for_the_minimal_set() {
    let fx = fx();
    let sh = shell(&["env"]);
    let out = run(&sh, &fx, call("env", &[]));
    let vars: BTreeSet<&str> = out.stdout.lines().collect();
    let home = format!("HOME={}", fx.root.display());
    let expected: BTreeSet<&str> = ["PATH=/usr/local/bin:/usr/bin:/bin", "LANG=C.UTF-8", home.as_str()].into();
    assert_eq!(vars, expected);
    let sh = shell_with(&["env"], |c| c.env = vec![("FOO".into(), "bar".into())]);
    let out = run(&sh, &fx, ExecArgs { cwd: Some("sub".into()), ..call("env", &[]) });
    let home = format!("HOME={}", fx.root.join("sub").display());
    assert_eq!(out.stdout.lines().collect::<BTreeSet<_>>(), ["FOO=bar", home.as_str()].into());
}

#[test]
fn stdin_is_empty() {
    let fx = fx();
    let out = run(&shell(&["cat"]), &fx, ExecArgs { timeout_s: Some(60.0), ..call("cat", &[]) });
    assert_eq!((out.stdout.as_str(), out.exit_code, out.timed_out), ("", Some(0), false));
}

#[test]
fn a_timeout_kills_the_whole_process_group() {
    let fx = fx();
    let sh = shell(&["sh"]);
    let script = "sleep 30 & echo $! > pids; sleep 30 & echo $! >> pids; echo started; : > ready; wait";
    let out = run(&sh, &fx, ExecArgs { timeout_s: Some(TIMEOUT), ..call("sh", &["-c", script]) });
    assert_ready(&fx, &out);
    assert!(out.timed_out && out.exit_code.is_none() && out.signal == Some(15), "{out:?}");
    assert_eq!(out.stdout, "started\n", "output before the kill is kept");
    assert_eq!(out.timeout_s, TIMEOUT);
    assert_all_gone(&pids_in(&fx.root.join("pids")));
}

#[test]
fn background_processes_do_not_outlive_the_program() {
    let fx = fx();
    let sh = shell(&["sh"]);
    // The background sleep keeps stdout open: without the group kill the
    // stream would be left open (and the sleep would survive the call).
    let out = run(&sh, &fx, call("sh", &["-c", "sleep 30 & echo $! > pids; echo done"]));
    assert_eq!((out.exit_code, out.timed_out, out.stdout.as_str()), (Some(0), false, "done\n"));
    assert!(!out.streams_left_open, "{out:?}");
    assert_all_gone(&pids_in(&fx.root.join("pids")));
}

#[test]
fn a_program_that_ignores_sigterm_gets_sigkill() {
    let fx = fx();
    let sh = shell(&["sh", "sleep"]);
    let started = Instant::now();
    let script = "trap '' TERM; sleep 30 & echo $! > pids; : > ready; wait";
    let out = run(&sh, &fx, ExecArgs { timeout_s: Some(TIMEOUT), ..call("sh", &["-c", script]) });
    let took = started.elapsed();
    assert_ready(&fx, &out);
    assert!(out.timed_out && out.signal == Some(9), "{out:?}");
    // SIGKILL comes a second (the grace) after SIGTERM, not before.
    assert!(took >= Duration::from_secs_f64(TIMEOUT + 1.0), "{took:?}");
    assert_all_gone(&pids_in(&fx.root.join("pids")));
    // One that does not ignore it ends on SIGTERM, without waiting for SIGKILL.
    let out = run(&sh, &fx, ExecArgs { timeout_s: Some(TIMEOUT), ..call("sleep", &["30"]) });
    assert!(out.timed_out && out.signal == Some(15), "{out:?}");
}

#[test]
fn output_is_capped_per_stream_and_reported_truncated() {
    let fx = fx();
    let sh = shell_with(&["seq", "sh", "yes", "cat"], |c| c.max_output = 1000);
    // Reading goes on past the cap: the program ends normally.
    let out = run(&sh, &fx, call("seq", &["1", "100000"]));
    assert_eq!((out.exit_code, out.stdout.len(), out.stdout_truncated), (Some(0), 1000, true));
    assert!(out.stdout.starts_with("1\n2\n3\n"));
    assert!(!out.stderr_truncated && out.stderr.is_empty());
    let out = run(&sh, &fx, call("sh", &["-c", "seq 1 100000 >&2; echo small"]));
    assert_eq!((out.stderr.len(), out.stderr_truncated), (1000, true));
    assert_eq!((out.stdout.as_str(), out.stdout_truncated), ("small\n", false));
    // Exactly the cap is not truncated.
    fs::write(fx.root.join("k"), vec![b'k'; 1000]).unwrap();
    let out = run(&sh, &fx, call("cat", &["k"]));
    assert_eq!((out.stdout.len(), out.stdout_truncated), (1000, false));
    // Endless output: the timeout ends it.
    let out = run(&sh, &fx, ExecArgs { timeout_s: Some(TIMEOUT), ..call("yes", &[]) });
    assert!(out.timed_out && out.stdout_truncated && out.stdout.len() == 1000, "{:?}", out.timed_out);
    // Invalid UTF-8 is replaced, not an error.
    fs::write(fx.root.join("bin"), [0xff, 0xfe, b'x']).unwrap();
    assert_eq!(run(&sh, &fx, call("cat", &["bin"])).stdout, "\u{fffd}\u{fffd}x");
}

#[test]
fn the_timeout_is_validated_and_capped() {
    let fx = fx();
    let sh = shell_with(&["true"], |c| {
        c.timeout = Duration::from_secs(7);
        c.max_timeout = Duration::from_secs(60);
    });
    for bad in [0.0, -1.0, f64::NAN, f64::NEG_INFINITY] {
        match sh.run(&fx.sandbox, &ExecArgs { timeout_s: Some(bad), ..call("true", &[]) }) {
            Err(e @ ToolError::Invalid { .. }) => assert!(e.to_string().contains("timeout_s"), "{e}"),
            other => panic!("{bad}: {other:?}"),
        }
    }
    assert_eq!(run(&sh, &fx, call("true", &[])).timeout_s, 7.0);
    assert_eq!(run(&sh, &fx, ExecArgs { timeout_s: Some(1e300), ..call("true", &[]) }).timeout_s, 60.0);
    assert_eq!(run(&sh, &fx, ExecArgs { timeout_s: Some(f64::INFINITY), ..call("true", &[]) }).timeout_s, 60.0);
    assert_eq!(run(&sh, &fx, ExecArgs { timeout_s: Some(2.5), ..call("true", &[]) }).timeout_s, 2.5);
}

#[test]
fn unusable_settings_are_start_up_errors() {
    let bad = |edit: fn(&mut ShellConfig)| {
        let mut c = ShellConfig::default();
        edit(&mut c);
        Shell::new(c).unwrap_err()
    };
    assert!(matches!(bad(|c| c.timeout = Duration::ZERO), ShellError::Config(_)));
    assert!(matches!(bad(|c| c.timeout = c.max_timeout * 2), ShellError::Config(_)));
    assert!(matches!(bad(|c| c.max_output = 0), ShellError::Config(_)));
    assert!(matches!(bad(|c| c.env.push(("A=B".into(), "x".into()))), ShellError::Config(_)));
}

#[test]
fn arguments_are_parsed_strictly() {
    let args: ExecArgs = serde_json::from_value(serde_json::json!({ "command": "ls" })).unwrap();
    assert!(args.args.is_empty() && args.cwd.is_none() && args.timeout_s.is_none());
    assert!(serde_json::from_value::<ExecArgs>(serde_json::json!({ "command": "ls", "shell": true })).is_err());
    assert!(serde_json::from_value::<ExecArgs>(serde_json::json!({ "args": [] })).is_err());
}
