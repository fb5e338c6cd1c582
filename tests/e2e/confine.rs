//! Confinement (issue 31): what a program run by `execute_command`, or a
//! proxied upstream, can reach is decided by the kernel, not by the
//! argument checks. Every attempt here gets past the argument checks (the
//! paths are computed at run time) and must fail at the operating-system
//! level; what must keep working is checked beside it.

use mcpsec_e2e::{Client, Env, Protocol, SECRET, text};
use serde_json::{Value, json};

const SYSTEM_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// Python that prints the contents of the file whose path is given in hex
/// (so no argument names it), or the error it got.
fn py_read(path: &std::path::Path) -> Value {
    let hex: String = path.display().to_string().bytes().map(|b| format!("{b:02x}")).collect();
    json!({"command": "python3", "args": ["-c", format!(
        "import sys\ntry:\n print(open(bytes.fromhex('{hex}').decode()).read())\nexcept Exception as e:\n print('refused:', type(e).__name__)"
    )]})
}

/// Python that writes `x` to the file whose path is given in hex.
fn py_write(path: &std::path::Path) -> Value {
    let hex: String = path.display().to_string().bytes().map(|b| format!("{b:02x}")).collect();
    json!({"command": "python3", "args": ["-c", format!(
        "try:\n open(bytes.fromhex('{hex}').decode(), 'w').write('x'); print('written')\nexcept Exception as e:\n print('refused:', type(e).__name__)"
    )]})
}

fn have(program: &str) -> bool {
    std::env::split_paths(SYSTEM_PATH).any(|d| d.join(program).is_file())
}

const SHELL: &str = "[policy]\nexecute_shell = \"allow\"\n\
                     [shell]\nallow = [\"awk\", \"python3\", \"sh\", \"ls\", \"git\", \"head\"]\n\
                     [confine]\nmax_file_size = \"1MiB\"\n";

