//! The device a DTDL model describes, as app state: the loaded model, its telemetry generators and live values,
//! the forms of its properties and commands, and what was desired, acknowledged and called. Plain data with a pure
//! reducer ([`PnpState::reduce`]), tested natively like [`crate::state`].
//!
//! Every Plug and Play convention (the component wrapper, acks, `$.sub`, `component*command`, reading desired
//! patches, which desired values are still unacknowledged, request validation, default values, the telemetry
//! plans) comes from `hubsim_dtdl`; this module only decides with the user's choices (accept, reject or leave a
//! desired value pending; a command's response form) and keeps what the panel shows. Effects (sending, timers)
//! are in `crate::controller`, which calls the `answer_*` functions here.
//!
//! Bounds: a model text of at most [`MAX_MODEL_BYTES`]. The values sent are charted by the page's one series store
//! (`crate::series`), under `{component}.{field}` paths.

use std::rc::Rc;

use hubsim_dtdl::pnp::{self as conv, Ack, CommandError, DesiredPatch};
use hubsim_dtdl::{default_value, telemetry_plans, validate, EnumLiteral, Interface, Model, Primitive, Schema};
use hubsim_dtdl::{DesiredUpdate, TelemetryPlan};
use hubsim_proto::device::Telemetry;
use hubsim_proto::json::{self, Object, Value};
use hubsim_proto::num::display_f64;
use hubsim_proto::property_bag::SystemProperty;
use hubsim_template::{Config, DeviceState, Kind, RenderContext};

/// Largest model text accepted (the public samples are a few KB).
pub const MAX_MODEL_BYTES: usize = 256 * 1024;
/// Default time between two telemetry rounds.
pub const DEFAULT_INTERVAL_MS: u32 = 1000;
/// The telemetry interval the model panel accepts, in ms, inclusive (100 ms to 1 hour).
pub const INTERVAL_RANGE_MS: (u32, u32) = (100, 3_600_000);

/// What the device answers to a desired value of a writable property.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Choice {
    /// `ac` 200: the value is applied.
    Accept,
    /// `ac` 400 with the reason as `ad`.
    Reject,
    /// `ac` 202: in progress, answered later with the buttons of the panel.
    Pending,
}

impl Choice {
    pub const ALL: [Choice; 3] = [Choice::Accept, Choice::Reject, Choice::Pending];

    /// For the select in the panel and its value.
    pub fn label(self) -> &'static str {
        match self {
            Choice::Accept => "accept (200)",
            Choice::Reject => "reject (400)",
            Choice::Pending => "leave pending (202)",
        }
    }
}

/// The last values sent of one telemetry.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Live {
    /// The last value as JSON text (empty before the first message).
    pub last: String,
}

/// A property: the form of its value, and for a writable one the user's choice and what the twin says.
#[derive(Clone, Debug, PartialEq)]
pub struct PropState {
    /// The texts of the value's form (see [`form_texts`]).
    pub fields: Vec<String>,
    /// Why the form's value does not fit the schema.
    pub error: Option<String>,
    pub choice: Choice,
    /// `ad` of a rejection.
    pub reason: String,
    /// The last desired value and the desired `$version` it came with.
    pub desired: Option<(Value, i64)>,
    /// The last acknowledgement sent or read from the twin.
    pub ack: Option<Ack>,
}

/// A call of a command and its answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallRecord {
    pub time: String,
    pub request: String,
    pub status: u16,
    pub response: String,
}

/// A command: its response form and status, and the last call.
#[derive(Clone, Debug, PartialEq)]
pub struct CmdState {
    pub fields: Vec<String>,
    pub error: Option<String>,
    pub status: u16,
    pub last: Option<CallRecord>,
}

/// The state of one interface (the default component or a component), parallel to its model contents.
#[derive(Clone, Debug, PartialEq)]
pub struct IfaceState {
    pub telemetry: Vec<Live>,
    pub properties: Vec<PropState>,
    pub commands: Vec<CmdState>,
}

