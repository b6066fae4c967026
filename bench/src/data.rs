//! The deterministic data generator: a `tasks` table like the seed's.
//!
//! Row `n` (1-based) is always the same row: its fields come from a ChaCha8
//! stream selected by `n` under a fixed seed, and its id is the UUID-shaped
//! text of `md5('task-<n>')`, which SQL can compute too
//! (`md5('task-' || n)::uuid::text`), so pgbench scripts address rows by
//! number. A row is about 500 bytes (id 36, title ~35, description ~330,
//! status, assignee, due date, 0-4 tags, two timestamps).

use std::fmt::Write as _;

use md5::{Digest, Md5};
use rand_chacha::rand_core::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The generator's fixed seed.
pub const SEED: u64 = 0x5eed_7a5c_2026_0001;

/// DDL of a tasks table named `name` (no sync).
pub fn create_table_sql(name: &str) -> String {
    format!(
        "CREATE TABLE {name} (
            id          text PRIMARY KEY,
            title       text NOT NULL,
            description text,
            status      text NOT NULL,
            assignee    text,
            due_at      timestamptz,
            tags        text[],
            created_at  timestamptz NOT NULL,
            updated_at  timestamptz NOT NULL
        )"
    )
}

/// Columns in table order.
pub const COLUMNS: &str =
    "id, title, description, status, assignee, due_at, tags, created_at, updated_at";

/// The same table in SQLite (timestamps as the wire's RFC 3339 text, tags as JSON).
pub fn create_sqlite_table_sql(name: &str) -> String {
    format!(
        "CREATE TABLE {name} (
            id          TEXT PRIMARY KEY NOT NULL,
            title       TEXT NOT NULL,
            description TEXT,
            status      TEXT NOT NULL,
            assignee    TEXT,
            due_at      TEXT,
            tags        TEXT,
            created_at  TEXT NOT NULL,
            updated_at  TEXT NOT NULL
        )"
    )
}

const WORDS: &[&str] = &[
    "review",
    "draft",
    "update",
    "release",
    "notes",
    "customer",
    "invoice",
    "migration",
    "database",
    "schema",
    "index",
    "query",
    "latency",
    "dashboard",
    "report",
    "quarterly",
    "budget",
    "meeting",
    "agenda",
    "follow",
    "up",
    "with",
    "the",
    "team",
    "on",
    "for",
    "and",
    "a",
    "to",
    "of",
    "in",
    "design",
    "mobile",
    "offline",
    "sync",
    "conflict",
    "server",
    "client",
    "login",
    "page",
    "error",
    "message",
    "retry",
    "backup",
    "restore",
    "deploy",
    "staging",
    "production",
    "ticket",
    "priority",
    "onboarding",
    "document",
    "checklist",
    "vendor",
    "contract",
    "renewal",
    "feedback",
    "survey",
    "analytics",
    "export",
    "import",
    "cleanup",
    "refactor",
    "tests",
    "flaky",
    "build",
    "pipeline",
    "cache",
    "memory",
    "leak",
    "performance",
    "audit",
    "security",
    "password",
    "reset",
    "email",
    "template",
    "weekly",
    "planning",
    "roadmap",
    "estimate",
    "scope",
    "bug",
    "crash",
    "upload",
    "photo",
    "sharing",
];
const STATUSES: &[&str] = &["todo", "in_progress", "blocked", "review", "done"];
const ASSIGNEES: &[&str] = &[
    "alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi", "ivan", "judy", "mallory",
    "niaj", "olivia", "peggy", "rupert", "sybil", "trent", "victor", "walter",
];
const TAGS: &[&str] = &[
    "backend", "frontend", "urgent", "customer", "infra", "docs", "design", "mobile", "billing",
    "security", "qa", "research",
];

/// 2025-01-01T00:00:00Z.
const BASE_UNIX: i64 = 1_735_689_600;

/// One generated row.
#[derive(Debug, Clone)]
pub struct Task {
    /// Row number (1-based).
    pub n: u64,
    /// UUID-shaped text id.
    pub id: String,
    /// A short sentence.
    pub title: String,
    /// A few hundred bytes of words.
    pub description: String,
    /// One of a few states.
    pub status: &'static str,
    /// A user name, or none.
    pub assignee: Option<&'static str>,
    /// Unix seconds, or none.
    pub due_at: Option<i64>,
    /// 0-4 tags.
    pub tags: Vec<&'static str>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
}

/// The id of row `n`: `md5('task-<n>')` formatted as a UUID.
pub fn task_id(n: u64) -> String {
    let d = Md5::digest(format!("task-{n}").as_bytes());
    let mut s = String::with_capacity(36);
    for (i, b) in d.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        let _ = write!(s, "{b:02x}");
    }
    s
}

