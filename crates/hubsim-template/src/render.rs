//! Rendering: one call gives the next message of one device, advancing that device's state.
//!
//! Per render (ITS `TelemetryValues.NextValues`, then hubsim's additions):
//! 1. choose the payload (see [`crate::config`]);
//! 2. draw one GUID and compute the built-ins from the [`RenderContext`];
//! 3. for a template payload: compute every non-sequence variable in declaration order from its previous
//!    value; resolve `"$.X"` picks (hubsim extension: ITS prints them literally); then each sequence takes
//!    `values[n % len]` (`n` = [`Builtin::IterationNumber`](crate::Builtin)), a `"$.X"` value giving X's
//!    value when X is a built-in or an already computed variable. A variable referenced by some sequence
//!    but not used by any sequence this time keeps its previous value (so a counter used every other
//!    message counts 1, 2, 3 rather than 1, 3, 5); with no previous value its placeholder prints as the
//!    text `$.X`, as in ITS. Built-ins are never held back (ITS would freeze `IterationNumber`);
//! 4. render the header, if any, from the same values, and read it as a JSON object of properties.
//!
//! A fixed payload leaves variables and the render number untouched (ITS passes the previous values
//! through); its header sees fresh built-ins and the variables' last values.
//!
//! All randomness comes from the device's seeded [`Rng`]; the clock is the context's. So the same seed,
//! device id, configuration and context times give the same messages.

use crate::config::{Config, PayloadKind};
use crate::rng::Rng;
use crate::template::{lookup, Builtin, Part, Slot, Template};
use crate::time;
use crate::variable::{Kind, Out};
use hubsim_proto::json::{self, JsonError, JsonErrorKind, Value};

/// What a render needs from the outside world.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RenderContext<'a> {
    /// Render time, Unix milliseconds (UTC).
    pub now_unix_ms: i64,
    /// Minutes east of UTC for `LocalTime` and `Ticks` (UTC+01:00 is 60; JavaScript's `getTimezoneOffset()` negated).
    pub local_offset_min: i32,
    /// `MachineName` (ITS: the host or Kubernetes pod name).
    pub machine_name: &'a str,
}

/// One device's state across renders: its id, random generator, render number and last values.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceState {
    device_id: String,
    rng: Rng,
    iteration: u64,
    /// Last value of each variable, and the variable names they belong to (see `sync`).
    values: Vec<Option<Out>>,
    names: Vec<String>,
}

impl DeviceState {
    /// A fresh device. Use [`crate::device_seed`]`(run_seed, id)` for a different, reproducible stream per device.
    pub fn new(device_id: impl Into<String>, seed: u64) -> Self {
        DeviceState {
            device_id: device_id.into(),
            rng: Rng::new(seed),
            iteration: 0,
            values: Vec::new(),
            names: Vec::new(),
        }
    }

    /// Lines the stored values up with `vars`: a state may be used with an edited configuration (the
    /// app's variables editor); a variable keeps its value when its name is kept, others start afresh.
    fn sync(&mut self, vars: &[crate::Variable]) {
        if self.names.len() == vars.len() && self.names.iter().zip(vars).all(|(n, v)| *n == v.name) {
            return;
        }
        let mut values = vec![None; vars.len()];
        for (i, v) in vars.iter().enumerate() {
            if let Some(j) = self.names.iter().position(|n| *n == v.name) {
                values[i] = self.values[j].take();
            }
        }
        self.values = values;
        self.names.clear();
        for v in vars {
            self.names.push(v.name.clone());
        }
    }
    /// The id that `$.DeviceId` renders.
    pub fn device_id(&self) -> &str {
        &self.device_id
    }
    /// Template renders so far (the next render's `IterationNumber`).
    pub fn iteration(&self) -> u64 {
        self.iteration
    }
}

/// A rendered message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    /// Message body. Bytes, because ITS `fix`/`fixSize` payloads need not be UTF-8.
    pub body: Vec<u8>,
    /// Application properties from the header template, in its key order.
    pub properties: Vec<(String, String)>,
    /// Index into [`Config::payloads`] of the payload used.
    pub payload_index: usize,
}

