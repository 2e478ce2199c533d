//! The template state's reducer, native.

use super::*;

fn run(actions: impl IntoIterator<Item = TmplAction>) -> TmplState {
    let mut s = TmplState::default();
    for a in actions {
        s.apply(a);
    }
    s
}

fn edit(e: DraftEdit) -> TmplAction {
    TmplAction::Draft(e)
}

#[test]
fn the_draft_is_edited_with_data_and_bad_edits_are_explained() {
    let s = run([
        TmplAction::Mode(true),
        edit(DraftEdit::AddVar("walk".into())),
        edit(DraftEdit::AddVar("sine".into())),
        edit(DraftEdit::Field(1, "name".into(), "Temp".into())),
        edit(DraftEdit::Field(1, "max".into(), "80".into())),
        edit(DraftEdit::Kind(2, "probability".into())),
        edit(DraftEdit::Body("{\"t\": $.Temp, \"on\": $.Var2}".into())),
        edit(DraftEdit::Every(1)),
    ]);
    let names: Vec<&str> = s.draft.variables.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["Counter", "Temp", "Var2"]);
    assert_eq!(crate::library::field_text(&s.draft.variables[1], "max"), "80");
    assert_eq!(crate::library::kind_key(&s.draft.variables[2]), "probability");
    assert_eq!(s.draft.every_ms, crate::library::MIN_EVERY_MS);
    assert!(s.draft.config().is_ok());
    assert_eq!(s.var_error, None);
    let s2 = run([edit(DraftEdit::Field(0, "step".into(), "x".into()))]);
    // The field shows the kept value again: the message says so.
    let step = crate::library::field_text(&s2.draft.variables[0], "step");
    assert_eq!(s2.var_error.as_deref(), Some(&(0, ["step: not a number; kept ", &step].concat(), "step".into())));
    assert_eq!(s2.draft, TmplState::default().draft);
    let mut s3 = s.clone();
    s3.apply(edit(DraftEdit::Field(2, "name".into(), "Temp".into())));
    assert_eq!(
        s3.var_error.as_deref(),
        Some(&(2, "another variable is named Temp; kept Var2".to_owned(), "name".into()))
    );
    s3.apply(edit(DraftEdit::Field(2, "name".into(), "my var".into())));
    assert_eq!(
        s3.var_error.as_deref(),
        Some(&(
            2,
            "a name is letters, digits and _ (it is written $.Name in the template); kept Var2".to_owned(),
            "name".into()
        ))
    );
    // Edits of anything else keep it (it must not vanish unread); removing a row above moves it up with its row.
    s3.apply(edit(DraftEdit::Body("{}".into())));
    s3.apply(edit(DraftEdit::Field(0, "step".into(), "2".into())));
    assert_eq!(s3.var_error.as_ref().map(|e| e.0), Some(2));
    s3.apply(edit(DraftEdit::AddVar("walk".into())));
    s3.apply(edit(DraftEdit::RemoveVar(1)));
    assert_eq!(s3.var_error.as_ref().map(|e| e.0), Some(1));
    assert_eq!(s3.draft.variables[1].name, "Var2");
    // A valid entry in its field clears it.
    s3.apply(edit(DraftEdit::Field(1, "name".into(), "On".into())));
    assert_eq!(s3.var_error, None);
    assert_eq!(s3.draft.variables[1].name, "On");
    // So does removing its variable.
    s3.apply(edit(DraftEdit::Field(1, "step".into(), "x".into())));
    assert!(s3.var_error.is_some());
    s3.apply(edit(DraftEdit::RemoveVar(1)));
    assert_eq!(s3.var_error, None);
}

#[test]
fn a_refused_bound_stays_refused_through_edits_of_the_other_bound() {
    // A random decimal from 0 to 1: min 100 is refused (above max) and kept at 0.
    let mut s = run([TmplAction::Mode(true), edit(DraftEdit::AddVar("randomDouble".into()))]);
    let i = s.draft.variables.len() - 1;
    let name = s.draft.variables[i].name.clone();
    s.apply(edit(DraftEdit::Field(i, "min".into(), "100".into())));
    let refused = [&name, ".min: min must be below max; kept 0"].concat();
    assert_eq!(s.var_error.as_ref().map(|e| e.1.as_str()), Some(refused.as_str()));
    // Max changed (accepted): min 100 is still not in, so the refusal stays.
    s.apply(edit(DraftEdit::Field(i, "max".into(), "10".into())));
    assert_eq!(crate::library::field_text(&s.draft.variables[i], "min"), "0");
    assert_eq!(s.var_error.as_ref().map(|e| e.1.as_str()), Some(refused.as_str()));
    // Min entered again: accepted, the refusal goes.
    s.apply(edit(DraftEdit::Field(i, "min".into(), "5".into())));
    assert_eq!(s.var_error, None);
    assert_eq!(crate::library::field_text(&s.draft.variables[i], "min"), "5");
}

#[test]
fn a_new_variable_takes_the_name_the_template_uses_and_nothing_declares() {
    let s = run([
        TmplAction::Mode(true),
        edit(DraftEdit::Body("{\"t\": $.Temperature, \"id\": \"$.DeviceId\", \"n\": $.Counter}".into())),
        edit(DraftEdit::Header("{\"site\": \"$.Site\"}".into())),
        edit(DraftEdit::AddVar("walk".into())),
        edit(DraftEdit::AddVar("values".into())),
        edit(DraftEdit::AddVar("sine".into())),
    ]);
    // Built-ins ($.DeviceId) and declared names ($.Counter) are skipped; then `VarN` when all are declared.
    let names: Vec<&str> = s.draft.variables.iter().map(|v| v.name.as_str()).collect();
    assert_eq!(names, ["Counter", "Temperature", "Site", "Var1"]);
    assert!(s.draft.config().is_ok(), "{:?}", s.draft.config().err());
}

