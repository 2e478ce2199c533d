//! Reducer tests, native: actions are data and time comes in with them.

use super::*;
use crate::settings::{decode, Flag, Number, Source, Text};

fn fresh() -> Rc<AppState> {
    Rc::new(AppState::new(Decoded::default(), None, "10:00:00"))
}

fn c2d(body: &str, application: Vec<(&str, Option<&str>)>) -> Action {
    Action::C2d(InboxItem {
        seq: 0,
        time: "10:00:01".into(),
        body: body.into(),
        body_kind: "text",
        system: vec![],
        application: application.into_iter().map(|(k, v)| (k.into(), v.map(str::to_owned))).collect(),
        redelivered: false,
    })
}

fn run(s: Rc<AppState>, actions: impl IntoIterator<Item = Action>) -> Rc<AppState> {
    actions.into_iter().fold(s, AppState::reduce)
}

#[test]
fn the_reducer_is_deterministic_and_logs_with_the_time_it_is_given() {
    let actions = vec![
        Action::Status { status: ConnStatus::Connecting { attempt: 1 }, at: "12:00:00".into() },
        Action::Log { at: "12:00:01".into(), kind: LogKind::Sent, text: "telemetry".into() },
    ];
    let a = run(fresh(), actions.clone());
    let b = run(fresh(), actions);
    assert_eq!(a, b);
    let times: Vec<&str> = a.log.iter().map(|l| l.time.as_str()).collect();
    assert_eq!(times, vec!["12:00:01", "12:00:00"]);
    assert_eq!(a.log[1].text, "connecting (attempt 1)");
    assert_eq!(a.announcement, "connecting (attempt 1)");
}

#[test]
fn the_twin_read_after_a_patch_keeps_what_the_patch_said() {
    let twin = |reported: &str| Action::Twin { desired: "{}".into(), reported: reported.into() };
    let s = run(fresh(), [Action::Reported(Ok("2".into())), twin("{\"fw\": \"2.0\"}")]);
    assert_eq!((s.twin.patched.clone(), s.twin.reported.as_str()), (Ok("2".into()), "{\"fw\": \"2.0\"}"));
    let s = run(s, [Action::Reported(Err("refused".into())), twin("{}")]);
    assert_eq!(s.twin.patched, Err("refused".into()));
}

#[test]
fn disconnected_while_disconnected_is_not_logged_again() {
    let down =
        |at: &str| Action::Status { status: ConnStatus::Disconnected { reason: None, hint: None }, at: at.into() };
    let s = run(fresh(), [down("12:00:00")]);
    assert!(s.log.is_empty(), "{:?}", s.log);
    let s = run(
        s,
        [Action::Status { status: ConnStatus::Connecting { attempt: 1 }, at: "12:00:01".into() }, down("12:00:02")],
    );
    let texts: Vec<&str> = s.log.iter().map(|l| l.text.as_str()).collect();
    assert_eq!(texts, ["disconnected", "connecting (attempt 1)"]);
    // A reason is news even while disconnected.
    let why = Action::Status {
        status: ConnStatus::Disconnected { reason: Some("refused".into()), hint: None },
        at: "12:00:03".into(),
    };
    assert_eq!(run(s, [why]).log[0].text, "disconnected: refused");
}

#[test]
fn form_edits_are_data() {
    let s = run(
        fresh(),
        [
            Action::Edit(Change::Text(Text::Body, "hi".into())),
            Action::Edit(Change::Flag(Flag::Retain, true)),
            Action::Edit(Change::Number(Number::Qos, 0)),
            Action::Edit(Change::AddProperty),
            Action::Edit(Change::PropertyName(1, "site".into())),
            Action::Edit(Change::PropertyValue(1, "north".into())),
            Action::Edit(Change::RemoveProperty(0)),
            Action::Edit(Change::PropertyValue(7, "ignored".into())),
        ],
    );
    assert_eq!(s.settings.body, "hi");
    assert!(s.settings.retain);
    assert_eq!(s.settings.qos, 0);
    assert_eq!(s.settings.properties, vec![("site".to_owned(), "north".to_owned())]);
    // Every action can be printed for a trace.
    assert!(format!("{:?}", Action::Edit(Change::AddProperty)).contains("AddProperty"));
}

