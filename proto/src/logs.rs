//! Log output shared by the monitor and the keeper: human-readable lines by
//! default, one JSON object per line with `--log-format json`, to stderr;
//! `RUST_LOG` sets the filter (default `info`).

/// The `--log-format` of `pgpilot-monitor run` and `pgpilot-keeper run`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Install the process's log subscriber.
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
