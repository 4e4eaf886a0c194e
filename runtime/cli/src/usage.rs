//! `wasm-sandbox usage`: the usage ledger summarised per environment and UTC day (see
//! `wasm_sandbox_usage::summary`). Reads only: safe beside a running worker, which appends to
//! the same ledger (a line it is still writing is left out).

use std::process::ExitCode;

use clap::Args;

/// Summarise a usage ledger: per environment and day, sessions, active seconds, CPU-seconds,
/// vCPU-hours and GB-hours of the shape while active (idle time excluded).
#[derive(Args, Debug)]
pub struct UsageCommand {
    /// The ledger directory (`<workdir>/usage` unless `[usage] ledger_dir` says otherwise).
    #[arg(long)]
    ledger: std::path::PathBuf,
    /// Only records claimed at or after this time (`YYYY-MM-DD`, UTC midnight, or RFC 3339).
    #[arg(long)]
    since: Option<String>,
    /// `table`, `json` or `csv`.
    #[arg(long, default_value = "table")]
    format: wasm_sandbox_usage::Format,
}

impl UsageCommand {
    /// Prints the summary.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let since = self
            .since
            .as_deref()
            .map(wasm_sandbox_usage::parse_since)
            .transpose()
            .map_err(|e| anyhow::anyhow!(e))?;
        anyhow::ensure!(
            self.ledger.is_dir(),
            "{}: not a directory (the usage ledger is <workdir>/usage)",
            self.ledger.display()
        );
        let (records, skipped) = wasm_sandbox_usage::read_all_counted(&self.ledger)
            .map_err(|e| anyhow::anyhow!("{}: {e}", self.ledger.display()))?;
        if skipped.junk > 0 || skipped.torn > 0 {
            // Not silent: a skipped line may be a record the summary does not count.
            eprintln!(
                "{}: skipped {} line(s) that are not records and {} torn line(s) \
                 (a crash mid-write, or a line being written now)",
                self.ledger.display(),
                skipped.junk,
                skipped.torn
            );
        }
        let rows = wasm_sandbox_usage::summarise(&records, since);
        use std::io::Write;
        std::io::stdout().write_all(wasm_sandbox_usage::render(&rows, self.format).as_bytes())?;
        Ok(ExitCode::SUCCESS)
    }
}