#[tokio::test]
async fn programs_cannot_reach_outside_the_roots_whatever_their_arguments() {
    if !have("python3") || !have("git") {
        mcpsec_e2e::skip("programs_cannot_reach_outside_the_roots", "python3 or git is not installed");
        return;
    }
    let env = Env::new();
    env.write("ws/.env", SECRET);
    env.write("ws/sub/keep.txt", "kept\n");
    env.write("home/.aws/credentials", SECRET);
    env.write("home/notes.txt", "notes\n");
    let git = std::process::Command::new("git").args(["init", "-q"]).current_dir(env.root()).status().unwrap();
    assert!(git.success());
    let git_config = env.read("ws/.git/config");
    let cfg = env.config(SHELL);
    // mcpsec's database and key exist (they are made on first use).
    let (code, _, err) = env.cli(&["--config", cfg.to_str().unwrap(), "tokens"]);
    assert_eq!(code, 0, "{err}");
    assert!(env.exists("state/mcpsec.db") && env.exists("state/secret.key"));
    let home = env.path().join("home");
    let mut cmd = env.command(&["--root", home.to_str().unwrap(), "--config", cfg.to_str().unwrap()]);
    cmd.env("PATH", SYSTEM_PATH).env("HOME", &home);
    let c = Client::connect(cmd, Protocol::Legacy).await;
    let run = |args: Value| {
        let c = &c;
        async move {
            let r = c.call("execute_command", args.clone()).await;
            let s = r.structured_content.clone().unwrap_or_default();
            let out = format!("{}{}", s["stdout"].as_str().unwrap_or(""), s["stderr"].as_str().unwrap_or(""));
            assert!(!out.contains(SECRET) && !text(&r).contains(SECRET), "{args}: {out}");
            out
        }
    };

    // The attack: awk reads a file outside the roots by itself.
    let secret = env.outside().join("secret.txt");
    let awk = format!("BEGIN{{while((getline l < \"{}\")>0) print l; print \"end\"}}", secret.display());
    let out = run(json!({"command": "awk", "args": [awk]})).await;
    assert!(out.contains("end"), "{out}");
    // The same through python, the path in hex; and mcpsec's own state, the
    // system's secrets, a denied file in a root, a credential store in a root.
    let state = env.path().join("state");
    for target in [
        secret.clone(),
        state.join("audit.log"),
        state.join("mcpsec.db"),
        state.join("secret.key"),
        "/etc/shadow".into(),
        env.root().join(".env"),
        home.join(".aws/credentials"),
    ] {
        let out = run(py_read(&target)).await;
        assert!(out.contains("refused: PermissionError"), "{}: {out}", target.display());
    }
    // What the program may read still reads.
    for (target, want) in [(env.root().join("sub/keep.txt"), "kept"), (home.join("notes.txt"), "notes")] {
        let out = run(py_read(&target)).await;
        assert!(out.contains(want), "{}: {out}", target.display());
    }
    // Writes: outside, mcpsec's database, the readonly .git: refused.
    for target in [env.outside().join("new.txt"), state.join("mcpsec.db"), env.root().join(".git/config")] {
        let out = run(py_write(&target)).await;
        assert!(out.contains("refused: PermissionError"), "{}: {out}", target.display());
    }
    assert!(!env.exists("outside/new.txt"));
    assert_eq!(env.read("ws/.git/config"), git_config);
    // Inside a root, where nothing is protected: written.
    let out = run(py_write(&env.root().join("sub/new.txt"))).await;
    assert!(out.contains("written"), "{out}");
    // mcpsec itself cannot be run from inside (to approve pins, say).
    let bin = mcpsec_e2e::mcpsec_bin().display().to_string();
    let out = run(json!({"command": "python3", "args": ["-c", format!(
        "import subprocess\ntry:\n subprocess.run([{bin:?}, 'pins', 'list']); print('ran')\nexcept Exception as e:\n print('refused:', type(e).__name__)"
    )]}))
    .await;
    assert!(out.contains("refused: PermissionError"), "{out}");

    // The network: a listener on loopback is not reached.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let out = run(json!({"command": "python3", "args": ["-c", format!(
        "import socket\ntry:\n socket.create_connection(('127.0.0.1', {port}), timeout=2); print('connected')\nexcept Exception as e:\n print('refused:', type(e).__name__)"
    )]}))
    .await;
    assert!(out.contains("refused: PermissionError"), "{out}");
    assert!(listener.accept().is_err(), "a connection reached the listener");
    // Signals to mcpsec (the program's parent), and ptrace of a sibling.
    let out = run(json!({"command": "sh", "args": ["-c", "kill -0 $PPID && echo signalled"]})).await;
    assert!(!out.contains("signalled") && out.contains("not permitted"), "{out}");
    let out = run(json!({"command": "python3", "args": ["-c",
        "import ctypes, subprocess\np = subprocess.Popen(['sleep', '5'])\nl = ctypes.CDLL(None, use_errno=True)\n\
         print('ptrace', l.ptrace(16, p.pid, 0, 0), ctypes.get_errno())\np.kill()"
    ]}))
    .await;
    assert!(out.contains("ptrace -1 1"), "{out}");
    // A file larger than max_file_size (1 MiB) is cut short.
    run(json!({"command": "sh", "args": ["-c", "head -c 2000000 /dev/zero > sub/big"]})).await;
    let big = std::fs::metadata(env.root().join("sub/big")).map(|m| m.len()).unwrap_or(0);
    assert!(big <= 1 << 20, "{big} bytes written");

    // What keeps working: ls, git status, python, a private TMPDIR (removed after).
    let out = run(json!({"command": "ls", "args": ["sub"]})).await;
    assert!(out.contains("keep.txt"), "{out}");
    let r = c.call("execute_command", json!({"command": "git", "args": ["status", "--short"]})).await;
    assert_eq!(r.structured_content.as_ref().unwrap()["exit_code"], 0, "{}", text(&r));
    let out =
        run(json!({"command": "sh", "args": ["-c", "echo t > \"$TMPDIR/t\" && cat \"$TMPDIR/t\" && echo $TMPDIR"]}))
            .await;
    let tmpdir = out.lines().last().unwrap_or_default().to_owned();
    assert!(out.starts_with("t\n") && tmpdir.contains("mcpsec-exec-"), "{out}");
    assert!(!std::path::Path::new(&tmpdir).exists(), "{tmpdir} outlived the call");
    c.close().await;
    let start = env.audit_records().into_iter().find(|r| r["event"] == "server_start").unwrap();
    assert_eq!(start["details"]["confine"]["mode"], "required", "{start}");
}

#[tokio::test]
async fn required_refuses_when_the_kernel_cannot_confine_and_best_effort_says_what_is_missing() {
    let env = Env::new();
    // Required (the default), on a kernel pretending to have no Landlock.
    let cfg = env.config("[policy]\nexecute_shell = \"allow\"\n[shell]\nallow = [\"ls\"]\n");
    let mut cmd = env.command(&["--config", cfg.to_str().unwrap()]);
    cmd.env("MCPSEC_TEST_ONLY_PRETEND_NO_LANDLOCK", "1");
    let c = Client::connect(cmd, Protocol::Legacy).await;
    let e = c.err("execute_command", json!({"command": "ls"})).await;
    assert!(e.starts_with("refused:") && e.contains("Landlock is not available") && e.contains("mcpsec doctor"), "{e}");
    c.close().await;
    // A gateway does not start.
    let mut cmd = std::process::Command::new(mcpsec_e2e::mcpsec_bin());
    cmd.args(["--config", cfg.to_str().unwrap(), "proxy", "--name", "fx", "--"])
        .args(mcpsec_e2e::fixture_upstream())
        .env("MCPSEC_STATE_DIR", env.path().join("state"))
        .env("MCPSEC_TEST_ONLY_PRETEND_NO_LANDLOCK", "1")
        .stdin(std::process::Stdio::null());
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("the upstream `fx` is not started") && err.contains("mcpsec doctor"), "{err}");

    // Best effort: the program runs, and the start record says what is missing.
    let cfg = env
        .config("[policy]\nexecute_shell = \"allow\"\n[shell]\nallow = [\"ls\"]\n[confine]\nmode = \"best_effort\"\n");
    let mut cmd = env.command(&["--config", cfg.to_str().unwrap()]);
    cmd.env("MCPSEC_TEST_ONLY_PRETEND_NO_LANDLOCK", "1");
    let c = Client::connect(cmd, Protocol::Legacy).await;
    let out = c.ok("execute_command", json!({"command": "ls"})).await;
    assert!(out.contains("hello.txt"), "{out}");
    c.close().await;
    let starts: Vec<Value> = env.audit_records().into_iter().filter(|r| r["event"] == "server_start").collect();
    let last = &starts.last().unwrap()["details"]["confine"];
    assert_eq!(last["mode"], "best_effort", "{last}");
    assert!(last["missing"][0].as_str().unwrap().contains("Landlock is not available"), "{last}");
}

