//! Compiling component bytes a session can name, in a separate process with limits.
//!
//! `wasm-run` compiles whatever `.wasm` file code in the bash sandbox points it
//! at, and those bytes are hostile input to the compiler: a hand-made 3.9 MB
//! component cost 1.65 GiB of memory and 21 s of CPU when it was compiled inside
//! the worker, which every session on that worker shares. Neither wasmtime nor
//! Cranelift can bound the memory or the time of one compilation, so the
//! compilation runs in a child process that the kernel bounds:
//!
//! * **memory**: `RLIMIT_AS` (`wasm_run.compile_memory_bytes`): an allocation past
//!   it fails and the child aborts; the worker's own memory never grows by more
//!   than the compiled output it accepts;
//! * **CPU**: `RLIMIT_CPU` (`wasm_run.compile_cpu_seconds`, all threads together):
//!   `SIGXCPU`, then `SIGKILL` one second later;
//! * **wall clock**: `wasm_run.compile_timeout_seconds`, after which the worker
//!   kills the child's whole process group (it is its own group leader), so a
//!   child stopped or blocked in any way cannot hold a worker thread;
//! * **how many at once**: at most `wasm_run.max_concurrent_compiles` children
//!   per runtime; others wait for a slot at most the same wall-clock limit;
//! * **what comes back**: stdout is read with a cap
//!   (`wasm_run.max_compiled_bytes`), stderr with a 4 KiB cap; no core dump
//!   (`RLIMIT_CORE` 0); the child gets an empty environment and dies with the
//!   thread that started it (`PR_SET_PDEATHSIG`).
//!
//! The child builds an engine from the runtime's own `[engine]`/`[limits]`
//! settings (without the pooling allocator, which only reserves address space for
//! instances and does not change the compiled code), reads the component from
//! stdin and writes `Engine::precompile_component`'s output to stdout. The worker
//! then loads it with `Component::deserialize`, which checks that the bytes are a
//! wasmtime artifact for a compatible engine (same wasmtime version, target,
//! features and tunables) and refuses anything else. The bytes come over a pipe
//! only the worker and its own child hold, so they are as trusted as an
//! in-process compile of the same input: the compiler code is ours, only its input
//! is hostile.
//!
//! # Finding the helper
//!
//! As for the bash sandbox's init helper: `wasm_run.compiler_path`, else
//! `$WASM_SANDBOX_COMPILE`, else the current executable when its `main` called
//! [`run_as_compiler_if_invoked`] (the `wasm-sandbox` CLI and the benches do),
//! else a `wasm-sandbox-compile` binary next to the current executable or in
//! its parent directory. The helper is started with `argv[0]` set to
//! `wasm-sandbox-compile`, which is what [`run_as_compiler_if_invoked`] looks for.
//! Without a helper nothing is compiled: `wasm-run` fails with a message naming
//! the setting (fail closed, never an unbounded compile in the worker).

use std::ffi::OsStr;
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::{EngineConfig, LimitsConfig, RuntimeConfig};
use crate::{Error, Result};

/// The compiler helper's program name (`argv[0]` it is started with).
pub const COMPILER_NAME: &str = "wasm-sandbox-compile";

/// Exit status of the helper when the input is not a valid component.
const EXIT_INVALID: i32 = 2;
/// Exit status of the helper when an allocation failed gracefully (most abort).
const EXIT_OOM: i32 = 3;
/// Most bytes of the helper's stderr kept for the error message.
const STDERR_CAP: u64 = 4096;

/// Set once this process's `main` dispatched through [`run_as_compiler_if_invoked`]:
/// the executable can then serve as its own compiler helper.
static SELF_SERVES: AtomicBool = AtomicBool::new(false);

