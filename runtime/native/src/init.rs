//! The init step that runs **inside** the sandbox, after bubblewrap has built the
//! namespaces and mounts, and before bash starts.
//!
//! Why a separate step: Landlock forbids mount operations once a process is
//! restricted, and bubblewrap has to mount after it creates the namespaces, so the
//! Landlock domain can only be entered by a process that starts after bubblewrap's
//! setup. The init helper is that process. In order it:
//!
//! 1. marks every inherited descriptor above 2 close-on-exec (nothing of the worker
//!    leaks into bash by descriptor);
//! 2. lowers resource limits (`RLIMIT_CORE` 0 and the configured `AS`, `NPROC`,
//!    `FSIZE`, `NOFILE` fallbacks);
//! 3. enters a Landlock domain: read+execute beneath the read-only mounts, full
//!    access beneath the sandbox-private tmpfs (`/tmp`, `/dev/shm`), full access
//!    *except creating FIFOs, unix sockets and device nodes* beneath the writable
//!    host directories (workspace, outputs, read-write memory stores; see below),
//!    device-file access in `/dev`, no TCP bind/connect when networking is off,
//!    and (ABI ≥ 6) no signals or abstract unix-socket connections to anything
//!    outside the domain;
//! 4. sets `PR_SET_NO_NEW_PRIVS` (no setuid/file-capability gains across `execve`);
//! 5. installs the seccomp filters of [`crate::seccomp`] (with its global `mknod`
//!    fallback when Landlock is not enforced);
//! 6. reports `ok …` on the ready descriptor and executes the command (bash).
//!
//! Any failure is reported as `err …` on the ready descriptor and the init exits
//! with status 125 without running the command: the host fails closed.
//!
//! # No FIFOs, sockets or device nodes where the worker looks
//!
//! The worker opens files in the workspace, the outputs directory and read-write
//! memory stores itself (file tools, `wasm-run`, the memory sync). A FIFO planted
//! there blocks such an `open(2)` until a writer appears, which stalled worker
//! threads and session teardown; a device node would hand the worker a device
//! instead of a file; a socket file is at best a confusing non-file. So those
//! directories (`--rw-host`) get every Landlock right except `MAKE_FIFO`,
//! `MAKE_SOCK` (which `bind(2)` of a unix socket path also needs), `MAKE_CHAR` and
//! `MAKE_BLOCK`, all part of Landlock ABI 1, so any enforced domain has them.
//! Landlock also checks the matching `MAKE_*` right on a `rename`/`link` into a
//! directory, so a FIFO made in `/tmp` cannot be moved in either (and a move across
//! mounts fails with `EXDEV` before that). `/tmp` and `/dev/shm` (`--rw`) keep the
//! rights: they are private tmpfs mounts the worker never opens, and tools use
//! FIFOs and sockets there. When Landlock is not enforced at all, the init asks
//! seccomp to refuse such `mknod` calls everywhere instead (see [`crate::seccomp`]),
//! and the ready line says which layer holds (`special_files=landlock|seccomp`).
//!
//! Arguments (after the program name and any leading subcommand):
//! `--ready-fd N`, `--ro PATH`, `--rw PATH` (private tmpfs), `--rw-host PATH`
//! (writable host directories), `--dev PATH`, `--list PATH`, `--no-net`,
//! `--egress-relay PORT:SOCKET` (the network relay of [`crate::net`]),
//! `--require-landlock`, `--rlimit NAME=VALUE` (`as`, `nproc`, `fsize`, `nofile`),
//! `--probe`, then `--` and the command. `--probe` applies every layer
//! and then prints the report line on stdout instead of executing a command.

use std::ffi::OsString;
use std::io::Write;
use std::os::fd::FromRawFd;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;

use landlock::{
    ABI, Access, AccessFs, AccessNet, CompatLevel, Compatible, Ruleset, RulesetAttr,
    RulesetCreatedAttr, RulesetStatus, Scope, path_beneath_rules,
};

/// Where the init helper is bound inside the sandbox.
pub const INIT_GUEST_PATH: &str = "/run/wasm-sandbox/init";

/// Parsed init arguments.
#[derive(Debug, Default)]
struct InitArgs {
    ready_fd: Option<i32>,
    ro: Vec<PathBuf>,
    rw: Vec<PathBuf>,
    /// Writable host directories the worker opens: no FIFOs/sockets/devices.
    rw_host: Vec<PathBuf>,
    dev: Vec<PathBuf>,
    list: Vec<PathBuf>,
    no_net: bool,
    /// `--egress-relay PORT:SOCKET`: run the relay of [`crate::net`].
    egress_relay: Option<(u16, PathBuf)>,
    require_landlock: bool,
    rlimits: Vec<(libc::__rlimit_resource_t, u64)>,
    probe: bool,
    command: Vec<OsString>,
}

