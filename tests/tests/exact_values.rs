//! Values travel server -> device -> server without changing by a single
//! byte (security review issue 9, finding 4): one test per type.
//!
//! Each test writes values on the server, pulls them to a fresh device,
//! checks what the device stores, lets the device copy every row to a new
//! key (so the very values it received are pushed back) and write some
//! values of its own, pushes, and compares `v::text` on the server: a copy
//! must print exactly as its original. It then pulls again and checks the
//! device holds the server's values for the copies too.
//!
//! Needs pg_sync installed and `cargo build --manifest-path sqlite_sync/Cargo.toml` (see the
//! Makefile's `integration` target).

use rusqlite::types::Value as Sql;
use serde_json::Value;
use sync_tests::e2e::Device;
use sync_tests::{err_text, eventually, TestDb};

/// One round trip of the values `literals` (Postgres input text) in a
/// column of type `ty`, plus `device_writes` (SQL literals written on the
/// device). Returns, per original id, the server text before, the device's
/// stored value, and the server text of the device's copy.
struct Trip {
    /// (id, v::text) on the server before the device saw anything.
    before: Vec<(String, Option<String>)>,
    /// (id, v as the server writes it in JSON, i.e. to_jsonb(v)).
    json: Vec<(String, Value)>,
    /// (id, v) on the device after the pull.
    device: Vec<(String, Sql)>,
    /// (original id, v::text) of the device's copies on the server.
    copies: Vec<(String, Option<String>)>,
    /// (id, v::text) of the rows the device wrote itself.
    written: Vec<(String, Option<String>)>,
    /// (id, v) on the device after pulling the pushed rows back.
    device_after: Vec<(String, Sql)>,
    dev: Device,
}

fn round_trip(name: &str, ty: &str, literals: &[&str], device_writes: &[&str]) -> Trip {
    let db = TestDb::new(&format!("exact_{name}"));
    let mut c = db.connect();
    c.batch_execute(&format!(
        "CREATE TABLE t (id text PRIMARY KEY, v {ty}); SELECT sync_enable('t');"
    ))
    .unwrap();
    for (i, lit) in literals.iter().enumerate() {
        c.execute(
            &format!("INSERT INTO t VALUES ($1, $2::text::{ty})"),
            &[&format!("r{i:02}"), lit],
        )
        .unwrap_or_else(|e| panic!("{ty} {lit}: {}", err_text(&e)));
    }
    let text_rows = |c: &mut postgres::Client, cond: &str| -> Vec<(String, Option<String>)> {
        c.query(
            &format!("SELECT id, v::text FROM t WHERE {cond} ORDER BY id"),
            &[],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
    };
    let before = text_rows(&mut c, "true");
    let json: Vec<(String, Value)> = c
        .query("SELECT id, to_jsonb(v) FROM t ORDER BY id", &[])
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.get(0),
                r.get::<_, Option<Value>>(1).unwrap_or(Value::Null),
            )
        })
        .collect();

    let dev = Device::new(&mut c, &format!("exact_{name}"));
    let device_rows = |d: &Device| -> Vec<(String, Sql)> {
        let mut st = d.db.prepare("SELECT id, v FROM t ORDER BY id").unwrap();
        let rows = st
            .query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, Sql>(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        rows
    };
    assert!(eventually(30, || {
        dev.pull(&mut c);
        device_rows(&dev).len() == literals.len()
    }));
    let device = device_rows(&dev);

    // Back to the server: copies of what the device received, and values
    // the device writes itself.
    dev.db
        .execute_batch("INSERT INTO t (id, v) SELECT 'copy_' || id, v FROM t")
        .unwrap();
    for (i, w) in device_writes.iter().enumerate() {
        dev.db
            .execute(
                &format!("INSERT INTO t (id, v) VALUES ('dev{i:02}', {w})"),
                [],
            )
            .unwrap_or_else(|e| panic!("device write {w}: {e}"));
    }
    let result = dev.push(&mut c);
    for r in result["results"].as_array().unwrap() {
        assert_eq!(r["status"], "applied", "{ty}: {r}");
    }
    let copies = text_rows(&mut c, "id LIKE 'copy\\_%'")
        .into_iter()
        .map(|(id, v)| (id["copy_".len()..].to_string(), v))
        .collect();
    let written = text_rows(&mut c, "id LIKE 'dev%'");
    let total = 2 * literals.len() + device_writes.len();
    assert!(eventually(30, || {
        dev.pull(&mut c);
        device_rows(&dev).len() == total
    }));
    let device_after = device_rows(&dev);
    Trip {
        before,
        json,
        device,
        copies,
        written,
        device_after,
        dev,
    }
}