#[test]
fn saving_loading_deleting_and_importing_change_the_library_and_its_revision() {
    let s = run([
        TmplAction::Mode(true),
        edit(DraftEdit::Name("  my sensor ".into())),
        TmplAction::Save { properties: vec![("site".into(), "north".into())], qos: 0, text: String::new() },
    ]);
    assert_eq!(s.library_rev, 1);
    let saved = s.library.iter().find(|m| m.name == "my sensor").unwrap();
    assert_eq!((saved.qos, saved.properties.len()), (0, 1));
    assert_eq!(s.notice.as_deref(), Some(&(true, "saved \"my sensor\"".to_owned())));
    // A draft whose template does not resolve is not saved.
    let bad = run([
        TmplAction::Mode(true),
        edit(DraftEdit::Body("$.Tmp".into())),
        TmplAction::Save { properties: vec![], qos: 1, text: String::new() },
    ]);
    assert_eq!(bad.library_rev, 0);
    assert_eq!(
        bad.notice.as_deref(),
        Some(&(false, "not saved: Template: line 1, col 1: unknown variable $.Tmp; did you mean $.Time?".to_owned()))
    );
    // Load puts a saved message in the draft; delete removes it.
    let s = run([TmplAction::Load("gps tracker".into())]);
    assert!(s.on);
    assert_eq!(s.draft.name, "gps tracker");
    let s = run([TmplAction::Delete("thermostat".into())]);
    assert_eq!(s.library.len(), 2);
    // An import that fails changes nothing; one that works selects the imported message.
    let before = TmplState::default();
    let s = run([TmplAction::Import { text: "{Template: '$.X'}".into(), file_name: "f.json".into() }]);
    assert_eq!((s.library.clone(), s.library_rev, s.draft.clone()), (before.library, 0, before.draft));
    assert!(s.notice.as_ref().unwrap().1.starts_with("not imported (nothing changed): "));
    let s = run([TmplAction::Import {
        text: "{Variables: [{name: \"Temp\", random: true, min: 23, max: 33}], Template: '{\"t\": $.Temp}'}".into(),
        file_name: "its.json".into(),
    }]);
    assert_eq!((s.library.len(), s.library_rev, s.draft.name.as_str()), (4, 1, "its"));
    // Storage text at start: used when valid, else the examples and a notice.
    let s = run([TmplAction::Stored { library: Some(crate::library::export(&[])), draft: None }]);
    assert!(s.library.is_empty());
    assert_eq!(s.library_rev, 0);
}

#[test]
fn the_template_draft_and_its_mode_come_back_as_stored_even_half_written() {
    // A draft being edited: an unknown variable in its template, an empty name.
    let mut s = run([
        TmplAction::Mode(true),
        edit(DraftEdit::AddVar("walk".into())),
        edit(DraftEdit::Body("{\"t\": $.Temprature, \"n\": $.Counter}".into())),
        edit(DraftEdit::Name("  ".into())),
    ]);
    assert!(s.draft.config().is_err(), "the draft is half written");
    let stored = s.draft_json();
    let back = run([TmplAction::Stored { library: None, draft: Some(stored.clone()) }]);
    assert!(back.stored_read && back.on);
    assert_eq!(back.draft, s.draft);
    // Text mode is kept too; a draft that cannot be read leaves the default one.
    s.apply(TmplAction::Mode(false));
    let back = run([TmplAction::Stored { library: None, draft: Some(s.draft_json()) }]);
    assert!(!back.on && back.draft == s.draft);
    for bad in ["not json", "{\"on\": true}", "{\"on\": true, \"message\": {\"template\": 5}}"] {
        let back = run([TmplAction::Stored { library: None, draft: Some(bad.into()) }]);
        assert_eq!((back.on, back.draft.clone()), (false, TmplState::default().draft), "{bad}");
    }
}

#[test]
fn schedules_count_sent_acknowledged_and_pending_per_run() {
    let s = run([
        TmplAction::Started { id: 1, name: "a".into(), total: Some(2) },
        TmplAction::Started { id: 2, name: "b".into(), total: None },
        TmplAction::Sent { id: 1, publish: Some(10) },
        TmplAction::Sent { id: 2, publish: Some(11) },
        TmplAction::Sent { id: 1, publish: Some(12) },
        TmplAction::Sent { id: 2, publish: None },
        TmplAction::Failed(2),
        TmplAction::Acked(12),
        TmplAction::Acked(99),
        TmplAction::Ended(1),
    ]);
    let (a, b) = (&s.runs[0], &s.runs[1]);
    assert_eq!((a.sent, a.acked, a.pending(&s.inflight), a.running), (2, 1, 1, false));
    assert_eq!((b.sent, b.acked, b.failed, b.pending(&s.inflight), b.running), (2, 1, 1, 1, true));
    // Bounded: a new run replaces the oldest finished one once MAX_RUNS are shown.
    let mut s = s;
    for id in 3..=(MAX_RUNS as u32 + 2) {
        s.apply(TmplAction::Started { id, name: "x".into(), total: None });
    }
    assert_eq!(s.runs.len(), MAX_RUNS);
    assert!(s.runs.iter().all(|r| r.id != 1));
    for p in 0..(MAX_INFLIGHT as u64 + 10) {
        s.apply(TmplAction::Sent { id: 2, publish: Some(1000 + p) });
    }
    assert_eq!(s.inflight.len(), MAX_INFLIGHT);
}