/// A parameter of a generator's form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Param {
    Min,
    Max,
    Step,
    Start,
    /// A sequence's values, comma-separated.
    Values,
}

/// A form field of a property or a command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Item {
    Property(usize),
    Command(usize),
}

/// One acknowledgement to send.
#[derive(Clone, Debug, PartialEq)]
pub struct AckSent {
    pub component: Option<String>,
    pub property: String,
    pub ack: Ack,
}

/// The Plug and Play part of the app state.
///
/// Equality is by revision: every [`PnpState::reduce`] makes a new one, so the view and the controller see every
/// change, and no render compares models, plans and forms deeply (that code would also cost bundle size).
#[derive(Clone, Debug)]
pub struct PnpState {
    pub model: Option<Rc<Model>>,
    /// Why the last model could not be loaded (names the element and the reason).
    pub error: Option<String>,
    /// One plan per interface with telemetry (`hubsim_dtdl::telemetry_plans`), generators edited by the user.
    pub plans: Vec<TelemetryPlan>,
    /// Why the last generator edit was refused.
    pub generator_error: Option<String>,
    /// Parallel to `Model::interfaces()`: the default component first.
    pub interfaces: Vec<IfaceState>,
    pub interval_ms: u32,
    pub running: bool,
    /// Telemetry messages sent since the model was loaded.
    pub sent: u64,
    /// Counts loads, so the controller knows its generator states belong to another model.
    pub generation: u64,
    /// Counts reductions (see the type's equality).
    revision: u64,
}

impl PartialEq for PnpState {
    fn eq(&self, other: &Self) -> bool {
        self.revision == other.revision && self.generation == other.generation
    }
}

impl Default for PnpState {
    fn default() -> Self {
        PnpState {
            model: None,
            error: None,
            plans: Vec::new(),
            generator_error: None,
            interfaces: Vec::new(),
            interval_ms: DEFAULT_INTERVAL_MS,
            running: false,
            sent: 0,
            generation: 0,
            revision: 0,
        }
    }
}

/// Everything that changes the Plug and Play state, as data.
#[derive(Clone, Debug, PartialEq)]
pub enum PnpAction {
    /// A model's JSON text (pasted, from a file, or built in).
    Load(String),
    /// A model that could not even be read (a file too large or unreadable).
    LoadFailed(String),
    Unload,
    Interval(u32),
    Running(bool),
    /// An edit of a generator's parameter: plan, variable, parameter, text.
    Generator {
        plan: usize,
        var: usize,
        param: Param,
        text: String,
    },
    /// A telemetry message sent: its component and body.
    Sent {
        component: Option<String>,
        body: String,
    },
    /// An edit of a form field.
    Field {
        iface: usize,
        item: Item,
        field: usize,
        text: String,
    },
    Choice {
        iface: usize,
        prop: usize,
        choice: Choice,
    },
    Reason {
        iface: usize,
        prop: usize,
        text: String,
    },
    Status {
        iface: usize,
        cmd: usize,
        status: u16,
    },
    /// Desired values received (a patch, or the unacknowledged part of the twin).
    Desired(DesiredPatch),
    /// Acknowledgements sent.
    Acked(Vec<AckSent>),
    /// The full twin read on connect: desired values and the acks already in the reported section.
    Twin(Value),
    /// A command was called and answered.
    Called {
        iface: usize,
        cmd: usize,
        record: CallRecord,
    },
}

