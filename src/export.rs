//! Exports of the activity log and the C2D inbox as JSON and as CSV, oldest entry first. Pure text builders
//! (the download itself is `util::download`), tested natively with exact expected text.
//!
//! JSON keeps everything apart: a null application property is `null`, an empty one `""`.
//!
//! CSV follows RFC 4180: one header line, records end with CRLF, and a field holding a `"`, `,`, CR or LF is
//! quoted with its quotes doubled. Cells are also guarded against spreadsheet formula injection (OWASP "CSV
//! Injection"): a cell starting with `=`, `+`, `-`, `@`, a tab or a CR would be run as a formula by Excel,
//! LibreOffice or Google Sheets, so it gets a leading `'` (which shows `-5` as `'-5`: the safe trade). A cell
//! cannot tell a null property from an empty one; both are empty (the JSON export keeps the difference).

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
    let mut out = String::new();
    csv_row(&mut out, ["time", "kind", "text"]);
    for l in entries {
        csv_row(&mut out, [l.time.as_str(), l.kind.as_str(), l.text.as_str()]);
    }
    out
}

/// The inbox as a JSON array of `{"time", "body", "systemProperties", "applicationProperties"}`.
pub fn inbox_json<'a>(items: impl Iterator<Item = &'a InboxItem>) -> String {
    json_array(items.map(|m| {
        let system = json_object(m.system.iter().map(|(k, v)| (k.as_str(), Some(v.as_str()))));
        let application = json_object(m.application.iter().map(|(k, v)| (k.as_str(), v.as_deref())));
        ObjectWriter::new()
            .string("time", &m.time)
            .string("body", &m.body)
            .raw("systemProperties", &system)
            .raw("applicationProperties", &application)
            .finish()
    }))
}

/// The inbox as CSV: `time`, `body`, then one column per system property and one per application property
/// name (each the union over the messages, in the order first seen); a message without a property has an
/// empty cell there.
pub fn inbox_csv<'a>(items: impl Iterator<Item = &'a InboxItem> + Clone) -> String {
    let mut system: Vec<&str> = Vec::new();
    let mut application: Vec<&str> = Vec::new();
    for m in items.clone() {
        union(&mut system, m.system.iter().map(|(k, _)| k.as_str()));
        union(&mut application, m.application.iter().map(|(k, _)| k.as_str()));
    }
    let mut out = String::new();
    csv_row(&mut out, ["time", "body"].into_iter().chain(system.iter().copied()).chain(application.iter().copied()));
    for m in items {
        let sys = system.iter().map(|n| m.system.iter().find(|(k, _)| k == n).map_or("", |(_, v)| v.as_str()));
        let app = application
            .iter()
            .map(|n| m.application.iter().find(|(k, _)| k == n).and_then(|(_, v)| v.as_deref()).unwrap_or(""));
        csv_row(&mut out, [m.time.as_str(), m.body.as_str()].into_iter().chain(sys).chain(app));
    }
    out
}

/// Adds the names not yet in `names`, keeping the order first seen.
fn union<'a>(names: &mut Vec<&'a str>, new: impl Iterator<Item = &'a str>) {
    for n in new {
        if !names.contains(&n) {
            names.push(n);
        }
    }
}

fn json_array(items: impl Iterator<Item = String>) -> String {
    let items: Vec<String> = items.collect();
    if items.is_empty() {
        return "[]\n".into();
    }
    let mut out = String::from("[\n");
    out.push_str(&items.join(",\n"));
    out.push_str("\n]\n");
    out
}

/// A JSON object of string-or-null members.
fn json_object<'a>(pairs: impl Iterator<Item = (&'a str, Option<&'a str>)>) -> String {
    let mut w = ObjectWriter::new();
    for (k, v) in pairs {
        match v {
            Some(v) => w.string(k, v),
            None => w.raw(k, "null"),
        };
    }
    w.finish()
}

/// Appends one CSV record (RFC 4180, CRLF) with every cell guarded.
fn csv_row<'a>(out: &mut String, cells: impl IntoIterator<Item = &'a str>) {
    for (i, cell) in cells.into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        csv_cell(out, cell);
    }
    out.push_str("\r\n");
}

/// One cell: `'` before a formula start, quoted when it holds a quote, comma, CR or LF.
fn csv_cell(out: &mut String, cell: &str) {
    let guard = cell.starts_with(['=', '+', '-', '@', '\t', '\r']);
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
        assert_eq!(cell("+1"), "'+1");
        assert_eq!(cell("-5"), "'-5");
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
            "time,kind,text\r\n10:00:00,connection,connected\r\n10:00:01,sent,\"a, \"\"b\"\"\"\r\n"
        );
        assert_eq!(
            log_json(entries.iter()),
            "[\n{\"time\":\"10:00:00\",\"kind\":\"connection\",\"text\":\"connected\"},\n\
             {\"time\":\"10:00:01\",\"kind\":\"sent\",\"text\":\"a, \\\"b\\\"\"}\n]\n"
        );
        assert_eq!(log_json([].iter()), "[]\n");
        assert_eq!(log_csv([].iter()), "time,kind,text\r\n");
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
        ];
        assert_eq!(
            inbox_csv(items.iter()),
            "time,body,$.mid,$.ct,p1,p2,p3\r\n\
             10:00:00,\"{\"\"t\"\":1}\",m1,,a,,\r\n\
             10:00:01,'=cmd,m2,text/plain,,,\"x,y\"\r\n\
             10:00:02,\"line1\nline2\",,,,,\r\n"
        );
        assert_eq!(inbox_csv([].iter()), "time,body\r\n");
    }

    #[test]
    fn the_inbox_json_keeps_null_apart_from_empty() {
        let items = [msg("10:00:00", "hi", &[("$.mid", "m1")], &[("n", None), ("e", Some("")), ("v", Some("\"q\""))])];
        assert_eq!(
            inbox_json(items.iter()),
            "[\n{\"time\":\"10:00:00\",\"body\":\"hi\",\"systemProperties\":{\"$.mid\":\"m1\"},\
             \"applicationProperties\":{\"n\":null,\"e\":\"\",\"v\":\"\\\"q\\\"\"}}\n]\n"
        );
    }
}