impl Rendered {
    /// The body as text, if it is UTF-8.
    pub fn text(&self) -> Option<&str> {
        std::str::from_utf8(&self.body).ok()
    }
    /// Checks that the body is strict JSON; the error gives the line and column within the body.
    pub fn check_json(&self) -> Result<(), JsonError> {
        check_json(&self.body)
    }
}

/// Checks that `body` is UTF-8 and strict JSON (RFC 8259), reporting the first problem's position.
pub fn check_json(body: &[u8]) -> Result<(), JsonError> {
    match std::str::from_utf8(body) {
        Ok(text) => json::parse(text).map(drop),
        Err(e) => {
            let valid = std::str::from_utf8(&body[..e.valid_up_to()]).unwrap_or_default();
            let (line, col) = json::line_col(valid, valid.len());
            Err(JsonError { line, col, kind: JsonErrorKind::InvalidUtf8 })
        }
    }
}

/// Why a message could not be rendered. Only the header can fail: its rendering must be a JSON object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("Header: rendered header is not JSON: {0}")]
    HeaderJson(JsonError),
    #[error("Header: rendered header is not a JSON object")]
    HeaderNotObject,
    #[error(
        "Header: property {} is an array or object; properties must be strings, numbers or booleans",
        hubsim_proto::quote::quote(.key)
    )]
    HeaderValue { key: String },
    #[error("the rendered message is larger than {} bytes", MAX_RENDERED)]
    TooLarge,
}

struct Builtins {
    values: [Out; 8],
}

impl Builtins {
    fn new(st: &mut DeviceState, ctx: &RenderContext) -> Self {
        let (a, b) = (st.rng.next_u64(), st.rng.next_u64());
        let (now, off) = (ctx.now_unix_ms, ctx.local_offset_min);
        Builtins {
            values: [
                Out::Text(st.device_id.clone()),
                Out::Text(guid(a, b)),
                Out::Text(time::iso_utc(now)),
                Out::Text(time::iso_local(now, off)),
                Out::Int(time::ticks(now, off)),
                Out::Int(now.div_euclid(1000)),
                Out::Text(ctx.machine_name.to_owned()),
                Out::Int(st.iteration as i64),
            ],
        }
    }
    fn get(&self, b: Builtin) -> &Out {
        &self.values[Builtin::ALL.iter().position(|x| *x == b).unwrap_or(0)]
    }
}

/// A version 4 GUID from 128 random bits (`a` the first eight bytes, big-endian), in .NET's default `D` form
/// (lower case): `xxxxxxxx-xxxx-4xxx-[89ab]xxx-xxxxxxxxxxxx`.
pub fn guid(a: u64, b: u64) -> String {
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&a.to_be_bytes());
    bytes[8..].copy_from_slice(&b.to_be_bytes());
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(36);
    for (i, byte) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            s.push('-');
        }
        s.push(HEX[usize::from(byte >> 4)] as char);
        s.push(HEX[usize::from(byte & 15)] as char);
    }
    s
}

/// Largest rendered body or header, in bytes: IoT Hub's device-to-cloud message limit. A template whose
/// placeholders would expand past it (1 000 placeholders of a 1 000 000-character string are a gigabyte) is
/// stopped as soon as the text passes it, so no rendering allocates more than this plus one value.
pub const MAX_RENDERED: usize = 256 * 1024;

fn write_template(
    t: &Template,
    vars: &[Option<Out>],
    builtins: &Builtins,
    out: &mut String,
) -> Result<(), RenderError> {
    for part in t.parts() {
        if out.len() > MAX_RENDERED {
            return Err(RenderError::TooLarge);
        }
        match part {
            Part::Text(s) => out.push_str(s),
            Part::Placeholder { slot: Slot::Builtin(b), .. } => builtins.get(*b).write(out),
            Part::Placeholder { slot: Slot::Var(i), name } => match vars.get(*i) {
                Some(Some(v)) => v.write(out),
                _ => {
                    out.push_str("$.");
                    out.push_str(name);
                }
            },
        }
    }
    if out.len() > MAX_RENDERED {
        return Err(RenderError::TooLarge);
    }
    Ok(())
}