fn parse_args(args: Vec<OsString>) -> Result<InitArgs, String> {
    let mut out = InitArgs::default();
    let mut it = args.into_iter();
    while let Some(arg) = it.next() {
        let Some(flag) = arg.to_str() else {
            return Err(format!("unexpected argument {arg:?}"));
        };
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag {
            "--ready-fd" => {
                let v = value()?;
                out.ready_fd = Some(
                    v.to_str()
                        .and_then(|s| s.parse().ok())
                        .ok_or_else(|| format!("bad --ready-fd {v:?}"))?,
                );
            }
            "--ro" => out.ro.push(value()?.into()),
            "--rw" => out.rw.push(value()?.into()),
            "--rw-host" => out.rw_host.push(value()?.into()),
            "--dev" => out.dev.push(value()?.into()),
            "--list" => out.list.push(value()?.into()),
            "--no-net" => out.no_net = true,
            "--egress-relay" => {
                let v = value()?;
                let (port, socket) = v
                    .to_str()
                    .and_then(|s| s.split_once(':'))
                    .and_then(|(p, s)| Some((p.parse::<u16>().ok()?, PathBuf::from(s))))
                    .ok_or_else(|| format!("bad --egress-relay {v:?}"))?;
                out.egress_relay = Some((port, socket));
            }
            "--require-landlock" => out.require_landlock = true,
            "--probe" => out.probe = true,
            "--rlimit" => {
                let v = value()?;
                let s = v.to_str().ok_or("bad --rlimit")?;
                let (name, n) = s.split_once('=').ok_or("bad --rlimit")?;
                let n: u64 = n.parse().map_err(|_| format!("bad --rlimit {s}"))?;
                let res = match name {
                    "as" => libc::RLIMIT_AS,
                    "nproc" => libc::RLIMIT_NPROC,
                    "fsize" => libc::RLIMIT_FSIZE,
                    "nofile" => libc::RLIMIT_NOFILE,
                    _ => return Err(format!("unknown rlimit {name}")),
                };
                out.rlimits.push((res, n));
            }
            "--" => {
                out.command = it.collect();
                break;
            }
            _ => return Err(format!("unexpected argument {flag}")),
        }
    }
    if !out.probe && out.command.is_empty() {
        return Err("no command".to_owned());
    }
    Ok(out)
}

/// What the layers achieved, reported on the ready descriptor.
#[derive(Debug)]
struct Applied {
    landlock: &'static str,
    landlock_abi: i64,
    /// The layer that refuses FIFOs, sockets and device nodes in the `--rw-host`
    /// directories: `landlock`, or `seccomp` (the global `mknod` fallback).
    special_files: &'static str,
}

/// The kernel's Landlock ABI version (`landlock_create_ruleset(NULL, 0, VERSION)`),
/// or `None` when Landlock is absent or disabled. This is the probe the platform
/// notes call for: `/sys/kernel/security` is not mounted in containers.
pub fn landlock_abi_version() -> Option<u32> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with a NULL attr and size 0 and the VERSION flag, the syscall only
    // returns an integer; no memory is read or written.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    u32::try_from(r).ok().filter(|v| *v > 0)
}

fn set_cloexec_above_stderr() -> Result<(), String> {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range with CLOEXEC only changes descriptor flags.
    let r = unsafe { libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC) };
    if r == 0 {
        return Ok(());
    }
    // Kernels before 5.11: walk /proc/self/fd.
    let dir = std::fs::read_dir("/proc/self/fd").map_err(|e| format!("list fds: {e}"))?;
    let fds: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .filter(|fd| *fd > 2)
        .collect();
    for fd in fds {
        // SAFETY: F_SETFD on a possibly stale fd only fails with EBADF.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok(())
}