impl PnpState {
    /// Applies one action. Pure.
    pub fn reduce(mut self, action: PnpAction) -> PnpState {
        let revision = self.revision + 1;
        match action {
            PnpAction::Load(text) => self.load(&text),
            PnpAction::LoadFailed(why) => self.error = Some(why),
            PnpAction::Unload => {
                let generation = self.generation + 1;
                self = PnpState { generation, interval_ms: self.interval_ms, ..PnpState::default() };
            }
            PnpAction::Interval(ms) => self.interval_ms = ms.clamp(INTERVAL_RANGE_MS.0, INTERVAL_RANGE_MS.1),
            PnpAction::Running(r) => self.running = r && self.model.is_some(),
            PnpAction::Generator { plan, var, param, text } => {
                self.generator_error = self.edit_generator(plan, var, param, &text).err();
            }
            PnpAction::Sent { component, body } => self.sent_values(component.as_deref(), &body),
            PnpAction::Field { iface, item, field, text } => self.edit_field(iface, item, field, text),
            PnpAction::Choice { iface, prop, choice } => {
                if let Some(p) = self.prop_mut(iface, prop) {
                    p.choice = choice;
                }
            }
            PnpAction::Reason { iface, prop, text } => {
                if let Some(p) = self.prop_mut(iface, prop) {
                    p.reason = text;
                }
            }
            PnpAction::Status { iface, cmd, status } => {
                if let Some(c) = self.interfaces.get_mut(iface).and_then(|i| i.commands.get_mut(cmd)) {
                    c.status = status;
                }
            }
            PnpAction::Desired(patch) => self.record_desired(&patch),
            PnpAction::Acked(acks) => {
                for a in acks {
                    if let Some(p) = self.find_prop_mut(a.component.as_deref(), &a.property) {
                        p.ack = Some(a.ack);
                    }
                }
            }
            PnpAction::Twin(twin) => self.record_twin(&twin),
            PnpAction::Called { iface, cmd, record } => {
                if let Some(c) = self.interfaces.get_mut(iface).and_then(|i| i.commands.get_mut(cmd)) {
                    c.last = Some(record);
                }
            }
        }
        PnpState { revision, ..self }
    }

    fn load(&mut self, text: &str) {
        if text.len() > MAX_MODEL_BYTES {
            self.error = Some(too_large(text.len()));
            return;
        }
        let model = match Model::parse(text) {
            Ok(m) => m,
            Err(e) => {
                self.error = Some(e.to_string());
                return;
            }
        };
        let plans = match telemetry_plans(&model) {
            Ok(p) => p,
            Err(e) => {
                self.error = Some(e.to_string());
                return;
            }
        };
        let mut interfaces = Vec::new();
        for (_, iface) in model.interfaces() {
            interfaces.push(iface_state(iface));
        }
        *self = PnpState {
            model: Some(Rc::new(model)),
            plans,
            interfaces,
            interval_ms: self.interval_ms,
            generation: self.generation + 1,
            ..PnpState::default()
        };
    }

    /// The model id the device announces, if a model is loaded.
    pub fn model_id(&self) -> Option<&str> {
        self.model.as_deref().map(Model::id)
    }

    fn prop_mut(&mut self, iface: usize, prop: usize) -> Option<&mut PropState> {
        self.interfaces.get_mut(iface).and_then(|i| i.properties.get_mut(prop))
    }

    /// The state of a component's property by name.
    fn find_prop_mut(&mut self, component: Option<&str>, property: &str) -> Option<&mut PropState> {
        let model = self.model.clone()?;
        let (i, iface) = component_index(&model, component)?;
        let p = iface.properties.iter().position(|p| p.name == property)?;
        self.prop_mut(i, p)
    }

    fn edit_generator(&mut self, plan: usize, var: usize, param: Param, text: &str) -> Result<(), String> {
        let p = self.plans.get_mut(plan).ok_or("no such telemetry")?;
        let mut vars = p.config.variables().to_vec();
        let v = vars.get_mut(var).ok_or("no such generator")?;
        v.kind = edit_kind(&v.kind, param, text).map_err(|e| [&v.name, ": ", &e].concat())?;
        p.config = Config::new(&p.template, vars, None).map_err(|e| e.to_string())?;
        Ok(())
    }

