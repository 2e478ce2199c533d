//! Template text with `$.Name` placeholders, resolved against the built-ins and the declared variables.
//!
//! A placeholder is `$.` followed by a name of ASCII letters, digits and `_` (the longest such run). Declared
//! variables shadow built-ins of the same name, as in ITS (its value dictionary is filled built-ins first).
//! A declared name containing other characters (ITS allows any name) is matched literally, longest first.
//! `$.` not followed by a name character is plain text.
//!
//! Deliberate difference from ITS (`TelemetryTemplate.cs`): ITS replaces known names as plain substrings
//! and leaves unknown placeholders in the output, so a typo ships `$.Temprature` to the hub and `$.Temp_C`
//! silently becomes the value of `Temp` followed by `_C`. Here an unknown name is an error at load time with
//! its position and the nearest known name.

use crate::variable::Variable;

/// The built-in variables of ITS (`Constants.cs`), computed at each render.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    /// The device id of the [`crate::DeviceState`].
    DeviceId,
    /// A random (version 4) GUID, one per render, lower case with hyphens.
    Guid,
    /// Render time, UTC, .NET round-trip form: `2019-11-19T10:10:11.5090000Z`.
    Time,
    /// Render time at the context's offset: `2019-11-19T11:10:11.5090000+01:00`.
    LocalTime,
    /// .NET ticks (100 ns since 0001-01-01) of the *local* render time, as ITS uses `DateTime.Now.Ticks`.
    Ticks,
    /// Unix seconds of the render time.
    Epoch,
    /// The context's machine name.
    MachineName,
    /// The device's template render count, from 0 (ITS's `IterationNumber`).
    IterationNumber,
}

impl Builtin {
    /// Every built-in, in ITS's order.
    pub const ALL: [Builtin; 8] = [
        Builtin::DeviceId,
        Builtin::Guid,
        Builtin::Time,
        Builtin::LocalTime,
        Builtin::Ticks,
        Builtin::Epoch,
        Builtin::MachineName,
        Builtin::IterationNumber,
    ];

    /// The placeholder name, as in `$.DeviceId`.
    pub fn name(self) -> &'static str {
        match self {
            Builtin::DeviceId => "DeviceId",
            Builtin::Guid => "Guid",
            Builtin::Time => "Time",
            Builtin::LocalTime => "LocalTime",
            Builtin::Ticks => "Ticks",
            Builtin::Epoch => "Epoch",
            Builtin::MachineName => "MachineName",
            Builtin::IterationNumber => "IterationNumber",
        }
    }
}

/// What a placeholder refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Builtin(Builtin),
    /// Index into the variable list the template was parsed with.
    Var(usize),
}

/// Finds `name` among the variables (first) and built-ins.
pub(crate) fn lookup(name: &str, vars: &[Variable]) -> Option<Slot> {
    vars.iter()
        .position(|v| v.name == name)
        .map(Slot::Var)
        .or_else(|| Builtin::ALL.iter().find(|b| b.name() == name).map(|b| Slot::Builtin(*b)))
}

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq)]
pub enum Part {
    Text(String),
    Placeholder { slot: Slot, name: String },
}

/// A parsed template: text and resolved placeholders.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

/// Why a template cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateErrorKind {
    #[error("unknown variable $.{name}{}", suggestion_text(.suggestion))]
    UnknownVariable { name: String, suggestion: Option<String> },
}

fn suggestion_text(s: &Option<String>) -> String {
    match s {
        Some(s) => format!("; did you mean $.{s}?"),
        None => String::new(),
    }
}

/// A template error at a 1-based line and column (characters) of the template text. For a template held
/// in a configuration string the position is within that string's value (after JSON unescaping, so `\n`
/// starts a new line); [`crate::ConfigError::Template`] names the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}, col {col}: {kind}")]
pub struct TemplateError {
    pub line: usize,
    pub col: usize,
    pub kind: TemplateErrorKind,
}

