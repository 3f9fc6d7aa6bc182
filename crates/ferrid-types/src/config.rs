//! Pieces every Ferrid configuration file shares: the error type (each error names the
//! key at fault) and the `[log]` section.
use std::path::PathBuf;

use serde::Deserialize;

/// A configuration problem, naming the key and what is wrong.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key or a value of the wrong type (the message names the key and position).
    #[error("invalid config: {0}")]
    Parse(String),
    /// A key has a value that parses but is not acceptable.
    #[error("invalid config: `{key}`: {reason}")]
    Invalid {
        /// Dotted path of the key.
        key: &'static str,
        /// What is wrong.
        reason: String,
    },
}

/// A [`ConfigError::Invalid`] for `key`.
pub fn invalid(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key, reason: reason.into() }
}

/// `[log]`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `trace`, `debug`, `info`, `warn`, `error` or a tracing filter directive.
    #[serde(default = "default_log_level")]
    pub level: String,
    /// `text` or `json`.
    #[serde(default = "default_log_format")]
    pub format: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { level: default_log_level(), format: default_log_format() }
    }
}

impl LogConfig {
    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !matches!(self.format.as_str(), "text" | "json") {
            return Err(invalid("log.format", format!("{:?} is not one of text, json", self.format)));
        }
        Ok(())
    }
}

fn default_log_level() -> String {
    "info".to_owned()
}
fn default_log_format() -> String {
    "text".to_owned()
}
