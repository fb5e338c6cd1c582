//! The guard pipeline in process: an [`McpsecServer`] driven by an rmcp
//! client over an in-memory duplex, with a temporary sandbox and audit
//! log; no binary is spawned. Each stage's refusals, and the order of the
//! records a call leaves (intent before the effect, the ending after).

#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mcpsec_caps::{Authorizer, GrantRequest, Tokens};
use mcpsec_core::{Capability, InjectionMode, Mode, Policy, Principal};
use mcpsec_pathguard::{Rules, Sandbox, SandboxOptions};
use mcpsec_server::ratelimit::Limits;
use mcpsec_server::{McpsecServer, ServerOptions};
use rmcp::model::{CallToolRequestParams, CallToolResult};
use rmcp::service::RunningService;
use rmcp::{RoleClient, ServiceExt};
use serde_json::{Value, json};

/// A server over a duplex, its root and its audit log.
struct Harness {
    client: RunningService<RoleClient, ()>,
    /// The token store, when the harness has one.
    tokens: Option<Arc<Tokens>>,
    root: tempfile::TempDir,
    log: PathBuf,
    _state: tempfile::TempDir,
}

/// The policy with `capability` set to `mode` (the rest as by default).
fn policy(changes: &[(Capability, Mode)]) -> Policy {
    let mut p = Policy::default();
    for (c, m) in changes {
        p.set(*c, *m);
    }
    p
}

impl Harness {
    async fn new(policy: Policy, calls: u32) -> Harness {
        Harness::build(policy, calls, false).await
    }

    /// A harness whose server has a token store, for `grant`.
    async fn with_tokens(policy: Policy) -> Harness {
        Harness::build(policy, 100, true).await
    }

    async fn build(policy: Policy, calls: u32, with_tokens: bool) -> Harness {
        let root = tempfile::tempdir().unwrap();
        let state = tempfile::tempdir().unwrap();
        let tokens = with_tokens.then(|| {
            let store = Arc::new(mcpsec_caps::store::SqliteStore::open(&state.path().join("caps.db")).unwrap());
            Arc::new(Tokens::new(store, mcpsec_caps::key::ServerKey::from_bytes([7; 32])))
        });
        let log = state.path().join("audit.jsonl");
        let options = SandboxOptions { rules: Rules::none(), max_read: 1 << 20 };
        let sandbox = Sandbox::open(&[root.path().to_path_buf()], options).unwrap();
        sandbox.write("hello.txt", b"hello").unwrap();
        sandbox.create_dir_all("notes").unwrap();
        let audit = Arc::new(mcpsec_audit::AuditLog::open(&log, mcpsec_audit::Options::default()).unwrap());
        let server = McpsecServer::new(ServerOptions {
            sandbox,
            shell: None,
            authorizer: Authorizer::new(policy, tokens.clone()),
            principal: Principal::new("tester"),
            audit,
            session: "0000000000000000".into(),
            limits: Limits { calls, window: Duration::from_secs(3600), tools: Vec::new() },
            injection: InjectionMode::Warn,
            undo: None,
        });
        let (ours, theirs) = tokio::io::duplex(1 << 16);
        tokio::spawn(async move {
            if let Ok(running) = server.serve(theirs).await {
                let _ = running.waiting().await;
            }
        });
        let client = ().serve(ours).await.unwrap();
        Harness { client, tokens, root, log, _state: state }
    }

    async fn call(&self, tool: &str, args: Value) -> Result<CallToolResult, rmcp::ServiceError> {
        let Value::Object(args) = args else { panic!("arguments must be an object") };
        self.client.call_tool(CallToolRequestParams::new(tool.to_owned()).with_arguments(args)).await
    }

    /// The tool-call records in the audit log, in order.
    fn records(&self) -> Vec<Value> {
        // The test's own audit log, not a tool call's file.
        #[allow(clippy::disallowed_methods)]
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines().map(|l| serde_json::from_str::<Value>(l).unwrap()).filter(|r| r["event"] == "tool_call").collect()
    }

