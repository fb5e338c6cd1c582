//! Code layout of the release binary: the functions the stdio server runs
//! (`hot-symbols.txt`, written by `cargo xtask hot-symbols`) are placed
//! first in `.text`, so they share a few of the 64 KiB windows the kernel
//! maps around each fault instead of touching most of the binary. It took
//! the stdio server's peak RSS from 13.7–15.6 MiB to 9.2–9.7 MiB
//! (BENCHMARKS.md, "Code layout").
//!
//! `--symbol-ordering-file` is LLD's, and GNU ld refuses it, so it is only
//! passed where rustc links with its own LLD: x86_64 Linux, rustc 1.90 or
//! later, rust-lld in the toolchain, and no linker chosen in the cargo
//! config or flags. `MCPSEC_NO_SYMBOL_ORDERING=1` turns it off anyway.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let list = Path::new(env!("CARGO_MANIFEST_DIR")).join("hot-symbols.txt");
    println!("cargo:rerun-if-changed={}", list.display());
    for var in ["MCPSEC_NO_SYMBOL_ORDERING", "CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER", "RUSTC_LINKER"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let release = std::env::var("PROFILE").is_ok_and(|p| p == "release");
    let off = std::env::var_os("MCPSEC_NO_SYMBOL_ORDERING").is_some_and(|v| !v.is_empty() && v != "0");
    if release && !off && list.exists() && links_with_rust_lld() {
        // `-Xlinker`, not `-Wl,`: a comma in the checkout's path would split the argument.
        println!("cargo:rustc-link-arg-bin=mcpsec=-Xlinker");
        println!("cargo:rustc-link-arg-bin=mcpsec=--symbol-ordering-file={}", list.display());
        // Functions renamed since the list was written are skipped silently
        // (`.ci/run` reports how many were found).
        println!("cargo:rustc-link-arg-bin=mcpsec=-Xlinker");
        println!("cargo:rustc-link-arg-bin=mcpsec=--no-warn-symbol-ordering");
    }
}

/// Whether the final link is rustc's self-contained LLD (its default on
/// x86_64 Linux since 1.90) and nobody chose another linker.
fn links_with_rust_lld() -> bool {
    if std::env::var("TARGET").as_deref() != Ok("x86_64-unknown-linux-gnu") {
        return false;
    }
    if std::env::var_os("CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_LINKER").is_some()
        || std::env::var_os("RUSTC_LINKER").is_some()
    {
        return false;
    }
    let flags = std::env::var("CARGO_ENCODED_RUSTFLAGS").unwrap_or_default();
    if flags.contains("linker") || flags.contains("fuse-ld") || flags.contains("link-self-contained") {
        return false;
    }
    let rustc = std::env::var_os("RUSTC").map_or_else(|| PathBuf::from("rustc"), PathBuf::from);
    let output = |args: &[&str]| {
        Command::new(&rustc)
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .and_then(|o| String::from_utf8(o.stdout).ok())
    };
    let minor = output(&["-V"]).and_then(|v| {
        let version = v.split_whitespace().nth(1)?.to_owned();
        let mut parts = version.split('.');
        (parts.next()? == "1").then_some(())?;
        parts.next()?.parse::<u32>().ok()
    });
    if minor.is_none_or(|m| m < 90) {
        return false;
    }
    let sysroot = output(&["--print", "sysroot"]).map(|s| PathBuf::from(s.trim()));
    sysroot.is_some_and(|s| s.join("lib/rustlib/x86_64-unknown-linux-gnu/bin/gcc-ld/ld.lld").exists())
}