    fn sent_values(&mut self, component: Option<&str>, body: &str) {
        self.sent += 1;
        let Some(model) = self.model.clone() else { return };
        let Ok(v) = json::parse(body) else { return };
        let Some((i, iface)) = component_index(&model, component) else { return };
        let Some(state) = self.interfaces.get_mut(i) else { return };
        for (t, live) in iface.telemetry.iter().zip(state.telemetry.iter_mut()) {
            let Some(x) = v.get(&t.name) else { continue };
            live.last = x.to_string();
        }
    }

    fn edit_field(&mut self, iface: usize, item: Item, field: usize, text: String) {
        let Some(model) = self.model.clone() else { return };
        let Some((_, spec)) = model.interfaces().nth(iface) else { return };
        let Some(state) = self.interfaces.get_mut(iface) else { return };
        match item {
            Item::Property(i) => {
                let (Some(p), Some(s)) = (spec.properties.get(i), state.properties.get_mut(i)) else { return };
                if let Some(f) = s.fields.get_mut(field) {
                    *f = text;
                }
                s.error = form_value(&p.schema, &s.fields, &p.name).err();
            }
            Item::Command(i) => {
                let (Some(c), Some(s)) = (spec.commands.get(i), state.commands.get_mut(i)) else { return };
                let Some(r) = &c.response else { return };
                if let Some(f) = s.fields.get_mut(field) {
                    *f = text;
                }
                s.error = form_value(&r.schema, &s.fields, &r.name).err();
            }
        }
    }

    fn record_desired(&mut self, patch: &DesiredPatch) {
        let version = patch.version.unwrap_or(0);
        for u in &patch.updates {
            if let Some(p) = self.find_prop_mut(u.component.as_deref(), &u.property) {
                p.desired = Some((u.value.clone(), version));
            }
        }
        for (c, name) in &patch.removed {
            if let Some(p) = self.find_prop_mut(c.as_deref(), name) {
                p.desired = None;
            }
        }
    }

    fn record_twin(&mut self, twin: &Value) {
        let Some(model) = self.model.clone() else { return };
        self.record_desired(&conv::parse_desired(&model, twin.get("desired").unwrap_or(&Value::Null)));
        let reported = twin.get("reported").unwrap_or(&Value::Null);
        for (component, iface) in model.interfaces() {
            let section = match component {
                None => Some(reported),
                Some(c) => reported.get(c),
            };
            for p in iface.properties.iter().filter(|p| p.writable) {
                if let Some(ack) = section.and_then(|s| s.get(&p.name)).and_then(Ack::from_value) {
                    if let Some(state) = self.find_prop_mut(component, &p.name) {
                        state.ack = Some(ack);
                    }
                }
            }
        }
    }
}

/// The index (in `Model::interfaces` order) and interface of a component (`None`: the default component).
fn component_index<'m>(model: &'m Model, component: Option<&str>) -> Option<(usize, &'m Interface)> {
    for (i, (c, iface)) in model.interfaces().enumerate() {
        if c == component {
            return Some((i, iface));
        }
    }
    None
}

fn too_large(len: usize) -> String {
    ["the model is ", &(len / 1024).to_string(), " KB; at most ", &(MAX_MODEL_BYTES / 1024).to_string(), " KB are read"]
        .concat()
}

/// The refusal of a file that is too large to read.
pub fn file_too_large(len: f64) -> Option<String> {
    (len > MAX_MODEL_BYTES as f64).then(|| too_large(len as usize))
}

fn iface_state(iface: &Interface) -> IfaceState {
    let mut s = IfaceState {
        telemetry: vec![Live::default(); iface.telemetry.len()],
        properties: Vec::with_capacity(iface.properties.len()),
        commands: Vec::with_capacity(iface.commands.len()),
    };
    for p in &iface.properties {
        s.properties.push(PropState {
            fields: form_texts(&p.schema, &default_value(&p.schema)),
            error: None,
            choice: Choice::Accept,
            reason: "rejected in hubsim web".into(),
            desired: None,
            ack: None,
        });
    }
    for c in &iface.commands {
        s.commands.push(CmdState {
            fields: c.response.as_ref().map(|r| form_texts(&r.schema, &default_value(&r.schema))).unwrap_or_default(),
            error: None,
            status: 200,
            last: None,
        });
    }
    s
}

