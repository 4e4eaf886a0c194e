//! `wasm-run`: how code inside the bash sandbox runs a WASI component under the
//! worker's wasmtime instead of natively.
//!
//! A skill may ship `wasi:cli/command` components. The agent runs them from bash like
//! any command (`wasm-run skills/<name>/tool.wasm args…`). The shim is the init
//! binary again, bound read-only at [`SHIM_GUEST_PATH`] and appended to the
//! allow-listed `PATH`; it connects to a per-session unix socket bound at
//! [`SOCKET_GUEST_PATH`], sends the request and then **relays stdio**: the worker side
//! (`wasm-sandbox-runtime`) runs the component with the session's preopens, the
//! wasi-nn binding and no sockets, and streams its output back here.
//!
//! # Why a relay and not fd passing
//!
//! Passing the shim's stdin/stdout descriptors to the worker (`SCM_RIGHTS`) would let
//! the sandbox hand the worker a FIFO with no reader or a pipe that never fills, and a
//! blocked read/write on a worker thread cannot be interrupted by wasmtime's epoch
//! deadline. With the relay every blocking operation on the agent's descriptors
//! happens in this process, inside the sandbox, and dies with it; the worker only
//! talks to a socket it controls with timeouts.
//!
//! # Wire format
//!
//! Frames of `tag: u8`, `len: u32 LE`, `payload`. The shim sends one [`TAG_REQUEST`]
//! (JSON [`Request`]) and then only [`TAG_DATA`] frames, each answering one
//! [`TAG_READ`] (an empty payload means end of input). The worker sends
//! [`TAG_STDOUT`] / [`TAG_STDERR`] / [`TAG_READ`] frames and ends with [`TAG_EXIT`]
//! (`i32 LE`) or [`TAG_FAIL`] (a UTF-8 message).

use std::ffi::OsString;
use std::io::{self, BufReader, Read, Write};
use std::os::unix::net::UnixStream;

use serde::{Deserialize, Serialize};

/// Directory bound into the sandbox that holds the shim (appended to `PATH`).
pub const SHIM_GUEST_DIR: &str = "/run/wasm-sandbox/bin";
/// The shim's path inside the sandbox.
pub const SHIM_GUEST_PATH: &str = "/run/wasm-sandbox/bin/wasm-run";
/// The shim's program name (`argv[0]`'s file name).
pub const SHIM_NAME: &str = "wasm-run";
/// The per-session socket's path inside the sandbox.
pub const SOCKET_GUEST_PATH: &str = "/run/wasm-sandbox/wasm-run.sock";

/// Shim → worker: the JSON [`Request`].
pub const TAG_REQUEST: u8 = b'Q';
/// Shim → worker: stdin bytes answering a [`TAG_READ`]; empty = end of input.
pub const TAG_DATA: u8 = b'D';
/// Worker → shim: bytes for stdout.
pub const TAG_STDOUT: u8 = b'O';
/// Worker → shim: bytes for stderr.
pub const TAG_STDERR: u8 = b'E';
/// Worker → shim: read at most this many (`u32 LE`) bytes of stdin.
pub const TAG_READ: u8 = b'R';
/// Worker → shim: the component exited with this status (`i32 LE`).
pub const TAG_EXIT: u8 = b'X';
/// Worker → shim: the component could not be run; a message for stderr.
pub const TAG_FAIL: u8 = b'F';

/// Largest frame either side accepts.
pub const MAX_FRAME: usize = 1 << 20;

/// What the shim asks the worker to run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// The component's path (as typed; relative to `cwd`) and its arguments.
    pub argv: Vec<String>,
    /// The shim's working directory inside the sandbox.
    pub cwd: String,
    /// The shim's environment (already the sandbox's scrubbed one).
    pub env: Vec<(String, String)>,
}

/// Writes one frame.
pub fn write_frame(w: &mut impl Write, tag: u8, payload: &[u8]) -> io::Result<()> {
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|&n| n as usize <= MAX_FRAME)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    let mut head = [0u8; 5];
    head[0] = tag;
    head[1..].copy_from_slice(&len.to_le_bytes());
    w.write_all(&head)?;
    w.write_all(payload)?;
    w.flush()
}

/// Reads one frame; `Ok(None)` at a clean end of stream.
pub fn read_frame(r: &mut impl Read) -> io::Result<Option<(u8, Vec<u8>)>> {
    let mut head = [0u8; 5];
    match r.read_exact(&mut head[..1]) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    r.read_exact(&mut head[1..])?;
    let len = u32::from_le_bytes([head[1], head[2], head[3], head[4]]) as usize;
    if len > MAX_FRAME {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("frame of {len} bytes exceeds {MAX_FRAME}"),
        ));
    }
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload)?;
    Ok(Some((head[0], payload)))
}

const USAGE: &str = "usage: wasm-run [--] COMPONENT.wasm [ARGS...]\n\
Runs a wasi:cli/command component under the worker's wasmtime with this session's\n\
directories (/workspace, /mnt/session/outputs, /mnt/memory/*) and nothing else.\n";

/// True when `argv[0]` names the shim (`wasm-run` or a path ending in it).
pub fn invoked_as_shim(argv0: &std::ffi::OsStr) -> bool {
    std::path::Path::new(argv0)
        .file_name()
        .is_some_and(|n| n == SHIM_NAME)
}

