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
//! * terminal injection (`ioctl(TIOCSTI)`, `ioctl(TIOCLINUX)`);
//! * **creating a setuid or setgid file** (see below).
//!
//! A second, hand-written filter answers `clone3`, `openat2` and `fchmodat2` with
//! `ENOSYS` (their flags or mode live in memory that seccomp cannot inspect; glibc
//! then falls back to `clone`, `openat` and `fchmodat`, whose arguments the first
//! filter checks) and, on x86-64, every x32-ABI syscall number. A syscall made with
//! another architecture's convention (i386 `int 0x80`) kills the process:
//! seccompiler's architecture check does that.
//!
//! # No setuid or setgid files (always on)
//!
//! The attack: when the worker runs as host root, bash's uid 0 inside the user
//! namespace *is* host uid 0, so a file bash writes to the workspace is owned by
//! host root. Without this rule, `cp /usr/bin/id ./x && chmod 4755 ./x` leaves a
//! root-owned setuid binary in a host directory, and any host user who can reach
//! it (`setpriv --reuid=65534 ./x` printed `euid=0(root)`) gains root. Inside the
//! sandbox the bit is useless (`PR_SET_NO_NEW_PRIVS`), so the danger is only ever
//! to the host; the rule is global because every path that sets a mode is refused
//! before the kernel resolves the file.
//!
//! The kernel sets a file's mode at exactly these points, and each fails with
//! `EPERM` when the mode carries `S_ISUID` (04000) or `S_ISGID` (02000) (a
//! masked-equality test on the mode argument, so `chmod 755` and every ordinary
//! mode are untouched):
//!
//! * `chmod(path, mode)`, `fchmod(fd, mode)`, `fchmodat(dirfd, path, mode)`
//!   (`chmod u+s`, `chmod g+s`, `install -m 4755`, `cp -p`/`tar -p` of a setuid
//!   file all end here); `fchmodat2` answers `ENOSYS` (above), so libc falls back
//!   to `fchmodat`;
//! * file creation with a mode: `open(path, flags, mode)` / `openat(dirfd, path,
//!   flags, mode)` when `flags` has `O_CREAT` or `O_TMPFILE`, and `creat(path,
//!   mode)`; `openat2` answers `ENOSYS`, as its mode sits behind a pointer;
//! * `mknod`/`mknodat`, which can also create regular files.
//!
//! `mkdir` needs no rule: the kernel masks a new directory's mode to
//! `S_IRWXUGO | S_ISVTX`, so it can never ask for `S_ISUID`/`S_ISGID`; a directory
//! only gets `S_ISGID` by inheritance from a setgid parent, which bash cannot make
//! (`chmod g+s dir` is refused like any other `S_ISGID` chmod). A setgid directory
//! would in any case only pass its *group* to new entries, never a set-id bit to a
//! file. Ownership changes (`chown`) clear the set-id bits rather than set them.
//!
//! File capabilities (`security.capability` extended attributes, which grant
//! privileges on `execve` like a setuid bit) need `CAP_SETFCAP`; bubblewrap drops
//! every capability (`--cap-drop ALL`), so `setxattr` of that name already fails
//! with `EPERM` (`tests/escape/special_files.rs` E68 shows it). A hard link to a host setuid
//! binary (`/usr/bin/su`) cannot be made in the workspace: links across mounts
//! fail with `EXDEV`, and the copy `mv`/`cp` fall back to needs the refused
//! `chmod`.
//!
//! This is the in-sandbox layer. The host side separately mounts the session
//! directories `nosuid,nodev`, so even a set-id file that came from elsewhere does
//! not grant privileges when executed from there.
//!
//! # FIFOs, sockets and device nodes (fallback only)
//!
//! The worker itself opens files in the workspace, outputs and read-write memory
//! stores, and a FIFO there would block it in `open(2)`. Landlock (see
//! [`crate::init`]) denies creating FIFOs, unix sockets and device nodes beneath
//! those directories only, so `mkfifo /tmp/f` keeps working. When Landlock is not
//! enforced (kernel without it, and `require_landlock = false`), the init asks
//! [`install`] for the fallback instead: `mknod`/`mknodat` with a file type of
//! FIFO, socket, character or block device fail with `EPERM` **everywhere**
//! (seccomp cannot see which directory a path names). A unix socket bound with
//! `bind(2)` is not covered by the fallback (the path sits behind a pointer); a
//! socket file cannot block an `open(2)` (it fails with `ENXIO`), so the worker is
//! not stalled by one. Device nodes need `CAP_MKNOD`, which no sandbox process
//! holds, so that part is defence in depth.
//! [`SandboxReport::special_files`](crate::SandboxReport::special_files) says which
//! layer is active.

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

