//! Exports of the activity log and the C2D inbox as JSON and as CSV, oldest entry first. Pure text builders
//! (the download itself is `util::download`), tested natively with exact expected text.
//!
//! JSON keeps everything apart: a null application property is `null`, an empty one `""`.
//!
//! CSV follows RFC 4180: one header line, records end with CRLF, and a field holding a `"`, `,`, CR or LF is
//! quoted with its quotes doubled. Cells are also guarded against spreadsheet formula injection (OWASP "CSV
//! Injection"): a cell starting with `=`, `+`, `-`, `@`, a tab or a CR would be run as a formula by Excel,
//! LibreOffice or Google Sheets, so it gets a leading `'` — unless the cell is a plain number (`-5`, `+1.5e3`),
//! which no spreadsheet runs as anything but that number. A cell cannot tell a null property from an empty one;
//! both are empty (the JSON export keeps the difference). A CSV file starts with a UTF-8 byte order mark, the
//! sign Excel needs to read it as UTF-8 rather than the machine's code page.
//!
//! A C2D body that is not text is exported as its bytes in hex (`00 01 ff`), as the inbox shows it; its kind
//! (`json`, `text` or `hex`) goes beside it (`bodyKind`, the `body kind` column) so the two cannot be confused.

use hubsim_proto::json::ObjectWriter;

use crate::state::{InboxItem, LogEntry};

/// The log as a JSON array of `{"time", "kind", "text"}`.
pub fn log_json<'a>(entries: impl Iterator<Item = &'a LogEntry>) -> String {
    json_array(entries.map(|l| {
        ObjectWriter::new().string("time", &l.time).string("kind", l.kind.as_str()).string("text", &l.text).finish()
    }))
}

/// The log as CSV: `time,kind,text`.
pub fn log_csv<'a>(entries: impl Iterator<Item = &'a LogEntry>) -> String {
    let mut out = String::from(BOM);
    csv_row(&mut out, &["time", "kind", "text"]);
    for l in entries {
        csv_row(&mut out, &[l.time.as_str(), l.kind.as_str(), l.text.as_str()]);
    }
    out
}

/// The inbox as a JSON array of `{"time", "body", "systemProperties", "applicationProperties"}`.
pub fn inbox_json<'a>(items: impl Iterator<Item = &'a InboxItem>) -> String {
    json_array(items.map(|m| {
        let mut system = ObjectWriter::new();
        for (k, v) in &m.system {
            system.string(k, v);
        }
        let mut application = ObjectWriter::new();
        for (k, v) in &m.application {
            match v {
                Some(v) => application.string(k, v),
                None => application.raw(k, "null"),
            };
        }
        let (system, application) = (system.finish(), application.finish());
        ObjectWriter::new()
            .string("time", &m.time)
            .string("body", &m.body)
            .string("bodyKind", m.body_kind)
            .raw("systemProperties", &system)
            .raw("applicationProperties", &application)
            .finish()
    }))
}

/// Most property columns of the inbox CSV (system and application together); a row's other properties go, as
/// `name=value` pairs, into one last `other properties` cell. Peers choose the names: one column per distinct
/// name over a full inbox could be hundreds of thousands.
pub const MAX_CSV_COLUMNS: usize = 100;

/// The inbox as CSV: `time`, `body`, then one column per system property and one per application property
/// name (each the union over the messages, in the order first seen; at most [`MAX_CSV_COLUMNS`]); a message
/// without a property has an empty cell there.
pub fn inbox_csv<'a>(items: impl Iterator<Item = &'a InboxItem> + Clone) -> String {
    let mut columns: Vec<&str> = Vec::new();
    // (application?, name) → column, sorted for binary search: at most MAX_CSV_COLUMNS entries, and no hash map
    // code of its own in the bundle.
    let mut index: Vec<((bool, &str), usize)> = Vec::new();
    let find = |index: &[((bool, &str), usize)], key: (bool, &str)| index.binary_search_by(|(k, _)| k.cmp(&key));
    let mut left_out = false;
    let mut add = |app: bool, name: &'a str, columns: &mut Vec<&'a str>| {
        let Err(at) = find(&index, (app, name)) else { return };
        if columns.len() < MAX_CSV_COLUMNS {
            index.insert(at, ((app, name), columns.len()));
            columns.push(name);
        } else {
            left_out = true;
        }
    };
    for m in items.clone() {
        m.system.iter().for_each(|(k, _)| add(false, k, &mut columns));
    }
    for m in items.clone() {
        m.application.iter().for_each(|(k, _)| add(true, k, &mut columns));
    }
    let mut out = String::from(BOM);
    let mut head = vec!["time", "body", "body kind"];
    head.extend_from_slice(&columns);
    if left_out {
        head.push("other properties");
    }
    csv_row(&mut out, &head);
    for m in items {
        let mut cells: Vec<Option<&str>> = vec![None; columns.len()];
        let mut rest = String::new();
        let mut props: Vec<(bool, &str, Option<&str>)> = Vec::with_capacity(m.system.len() + m.application.len());
        for (k, v) in &m.system {
            props.push((false, k, Some(v)));
        }
        for (k, v) in &m.application {
            props.push((true, k, v.as_deref()));
        }
        for (app, k, v) in props {
            match find(&index, (app, k)).ok().map(|at| index[at].1) {
                Some(i) if cells[i].is_none() => cells[i] = Some(v.unwrap_or("")),
                Some(_) => {}
                None => {
                    if !rest.is_empty() {
                        rest.push_str("; ");
                    }
                    rest.push_str(k);
                    rest.push('=');
                    rest.push_str(v.unwrap_or("null"));
                }
            }
        }
        let mut row = vec![m.time.as_str(), m.body.as_str(), m.body_kind];
        for c in &cells {
            row.push(c.unwrap_or(""));
        }
        if left_out {
            row.push(&rest);
        }
        csv_row(&mut out, &row);
    }
    out
}