/// Runs [`compiler_main`] (and never returns) if this process was started as the
/// component compiler helper, i.e. with `argv[0]`'s file name equal to
/// [`COMPILER_NAME`]; otherwise records that this executable can serve as the
/// helper and returns. Call it first thing in `main` of a binary that creates a
/// [`Runtime`](crate::Runtime) (next to `run_as_init_if_invoked`).
pub fn run_as_compiler_if_invoked() {
    let argv0 = std::env::args_os().next();
    if argv0
        .as_deref()
        .and_then(|a| Path::new(a).file_name())
        .is_some_and(|name| name == OsStr::new(COMPILER_NAME))
    {
        compiler_main();
    }
    SELF_SERVES.store(true, Ordering::Release);
}

/// What the worker tells the helper (its only argument, JSON).
#[derive(Serialize, Deserialize)]
struct Job {
    engine: EngineConfig,
    limits: LimitsConfig,
    max_input_bytes: u64,
}

/// `main` of the compiler helper: reads a component on stdin, writes its
/// precompiled form on stdout. Exit 0 on success, 2 when the input is not a
/// valid component, 1 on any other failure (message on stderr).
pub fn compiler_main() -> ! {
    match compile_stdin() {
        Ok(()) => std::process::exit(0),
        Err((code, msg)) => {
            eprintln!("{COMPILER_NAME}: {msg}");
            std::process::exit(code)
        }
    }
}

fn compile_stdin() -> std::result::Result<(), (i32, String)> {
    let arg = std::env::args().nth(1).ok_or((1, "no job given".into()))?;
    let job: Job = serde_json::from_str(&arg).map_err(|e| (1, format!("bad job: {e}")))?;
    let mut wasm = Vec::new();
    std::io::stdin()
        .lock()
        .take(job.max_input_bytes.saturating_add(1))
        .read_to_end(&mut wasm)
        .map_err(|e| {
            let code = if e.kind() == std::io::ErrorKind::OutOfMemory {
                EXIT_OOM
            } else {
                1
            };
            (code, format!("reading the component: {e}"))
        })?;
    if wasm.len() as u64 > job.max_input_bytes {
        return Err((1, "component exceeds the size limit".into()));
    }
    let engine = child_engine(&job.engine, &job.limits).map_err(|e| (1, e.to_string()))?;
    let bytes = engine
        .precompile_component(&wasm)
        .map_err(|e| (EXIT_INVALID, format!("{e:#}")))?;
    let mut out = std::io::stdout().lock();
    out.write_all(&bytes)
        .and_then(|()| out.flush())
        .map_err(|e| (1, format!("writing the result: {e}")))
}

/// The helper's engine: the runtime's settings without the pooling allocator.
pub(crate) fn child_engine(
    engine: &EngineConfig,
    limits: &LimitsConfig,
) -> Result<wasmtime::Engine> {
    let config = RuntimeConfig {
        engine: EngineConfig {
            pooling: false,
            ..engine.clone()
        },
        limits: limits.clone(),
        ..RuntimeConfig::default()
    };
    crate::engine::build_engine(&config)
}

/// The worker's side: starts helpers, within the configured limits.
pub(crate) struct Compiler {
    helper: std::result::Result<PathBuf, String>,
    job: Job,
    memory_bytes: u64,
    cpu_seconds: u64,
    timeout: Duration,
    max_output: u64,
    max_running: usize,
    running: Mutex<usize>,
    freed: Condvar,
}

impl Compiler {
    pub fn new(config: &RuntimeConfig) -> Compiler {
        let w = &config.wasm_run;
        let helper = locate(w.compiler_path.as_deref());
        if let Err(e) = &helper {
            tracing::warn!(reason = %e, "no component compiler helper: wasm-run will refuse to compile");
        }
        Compiler {
            helper,
            job: Job {
                engine: config.engine.clone(),
                limits: config.limits.clone(),
                max_input_bytes: w.max_component_bytes.max(w.max_skill_component_bytes),
            },
            memory_bytes: w.compile_memory_bytes,
            cpu_seconds: w.compile_cpu_seconds.max(1),
            timeout: Duration::from_secs(w.compile_timeout_seconds.max(1)),
            max_output: w.max_compiled_bytes,
            max_running: w.max_concurrent_compiles.max(1),
            running: Mutex::new(0),
            freed: Condvar::new(),
        }
    }