fn apply_rlimits(limits: &[(libc::__rlimit_resource_t, u64)]) -> Result<(), String> {
    let mut all = vec![(libc::RLIMIT_CORE, 0u64)];
    all.extend_from_slice(limits);
    for (res, value) in all {
        let lim = libc::rlimit {
            rlim_cur: value,
            rlim_max: value,
        };
        // SAFETY: setrlimit reads the struct we pass.
        if unsafe { libc::setrlimit(res, &lim) } != 0 {
            return Err(format!(
                "setrlimit({res}, {value}): {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    Ok(())
}

fn apply_landlock(args: &InitArgs) -> Result<Applied, String> {
    let kernel_abi = landlock_abi_version();
    let abi = ABI::V6;
    let err = |e: landlock::RulesetError| format!("landlock: {e}");
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::BestEffort)
        .handle_access(AccessFs::from_all(abi))
        .map_err(err)?
        .scope(Scope::from_all(abi))
        .map_err(err)?;
    if args.no_net {
        ruleset = ruleset
            .handle_access(AccessNet::from_all(abi))
            .map_err(err)?;
    }
    let existing =
        |v: &[PathBuf]| -> Vec<PathBuf> { v.iter().filter(|p| p.exists()).cloned().collect() };
    // Beneath the host directories: everything but creating special files (see the
    // module docs).
    let host_rw_access = AccessFs::from_all(abi) & !special_file_access();
    let device_access = AccessFs::ReadFile
        | AccessFs::WriteFile
        | AccessFs::ReadDir
        | AccessFs::Truncate
        | AccessFs::IoctlDev;
    let status = ruleset
        .create()
        .map_err(err)?
        .add_rules(path_beneath_rules(
            existing(&args.ro),
            AccessFs::from_read(abi),
        ))
        .map_err(err)?
        .add_rules(path_beneath_rules(
            existing(&args.rw),
            AccessFs::from_all(abi),
        ))
        .map_err(err)?
        .add_rules(path_beneath_rules(existing(&args.rw_host), host_rw_access))
        .map_err(err)?
        .add_rules(path_beneath_rules(existing(&args.dev), device_access))
        .map_err(err)?
        .add_rules(path_beneath_rules(existing(&args.list), AccessFs::ReadDir))
        .map_err(err)?
        .restrict_self()
        .map_err(err)?;
    let landlock = match status.ruleset {
        RulesetStatus::FullyEnforced => "full",
        RulesetStatus::PartiallyEnforced => "partial",
        RulesetStatus::NotEnforced => "none",
    };
    if args.require_landlock && landlock == "none" {
        return Err(format!(
            "Landlock is required but not enforced (kernel ABI {kernel_abi:?})"
        ));
    }
    Ok(Applied {
        landlock,
        landlock_abi: kernel_abi.map_or(0, i64::from),
        // MAKE_FIFO/SOCK/CHAR/BLOCK are Landlock ABI 1: any enforced domain (full or
        // partial) refuses them; otherwise seccomp must.
        special_files: if landlock == "none" {
            "seccomp"
        } else {
            "landlock"
        },
    })
}

/// The Landlock rights to create FIFOs, unix sockets and device nodes.
fn special_file_access() -> landlock::BitFlags<AccessFs> {
    AccessFs::MakeFifo | AccessFs::MakeSock | AccessFs::MakeChar | AccessFs::MakeBlock
}

fn set_no_new_privs() -> Result<(), String> {
    // SAFETY: prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) has no memory effects.
    let r = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    if r == 0 {
        Ok(())
    } else {
        Err(format!(
            "PR_SET_NO_NEW_PRIVS: {}",
            std::io::Error::last_os_error()
        ))
    }
}

fn setup(args: &InitArgs) -> Result<(Applied, Option<std::net::TcpListener>), String> {
    set_cloexec_above_stderr()?;
    apply_rlimits(&args.rlimits)?;
    // The relay's port is bound before the Landlock domain starts; the relay
    // itself starts after every layer applies (see `crate::net`).
    let relay = match &args.egress_relay {
        Some((port, _)) if !args.probe => Some(crate::net::bind_relay(*port)?),
        _ => None,
    };
    let applied = apply_landlock(args)?;
    set_no_new_privs()?;
    crate::seccomp::install(applied.special_files == "seccomp").map_err(|e| e.to_string())?;
    Ok((applied, relay))
}

/// Runs [`sandbox_init_main`] if this process was started as the sandbox's
/// init step, i.e. with `argv[0]` equal to
/// [`INIT_GUEST_PATH`] (where the sandbox
/// bind-mounts the configured init binary), or the `wasm-run` shim if `argv[0]`'s
/// file name is `wasm-run` (see [`crate::wasm_run`]); otherwise returns. Call it
/// first thing in `main` of any binary that serves as its own init helper.
pub fn run_as_init_if_invoked() {
    let mut args = std::env::args_os();
    let argv0 = args.next();
    if argv0.as_deref() == Some(std::ffi::OsStr::new(INIT_GUEST_PATH)) {
        sandbox_init_main(args);
    }
    if argv0
        .as_deref()
        .is_some_and(crate::wasm_run::invoked_as_shim)
    {
        crate::wasm_run::wasm_run_main(args);
    }
}

/// `main` of a dedicated init binary (`wasm-sandbox-init`): the `wasm-run` shim
/// when invoked under that name, else [`sandbox_init_main`] with the arguments.
pub fn init_binary_main() -> ! {
    let mut args = std::env::args_os();
    let argv0 = args.next();
    if argv0
        .as_deref()
        .is_some_and(crate::wasm_run::invoked_as_shim)
    {
        crate::wasm_run::wasm_run_main(args);
    }
    sandbox_init_main(args)
}

/// The init helper's entry point: `args` are the arguments after the program name
/// (and after any subcommand that routed here). Never returns: it either executes
/// the command or exits (125 on a setup failure, 127 when the command cannot be
/// executed).
pub fn sandbox_init_main<I: IntoIterator<Item = OsString>>(args: I) -> ! {
    let args = match parse_args(args.into_iter().collect()) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("wasm-sandbox-init: {e}");
            std::process::exit(125);
        }
    };
    // SAFETY: the host passes a pipe's write end at this number and nothing else in
    // this process owns it; the File takes ownership (it is close-on-exec after
    // `set_cloexec_above_stderr`).
    let mut ready = args
        .ready_fd
        .map(|fd| unsafe { std::fs::File::from_raw_fd(fd) });
    let mut report = |line: &str| {
        if let Some(f) = ready.as_mut() {
            let _ = f.write_all(format!("{line}\n").as_bytes());
        }
    };
    match setup(&args) {
        Ok((applied, relay)) => {
            let line = format!(
                "ok landlock={} landlock_abi={} seccomp=1 no_new_privs=1 special_files={}",
                applied.landlock, applied.landlock_abi, applied.special_files
            );
            if args.probe {
                report(&line);
                println!("{line}");
                std::process::exit(0);
            }
            if let (Some(listener), Some((_, socket))) = (relay, &args.egress_relay)
                && let Err(e) = crate::net::spawn_relay(listener, socket.clone())
            {
                report(&format!("err {e}"));
                eprintln!("wasm-sandbox-init: {e}");
                std::process::exit(125);
            }
            report(&line);
            drop(ready);
            let Some((program, rest)) = args.command.split_first() else {
                eprintln!("wasm-sandbox-init: no command");
                std::process::exit(125);
            };
            let e = std::process::Command::new(program).args(rest).exec();
            eprintln!("wasm-sandbox-init: cannot execute {program:?}: {e}");
            std::process::exit(127);
        }
        Err(e) => {
            report(&format!("err {e}"));
            eprintln!("wasm-sandbox-init: {e}");
            std::process::exit(125);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_arguments() {
        let a = parse_args(
            [
                "--ready-fd",
                "5",
                "--ro",
                "/usr",
                "--rw",
                "/tmp",
                "--rw-host",
                "/workspace",
                "--no-net",
                "--rlimit",
                "nproc=10",
                "--",
                "/bin/bash",
                "--norc",
            ]
            .iter()
            .map(OsString::from)
            .collect(),
        )
        .unwrap();
        assert_eq!(a.ready_fd, Some(5));
        assert_eq!(a.ro, [PathBuf::from("/usr")]);
        assert_eq!(a.rw, [PathBuf::from("/tmp")]);
        assert_eq!(a.rw_host, [PathBuf::from("/workspace")]);
        assert!(a.no_net);
        assert_eq!(a.rlimits, [(libc::RLIMIT_NPROC, 10)]);
        assert_eq!(
            a.command,
            [OsString::from("/bin/bash"), OsString::from("--norc")]
        );
        assert!(a.egress_relay.is_none());
        let a = parse_args(
            [
                "--egress-relay",
                "3128:/run/wasm-sandbox/net/proxy.sock",
                "--",
                "/bin/bash",
            ]
            .iter()
            .map(OsString::from)
            .collect(),
        )
        .unwrap();
        assert_eq!(
            a.egress_relay,
            Some((3128, PathBuf::from("/run/wasm-sandbox/net/proxy.sock")))
        );
        for bad in ["3128", "x:/s", "70000:/s"] {
            let args = ["--egress-relay", bad, "--", "/bin/bash"];
            assert!(
                parse_args(args.iter().map(OsString::from).collect()).is_err(),
                "{bad}"
            );
        }
        assert!(parse_args(vec![OsString::from("--bogus")]).is_err());
        assert!(parse_args(vec![]).is_err());
    }
}