#[test]
fn a_link_is_only_offered_until_the_user_accepts_it() {
    let stored = decode(
        "cs=HostName%3Dmyhub.azure-devices.net%3BDeviceId%3Dmine%3BSharedAccessKey%3Da2V5&remember=1",
        Source::Storage,
    );
    let link = decode("?host=myhub.azure-devices.net&device=plc&endpoint=wss://elsewhere.example/x", Source::Link);
    let s = Rc::new(AppState::new(stored.clone(), Some(link), "10:00:00"));
    // Nothing of the link is applied yet: the remembered connection string is intact.
    assert_eq!(s.settings.connection_string, stored.settings().connection_string);
    assert_eq!(s.link.as_ref().unwrap().refused.len(), 1);
    let ignored = s.clone().reduce(Action::IgnoreLink);
    assert_eq!(ignored.settings, s.settings);
    assert!(ignored.link.is_none());
    let accepted = s.reduce(Action::AcceptLink);
    assert_eq!(accepted.settings.device_id, "plc");
    assert_eq!(accepted.settings.connection_string, "", "another device's key leaves the form");
    assert_eq!(accepted.settings.endpoint, "");
    assert!(accepted.link.is_none());
}

#[test]
fn stored_values_that_are_refused_are_logged() {
    let s = AppState::new(decode("ttl=99999999", Source::Storage), None, "09:00:00");
    assert_eq!(s.settings.token_ttl_secs, crate::settings::DEFAULT_TTL_SECS);
    assert_eq!(s.log[0].kind, LogKind::Error);
    assert!(s.log[0].text.contains("token lifetime (s) must be from 10 to 86400"), "{}", s.log[0].text);
}

#[test]
fn a_confirmed_endpoint_is_remembered_and_a_cancelled_one_is_not() {
    let ask = Action::AskConfirm(Confirm {
        target: "gw.local".into(),
        hub: "myhub.azure-devices.net".into(),
        url: "wss://gw.local/x".into(),
        dps: false,
    });
    let s = run(fresh(), [ask.clone(), Action::CancelConfirm]);
    assert!(s.confirm.is_none() && s.confirmed_url.is_none());
    let s = run(s, [ask, Action::Confirmed]);
    assert_eq!(s.confirmed_url.as_deref(), Some("wss://gw.local/x"));
    assert!(s.confirm.is_none());
}

#[test]
fn null_and_empty_c2d_properties_stay_different() {
    let s = fresh().reduce(c2d("x", vec![("p1", None), ("p2", Some("")), ("p3", Some("a b"))]));
    assert_eq!(
        s.inbox[0].application,
        vec![("p1".into(), None), ("p2".into(), Some(String::new())), ("p3".into(), Some("a b".into()))]
    );
    assert_eq!(s.log[0].text, "cloud-to-device message: x (properties: p1=null, p2=\"\", p3=\"a b\")");
}

#[test]
fn a_flood_of_1000_c2d_messages_is_bounded_and_shares_instead_of_copying() {
    let start = std::time::Instant::now();
    let mut s = fresh();
    let body = "x".repeat(4096);
    for i in 0..1000 {
        let before = s.clone();
        s = s.reduce(c2d(&format!("{i}{body}"), vec![("n", Some("1"))]));
        if i > 0 {
            // The previous newest message is the same allocation, one place further: nothing was copied.
            assert!(Rc::ptr_eq(&before.inbox[0], &s.inbox[1]));
            assert!(Rc::ptr_eq(&before.log[0], &s.log[1]));
            assert!(Rc::ptr_eq(&before.settings, &s.settings));
        }
    }
    assert_eq!(s.inbox.len(), MAX_INBOX);
    assert_eq!(s.log.len(), MAX_LOG);
    assert_eq!(s.unread, 1000);
    assert!(s.inbox[0].body.starts_with("999"));
    // 1000 messages of 4 KB: copying the history each time would move ~1 GB; sharing takes milliseconds.
    assert!(start.elapsed().as_millis() < 2000, "{:?}", start.elapsed());
}

