//! Adopting the server's copy of a row on a replica that may hold pending
//! local writes of it: the server's row is taken, and the pending writes
//! stay on top of it.
//!
//! This is the one rule for it. `sqlite_sync` follows it when a pulled
//! change arrives (`sync_apply`), when the server answers a push with its
//! row (`sync_ack`), and when a resync drops every server copy; it carries
//! the plan out in one function (`sync/adopt.rs`). The merge rules
//! ([`crate::merge`]) decide later what the server does with the pending
//! writes when they are pushed; this rule keeps what they need: the base
//! (the server version and value a pending column was written on) is kept
//! before the server copy changes, so the push still carries the base the
//! edit was made on.
//!
//! Columns are bit masks over the table's columns in schema order (bit `i`
//! is column `i`), as the client stores them.

/// The pending local writes of a row, as a rebase sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pending {
    /// Columns written locally and not yet confirmed by the server: their
    /// local values survive the adoption.
    pub keep: u64,
    /// The row is deleted locally (the last pending write is a delete).
    pub deleted: bool,
}

/// What the server says of the row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    /// The server holds the row (its values and versions are adopted).
    Row,
    /// The server does not hold the row (deleted, or out of the caller's
    /// view, or every server copy is being dropped for a resync).
    Gone,
}

/// The replica's copy of the server row after the adoption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerCopy {
    /// Holds the server's versions; `with_values` when the local row
    /// differs from it (pending writes on top), so the server's values are
    /// kept beside the local ones.
    Replace { with_values: bool },
    /// Removed.
    Remove,
}

/// The row the app sees after the adoption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LocalRow {
    /// The row becomes the server's, every column (created if the device
    /// had no row).
    Become,
    /// The columns of the mask take the server's values; the others keep
    /// their local values (a zero mask leaves the row as it is).
    Take(u64),
    /// The row is removed.
    Remove,
}

/// The plan of one adoption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Columns whose current server version and value are kept as the base
    /// of pending writes before the server copy changes.
    pub keep_base: u64,
    pub server_copy: ServerCopy,
    pub local: LocalRow,
}

/// How a row with the pending writes `pending` (if any) adopts `server`,
/// for a table whose columns are `all`.
///
/// - No pending writes: the row becomes the server's, or goes with it.
/// - Pending writes: their columns keep their local values (all of them
///   when the row is deleted locally, which stays deleted), the other
///   columns take the server's, and the bases of the pending columns are
///   kept first. A row the server no longer holds stays as the device has
///   it: its pending writes are pushed, and the server decides.
pub fn plan(all: u64, pending: Option<Pending>, server: Server) -> Plan {
    match (pending, server) {
        (None, Server::Row) => Plan {
            keep_base: 0,
            server_copy: ServerCopy::Replace { with_values: false },
            local: LocalRow::Become,
        },
        (None, Server::Gone) => Plan {
            keep_base: 0,
            server_copy: ServerCopy::Remove,
            local: LocalRow::Remove,
        },
        (Some(p), server) => {
            let kept = if p.deleted { all } else { p.keep & all };
            Plan {
                keep_base: kept,
                server_copy: match server {
                    Server::Row => ServerCopy::Replace { with_values: true },
                    Server::Gone => ServerCopy::Remove,
                },
                local: match server {
                    Server::Row => LocalRow::Take(all & !kept),
                    Server::Gone => LocalRow::Take(0),
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: u64 = 0b111;

    #[test]
    fn a_clean_row_becomes_the_servers() {
        let p = plan(ALL, None, Server::Row);
        assert_eq!(p.local, LocalRow::Become);
        assert_eq!(p.server_copy, ServerCopy::Replace { with_values: false });
        assert_eq!(p.keep_base, 0);
        let p = plan(ALL, None, Server::Gone);
        assert_eq!(
            (p.local, p.server_copy),
            (LocalRow::Remove, ServerCopy::Remove)
        );
    }

    #[test]
    fn pending_columns_stay_on_top_with_their_base_kept() {
        let pending = Pending {
            keep: 0b010,
            deleted: false,
        };
        let p = plan(ALL, Some(pending), Server::Row);
        assert_eq!(p.keep_base, 0b010);
        assert_eq!(p.local, LocalRow::Take(0b101));
        assert_eq!(p.server_copy, ServerCopy::Replace { with_values: true });
    }

    #[test]
    fn a_row_deleted_locally_stays_deleted_and_keeps_every_base() {
        let pending = Pending {
            keep: 0b001,
            deleted: true,
        };
        let p = plan(ALL, Some(pending), Server::Row);
        assert_eq!((p.keep_base, p.local), (ALL, LocalRow::Take(0)));
    }

    #[test]
    fn a_row_gone_from_the_server_stays_as_the_device_has_it() {
        let pending = Pending {
            keep: 0b100,
            deleted: false,
        };
        let p = plan(ALL, Some(pending), Server::Gone);
        assert_eq!(p.local, LocalRow::Take(0));
        assert_eq!(p.server_copy, ServerCopy::Remove);
        assert_eq!(p.keep_base, 0b100);
    }

    #[test]
    fn pending_bits_outside_the_table_are_ignored() {
        let pending = Pending {
            keep: 0b1010,
            deleted: false,
        };
        let p = plan(ALL, Some(pending), Server::Row);
        assert_eq!(p.keep_base, 0b010);
        assert_eq!(p.local, LocalRow::Take(0b101));
    }
}
