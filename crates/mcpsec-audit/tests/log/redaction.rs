//! Redaction end to end: secrets handed to the log in any field that is
//! redacted never reach the file.

use mcpsec_audit::{AuditLog, EventKind, Options, Outcome, Record, summarize_args};
use serde_json::json;

use crate::common::*;

fn fake(n: usize) -> String {
    // Random-looking letters and digits.
    (0..n).map(|i| b"q7Zk2Lw9XbR4mTn8"[(i * 7 + n) % 16] as char).collect()
}

#[test]
fn no_secret_reaches_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = log_in(&dir);
    let mcps = format!("mcps_{}", fake(32));
    let aws = "AKIAZ3MHF2QK7VXPLR4T".to_string();
    let github = format!("ghp_{}", fake(36));
    let jwt = format!("eyJhbGciOiJIUzI1NiJ9.eyJ{}.{}", fake(30), fake(43));
    let pem_body = fake(64);
    let pem = format!("-----BEGIN RSA PRIVATE KEY-----\n{pem_body}\n{}\n-----END RSA PRIVATE KEY-----", fake(60));
    let password = "correct-horse-battery-staple-42";
    let secrets = [mcps.as_str(), &aws, &github, &jwt, &pem_body, password];

    let log = AuditLog::open(&path, Options::default()).unwrap();
    let mut r = Record::new(EventKind::ToolCall);
    r.tool = Some("write_file".into());
    r.args = Some(json!({
        "path": "config.env",
        "content": format!("AWS_ACCESS_KEY_ID={aws}\nGITHUB={github}\n{pem}"),
        "password": password,
        "nested": {"list": [{"auth": jwt.clone()}, format!("token is {mcps}")]},
    }));
    r.outcome = Some(Outcome::Error);
    r.reason = Some(format!("write refused: {mcps} {github}"));
    r.result = Some(format!("Bearer {jwt} {aws}"));
    r.details = Some(json!({"note": pem.clone(), "db": {"password": password}}));
    log.append(r).wait().unwrap();

    // The same, through summarize_args (long content cut, still redacted).
    let mut r = Record::new(EventKind::ToolCall);
    r.tool = Some("write_file".into());
    let long = format!("{} {github} {aws} {}", "x".repeat(240), "y".repeat(2000));
    let args = json!({"path": "a", "content": long, "api_key": mcps.clone()});
    r.args = Some(summarize_args(args.as_object().unwrap()));
    r.outcome = Some(Outcome::Ok);
    r.result = Some(format!("{} {jwt}", "z".repeat(180)));
    log.append(r).wait().unwrap();

    let mut r = Record::new(EventKind::Grant);
    r.reason = Some(format!("granted for user with password={password}"));
    r.details = Some(json!({"token": mcps.clone(), "private_key": pem.clone()}));
    log.append(r).wait().unwrap();
    log.close();

    let text = std::fs::read_to_string(&path).unwrap();
    for secret in secrets {
        assert!(!text.contains(secret), "{secret} is in the log:\n{text}");
    }
    assert!(!text.contains("ghp_") && !text.contains("mcps_") && !text.contains("BEGIN RSA PRIVATE KEY"), "{text}");
    assert!(text.contains("[REDACTED"));
    // Still useful: the non-secret context stays, and the chain holds.
    assert!(text.contains("config.env"));
    assert_eq!(verify_ok(&path, None).records, 3);
}
