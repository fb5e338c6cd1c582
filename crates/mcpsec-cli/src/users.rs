//! `mcpsec users`: the users of the HTTP transport and their keys.

use std::io::Write;
use std::time::{Duration, SystemTime};

use anyhow::Result;
use clap::{Args, Subcommand};
use mcpsec_audit::{EventKind, Outcome};
use mcpsec_caps::{UserError, Users};
use mcpsec_core::time::rfc3339;
use secrecy::ExposeSecret;

use crate::tokens::State;
use crate::usage;

#[derive(Debug, Subcommand)]
pub enum UsersCommand {
    /// Add a user and print its key once (alone on stdout).
    Add(AddArgs),
    /// List the users (never their keys).
    List(ListArgs),
    /// Remove a user: its key stops working at once, also on a running server.
    Remove(RemoveArgs),
}

#[derive(Debug, Args)]
pub struct AddArgs {
    /// The user name (letters, digits, `.`, `_`, `-`, `@`).
    name: String,
    /// Print `{name, key, created_at}` as JSON.
    #[arg(long)]
    json: bool,
    /// Read the grant passphrase from stdin instead of the terminal.
    #[arg(long)]
    passphrase_stdin: bool,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Print a JSON array of `{name, created_at}`.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
pub struct RemoveArgs {
    /// The user name.
    name: String,
    /// Read the grant passphrase from stdin instead of the terminal.
    #[arg(long)]
    passphrase_stdin: bool,
}

fn users(state: &State) -> Users {
    state.tokens.users()
}

fn refused(e: UserError) -> anyhow::Error {
    match e {
        UserError::BadName(_) | UserError::Exists(_) | UserError::Unknown(_) => usage(e.to_string()),
        other => other.into(),
    }
}

fn created_at(ms: i64) -> String {
    rfc3339(SystemTime::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64))
}

pub fn run(state: &State, command: UsersCommand) -> Result<()> {
    match command {
        UsersCommand::Add(args) => add(state, args),
        UsersCommand::List(args) => list(state, args),
        UsersCommand::Remove(args) => remove(state, args),
    }
}

fn add(state: &State, args: AddArgs) -> Result<()> {
    // A user key opens the server to whoever holds it: minted by the same
    // human who may grant tokens.
    crate::tokens::require_passphrase(state, args.passphrase_stdin, "users add")?;
    let users = users(state);
    let new = users.add(&args.name, SystemTime::now()).map_err(refused)?;
    let mut r = crate::tokens::record(EventKind::UserAdd);
    r.outcome = Some(Outcome::Ok);
    r.details = Some(serde_json::json!({ "name": new.name }));
    if let Err(e) = crate::tokens::audit(state, r) {
        // A user that is not on record must not be able to call.
        let _ = users.remove(&new.name);
        return Err(e.context("the new user could not be recorded, so it was removed again"));
    }
    let mut out = std::io::stdout().lock();
    if args.json {
        let v = serde_json::json!({
            "name": new.name,
            "key": new.key.expose_secret(),
            "created_at": created_at(new.created_ms),
        });
        writeln!(out, "{v}")?;
    } else {
        writeln!(out, "{}", new.key.expose_secret())?;
        eprintln!(
            "added user {}; its key is shown once: give it to the client as `Authorization: Bearer <key>`",
            new.name
        );
    }
    Ok(())
}

fn list(state: &State, args: ListArgs) -> Result<()> {
    let all = users(state).list()?;
    let mut out = std::io::stdout().lock();
    if args.json {
        let items: Vec<_> =
            all.iter().map(|u| serde_json::json!({ "name": u.name, "created_at": created_at(u.created_ms) })).collect();
        writeln!(out, "{}", serde_json::Value::Array(items))?;
        return Ok(());
    }
    if all.is_empty() {
        eprintln!("no users; add one with `mcpsec users add NAME`");
        return Ok(());
    }
    let rows: Vec<Vec<String>> = all.iter().map(|u| vec![u.name.clone(), created_at(u.created_ms)]).collect();
    crate::table::print(&mut out, &["NAME", "CREATED"], &rows)?;
    Ok(())
}

fn remove(state: &State, args: RemoveArgs) -> Result<()> {
    crate::tokens::require_passphrase(state, args.passphrase_stdin, "users remove")?;
    users(state).remove(&args.name).map_err(refused)?;
    let mut r = crate::tokens::record(EventKind::UserRemove);
    r.outcome = Some(Outcome::Ok);
    r.details = Some(serde_json::json!({ "name": args.name }));
    crate::tokens::audit(state, r)?;
    eprintln!("removed user {}; its key no longer works", args.name);
    Ok(())
}