    /// Compiles `wasm` in a helper process; returns `precompile_component`'s bytes.
    pub fn compile(&self, wasm: &[u8]) -> Result<Vec<u8>> {
        let helper = self
            .helper
            .as_ref()
            .map_err(|e| Error::Sandbox(e.clone()))?;
        if wasm.len() as u64 > self.job.max_input_bytes {
            return Err(Error::Sandbox("component exceeds the size limit".into()));
        }
        let _slot = self.slot()?;
        self.run(helper, wasm)
    }

    /// Waits (at most the compile timeout) for one of the `max_running` slots.
    fn slot(&self) -> Result<Slot<'_>> {
        let deadline = Instant::now() + self.timeout;
        let mut running = self.running.lock().unwrap_or_else(|p| p.into_inner());
        while *running >= self.max_running {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(Error::Sandbox(
                    "too many components are being compiled; try again later".into(),
                ));
            }
            running = self
                .freed
                .wait_timeout(running, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        *running += 1;
        Ok(Slot(self))
    }

    fn run(&self, helper: &Path, wasm: &[u8]) -> Result<Vec<u8>> {
        let job = serde_json::to_string(&self.job).map_err(|e| Error::Sandbox(e.to_string()))?;
        let mut cmd = Command::new(helper);
        cmd.arg0(COMPILER_NAME)
            .arg(job)
            .env_clear()
            // Fewer malloc arenas: each reserves 64 MiB of address space, which
            // counts against RLIMIT_AS without being memory.
            .env("MALLOC_ARENA_MAX", "2")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let (memory, cpu) = (self.memory_bytes, self.cpu_seconds);
        // SAFETY: runs in the forked child before exec and calls only
        // async-signal-safe functions (setpgid, setrlimit, prctl), no allocation.
        unsafe {
            cmd.pre_exec(move || limit_self(memory, cpu));
        }
        let mut child = cmd.spawn().map_err(|e| {
            Error::Sandbox(format!(
                "cannot start the component compiler {}: {e}",
                helper.display()
            ))
        })?;
        let (Some(mut stdin), Some(stdout), Some(stderr)) =
            (child.stdin.take(), child.stdout.take(), child.stderr.take())
        else {
            kill_group(&mut child);
            return Err(Error::Sandbox("the component compiler has no pipes".into()));
        };
        let max_output = self.max_output;
        // The pipes are served by one thread; this one keeps the clock. The child
        // reads its whole input before it writes, so one thread cannot deadlock with
        // it, and killing the child's group closes every pipe, which ends the thread.
        let io = std::thread::scope(|scope| {
            let io = scope.spawn(move || {
                // A child that died early closes stdin: the error is its status's.
                let _ = stdin.write_all(wasm);
                drop(stdin);
                let mut out = Vec::new();
                let read = stdout
                    .take(max_output.saturating_add(1))
                    .read_to_end(&mut out);
                (read.map(|_| out), ())
            });
            // stderr on its own thread: a helper that fills the stderr pipe before writing
            // its output must not stall until the wall-clock kill. Past the cap the rest is
            // drained and dropped.
            let errs = scope.spawn(move || {
                let mut err = Vec::new();
                let mut stderr = stderr;
                let _ = (&mut stderr).take(STDERR_CAP).read_to_end(&mut err);
                let _ = std::io::copy(&mut stderr, &mut std::io::sink());
                err
            });
            let deadline = Instant::now() + self.timeout;
            let status = loop {
                match child.try_wait() {
                    Ok(Some(status)) => break Ok(status),
                    Ok(None) if Instant::now() >= deadline => {
                        kill_group(&mut child);
                        break Err(format!(
                            "compilation took longer than {} s (wasm_run.compile_timeout)",
                            self.timeout.as_secs()
                        ));
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                    Err(e) => {
                        kill_group(&mut child);
                        break Err(format!("waiting for the component compiler: {e}"));
                    }
                }
            };
            let io = match (io.join(), errs.join()) {
                (Ok((out, ())), Ok(err)) => Ok((out, err)),
                _ => Err(()),
            };
            (status, io)
        });
        let (status, io) = io;
        let status = status.map_err(Error::Sandbox)?;
        let (out, err) = io.map_err(|_| Error::Sandbox("the compiler reader panicked".into()))?;
        let err = String::from_utf8_lossy(&err);
        let err = err
            .trim()
            .trim_start_matches(&format!("{COMPILER_NAME}: "))
            .to_owned();
        // Checked first: a child cut off at the cap dies of the closed pipe.
        if out.as_ref().is_ok_and(|out| out.len() as u64 > max_output) {
            return Err(Error::Sandbox(format!(
                "the compiled component exceeds {max_output} bytes (wasm_run.max_compiled_size)"
            )));
        }
        match (status.code(), status.signal()) {
            (Some(0), _) => out.map_err(Error::Io),
            (Some(EXIT_INVALID), _) => Err(Error::InvalidComponent(wasmtime::format_err!("{err}"))),
            (Some(EXIT_OOM), _) => Err(Error::CompileLimit(format!(
                "compilation ran out of memory (limit {} bytes, wasm_run.compile_memory)",
                self.memory_bytes
            ))),
            (Some(code), _) => Err(Error::Sandbox(format!(
                "the component compiler failed (exit {code}): {err}"
            ))),
            (None, Some(sig)) if sig == libc::SIGXCPU || sig == libc::SIGKILL => {
                Err(Error::CompileLimit(format!(
                    "compilation used more than {} s of CPU (wasm_run.compile_cpu_time)",
                    self.cpu_seconds
                )))
            }
            (None, Some(sig)) if sig == libc::SIGABRT || sig == libc::SIGSEGV => {
                Err(Error::CompileLimit(format!(
                    "compilation ran out of memory (limit {} bytes, wasm_run.compile_memory)",
                    self.memory_bytes
                )))
            }
            (_, sig) => Err(Error::Sandbox(format!(
                "the component compiler died (signal {sig:?})"
            ))),
        }
    }
}

/// One of the compiler's concurrency slots, given back on drop.
struct Slot<'a>(&'a Compiler);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        let mut running = self.0.running.lock().unwrap_or_else(|p| p.into_inner());
        *running = running.saturating_sub(1);
        self.0.freed.notify_one();
    }
}