/// The shim's entry point (`args` after the program name). Exits with the
/// component's status; 126 when the component could not be run (the message is on
/// stderr), 2 on a usage error.
pub fn wasm_run_main<I: IntoIterator<Item = OsString>>(args: I) -> ! {
    let code = match client(args.into_iter().collect()) {
        Ok(code) => code,
        Err(ClientError::Usage(msg)) => {
            eprint!("{msg}{USAGE}");
            2
        }
        Err(ClientError::Failed(msg)) => {
            eprintln!("wasm-run: {msg}");
            126
        }
    };
    std::process::exit(code)
}

enum ClientError {
    Usage(String),
    Failed(String),
}

fn client(args: Vec<OsString>) -> Result<i32, ClientError> {
    let mut argv: Vec<String> = Vec::with_capacity(args.len());
    for a in args {
        argv.push(
            a.into_string()
                .map_err(|a| ClientError::Usage(format!("argument is not valid UTF-8: {a:?}\n")))?,
        );
    }
    match argv.first().map(String::as_str) {
        None => return Err(ClientError::Usage(String::new())),
        Some("-h" | "--help") => {
            print!("{USAGE}");
            return Ok(0);
        }
        Some("--") => {
            argv.remove(0);
            if argv.is_empty() {
                return Err(ClientError::Usage(String::new()));
            }
        }
        _ => {}
    }
    let cwd = std::env::current_dir()
        .ok()
        .and_then(|p| p.into_os_string().into_string().ok())
        .unwrap_or_else(|| "/".to_owned());
    let env = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect();
    let request = serde_json::to_vec(&Request { argv, cwd, env })
        .map_err(|e| ClientError::Failed(e.to_string()))?;
    let mut sock = UnixStream::connect(SOCKET_GUEST_PATH).map_err(|e| {
        ClientError::Failed(format!(
            "the component bridge is not available in this sandbox ({SOCKET_GUEST_PATH}: {e})"
        ))
    })?;
    let failed = |e: io::Error| ClientError::Failed(format!("bridge: {e}"));
    write_frame(&mut sock, TAG_REQUEST, &request).map_err(failed)?;
    let mut reader = BufReader::new(sock.try_clone().map_err(failed)?);
    let mut stdin = io::stdin().lock();
    loop {
        let Some((tag, payload)) = read_frame(&mut reader).map_err(failed)? else {
            return Err(ClientError::Failed("the worker closed the bridge".into()));
        };
        match tag {
            TAG_STDOUT => write_out(&mut io::stdout().lock(), &payload)?,
            TAG_STDERR => write_out(&mut io::stderr().lock(), &payload)?,
            TAG_READ => {
                let want = payload
                    .get(..4)
                    .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
                    .unwrap_or(0)
                    .clamp(1, MAX_FRAME);
                let mut buf = vec![0u8; want];
                let n = loop {
                    match stdin.read(&mut buf) {
                        Ok(n) => break n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                        // An unreadable stdin reads as end of input, like `< /dev/null`.
                        Err(_) => break 0,
                    }
                };
                write_frame(&mut sock, TAG_DATA, &buf[..n]).map_err(failed)?;
            }
            TAG_EXIT => {
                let code = payload
                    .get(..4)
                    .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .unwrap_or(1);
                return Ok(code);
            }
            TAG_FAIL => {
                return Err(ClientError::Failed(
                    String::from_utf8_lossy(&payload).into_owned(),
                ));
            }
            other => {
                return Err(ClientError::Failed(format!(
                    "unexpected frame {other:#04x} from the worker"
                )));
            }
        }
    }
}

fn write_out(w: &mut impl Write, bytes: &[u8]) -> Result<(), ClientError> {
    match w.write_all(bytes).and_then(|()| w.flush()) {
        Ok(()) => Ok(()),
        // The reader went away (`wasm-run x | head -1`): exit like SIGPIPE would;
        // closing the socket makes the worker cancel the component.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => std::process::exit(141),
        Err(e) => Err(ClientError::Failed(format!("writing output: {e}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_oversized_frames_are_refused() {
        let mut buf = Vec::new();
        write_frame(&mut buf, TAG_STDOUT, b"hello").unwrap();
        write_frame(&mut buf, TAG_EXIT, &3i32.to_le_bytes()).unwrap();
        let mut r = &buf[..];
        assert_eq!(
            read_frame(&mut r).unwrap(),
            Some((TAG_STDOUT, b"hello".to_vec()))
        );
        assert_eq!(
            read_frame(&mut r).unwrap(),
            Some((TAG_EXIT, 3i32.to_le_bytes().to_vec()))
        );
        assert_eq!(read_frame(&mut r).unwrap(), None);

        let mut big = vec![TAG_DATA];
        big.extend_from_slice(&(MAX_FRAME as u32 + 1).to_le_bytes());
        assert!(read_frame(&mut &big[..]).is_err());
        assert!(write_frame(&mut Vec::new(), TAG_DATA, &vec![0; MAX_FRAME + 1]).is_err());
    }

    #[test]
    fn shim_is_recognised_by_file_name_only() {
        assert!(invoked_as_shim("wasm-run".as_ref()));
        assert!(invoked_as_shim(SHIM_GUEST_PATH.as_ref()));
        assert!(!invoked_as_shim("wasm-runner".as_ref()));
        assert!(!invoked_as_shim("/run/wasm-sandbox/init".as_ref()));
    }
}