/// ASCII only: `$.Temp°C` is the placeholder `Temp` followed by text. A declared name with other
/// characters (`Température`) is still found, by the literal match above.
fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The names of the `$.Name` placeholders in `text`, in order (the ASCII rule above; a declared name with
/// other characters is not seen here). For tools that offer to declare what a template uses.
pub fn placeholder_names(text: &str) -> impl Iterator<Item = &str> {
    text.match_indices("$.").filter_map(move |(i, _)| {
        let rest = &text[i + 2..];
        let end = rest.find(|c: char| !is_name_char(c)).unwrap_or(rest.len());
        (end > 0).then(|| &rest[..end])
    })
}

impl Template {
    /// Parses `text`, resolving every `$.Name` against `variables` and the built-ins.
    ///
    /// Errors: [`TemplateErrorKind::UnknownVariable`] at the `$` of the first unknown placeholder, with the
    /// closest known name when one is near (edit distance at most 2, or a third of the name; case ignored).
    pub fn parse(text: &str, variables: &[Variable]) -> Result<Template, TemplateError> {
        // Declared names that a plain name scan would not capture whole, longest first (ITS's order).
        let mut odd: Vec<(&str, usize)> = Vec::new();
        for (i, v) in variables.iter().enumerate() {
            if !v.name.chars().all(is_name_char) {
                odd.push((v.name.as_str(), i));
            }
        }
        crate::insertion_sort_by(&mut odd, |a, b| a.0.len() > b.0.len());

        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut rest = text;
        while let Some(at) = rest.find("$.") {
            lit.push_str(&rest[..at]);
            let after = &rest[at + 2..];
            let found = match odd.iter().find(|(n, _)| after.starts_with(n)) {
                Some((n, i)) => Some((n.len(), Slot::Var(*i))),
                None => {
                    let len: usize = after.chars().take_while(|c| is_name_char(*c)).map(char::len_utf8).sum();
                    if len == 0 {
                        None
                    } else {
                        let name = &after[..len];
                        match lookup(name, variables) {
                            Some(slot) => Some((len, slot)),
                            None => {
                                let (line, col) = hubsim_proto::json::line_col(text, text.len() - rest.len() + at);
                                let suggestion = suggest(name, variables).map(str::to_owned);
                                return Err(TemplateError {
                                    line,
                                    col,
                                    kind: TemplateErrorKind::UnknownVariable { name: name.to_owned(), suggestion },
                                });
                            }
                        }
                    }
                }
            };
            match found {
                Some((len, slot)) => {
                    if !lit.is_empty() {
                        parts.push(Part::Text(std::mem::take(&mut lit)));
                    }
                    parts.push(Part::Placeholder { slot, name: after[..len].to_owned() });
                    rest = &after[len..];
                }
                None => {
                    lit.push_str("$.");
                    rest = after;
                }
            }
        }
        lit.push_str(rest);
        if !lit.is_empty() {
            parts.push(Part::Text(lit));
        }
        Ok(Template { source: text.to_owned(), parts })
    }

    /// The text the template was parsed from.
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Text and placeholders in order; adjacent text is merged.
    pub fn parts(&self) -> &[Part] {
        &self.parts
    }

    /// True if the template has no placeholder (it always renders to its source).
    pub fn is_fixed(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Text(_)))
    }
}

/// Levenshtein distance over characters, ASCII case ignored.
pub(crate) fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().map(|c| c.to_ascii_lowercase()).collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().map(|c| c.to_ascii_lowercase()).enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let next = (diag + usize::from(ca != *cb)).min(row[j] + 1).min(row[j + 1] + 1);
            diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

/// The known name closest to `name`, if it is close enough to be a likely typo: variables, then built-ins.
fn suggest<'a>(name: &str, variables: &'a [Variable]) -> Option<&'a str> {
    closest(name, variables.iter().map(|v| v.name.as_str()).chain(Builtin::ALL.iter().map(|b| b.name())))
}