    /// Mints a token as `mcpsec grant` does; returns the token.
    fn grant(&self, capability: Capability, paths: &[&str], uses: Option<u32>) -> String {
        use secrecy::ExposeSecret;
        let req = GrantRequest {
            capability,
            ttl: Duration::from_secs(600),
            paths: paths.iter().map(|p| (*p).to_owned()).collect(),
            uses,
            user: None,
            note: None,
        };
        let tokens = self.tokens.as_ref().expect("a harness with tokens");
        let (new, _) = tokens.grant(&req, Duration::from_secs(3600), std::time::SystemTime::now()).unwrap();
        new.token.expose_secret().to_owned()
    }

    /// Whether `name` exists in the root.
    fn exists(&self, name: &str) -> bool {
        self.root.path().join(name).symlink_metadata().is_ok()
    }
}

fn text(r: &CallToolResult) -> String {
    r.content.iter().filter_map(|c| c.as_text()).map(|t| t.text.clone()).collect::<Vec<_>>().join("\n")
}

fn outcomes(records: &[Value]) -> Vec<&str> {
    records.iter().map(|r| r["outcome"].as_str().unwrap_or("?")).collect()
}

#[tokio::test]
async fn a_read_is_answered_and_recorded_once_without_an_intent() {
    let h = Harness::new(Policy::default(), 100).await;
    let r = h.call("read_text_file", json!({ "path": "hello.txt" })).await.unwrap();
    assert_eq!(r.is_error, Some(false), "{}", text(&r));
    assert_eq!(text(&r), "hello");
    let records = h.records();
    assert_eq!(outcomes(&records), ["ok"], "{records:?}");
    assert!(records[0]["intent"].is_null(), "a read has no intent record: {records:?}");
}

#[tokio::test]
async fn admit_refuses_a_call_over_the_rate_limit_and_records_the_first_refusal() {
    let h = Harness::new(Policy::default(), 1).await;
    let first = h.call("read_text_file", json!({ "path": "hello.txt" })).await.unwrap();
    assert_eq!(first.is_error, Some(false), "{}", text(&first));
    let refused = h.call("read_text_file", json!({ "path": "hello.txt" })).await.unwrap();
    assert_eq!(refused.is_error, Some(true));
    assert!(text(&refused).contains("rate limit"), "{}", text(&refused));
    let records = h.records();
    assert_eq!(outcomes(&records), ["ok", "rate_limited"], "{records:?}");
}

#[tokio::test]
async fn resolve_refuses_an_unknown_tool_with_a_json_rpc_error_and_a_record() {
    let h = Harness::new(Policy::default(), 100).await;
    let e = h.call("no_such_tool", json!({})).await.unwrap_err();
    assert!(e.to_string().contains("unknown tool `no_such_tool`"), "{e}");
    let records = h.records();
    assert_eq!(outcomes(&records), ["invalid"], "{records:?}");
    assert_eq!(records[0]["tool"], "no_such_tool");
}

#[tokio::test]
async fn authorize_refuses_a_call_without_a_token_before_any_intent_or_effect() {
    let h = Harness::new(policy(&[(Capability::WriteFiles, Mode::Token)]), 100).await;
    let r = h.call("write_file", json!({ "path": "new.txt", "content": "x" })).await.unwrap();
    assert_eq!(r.is_error, Some(true));
    assert!(text(&r).contains("mcpsec grant"), "the refusal says what to run: {}", text(&r));
    assert!(!h.exists("new.txt"));
    let records = h.records();
    assert_eq!(outcomes(&records), ["denied"], "no intent record: {records:?}");
    assert_eq!(records[0]["capability"], "write_files");
}

#[tokio::test]
async fn authorize_refuses_a_confirmation_the_client_cannot_ask_for() {
    // `confirm` is the default for writes; this client offers no elicitation.
    let h = Harness::new(Policy::default(), 100).await;
    let r = h.call("write_file", json!({ "path": "new.txt", "content": "x" })).await.unwrap();
    assert_eq!(r.is_error, Some(true));
    assert!(!h.exists("new.txt"));
    let records = h.records();
    assert_eq!(outcomes(&records), ["denied"], "{records:?}");
    assert_eq!(records[0]["reason"], "confirmation unsupported by the client; no token");
}

