// Shared by the example guests through `include!` (after their
// `wit_bindgen::generate!`, whose `wasi::nn::errors` types it uses): the
// wasi-nn error as `<code>: <message>`, with the code spelled as in the WIT.

/// The WIT name of an error code.
fn code_name(code: wasi::nn::errors::ErrorCode) -> &'static str {
    use wasi::nn::errors::ErrorCode;
    match code {
        ErrorCode::InvalidArgument => "invalid-argument",
        ErrorCode::InvalidEncoding => "invalid-encoding",
        ErrorCode::Timeout => "timeout",
        ErrorCode::RuntimeError => "runtime-error",
        ErrorCode::UnsupportedOperation => "unsupported-operation",
        ErrorCode::TooLarge => "too-large",
        ErrorCode::NotFound => "not-found",
        ErrorCode::Security => "security",
        ErrorCode::Unknown => "unknown",
    }
}

/// `<code>: <message>` for a wasi-nn error.
fn describe(e: wasi::nn::errors::Error) -> String {
    format!("{}: {}", code_name(e.code()), e.data())
}
