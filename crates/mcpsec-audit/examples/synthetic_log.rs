//! Writes a valid synthetic audit log: `synthetic_log PATH N` (used by
//! `cargo xtask bench` for the verify and grep runs).

use std::io::BufWriter;

fn main() -> std::io::Result<()> {
    let mut args = std::env::args().skip(1);
    let (Some(path), Some(n)) = (args.next(), args.next().and_then(|n| n.parse::<u64>().ok())) else {
        eprintln!("usage: synthetic_log PATH N");
        std::process::exit(2);
    };
    let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(path)?);
    mcpsec_audit::record::write_synthetic(&mut out, n)?;
    Ok(())
}
