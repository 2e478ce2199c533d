//! Small browser helpers: clocks, ids, JSON (through the browser's own `JSON`, so no JSON library ships in the
//! bundle), clipboard and downloads.

use hubsim_proto::json;
use wasm_bindgen::JsValue;

/// Unix seconds from the browser clock.
pub fn unix_now() -> u64 {
    (js_sys::Date::now() / 1000.0) as u64
}

/// The local date and time, ISO 8601 with the offset from UTC: `2026-11-30T05:45:12+01:00`. The page shows
/// the time of day ([`time_of_day`]); the exports keep it all, so a spreadsheet can order entries across days.
pub fn clock_time() -> String {
    let d = js_sys::Date::new_0();
    let off = -d.get_timezone_offset();
    // The UTC form of the local time, whose first 19 characters are the local date and time.
    let local = js_sys::Date::new(&JsValue::from_f64(d.get_time() + off * 60_000.0));
    let mut out: String = String::from(local.to_iso_string()).chars().take(19).collect();
    out.push(if off < 0.0 { '-' } else { '+' });
    let m = off.abs() as u32;
    for (i, n) in [m / 60, m % 60].into_iter().enumerate() {
        if i > 0 {
            out.push(':');
        }
        out.push(char::from(b'0' + (n / 10 % 10) as u8));
        out.push(char::from(b'0' + (n % 10) as u8));
    }
    out
}

/// `HH:MM:SS` of a [`clock_time`] (anything shorter as it is).
pub fn time_of_day(stamp: &str) -> &str {
    stamp.get(11..19).unwrap_or(stamp)
}

/// ISO 8601 UTC now (for `$.ctime`).
pub fn iso_now() -> String {
    String::from(js_sys::Date::new_0().to_iso_string())
}

/// A random UUID v4 (for message ids).
pub fn uuid() -> String {
    let mut b = [0u8; 16];
    let ok = web_sys::window()
        .and_then(|w| w.crypto().ok())
        .map(|c| c.get_random_values_with_u8_array(&mut b).is_ok())
        .unwrap_or(false);
    if !ok {
        for x in b.iter_mut() {
            *x = (js_sys::Math::random() * 256.0) as u8;
        }
    }
    // The template engine's `$.Guid`: the version and variant bits set, in the 8-4-4-4-12 form.
    let [a, b] = [&b[..8], &b[8..]].map(|h| u64::from_be_bytes(h.try_into().unwrap_or_default()));
    hubsim_template::guid(a, b)
}

/// `Ok(pretty)` if `text` is JSON (read by the core's parser, indented by two spaces), `Err(message)` with the
/// line and column otherwise.
pub fn json_pretty(text: &str) -> Result<String, String> {
    json::parse(text).map(|v| json::to_string_pretty(&v)).map_err(|e| e.to_string())
}

/// The member `name` of the JSON object `text`, pretty-printed (empty if there is none).
pub fn json_member(text: &str, name: &str) -> String {
    json::parse(text).ok().and_then(|v| v.get(name).map(json::to_string_pretty)).unwrap_or_default()
}

/// True if `text` parses as JSON.
pub fn is_json(text: &str) -> bool {
    json::parse(text).is_ok()
}

/// Copies text to the clipboard.
pub fn copy(text: &str) {
    if let Some(w) = web_sys::window() {
        let _ = w.navigator().clipboard().write_text(text);
    }
}

/// Offers `content` as a file download.
pub fn download(name: &str, mime: &str, content: &str) {
    let Some(doc) = web_sys::window().and_then(|w| w.document()) else { return };
    let parts = js_sys::Array::of1(&JsValue::from_str(content));
    let opts = web_sys::BlobPropertyBag::new();
    opts.set_type(mime);
    let Ok(blob) = web_sys::Blob::new_with_str_sequence_and_options(&parts, &opts) else { return };
    let Ok(url) = web_sys::Url::create_object_url_with_blob(&blob) else { return };
    if let Ok(a) = doc.create_element("a") {
        let _ = a.set_attribute("href", &url);
        let _ = a.set_attribute("download", name);
        if let Ok(a) = wasm_bindgen::JsCast::dyn_into::<web_sys::HtmlElement>(a) {
            a.click();
        }
    }
    let _ = web_sys::Url::revoke_object_url(&url);
}

/// A body as received, for the inbox and its exports: its text, with `json` (an object or array) or `text`, or hex
/// for binary. The inbox shows JSON pretty-printed; the exports keep it as it came.
pub fn describe_body(bytes: &[u8]) -> (String, &'static str) {
    match std::str::from_utf8(bytes) {
        Ok(t) if !t.chars().any(|c| c.is_control() && !c.is_whitespace()) => {
            let json = t.trim_start().starts_with(['{', '[']) && is_json(t);
            (t.to_owned(), if json { "json" } else { "text" })
        }
        _ => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            let mut out = String::with_capacity(bytes.len() * 3);
            for (i, b) in bytes.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                out.push(HEX[usize::from(b >> 4)] as char);
                out.push(HEX[usize::from(b & 15)] as char);
            }
            (out, "hex")
        }
    }
}

/// An effect's dependency compared by address: the reducer changes what an `Rc` of the state holds only through
/// `Rc::make_mut`, or `Rc::unwrap_or_clone` into a new `Rc`, which copy it into a new allocation while the effect
/// keeps the old one, so the same address is the same value (a new one may be equal: the effect then runs again
/// with the same value). Keeps deep comparisons out of the bundle: the settings (the app), the Plug and Play
/// state (the model panel), the confirmation (the connect form).
pub struct Same<T>(pub std::rc::Rc<T>);

impl<T> PartialEq for Same<T> {
    fn eq(&self, other: &Self) -> bool {
        std::rc::Rc::ptr_eq(&self.0, &other.0)
    }
}