/// True for schemas whose JSON value is a string typed as text in a form (strings, dates, times, durations and
/// string Enums): the form takes the text as it is, without quotes.
fn is_text(schema: &Schema) -> bool {
    match schema {
        Schema::Primitive(p) => {
            matches!(
                p,
                Primitive::String | Primitive::Date | Primitive::DateTime | Primitive::Time | Primitive::Duration
            )
        }
        Schema::Enum(e) => e.string_values,
        _ => false,
    }
}

fn text_of(schema: &Schema, v: &Value) -> String {
    match (is_text(schema), v) {
        (true, Value::String(s)) => s.clone(),
        _ => v.to_string(),
    }
}

/// The texts of a value's form: one per field for an Object (nested values as JSON), else one for the value.
pub fn form_texts(schema: &Schema, value: &Value) -> Vec<String> {
    match schema {
        Schema::Object(fields) => {
            let mut texts = Vec::with_capacity(fields.len());
            for f in fields {
                texts.push(value.get(&f.name).map(|v| text_of(&f.schema, v)).unwrap_or_default());
            }
            texts
        }
        _ => vec![text_of(schema, value)],
    }
}

/// The labels of a value's form: the field names of an Object, else the value's own name.
pub fn form_labels<'a>(schema: &'a Schema, name: &'a str) -> Vec<&'a str> {
    match schema {
        Schema::Object(fields) => {
            let mut labels = Vec::with_capacity(fields.len());
            for f in fields {
                labels.push(f.name.as_str());
            }
            labels
        }
        _ => vec![name],
    }
}

fn parse_text(schema: &Schema, text: &str, path: &str) -> Result<Value, String> {
    let v = if is_text(schema) {
        Value::String(text.to_owned())
    } else {
        json::parse(text.trim()).map_err(|e| [path, ": not JSON (", &e.to_string(), ")"].concat())?
    };
    validate(schema, &v, path).map_err(|e| e.to_string())?;
    Ok(v)
}

/// The value a form's texts give, checked against the schema; an Object's empty non-text fields are left out
/// (DTDL fields are optional).
pub fn form_value(schema: &Schema, texts: &[String], name: &str) -> Result<Value, String> {
    match schema {
        Schema::Object(fields) => {
            let mut o = Object::new();
            for (f, t) in fields.iter().zip(texts) {
                if t.trim().is_empty() && !is_text(&f.schema) {
                    continue;
                }
                o.insert(f.name.clone(), parse_text(&f.schema, t, &[name, ".", &f.name].concat())?);
            }
            Ok(Value::Object(o))
        }
        _ => parse_text(schema, texts.first().map_or("", String::as_str), name),
    }
}

/// What a generator's form calls it.
pub fn kind_label(kind: &Kind) -> &'static str {
    match kind {
        Kind::Walk { .. } => "random walk",
        Kind::Counter { .. } => "counter",
        Kind::Sequence { .. } => "cycle",
        Kind::Timestamp { .. } => "time of sending",
        _ => "generator",
    }
}

/// The parameters a generator's form shows, with their current texts.
pub fn kind_params(kind: &Kind) -> Vec<(Param, String)> {
    match kind {
        Kind::Walk { start, step, min, max } => vec![
            (Param::Min, display_f64(*min)),
            (Param::Max, display_f64(*max)),
            (Param::Step, display_f64(*step)),
            (Param::Start, display_f64(*start)),
        ],
        Kind::Counter { start, step, .. } => vec![(Param::Start, start.to_string()), (Param::Step, step.to_string())],
        Kind::Sequence { values } => vec![(Param::Values, crate::library::list_text(values))],
        _ => Vec::new(),
    }
}

