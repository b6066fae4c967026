//! Errors raised by pg_sync, with messages a DBA can act on.

use sync_core::SyncError;

/// Everything that makes a pg_sync function fail as a whole.
#[derive(Debug, thiserror::Error)]
pub enum PgSyncError {
    /// The table has no primary key.
    #[error("table {0} has no primary key; sync needs one to identify rows")]
    NoPrimaryKey(String),
    /// The table is not enabled for sync.
    #[error("table {0} is not enabled for sync; call sync_enable first")]
    NotSynced(String),
    /// The table is already enabled.
    #[error("table {0} is already enabled for sync")]
    AlreadySynced(String),
    /// Another schema's table of the same name is synced already.
    #[error("a table named {0:?} is already synced from another schema; synced table names must be unique")]
    DuplicateName(String),
    /// Bad `sync_enable` options.
    #[error("invalid sync_enable options: {0}")]
    BadOptions(String),
    /// A bad argument.
    #[error("{0}")]
    BadArgument(String),
    /// Errors from the shared wire format.
    #[error(transparent)]
    Sync(#[from] SyncError),
    /// The caller lacks a privilege the call needs.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// A page's text would pass the largest value Postgres holds.
    #[error(
        "a page is larger than a value may be (1 GB); lower max_changes or pg_sync.max_page_size"
    )]
    PageTooLarge,
    /// An SPI failure.
    #[error("internal query failed: {0}")]
    Spi(String),
}

impl From<pgrx::spi::SpiError> for PgSyncError {
    fn from(e: pgrx::spi::SpiError) -> Self {
        PgSyncError::Spi(e.to_string())
    }
}

/// Result alias.
pub type Result<T> = std::result::Result<T, PgSyncError>;

/// Raises a pg_sync error as a Postgres ERROR with an SQLSTATE fitting its kind.
pub fn raise(e: PgSyncError) -> ! {
    use pgrx::PgSqlErrorCode as C;
    let code = match &e {
        PgSyncError::NoPrimaryKey(_) => C::ERRCODE_INVALID_TABLE_DEFINITION,
        PgSyncError::NotSynced(_) => C::ERRCODE_UNDEFINED_TABLE,
        PgSyncError::AlreadySynced(_) | PgSyncError::DuplicateName(_) => {
            C::ERRCODE_DUPLICATE_OBJECT
        }
        PgSyncError::BadOptions(_) | PgSyncError::BadArgument(_) => {
            C::ERRCODE_INVALID_PARAMETER_VALUE
        }
        PgSyncError::Sync(SyncError::MalformedJson(_)) => C::ERRCODE_INVALID_TEXT_REPRESENTATION,
        PgSyncError::Sync(SyncError::UnknownTable(_)) => C::ERRCODE_UNDEFINED_TABLE,
        PgSyncError::Sync(SyncError::BadCursor(_)) => C::ERRCODE_INVALID_PARAMETER_VALUE,
        PgSyncError::Sync(SyncError::UnknownColumn { .. }) => C::ERRCODE_UNDEFINED_COLUMN,
        PgSyncError::Sync(_) => C::ERRCODE_INVALID_PARAMETER_VALUE,
        PgSyncError::PermissionDenied(_) => C::ERRCODE_INSUFFICIENT_PRIVILEGE,
        PgSyncError::PageTooLarge => C::ERRCODE_PROGRAM_LIMIT_EXCEEDED,
        PgSyncError::Spi(_) => C::ERRCODE_INTERNAL_ERROR,
    };
    pgrx::ereport!(ERROR, code, e.to_string());
}

/// Unwraps a pg_sync result or raises it.
pub fn or_raise<T>(r: Result<T>) -> T {
    r.unwrap_or_else(|e| raise(e))
}
