//! `mcpsec __confine-exec --policy JSON [--arg0 NAME] [--report] -- PROGRAM [ARGS...]`:
//! the hidden subcommand mcpsec re-executes itself with to start a confined
//! program. It applies the policy to its own (single-threaded) process, then
//! executes the program, which inherits every rule and cannot lift one.
//!
//! The policy comes from mcpsec, on the command line of this process, which
//! the program replaces: the program never sees it and cannot change it (a
//! nested `__confine-exec` only adds rules; Landlock domains stack). It
//! holds paths and limits, no secret. With `--report` the report of what
//! holds is printed as JSON instead of executing anything (`mcpsec doctor`).

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::process::ExitCode;

/// Exit code when the rules cannot be applied (the program did not run).
const CANNOT_CONFINE: u8 = 126;
/// Exit code when the program cannot be executed.
const CANNOT_EXEC: u8 = 127;

pub(crate) fn run(args: impl Iterator<Item = OsString>) -> ExitCode {
    match parse(args) {
        Ok(inv) => confine_and_exec(inv),
        Err(e) => {
            eprintln!("mcpsec {}: {e}", mcpsec_confine::SUBCOMMAND);
            ExitCode::from(2)
        }
    }
}

#[derive(Debug)]
struct Invocation {
    policy: mcpsec_confine::Policy,
    arg0: Option<OsString>,
    report: bool,
    program: Option<OsString>,
    args: Vec<OsString>,
}

fn parse(mut args: impl Iterator<Item = OsString>) -> Result<Invocation, String> {
    let (mut policy, mut arg0, mut report) = (None, None, false);
    while let Some(a) = args.next() {
        match a.to_str() {
            Some("--policy") => {
                let text = args.next().ok_or("--policy needs a value")?;
                let text = text.to_str().ok_or("--policy is not UTF-8")?;
                policy = Some(serde_json::from_str(text).map_err(|e| format!("--policy: {e}"))?);
            }
            Some("--arg0") => arg0 = Some(args.next().ok_or("--arg0 needs a value")?),
            Some("--report") => report = true,
            Some("--") => break,
            _ => return Err(format!("unexpected argument {a:?}")),
        }
    }
    let policy = policy.ok_or("--policy is required")?;
    let program = args.next();
    if program.is_none() && !report {
        return Err("no program after `--`".into());
    }
    Ok(Invocation { policy, arg0, report, program, args: args.collect() })
}

fn confine_and_exec(inv: Invocation) -> ExitCode {
    if inv.policy.mode == mcpsec_confine::Mode::Off {
        eprintln!("mcpsec: confinement is off; {} is not used then", mcpsec_confine::SUBCOMMAND);
        return ExitCode::from(CANNOT_CONFINE);
    }
    let report = match mcpsec_confine::apply(&inv.policy) {
        Ok(report) => report,
        Err(e) => {
            let program = inv.program.as_deref().map(|p| p.to_string_lossy().into_owned()).unwrap_or_default();
            eprintln!("mcpsec: `{program}` was not started: {e}");
            return ExitCode::from(CANNOT_CONFINE);
        }
    };
    if inv.report {
        #[allow(clippy::print_stdout)]
        {
            println!("{}", serde_json::to_string(&report).unwrap_or_default());
        }
        return ExitCode::SUCCESS;
    }
    let Some(program) = inv.program else { return ExitCode::from(2) };
    let mut cmd = std::process::Command::new(&program);
    cmd.args(&inv.args);
    if let Some(arg0) = &inv.arg0 {
        cmd.arg0(arg0);
    }
    let e = cmd.exec();
    eprintln!("mcpsec: could not execute `{}`: {e}", program.to_string_lossy());
    ExitCode::from(CANNOT_EXEC)
}