impl Config {
    /// Renders the next message for `state`'s device at `ctx`'s time, advancing the state.
    ///
    /// Errors when a header is configured and its rendering is not a JSON object of scalars, and when the body or
    /// header would be larger than [`MAX_RENDERED`] (the state does not advance when the body is).
    /// The body is not checked: call [`Rendered::check_json`] when it is meant to be JSON.
    pub fn render(&self, state: &mut DeviceState, ctx: &RenderContext) -> Result<Rendered, RenderError> {
        state.sync(&self.variables);
        let payload_index = self.choose_payload(state);
        let builtins = Builtins::new(state, ctx);
        let body = match &self.payloads[payload_index].kind {
            PayloadKind::Fix(bytes) => bytes.clone(),
            PayloadKind::Template(t) => {
                let next = self.next_values(state, ctx, &builtins);
                let mut text = String::with_capacity(t.source().len() + 32);
                write_template(t, &next, &builtins, &mut text)?;
                state.values = next;
                state.iteration += 1;
                text.into_bytes()
            }
        };
        let properties = match &self.header {
            None => Vec::new(),
            Some(h) => {
                let mut text = String::new();
                write_template(h, &state.values, &builtins, &mut text)?;
                header_properties(&text)?
            }
        };
        Ok(Rendered { body, properties, payload_index })
    }

    fn choose_payload(&self, state: &mut DeviceState) -> usize {
        if self.payloads.len() <= 1 {
            return 0;
        }
        if let Some(i) = self.payloads.iter().position(|p| p.device_id.as_deref() == Some(state.device_id.as_str())) {
            return i;
        }
        let r = 1 + state.rng.below(100) as u32;
        let mut sum = 0u32;
        self.payloads
            .iter()
            .position(|p| {
                sum += u32::from(p.distribution);
                sum >= r
            })
            .unwrap_or(self.payloads.len() - 1)
    }

    fn resolve(&self, s: &str, next: &[Option<Out>], builtins: &Builtins) -> Option<(Out, Option<usize>)> {
        match lookup(s.strip_prefix("$.")?, &self.variables)? {
            Slot::Builtin(b) => Some((builtins.get(b).clone(), None)),
            Slot::Var(j) => next.get(j)?.clone().map(|v| (v, Some(j))),
        }
    }

    fn next_values(&self, state: &mut DeviceState, ctx: &RenderContext, builtins: &Builtins) -> Vec<Option<Out>> {
        let vars = &self.variables;
        let mut next: Vec<Option<Out>> = vec![None; vars.len()];
        for (i, v) in vars.iter().enumerate() {
            if !matches!(v.kind, Kind::Sequence { .. }) {
                next[i] = Some(v.next(state.values[i].as_ref(), &mut state.rng, ctx.now_unix_ms));
            }
        }
        for (i, v) in vars.iter().enumerate() {
            if let (Kind::Pick { .. }, Some(Out::Text(s))) = (&v.kind, &next[i]) {
                if let Some((val, _)) = self.resolve(s, &next, builtins) {
                    next[i] = Some(val);
                }
            }
        }
        let mut used = vec![false; vars.len()];
        let n = state.iteration;
        for (i, v) in vars.iter().enumerate() {
            if let Kind::Sequence { values } = &v.kind {
                // A hand-built Kind may have no values; parsed ones always have some.
                let Some(val) = values.get((n % values.len().max(1) as u64) as usize) else {
                    next[i] = Some(Out::Text(String::new()));
                    continue;
                };
                next[i] = Some(match val.as_str().and_then(|s| self.resolve(s, &next, builtins)) {
                    Some((out, j)) => {
                        if let Some(j) = j {
                            used[j] = true;
                        }
                        out
                    }
                    None => Out::from_value(val, v.decimals),
                });
            }
        }
        for &j in &self.seq_refs {
            if !used[j] {
                next[j] = state.values[j].clone();
            }
        }
        next
    }
}