fn json_array(items: impl Iterator<Item = String>) -> String {
    let mut out = String::from("[\n");
    let mut empty = true;
    for item in items {
        if !empty {
            out.push_str(",\n");
        }
        out.push_str(&item);
        empty = false;
    }
    if empty {
        return "[]\n".into();
    }
    out.push_str("\n]\n");
    out
}

/// Appends one CSV record (RFC 4180, CRLF) with every cell guarded.
fn csv_row(out: &mut String, cells: &[&str]) {
    for (i, cell) in cells.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        csv_cell(out, cell);
    }
    out.push_str("\r\n");
}

/// The UTF-8 byte order mark a CSV export starts with (see the module's text).
pub const BOM: &str = "\u{feff}";

/// Whether `s` is a plain decimal number (`-5`, `+1.5e3`, `.5`): a sign, digits with at most one point, an
/// optional exponent. Such a cell needs no formula guard.
fn is_plain_number(s: &str) -> bool {
    let s = s.strip_prefix(['+', '-']).unwrap_or(s);
    let (mantissa, exponent) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(s[i + 1..].strip_prefix(['+', '-']).unwrap_or(&s[i + 1..]))),
        None => (s, None),
    };
    let digits = mantissa.bytes().filter(u8::is_ascii_digit).count();
    digits > 0
        && mantissa.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        && mantissa.bytes().filter(|b| *b == b'.').count() <= 1
        && exponent.is_none_or(|e| !e.is_empty() && e.bytes().all(|b| b.is_ascii_digit()))
}

