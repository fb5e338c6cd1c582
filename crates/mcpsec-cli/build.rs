//! Code layout of the release binary: the functions the stdio server runs
//! (`hot-symbols.txt`, written by `cargo xtask hot-symbols`) are placed
//! first in `.text`, so they share a few of the 64 KiB windows the kernel
//! maps around each fault instead of touching most of the binary. It took
//! the stdio server's peak RSS from 13.7–16.2 MiB to 10.8–11.4 MiB
//! (BENCHMARKS.md, "Code layout"). Only where rustc links with its LLD (the
//! default on x86_64 Linux); `MCPSEC_NO_SYMBOL_ORDERING=1` turns it off for
//! a build with another linker.

fn main() {
    let list = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("hot-symbols.txt");
    println!("cargo:rerun-if-changed={}", list.display());
    println!("cargo:rerun-if-env-changed=MCPSEC_NO_SYMBOL_ORDERING");
    let release = std::env::var("PROFILE").is_ok_and(|p| p == "release");
    let lld = std::env::var("TARGET").is_ok_and(|t| t == "x86_64-unknown-linux-gnu");
    let off = std::env::var_os("MCPSEC_NO_SYMBOL_ORDERING").is_some_and(|v| !v.is_empty() && v != "0");
    if release && lld && !off && list.exists() {
        println!("cargo:rustc-link-arg-bin=mcpsec=-Wl,--symbol-ordering-file={}", list.display());
        // Functions renamed since the list was written are skipped silently.
        println!("cargo:rustc-link-arg-bin=mcpsec=-Wl,--no-warn-symbol-ordering");
    }
}
