//! Human output of the CLI. Text that a device or a peer chose (bodies, property names and values, ids, reasons)
//! has its control characters escaped, so a message cannot move the cursor, recolour or retitle the terminal
//! running `hubsim events --follow`; `--json` output stays exact (JSON escapes control characters itself).

use serde_json::Value;
use std::io::Write;

/// `s` with every control character (C0, DEL, C1) written as a Rust-style escape (`\n`, `\u{1b}`), and
/// backslashes doubled so an escape cannot be forged.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// A JSON field as display text: strings escaped, other values as JSON, missing as `missing`.
fn text<'a>(v: &'a Value, missing: &'a str) -> String {
    match v {
        Value::String(s) => escape(s),
        Value::Null => missing.to_owned(),
        other => escape(&other.to_string()),
    }
}

pub fn json(v: &Value) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string()));
}

/// A record's identity: `device`, or a module's `device/module`.
fn identity(v: &Value) -> String {
    match v["moduleId"].as_str() {
        Some(m) => [text(&v["deviceId"], "-"), "/".into(), escape(m)].concat(),
        None => text(&v["deviceId"], "-"),
    }
}

/// One telemetry event (a module's identity as `device/module`).
pub fn event(v: &Value, as_json: bool) {
    if as_json {
        let out = serde_json::json!({
            "deviceId": v["deviceId"], "moduleId": v["moduleId"], "body": v["body"], "bodyBase64": v["bodyBase64"],
            "systemProperties": v["systemProperties"], "applicationProperties": v["applicationProperties"],
            "enqueuedTime": v["enqueuedTime"], "seq": v["seq"],
        });
        println!("{out}");
    } else {
        println!("{} {} {}", text(&v["enqueuedTime"], ""), identity(v), text(&v["body"], "<binary>"));
        for (k, val) in v["applicationProperties"].as_object().into_iter().flatten() {
            // A property sent without `=` has no value (null), which differs from an empty one (reference §5).
            println!("    {}: {}", escape(k), if val.is_null() { "(no value)".to_owned() } else { text(val, "") });
        }
    }
    let _ = std::io::stdout().flush();
}

/// One connection-log record (a module's identity as `device/module`).
pub fn connection(v: &Value, as_json: bool) {
    if as_json {
        println!("{v}");
    } else {
        let identity = identity(v);
        println!(
            "{} {:<16} {:<14} {:<5} {:>6} {}: {}",
            text(&v["time"], ""),
            text(&v["operation"], ""),
            identity,
            text(&v["transport"], ""),
            v["resultType"],
            text(&v["reason"], ""),
            text(&v["description"], "")
        );
    }
    let _ = std::io::stdout().flush();
}

/// The device list as a table.
pub fn device_table(list: &Value) {
    for d in list.as_array().into_iter().flatten() {
        println!(
            "{:<32} {:<9} {:<12} {:>3} queued  {}",
            text(&d["deviceId"], ""),
            text(&d["status"], ""),
            text(&d["connectionState"], ""),
            d["cloudToDeviceMessageCount"],
            text(&d["modelId"], "")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(escape("\u{1b}]0;pwned\u{7}ok"), "\\u{1b}]0;pwned\\u{7}ok");
        assert_eq!(escape("a\nb\tc\r"), "a\\nb\\tc\\r");
        assert_eq!(escape("\u{9b}31m"), "\\u{9b}31m", "C1 CSI");
        assert_eq!(escape("\u{7f}"), "\\u{7f}");
    }

    #[test]
    fn escapes_cannot_be_forged_and_text_is_kept() {
        assert_eq!(escape("\\u{1b}"), "\\\\u{1b}");
        assert_eq!(escape("température 21,5 °C — ok"), "température 21,5 °C — ok");
    }

    #[test]
    fn fields_render_by_kind() {
        assert_eq!(text(&Value::Null, "-"), "-");
        assert_eq!(text(&serde_json::json!(5), ""), "5");
        assert_eq!(text(&serde_json::json!("x\u{1b}"), ""), "x\\u{1b}");
    }
}
