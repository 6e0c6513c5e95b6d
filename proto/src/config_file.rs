//! Reading the TOML configuration files of the monitor and the keeper:
//! errors name the file and fit on one line.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("{0}")]
    Invalid(String),
}

/// Read and parse a configuration file.
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    parse(&text, path)
}

/// Parse configuration text; `origin` names it in errors.
pub fn parse<T: DeserializeOwned>(text: &str, origin: &Path) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: origin.to_owned(),
        message: one_line(&e.to_string()),
    })
}

/// toml's errors span several lines with a source excerpt; keep the words.
fn one_line(message: &str) -> String {
    message
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('|') && !l.contains(" | ") && *l != "^")
        .collect::<Vec<_>>()
        .join(": ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Sample {
        name: String,
    }

    #[test]
    fn unknown_key_fits_on_one_line_and_names_the_file() {
        let err = parse::<Sample>("name = \"a\"\ncolour = \"blue\"\n", Path::new("x.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("x.toml: "), "{err}");
        assert!(err.contains("colour"), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }

    #[test]
    fn missing_file_is_named() {
        let err = load::<Sample>(Path::new("/nonexistent/pgpilot.toml"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("/nonexistent/pgpilot.toml"), "{err}");
    }
}
