//! The `[runtime.persistence]` table.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[runtime.persistence]`: snapshots of a session's `/workspace` and `/mnt/session/outputs`
/// between its work items. No table = no persistence (the workspace is removed at teardown).
///
/// ```toml
/// [runtime.persistence]
/// store = "s3://my-bucket/wasm-sandbox"   # or "file:///var/lib/wasm-sandbox/snapshots"
/// ttl = "7d"
/// max_size = "1GiB"
/// max_entries = 200000
/// checkpoint_interval = "5m"
/// encryption_key_env = "WASM_SANDBOX_SNAPSHOT_KEY"
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PersistenceConfig {
    /// Where snapshots live: `file:///absolute/dir` (one machine, or a shared volume) or
    /// `s3://bucket[/prefix]` (region and credentials from the standard `AWS_*` environment
    /// variables: `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
    /// `AWS_SESSION_TOKEN`, web identity / container credentials). Required.
    pub store: String,
    /// S3-compatible endpoint (`http://127.0.0.1:9000`, MinIO, R2, …); unset = AWS. Plain
    /// `http://` is accepted only for this explicit key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// How long a session's snapshots are kept after its last item (default `"7d"`); the
    /// worker's sweep deletes older ones (see also the bucket lifecycle rule in `deploy/`).
    #[serde(default = "default_ttl", with = "wasm_sandbox_units::duration")]
    pub ttl: Duration,
    /// Largest snapshot of one session, file bytes (default `"1GiB"`). A bigger workspace is
    /// not saved: the previous snapshot stays, the failure is logged and counted.
    #[serde(
        default = "default_max_size",
        rename = "max_size",
        with = "wasm_sandbox_units::size"
    )]
    pub max_bytes: u64,
    /// Most entries (files, directories, links) of one snapshot (default 200,000). Their names
    /// and link targets together are bounded too, at 32 MiB (`manifest::MAX_NAME_BYTES`).
    #[serde(default = "default_max_entries")]
    pub max_entries: u64,
    /// Checkpoint interval during a long item (default `"5m"`; `"0s"` = only at item end).
    #[serde(default = "default_checkpoint", with = "wasm_sandbox_units::duration")]
    pub checkpoint_interval: Duration,
    /// Name of an environment variable holding the encryption key (64 hex digits = 32 bytes,
    /// one per environment). Set: every object (manifests and contents) is sealed with
    /// ChaCha20-Poly1305 under a random nonce and object names are keyed hashes, so the store
    /// holds nothing readable. Unset: stored in the clear (integrity still checked by SHA-256).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption_key_env: Option<String>,
}

fn default_ttl() -> Duration {
    Duration::from_secs(7 * 24 * 3600)
}
fn default_max_size() -> u64 {
    1 << 30
}
fn default_max_entries() -> u64 {
    200_000
}
fn default_checkpoint() -> Duration {
    Duration::from_secs(300)
}

impl PersistenceConfig {
    /// A configuration with every default and `store`.
    pub fn new(store: impl Into<String>) -> PersistenceConfig {
        PersistenceConfig {
            store: store.into(),
            endpoint: None,
            ttl: default_ttl(),
            max_bytes: default_max_size(),
            max_entries: default_max_entries(),
            checkpoint_interval: default_checkpoint(),
            encryption_key_env: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_unknown_keys() {
        let c: PersistenceConfig = serde_json::from_str(r#"{"store": "file:///x"}"#).unwrap();
        assert_eq!(c, PersistenceConfig::new("file:///x"));
        let c: PersistenceConfig = serde_json::from_str(
            r#"{"store": "s3://b/p", "max_size": "10MiB", "ttl": "1h", "checkpoint_interval": "0s"}"#,
        )
        .unwrap();
        assert_eq!(c.max_bytes, 10 << 20);
        assert_eq!(c.ttl, Duration::from_secs(3600));
        assert_eq!(c.checkpoint_interval, Duration::ZERO);
        assert!(
            serde_json::from_str::<PersistenceConfig>(r#"{"store": "x", "sotre": 1}"#).is_err()
        );
        assert!(serde_json::from_str::<PersistenceConfig>(r#"{}"#).is_err());
    }
}