fn below(rng: &mut ChaCha8Rng, n: u64) -> u64 {
    rng.next_u64() % n
}

fn words(rng: &mut ChaCha8Rng, min_bytes: usize) -> String {
    let mut s = String::with_capacity(min_bytes + 16);
    while s.len() < min_bytes {
        if !s.is_empty() {
            s.push(' ');
        }
        s.push_str(WORDS[below(rng, WORDS.len() as u64) as usize]);
    }
    s
}

impl Task {
    /// Row `n` of the data set.
    pub fn gen(n: u64) -> Task {
        let mut rng = ChaCha8Rng::seed_from_u64(SEED);
        rng.set_stream(n);
        let title_len = 20 + below(&mut rng, 30) as usize;
        let mut title = words(&mut rng, title_len);
        if let Some(first) = title.get_mut(0..1) {
            first.make_ascii_uppercase();
        }
        let desc_len = 240 + below(&mut rng, 180) as usize;
        let description = words(&mut rng, desc_len) + ".";
        let status = STATUSES[below(&mut rng, STATUSES.len() as u64) as usize];
        let assignee = (below(&mut rng, 10) != 0)
            .then(|| ASSIGNEES[below(&mut rng, ASSIGNEES.len() as u64) as usize]);
        let created_at = BASE_UNIX + below(&mut rng, 300 * 86_400) as i64;
        let updated_at = created_at + below(&mut rng, 30 * 86_400) as i64;
        let due_at =
            (below(&mut rng, 5) != 0).then(|| created_at + below(&mut rng, 60 * 86_400) as i64);
        let ntags = below(&mut rng, 5) as usize;
        let mut tags: Vec<&'static str> = (0..ntags)
            .map(|_| TAGS[below(&mut rng, TAGS.len() as u64) as usize])
            .collect();
        tags.sort_unstable();
        tags.dedup();
        Task {
            n,
            id: task_id(n),
            title,
            description,
            status,
            assignee,
            due_at,
            tags,
            created_at,
            updated_at,
        }
    }

    /// The row after its `k`-th edit (k >= 1): new title, status and
    /// updated_at, like a user editing a task.
    pub fn edited(&self, k: u64) -> Task {
        let mut rng = ChaCha8Rng::seed_from_u64(SEED ^ 0xed17);
        rng.set_stream(self.n.wrapping_mul(1_000_003).wrapping_add(k));
        let mut t = self.clone();
        let title_len = 20 + below(&mut rng, 30) as usize;
        t.title = format!("Edit {k}: {}", words(&mut rng, title_len));
        t.status = STATUSES[below(&mut rng, STATUSES.len() as u64) as usize];
        t.updated_at = self.updated_at + 3600 * k as i64;
        t
    }

    /// A line of `COPY ... FROM STDIN` text format (with the newline).
    pub fn copy_line(&self, out: &mut String) {
        let _ = write!(
            out,
            "{}\t{}\t{}\t{}\t",
            self.id, self.title, self.description, self.status
        );
        match self.assignee {
            Some(a) => out.push_str(a),
            None => out.push_str("\\N"),
        }
        out.push('\t');
        match self.due_at {
            Some(d) => out.push_str(&pg_ts(d)),
            None => out.push_str("\\N"),
        }
        out.push('\t');
        out.push('{');
        out.push_str(&self.tags.join(","));
        out.push('}');
        let _ = writeln!(
            out,
            "\t{}\t{}",
            pg_ts(self.created_at),
            pg_ts(self.updated_at)
        );
    }

    /// Tags as JSON text (how SQLite stores a json column).
    pub fn tags_json(&self) -> String {
        serde_json::to_string(&self.tags).unwrap()
    }
}

fn datetime(unix: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(unix, 0).expect("timestamp in range")
}

/// Postgres text form: `2025-03-04 12:34:56+00`.
pub fn pg_ts(unix: i64) -> String {
    datetime(unix).format("%Y-%m-%d %H:%M:%S+00").to_string()
}

/// Wire form (what SQLite stores for timestamptz): `2025-03-04T12:34:56+00:00`.
pub fn wire_ts(unix: i64) -> String {
    datetime(unix).format("%Y-%m-%dT%H:%M:%S+00:00").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_deterministic_and_about_500_bytes() {
        assert_eq!(Task::gen(7).description, Task::gen(7).description);
        assert_ne!(Task::gen(7).description, Task::gen(8).description);
        let mut line = String::new();
        let total: usize = (1..=1000)
            .map(|n| {
                line.clear();
                Task::gen(n).copy_line(&mut line);
                line.len()
            })
            .sum();
        let avg = total / 1000;
        assert!((400..600).contains(&avg), "average row {avg} bytes");
        assert_eq!(task_id(1).len(), 36);
    }
}
