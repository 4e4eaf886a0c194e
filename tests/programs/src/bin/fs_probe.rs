//! A raw filesystem probe: performs one WASI filesystem operation given on
//! the command line and prints `ok <detail>` or `err <io error kind>`.
//!
//! It bypasses the file tools' own path checks, so the confinement tests can
//! show that the preopens alone keep a (possibly hostile) guest inside.
//!
//! Usage: `fs_probe <op> <path> [arg]`, op ∈ read, write, list, stat,
//! lstat, symlink (path = link, arg = target), hardlink (path = new, arg =
//! existing), mkdir, remove, rename (arg = destination), readlink; `spin`
//! computes forever (for cancellation tests).

use std::fs;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let op = args.get(1).map(String::as_str).unwrap_or("");
    let path = args.get(2).cloned().unwrap_or_default();
    let arg = args.get(3).cloned().unwrap_or_default();
    if op == "spin" {
        let mut x = 0u64;
        loop {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
    }
    let r: std::io::Result<String> = match op {
        "read" => fs::read(&path).map(|b| String::from_utf8_lossy(&b).into_owned()),
        "write" => fs::write(&path, arg.as_bytes()).map(|()| "written".into()),
        "append" => {
            use std::io::Write;
            fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .and_then(|mut f| f.write_all(arg.as_bytes()))
                .map(|()| "appended".into())
        }
        "list" => fs::read_dir(&path).map(|d| {
            let mut names: Vec<String> = d
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect();
            names.sort();
            names.join(",")
        }),
        "stat" => fs::metadata(&path).map(|m| format!("len={}", m.len())),
        "lstat" => {
            fs::symlink_metadata(&path).map(|m| format!("symlink={}", m.file_type().is_symlink()))
        }
        "symlink" => symlink(&arg, &path).map(|()| "linked".into()),
        "hardlink" => fs::hard_link(&arg, &path).map(|()| "linked".into()),
        "mkdir" => fs::create_dir(&path).map(|()| "made".into()),
        "remove" => fs::remove_file(&path).map(|()| "removed".into()),
        "rename" => fs::rename(&path, &arg).map(|()| "renamed".into()),
        "readlink" => fs::read_link(&path).map(|p| p.display().to_string()),
        "env" => Ok(std::env::vars()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join(",")),
        other => {
            println!("err unknown op {other}");
            return;
        }
    };
    match r {
        Ok(s) => println!("ok {s}"),
        Err(e) => println!("err {:?}", e.kind()),
    }
}

/// `symlink(target, link)` through the raw `wasi:filesystem` API (std has no
/// stable symlink on WASI): resolve `link` against the longest matching
/// preopen and call `symlink-at` there.
fn symlink(target: &str, link: &str) -> std::io::Result<()> {
    let dirs = wasi::filesystem::preopens::get_directories();
    let best = dirs
        .iter()
        .filter(|(_, guest)| link.starts_with(&format!("{}/", guest.trim_end_matches('/'))))
        .max_by_key(|(_, guest)| guest.len());
    let Some((dir, guest)) = best else {
        return Err(std::io::Error::from(std::io::ErrorKind::NotFound));
    };
    let rel = &link[guest.trim_end_matches('/').len() + 1..];
    dir.symlink_at(target, rel)
        .map_err(|code| std::io::Error::other(format!("{code:?}")))
}
