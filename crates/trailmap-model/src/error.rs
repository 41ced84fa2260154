//! One error type for the pipeline; messages say what went wrong and what to do next.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value is wrong; `key` is its dotted path in `trailmap.toml`.
    #[error("config: `{key}`: {message}")]
    Config { key: String, message: String },

    /// A file could not be opened or read at all.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// An input cannot be used as a whole (wrong format, missing column, unreadable header).
    #[error("{}: {message}", path.display())]
    Input { path: PathBuf, message: String },

    /// More records were rejected than `--max-errors` allows.
    #[error(
        "{rejected} records rejected, more than the allowed {max_errors}; see the dead letters in {}",
        dead_letters.display()
    )]
    TooManyErrors {
        rejected: u64,
        max_errors: u64,
        dead_letters: PathBuf,
    },

    #[error(transparent)]
    Arrow(#[from] arrow::error::ArrowError),

    #[error("{0}")]
    Other(String),
}

impl Error {
    pub fn config(key: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config {
            key: key.into(),
            message: message.into(),
        }
    }

    pub fn input(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Input {
            path: path.into(),
            message: message.into(),
        }
    }

    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }
}