/// The label of a parameter.
pub fn param_label(p: Param) -> &'static str {
    match p {
        Param::Min => "min",
        Param::Max => "max",
        Param::Step => "step",
        Param::Start => "start",
        Param::Values => "values (comma-separated)",
    }
}

fn number(text: &str, what: &str) -> Result<f64, String> {
    hubsim_proto::num::parse_f64(text.trim())
        .filter(|x| x.is_finite())
        .ok_or_else(|| [what, " must be a number"].concat())
}

/// A generator with one parameter changed; the error says which value is wrong.
pub fn edit_kind(kind: &Kind, param: Param, text: &str) -> Result<Kind, String> {
    let mut k = kind.clone();
    match (&mut k, param) {
        (Kind::Walk { min, max, step, start }, p) => {
            let x = number(text, param_label(p))?;
            match p {
                Param::Min => *min = x,
                Param::Max => *max = x,
                Param::Step => *step = x,
                Param::Start => *start = x,
                Param::Values => return Err("a random walk has no values".into()),
            }
            if *min > *max || *step < 0.0 {
                return Err("a random walk needs min ≤ max and a step ≥ 0".into());
            }
            *start = hubsim_proto::num::clamp_f64(*start, *min, *max);
        }
        (Kind::Counter { start, step, .. }, p @ (Param::Start | Param::Step)) => {
            let x = text.trim().parse::<i64>().map_err(|_| [param_label(p), " must be a whole number"].concat())?;
            if p == Param::Start {
                *start = x;
            } else {
                *step = x;
            }
        }
        (Kind::Sequence { values }, Param::Values) => {
            // Strings stay strings (their placeholders are quoted); other values are JSON.
            let strings = values.first().is_some_and(|v| v.as_str().is_some());
            let mut out = Vec::new();
            for t in text.split(',').map(str::trim).filter(|t| !t.is_empty()).take(100) {
                out.push(if strings {
                    let mut quoted = String::new();
                    let _ = json::write_escaped(&mut quoted, t);
                    Value::String(quoted[1..quoted.len() - 1].to_owned())
                } else {
                    json::parse(t).map_err(|_| ["\"", t, "\" is not a JSON value"].concat())?
                });
            }
            if out.is_empty() {
                return Err("a cycle needs at least one value".into());
            }
            *values = out;
        }
        _ => return Err("this generator has no such setting".into()),
    }
    Ok(k)
}

/// Fresh generator states, one per plan, seeded from `seed` and the component (`hubsim_template::device_seed`).
pub fn generator_states(plans: &[TelemetryPlan], seed: u64) -> Vec<DeviceState> {
    let mut states = Vec::with_capacity(plans.len());
    for p in plans {
        let key = ["hubsim-web/", p.component.as_deref().unwrap_or("")].concat();
        states.push(DeviceState::new("hubsim-web", hubsim_template::device_seed(seed, &key)));
    }
    states
}

/// One round of telemetry: a JSON message per interface with telemetry, a component's with `$.sub` (the plan's
/// property), with its component and body text.
pub fn telemetry_round(
    plans: &[TelemetryPlan],
    states: &mut [DeviceState],
    ctx: &RenderContext,
) -> Vec<(Option<String>, String, Telemetry)> {
    let mut out = Vec::with_capacity(plans.len());
    for (plan, state) in plans.iter().zip(states.iter_mut()) {
        // Plans have no header, the only part of a render that can fail.
        let Ok(r) = plan.config.render(state, ctx) else { continue };
        let body = String::from_utf8_lossy(&r.body).into_owned();
        let mut m = Telemetry::new(r.body);
        m.properties.set_system(SystemProperty::ContentType, "application/json");
        m.properties.set_system(SystemProperty::ContentEncoding, "utf-8");
        if let Some((p, v)) = &plan.property {
            m.properties.set_system(p.clone(), v.clone());
        }
        out.push((plan.component.clone(), body, m));
    }
    out
}

