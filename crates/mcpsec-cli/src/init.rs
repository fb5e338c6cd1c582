//! `mcpsec init`: the commented default config, the state directory, and
//! (on a terminal) the offer of a grant passphrase.

// mcpsec's own config file, state directory and terminal: not tool calls.
#![allow(clippy::disallowed_methods)]

use std::io::{BufRead, IsTerminal, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use mcpsec_core::Config;

use crate::{Global, tokens, usage};

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Overwrite an existing config file with the commented defaults
    #[arg(long)]
    force: bool,
    /// Set (or replace) the grant passphrase; asked on the terminal
    #[arg(long)]
    passphrase: bool,
    /// Read the new grant passphrase from standard input
    #[arg(long, conflicts_with = "passphrase")]
    passphrase_stdin: bool,
}

pub fn run(global: &Global, args: InitArgs) -> Result<()> {
    let target = match &global.config {
        Some(p) => std::env::current_dir().context("reading the current directory")?.join(p),
        None => crate::default_config_path()
            .ok_or_else(|| usage("no place for the config file: pass --config FILE (HOME is not set)"))?,
    };
    let only_passphrase = args.passphrase || args.passphrase_stdin;
    let exists = target.symlink_metadata().is_ok();
    let config = if exists && !args.force {
        if !only_passphrase {
            bail!(
                "{} already exists; `mcpsec init --force` overwrites it with the commented defaults \
                 (`mcpsec init --passphrase` only sets the grant passphrase)",
                target.display()
            );
        }
        eprintln!("config file {} exists; left as it is", target.display());
        crate::load_config(&Global { config: Some(target.clone()), state_dir: global.state_dir.clone() })?.0
    } else {
        write_config(&target, args.force)?;
        eprintln!(
            "{} {} (every key with its default, commented)",
            if exists { "overwrote" } else { "wrote" },
            target.display()
        );
        Config::default()
    };

    let dir = crate::state_dir(global)?;
    crate::ensure_state_dir(&dir)?;
    let state =
        tokens::State { tokens: tokens::open_tokens(&dir)?, audit_path: crate::audit_path(&dir, &config), config };
    eprintln!("state directory ready: {} (mode 0700)", dir.display());

    if only_passphrase {
        return tokens::set_passphrase(&state, args.passphrase_stdin);
    }
    if tokens::passphrase_is_set(&state)? {
        eprintln!("a grant passphrase is set (`mcpsec init --passphrase` changes it)");
        return Ok(());
    }
    if std::io::stdin().is_terminal()
        && ask_yes("set a grant passphrase now, so that a model with shell access cannot mint tokens? [Y/n] ")?
    {
        return tokens::set_passphrase(&state, false);
    }
    eprintln!("no grant passphrase is set: anyone who can run `mcpsec grant` as you can mint tokens.");
    eprintln!("set one with `mcpsec init --passphrase` so that a model with shell access cannot.");
    Ok(())
}

/// Writes the commented default config: a new file, or with `force` a
/// replacement (temporary file and rename, so a reader never sees half).
fn write_config(target: &Path, force: bool) -> Result<()> {
    if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    let text = mcpsec_core::reference::default_config_toml();
    let write = |path: &Path| -> Result<()> {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("creating {}", path.display()))?;
        f.write_all(text.as_bytes()).and_then(|()| f.sync_all()).with_context(|| format!("writing {}", path.display()))
    };
    if !force {
        // create_new: a file that appeared since we looked is not overwritten.
        return write(target);
    }
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp: PathBuf = target.with_file_name(format!(".{name}.tmp-{}", std::process::id()));
    write(&tmp)?;
    std::fs::rename(&tmp, target).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })?;
    Ok(())
}

/// Asks a yes/no question on the terminal; yes unless the answer starts with n.
fn ask_yes(question: &str) -> Result<bool> {
    let tty = std::fs::OpenOptions::new().read(true).write(true).open("/dev/tty").context("opening the terminal")?;
    let mut out = &tty;
    write!(out, "{question}")?;
    out.flush()?;
    let mut line = String::new();
    std::io::BufReader::new(&tty).read_line(&mut line)?;
    Ok(!line.trim_start().to_ascii_lowercase().starts_with('n'))
}
