//! Thin helpers over SPI: every internal query passes its values as
//! parameters and returns text columns.

use pgrx::datum::DatumWithOid;
use pgrx::prelude::*;

use crate::error::Result;

/// A row of text columns.
pub type TextRow = Vec<Option<String>>;

/// Runs a query (read or write) and returns all rows, every column as text.
pub fn rows(sql: &str, args: &[DatumWithOid]) -> Result<Vec<TextRow>> {
    Spi::connect_mut(|client| {
        let table = client.update(sql, None, args)?;
        let ncols = if table.is_empty() {
            0
        } else {
            table.columns()?
        };
        let mut out = Vec::with_capacity(table.len());
        for row in table {
            let mut r = Vec::with_capacity(ncols);
            for i in 1..=ncols {
                r.push(row.get::<String>(i)?);
            }
            out.push(r);
        }
        Ok(out)
    })
}

/// Runs a statement, discarding any result.
pub fn exec(sql: &str, args: &[DatumWithOid]) -> Result<()> {
    Spi::connect_mut(|client| {
        client.update(sql, None, args)?;
        Ok(())
    })
}

/// The first column of the first row, as text.
pub fn one(sql: &str, args: &[DatumWithOid]) -> Result<Option<String>> {
    Ok(rows(sql, args)?.into_iter().next().and_then(|mut r| {
        if r.is_empty() {
            None
        } else {
            r.swap_remove(0)
        }
    }))
}

/// Quotes an identifier for SQL.
pub fn ident(name: &str) -> String {
    pgrx::spi::quote_identifier(name)
}

/// Quotes a string literal for SQL.
pub fn literal(s: &str) -> String {
    pgrx::spi::quote_literal(s)
}
