//! `mcpsec completions SHELL` and `mcpsec man --out DIR`: generated from the
//! clap definition itself, so they cannot drift from the real flags.

// Writing the man pages into the directory the human names: not a tool call.
#![allow(clippy::disallowed_methods)]

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::{Args, CommandFactory};
use clap_complete::Shell;

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// bash, zsh, fish, powershell or elvish
    #[arg(value_enum)]
    shell: Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// The directory to write mcpsec.1, mcpsec-grant.1, … into (created if missing)
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
}

pub fn completions(args: CompletionsArgs) -> Result<()> {
    let mut cmd = crate::Cli::command();
    clap_complete::generate(args.shell, &mut cmd, "mcpsec", &mut std::io::stdout().lock());
    Ok(())
}

pub fn man(args: ManArgs) -> Result<()> {
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    clap_mangen::generate_to(crate::Cli::command(), &args.out)
        .with_context(|| format!("writing man pages into {}", args.out.display()))?;
    eprintln!("man pages written to {}", args.out.display());
    Ok(())
}
