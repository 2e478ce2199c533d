//! Native tests of the DPS form logic: validation, where the token goes, the payload, the step texts.

use super::*;
use crate::settings::{decode, Source};
use hubsim_proto::device::ConnectRefusal;
use hubsim_proto::provisioning::Assignment;

/// The group key of reference §3's derivation vector is not needed here: the core tests the derivation; these
/// tests check that the app asks the core for it.
const KEY: &str = "a2V5IGZvciB0ZXN0cw==";

fn dps() -> Settings {
    Settings {
        use_dps: true,
        id_scope: "0ne00ABCDEF".into(),
        registration_id: "sensor-17".into(),
        dps_key: KEY.into(),
        group_key: true,
        ..Default::default()
    }
}

fn emu() -> Emulator {
    Emulator {
        host_name: "localhost".into(),
        ws: "ws://127.0.0.1:8080/$iothub/websocket".into(),
        id_scope: "0ne0000A1B2".into(),
    }
}

#[test]
fn the_global_endpoint_is_the_default_and_needs_no_confirmation() {
    let p = dps_plan(&dps(), None).unwrap();
    assert_eq!(p.url, "wss://global.azure-devices-provisioning.net/$iothub/websocket?iothub-no-client-cert=true");
    assert!(!p.needs_confirmation);
    assert_eq!(p.payload, None);
    // The core derives the device key from the group key and the registration id.
    let group = DeviceKey::from_base64(KEY).unwrap();
    assert_eq!(p.key.device_key("sensor-17"), group.derive_for_registration("sensor-17"));
    let mut s = dps();
    s.dps_host = String::new();
    assert_eq!(dps_plan(&s, None).unwrap().target, GLOBAL_ENDPOINT);
    s.dps_host = "my-dps.azure-devices-provisioning.net".into();
    assert!(!dps_plan(&s, None).unwrap().needs_confirmation);
}

#[test]
fn another_provisioning_host_is_confirmed_and_the_emulator_is_used_same_origin() {
    let mut s = dps();
    s.dps_host = "dps.example.org".into();
    let p = dps_plan(&s, None).unwrap();
    assert!(p.needs_confirmation);
    assert_eq!(p.target, "dps.example.org");
    s.dps_host = "LocalHost".into();
    let p = dps_plan(&s, Some(&emu())).unwrap();
    assert_eq!(p.url, emu().ws);
    assert_eq!(p.target, "127.0.0.1:8080");
    assert!(!p.needs_confirmation);
}

#[test]
fn every_dps_field_is_checked_before_connecting() {
    let s = Settings { use_dps: true, dps_payload: "{\"a\":".into(), ..Default::default() };
    let errors = dps_plan(&s, None).unwrap_err();
    let fields: Vec<&str> = errors.iter().map(|e| e.field).collect();
    assert_eq!(fields, vec!["id_scope", "registration_id", "dps_key", "dps_payload"]);
    assert!(errors[3].message.starts_with("the registration payload is not JSON: line 1, col"), "{errors:?}");
    let mut s = dps();
    s.id_scope = "0ne/../x".into();
    s.registration_id = "Sensor 17".into();
    s.dps_key = "not base64!".into();
    let errors = dps_plan(&s, None).unwrap_err();
    assert!(errors[0].message.contains("is not an ID scope"), "{errors:?}");
    assert!(errors[1].message.contains("registration ID \"Sensor 17\" is not valid"), "{errors:?}");
    assert!(errors[2].message.starts_with("group key: "), "{errors:?}");
    s = dps();
    s.dps_host = "evil.example@global.azure-devices-provisioning.net".into();
    assert_eq!(dps_plan(&s, None).unwrap_err()[0].field, "dps_host");
}

