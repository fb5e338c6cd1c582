//! `--json` output keeps the field sets documented in docs/json.md.

use std::collections::BTreeSet;

use mcpsec_e2e::Env;
use serde_json::Value;

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object().unwrap_or_else(|| panic!("not an object: {v}")).keys().cloned().collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| s.to_string()).collect()
}

fn json(env: &Env, args: &[&str]) -> (i32, Value) {
    let (code, out, err) = env.cli(args);
    (code, serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}\n{err}")))
}

const TOKEN: &[&str] =
    &["id", "capability", "created_at", "expires_at", "paths", "uses_left", "user", "note", "revoked"];

#[test]
fn every_report_has_its_documented_fields() {
    let env = Env::new();
    let (code, g) = json(&env, &["grant", "delete_files", "--json", "--note", "n"]);
    assert_eq!(code, 0);
    let mut with_token = set(TOKEN);
    with_token.insert("token".into());
    assert_eq!(keys(&g), with_token);

    let (_, list) = json(&env, &["tokens", "--json"]);
    let mut with_status = set(TOKEN);
    with_status.insert("status".into());
    assert_eq!(keys(&list[0]), with_status);
    assert_eq!(list[0]["status"], "active");

    let id = g["id"].as_str().unwrap();
    let (code, r) = json(&env, &["revoke", id, "nope", "--json"]);
    assert_eq!(code, 1);
    assert_eq!(r, serde_json::json!({"revoked": [id], "not_found": ["nope"]}));

    let (code, v) = json(&env, &["audit", "verify", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(keys(&v), set(&["ok", "records", "head", "notes"]));
    assert_eq!(keys(&v["head"]), set(&["seq", "hash"]));

    let (_, cp) = json(&env, &["audit", "checkpoint"]);
    assert_eq!(keys(&cp), set(&["seq", "hash", "ts"]));

    let (_, p) = json(&env, &["audit", "path", "--json"]);
    assert_eq!(p, serde_json::json!({"path": env.audit_log(), "sync": "changes", "sync_interval_ms": 10}));

    let (code, d) = json(&env, &["doctor", "--json"]);
    assert_eq!(code, 0);
    assert_eq!(keys(&d), set(&["ok", "findings"]));
    for f in d["findings"].as_array().unwrap() {
        assert_eq!(keys(f), set(&["check", "status", "message", "fix"]));
    }

    let (code, out, _) = env.cli(&["audit", "grep", "--json", "--event", "grant"]);
    assert_eq!(code, 0);
    for line in out.lines() {
        let r: Value = serde_json::from_str(line).unwrap();
        assert_eq!(r["event"], "grant");
    }
}

#[test]
fn a_broken_chain_reports_where() {
    let env = Env::new();
    env.grant(&["delete_files"]);
    env.grant(&["write_files"]);
    let text = std::fs::read_to_string(env.audit_log()).unwrap();
    std::fs::write(env.audit_log(), text.replacen("delete_files", "read_files", 1)).unwrap();
    let (code, v) = json(&env, &["audit", "verify", "--json"]);
    assert_eq!(code, 1);
    assert_eq!(keys(&v), set(&["ok", "file", "line", "seq", "problem", "detail"]));
    assert_eq!(v["problem"], "edited");
}
