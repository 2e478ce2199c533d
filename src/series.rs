//! Numeric time series of the bodies the device sent and received, for the charts.
//!
//! [`SeriesStore::record`] takes one body (telemetry sent, a C2D body, a desired-properties patch, or anything a
//! Plug and Play panel sends) with its source and time, reads it with the core's JSON (`hubsim_proto::json`), and
//! appends every numeric field to the series of its path (`temperature`, `position.lat`, `values[0]`). Pure and
//! clock-free: the caller passes the time, so it is tested natively.
//!
//! Everything is bounded, so a flood costs O(1) amortised per message and never grows memory: at most
//! [`MAX_SERIES`] series (later paths are counted, not kept), [`MAX_POINTS`] points per series in a ring buffer
//! (the oldest point leaves), [`MAX_FIELDS`] numeric fields read per body and paths of at most [`MAX_PATH`]
//! bytes. Names starting with `$` (`$version`, `$metadata` of twin patches) are metadata and not charted.

use std::collections::VecDeque;

use hubsim_proto::json::{self, Value};

/// Most series kept (over all sources).
pub const MAX_SERIES: usize = 64;
/// Most points kept per series; the oldest leaves first.
pub const MAX_POINTS: usize = 300;
/// Most numeric fields read from one body.
pub const MAX_FIELDS: usize = 32;
/// Longest path charted, in bytes.
pub const MAX_PATH: usize = 100;

/// Where a body came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// Telemetry the device sent.
    Telemetry,
    /// A cloud-to-device message body.
    C2d,
    /// A desired-properties patch.
    Desired,
}

impl Source {
    pub const ALL: [Source; 3] = [Source::Telemetry, Source::C2d, Source::Desired];

    /// A short tag (`telemetry`, `c2d`, `desired`), used as a form value.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Telemetry => "telemetry",
            Source::C2d => "c2d",
            Source::Desired => "desired",
        }
    }

    /// The source for people.
    pub fn label(self) -> &'static str {
        match self {
            Source::Telemetry => "telemetry sent",
            Source::C2d => "cloud-to-device messages",
            Source::Desired => "desired properties",
        }
    }

    /// The source of a tag from [`Source::as_str`].
    pub fn parse(s: &str) -> Option<Source> {
        Source::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// One value at one time (Unix milliseconds).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    pub at_ms: f64,
    pub value: f64,
}

/// The points of one path of one source, oldest first.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    pub source: Source,
    pub path: String,
    points: VecDeque<Point>,
}

impl Series {
    /// Every point kept, oldest first.
    pub fn points(&self) -> &VecDeque<Point> {
        &self.points
    }

    /// The newest `n` points, oldest first.
    pub fn last(&self, n: usize) -> impl ExactSizeIterator<Item = &Point> {
        self.points.range(self.points.len().saturating_sub(n)..)
    }
}

/// The series of every numeric path seen, in the order first seen.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SeriesStore {
    series: Vec<Series>,
    /// Paths not kept because [`MAX_SERIES`] series exist.
    pub refused_paths: u64,
}

impl SeriesStore {
    /// Reads `body` (UTF-8 JSON; anything else is ignored) and appends each numeric field to its series.
    /// Returns how many points were added.
    pub fn record(&mut self, source: Source, at_ms: f64, body: &[u8]) -> usize {
        let Some(v) = std::str::from_utf8(body).ok().and_then(|t| json::parse(t).ok()) else { return 0 };
        let mut fields = Vec::new();
        numeric_fields(&v, &mut String::new(), &mut fields);
        let mut added = 0;
        for (path, value) in fields {
            let i = match self.series.iter().position(|s| s.source == source && s.path == path) {
                Some(i) => i,
                None if self.series.len() < MAX_SERIES => {
                    self.series.push(Series { source, path, points: VecDeque::new() });
                    self.series.len() - 1
                }
                None => {
                    self.refused_paths += 1;
                    continue;
                }
            };
            let points = &mut self.series[i].points;
            if points.len() == MAX_POINTS {
                points.pop_front();
            }
            points.push_back(Point { at_ms, value });
            added += 1;
        }
        added
    }

    /// Every series, in the order first seen.
    pub fn series(&self) -> &[Series] {
        &self.series
    }

    /// The series of `path` from `source`, if a number was seen there.
    pub fn get(&self, source: Source, path: &str) -> Option<&Series> {
        self.series.iter().find(|s| s.source == source && s.path == path)
    }

