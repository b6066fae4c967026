//! The extension's errors: one kind per cause, each with a message for a
//! person, raised as an ordinary SQL error. An error that SQLite itself
//! reported keeps its result code, which the SQL function raises with the
//! message (so an app sees `SQLITE_FULL` when the disk is full, or
//! `SQLITE_CONSTRAINT` when a write breaks a constraint).

/// SQLite's generic error code, for every error that is not SQLite's own.
pub const SQLITE_ERROR: i32 = 1;

/// Why an operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The caller passed something wrong: a malformed document, a value of
    /// the wrong type, an unknown table or column, a limit exceeded.
    #[error("{0}")]
    Input(String),
    /// `sync_init` was never called on this database.
    #[error("this database is not initialised for sync; call sync_init(schema) first")]
    NotInitialised,
    /// The app's own objects stand in the way of the device's layout (a
    /// name taken, a column an index of the app depends on).
    #[error("{0}")]
    Layout(String),
    /// What the device stored itself is unreadable.
    #[error("{0}")]
    Corrupt(String),
    /// SQLite reported an error; `code` is its (extended) result code.
    #[error("{message}")]
    Sqlite { code: i32, message: String },
    /// A bug: a panic caught at the boundary.
    #[error("internal error ({0})")]
    Internal(String),
    /// An error while running a statement (its first line).
    #[error("{inner} (while running: {sql})")]
    While { inner: Box<Error>, sql: String },
    /// An error of a SQL function, named first.
    #[error("{function}: {inner}")]
    In { function: String, inner: Box<Error> },
}

/// Result alias used throughout the extension.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Bad input, with a message naming the problem.
    pub fn input(m: impl Into<String>) -> Error {
        Error::Input(m.into())
    }

    /// The app's objects conflict with the device's layout.
    pub fn layout(m: impl Into<String>) -> Error {
        Error::Layout(m.into())
    }

    /// Stored state of the device that cannot be read.
    pub fn corrupt(m: impl Into<String>) -> Error {
        Error::Corrupt(m.into())
    }

    /// Adds the statement the error happened in.
    pub fn context(self, sql: &str) -> Error {
        if sql.is_empty() {
            self
        } else {
            Error::While {
                inner: Box::new(self),
                sql: sql.to_string(),
            }
        }
    }

    /// Names the SQL function the error is raised by.
    pub fn prefixed(self, function: &str) -> Error {
        Error::In {
            function: function.to_string(),
            inner: Box::new(self),
        }
    }

    /// The SQLite result code to raise the error with.
    pub fn code(&self) -> i32 {
        match self {
            Error::Sqlite { code, .. } => *code,
            Error::While { inner, .. } | Error::In { inner, .. } => inner.code(),
            _ => SQLITE_ERROR,
        }
    }
}

impl From<sync_core::SyncError> for Error {
    fn from(e: sync_core::SyncError) -> Error {
        Error::Input(e.to_string())
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Error {
        Error::Input(format!("JSON error: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_and_codes_carry_through_context() {
        let e = Error::Sqlite {
            code: 13,
            message: "database or disk is full".into(),
        }
        .context("INSERT INTO t VALUES (1)")
        .prefixed("sync_apply");
        assert_eq!(
            e.to_string(),
            "sync_apply: database or disk is full (while running: INSERT INTO t VALUES (1))"
        );
        assert_eq!(e.code(), 13);
        assert_eq!(Error::input("x").prefixed("f").code(), SQLITE_ERROR);
        assert_eq!(
            Error::NotInitialised.to_string(),
            "this database is not initialised for sync; call sync_init(schema) first"
        );
    }
}