/// One cell: `'` before a formula start (not before a plain number), quoted when it holds a quote, comma, CR
/// or LF.
fn csv_cell(out: &mut String, cell: &str) {
    let guard = cell.starts_with(['=', '+', '-', '@', '\t', '\r']) && !is_plain_number(cell);
    let quote = cell.contains(['"', ',', '\r', '\n']);
    if quote {
        out.push('"');
    }
    if guard {
        out.push('\'');
    }
    for c in cell.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    if quote {
        out.push('"');
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::LogKind;

    fn log(time: &str, kind: LogKind, text: &str) -> LogEntry {
        LogEntry { seq: 0, time: time.into(), kind, text: text.into() }
    }

    fn msg(time: &str, body: &str, system: &[(&str, &str)], application: &[(&str, Option<&str>)]) -> InboxItem {
        InboxItem {
            seq: 0,
            time: time.into(),
            body: body.into(),
            body_kind: "text",
            system: system.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            application: application.iter().map(|(k, v)| (k.to_string(), v.map(str::to_owned))).collect(),
            redelivered: false,
        }
    }

    #[test]
    fn csv_quotes_per_rfc_4180_and_guards_formulas() {
        let cell = |s: &str| {
            let mut out = String::new();
            csv_cell(&mut out, s);
            out
        };
        assert_eq!(cell("plain"), "plain");
        assert_eq!(cell(""), "");
        assert_eq!(cell("a,b"), "\"a,b\"");
        assert_eq!(cell("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(cell("two\nlines"), "\"two\nlines\"");
        assert_eq!(cell("cr\rlf"), "\"cr\rlf\"");
        assert_eq!(cell("=1+2"), "'=1+2");
        // Plain numbers are left as they are: no spreadsheet runs them.
        assert_eq!(cell("+1"), "+1");
        assert_eq!(cell("-5"), "-5");
        assert_eq!(cell("-3.25e-4"), "-3.25e-4");
        assert_eq!(cell("-.5"), "-.5");
        // Anything more is a formula to guard.
        for f in ["-5+1", "-1e", "--5", "-", "+1.2.3", "-5)", "-2+cmd|' /C calc'!A0", "+e5"] {
            assert_eq!(cell(f).trim_start_matches('"').chars().next(), Some('\''), "{f}");
        }
        assert_eq!(cell("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(cell("\tx"), "'\tx");
        assert_eq!(cell("=HYPERLINK(\"http://x\",\"y\")"), "\"'=HYPERLINK(\"\"http://x\"\",\"\"y\"\")\"");
        assert_eq!(cell("a=b"), "a=b");
    }

    #[test]
    fn the_log_exports_as_csv_and_json_oldest_first() {
        let entries = [log("10:00:00", LogKind::Connection, "connected"), log("10:00:01", LogKind::Sent, "a, \"b\"")];
        assert_eq!(
            log_csv(entries.iter()),
            "\u{feff}time,kind,text\r\n10:00:00,connection,connected\r\n10:00:01,sent,\"a, \"\"b\"\"\"\r\n"
        );
        assert_eq!(
            log_json(entries.iter()),
            "[\n{\"time\":\"10:00:00\",\"kind\":\"connection\",\"text\":\"connected\"},\n\
             {\"time\":\"10:00:01\",\"kind\":\"sent\",\"text\":\"a, \\\"b\\\"\"}\n]\n"
        );
        assert_eq!(log_json([].iter()), "[]\n");
        assert_eq!(log_csv([].iter()), "\u{feff}time,kind,text\r\n");
    }

    #[test]
    fn the_inbox_csv_has_a_column_per_property_name_over_all_messages() {
        let items = [
            msg("10:00:00", "{\"t\":1}", &[("$.mid", "m1")], &[("p1", Some("a")), ("p2", None)]),
            msg(
                "10:00:01",
                "=cmd",
                &[("$.mid", "m2"), ("$.ct", "text/plain")],
                &[("p3", Some("x,y")), ("p1", Some(""))],
            ),
            msg("10:00:02", "line1\nline2", &[], &[]),
            InboxItem { body_kind: "hex", ..msg("10:00:03", "00 01 ff", &[], &[("n", Some("-5"))]) },
        ];
        assert_eq!(
            inbox_csv(items.iter()),
            "\u{feff}time,body,body kind,$.mid,$.ct,p1,p2,p3,n\r\n\
             10:00:00,\"{\"\"t\"\":1}\",text,m1,,a,,,\r\n\
             10:00:01,'=cmd,text,m2,text/plain,,,\"x,y\",\r\n\
             10:00:02,\"line1\nline2\",text,,,,,,\r\n\
             10:00:03,00 01 ff,hex,,,,,,-5\r\n"
        );
        assert_eq!(inbox_csv([].iter()), "\u{feff}time,body,body kind\r\n");
    }

    #[test]
    fn the_inbox_json_keeps_null_apart_from_empty() {
        let items = [msg("10:00:00", "hi", &[("$.mid", "m1")], &[("n", None), ("e", Some("")), ("v", Some("\"q\""))])];
        assert_eq!(
            inbox_json(items.iter()),
            "[\n{\"time\":\"10:00:00\",\"body\":\"hi\",\"bodyKind\":\"text\",\"systemProperties\":{\"$.mid\":\"m1\"},\
             \"applicationProperties\":{\"n\":null,\"e\":\"\",\"v\":\"\\\"q\\\"\"}}\n]\n"
        );
    }

    #[test]
    fn distinct_property_names_do_not_blow_up_the_csv() {
        // A full inbox of C2D messages each with thousands of distinct property names (64 KB of them fit in one
        // message): one column per name was 200 x 200 000 cells, built in quadratic time. The columns are
        // bounded; the other properties of a row go, named, into one last cell.
        let items: Vec<InboxItem> = (0..crate::state::MAX_INBOX)
            .map(|m| {
                let mut item = msg("t", "b", &[], &[]);
                item.application = (0..1000).map(|p| (format!("m{m}p{p}"), Some("v".to_owned()))).collect();
                item
            })
            .collect();
        let started = std::time::Instant::now();
        let csv = inbox_csv(items.iter());
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "{:?}", started.elapsed());
        let header = csv.split("\r\n").next().unwrap();
        assert_eq!(header.split(',').count(), 3 + MAX_CSV_COLUMNS + 1);
        assert!(header.ends_with(",other properties"));
        assert!(csv.len() < 8 * 1024 * 1024, "{} bytes", csv.len());
        let last = csv.split("\r\n").nth(200).unwrap();
        assert!(last.contains("m199p999=v"), "the properties without a column are kept in the last cell");
    }
}