/// The set-id mode bits no sandboxed call may set.
const SET_ID_BITS: [u64; 2] = [libc::S_ISUID as u64, libc::S_ISGID as u64];

/// The file types `mknod` must not create when Landlock is not enforced.
const SPECIAL_FILE_TYPES: [u64; 4] = [
    libc::S_IFIFO as u64,
    libc::S_IFSOCK as u64,
    libc::S_IFCHR as u64,
    libc::S_IFBLK as u64,
];

/// `O_TMPFILE` (which includes `O_DIRECTORY`; the kernel refuses `__O_TMPFILE`
/// without it, so testing the full value is exact).
const O_TMPFILE: u64 = libc::O_TMPFILE as u64;

/// `(arg & mask) == mask` on the low 32 bits (modes and open flags are `int`-sized;
/// the kernel ignores the upper half of the register).
fn has_bits(arg: u8, mask: u64) -> Result<SeccompCondition, SeccompError> {
    Ok(SeccompCondition::new(
        arg,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::MaskedEq(mask),
        mask,
    )?)
}

/// Rules matching a mode argument (`mode_arg`) that carries `S_ISUID` or `S_ISGID`.
fn set_id_mode_rules(mode_arg: u8) -> Result<Vec<SeccompRule>, SeccompError> {
    SET_ID_BITS
        .iter()
        .map(|bit| Ok(SeccompRule::new(vec![has_bits(mode_arg, *bit)?])?))
        .collect()
}

/// Rules matching a file creation (`O_CREAT` or `O_TMPFILE` in `flags_arg`) whose
/// mode (`mode_arg`) carries `S_ISUID` or `S_ISGID`. Without either flag the kernel
/// ignores the mode, so opening existing files is never refused.
fn set_id_create_rules(flags_arg: u8, mode_arg: u8) -> Result<Vec<SeccompRule>, SeccompError> {
    let mut rules = Vec::new();
    for flag in [libc::O_CREAT as u64, O_TMPFILE] {
        for bit in SET_ID_BITS {
            rules.push(SeccompRule::new(vec![
                has_bits(flags_arg, flag)?,
                has_bits(mode_arg, bit)?,
            ])?);
        }
    }
    Ok(rules)
}

/// Rules for `mknod`-style calls: set-id bits always; with `special_files`, also
/// the FIFO, socket and device file types (`(mode & S_IFMT) == type`).
fn mknod_rules(mode_arg: u8, special_files: bool) -> Result<Vec<SeccompRule>, SeccompError> {
    let mut rules = set_id_mode_rules(mode_arg)?;
    if special_files {
        for kind in SPECIAL_FILE_TYPES {
            rules.push(SeccompRule::new(vec![SeccompCondition::new(
                mode_arg,
                SeccompCmpArgLen::Dword,
                SeccompCmpOp::MaskedEq(libc::S_IFMT as u64),
                kind,
            )?])?);
        }
    }
    Ok(rules)
}

/// The argument-dependent rules that keep set-id files (and, with
/// `special_files`, FIFOs, sockets and device nodes) from being created; see the
/// module docs. Argument positions: `chmod(path, mode)`, `fchmod(fd, mode)`,
/// `fchmodat(dirfd, path, mode)`, `open(path, flags, mode)`, `openat(dirfd, path,
/// flags, mode)`, `creat(path, mode)`, `mknod(path, mode, dev)`, `mknodat(dirfd,
/// path, mode, dev)`.
fn mode_rules(special_files: bool) -> Result<BTreeMap<i64, Vec<SeccompRule>>, SeccompError> {
    let mut rules = BTreeMap::new();
    rules.insert(libc::SYS_fchmod, set_id_mode_rules(1)?);
    rules.insert(libc::SYS_fchmodat, set_id_mode_rules(2)?);
    rules.insert(libc::SYS_openat, set_id_create_rules(2, 3)?);
    rules.insert(libc::SYS_mknodat, mknod_rules(2, special_files)?);
    // The legacy path calls exist on x86-64 only (aarch64 and riscv64 have just the
    // `*at` forms).
    #[cfg(target_arch = "x86_64")]
    {
        rules.insert(libc::SYS_chmod, set_id_mode_rules(1)?);
        rules.insert(libc::SYS_open, set_id_create_rules(1, 2)?);
        rules.insert(libc::SYS_creat, set_id_mode_rules(1)?);
        rules.insert(libc::SYS_mknod, mknod_rules(1, special_files)?);
    }
    Ok(rules)
}