#[tokio::test]
async fn a_denied_capability_is_refused_and_its_tool_not_listed() {
    let h = Harness::new(policy(&[(Capability::WriteFiles, Mode::Deny)]), 100).await;
    let listed = h.client.list_all_tools().await.unwrap();
    assert!(listed.iter().all(|t| t.name != "write_file"), "a denied tool is not listed");
    let r = h.call("write_file", json!({ "path": "new.txt", "content": "x" })).await.unwrap();
    assert_eq!(r.is_error, Some(true));
    assert!(!h.exists("new.txt"));
    assert_eq!(outcomes(&h.records()), ["denied"]);
}

#[tokio::test]
async fn a_mutating_call_records_its_intent_before_the_effect_and_its_ending_after() {
    let h = Harness::new(policy(&[(Capability::WriteFiles, Mode::Allow)]), 100).await;
    let r = h.call("write_file", json!({ "path": "new.txt", "content": "x" })).await.unwrap();
    assert_eq!(r.is_error, Some(false), "{}", text(&r));
    assert!(h.exists("new.txt"));
    let records = h.records();
    assert_eq!(outcomes(&records), ["pending", "ok"], "{records:?}");
    let (intent, ending) = (&records[0], &records[1]);
    assert!(intent["seq"].as_u64().is_some(), "{intent}");
    assert_eq!(ending["intent"], intent["seq"], "the ending names its intent record");
    assert!(ending["seq"].as_u64() > intent["seq"].as_u64());
}

#[tokio::test]
async fn execute_refusals_are_recorded_after_their_intent() {
    let h = Harness::new(policy(&[(Capability::WriteFiles, Mode::Allow)]), 100).await;
    // The path guard refuses: outside the root.
    let r = h.call("write_file", json!({ "path": "../outside.txt", "content": "x" })).await.unwrap();
    assert_eq!(r.is_error, Some(true));
    // Arguments that do not fit the tool's schema.
    let r = h.call("write_file", json!({ "path": "a.txt" })).await.unwrap();
    assert_eq!(r.is_error, Some(true));
    assert!(text(&r).contains("invalid arguments for `write_file`"), "{}", text(&r));
    let records = h.records();
    assert_eq!(outcomes(&records), ["pending", "denied", "pending", "invalid"], "{records:?}");
    assert_eq!(records[1]["intent"], records[0]["seq"]);
    assert_eq!(records[3]["intent"], records[2]["seq"]);
}

#[tokio::test]
async fn a_token_limited_to_paths_confines_execute_and_a_refused_call_gives_its_use_back() {
    let h = Harness::with_tokens(policy(&[(Capability::WriteFiles, Mode::Token)])).await;
    let token = h.grant(Capability::WriteFiles, &["notes/**"], Some(1));
    // Out of the token's paths: refused by the path guard during execute,
    // after the intent; the reserved use is given back.
    let r = h.call("write_file", json!({ "path": "outside.txt", "content": "x", "capability_token": token })).await;
    let r = r.unwrap();
    assert_eq!(r.is_error, Some(true));
    assert!(!h.exists("outside.txt"));
    // In them: the one use is still there.
    let args = json!({ "path": "notes/a.txt", "content": "x", "capability_token": token });
    let r = h.call("write_file", args.clone()).await.unwrap();
    assert_eq!(r.is_error, Some(false), "{}", text(&r));
    assert!(h.exists("notes/a.txt"));
    // And now it is spent.
    let r = h.call("write_file", args).await.unwrap();
    assert_eq!(r.is_error, Some(true));
    let records = h.records();
    assert_eq!(outcomes(&records), ["pending", "denied", "pending", "ok", "denied"], "{records:?}");
    assert!(
        records[1]["details"]["capability_use"].as_str().unwrap_or_default().starts_with("returned"),
        "{}",
        records[1]
    );
    assert!(records[3]["details"]["capability_use"].is_null(), "a call that acted keeps its use spent");
    assert!(records.iter().all(|r| !r.to_string().contains(&token)), "the token is never recorded");
}
