//! `mcpsec doctor`: one test per problem it claims to find, each with its fix.

use std::os::unix::fs::PermissionsExt;

use mcpsec_e2e::Env;
use serde_json::Value;

/// `mcpsec doctor --json ARGS`: (exit code, the findings of `check`).
fn doctor(env: &Env, args: &[&str], check: &str) -> (i32, Vec<Value>) {
    let mut all = vec!["doctor", "--json"];
    all.extend_from_slice(args);
    let (code, out, err) = env.cli(&all);
    let v: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}\n{err}"));
    assert_eq!(v["ok"], code == 0, "{v}");
    let findings = v["findings"].as_array().unwrap().iter().filter(|f| f["check"] == check).cloned().collect();
    (code, findings)
}

/// One `fail` finding of `check`, whose message and fix say what they should.
fn assert_fails(env: &Env, args: &[&str], check: &str, message: &str, fix: &str) {
    let (code, findings) = doctor(env, args, check);
    assert_eq!(code, 1, "{findings:?}");
    let f = findings.iter().find(|f| f["status"] == "fail").unwrap_or_else(|| panic!("{check}: {findings:?}"));
    assert!(f["message"].as_str().unwrap().contains(message), "{f}");
    assert!(f["fix"].as_str().unwrap().contains(fix), "{f}");
}

/// An env whose state has a key, a database and an audit log.
fn used_env() -> Env {
    let env = Env::new();
    env.grant(&["delete_files"]);
    env.grant(&["write_files"]);
    env
}

#[test]
fn a_healthy_installation_has_no_findings() {
    let env = used_env();
    let (code, out, err) = env.cli(&["doctor", "--root", "ws"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("no problems found") && !out.contains("FAIL"), "{out}");
    for check in ["state_dir", "key_file", "db_file", "database", "audit_chain", "audit_sync"] {
        let (_, f) = doctor(&env, &[], check);
        assert_eq!(f[0]["status"], "ok", "{f:?}");
    }
}

#[test]
fn a_world_readable_key_file() {
    let env = used_env();
    std::fs::set_permissions(env.state().join("secret.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_fails(&env, &[], "key_file", "mode 0644", "chmod 600");
    let (_, out, _) = env.cli(&["doctor"]);
    assert!(out.contains("FAIL") && out.contains("fix: chmod 600") && out.contains("1 problem(s) found"), "{out}");
}

#[test]
fn a_state_directory_others_can_enter() {
    let env = used_env();
    std::fs::set_permissions(env.state(), std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_fails(&env, &[], "state_dir", "mode 0755", "chmod 700");
}

#[test]
fn a_corrupt_database() {
    let env = used_env();
    let db = env.state().join("mcpsec.db");
    let mut bytes = std::fs::read(&db).unwrap();
    for b in bytes.iter_mut().skip(100) {
        *b = 0xA5;
    }
    std::fs::write(&db, bytes).unwrap();
    let _ = std::fs::remove_file(env.state().join("mcpsec.db-wal"));
    assert_fails(&env, &[], "database", "", "mcpsec.db.damaged");
}

#[test]
fn a_tampered_audit_log() {
    let env = used_env();
    let log = env.audit_log();
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("delete_files"));
    std::fs::write(&log, text.replacen("delete_files", "read_files", 1)).unwrap();
    assert_fails(&env, &[], "audit_chain", "hash chain is broken", "mcpsec audit verify");
}

#[test]
fn a_missing_root() {
    let env = Env::new();
    assert_fails(&env, &["--root", "no/such/dir"], "root", "no/such/dir", "mkdir -p");
    let cfg = env.config("roots = [\"gone\"]\n");
    assert_fails(&env, &["--config", cfg.to_str().unwrap()], "root", "gone", "remove it from the roots");
}

#[test]
fn a_config_file_others_can_write() {
    let env = Env::new();
    let cfg = env.config("");
    std::fs::set_permissions(&cfg, std::fs::Permissions::from_mode(0o666)).unwrap();
    assert_fails(
        &env,
        &["--config", cfg.to_str().unwrap()],
        "config",
        "other users can change the policy",
        "chmod go-w",
    );
}

#[test]
fn an_invalid_config() {
    let env = Env::new();
    let cfg = env.config("[policy]\nread_filez = \"allow\"\n");
    assert_fails(&env, &["--config", cfg.to_str().unwrap()], "config", "read_filez", "docs/configuration.md");
}

#[test]
fn the_audit_sync_mode_and_what_a_crash_can_lose() {
    let env = Env::new();
    // The default: changes, read records within 10ms.
    let (code, f) = doctor(&env, &[], "audit_sync");
    assert_eq!((code, f.len()), (0, 1), "{f:?}");
    assert_eq!(f[0]["status"], "ok", "{f:?}");
    let m = f[0]["message"].as_str().unwrap();
    assert!(m.starts_with("[audit] sync = changes ") && m.contains("10ms") && m.contains("never a change"), "{m}");
    let always = env.config("[audit]\nsync = \"always\"\n");
    let (_, f) = doctor(&env, &["--config", always.to_str().unwrap()], "audit_sync");
    assert_eq!(f[0]["status"], "ok", "{f:?}");
    assert!(f[0]["message"].as_str().unwrap().starts_with("[audit] sync = always "), "{f:?}");
    // batch: a change's record waits for no sync, which doctor points out.
    let batch = env.config("[audit]\nsync = \"batch\"\nsync_interval = \"2s\"\n");
    let (code, f) = doctor(&env, &["--config", batch.to_str().unwrap()], "audit_sync");
    assert_eq!(code, 0, "worth knowing, not wrong: {f:?}");
    assert_eq!(f[0]["status"], "info", "{f:?}");
    assert!(f[0]["message"].as_str().unwrap().contains("2s of records, a change's too"), "{f:?}");
    assert!(f[0]["fix"].as_str().unwrap().contains("sync = \"changes\""), "{f:?}");
}
