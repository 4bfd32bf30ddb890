//! Log output of Palisade's processes (policy-server, controller, CLI): one
//! format flag and one set-up, so that every binary logs the same way.

use clap::ValueEnum;

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object a line, fields at the top level (for log collectors).
    Json,
}

/// Sends logs to standard error, filtered by `filter` (`info`,
/// `palisade_host=debug`...). Colours only on a terminal and when `colour`:
/// a pod's log, a file or a pipe gets plain text. A second call does nothing.
pub fn init(filter: &str, format: LogFormat, colour: bool) {
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_ansi(colour && std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
