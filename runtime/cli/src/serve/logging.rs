//! Logging: the `tracing` subscriber on stderr (text, or one flat JSON object per line:
//! [`JsonLine`]), and [`report_fatal`] for the error that ends the process.

use serde::Deserialize;

use super::args::{LogFormat, ServeArgs};

/// Whether [`init_logging`] installed JSON lines (read by [`report_fatal`]).
static JSON_LOGS: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Installs the `tracing` subscriber (stderr, `RUST_LOG` filter, else `default_level`). Does
/// nothing if one is already installed.
///
/// With [`LogFormat::Json`] each event is one JSON object on one line ([`JsonLine`]):
/// `timestamp` (RFC 3339, UTC), `level`, `message`, `target`, the event's other fields, and
/// the fields of the spans it happened in (`work_id`, `session_id`, `tool`, …), all at the
/// top level, plus `spans` (their names, outermost first). Values are JSON-escaped, so text
/// the agent controls (a path, a command) cannot end the line or forge another entry.
pub fn init_logging(format: LogFormat, default_level: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Json => builder
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(JsonLine)
            .try_init()
            .is_ok(),
        LogFormat::Text => builder.try_init().is_ok(),
    };
    if installed {
        JSON_LOGS.store(
            format == LogFormat::Json,
            std::sync::atomic::Ordering::Relaxed,
        );
    }
}

/// Reports an error that ends the process: one JSON line (`level` `ERROR`, the error chain as
/// `message`, `"fatal": true`) when JSON logs are installed, else `error: …` on stderr. Written
/// directly, not through `tracing`, so that no `RUST_LOG` filter can hide it.
pub fn report_fatal(err: &anyhow::Error) {
    if JSON_LOGS.load(std::sync::atomic::Ordering::Relaxed) {
        let mut line = serde_json::Map::new();
        line.insert("fatal".into(), true.into());
        eprintln!(
            "{}",
            json_line(line, "ERROR", "wasm_sandbox", &format!("{err:#}"))
        );
    } else {
        eprintln!("error: {err:#}");
    }
}

/// Adds the fixed keys to `fields` and serialises it. The fixed keys win over fields of the
/// same name, so every line has them with their meaning.
fn json_line(
    mut fields: serde_json::Map<String, serde_json::Value>,
    level: &str,
    target: &str,
    message: &str,
) -> serde_json::Value {
    let now = humantime::format_rfc3339_micros(std::time::SystemTime::now()).to_string();
    fields.insert("timestamp".into(), now.into());
    fields.insert("level".into(), level.into());
    fields.insert("target".into(), target.into());
    fields.insert("message".into(), message.into());
    serde_json::Value::Object(fields)
}

/// The JSON event format of `--log-format json` (see [`init_logging`]). tracing-subscriber's
/// own JSON format nests the span fields under `span`/`spans` and, without
/// `flatten_event`, the message under `fields`; log pipelines want them at the top level.
#[derive(Clone, Copy, Debug, Default)]
pub struct JsonLine;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for JsonLine
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let mut fields = serde_json::Map::new();
        let mut spans = Vec::new();
        if let Some(scope) = ctx.event_scope() {
            // Outermost first, so an inner span's field wins a clash.
            for span in scope.from_root() {
                spans.push(serde_json::Value::from(span.name()));
                let ext = span.extensions();
                // With `JsonFields` as the field formatter, a span's fields are stored as a
                // JSON object.
                if let Some(stored) = ext.get::<tracing_subscriber::fmt::FormattedFields<N>>()
                    && let Ok(serde_json::Value::Object(map)) =
                        serde_json::from_str::<serde_json::Value>(stored.as_str())
                {
                    fields.extend(map);
                }
            }
        }
        if !spans.is_empty() {
            fields.insert("spans".into(), spans.into());
        }
        let mut visitor = JsonVisitor {
            fields: &mut fields,
            message: String::new(),
        };
        event.record(&mut visitor);
        let message = std::mem::take(&mut visitor.message);
        let meta = event.metadata();
        let line = json_line(fields, meta.level().as_str(), meta.target(), &message);
        writeln!(writer, "{line}")
    }
}

/// Collects an event's fields as JSON values; `message` separately.
struct JsonVisitor<'a> {
    fields: &'a mut serde_json::Map<String, serde_json::Value>,
    message: String,
}

impl tracing::field::Visit for JsonVisitor<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            self.fields.insert(field.name().into(), value.into());
        }
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.fields.insert(field.name().into(), value.into());
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.fields.insert(field.name().into(), value.into());
    }
    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.fields.insert(field.name().into(), value.into());
    }
    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.fields.insert(field.name().into(), value.into());
    }
    fn record_error(
        &mut self,
        field: &tracing::field::Field,
        value: &(dyn std::error::Error + 'static),
    ) {
        self.record_str(field, &value.to_string());
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.record_str(field, &format!("{value:?}"));
    }
}

/// The log format a `serve` that failed before its settings were resolved should use for its
/// fatal error: the flag, else the config file's `log_format` if the file parses, else text.
pub(crate) fn fatal_log_format(args: &ServeArgs) -> LogFormat {
    args.log_format
        .or_else(|| {
            let path = args.config.as_ref()?;
            let text = std::fs::read_to_string(path).ok()?;
            #[derive(Deserialize)]
            struct OnlyFormat {
                log_format: Option<LogFormat>,
            }
            toml::from_str::<OnlyFormat>(&text).ok()?.log_format
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--log-format json`: text the agent controls (a path, a command) may hold newlines,
    /// quotes or a field called `level`; none of it can end the line or forge another entry's
    /// fixed keys. Span fields sit at the top level beside `message` (issue 17).
    #[test]
    fn json_lines_are_flat_and_cannot_be_forged() {
        use std::sync::{Arc, Mutex};
        #[derive(Clone, Default)]
        struct Buf(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buf {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let buf = Buf::default();
        let out = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || out.clone())
            .fmt_fields(tracing_subscriber::fmt::format::JsonFields::new())
            .event_format(JsonLine)
            .finish();
        let hostile = "x\n{\"level\":\"ERROR\",\"message\":\"forged\"}";
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("work", work_id = "work_1", session_id = "sesn_1");
            let _g = span.enter();
            tracing::info!(path = hostile, level = "FORGED", "read {}", hostile);
        });
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1, "{text}");
        let v: serde_json::Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(v["level"], "INFO", "{v}");
        assert_eq!(v["message"], format!("read {hostile}"));
        assert_eq!(v["path"], hostile);
        assert_eq!(v["work_id"], "work_1");
        assert_eq!(v["session_id"], "sesn_1");
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'), "{v}");
        assert!(v.get("fields").is_none() && v.get("span").is_none(), "{v}");
    }
}
