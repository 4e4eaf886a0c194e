//! Helpers shared by the usage integration tests (`ledger`, `sink`, `full_disk`).
#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::collections::BTreeMap;

use wasm_sandbox_usage::{CpuSeconds, NnUsage, SCHEMA_VERSION, UsageRecord};

/// A lean record of session `n` (environment `env_1`, worker `w`, claimed 10:00 and torn
/// down 10:01 on 2026-12-07): no readings, no calls, no shape; its `record_id`
/// (`env_1/sess_{n}/work_{n}/nonce{n}`) is unique per `n`. Tests that need readings set
/// them with struct update syntax.
pub fn record(n: u32) -> UsageRecord {
    UsageRecord {
        schema: SCHEMA_VERSION,
        record_id: format!("env_1/sess_{n}/work_{n}/nonce{n}"),
        environment_id: "env_1".into(),
        work_id: format!("work_{n}"),
        session_id: format!("sess_{n}"),
        worker_id: "w".into(),
        claimed_at: "2026-12-07T10:00:00.000Z".into(),
        torn_down_at: "2026-12-07T10:01:00.000Z".into(),
        active_ms: 10,
        cpu: CpuSeconds::new(None, 0.0, 0.0),
        memory_peak_bytes: None,
        disk_peak_bytes: None,
        tool_calls: BTreeMap::new(),
        wasi_nn: NnUsage::default(),
        network: None,
        shape: None,
    }
}