/// In the forked child: own process group, limits, no core, die with the parent.
fn limit_self(memory: u64, cpu: u64) -> std::io::Result<()> {
    fn check(r: libc::c_int) -> std::io::Result<()> {
        if r == 0 {
            Ok(())
        } else {
            Err(std::io::Error::last_os_error())
        }
    }
    let limit = |soft: u64, hard: u64| libc::rlimit {
        rlim_cur: libc::rlim_t::from(soft),
        rlim_max: libc::rlim_t::from(hard),
    };
    // SAFETY: plain syscalls on this (single-threaded, forked) process with
    // pointers to locals.
    unsafe {
        check(libc::setpgid(0, 0))?;
        check(libc::setrlimit(libc::RLIMIT_AS, &limit(memory, memory)))?;
        check(libc::setrlimit(
            libc::RLIMIT_CPU,
            &limit(cpu, cpu.saturating_add(1)),
        ))?;
        check(libc::setrlimit(libc::RLIMIT_CORE, &limit(0, 0)))?;
        check(libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0))?;
        // The helper shares the worker's memory cgroup: when a hostile compile pushes the
        // cgroup to its limit, the kernel's OOM killer must pick the helper, never the worker
        // (which would lose every session). Best effort (open/write/close are async-signal-safe;
        // the path is a static C string): a kernel without the file still has RLIMIT_AS.
        let fd = libc::open(
            c"/proc/self/oom_score_adj".as_ptr(),
            libc::O_WRONLY | libc::O_CLOEXEC,
        );
        if fd >= 0 {
            let _ = libc::write(fd, b"1000".as_ptr().cast(), 4);
            libc::close(fd);
        }
        // And it yields the CPU to the worker's own threads.
        let _ = libc::setpriority(libc::PRIO_PROCESS, 0, 10);
    }
    Ok(())
}