#[test]
fn the_payload_carries_the_model_id_as_the_pnp_convention_asks() {
    assert_eq!(registration_payload("", ""), Ok(None));
    assert_eq!(
        registration_payload("", "dtmi:com:example:Thermostat;1"),
        Ok(Some("{\"modelId\":\"dtmi:com:example:Thermostat;1\"}".into()))
    );
    assert_eq!(
        registration_payload(" {\n \"site\": 1.50 } ", "dtmi:a;1"),
        Ok(Some("{\"modelId\":\"dtmi:a;1\",\"site\": 1.50 }".into()))
    );
    assert_eq!(registration_payload("{ }", "dtmi:a;1"), Ok(Some("{\"modelId\":\"dtmi:a;1\"}".into())));
    assert_eq!(registration_payload("[1, 2]", ""), Ok(Some("[1, 2]".into())));
    assert_eq!(
        registration_payload("{\"modelId\":\"dtmi:a;1\"}", "dtmi:a;1"),
        Ok(Some("{\"modelId\":\"dtmi:a;1\"}".into()))
    );
    assert!(registration_payload("{\"modelId\":\"dtmi:b;1\"}", "dtmi:a;1").unwrap_err().contains("not the model ID"));
    assert!(registration_payload("[1]", "dtmi:a;1").unwrap_err().contains("must be a JSON object"));
    assert!(registration_payload("{'a':1}", "").unwrap_err().starts_with("the registration payload is not JSON"));
    // What goes out is always one JSON value the core accepts.
    let p = registration_payload("{\"x\":[true,null]}", "dtmi:a;1").unwrap().unwrap();
    assert!(hubsim_proto::provisioning::check_payload(&p).is_ok(), "{p}");
}

#[test]
fn a_remembered_assignment_connects_to_its_hub_with_the_derived_key() {
    let mut s = dps();
    assert_eq!(crate::form::plan(&s, None).unwrap_err()[0].field, "dps");
    s.assigned_hub = "localhost".into();
    s.assigned_device = "sensor-17".into();
    let p = crate::form::plan(&s, Some(&emu())).unwrap();
    assert_eq!(p.url, emu().ws);
    assert_eq!(p.cs.device_id, "sensor-17");
    let derived = DeviceKey::from_base64(KEY).unwrap().derive_for_registration("sensor-17");
    assert_eq!(p.cs.credential, Credential::Key(derived));
    s.assigned_hub = "myhub.azure-devices.net".into();
    let p = crate::form::plan(&s, Some(&emu())).unwrap();
    assert_eq!(p.url, "wss://myhub.azure-devices.net/$iothub/websocket?iothub-no-client-cert=true");
    assert!(!p.needs_confirmation);
    s.group_key = false;
    let own = crate::form::plan(&s, None).unwrap();
    assert_eq!(own.cs.credential, Credential::Key(DeviceKey::from_base64(KEY).unwrap()));
}

#[test]
fn the_dps_key_and_assignment_follow_the_storage_rules_and_never_enter_a_link() {
    let mut s = dps();
    s.dps_host = "dps.example.org".into();
    s.assigned_hub = "myhub.azure-devices.net".into();
    s.assigned_device = "sensor-17".into();
    let link = s.encode(false);
    for bad in [KEY, "dpskey", "dpshost", "ahub", "adev", "keepassign", "myhub"] {
        assert!(!link.contains(bad), "{bad} in {link}");
    }
    let back = decode(&link, Source::Link).settings();
    assert_eq!(
        (back.id_scope.as_str(), back.registration_id.as_str(), back.group_key),
        ("0ne00ABCDEF", "sensor-17", true)
    );
    let stored = decode(&s.encode(true), Source::Storage).settings();
    assert_eq!((stored.dps_key.as_str(), stored.assigned_hub.as_str()), ("", ""), "neither was asked for");
    assert_eq!(stored.dps_host, "dps.example.org");
    s.remember_assignment = true;
    let stored = decode(&s.encode(true), Source::Storage).settings();
    assert_eq!(
        (stored.assigned_hub.as_str(), stored.assigned_device.as_str()),
        ("myhub.azure-devices.net", "sensor-17")
    );
    assert_eq!(stored.dps_key, "", "the key only with remember the key");
    s.remember_key = true;
    assert_eq!(decode(&s.encode(true), Source::Storage).settings(), s);
    let refused = decode("dpskey=a2V5&dpshost=evil.example&ahub=evil.example&keepassign=1", Source::Link);
    assert!(refused.changes.is_empty(), "{:?}", refused.changes);
    assert_eq!(refused.refused.len(), 4);
}

