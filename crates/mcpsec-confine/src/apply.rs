//! Applying a [`Policy`] to the current process, and deciding whether what
//! holds is enough.

use std::path::Path;

use landlock::{
    ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, NetPort, PathBeneath, PathFd, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, Scope,
};
use rustix::process::{Resource, Rlimit};

use crate::grants::DEVICES_WRITE;
use crate::{ConfineError, Enforced, Limits, Mode, Network, Policy, Report};

/// The Landlock ABI whose rules mcpsec asks for (the kernels here report 7).
const ABI_WANTED: ABI = ABI::V7;

/// What the kernel put in place, before the decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// The Landlock ABI in effect (0: none).
    pub abi: u32,
    /// How much of the Landlock ruleset holds.
    pub landlock: Enforced,
    /// Whether the policy asked for network rules (not `network = "all"`).
    pub network_ruled: bool,
    /// `no_new_privs` set.
    pub no_new_privs: bool,
    /// Why the seccomp filter is not installed, if it is not.
    pub seccomp: Option<String>,
    /// The limits that could not be set.
    pub limits: Vec<String>,
}

/// Confines the current process (and what it executes) by `policy`.
///
/// Call it from a single-threaded process right before `exec`: Landlock
/// and seccomp apply to the calling thread. In [`Mode::Required`] an `Err`
/// means the program must not be executed.
pub fn apply(policy: &Policy) -> Result<Report, ConfineError> {
    let limits = set_limits(&policy.limits);
    let no_new_privs = rustix::thread::set_no_new_privs(true).is_ok();
    let pretend = cfg!(debug_assertions) && policy.test_only_pretend_no_landlock;
    let (abi, landlock) = if pretend { (0, Enforced::No) } else { landlock(policy)? };
    let seccomp = crate::seccomp::filter(policy.network == Network::None)
        .and_then(|prog| seccompiler::apply_filter(&prog).map_err(|e| format!("seccomp: {e}")))
        .err();
    decide(
        policy.mode,
        &Facts { abi, landlock, network_ruled: policy.network != Network::All, no_new_privs, seccomp, limits },
    )
}

/// Whether what holds is enough for `mode`, and the report of it.
pub fn decide(mode: Mode, f: &Facts) -> Result<Report, ConfineError> {
    let mut missing = Vec::new();
    match f.landlock {
        Enforced::Full => {}
        Enforced::No => missing.push(format!(
            "Landlock is not available on this kernel (ABI {}): files{} are not confined",
            f.abi,
            if f.network_ruled { ", TCP and signals" } else { " and signals" }
        )),
        Enforced::Partial => {
            let mut parts = Vec::new();
            if f.abi < 5 {
                parts.push("some file rights (truncate, refer, device ioctl: ABI 2, 3, 5)");
            }
            if f.abi < 4 && f.network_ruled {
                parts.push("TCP rules (ABI 4)");
            }
            if f.abi < 6 {
                parts.push("scoping of signals and abstract UNIX sockets (ABI 6)");
            }
            if parts.is_empty() {
                parts.push("part of the ruleset");
            }
            missing.push(format!("Landlock ABI {} lacks {}", f.abi, parts.join(", ")));
        }
    }
    if !f.no_new_privs {
        missing.push("no_new_privs could not be set".into());
    }
    if let Some(e) = &f.seccomp {
        missing.push(format!("the seccomp filter is not installed ({e})"));
    }
    for l in &f.limits {
        missing.push(format!("resource limit {l} could not be set"));
    }
    if mode == Mode::Required && !missing.is_empty() {
        return Err(ConfineError::NotEnforced { missing });
    }
    Ok(Report {
        landlock_abi: f.abi,
        landlock: f.landlock,
        no_new_privs: f.no_new_privs,
        seccomp: f.seccomp.is_none(),
        limits: f.limits.is_empty(),
        missing,
    })
}

/// What this kernel would enforce of a policy with `network`, without
/// confining anything: the decision [`apply`] would make, taken ahead (at
/// start-up). `pretend_no_landlock` is the tests' switch.
pub fn probe(mode: Mode, network: &Network, pretend_no_landlock: bool) -> Result<Report, ConfineError> {
    let abi = if cfg!(debug_assertions) && pretend_no_landlock { 0 } else { probe_abi() };
    let network_ruled = *network != Network::All;
    let landlock = match abi {
        0 => Enforced::No,
        6.. => Enforced::Full,
        _ => Enforced::Partial,
    };
    let seccomp = crate::seccomp::filter(*network == Network::None).err();
    decide(mode, &Facts { abi, landlock, network_ruled, no_new_privs: true, seccomp, limits: Vec::new() })
}

/// The highest Landlock ABI (1 to 6) whose rules this kernel fully
/// supports; 6 covers everything mcpsec asks for. 0: no Landlock.
fn probe_abi() -> u32 {
    for (n, abi) in [(6, ABI::V6), (5, ABI::V5), (4, ABI::V4), (3, ABI::V3), (2, ABI::V2), (1, ABI::V1)] {
        let attempt = || -> Result<(), landlock::RulesetError> {
            let mut rs = Ruleset::default().set_compatibility(CompatLevel::HardRequirement);
            rs = rs.handle_access(AccessFs::from_all(abi))?;
            if n >= 4 {
                rs = rs.handle_access(AccessNet::from_all(abi))?;
            }
            if n >= 6 {
                rs = rs.scope(Scope::from_all(abi))?;
            }
            rs.create().map(drop)
        };
        if attempt().is_ok() {
            return n;
        }
    }
    0
}

