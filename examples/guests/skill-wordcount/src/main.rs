//! `wordcount`: the Rust example of a skill that ships a WASI component
//! (`examples/skills/rust-wordcount`). A plain `wasi:cli/command` built from
//! std Rust for `wasm32-wasip2`; no bindings needed.
//!
//! ```text
//! wasm-run skills/rust-wordcount/wordcount.wasm [--top N] [FILE...]
//! ```
//!
//! Prints `lines words bytes name` per file (stdin when no file is given) and
//! a `total` line for several files, like `wc`; `--top N` then prints the N
//! most frequent words as `count word`. It can open only what the session
//! preopens (`/workspace`, `/mnt/session/outputs`, `/mnt/memory/*`, and the
//! working directory as `.`): any other path fails with the OS error, exit 1.

use std::collections::HashMap;
use std::io::Read;
use std::process::ExitCode;

#[derive(Default)]
struct Counts {
    lines: usize,
    words: usize,
    bytes: usize,
}

fn count(data: &[u8], freq: &mut HashMap<String, usize>) -> Counts {
    let text = String::from_utf8_lossy(data);
    let mut c = Counts {
        lines: data.iter().filter(|&&b| b == b'\n').count(),
        bytes: data.len(),
        ..Counts::default()
    };
    for word in text.split_whitespace() {
        c.words += 1;
        let w: String = word
            .chars()
            .filter(|ch| ch.is_alphanumeric())
            .flat_map(char::to_lowercase)
            .collect();
        if !w.is_empty() {
            *freq.entry(w).or_default() += 1;
        }
    }
    c
}

fn main() -> ExitCode {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let mut top = 0usize;
    if let Some(i) = args.iter().position(|a| a == "--top") {
        let Some(n) = args.get(i + 1).and_then(|n| n.parse().ok()) else {
            eprintln!("wordcount: --top needs a number");
            return ExitCode::from(2);
        };
        top = n;
        args.drain(i..=i + 1);
    }
    let mut freq = HashMap::new();
    let mut total = Counts::default();
    let mut status = ExitCode::SUCCESS;
    let inputs: Vec<Option<String>> = if args.is_empty() {
        vec![None]
    } else {
        args.iter().cloned().map(Some).collect()
    };
    for input in &inputs {
        let data = match input {
            None => {
                let mut buf = Vec::new();
                std::io::stdin().read_to_end(&mut buf).map(|_| buf)
            }
            Some(path) => std::fs::read(path),
        };
        let name = input.as_deref().unwrap_or("-");
        match data {
            Ok(data) => {
                let c = count(&data, &mut freq);
                println!("{} {} {} {name}", c.lines, c.words, c.bytes);
                total.lines += c.lines;
                total.words += c.words;
                total.bytes += c.bytes;
            }
            Err(e) => {
                eprintln!("wordcount: {name}: {e}");
                status = ExitCode::FAILURE;
            }
        }
    }
    if inputs.len() > 1 {
        println!("{} {} {} total", total.lines, total.words, total.bytes);
    }
    let mut words: Vec<(String, usize)> = freq.into_iter().collect();
    words.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    for (w, n) in words.into_iter().take(top) {
        println!("{n} {w}");
    }
    status
}
