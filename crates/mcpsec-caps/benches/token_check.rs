//! The per-call cost of checking a capability token once it has been seen
//! (the server's hot path in `token` mode). Goal: ≤ 5 µs.
//!
//! `cargo bench -p mcpsec-caps` (also run by `cargo xtask bench`).

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use criterion::{Criterion, criterion_group, criterion_main};
use mcpsec_caps::key::ServerKey;
use mcpsec_caps::store::SqliteStore;
use mcpsec_caps::{GrantRequest, Tokens};
use mcpsec_core::Capability;

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(&dir.path().join("mcpsec.db")).expect("store");
    let tokens = Tokens::new(Arc::new(store), ServerKey::from_bytes([7; 32]));
    let now = SystemTime::now();
    let req = |uses| GrantRequest {
        capability: Capability::DeleteFiles,
        ttl: Duration::from_secs(3600),
        paths: vec!["notes/**".into()],
        uses,
        user: None,
        note: None,
    };
    let (unlimited, _) = tokens.grant(&req(None), Duration::from_secs(3600), now).expect("grant");
    let (limited, _) = tokens.grant(&req(Some(u32::MAX)), Duration::from_secs(3600), now).expect("grant");
    // Seen once: the record is cached until the database changes.
    tokens.check(&unlimited.token, Capability::DeleteFiles, "alice", now).expect("valid");
    c.bench_function("token check (seen, unlimited uses)", |b| {
        b.iter(|| tokens.check(&unlimited.token, Capability::DeleteFiles, "alice", now).expect("valid"))
    });
    c.bench_function("token check (seen, counted uses: one UPDATE)", |b| {
        b.iter(|| tokens.check(&limited.token, Capability::DeleteFiles, "alice", now).expect("valid"))
    });
    let bogus = mcpsec_caps::token::generate().expect("token").token;
    c.bench_function("token check (unknown token)", |b| {
        b.iter(|| tokens.check(&bogus, Capability::DeleteFiles, "alice", now).expect_err("unknown"))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