/// The reported patch of every read-only property with the value of its form (components wrapped), and the
/// properties whose form is not valid (left out); `None` when there is nothing to report.
pub fn initial_report(state: &PnpState) -> (Option<Value>, Vec<String>) {
    let Some(model) = &state.model else { return (None, Vec::new()) };
    let mut doc = Value::Object(Object::new());
    let mut bad = Vec::new();
    for ((component, iface), st) in model.interfaces().zip(&state.interfaces) {
        let mut props = Object::new();
        for (p, ps) in iface.properties.iter().zip(&st.properties).filter(|(p, _)| !p.writable) {
            match form_value(&p.schema, &ps.fields, &p.name) {
                Ok(v) => props.insert(p.name.clone(), v),
                Err(e) => bad.push(e),
            }
        }
        if !props.is_empty() {
            conv::merge_patch(&mut doc, conv::wrap_component(component, props));
        }
    }
    let empty = doc.as_object().is_none_or(Object::is_empty);
    ((!empty).then_some(doc), bad)
}

/// The reported patch of one read-only property from its form.
pub fn report_property(state: &PnpState, iface: usize, prop: usize) -> Result<Value, String> {
    let model = state.model.as_ref().ok_or("no model is loaded")?;
    let (component, spec) = model.interfaces().nth(iface).ok_or("no such component")?;
    let p = spec.properties.get(prop).ok_or("no such property")?;
    let st = state.interfaces.get(iface).and_then(|i| i.properties.get(prop)).ok_or("no such property")?;
    Ok(conv::reported_patch(component, &p.name, form_value(&p.schema, &st.fields, &p.name)?))
}

/// The acknowledgement of one desired value as the user chose: a value outside the schema is rejected (400,
/// with the reason) whatever the choice.
pub fn ack_for(p: &PropState, update: &DesiredUpdate, version: i64) -> Ack {
    let value = update.value.clone();
    let (code, description) = match (&update.invalid, p.choice) {
        (Some(e), _) => (400, e.to_string()),
        (None, Choice::Accept) => (200, "accepted".to_owned()),
        (None, Choice::Reject) => (400, p.reason.clone()),
        (None, Choice::Pending) => (202, "pending".to_owned()),
    };
    Ack { value, code, version, description: Some(description) }
}

/// The acks for a desired patch (or the unacknowledged part of a twin, [`conv::unacknowledged`]) and the one
/// reported patch carrying them; `None` when there is nothing to answer. Every ack carries `ad`, because a
/// reported patch merges into the previous ack and would otherwise keep an old rejection's description.
pub fn answer_desired(state: &PnpState, patch: &DesiredPatch) -> Option<(Value, Vec<AckSent>)> {
    let model = state.model.as_ref()?;
    let version = patch.version.unwrap_or(0);
    let mut acks = Vec::new();
    for u in &patch.updates {
        let Some(i) = model.interfaces().position(|(c, _)| c == u.component.as_deref()) else { continue };
        let Some(p) =
            model.interfaces().nth(i).and_then(|(_, f)| f.properties.iter().position(|p| p.name == u.property))
        else {
            continue;
        };
        let Some(ps) = state.interfaces.get(i).and_then(|s| s.properties.get(p)) else { continue };
        acks.push(AckSent {
            component: u.component.clone(),
            property: u.property.clone(),
            ack: ack_for(ps, u, version),
        });
    }
    (!acks.is_empty()).then(|| (acks_patch(&acks), acks))
}

/// Answers a pending desired value now, with `choice` (accept or reject).
pub fn resolve(state: &PnpState, iface: usize, prop: usize, choice: Choice) -> Option<(Value, Vec<AckSent>)> {
    let model = state.model.as_ref()?;
    let (component, spec) = model.interfaces().nth(iface)?;
    let p = spec.properties.get(prop)?;
    let ps = state.interfaces.get(iface)?.properties.get(prop)?;
    let (value, version) = ps.desired.clone()?;
    let update = DesiredUpdate {
        component: component.map(str::to_owned),
        property: p.name.clone(),
        invalid: validate(&p.schema, &value, &p.name).err(),
        value,
    };
    let ack = ack_for(&PropState { choice, ..ps.clone() }, &update, version);
    let acks = vec![AckSent { component: update.component, property: update.property, ack }];
    Some((acks_patch(&acks), acks))
}

