//! Measurement helpers shared by the bench binaries: run a closure many
//! times, report p50/p99/mean as a markdown table row.
//!
//! The bench binaries (`cargo bench -p wasm-sandbox-benches`) print tables
//! that go straight into `BENCHMARKS.md`; they assert nothing. With
//! `BENCH_SAMPLES=FILE` every measurement also appends its raw samples to
//! `FILE` as one JSON line (`{"name": .., "us": [..]}`), which
//! `benches/plot_samples.py` turns into an SVG of the distributions.

use std::time::{Duration, Instant};

/// Latency statistics of one measurement.
#[derive(Clone, Debug)]
pub struct Stats {
    /// What was measured.
    pub name: String,
    /// Number of timed iterations.
    pub n: usize,
    /// Median.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// Mean.
    pub mean: Duration,
}

impl Stats {
    /// Computes statistics from raw samples.
    pub fn from_samples(name: &str, mut samples: Vec<Duration>) -> Stats {
        samples.sort();
        if let Some(path) = std::env::var_os("BENCH_SAMPLES") {
            record_samples(std::path::Path::new(&path), name, &samples);
        }
        let n = samples.len().max(1);
        let pick = |q: f64| {
            samples
                .get(
                    ((n as f64 * q).ceil() as usize)
                        .saturating_sub(1)
                        .min(n - 1),
                )
                .copied()
                .unwrap_or_default()
        };
        let total: Duration = samples.iter().sum();
        Stats {
            name: name.to_string(),
            n: samples.len(),
            p50: pick(0.50),
            p99: pick(0.99),
            mean: total / n as u32,
        }
    }

    /// A markdown table row: `| name | n | p50 µs | p99 µs | mean µs |`.
    pub fn row(&self) -> String {
        format!(
            "| {} | {} | {:.1} | {:.1} | {:.1} |",
            self.name,
            self.n,
            us(self.p50),
            us(self.p99),
            us(self.mean)
        )
    }
}

/// Appends one JSON line with the raw samples (µs) to `path`; a failure is
/// reported on stderr and otherwise ignored (a bench must not die for a plot).
fn record_samples(path: &std::path::Path, name: &str, samples: &[Duration]) {
    use std::io::Write;
    let us: Vec<String> = samples.iter().map(|d| format!("{:.3}", us(*d))).collect();
    let name = name.replace('\\', "\\\\").replace('"', "\\\"");
    let line = format!("{{\"name\": \"{name}\", \"us\": [{}]}}\n", us.join(", "));
    let written = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(line.as_bytes()));
    if let Err(e) = written {
        eprintln!("BENCH_SAMPLES: {}: {e}", path.display());
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Times `f` `iters` times after `warmup` untimed runs.
pub fn measure(name: &str, warmup: usize, iters: usize, mut f: impl FnMut()) -> Stats {
    for _ in 0..warmup {
        f();
    }
    let mut samples = Vec::with_capacity(iters);
    for _ in 0..iters {
        let t = Instant::now();
        f();
        samples.push(t.elapsed());
    }
    Stats::from_samples(name, samples)
}

/// Prints a table header.
pub fn header(title: &str) {
    println!("\n### {title}\n");
    println!("| measurement | n | p50 µs | p99 µs | mean µs |");
    println!("|---|---|---|---|---|");
}

/// Iteration count: `BENCH_ITERS` or the default.
pub fn iters(default: usize) -> usize {
    std::env::var("BENCH_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles() {
        let s = Stats::from_samples("x", (1..=100).map(Duration::from_micros).collect());
        assert_eq!(s.p50, Duration::from_micros(50));
        assert_eq!(s.p99, Duration::from_micros(99));
        assert_eq!(s.n, 100);
    }
}