impl Trip {
    /// Every copy prints on the server exactly as its original, and the
    /// device holds the same value for both.
    fn assert_copies_exact(&self) {
        assert_eq!(self.copies, self.before, "server text after the round trip");
        for (id, v) in &self.device {
            let copy = self
                .device_after
                .iter()
                .find(|(i, _)| *i == format!("copy_{id}"))
                .map(|(_, v)| v)
                .unwrap();
            assert!(same_sql(v, copy), "device copy of {id}: {v:?} vs {copy:?}");
            let again = self
                .device_after
                .iter()
                .find(|(i, _)| i == id)
                .map(|(_, v)| v)
                .unwrap();
            assert!(
                same_sql(v, again),
                "device value of {id} changed: {v:?} vs {again:?}"
            );
        }
        assert_eq!(self.dev.call("SELECT sync_status()", None)["pending"], 0);
    }

    fn device_value(&self, id: &str) -> &Sql {
        &self.device.iter().find(|(i, _)| i == id).unwrap().1
    }
}

/// Equality that tells -0.0 from 0.0 (and NaN from nothing).
fn same_sql(a: &Sql, b: &Sql) -> bool {
    match (a, b) {
        (Sql::Real(x), Sql::Real(y)) => x.to_bits() == y.to_bits(),
        _ => a == b,
    }
}

fn text(s: &str) -> Sql {
    Sql::Text(s.to_string())
}

#[test]
fn numeric_round_trips_exactly() {
    let literals = [
        "1234567890.012345678901",
        "1.10",
        "0.000",
        "-0.00000000000000000001",
        "98765432109876543210987654321.123456789012345678901234567890",
        "100000000000000000000000000000000000000000000000000000000000",
        "3",
        "NaN",
        "Infinity",
        "-Infinity",
    ];
    let t = round_trip(
        "numeric",
        "numeric",
        &literals,
        &["'1234567890.012345678901'", "'-12.50'", "0.1", "12"],
    );
    // The device holds the decimal text exactly as the server prints it.
    for (id, server) in &t.before {
        assert_eq!(
            t.device_value(id),
            &text(server.as_deref().unwrap()),
            "{id}"
        );
    }
    t.assert_copies_exact();
    let written: Vec<Option<String>> = t.written.iter().map(|(_, v)| v.clone()).collect();
    assert_eq!(
        written,
        ["1234567890.012345678901", "-12.50", "0.1", "12"].map(|s| Some(s.to_string()))
    );
}

#[test]
fn numeric_with_a_scale_round_trips_exactly() {
    // The reported loss: numeric(30,12) written on a device arrived as
    // 1234567890.012345800000.
    let t = round_trip(
        "numeric_scale",
        "numeric(30,12)",
        &[
            "1234567890.012345678901",
            "0.000000000001",
            "-999999999999999999.999999999999",
        ],
        &["'1234567890.012345678901'", "'0.000000000001'"],
    );
    assert_eq!(t.device_value("r00"), &text("1234567890.012345678901"));
    t.assert_copies_exact();
    assert_eq!(
        t.written,
        vec![
            (
                "dev00".to_string(),
                Some("1234567890.012345678901".to_string())
            ),
            ("dev01".to_string(), Some("0.000000000001".to_string())),
        ]
    );
}

#[test]
fn bigint_round_trips_exactly() {
    let literals = [
        "9007199254740993",
        "-9007199254740993",
        "9223372036854775807",
        "-9223372036854775808",
        "1",
    ];
    let t = round_trip(
        "bigint",
        "bigint",
        &literals,
        &[
            "9223372036854775807",
            "-9223372036854775808",
            "9007199254740993",
        ],
    );
    for (id, server) in &t.before {
        let want: i64 = server.as_deref().unwrap().parse().unwrap();
        assert_eq!(t.device_value(id), &Sql::Integer(want), "{id}");
    }
    t.assert_copies_exact();
    let written: Vec<Option<String>> = t.written.iter().map(|(_, v)| v.clone()).collect();
    assert_eq!(
        written,
        [
            "9223372036854775807",
            "-9223372036854775808",
            "9007199254740993"
        ]
        .map(|s| Some(s.to_string()))
    );
}

