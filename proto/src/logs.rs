//! Log output shared by the monitor and the keeper: human-readable lines by
//! default, one JSON object per line with `--log-format json`, to stderr;
//! `RUST_LOG` sets the filter (default `info`). Colours only when stderr is
//! a terminal (and `NO_COLOR` is not set): a log file or a pipe to
//! journald gets plain text.

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
        .with_ansi(colour(
            std::io::IsTerminal::is_terminal(&std::io::stderr()),
            std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()),
        ))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Whether log lines carry colour codes: on a terminal, unless `NO_COLOR`
/// asks for none (<https://no-color.org>).
fn colour(terminal: bool, no_color: bool) -> bool {
    terminal && !no_color
}

#[cfg(test)]
mod tests {
    use super::colour;

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(colour(true, false));
        assert!(!colour(false, false));
        assert!(!colour(true, true));
        assert!(!colour(false, true));
    }
}