/// The main deny-list filter (`EPERM`). `special_files` adds the fallback that
/// refuses `mknod` of FIFOs, sockets and devices everywhere (for when Landlock,
/// which refuses them per directory, is not enforced).
pub fn deny_filter(special_files: bool) -> Result<BpfProgram, SeccompError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = mode_rules(special_files)?;
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

/// `fchmodat2` (Linux 6.6): 452 on every architecture (the libc crate only names
/// it for some).
const SYS_FCHMODAT2: u32 = 452;

/// The syscalls answered with `ENOSYS`: their arguments that matter (clone flags,
/// `open_how`, and `fchmodat2` where the libc's fallback handles the same job) are
/// out of seccomp's reach or duplicate a checked call, and glibc falls back to the
/// checked form on `ENOSYS`.
fn enosys_syscalls() -> [u32; 3] {
    [
        u32::try_from(libc::SYS_clone3).unwrap_or(u32::MAX),
        u32::try_from(libc::SYS_openat2).unwrap_or(u32::MAX),
        SYS_FCHMODAT2,
    ]
}

/// The `ENOSYS` filter: `clone3`, `openat2`, `fchmodat2`, and x32 syscall numbers
/// on x86-64.
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
        let nrs = enosys_syscalls();
        // Layout: 0 load arch; 1 arch check; 2 load nr; 3 x32 check; 4.. one
        // check per ENOSYS syscall; then allow, allow (foreign arch), ENOSYS.
        let first_check = 4;
        let allow_foreign = first_check + nrs.len() + 1;
        let enosys_at = allow_foreign + 1;
        // Jump offsets count from the next instruction and must fit a u8.
        let offset = |from: usize, to: usize| u8::try_from(to - from - 1).unwrap_or(u8::MAX);
        let mut prog = vec![
            // A = arch; other arches are killed by the deny filter.
            stmt(BPF_LD_W_ABS, 4),
            // if arch != ours → allow (foreign)
            jump(BPF_JMP_JEQ_K, AUDIT_ARCH, 0, offset(1, allow_foreign)),
            // A = nr
            stmt(BPF_LD_W_ABS, 0),
            // if nr >= x32 bit → ENOSYS
            jump(BPF_JMP_JGE_K, x32_bit, offset(3, enosys_at), 0),
        ];
        for (k, nr) in nrs.iter().enumerate() {
            prog.push(jump(
                BPF_JMP_JEQ_K,
                *nr,
                offset(first_check + k, enosys_at),
                0,
            ));
        }
        prog.extend([
            stmt(BPF_RET_K, SECCOMP_RET_ALLOW),
            stmt(BPF_RET_K, SECCOMP_RET_ALLOW),
            stmt(BPF_RET_K, enosys),
        ]);
        Ok(prog)
    }
}

/// Installs both filters on the calling thread. `PR_SET_NO_NEW_PRIVS` must already
/// be set (the init sets it first). `special_files`: also refuse `mknod` of FIFOs,
/// sockets and device nodes everywhere (the fallback for when Landlock is not
/// enforced; see the module docs).
pub fn install(special_files: bool) -> Result<(), SeccompError> {
    let deny = deny_filter(special_files)?;
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
        let deny = deny_filter(false).unwrap();
        assert!(deny.len() > denied_syscalls().len());
        assert!(deny_filter(true).unwrap().len() > deny.len());
        let enosys = enosys_filter().unwrap();
        assert_eq!(enosys.len(), 7 + enosys_syscalls().len());
        // The last instruction is the ENOSYS return, and every syscall check jumps
        // there when it matches.
        let last = enosys.len() - 1;
        assert_eq!(enosys[last].k, SECCOMP_RET_ERRNO | libc::ENOSYS as u32);
        for (k, nr) in enosys_syscalls().iter().enumerate() {
            let i = 4 + k;
            assert_eq!(enosys[i].k, *nr);
            assert_eq!(i + 1 + usize::from(enosys[i].jt), last);
        }
        // Jump targets stay inside the program.
        for (i, ins) in enosys.iter().enumerate() {
            if ins.code & 0x07 == 0x05 {
                assert!(i + 1 + usize::from(ins.jt) < enosys.len());
                assert!(i + 1 + usize::from(ins.jf) < enosys.len());
            }
        }
    }
}
