//! Device twins (reference §7): desired properties from the service (pushed to a connected device with their
//! `$version`) and reported properties from the device.
//!
//! IoT Hub's twin rules ("Understand and use device twins", section "Tags and properties format" and "Device
//! twin size") are enforced **before** anything is stored, so a bad patch is refused with 400 and can neither
//! make a twin unreadable nor disturb anyone else's write:
//! - property names: at most 1 KB of UTF-8, no control characters (C0, C1), no `.`, `$` or space;
//! - string values at most 4 KB of UTF-8; integers within ±4 503 599 627 370 495;
//! - nesting at most [`MAX_DEPTH`] objects deep (a 127-level patch once made a twin unreadable; the same rule
//!   bounds every peer-supplied JSON stored in a record, see [`crate::model`]);
//! - the desired and the reported sections at most [`MAX_SECTION`] each after the patch is applied, tags at most
//!   [`MAX_TAGS`], counted as IoT Hub counts ([`twin_size`]: characters of keys and strings, 8 per number, 4 per
//!   boolean), and at most [`MAX_SECTION_JSON`] / [`MAX_TAGS_JSON`] bytes of compact JSON (hubsim's own bound:
//!   IoT Hub's count leaves control characters out, so it alone would not bound what is stored).

use bytes::Bytes;
use serde_json::Value;
use thiserror::Error;

use super::{ConnCmd, Hub, ServiceError};
use crate::api::iothub::IfMatch;
use crate::model::{merge_patch, Device, Twin};
use crate::store::StoreError;
use crate::timefmt::{iso8601, unix_ms};

/// Deepest nesting of objects in a twin section (IoT Hub: 10).
pub const MAX_DEPTH: usize = 10;
/// Largest desired or reported section by IoT Hub's count ([`twin_size`]; IoT Hub: 32 KB each).
pub const MAX_SECTION: usize = 32 * 1024;
/// Largest tags section by IoT Hub's count ([`twin_size`]; IoT Hub: 8 KB).
pub const MAX_TAGS: usize = 8 * 1024;
/// Largest desired or reported section as compact JSON, bytes: hubsim's bound on what is stored and sent (both
/// sections of a twin GET stay within MQTT's 256 KB packet). Three bytes per counted character allows any
/// section IoT Hub takes, short of one written mostly in escaped control characters.
pub const MAX_SECTION_JSON: usize = 96 * 1024;
/// Largest tags section as compact JSON, bytes (hubsim's bound, as [`MAX_SECTION_JSON`]).
pub const MAX_TAGS_JSON: usize = 32 * 1024;
/// Longest property name, bytes (IoT Hub: 1 KB).
pub const MAX_NAME: usize = 1024;
/// Longest string value, bytes (IoT Hub: 4 KB).
pub const MAX_STRING: usize = 4 * 1024;
/// Largest integer magnitude (IoT Hub: 2^52 − 1 upwards, −2^52 downwards).
pub const MAX_INT: i64 = 4_503_599_627_370_495;

/// Which section a patch is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Desired,
    Reported,
    /// Service-only tags: the same rules, at most [`MAX_TAGS`] bytes.
    Tags,
}

impl std::fmt::Display for Section {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Section::Desired => "desired",
            Section::Reported => "reported",
            Section::Tags => "tags",
        })
    }
}