#[test]
fn every_step_and_outcome_is_said_in_words() {
    use hubsim_proto::provisioning::Progress;
    let t = |p: Progress| step_text(&p, "global.azure-devices-provisioning.net").1;
    assert_eq!(t(Progress::Connecting), "connecting to DPS (global.azure-devices-provisioning.net)");
    assert_eq!(t(Progress::Registering { attempt: 1 }), "registering");
    assert_eq!(t(Progress::Registering { attempt: 3 }), "registering (attempt 3)");
    assert_eq!(
        t(Progress::Assigning { operation_id: "op".into(), retry_in: Duration::from_millis(1500) }),
        "assigning (asking again in 2 s)"
    );
    assert_eq!(
        t(Progress::Retrying { status: 429, retry_in: Duration::from_secs(4) }),
        "DPS is busy (status 429), retrying in 4 s"
    );
    let cmd = "hubsim provision --id-scope S --registration-id r --key <key> --group-key";
    let assigned = Ok(Registration::Assigned(Assignment {
        assigned_hub: "myhub.azure-devices.net".into(),
        device_id: "r".into(),
        substatus: None,
        payload: None,
    }));
    assert_eq!(outcome_text(&assigned, true, true, cmd), Ok("assigned to myhub.azure-devices.net as r".into()));
    let failed = Ok(Registration::Failed { error_code: Some(400207), message: "no hub".into() });
    assert_eq!(
        outcome_text(&failed, true, true, cmd).unwrap_err().0,
        "DPS could not assign the device: no hub (error 400207)"
    );
    let wrong =
        Err(ProvisioningError::Service { status: 401, error_code: Some(401002), message: "Unauthorized".into() });
    let (what, todo) = outcome_text(&wrong, true, true, cmd).unwrap_err();
    assert_eq!(what, "DPS answered 401 (error 401002): Unauthorized");
    assert!(todo.contains("group key"), "{todo}");
    let refused = Err(ProvisioningError::Refused(ConnectRefusal(5)));
    assert!(outcome_text(&refused, true, false, cmd)
        .unwrap_err()
        .0
        .starts_with("DPS refused the connection (CONNACK 0x05)"));
    // A WebSocket that never opened, or closed before CONNACK: what happened and the way out, never a spinner.
    let closed = Err(ProvisioningError::TransportClosed("WebSocket closed, code 1006".into()));
    let (what, todo) = outcome_text(&closed, false, false, cmd).unwrap_err();
    assert_eq!(what, "the browser could not open a WebSocket to DPS (WebSocket closed, code 1006)");
    assert!(todo.contains(cmd) && todo.contains("paste it under Connection string"), "{todo}");
    let (what, todo) = outcome_text(&closed, true, false, cmd).unwrap_err();
    assert!(what.starts_with("DPS closed the WebSocket before answering CONNECT"), "{what}");
    assert!(todo.contains(cmd));
    let timeout = Err(ProvisioningError::Timeout(hubsim_proto::provisioning::Awaited::Connack));
    assert_eq!(outcome_text(&timeout, true, false, cmd).unwrap_err().0, "no CONNACK from DPS in time");
}

#[test]
fn the_provision_command_never_carries_the_key() {
    let p = dps_plan(&dps(), None).unwrap();
    assert_eq!(
        provision_command(&p, GLOBAL_ENDPOINT),
        "hubsim provision --id-scope 0ne00ABCDEF --registration-id sensor-17 --key <key> --group-key"
    );
    assert_eq!(
        provision_command(&p, "localhost"),
        "hubsim provision --provisioning-host localhost --id-scope 0ne00ABCDEF --registration-id sensor-17 --key <key> --group-key"
    );
}

#[test]
fn an_assignment_to_a_host_the_user_did_not_choose_is_confirmed_first() {
    // The DPS decides the hub; the derived device key's token must not go to a host the user never named
    // without the dialog naming it.
    let mut s = dps();
    s.assigned_device = "sensor-17".into();
    for (dps_host, hub, ask) in [
        ("", "myhub.azure-devices.net", false),
        ("my-dps.azure-devices-provisioning.net", "MyHub.Azure-Devices.net", false),
        ("", "evil.example", true),
        ("", "azure-devices.net.evil.example", true),
        ("", "evilazure-devices.net", true),
        ("dps.example.org", "evil.example", true),
        ("dps.example.org", "myhub.azure-devices.net", true),
        ("dps.example.org", "DPS.example.org", false),
    ] {
        s.dps_host = dps_host.into();
        s.assigned_hub = hub.into();
        let p = crate::form::plan(&s, None).unwrap();
        assert_eq!(p.needs_confirmation, ask, "DPS {dps_host:?} assigning {hub}");
        assert_eq!(p.target, hub.to_ascii_lowercase());
    }
    // The emulator serving the page assigning its own hub is used same-origin, unasked.
    s.dps_host = "localhost".into();
    s.assigned_hub = "localhost".into();
    assert!(!crate::form::plan(&s, Some(&emu())).unwrap().needs_confirmation);
    s.assigned_hub = "evil.example".into();
    assert!(crate::form::plan(&s, Some(&emu())).unwrap().needs_confirmation);
}