#[test]
fn lists_are_bounded() {
    let mut s = fresh();
    for i in 0..(MAX_LOG + 10) {
        s = s.reduce(Action::Log { at: "t".into(), kind: LogKind::Sent, text: i.to_string() });
    }
    for i in 0..(MAX_METHODS + 5) {
        s = s.reduce(Action::Method(MethodCall {
            seq: 0,
            time: "t".into(),
            name: format!("m{i}"),
            payload: String::new(),
            status: 200,
            response: "{}".into(),
        }));
    }
    for i in 0..(MAX_DESIRED + 5) {
        s = s.reduce(Action::Desired { at: "t".into(), patch: i.to_string() });
    }
    assert_eq!(s.log.len(), MAX_LOG);
    assert_eq!(s.methods.len(), MAX_METHODS);
    assert_eq!(s.desired_updates.len(), MAX_DESIRED);
    assert_eq!(s.methods[0].name, format!("m{}", MAX_METHODS + 4));
    assert!(s.log.iter().any(|l| l.text == "direct method m104 called with no payload, answered 200 {}"));
}

#[test]
fn repeat_progress_ends_at_its_total() {
    let s = run(fresh(), [Action::Repeat(Some(Repeat { total: Some(2), done: 0 })), Action::RepeatTick]);
    assert_eq!(s.repeat, Some(Repeat { total: Some(2), done: 1 }));
    assert_eq!(s.reduce(Action::RepeatTick).repeat, None);
}

#[test]
fn messages_dropped_with_a_replaced_session_are_no_longer_pending() {
    let s = run(fresh(), [Action::Sent(3), Action::Acked]);
    assert_eq!(s.pending(), 2);
    let s = run(s, [Action::Dropped(2)]);
    assert_eq!((s.sent, s.acked, s.pending()), (3, 1, 0));
}

#[test]
fn provisioning_steps_replace_repeated_polls_and_stay_bounded() {
    use crate::dps::StepKind;
    let step = |kind, text: &str| Action::DpsStep { at: "10:00:02".into(), kind, text: text.into() };
    let s = run(
        fresh(),
        [
            Action::DpsStart,
            step(StepKind::Connecting, "connecting to DPS (h)"),
            step(StepKind::Registering, "registering"),
            step(StepKind::Assigning, "assigning (asking again in 2 s)"),
            step(StepKind::Assigning, "assigning (asking again in 1 s)"),
            Action::DpsEnd { at: "10:00:05".into(), result: Ok("assigned to hub as dev".into()) },
        ],
    );
    let texts: Vec<(&str, bool)> = s.dps_steps.iter().map(|st| (st.text.as_str(), st.active)).collect();
    assert_eq!(
        texts,
        vec![
            ("connecting to DPS (h)", false),
            ("registering", false),
            ("assigning (asking again in 1 s)", false),
            ("assigned to hub as dev", false)
        ]
    );
    assert_eq!(s.log[0].text, "DPS: assigned to hub as dev");
    assert_eq!(s.announcement, "assigned to hub as dev");
    // Alternating kinds cannot grow the list without bound.
    let mut s = s;
    for i in 0..100 {
        let kind = if i % 2 == 0 { StepKind::Retrying } else { StepKind::Registering };
        s = AppState::reduce(s, step(kind, "x"));
    }
    assert_eq!(s.dps_steps.len(), MAX_DPS_STEPS);
    assert_eq!(s.dps_steps[0].text, "connecting to DPS (h)");
    assert!(s.dps_steps.last().unwrap().active);
    let s = run(s, [Action::DpsStart]);
    assert!(s.dps_steps.is_empty());
}

