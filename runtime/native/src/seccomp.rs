//! The seccomp-bpf filters the init helper installs before it executes bash.
//!
//! Namespaces and Landlock decide *what* bash can reach; seccomp shrinks the kernel
//! attack surface that code inside can poke at, and closes the doors that would let
//! it re-arrange its own confinement. A tool never needs any of the calls below, so
//! they fail with `EPERM` (a clean error, not a crash, so `mount`, `unshare`,
//! `strace` and friends print an ordinary "Operation not permitted"):
//!
//! * mounts and root changes (`mount`, `umount2`, `pivot_root`, `chroot`, the new
//!   mount API `fsopen`/`fsmount`/`fsconfig`/`fspick`/`move_mount`/`open_tree`/
//!   `mount_setattr`): the mount namespace bubblewrap built must stay as built;
//! * namespace changes (`unshare`, `setns`, and `clone` with any `CLONE_NEW*` flag):
//!   a nested user namespace would hand out fresh capabilities;
//! * debugging and cross-process memory (`ptrace`, `process_vm_readv/writev`,
//!   `pidfd_getfd`, `kcmp`);
//! * kernel-wide state (`kexec_*`, module loading, `reboot`, `swapon/off`, `acct`,
//!   `syslog`, `quotactl`, clock setting, `sethostname`/`setdomainname`);
//! * large attack surfaces rarely needed by tools (`bpf`, `perf_event_open`,
//!   `userfaultfd`, `keyctl`/`add_key`/`request_key`, `io_uring_*`,
//!   `open_by_handle_at`/`name_to_handle_at` — the classic container escape —,
//!   `fanotify_init`, `uselib`, `iopl`/`ioperm`);
//! * terminal injection (`ioctl(TIOCSTI)`, `ioctl(TIOCLINUX)`).
//!
//! A second, hand-written filter answers `clone3` with `ENOSYS` (its flags live in
//! memory that seccomp cannot inspect; glibc then falls back to `clone`, whose flags
//! the first filter checks) and, on x86-64, every x32-ABI syscall number. A syscall
//! made with another architecture's convention (i386 `int 0x80`) kills the process:
//! seccompiler's architecture check does that.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch, sock_filter,
};

/// Errors building or installing the filters.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// The architecture is not one seccompiler supports.
    #[error("unsupported architecture {0}")]
    Arch(String),
    /// Filter construction or installation failed.
    #[error("seccomp: {0}")]
    Seccomp(#[from] seccompiler::Error),
    /// A rule could not be built.
    #[error("seccomp rule: {0}")]
    Backend(#[from] seccompiler::BackendError),
}

/// The syscalls denied outright.
fn denied_syscalls() -> Vec<i64> {
    // `c_long` is `i64` on every architecture seccompiler supports.
    let mut v: Vec<i64> = vec![
        libc::SYS_mount,
        libc::SYS_umount2,
        libc::SYS_pivot_root,
        libc::SYS_chroot,
        libc::SYS_fsopen,
        libc::SYS_fsconfig,
        libc::SYS_fsmount,
        libc::SYS_fspick,
        libc::SYS_move_mount,
        libc::SYS_open_tree,
        libc::SYS_mount_setattr,
        libc::SYS_unshare,
        libc::SYS_setns,
        libc::SYS_ptrace,
        libc::SYS_process_vm_readv,
        libc::SYS_process_vm_writev,
        libc::SYS_pidfd_getfd,
        libc::SYS_kcmp,
        libc::SYS_kexec_load,
        libc::SYS_kexec_file_load,
        libc::SYS_init_module,
        libc::SYS_finit_module,
        libc::SYS_delete_module,
        libc::SYS_reboot,
        libc::SYS_swapon,
        libc::SYS_swapoff,
        libc::SYS_acct,
        libc::SYS_syslog,
        libc::SYS_quotactl,
        libc::SYS_settimeofday,
        libc::SYS_clock_settime,
        libc::SYS_clock_adjtime,
        libc::SYS_adjtimex,
        libc::SYS_sethostname,
        libc::SYS_setdomainname,
        libc::SYS_bpf,
        libc::SYS_perf_event_open,
        libc::SYS_userfaultfd,
        libc::SYS_keyctl,
        libc::SYS_add_key,
        libc::SYS_request_key,
        libc::SYS_io_uring_setup,
        libc::SYS_io_uring_enter,
        libc::SYS_io_uring_register,
        libc::SYS_open_by_handle_at,
        libc::SYS_name_to_handle_at,
        libc::SYS_fanotify_init,
        libc::SYS_vhangup,
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([libc::SYS_uselib, libc::SYS_iopl, libc::SYS_ioperm]);
    v
}

/// All `CLONE_NEW*` flags.
const NAMESPACE_FLAGS: [u64; 8] = [
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWCGROUP as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    0x80, // CLONE_NEWTIME
];

fn target_arch() -> Result<TargetArch, SeccompError> {
    TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|_| SeccompError::Arch(std::env::consts::ARCH.to_owned()))
}

/// The main deny-list filter (`EPERM`).
pub fn deny_filter() -> Result<BpfProgram, SeccompError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for nr in denied_syscalls() {
        rules.insert(nr, Vec::new());
    }
    let clone_rules = NAMESPACE_FLAGS
        .iter()
        .map(|flag| {
            SeccompRule::new(vec![SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(*flag),
                *flag,
            )?])
        })
        .collect::<Result<Vec<_>, _>>()?;
    rules.insert(libc::SYS_clone, clone_rules);
    let ioctl_rules = [libc::TIOCSTI, 0x541c /* TIOCLINUX */]
        .iter()
        .map(|req| {
            SeccompRule::new(vec![SeccompCondition::new(
                1,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::Eq,
                u64::from(*req as u32),
            )?])
        })
        .collect::<Result<Vec<_>, _>>()?;
    rules.insert(libc::SYS_ioctl, ioctl_rules);
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        target_arch()?,
    )?;
    Ok(filter.try_into()?)
}

