//! Row-level security for tombstones: a deleted (or moved-out) row is
//! announced only to callers whose policies let them see the old row.

use crate::catalog::TableInfo;
use crate::error::Result;
use crate::spi_util::rows;

/// A condition true when the caller may see the old row image `old_expr`
/// (a jsonb expression) of table `t`, or `None` when RLS does not restrict
/// the caller on this table. It applies the caller's SELECT policies the
/// way Postgres does: permissive policies OR-ed, restrictive ones AND-ed,
/// nothing visible without a permissive policy.
pub fn old_row_visible(t: &TableInfo, old_expr: &str) -> Result<Option<String>> {
    let r = rows(
        "SELECT c.relrowsecurity::text, \
                (r.rolsuper OR r.rolbypassrls \
                 OR (c.relowner = r.oid AND NOT c.relforcerowsecurity))::text \
         FROM pg_class c, pg_roles r WHERE c.oid = $1 AND r.rolname = current_user",
        &[t.relid.into()],
    )?;
    let Some(head) = r.into_iter().next() else {
        return Ok(None);
    };
    if head[0].as_deref() != Some("true") || head[1].as_deref() == Some("true") {
        return Ok(None);
    }
    let policies = rows(
        "SELECT coalesce(pg_get_expr(p.polqual, p.polrelid), 'true'), p.polpermissive::text \
         FROM pg_policy p WHERE p.polrelid = $1 AND p.polcmd IN ('r', '*') \
           AND (p.polroles = '{0}' OR EXISTS (SELECT 1 FROM unnest(p.polroles) pr \
                WHERE pg_has_role(current_user, pr, 'MEMBER'))) \
         ORDER BY p.polname",
        &[t.relid.into()],
    )?;
    let mut permissive = Vec::new();
    let mut restrictive = Vec::new();
    for p in policies {
        let qual = format!("({})", p[0].clone().unwrap_or_else(|| "true".into()));
        if p[1].as_deref() == Some("true") {
            permissive.push(qual);
        } else {
            restrictive.push(qual);
        }
    }
    let mut cond = if permissive.is_empty() {
        "false".to_string()
    } else {
        format!("({})", permissive.join(" OR "))
    };
    for r in restrictive {
        cond = format!("{cond} AND {r}");
    }
    Ok(Some(format!(
        "({old_expr} IS NULL OR EXISTS (SELECT 1 FROM jsonb_populate_record(NULL::{tbl}, {old_expr}) \
         AS {alias} WHERE {cond}))",
        tbl = t.qualified,
        alias = alias_of(t),
    )))
}

/// Policies name columns unqualified or qualified with the table's own
/// name; the old row is exposed under that name.
fn alias_of(t: &TableInfo) -> String {
    crate::spi_util::ident(&t.name)
}