#[test]
fn an_assignment_is_forgotten_when_the_registration_changes() {
    let s = run(
        fresh(),
        [
            Action::Edit(Change::Text(Text::RegistrationId, "sensor-1".into())),
            Action::Assigned { hub: "localhost".into(), device: "sensor-1".into() },
            Action::Edit(Change::Text(Text::RegistrationId, "sensor-1".into())),
        ],
    );
    assert_eq!(s.settings.assigned_hub, "localhost");
    let s = run(s, [Action::Edit(Change::Text(Text::RegistrationId, "sensor-2".into()))]);
    assert_eq!((s.settings.assigned_hub.as_str(), s.settings.assigned_device.as_str()), ("", ""));
}

#[test]
fn a_c2d_message_with_thousands_of_properties_logs_a_bounded_line_and_keeps_them_all() {
    let names: Vec<String> = (0..5000).map(|i| format!("p{i}")).collect();
    let s = run(fresh(), [c2d("x", names.iter().map(|n| (n.as_str(), Some("1"))).collect())]);
    assert!(s.log[0].text.len() < 1000, "{} bytes logged", s.log[0].text.len());
    assert!(s.log[0].text.ends_with("p19=\"1\", … and 4980 more)"), "{}", s.log[0].text);
    assert_eq!(s.inbox[0].application.len(), 5000);
}

#[test]
fn the_twin_shown_takes_desired_patches_and_saved_reported_patches() {
    let twin = Action::Twin {
        desired: "{\n  \"mode\": \"auto\",\n  \"keep\": 1,\n  \"$version\": 7\n}".into(),
        reported: "{\n  \"fw\": \"1.0\",\n  \"$version\": 3\n}".into(),
    };
    let desired = Action::Desired { at: "t".into(), patch: r#"{"interval":30,"mode":null,"$version":8}"#.into() };
    let saved = Action::ReportedSaved { patch: r#"{"fw":"2.0","t":{"ac":200}}"#.into(), version: 4 };
    let s = run(fresh(), [twin, desired, saved]);
    assert_eq!(s.twin.desired, "{\n  \"keep\": 1,\n  \"$version\": 8,\n  \"interval\": 30\n}");
    assert_eq!(s.twin.reported, "{\n  \"fw\": \"2.0\",\n  \"$version\": 4,\n  \"t\": {\n    \"ac\": 200\n  }\n}");
    // A desired patch older than what is shown is ignored.
    let s = run(s, [Action::Desired { at: "t".into(), patch: r#"{"keep":0,"$version":8}"#.into() }]);
    assert!(s.twin.desired.contains("\"keep\": 1"), "{}", s.twin.desired);
    // Before the twin was read there is nothing to patch: it stays empty until the read.
    let s = run(fresh(), [Action::Desired { at: "t".into(), patch: r#"{"a":1,"$version":2}"#.into() }]);
    assert_eq!(s.twin.desired, "");
}

#[test]
fn a_log_entry_is_a_line_not_a_document_and_a_new_identity_forgets_the_previous_twin() {
    let long = "é".repeat(3000);
    let s = run(fresh(), [Action::Log { at: "t".into(), kind: LogKind::Sent, text: long }]);
    let text = &s.log[0].text;
    assert!(text.len() <= MAX_LOG_TEXT, "{}", text.len());
    assert!(text.ends_with("… (3000 characters in all)"), "{}", &text[text.len() - 40..]);
    let s = run(
        fresh(),
        [
            Action::Twin { desired: "{\"a\":1}".into(), reported: "{}".into() },
            Action::Desired { at: "t".into(), patch: "{\"a\":2}".into() },
            Action::Sent(3),
            Action::Acked,
            Action::NewIdentity,
        ],
    );
    assert_eq!(*s.twin, TwinView::default());
    assert!(s.desired_updates.is_empty());
    assert_eq!((s.sent, s.acked, s.dropped), (0, 0, 0));
}
