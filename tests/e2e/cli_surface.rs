//! The command line's surface: `--help` of every command, `init`,
//! `client-config`, completions and man pages, held to committed snapshots
//! in `tests/snapshots/` (`UPDATE_SNAPSHOTS=1 cargo test -p mcpsec-e2e`
//! rewrites them; review the diff).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use mcpsec_e2e::{Env, in_ci, mcpsec_bin, skip};

fn snapshots() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("snapshots")
}

/// Compares `actual` with the snapshot `name`, or rewrites it with
/// `UPDATE_SNAPSHOTS=1` (refused in CI, where every check would pass).
fn check_snapshot(name: &str, actual: &str) {
    let path = snapshots().join(name);
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        assert!(
            !in_ci(),
            "UPDATE_SNAPSHOTS is set in CI: it would rewrite {name} instead of checking it; \
             rewrite snapshots locally, review the diff and commit it"
        );
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, actual).unwrap();
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!("no snapshot {}: run `UPDATE_SNAPSHOTS=1 cargo test -p mcpsec-e2e` and review it", path.display())
    });
    assert!(
        expected == actual,
        "{name} changed (UPDATE_SNAPSHOTS=1 rewrites it):\n--- expected\n{expected}\n--- actual\n{actual}"
    );
}

/// `mcpsec ARGS` with no mcpsec variable from the environment, in `dir`.
fn mcpsec(dir: &Path, args: &[&str], envs: &[(&str, &Path)]) -> (i32, String, String) {
    let out = mcpsec_e2e::mcpsec_command()
        .args(args)
        .current_dir(dir)
        .env_remove("MCPSEC_STATE_DIR")
        .env_remove("COLUMNS")
        .env("NO_COLOR", "1")
        .env("XDG_CONFIG_HOME", dir.join("no-config"))
        .env("XDG_STATE_HOME", dir.join("xdg-state"))
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Replaces the test's temporary directory and the binary's path with
/// placeholders, so snapshots hold on any machine.
fn placeholders(env: &Env, text: &str) -> String {
    let bin = mcpsec_bin().canonicalize().unwrap();
    let tmp = env.path().canonicalize().unwrap();
    text.replace(bin.to_str().unwrap(), "<MCPSEC>")
        .replace(tmp.to_str().unwrap(), "<TMP>")
        .replace(env.path().to_str().unwrap(), "<TMP>")
}

/// The subcommand names listed under "Commands:" in a help text.
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

#[test]
fn help_of_every_command_matches_its_snapshot() {
    let env = Env::new();
    let (code, top, _) = mcpsec(env.path(), &["--help"], &[]);
    assert_eq!(code, 0);
    check_snapshot("help/mcpsec.txt", &top);
    let commands = subcommands(&top);
    assert!(commands.len() >= 10, "{commands:?}");
    for command in &commands {
        let (code, help, err) = mcpsec(env.path(), &[command, "--help"], &[]);
        assert_eq!(code, 0, "{command}: {err}");
        check_snapshot(&format!("help/mcpsec-{command}.txt"), &help);
        for sub in subcommands(&help) {
            let (code, help, err) = mcpsec(env.path(), &[command, &sub, "--help"], &[]);
            assert_eq!(code, 0, "{command} {sub}: {err}");
            check_snapshot(&format!("help/mcpsec-{command}-{sub}.txt"), &help);
        }
    }
}

#[test]
fn usage_errors_exit_2() {
    let env = Env::new();
    for args in [&["--no-such-flag"][..], &["client-config", "emacs"], &["completions", "tcsh"], &[]] {
        let (code, out, _) = mcpsec(env.path(), args, &[]);
        assert_eq!(code, 2, "{args:?}");
        assert!(out.is_empty(), "{args:?}: {out}");
    }
}

#[test]
fn init_writes_the_commented_defaults_and_never_overwrites_without_force() {
    let env = Env::new();
    let cfg = env.path().join("cfg");
    let state = env.path().join("fresh-state");
    let envs = [("XDG_CONFIG_HOME", cfg.as_path()), ("MCPSEC_STATE_DIR", state.as_path())];
    let (code, out, err) = mcpsec(env.path(), &["init"], &envs);
    assert_eq!(code, 0, "{err}");
    assert!(out.is_empty(), "{out}");
    check_snapshot("init.txt", &placeholders(&env, &err));
    let file = cfg.join("mcpsec/mcpsec.toml");
    let written = std::fs::read_to_string(&file).unwrap();
    check_snapshot("init-mcpsec.toml", &written);
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&state).unwrap().permissions().mode() & 0o777, 0o700);

    // The file it wrote is the defaults: serve accepts it as is.
    let (code, _, err) = mcpsec(env.path(), &["doctor", "--json"], &envs);
    assert_eq!(code, 0, "{err}");

    // A second init refuses, naming --force, and changes nothing.
    std::fs::write(&file, "# mine\n").unwrap();
    let (code, _, err) = mcpsec(env.path(), &["init"], &envs);
    assert_eq!(code, 1);
    assert!(err.contains("--force") && err.contains("already exists"), "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "# mine\n");
    // --force replaces it.
    let (code, _, err) = mcpsec(env.path(), &["init", "--force"], &envs);
    assert_eq!(code, 0, "{err}");
    assert_eq!(std::fs::read_to_string(&file).unwrap(), written);
    // --config names the file to write.
    let (code, _, err) = mcpsec(env.path(), &["--config", "elsewhere/m.toml", "init"], &envs);
    assert_eq!(code, 0, "{err}");
    assert_eq!(env.read("elsewhere/m.toml"), written);
}