/// Why a twin patch was refused; each names the offending path (`a.b.c`).
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TwinError {
    #[error("the {0} patch must be a JSON object")]
    NotAnObject(Section),
    #[error("'{path}' nests deeper than {MAX_DEPTH} levels (IoT Hub's twin limit)")]
    TooDeep { path: String },
    #[error("property name '{name}' at '{path}' is not allowed: {why}")]
    BadName { path: String, name: String, why: &'static str },
    #[error("the string at '{path}' is {len} bytes; twin strings are at most {MAX_STRING} bytes")]
    StringTooLong { path: String, len: usize },
    #[error("the number at '{path}' is outside IoT Hub's integer range (±{MAX_INT})")]
    NumberOutOfRange { path: String },
    #[error("{section} would be {size} by IoT Hub's count (characters of names and strings, 8 per number, 4 per boolean); IoT Hub allows {max}")]
    TooLarge { section: Section, size: usize, max: usize },
    #[error("{section} would be {size} bytes of JSON; hubsim stores at most {max}")]
    TooManyBytes { section: Section, size: usize, max: usize },
}

/// Checks a patch against IoT Hub's twin rules (see the module docs).
pub fn validate_patch(patch: &Value, section: Section) -> Result<(), TwinError> {
    let Value::Object(map) = patch else { return Err(TwinError::NotAnObject(section)) };
    // The patch object itself is level 1 (IoT Hub counts the section's root).
    for (k, v) in map {
        check_name(k, "")?;
        check_value(v, k, 2)?;
    }
    Ok(())
}

fn check_name(name: &str, parent: &str) -> Result<(), TwinError> {
    let bad = |why| TwinError::BadName {
        path: if parent.is_empty() { String::new() } else { parent.to_owned() },
        name: super::truncate(name, 64),
        why,
    };
    if name.is_empty() {
        return Err(bad("it is empty"));
    }
    if name.len() > MAX_NAME {
        return Err(bad("it is longer than 1 KB"));
    }
    if name.chars().any(char::is_control) {
        return Err(bad("it contains a control character"));
    }
    if name.contains('.') {
        return Err(bad("it contains '.'"));
    }
    if name.contains('$') {
        return Err(bad("it contains '$' (reserved for system properties)"));
    }
    if name.contains(' ') {
        return Err(bad("it contains a space"));
    }
    Ok(())
}

fn check_value(v: &Value, path: &str, depth: usize) -> Result<(), TwinError> {
    match v {
        Value::Object(m) => {
            if depth > MAX_DEPTH {
                return Err(TwinError::TooDeep { path: super::truncate(path, 200) });
            }
            for (k, child) in m {
                check_name(k, path)?;
                check_value(child, &format!("{path}.{k}"), depth + 1)?;
            }
            Ok(())
        }
        Value::Array(items) => {
            if depth > MAX_DEPTH {
                return Err(TwinError::TooDeep { path: super::truncate(path, 200) });
            }
            items.iter().enumerate().try_for_each(|(i, item)| check_value(item, &format!("{path}[{i}]"), depth + 1))
        }
        Value::String(s) if s.len() > MAX_STRING => {
            Err(TwinError::StringTooLong { path: super::truncate(path, 200), len: s.len() })
        }
        Value::Number(n) => {
            let in_range = match (n.as_i64(), n.as_u64(), n.as_f64()) {
                (Some(i), _, _) => (-MAX_INT - 1..=MAX_INT).contains(&i),
                (None, Some(_), _) => false,
                (None, None, Some(f)) => f.is_finite(),
                (None, None, None) => false,
            };
            if in_range {
                Ok(())
            } else {
                Err(TwinError::NumberOutOfRange { path: super::truncate(path, 200) })
            }
        }
        Value::String(_) | Value::Bool(_) | Value::Null => Ok(()),
    }
}

/// A twin section's size as IoT Hub computes it ("Understand and use device twins", Device twin size): for each
/// property, the length of its name plus the size of its value; a string's length counts its characters except
/// control characters (C0 and C1); a number is 8, a boolean 4; an object (or an array) is the sum of what it
/// holds. Names starting with `$` (`$version`, `$metadata`) are read-only elements and not counted.
pub fn twin_size(v: &Value) -> usize {
    let chars = |s: &str| s.chars().filter(|c| !c.is_control()).count();
    match v {
        Value::Object(m) => m.iter().filter(|(k, _)| !k.starts_with('$')).map(|(k, v)| chars(k) + twin_size(v)).sum(),
        Value::Array(items) => items.iter().map(twin_size).sum(),
        Value::String(s) => chars(s),
        Value::Number(_) => 8,
        Value::Bool(_) => 4,
        Value::Null => 0,
    }
}

/// Checks a whole section (after a patch is merged, or as given whole) against IoT Hub's size limit,
/// [`MAX_TAGS`] for tags and [`MAX_SECTION`] for desired or reported properties by [`twin_size`], and against
/// hubsim's bound on its JSON ([`MAX_TAGS_JSON`], [`MAX_SECTION_JSON`]).
pub(crate) fn check_size(section_value: &Value, section: Section) -> Result<(), TwinError> {
    let (max, max_json) =
        if section == Section::Tags { (MAX_TAGS, MAX_TAGS_JSON) } else { (MAX_SECTION, MAX_SECTION_JSON) };
    let size = twin_size(section_value);
    if size > max {
        return Err(TwinError::TooLarge { section, size, max });
    }
    let bytes = serde_json::to_vec(section_value).map(|v| v.len()).unwrap_or(usize::MAX);
    if bytes > max_json {
        return Err(TwinError::TooManyBytes { section, size: bytes, max: max_json });
    }
    Ok(())
}

impl From<TwinError> for ServiceError {
    fn from(e: TwinError) -> Self {
        ServiceError::new(400, 400004, e.to_string())
    }
}

/// Why a device's reported patch was not applied.
#[derive(Debug, Error)]
pub enum ReportedError {
    /// The patch breaks a twin rule: the device gets 400.
    #[error(transparent)]
    Invalid(#[from] TwinError),
    /// The store failed: the device gets 500.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Hub {
    pub async fn get_twin(&self, id: &str) -> Result<Twin, ServiceError> {
        self.get_device(id).await?;
        Ok(self.store.twin(id).await?)
    }

    /// Applies a desired-properties patch and pushes it to the device if connected. A top-level `$version`
    /// (a client echoing the twin) is ignored; every other rule of the module docs is enforced first.
    pub async fn patch_desired(&self, id: &str, mut patch: Value) -> Result<Twin, ServiceError> {
        self.get_device(id).await?;
        if let Value::Object(m) = &mut patch {
            m.remove("$version");
        }
        validate_patch(&patch, Section::Desired)?;
        let key = id.to_owned();
        let p = patch.clone();
        let _order = self.desired_order.lock().await;
        let twin = self
            .store
            .write(move |tx| {
                let mut t = tx.twin(&key)?;
                merge_patch(&mut t.desired, &p);
                // A rule broken by the merged document is this caller's error only: nothing is written.
                if let Err(e) = check_size(&t.desired, Section::Desired) {
                    return Ok(Err(e));
                }
                t.desired_version += 1;
                let now = iso8601(unix_ms());
                crate::model::touch_metadata(&mut t.desired_meta, &p, &now, Some(t.desired_version));
                t.desired_updated = Some(now);
                tx.put_twin(&key, &t)?;
                Ok(Ok(t))
            })
            .await??;
        self.push_desired(id, patch, twin.desired_version);
        Ok(twin)
    }

    /// Sends a desired patch to the device if it is connected.
    fn push_desired(&self, id: &str, mut body: Value, version: u64) {
        let Some(h) = self.conn(id) else { return };
        if let Value::Object(m) = &mut body {
            m.insert("$version".into(), version.into());
        }
        let cmd = ConnCmd::Desired(Box::new((version, Bytes::from(body.to_string()))));
        if h.try_send(cmd).is_err() {
            // The task is not keeping up: close it rather than lose the notification silently; the device
            // reads the whole twin again when it reconnects (reference §7).
            h.close(hubsim_proto::hub::CloseReason::ClosedByService(
                "the connection's command queue is full: the device is not reading".into(),
            ));
        }
    }

    /// The service's twin write (IoT Hub's `PATCH /twins/{id}` merges, `PUT` replaces): `tags` and
    /// `properties.desired` of `body`, checked by the twin rules, under `If-Match` (412 on a stale ETag). A
    /// desired change is pushed to the connected device (for a replace, the whole new desired section).
    pub async fn write_twin(
        &self,
        id: &str,
        if_match: IfMatch,
        body: &Value,
        replace: bool,
    ) -> Result<(Device, Twin), ServiceError> {
        let device = self.get_identity(id).await?;
        let take = |v: Option<&Value>, section| -> Result<Option<Value>, ServiceError> {
            match v {
                None | Some(Value::Null) if !replace => Ok(None),
                None | Some(Value::Null) => Ok(Some(Value::Object(Default::default()))),
                Some(v) => {
                    let mut v = v.clone();
                    strip_metadata(&mut v);
                    validate_patch(&v, section)?;
                    Ok(Some(v))
                }
            }
        };
        let tags = take(body.get("tags"), Section::Tags)?;
        let desired = take(body.pointer("/properties/desired"), Section::Desired)?;
        // Reported properties in a replaced twin are the device's: ignored, as IoT Hub does.
        let key = id.to_owned();
        let d2 = desired.clone();
        let _order = match desired {
            Some(_) => Some(self.desired_order.lock().await),
            None => None,
        };
        let twin = self
            .store
            .write(move |tx| {
                let mut t = tx.twin(&key)?;
                if let Err(e) = if_match.check(&crate::api::iothub::twin_etag(&t), "the twin") {
                    return Ok(Err(e));
                }
                let now = iso8601(unix_ms());
                if let Some(tags) = &tags {
                    if replace || !t.tags.is_object() {
                        t.tags = Value::Object(Default::default());
                    }
                    merge_patch(&mut t.tags, tags);
                    if let Err(e) = check_size(&t.tags, Section::Tags) {
                        return Ok(Err(e.into()));
                    }
                    t.tags_version += 1;
                }
                if let Some(d) = &d2 {
                    if replace {
                        t.desired = Value::Object(Default::default());
                        t.desired_meta = Value::Object(Default::default());
                    }
                    merge_patch(&mut t.desired, d);
                    if let Err(e) = check_size(&t.desired, Section::Desired) {
                        return Ok(Err(e.into()));
                    }
                    t.desired_version += 1;
                    crate::model::touch_metadata(&mut t.desired_meta, d, &now, Some(t.desired_version));
                    t.desired_updated = Some(now);
                }
                tx.put_twin(&key, &t)?;
                Ok(Ok(t))
            })
            .await??;
        if let Some(d) = desired {
            self.push_desired(id, if replace { twin.desired.clone() } else { d }, twin.desired_version);
        }
        Ok((device, twin))
    }

    /// Applies a reported-properties patch from the device after checking it; returns the new reported version.
    pub async fn patch_reported(&self, id: &str, patch: Value) -> Result<u64, ReportedError> {
        validate_patch(&patch, Section::Reported)?;
        let key = id.to_owned();
        Ok(self
            .store
            .write(move |tx| {
                let mut t = tx.twin(&key)?;
                merge_patch(&mut t.reported, &patch);
                if let Err(e) = check_size(&t.reported, Section::Reported) {
                    return Ok(Err(e));
                }
                t.reported_version += 1;
                let now = iso8601(unix_ms());
                crate::model::touch_metadata(&mut t.reported_meta, &patch, &now, None);
                t.reported_updated = Some(now);
                tx.put_twin(&key, &t)?;
                Ok(Ok(t.reported_version))
            })
            .await??)
    }
}

/// Removes the system properties a client echoes back from a twin it read (`$metadata`, `$version`,
/// `$lastUpdated`, `$lastUpdatedVersion`); any other `$` name stays, so the twin rules refuse it (400).
pub(crate) fn strip_metadata(v: &mut Value) {
    const SYSTEM: [&str; 4] = ["$metadata", "$version", "$lastUpdated", "$lastUpdatedVersion"];
    if let Value::Object(m) = v {
        m.retain(|k, _| !SYSTEM.contains(&k.as_str()));
        m.values_mut().for_each(strip_metadata);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn nested(levels: usize) -> Value {
        let mut v = json!(1);
        for _ in 0..levels {
            v = json!({ "n": v });
        }
        v
    }

    #[test]
    fn iot_hub_twin_rules_table() {
        let ok = |v: Value| assert_eq!(validate_patch(&v, Section::Reported), Ok(()), "{v}");
        let bad = |v: Value, what: &str| {
            let e = validate_patch(&v, Section::Reported).expect_err(&v.to_string());
            assert!(e.to_string().contains(what), "{e} should mention {what}");
        };
        ok(json!({"fw": "1.2", "temp": 21.5, "n": null, "list": [1, 2, {"a": true}]}));
        ok(nested(10));
        bad(nested(11), "deeper than 10");
        bad(nested(15), "deeper than 10");
        bad(nested(127), "deeper than 10");
        bad(json!({"a.b": 1}), "contains '.'");
        bad(json!({"x": {"a.b": 1}}), "contains '.'");
        bad(json!({"$x": 1}), "contains '$'");
        bad(json!({"a b": 1}), "contains a space");
        bad(json!({"a\u{1}": 1}), "control character");
        bad(json!({"a\u{85}": 1}), "control character");
        bad(json!({"": 1}), "empty");
        bad(json!({ "k".repeat(1025): 1 }), "longer than 1 KB");
        ok(json!({ "k".repeat(1024): 1 }));
        bad(json!({"s": "x".repeat(4097)}), "4096 bytes");
        ok(json!({"s": "x".repeat(4096)}));
        bad(json!({"i": 4_503_599_627_370_496i64}), "integer range");
        ok(json!({"i": 4_503_599_627_370_495i64, "j": -4_503_599_627_370_496i64}));
        bad(json!({"u": u64::MAX}), "integer range");
        bad(json!([1]), "must be a JSON object");
        bad(json!("x"), "must be a JSON object");
    }

    #[test]
    fn the_merged_section_is_bounded() {
        let small = json!({"a": "x".repeat(4000)});
        assert!(check_size(&small, Section::Reported).is_ok());
        let mut big = json!({});
        for i in 0..9 {
            merge_patch(&mut big, &json!({ format!("k{i}"): "x".repeat(4000) }));
        }
        assert!(matches!(check_size(&big, Section::Reported), Err(TwinError::TooLarge { .. })));
    }

    #[test]
    fn the_size_is_counted_as_iot_hub_counts_it() {
        // Names and strings by character (not UTF-8 byte), numbers 8, booleans 4, `$` names not at all.
        let v = json!({"é": "ab\u{1}", "n": 1.5, "b": true, "o": {"k": [1, "xy"]}, "$version": 4});
        assert_eq!(twin_size(&v), (1 + 2) + (1 + 8) + (1 + 4) + (1 + (1 + (8 + 2))));
        // 17 100 characters of "é" (34 200 bytes of UTF-8) fit IoT Hub's 32 KB; 33 000 do not.
        let fits = json!({"a": "é".repeat(4000), "b": "é".repeat(4000), "c": "é".repeat(4000), "d": "é".repeat(4000), "e": "é".repeat(1100)});
        assert_eq!(check_size(&fits, Section::Desired), Ok(()));
        let mut over = json!({});
        for i in 0..9 {
            merge_patch(&mut over, &json!({ format!("k{i}"): "é".repeat(3700) }));
        }
        assert!(matches!(check_size(&over, Section::Desired), Err(TwinError::TooLarge { .. })));
        // Control characters are not counted, but what is stored stays bounded by hubsim's own JSON limit.
        let mut hidden = json!({});
        for i in 0..24 {
            merge_patch(&mut hidden, &json!({ format!("k{i}"): "\u{1}".repeat(700) }));
        }
        assert!(twin_size(&hidden) < 100);
        assert!(matches!(check_size(&hidden, Section::Reported), Err(TwinError::TooManyBytes { .. })));
    }
}