/// The first of `known` closest to `name` (ASCII case ignored), if within a third of its length (at least 2 edits).
pub(crate) fn closest<'a>(name: &str, known: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (name.chars().count() / 3).max(2);
    let mut best: Option<(usize, &str)> = None;
    for k in known {
        let d = edit_distance(name, k);
        if d <= limit && best.is_none_or(|(b, _)| d < b) {
            best = Some((d, k));
        }
    }
    best.map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholder_names_follow_the_ascii_rule() {
        let names: Vec<&str> = placeholder_names("$.A,$.b_1°C $. $$.Temp $.").collect();
        assert_eq!(names, ["A", "b_1", "Temp"]);
    }

    fn vars(names: &[&str]) -> Vec<Variable> {
        names
            .iter()
            .map(|n| Variable {
                name: (*n).into(),
                kind: crate::variable::default_variables().remove(0).kind,
                decimals: None,
            })
            .collect()
    }

    #[test]
    fn splits_text_and_placeholders() {
        let t = Template::parse(
            "{\"t\": $.Temp, \"id\": \"$.DeviceId\", \"p\": \"$.\", \"x\": \"$$.Temp\"}",
            &vars(&["Temp"]),
        )
        .unwrap();
        assert_eq!(
            t.parts(),
            [
                Part::Text("{\"t\": ".into()),
                Part::Placeholder { slot: Slot::Var(0), name: "Temp".into() },
                Part::Text(", \"id\": \"".into()),
                Part::Placeholder { slot: Slot::Builtin(Builtin::DeviceId), name: "DeviceId".into() },
                Part::Text("\", \"p\": \"$.\", \"x\": \"$".into()),
                Part::Placeholder { slot: Slot::Var(0), name: "Temp".into() },
                Part::Text("\"}".into()),
            ]
        );
    }

    #[test]
    fn adjacent_placeholders_and_prefix_names() {
        // ITS TemplateVariableSubstitutionTest: "$.var1$.var11, $.var $.var$.var1$.var11!"
        let t = Template::parse("$.var1$.var11, $.var $.var$.var1$.var11!", &vars(&["var1", "var", "var11"])).unwrap();
        let slots: Vec<usize> = t
            .parts()
            .iter()
            .filter_map(|p| match p {
                Part::Placeholder { slot: Slot::Var(i), .. } => Some(*i),
                _ => None,
            })
            .collect();
        assert_eq!(slots, [0, 2, 1, 1, 0, 2]);
    }

    #[test]
    fn declared_names_shadow_builtins_and_odd_names_match_literally() {
        let t = Template::parse(
            "$.Time $.my-var.x $.Température $.Temp°C",
            &vars(&["Time", "my-var", "Température", "Temp"]),
        )
        .unwrap();
        assert_eq!(t.parts()[0], Part::Placeholder { slot: Slot::Var(0), name: "Time".into() });
        assert_eq!(t.parts()[2], Part::Placeholder { slot: Slot::Var(1), name: "my-var".into() });
        assert_eq!(t.parts()[3], Part::Text(".x ".into()));
        assert_eq!(t.parts()[4], Part::Placeholder { slot: Slot::Var(2), name: "Température".into() });
        assert_eq!(t.parts()[6], Part::Placeholder { slot: Slot::Var(3), name: "Temp".into() });
        assert_eq!(t.parts()[7], Part::Text("°C".into()));
        assert!(!t.is_fixed());
        let fixed = Template::parse("{\"price\": \"$.\", \"a\": 1}", &[]).unwrap();
        assert!(fixed.is_fixed());
        assert_eq!(fixed.parts(), [Part::Text(fixed.source().into())]);
    }

    #[test]
    fn unknown_variable_error_has_position_and_suggestion() {
        let text = "{\n  \"deviceId\": \"$.DeviceId\",\n  \"t\": $.Temprature\n}";
        let e = Template::parse(text, &vars(&["Temperature", "Humidity"])).unwrap_err();
        assert_eq!(e.to_string(), "line 3, col 8: unknown variable $.Temprature; did you mean $.Temperature?");
        let e = Template::parse("é $.deviceid", &[]).unwrap_err();
        assert_eq!(e.to_string(), "line 1, col 3: unknown variable $.deviceid; did you mean $.DeviceId?");
        let e = Template::parse("$.Pressure", &vars(&["Temperature"])).unwrap_err();
        assert_eq!(e.to_string(), "line 1, col 1: unknown variable $.Pressure");
        // ITS would have printed Temp's value then "_C"; here it is a mistake to report.
        let e = Template::parse("$.Temp_C", &vars(&["Temp"])).unwrap_err();
        assert_eq!(e.to_string(), "line 1, col 1: unknown variable $.Temp_C; did you mean $.Temp?");
    }

    #[test]
    fn edit_distance_basics() {
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("Temprature", "Temperature"), 1);
        assert_eq!(edit_distance("DEVICEID", "DeviceId"), 0);
    }
}