/// `BPF_LD | BPF_W | BPF_ABS` (0x00 | 0x00 | 0x20).
const BPF_LD_W_ABS: u16 = 0x20;
/// `BPF_JMP | BPF_JEQ | BPF_K` (0x05 | 0x10 | 0x00).
const BPF_JMP_JEQ_K: u16 = 0x15;
/// `BPF_JMP | BPF_JGE | BPF_K` (0x05 | 0x30 | 0x00).
const BPF_JMP_JGE_K: u16 = 0x35;
/// `BPF_RET | BPF_K` (0x06 | 0x00).
const BPF_RET_K: u16 = 0x06;
const SECCOMP_RET_ALLOW: u32 = 0x7fff_0000;
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

/// The `ENOSYS` filter: `clone3`, and x32 syscall numbers on x86-64.
pub fn enosys_filter() -> Result<BpfProgram, SeccompError> {
    #[cfg(target_arch = "x86_64")]
    const AUDIT_ARCH: u32 = 0xc000_003e;
    #[cfg(target_arch = "aarch64")]
    const AUDIT_ARCH: u32 = 0xc000_00b7;
    #[cfg(target_arch = "riscv64")]
    const AUDIT_ARCH: u32 = 0xc000_00f3;
    #[cfg(not(any(
        target_arch = "x86_64",
        target_arch = "aarch64",
        target_arch = "riscv64"
    )))]
    return Err(SeccompError::Arch(std::env::consts::ARCH.to_owned()));
    #[cfg(any(
        target_arch = "x86_64",
        target_arch = "aarch64",
        target_arch = "riscv64"
    ))]
    {
        let enosys = SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
        let x32_bit: u32 = if cfg!(target_arch = "x86_64") {
            0x4000_0000
        } else {
            u32::MAX
        };
        let clone3 = u32::try_from(libc::SYS_clone3).unwrap_or(u32::MAX);
        Ok(vec![
            // 0: A = arch; other arches are killed by the deny filter.
            stmt(BPF_LD_W_ABS, 4),
            // 1: if arch != ours → allow (6)
            jump(BPF_JMP_JEQ_K, AUDIT_ARCH, 0, 4),
            // 2: A = nr
            stmt(BPF_LD_W_ABS, 0),
            // 3: if nr >= x32 bit → ENOSYS (7)
            jump(BPF_JMP_JGE_K, x32_bit, 3, 0),
            // 4: if nr == clone3 → ENOSYS (7)
            jump(BPF_JMP_JEQ_K, clone3, 2, 0),
            // 5: allow
            stmt(BPF_RET_K, SECCOMP_RET_ALLOW),
            // 6: allow (foreign arch)
            stmt(BPF_RET_K, SECCOMP_RET_ALLOW),
            // 7: ENOSYS
            stmt(BPF_RET_K, enosys),
        ])
    }
}

/// Installs both filters on the calling thread. `PR_SET_NO_NEW_PRIVS` must already
/// be set (the init sets it first).
pub fn install() -> Result<(), SeccompError> {
    let deny = deny_filter()?;
    let enosys = enosys_filter()?;
    seccompiler::apply_filter(&deny)?;
    seccompiler::apply_filter(&enosys)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_build() {
        let deny = deny_filter().unwrap();
        assert!(deny.len() > denied_syscalls().len());
        let enosys = enosys_filter().unwrap();
        assert_eq!(enosys.len(), 8);
        // Jump targets stay inside the program.
        for (i, ins) in enosys.iter().enumerate() {
            if ins.code & 0x07 == 0x05 {
                assert!(i + 1 + usize::from(ins.jt) < enosys.len());
                assert!(i + 1 + usize::from(ins.jf) < enosys.len());
            }
        }
    }
}