#[test]
fn timestamptz_round_trips_exactly() {
    let literals = [
        "2026-06-30 23:59:59.123456+02",
        "1999-12-31 23:59:59.999999+00",
        "2000-01-01 00:00:00.000001-05:30",
        "1900-01-01 00:00:00+00",
        "0044-03-15 12:00:00.5+00 BC",
        "294276-12-31 23:59:59.999999+00",
        "infinity",
        "-infinity",
    ];
    let t = round_trip(
        "timestamptz",
        "timestamptz",
        &literals,
        &["'2026-01-02T03:04:05.678901+00:00'"],
    );
    // The device holds the server's JSON text.
    for (id, j) in &t.json {
        assert_eq!(t.device_value(id), &text(j.as_str().unwrap()), "{id}");
    }
    t.assert_copies_exact();
    let mut c = sync_tests::Cluster::get().connect("postgres");
    let want: String = c
        .query_one(
            "SELECT '2026-01-02T03:04:05.678901+00:00'::timestamptz::text",
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(t.written[0].1.as_deref(), Some(want.as_str()));
}

#[test]
fn timestamp_round_trips_exactly() {
    let literals = [
        "2026-06-30 23:59:59.123456",
        "2026-06-30 23:59:59.000001",
        "1970-01-01 00:00:00",
        "0001-01-01 00:00:00.5 BC",
        "infinity",
    ];
    let t = round_trip(
        "timestamp",
        "timestamp",
        &literals,
        &["'2026-01-02T03:04:05.678901'"],
    );
    for (id, j) in &t.json {
        assert_eq!(t.device_value(id), &text(j.as_str().unwrap()), "{id}");
    }
    t.assert_copies_exact();
    assert_eq!(
        t.written[0].1.as_deref(),
        Some("2026-01-02 03:04:05.678901")
    );
}

#[test]
fn float8_round_trips_exactly() {
    let literals = [
        "-0",
        "0",
        "0.1",
        "1e-300",
        "1.7976931348623157e308",
        "-1.7976931348623157e308",
        "5e-324",
        "2.2250738585072014e-308",
        "123456789.12345679",
        "9007199254740993",
        "NaN",
        "Infinity",
        "-Infinity",
    ];
    let t = round_trip(
        "float8",
        "double precision",
        &literals,
        &["-0.0", "0.1", "1e-300", "1.7976931348623157e308"],
    );
    for (id, server) in &t.before {
        let s = server.as_deref().unwrap();
        let got = t.device_value(id);
        if s == "NaN" {
            assert_eq!(got, &text("NaN"), "{id}");
            continue;
        }
        let want: f64 = s.replace("Infinity", "inf").parse().unwrap();
        assert!(
            same_sql(got, &Sql::Real(want)),
            "{id}: server {s}, device {got:?}"
        );
    }
    assert_eq!(t.device_value("r00"), &Sql::Real(-0.0));
    if let Sql::Real(f) = t.device_value("r00") {
        assert!(f.is_sign_negative(), "-0 keeps its sign on the device");
    }
    t.assert_copies_exact();
    let written: Vec<Option<String>> = t.written.iter().map(|(_, v)| v.clone()).collect();
    assert_eq!(
        written,
        ["-0", "0.1", "1e-300", "1.7976931348623157e+308"].map(|s| Some(s.to_string()))
    );
}

#[test]
fn text_in_every_plane_round_trips_exactly() {
    let literals = [
        "\u{10FFFF}",
        "\u{1F600} \u{1F469}\u{200D}\u{1F4BB}",
        "\u{0800}\u{FFFD}\u{FEFF}",
        "e\u{0301} a\u{0308}\u{0323} \u{0915}\u{094D}\u{0937}",
        "\u{05E9}\u{05DC}\u{05D5}\u{05DD} \u{202E}rtl",
        "\u{1}\u{7F}\u{80}\t\n\r \"'\\ %_",
        "\u{E000}\u{F0000}\u{100000}",
        "",
    ];
    let t = round_trip(
        "text",
        "text",
        &literals,
        &["'\u{10FFFF}\u{1F600}\u{0800}e\u{0301}'"],
    );
    for (i, lit) in literals.iter().enumerate() {
        assert_eq!(t.device_value(&format!("r{i:02}")), &text(lit), "r{i:02}");
    }
    t.assert_copies_exact();
    assert_eq!(
        t.written[0].1.as_deref(),
        Some("\u{10FFFF}\u{1F600}\u{0800}e\u{0301}")
    );
}