#[test]
fn client_config_prints_each_clients_snippet_with_absolute_paths() {
    let env = Env::new();
    for client in ["claude-desktop", "claude-code", "cursor", "vscode"] {
        let (code, out, err) = mcpsec(env.path(), &["client-config", client, "--root", "ws"], &[]);
        assert_eq!(code, 0, "{client}: {err}");
        check_snapshot(&format!("client-config-{client}.txt"), &placeholders(&env, &out));
        if client != "claude-code" {
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            let entry = v.get("mcpServers").or(v.get("servers")).unwrap().get("mcpsec").unwrap();
            assert!(Path::new(entry["command"].as_str().unwrap()).is_absolute());
        }
    }
    // The state directory and config in use here go with it: the client
    // does not start mcpsec with this shell's environment.
    let cfg = env.config("");
    let (code, out, _) = mcpsec(
        env.path(),
        &["client-config", "cursor", "--root", "ws", "--config", cfg.to_str().unwrap()],
        &[("MCPSEC_STATE_DIR", &env.state())],
    );
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let args = v["mcpServers"]["mcpsec"]["args"].as_array().unwrap();
    assert!(args.iter().any(|a| a == "--state-dir") && args.iter().any(|a| a == "--config"), "{args:?}");

    let (code, out, err) = mcpsec(env.path(), &["client-config", "cursor", "--root", "no/such/dir"], &[]);
    assert_eq!((code, out.as_str()), (1, ""));
    assert!(err.contains("no/such/dir"), "{err}");
    let (code, _, err) = mcpsec(env.path(), &["client-config", "cursor"], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("--root DIR"), "{err}");
    let bad = env.config("[policy]\nread_filez = \"allow\"\n");
    let (code, out, err) =
        mcpsec(env.path(), &["client-config", "cursor", "--root", "ws", "--config", bad.to_str().unwrap()], &[]);
    assert_eq!((code, out.as_str()), (2, ""));
    assert!(err.contains("read_filez"), "{err}");
}

#[test]
fn completions_parse_in_every_shell_at_hand() {
    let env = Env::new();
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        let (code, script, err) = mcpsec(env.path(), &["completions", shell], &[]);
        assert_eq!(code, 0, "{shell}: {err}");
        assert!(script.contains("client-config") && script.contains("doctor"), "{shell}");
        let check: &[&str] = match shell {
            "bash" => &["bash", "-n"],
            "zsh" => &["zsh", "-n"],
            "fish" => &["fish", "--no-execute"],
            _ => continue,
        };
        let path = env.path().join(format!("completion.{shell}"));
        std::fs::write(&path, &script).unwrap();
        match Command::new(check[0]).args(&check[1..]).arg(&path).output() {
            Ok(o) => assert!(o.status.success(), "{shell}: {}", String::from_utf8_lossy(&o.stderr)),
            // bash is on every machine this runs on; zsh and fish may not be
            // (.ci/run installs them).
            Err(e) if shell != "bash" && e.kind() == std::io::ErrorKind::NotFound => {
                skip(&format!("parsing the {shell} completions"), &format!("{shell} is not installed"));
            }
            Err(e) => panic!("{shell}: {e}"),
        }
    }
}

#[test]
fn man_pages_for_every_subcommand() {
    let env = Env::new();
    let (code, _, err) = mcpsec(env.path(), &["man", "--out", "man"], &[]);
    assert_eq!(code, 0, "{err}");
    for page in ["mcpsec.1", "mcpsec-grant.1", "mcpsec-doctor.1", "mcpsec-audit-verify.1", "mcpsec-client-config.1"] {
        let text = env.read(&format!("man/{page}"));
        assert!(text.starts_with(".ie") || text.contains(".TH"), "{page}: {text}");
    }
}

#[test]
fn init_on_a_terminal_offers_the_grant_passphrase() {
    let env = Env::new();
    let terminal = "init's terminal flow";
    let Some((code, screen)) = env.on_a_terminal(terminal, "init", "y\ncorrect horse\ncorrect horse\n") else {
        return;
    };
    assert_eq!(code, 0, "{screen}");
    assert!(screen.contains("set a grant passphrase now") && screen.contains("grant passphrase set"), "{screen}");
    let grant = |passphrase: &str| {
        let mut child = mcpsec_e2e::mcpsec_command()
            .args(["grant", "delete_files", "--passphrase-stdin"])
            .env("MCPSEC_STATE_DIR", env.state())
            .env("XDG_CONFIG_HOME", env.path().join("cfg"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        use std::io::Write;
        child.stdin.take().unwrap().write_all(passphrase.as_bytes()).unwrap();
        child.wait_with_output().unwrap().status.code()
    };
    assert_eq!(grant("wrong guess\n"), Some(1));
    assert_eq!(grant("correct horse\n"), Some(0));

    // Declined: no passphrase, and the warning says how to set one later.
    let env = Env::new();
    let (code, screen) = env.on_a_terminal(terminal, "init", "n\n").unwrap();
    assert_eq!(code, 0, "{screen}");
    assert!(screen.contains("no grant passphrase is set") && screen.contains("init --passphrase"), "{screen}");
}
