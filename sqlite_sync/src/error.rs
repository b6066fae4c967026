//! The extension's error type: a message for a person, raised as an
//! ordinary SQL error.

use std::fmt;

/// An error with a message naming the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(String);

/// Result alias used throughout the extension.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// An error with this message.
    pub fn msg(m: impl Into<String>) -> Error {
        Error(m.into())
    }

    /// Adds where the error happened.
    pub fn context(self, ctx: &str) -> Error {
        if ctx.is_empty() {
            self
        } else {
            Error(format!("{} (while running: {ctx})", self.0))
        }
    }

    /// Prefixes the message, e.g. with the SQL function name.
    pub fn prefixed(self, prefix: &str) -> Error {
        Error(format!("{prefix}: {}", self.0))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<sync_core::SyncError> for Error {
    fn from(e: sync_core::SyncError) -> Error {
        Error(e.to_string())
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Error {
        Error(format!("JSON error: {e}"))
    }
}