#[tokio::test]
async fn a_proxied_upstream_reaches_only_its_grants_and_still_works() {
    let env = Env::new();
    std::fs::write(env.fixture_state(), json!({"hostile_tools": true}).to_string()).unwrap();
    let allowed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    other.set_nonblocking(true).unwrap();
    let (port, other_port) = (allowed.local_addr().unwrap().port(), other.local_addr().unwrap().port());
    let out_dir = env.path().join("served");
    std::fs::create_dir(&out_dir).unwrap();
    let cfg = env.config(&format!(
        "[proxy.fx]\nwrite = [{:?}]\nnetwork = [\"{port}\"]\n[confine]\nread = [{:?}]\n",
        out_dir.display().to_string(),
        env.fixture_state().display().to_string()
    ));
    let mut cmd = env.proxy_command("fx", &["--config", cfg.to_str().unwrap()], &[]);
    let upstream = mcpsec_e2e::fixture_upstream();
    cmd.args(&upstream).env("FIXTURE_STATE", env.fixture_state());
    let c = Client::connect(cmd, Protocol::Legacy).await;
    // Still works.
    let out = c.ok("echo", json!({"text": "hi"})).await;
    assert!(out.contains("hi"), "{out}");
    // Reads outside its grants, mcpsec's state: refused by the kernel.
    let state = env.path().join("state");
    for target in [
        env.outside().join("secret.txt"),
        state.join("audit.log"),
        state.join("mcpsec.db"),
        env.root().join("hello.txt"),
    ] {
        let out = c.ok("read_path", json!({"path": target})).await;
        assert!(out.contains("failed: EACCES") && !out.contains(SECRET), "{}: {out}", target.display());
    }
    // Writes: mcpsec.db (approving its own pins) and outside: refused; its own directory: written.
    for target in [state.join("mcpsec.db"), env.outside().join("new.txt")] {
        let out = c.ok("write_path", json!({"path": target, "text": "x"})).await;
        assert!(out.contains("failed: EACCES"), "{}: {out}", target.display());
    }
    let out = c.ok("write_path", json!({"path": out_dir.join("f.txt"), "text": "x"})).await;
    assert!(out.contains("written"), "{out}");
    // The network: the port it was given, and no other.
    let out = c.ok("connect", json!({"port": port})).await;
    assert!(out.contains("connected"), "{out}");
    let out = c.ok("connect", json!({"port": other_port})).await;
    assert!(out.contains("failed:"), "{out}");
    assert!(other.accept().is_err(), "a connection reached the other listener");
    // mcpsec, its parent, cannot be signalled.
    let out = c.ok("signal_parent", json!({})).await;
    assert!(out.contains("failed: EPERM"), "{out}");
    c.close().await;
}

#[test]
fn doctor_reports_the_landlock_abi_and_what_holds() {
    let env = Env::new();
    let finding = |pretend: bool| {
        let mut cmd = std::process::Command::new(mcpsec_e2e::mcpsec_bin());
        cmd.args(["doctor", "--json"]).env("MCPSEC_STATE_DIR", env.path().join("state")).env_remove("MCPSEC_CONFIG");
        if pretend {
            cmd.env("MCPSEC_TEST_ONLY_PRETEND_NO_LANDLOCK", "1");
        }
        let out = cmd.output().unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["findings"].as_array().unwrap().iter().find(|f| f["check"] == "confine").cloned().unwrap()
    };
    let f = finding(false);
    assert!(f["message"].as_str().unwrap().contains("Landlock ABI"), "{f}");
    println!("this kernel: {}", f["message"]);
    let f = finding(true);
    assert_eq!(f["status"], "fail", "{f}");
    assert!(
        f["message"].as_str().unwrap().contains("Landlock ABI 0") && f["fix"].as_str().unwrap().contains("best_effort"),
        "{f}"
    );
}