/// One reported patch with every ack, components wrapped.
pub fn acks_patch(acks: &[AckSent]) -> Value {
    let mut doc = Value::Object(Object::new());
    for a in acks {
        conv::merge_patch(&mut doc, conv::ack_patch(a.component.as_deref(), &a.property, &a.ack));
    }
    doc
}

/// How the device answers a direct method by its model.
#[derive(Clone, Debug, PartialEq)]
pub struct CommandAnswer {
    pub iface: usize,
    pub cmd: usize,
    pub status: u16,
    /// JSON.
    pub body: String,
    /// The request as received, for display.
    pub request: String,
}

fn error_body(message: &str) -> String {
    let mut o = Object::new();
    o.insert("error".into(), Value::String(message.to_owned()));
    Value::Object(o).to_string()
}

/// The answer to method `method` when the model has that command: 400 with the reason for a request that is not
/// JSON or does not fit the request schema, else the status and the response form's value (500 if the form is
/// not valid). `None` without a model or for a method the model lacks (the Direct methods panel answers those).
pub fn answer_command(state: &PnpState, method: &str, payload: &[u8]) -> Option<CommandAnswer> {
    let model = state.model.as_ref()?;
    let (component, command) = conv::find_command(model, method).ok()?;
    let iface = model.interfaces().position(|(c, _)| c == component)?;
    let cmd = model.interface(component)?.commands.iter().position(|c| c.name == command.name)?;
    let cs = state.interfaces.get(iface)?.commands.get(cmd)?;
    let request = String::from_utf8_lossy(payload).into_owned();
    let answer = |status, body| Some(CommandAnswer { iface, cmd, status, body, request: request.clone() });
    let value = if request.trim().is_empty() {
        Value::Null
    } else {
        match json::parse(&request) {
            Ok(v) => v,
            Err(_) => return answer(400, error_body("the request payload is not JSON")),
        }
    };
    if let Err(e) = conv::validate_request(command, &value) {
        return answer(400, error_body(&CommandError::Request(e).to_string()));
    }
    match &command.response {
        None => answer(cs.status, "null".into()),
        Some(r) => match form_value(&r.schema, &cs.fields, &r.name) {
            Ok(v) => answer(cs.status, v.to_string()),
            Err(e) => answer(500, error_body(&["the response form is not valid: ", &e].concat())),
        },
    }
}

/// The method name of a command (`thermostat1*getMaxMinReport`).
pub fn method_name(component: Option<&str>, command: &str) -> String {
    conv::CommandName { component, command }.to_string()
}

/// A schema for people: `double`, `Enum of string`, ... (`Schema::describe`), with an Enum's values.
pub fn describe(schema: &Schema) -> String {
    match schema {
        Schema::Enum(e) => {
            let mut out = schema.describe();
            out.push_str(" (");
            for (i, v) in e.values.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                match &v.value {
                    EnumLiteral::Int(n) => {
                        out.push_str(&v.name);
                        out.push('=');
                        out.push_str(&n.to_string());
                    }
                    EnumLiteral::Str(s) => out.push_str(s),
                }
            }
            out.push(')');
            out
        }
        _ => schema.describe(),
    }
}

/// An ack for people: `200 accepted (version 4)`.
pub fn describe_ack(a: &Ack) -> String {
    let mut s = [&a.code.to_string(), " "].concat();
    s.push_str(a.description.as_deref().unwrap_or(""));
    s.push_str(" (version ");
    s.push_str(&a.version.to_string());
    s.push(')');
    s
}

#[cfg(test)]
mod tests;
