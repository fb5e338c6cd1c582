//! `cargo xtask docs`: the documents generated from the code.
//!
//! `docs/configuration.md` comes from `mcpsec_core::reference`, the one
//! table that also gives `mcpsec init` its commented config. The test below
//! fails when a committed document is stale (`cargo xtask docs`, or
//! `UPDATE_SNAPSHOTS=1 cargo test -p xtask`, rewrites it).

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// The workspace root.
pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().map(Path::to_path_buf).unwrap_or_default()
}

/// Every generated document: (path relative to the root, content).
fn generated() -> Vec<(&'static str, String)> {
    vec![("docs/configuration.md", mcpsec_core::reference::reference_markdown())]
}

pub fn run() -> Result<()> {
    for (rel, content) in generated() {
        let path = root().join(rel);
        std::fs::write(&path, content).with_context(|| format!("writing {}", path.display()))?;
        eprintln!("wrote {rel}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn generated_docs_are_fresh() {
        let update = std::env::var_os("UPDATE_SNAPSHOTS").is_some();
        // In CI a rewrite would make this test pass whatever the code says.
        let ci = std::env::var_os("CI").is_some_and(|v| !v.is_empty() && v != "0" && v != "false");
        assert!(!(update && ci), "UPDATE_SNAPSHOTS is set in CI: run `cargo xtask docs` locally and commit the result");
        for (rel, content) in super::generated() {
            let path = super::root().join(rel);
            if update {
                std::fs::write(&path, &content).unwrap();
                continue;
            }
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            assert!(committed == content, "{rel} is stale: run `cargo xtask docs` and commit it");
        }
    }
}