    /// Forgets every point.
    pub fn clear(&mut self) {
        *self = SeriesStore::default();
    }
}

/// Appends `(path, value)` for each finite number in `v`, in document order, at most [`MAX_FIELDS`]: object
/// members join with `.` (`position.lat`), array items take `[i]` (`values[0]`), a member whose name is empty or
/// has `.`, `[`, `]` or `"` takes `["name"]` (JSON-escaped), a bare number has the path `""`. `$` names are skipped, and so are paths longer than [`MAX_PATH`].
pub fn numeric_fields(v: &Value, path: &mut String, out: &mut Vec<(String, f64)>) {
    if out.len() >= MAX_FIELDS || path.len() > MAX_PATH {
        return;
    }
    let mut child = |path: &mut String, add: &dyn Fn(&mut String), item: &Value| {
        let len = path.len();
        add(path);
        numeric_fields(item, path, out);
        path.truncate(len);
    };
    match v {
        Value::Number(n) if n.as_f64().is_finite() => out.push((path.clone(), n.as_f64())),
        Value::Object(o) => {
            for (k, item) in o.iter().filter(|(k, _)| !k.starts_with('$')) {
                let join = |p: &mut String| {
                    if k.is_empty() || k.contains(['.', '[', ']', '"']) {
                        // A name that a dotted path would misread (`"a.b"` beside a nested `a.b`): `["a.b"]`.
                        p.push('[');
                        let _ = json::write_escaped(p, k);
                        p.push(']');
                        return;
                    }
                    if !p.is_empty() {
                        p.push('.');
                    }
                    p.push_str(k);
                };
                child(path, &join, item);
            }
        }
        Value::Array(a) => {
            for (i, item) in a.iter().enumerate() {
                let index = |p: &mut String| {
                    p.push('[');
                    p.push_str(&i.to_string());
                    p.push(']');
                };
                child(path, &index, item);
            }
        }
        _ => {}
    }
}

#[cfg(target_arch = "wasm32")]
mod web {
    use super::*;
    use std::cell::RefCell;

    /// The page's one series store, owned by the controller, which records every body sent and received; a
    /// panel that sends by another way (Plug and Play) calls [`Charts::record`] too. The charts panel listens:
    /// after a body with numbers it is told to render again, so a message costs the store's O(1) and one render
    /// of that panel, never a copy of the series.
    #[derive(Default)]
    pub struct Charts {
        store: RefCell<SeriesStore>,
        listener: RefCell<Option<yew::Callback<()>>>,
    }

    impl Charts {
        /// A body was sent or received on `source` at `at_ms` (Unix milliseconds, `js_sys::Date::now()`).
        pub fn record(&self, source: Source, at_ms: f64, body: &[u8]) {
            let added = self.store.borrow_mut().record(source, at_ms, body);
            let listener = self.listener.borrow().clone();
            if let (true, Some(l)) = (added > 0, listener) {
                l.emit(());
            }
        }

        /// Reads the store.
        pub fn with<R>(&self, f: impl FnOnce(&SeriesStore) -> R) -> R {
            f(&self.store.borrow())
        }

        /// A copy of the store (for a paused chart).
        pub fn snapshot(&self) -> SeriesStore {
            self.store.borrow().clone()
        }

        pub fn clear(&self) {
            self.store.borrow_mut().clear();
            if let Some(l) = self.listener.borrow().clone() {
                l.emit(());
            }
        }

        /// Who renders again after new points (the charts panel), or nobody.
        pub fn listen(&self, listener: Option<yew::Callback<()>>) {
            *self.listener.borrow_mut() = listener;
        }
    }
}