/// Builds and enforces the Landlock ruleset; returns the ABI in effect and
/// how much holds.
fn landlock(policy: &Policy) -> Result<(u32, Enforced), ConfineError> {
    let fail = |e: landlock::RulesetError| ConfineError::Failed(format!("Landlock: {e}"));
    let all = AccessFs::from_all(ABI_WANTED);
    let read = AccessFs::from_read(ABI_WANTED);
    let mut rs = Ruleset::default().set_compatibility(CompatLevel::BestEffort).handle_access(all).map_err(fail)?;
    if policy.network != Network::All {
        rs = rs.handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp).map_err(fail)?;
    }
    rs = rs.scope(Scope::AbstractUnixSocket | Scope::Signal).map_err(fail)?;
    let mut created = rs.create().map_err(fail)?;
    let grants = policy
        .read
        .iter()
        .map(|p| (p.as_path(), read))
        .chain(policy.write.iter().map(|p| (p.as_path(), all)))
        .chain(DEVICES_WRITE.iter().map(|p| (Path::new(*p), all)));
    for (path, access) in grants {
        // A path that is gone grants nothing.
        let Ok(fd) = PathFd::new(path) else { continue };
        let access = if is_dir(path) { access } else { access & AccessFs::from_file(ABI_WANTED) };
        created = created.add_rule(PathBeneath::new(fd, access)).map_err(fail)?;
    }
    if let Network::Ports(ports) = &policy.network {
        for port in ports {
            created = created.add_rule(NetPort::new(*port, AccessNet::ConnectTcp)).map_err(fail)?;
        }
    }
    let status = created.restrict_self().map_err(fail)?;
    let abi = ABI::from(status.landlock).to_string().parse().unwrap_or(0);
    let enforced = match status.ruleset {
        RulesetStatus::FullyEnforced => Enforced::Full,
        RulesetStatus::PartiallyEnforced => Enforced::Partial,
        RulesetStatus::NotEnforced => Enforced::No,
    };
    Ok((abi, enforced))
}

// Setting up the child's own rules, not a tool call.
#[allow(clippy::disallowed_methods)]
fn is_dir(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| m.is_dir())
}

/// Sets the limits (never raising one); returns those that failed.
fn set_limits(l: &Limits) -> Vec<String> {
    let mut failed = Vec::new();
    for (name, res, value) in [
        ("RLIMIT_CORE", Resource::Core, 0),
        ("RLIMIT_NOFILE", Resource::Nofile, l.open_files),
        ("RLIMIT_NPROC", Resource::Nproc, l.processes),
        ("RLIMIT_FSIZE", Resource::Fsize, l.file_size),
        ("RLIMIT_AS", Resource::As, l.address_space),
    ] {
        let hard = rustix::process::getrlimit(res).maximum;
        let value = hard.map_or(value, |h| h.min(value));
        if rustix::process::setrlimit(res, Rlimit { current: Some(value), maximum: Some(value) }).is_err() {
            failed.push(name.to_owned());
        }
    }
    failed
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn facts(abi: u32, landlock: Enforced) -> Facts {
        Facts { abi, landlock, network_ruled: true, no_new_privs: true, seccomp: None, limits: Vec::new() }
    }

    #[test]
    fn required_accepts_only_everything() {
        let r = decide(Mode::Required, &facts(7, Enforced::Full)).unwrap();
        assert!(r.missing.is_empty() && r.seccomp && r.limits);
        let e = decide(Mode::Required, &facts(0, Enforced::No)).unwrap_err().to_string();
        assert!(e.contains("Landlock is not available") && e.contains("mcpsec doctor"), "{e}");
        let e = decide(Mode::Required, &facts(3, Enforced::Partial)).unwrap_err().to_string();
        assert!(e.contains("TCP rules (ABI 4)") && e.contains("ABI 6"), "{e}");
        let mut f = facts(7, Enforced::Full);
        f.seccomp = Some("seccomp: EINVAL".into());
        f.limits = vec!["RLIMIT_AS".into()];
        let e = decide(Mode::Required, &f).unwrap_err().to_string();
        assert!(e.contains("seccomp filter is not installed") && e.contains("RLIMIT_AS"), "{e}");
    }

    #[test]
    fn best_effort_reports_what_is_missing() {
        let r = decide(Mode::BestEffort, &facts(5, Enforced::Partial)).unwrap();
        assert_eq!(r.missing.len(), 1);
        assert!(r.missing[0].contains("scoping of signals"), "{:?}", r.missing);
        let r = decide(Mode::BestEffort, &facts(0, Enforced::No)).unwrap();
        assert!(r.missing[0].contains("not available"));
    }

    /// This kernel: the machines mcpsec is developed on report ABI 7.
    #[test]
    fn this_kernel_supports_every_rule_or_says_why_not() {
        let abi = probe_abi();
        println!("Landlock: every rule up to ABI {abi} is supported");
        match probe(Mode::Required, &Network::None, false) {
            Ok(r) => assert_eq!((r.landlock, abi), (Enforced::Full, 6)),
            Err(e) => {
                println!("this kernel cannot confine fully: {e}");
                assert!(abi < 6);
            }
        }
        let e = probe(Mode::Required, &Network::None, true).unwrap_err().to_string();
        assert!(e.contains("not available"), "{e}");
    }
}
