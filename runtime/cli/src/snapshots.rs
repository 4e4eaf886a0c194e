//! `wasm-sandbox snapshots list|delete`: the operator's view of `[runtime.persistence]`.
//!
//! Reads the store from the same config file as `serve` (`--config FILE`, its
//! `[runtime.persistence]` table; the encryption key is not needed to list or delete).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

/// `snapshots` arguments.
#[derive(Args, Debug)]
pub struct SnapshotsCommand {
    /// The config file with the `[runtime.persistence]` table.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    action: Action,
}

#[derive(Subcommand, Debug)]
enum Action {
    /// List the stored generations (of one session, or of every session).
    List {
        /// `sesn_…`; all sessions when absent.
        #[arg(long)]
        session: Option<String>,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Delete every snapshot of a session.
    Delete {
        /// `sesn_…`.
        #[arg(long)]
        session: String,
    },
}

impl SnapshotsCommand {
    /// Runs the command.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let Some(path) = &self.config else {
            anyhow::bail!("--config FILE is required (the file with [runtime.persistence])");
        };
        let file = crate::serve::FileConfig::load(path)?;
        let Some(mut cfg) = file.runtime.persistence.clone() else {
            anyhow::bail!("{}: no [runtime.persistence] table", path.display());
        };
        // Listing and deleting never open an object: no key needed.
        cfg.encryption_key_env = None;
        // A missing file:// directory is not created: nothing is stored there.
        let p = wasm_sandbox_persist::Persistence::open_existing(&cfg)?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        rt.block_on(async {
            match self.action {
                Action::List { session, json } => {
                    let list = match &p {
                        Some(p) => p.list(session.as_deref()).await?,
                        None => Vec::new(),
                    };
                    if !json {
                        println!("{:<40} {:>10} {:>12}  last modified", "session", "generation", "manifest");
                    }
                    for s in list {
                        for g in &s.generations {
                            let t = humantime::format_rfc3339_seconds(g.last_modified);
                            if json {
                                println!(
                                    "{}",
                                    serde_json::json!({"session_id": s.session_id, "generation": g.generation,
                                                       "manifest_bytes": g.size, "last_modified": t.to_string()})
                                );
                            } else {
                                println!("{:<40} {:>10} {:>12}  {t}", s.session_id, g.generation, g.size);
                            }
                        }
                    }
                    Ok(ExitCode::SUCCESS)
                }
                Action::Delete { session } => {
                    let n = match &p {
                        Some(p) => p.delete_session(&session).await?,
                        None => 0,
                    };
                    println!("{session}: {n} objects deleted");
                    Ok(ExitCode::SUCCESS)
                }
            }
        })
    }
}