#[cfg(target_arch = "wasm32")]
pub use web::Charts;

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(body: &str) -> Vec<(String, f64)> {
        let mut out = Vec::new();
        numeric_fields(&json::parse(body).unwrap(), &mut String::new(), &mut out);
        out
    }

    #[test]
    fn numeric_paths_are_read_in_document_order_with_dots_and_indexes() {
        let got = fields(
            r#"{"temperature":21.5,"name":"x","on":true,"position":{"lat":47.6,"lon":-122.3,"alt":null},
                "values":[1,{"a":2}],"$version":4,"deep":{"$meta":1,"n":-1e3}}"#,
        );
        let want = [
            ("temperature", 21.5),
            ("position.lat", 47.6),
            ("position.lon", -122.3),
            ("values[0]", 1.0),
            ("values[1].a", 2.0),
            ("deep.n", -1000.0),
        ];
        assert_eq!(got, want.map(|(p, v)| (p.to_owned(), v)));
        assert_eq!(fields("42"), vec![(String::new(), 42.0)]);
        // A dotted or bracketed name is not the nested path it would read as.
        let got = fields(r#"{"a.b":1,"a":{"b":2},"x[0]":3,"":4,"q\"":{"n":5}}"#);
        let want = [("[\"a.b\"]", 1.0), ("a.b", 2.0), ("[\"x[0]\"]", 3.0), ("[\"\"]", 4.0), ("[\"q\\\"\"].n", 5.0)];
        assert_eq!(got, want.map(|(p, v)| (p.to_owned(), v)));
        assert_eq!(fields(r#""text""#), vec![]);
    }

    #[test]
    fn a_body_gives_at_most_max_fields_and_no_overlong_path() {
        let many: Vec<String> = (0..100).map(|i| format!("\"f{i}\":{i}")).collect();
        let got = fields(&format!("{{{}}}", many.join(",")));
        assert_eq!(got.len(), MAX_FIELDS);
        assert_eq!(got[MAX_FIELDS - 1], (format!("f{}", MAX_FIELDS - 1), (MAX_FIELDS - 1) as f64));
        let long = "k".repeat(MAX_PATH + 1);
        assert_eq!(fields(&format!("{{\"{long}\":{{\"x\":1}},\"ok\":2}}")), vec![("ok".to_owned(), 2.0)]);
    }

    #[test]
    fn each_source_and_path_has_its_own_series_and_non_json_is_ignored() {
        let mut s = SeriesStore::default();
        assert_eq!(s.record(Source::Telemetry, 1000.0, br#"{"t":1,"p":{"x":2}}"#), 2);
        assert_eq!(s.record(Source::Telemetry, 2000.0, br#"{"t":3}"#), 1);
        assert_eq!(s.record(Source::C2d, 3000.0, br#"{"t":9}"#), 1);
        assert_eq!(s.record(Source::Telemetry, 4000.0, b"not json"), 0);
        assert_eq!(s.record(Source::Telemetry, 4000.0, &[0xff, 0xfe]), 0);
        let t = s.get(Source::Telemetry, "t").unwrap();
        assert_eq!(
            t.points().iter().copied().collect::<Vec<_>>(),
            [Point { at_ms: 1000.0, value: 1.0 }, Point { at_ms: 2000.0, value: 3.0 }]
        );
        assert_eq!(s.get(Source::C2d, "t").unwrap().points().len(), 1);
        assert_eq!(s.get(Source::Telemetry, "p.x").unwrap().points()[0].value, 2.0);
        assert!(s.get(Source::Desired, "t").is_none());
        let names: Vec<_> = s.series().iter().map(|x| (x.source.as_str(), x.path.as_str())).collect();
        assert_eq!(names, [("telemetry", "t"), ("telemetry", "p.x"), ("c2d", "t")]);
    }

    #[test]
    fn a_series_keeps_the_newest_max_points_and_last_n_takes_the_newest() {
        let mut s = SeriesStore::default();
        for i in 0..(MAX_POINTS + 5) {
            s.record(Source::Telemetry, i as f64, format!("{{\"n\":{i}}}").as_bytes());
        }
        let n = s.get(Source::Telemetry, "n").unwrap();
        assert_eq!(n.points().len(), MAX_POINTS);
        assert_eq!(n.points()[0].value, 5.0);
        let last: Vec<f64> = n.last(3).map(|p| p.value).collect();
        let end = (MAX_POINTS + 4) as f64;
        assert_eq!(last, [end - 2.0, end - 1.0, end]);
        assert_eq!(n.last(10_000).len(), MAX_POINTS);
    }

    #[test]
    fn at_most_max_series_are_kept_and_the_rest_counted() {
        let mut s = SeriesStore::default();
        for i in 0..(MAX_SERIES + 3) {
            s.record(Source::Desired, 0.0, format!("{{\"p{i}\":1}}").as_bytes());
        }
        assert_eq!(s.series().len(), MAX_SERIES);
        assert_eq!(s.refused_paths, 3);
        // Known paths still get their points.
        assert_eq!(s.record(Source::Desired, 1.0, br#"{"p0":2}"#), 1);
        s.clear();
        assert!(s.series().is_empty());
    }

    #[test]
    fn source_tags_round_trip() {
        for x in Source::ALL {
            assert_eq!(Source::parse(x.as_str()), Some(x));
        }
        assert_eq!(Source::parse("other"), None);
    }
}
