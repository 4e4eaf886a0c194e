//! OS errors phrased the way the reference phrases them (`_fs_error`,
//! `_fs_reason`); see the [`paths`](super) module docs.

use std::io;

use crate::result::ToolFail;

/// The reference's `_fs_error`: `<op>: <input>: <reason>` as a `ToolError`.
pub fn fs_reason(op: &str, input: &str, err: &io::Error) -> ToolFail {
    ToolFail::Tool(format!("{op}: {input}: {}", reason(err)))
}

/// The reference's `_fs_reason`: a runtime-independent phrase for an OS
/// error (`no such file or directory`, `permission denied`, …, otherwise
/// glibc's `strerror` lower-cased).
pub fn reason(err: &io::Error) -> String {
    if let Some(code) = err.raw_os_error() {
        if code == libc::ENOENT {
            return "no such file or directory".into();
        }
        if code == libc::ENOTDIR {
            return "not a directory".into();
        }
        if code == libc::EISDIR {
            return "is a directory".into();
        }
        if code == libc::EACCES || code == libc::EPERM || is_not_capable(code) {
            return "permission denied".into();
        }
        if code == libc::EEXIST {
            return "file already exists".into();
        }
        if code == libc::ELOOP {
            return "too many levels of symbolic links".into();
        }
        return strerror_lower(code);
    }
    match err.kind() {
        io::ErrorKind::NotFound => "no such file or directory".into(),
        io::ErrorKind::NotADirectory => "not a directory".into(),
        io::ErrorKind::IsADirectory => "is a directory".into(),
        io::ErrorKind::PermissionDenied => "permission denied".into(),
        io::ErrorKind::AlreadyExists => "file already exists".into(),
        _ => "i/o error".into(),
    }
}

#[cfg(target_os = "wasi")]
fn is_not_capable(code: i32) -> bool {
    // Python counts ENOTCAPABLE as a PermissionError.
    code == libc::ENOTCAPABLE
}

#[cfg(not(target_os = "wasi"))]
fn is_not_capable(_code: i32) -> bool {
    false
}

/// glibc's `strerror` texts (what CPython shows on Linux), lower-cased. The
/// errno values come from `libc`, so the WASI numbering maps to the same
/// words.
fn strerror_lower(code: i32) -> String {
    const TABLE: &[(i32, &str)] = &[
        (libc::EIO, "input/output error"),
        (libc::ENXIO, "no such device or address"),
        (libc::E2BIG, "argument list too long"),
        (libc::EBADF, "bad file descriptor"),
        (libc::EAGAIN, "resource temporarily unavailable"),
        (libc::ENOMEM, "cannot allocate memory"),
        (libc::EFAULT, "bad address"),
        (libc::EBUSY, "device or resource busy"),
        (libc::EXDEV, "invalid cross-device link"),
        (libc::ENODEV, "no such device"),
        (libc::EINVAL, "invalid argument"),
        (libc::ENFILE, "too many open files in system"),
        (libc::EMFILE, "too many open files"),
        (libc::ETXTBSY, "text file busy"),
        (libc::EFBIG, "file too large"),
        (libc::ENOSPC, "no space left on device"),
        (libc::ESPIPE, "illegal seek"),
        (libc::EROFS, "read-only file system"),
        (libc::EMLINK, "too many links"),
        (libc::ENAMETOOLONG, "file name too long"),
        (libc::ENOTEMPTY, "directory not empty"),
        (libc::EDQUOT, "disk quota exceeded"),
        (libc::ESTALE, "stale file handle"),
        (libc::EOVERFLOW, "value too large for defined data type"),
        (
            libc::EILSEQ,
            "invalid or incomplete multibyte or wide character",
        ),
        (libc::ENOSYS, "function not implemented"),
        (libc::ENOTSUP, "operation not supported"),
        (libc::EINTR, "interrupted system call"),
        (libc::ETIMEDOUT, "connection timed out"),
        (libc::ENOEXEC, "exec format error"),
        (libc::EDEADLK, "resource deadlock avoided"),
    ];
    TABLE.iter().find(|(c, _)| *c == code).map_or_else(
        || format!("unknown error {code}"),
        |(_, s)| (*s).to_string(),
    )
}

/// True for the errors `_canonicalize` treats as "this component does not
/// exist yet" (`ENOENT`, `ENOTDIR`).
pub(super) fn is_missing(err: &io::Error) -> bool {
    match err.raw_os_error() {
        Some(code) => code == libc::ENOENT || code == libc::ENOTDIR,
        None => matches!(
            err.kind(),
            io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
        ),
    }
}

pub(super) fn os_error(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fs_reasons_are_normalised() {
        let e = std::fs::read("/definitely/not/here").unwrap_err();
        assert_eq!(
            fs_reason("read", "x", &e),
            ToolFail::Tool("read: x: no such file or directory".into())
        );
        assert_eq!(reason(&os_error(libc::EISDIR)), "is a directory");
        assert_eq!(reason(&os_error(libc::EPERM)), "permission denied");
        assert_eq!(reason(&os_error(libc::EEXIST)), "file already exists");
        assert_eq!(reason(&os_error(libc::ENAMETOOLONG)), "file name too long");
        assert_eq!(reason(&os_error(libc::ENOSPC)), "no space left on device");
        assert_eq!(reason(&io::Error::other("x")), "i/o error");
    }
}