/// Kills the child's process group, then reaps the child. Only before the reap is
/// the group id certain to still be the child's (an unreaped pid is not reused).
fn kill_group(child: &mut std::process::Child) {
    if let Ok(pid) = libc::pid_t::try_from(child.id()) {
        // SAFETY: signals the child's own process group (it called setpgid(0, 0)
        // before exec, and it has not been reaped yet).
        unsafe {
            libc::kill(-pid, libc::SIGKILL);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
}

/// Finds the helper (see the module docs).
fn locate(configured: Option<&Path>) -> std::result::Result<PathBuf, String> {
    if let Some(p) = configured {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(format!(
                "wasm_run.compiler_path {} is not a file",
                p.display()
            ))
        };
    }
    if let Some(p) = std::env::var_os("WASM_SANDBOX_COMPILE") {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(format!(
                "WASM_SANDBOX_COMPILE={} is not a file",
                p.display()
            ))
        };
    }
    let exe = std::env::current_exe().map_err(|e| format!("current executable: {e}"))?;
    if SELF_SERVES.load(Ordering::Acquire) {
        // `/proc/self/exe` in the forked child names the image this worker runs, even after
        // the binary was replaced on disk (an in-place upgrade): its engine matches ours.
        let own = PathBuf::from("/proc/self/exe");
        return Ok(if own.exists() { own } else { exe });
    }
    let beside = exe.parent().map(|d| d.join(COMPILER_NAME));
    let above = exe
        .parent()
        .and_then(Path::parent)
        .map(|d| d.join(COMPILER_NAME));
    [beside, above]
        .into_iter()
        .flatten()
        .find(|p| p.is_file())
        .ok_or_else(|| {
            format!(
                "the component compiler helper ({COMPILER_NAME}) was not found; set wasm_run.compiler_path or WASM_SANDBOX_COMPILE"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::hash::{DefaultHasher, Hash, Hasher};

    /// The smallest valid component: the header alone.
    const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

    #[test]
    fn the_helpers_engine_output_loads_in_the_workers_pooling_engine() {
        let config = RuntimeConfig {
            engine: EngineConfig {
                max_instances: 4,
                ..EngineConfig::default()
            },
            ..RuntimeConfig::default()
        };
        assert!(config.engine.pooling);
        let worker = crate::engine::build_engine(&config).unwrap();
        let child = child_engine(&config.engine, &config.limits).unwrap();
        let hash = |e: &wasmtime::Engine| {
            let mut h = DefaultHasher::new();
            e.precompile_compatibility_hash().hash(&mut h);
            h.finish()
        };
        assert_eq!(hash(&worker), hash(&child));
        let bytes = child.precompile_component(EMPTY_COMPONENT).unwrap();
        // SAFETY: produced just now by `precompile_component`.
        unsafe { wasmtime::component::Component::deserialize(&worker, &bytes) }.unwrap();
    }

    #[test]
    fn without_a_helper_nothing_is_compiled() {
        let mut config = RuntimeConfig::default();
        config.wasm_run.compiler_path = Some("/nonexistent/wasm-sandbox-compile".into());
        let compiler = Compiler::new(&config);
        let err = compiler.compile(EMPTY_COMPONENT).unwrap_err().to_string();
        assert!(err.contains("wasm_run.compiler_path"), "{err}");
    }
}
