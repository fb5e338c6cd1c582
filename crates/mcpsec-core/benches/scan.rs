//! Throughput of the untrusted-content scanner on ordinary text (this repository's own
//! source and prose, repeated to about 1 MiB). Goal: ≥ 200 MB/s, so that scanning a 10 MiB
//! read is not noticeable.
//!
//! `cargo bench -p mcpsec-core --bench scan`.

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use mcpsec_core::scan;

const CORPUS: &[&str] = &[
    include_str!("../../mcpsec-pathguard/src/sandbox.rs"),
    include_str!("../../mcpsec-server/src/tools/mod.rs"),
    include_str!("../../mcpsec-audit/src/log.rs"),
    include_str!("../../../README.md"),
    include_str!("../../../SECURITY.md"),
    include_str!("../../../ARCHITECTURE.md"),
    include_str!("../../../docs/audit-format.md"),
];

/// Non-ASCII prose: typographic punctuation, accents, CJK, emoji.
const UNICODE_PROSE: &str = "“Quoted” text — with dashes… café, naïve, Straße; 日本語のテキスト、\
    中文文本。 Emoji 👍🏽 and ❤️. Ещё немного кириллицы. ";

fn repeat_to(parts: &[&str], size: usize) -> String {
    let mut text = String::with_capacity(size + 64 * 1024);
    while text.len() < size {
        for part in parts {
            text.push_str(part);
        }
    }
    text
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("scan");
    let mixed = repeat_to(CORPUS, 1 << 20);
    let unicode = repeat_to(&[UNICODE_PROSE], 1 << 20);
    for (name, text) in [("source and prose, 1 MiB", &mixed), ("non-ASCII prose, 1 MiB", &unicode)] {
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(name, |b| b.iter(|| scan::scan(black_box(text))));
    }
    group.finish();
    // What the gateway runs over every text an upstream returns, before the
    // scan: ordinary text has nothing to remove.
    let mut group = c.benchmark_group("sanitize");
    for (name, text) in [("source and prose, 1 MiB", &mixed), ("non-ASCII prose, 1 MiB", &unicode)] {
        group.throughput(Throughput::Bytes(text.len() as u64));
        group.bench_function(name, |b| b.iter(|| scan::sanitize(black_box(text))));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
