//! The seccomp filter: system calls a confined program never needs, refused
//! with `EPERM` (not killed, so a program that probes them goes on).

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
};

/// The refused system calls, by name (for the docs and `mcpsec doctor`)
/// and number.
pub(crate) const REFUSED: &[(&str, i64)] = &[
    ("ptrace", libc::SYS_ptrace),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    ("process_vm_writev", libc::SYS_process_vm_writev),
    ("mount", libc::SYS_mount),
    ("umount2", libc::SYS_umount2),
    ("pivot_root", libc::SYS_pivot_root),
    ("fsopen", libc::SYS_fsopen),
    ("fsmount", libc::SYS_fsmount),
    ("move_mount", libc::SYS_move_mount),
    ("open_tree", libc::SYS_open_tree),
    ("bpf", libc::SYS_bpf),
    ("perf_event_open", libc::SYS_perf_event_open),
    ("keyctl", libc::SYS_keyctl),
    ("add_key", libc::SYS_add_key),
    ("request_key", libc::SYS_request_key),
    ("kexec_load", libc::SYS_kexec_load),
    ("kexec_file_load", libc::SYS_kexec_file_load),
    ("init_module", libc::SYS_init_module),
    ("finit_module", libc::SYS_finit_module),
    ("delete_module", libc::SYS_delete_module),
    ("io_uring_setup", libc::SYS_io_uring_setup),
    ("io_uring_enter", libc::SYS_io_uring_enter),
    ("io_uring_register", libc::SYS_io_uring_register),
    ("userfaultfd", libc::SYS_userfaultfd),
    ("personality", libc::SYS_personality),
];

/// Builds the filter; with `no_inet`, creating IPv4 and IPv6 sockets is
/// refused too (UDP is not ruled by Landlock before ABI 10).
pub(crate) fn filter(no_inet: bool) -> Result<BpfProgram, String> {
    let arch = std::env::consts::ARCH.try_into().map_err(|e| format!("seccomp: {e}"))?;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = REFUSED.iter().map(|(_, n)| (*n, Vec::new())).collect();
    if no_inet {
        let family = |af: i32| -> Result<SeccompRule, String> {
            let value = u64::try_from(af).map_err(|e| e.to_string())?;
            let cond = SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, value)
                .map_err(|e| e.to_string())?;
            SeccompRule::new(vec![cond]).map_err(|e| e.to_string())
        };
        rules.insert(libc::SYS_socket, vec![family(libc::AF_INET)?, family(libc::AF_INET6)?]);
    }
    let eperm = u32::try_from(libc::EPERM).map_err(|e| e.to_string())?;
    let filter = SeccompFilter::new(rules, SeccompAction::Allow, SeccompAction::Errno(eperm), arch)
        .map_err(|e| format!("seccomp: {e}"))?;
    filter.try_into().map_err(|e: seccompiler::BackendError| format!("seccomp: {e}"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    #[test]
    fn the_filter_compiles_with_and_without_the_socket_rule() {
        assert!(!super::filter(false).unwrap().is_empty());
        assert!(super::filter(true).unwrap().len() > super::filter(false).unwrap().len());
    }
}