/// ITS reads the rendered header as a JSON object (Newtonsoft, so relaxed) of string properties.
fn header_properties(text: &str) -> Result<Vec<(String, String)>, RenderError> {
    let v = json::parse_relaxed(text).map_err(RenderError::HeaderJson)?;
    let obj = v.as_object().ok_or(RenderError::HeaderNotObject)?;
    let mut props = Vec::with_capacity(obj.len());
    for (k, v) in obj.iter() {
        let s = match v {
            Value::Null => continue,
            Value::String(s) => s.clone(),
            Value::Bool(b) => b.to_string(),
            Value::Number(json::Number::Int(i)) => i.to_string(),
            Value::Number(json::Number::Float(f)) => hubsim_proto::num::display_f64(*f),
            Value::Array(_) | Value::Object(_) => return Err(RenderError::HeaderValue { key: k.to_owned() }),
        };
        props.push((k.to_owned(), s));
    }
    Ok(props)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_is_version_4_in_d_form() {
        let g = guid(0, u64::MAX);
        assert_eq!(g, "00000000-0000-4000-bfff-ffffffffffff");
        let g = guid(0x0123_4567_89ab_cdef, 0x0123_4567_89ab_cdef);
        assert_eq!(g, "01234567-89ab-4def-8123-456789abcdef");
    }

    #[test]
    fn check_json_reports_position_in_body() {
        assert!(check_json(b"{\"a\": 1}").is_ok());
        assert_eq!(
            check_json(b"{\"a\": 1,\n \"b\": }").unwrap_err().to_string(),
            "line 2, col 7: unexpected character '}'"
        );
        assert_eq!(check_json(b"{\"a\": \"\xff\"}").unwrap_err().to_string(), "line 1, col 8: not valid UTF-8");
    }

    #[test]
    fn header_values_become_strings() {
        let p = header_properties("{a: 'x', b: 2, c: 2.5, d: true, e: null}").unwrap();
        assert_eq!(
            p,
            [
                ("a".into(), "x".into()),
                ("b".into(), "2".into()),
                ("c".into(), "2.5".into()),
                ("d".into(), "true".into())
            ]
        );
        assert_eq!(
            header_properties("{a: [1]}").unwrap_err().to_string(),
            "Header: property \"a\" is an array or object; properties must be strings, numbers or booleans"
        );
        assert_eq!(header_properties("[1]").unwrap_err(), RenderError::HeaderNotObject);
        assert_eq!(
            header_properties("{a: }").unwrap_err().to_string(),
            "Header: rendered header is not JSON: line 1, col 5: unexpected character '}'"
        );
    }

    #[test]
    fn a_rendering_larger_than_the_limit_is_an_error_not_gigabytes() {
        // 1 000 placeholders of a 1 000 000-character string would be a gigabyte: refused as soon as the text
        // passes the limit, and the state does not advance.
        let vars = crate::Variable::parse_list("[{name: 'S', customLengthString: 1000000}]").unwrap();
        let body = "$.S".repeat(1000);
        for (body, header) in [(body.as_str(), None), ("{}", Some(["{a: '", &body, "'}"].concat()))] {
            let config = Config::new(body, vars.clone(), header.as_deref()).unwrap();
            let mut st = DeviceState::new("d", 1);
            let ctx = RenderContext { now_unix_ms: 0, local_offset_min: 0, machine_name: "m" };
            let e = config.render(&mut st, &ctx).unwrap_err();
            assert_eq!(e, RenderError::TooLarge);
            assert_eq!(e.to_string(), "the rendered message is larger than 262144 bytes");
        }
        let small =
            Config::new("$.S", crate::Variable::parse_list("[{name: 'S', customLengthString: 10}]").unwrap(), None);
        let mut st = DeviceState::new("d", 1);
        let ctx = RenderContext { now_unix_ms: 0, local_offset_min: 0, machine_name: "m" };
        assert_eq!(small.unwrap().render(&mut st, &ctx).unwrap().body.len(), 10);
    }
}
