//! The data folder is private from creation, and a folder left open by an older hubsim is closed at start.

#![cfg(unix)]

use hubsim_testkit::*;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

async fn stop(mut emu: Emu) {
    emu.running.take().unwrap().shutdown().await;
}

#[tokio::test]
async fn the_data_folder_its_database_and_keys_are_private() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("fresh/.hubsim");
    let emu = Emu::start_with(|c| c.data_dir = data.clone()).await;
    assert_eq!(mode(&data), 0o700);
    for f in ["hubsim.redb", "ca.key", "server.key", "policies.json"] {
        assert_eq!(mode(&data.join(f)), 0o600, "{f}");
    }
    stop(emu).await;

    // As an older hubsim left it: everything readable by others.
    let old = tmp.path().join("old");
    std::fs::create_dir(&old).unwrap();
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o755)).unwrap();
    stop(Emu::start_with(|c| c.data_dir = old.clone()).await).await;
    for f in ["hubsim.redb", "ca.key", "server.key"] {
        std::fs::set_permissions(old.join(f), std::fs::Permissions::from_mode(0o644)).unwrap();
    }
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o755)).unwrap();
    let _emu = Emu::start_with(|c| c.data_dir = old.clone()).await;
    assert_eq!(mode(&old), 0o700);
    for f in ["hubsim.redb", "ca.key", "server.key"] {
        assert_eq!(mode(&old.join(f)), 0o600, "{f} narrowed at start");
    }
}

/// A second emulator on a data folder in use stops at once, saying so (not redb's "Cannot acquire lock"), and
/// changes nothing of the running one's (its certificate stays, even for another host name).
#[tokio::test]
async fn a_second_emulator_on_the_same_data_folder_says_another_uses_it_and_changes_nothing() {
    let emu = Emu::start().await;
    let ca = std::fs::read(emu.dir.join("ca.pem")).unwrap();
    let mut c = hubsim_hub::Config::new(&emu.dir);
    (c.mqtt_port, c.ws_port, c.http_port) = (0, 0, 0);
    c.host_name = "other.example".into();
    let Err(e) = hubsim_hub::start(c).await else { panic!("a second emulator started on the same folder") };
    let text = format!("{e:#}");
    let says = format!("another hubsim serve is already using the data folder {}", emu.dir.display());
    assert!(text.contains(&says) && text.contains("another folder with --data"), "{text}");
    assert!(!text.contains("Cannot acquire lock"), "{text}");
    assert_eq!(std::fs::read(emu.dir.join("ca.pem")).unwrap(), ca, "the running emulator's CA is untouched");
    // The first one still serves.
    emu.device("d1").await;
}

/// A host name no client could dial is refused before the data folder, its CA or its database exist.
#[tokio::test]
async fn a_host_name_that_is_not_a_dns_name_or_ip_address_is_refused_before_anything_is_made() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join(".hubsim");
    let mut c = hubsim_hub::Config::new(&data);
    (c.mqtt_port, c.ws_port, c.http_port) = (0, 0, 0);
    c.host_name = "bad host".into();
    let Err(e) = hubsim_hub::start(c).await else { panic!("started with the host name 'bad host'") };
    assert!(e.to_string().contains("'bad host' (--host-name) is not a valid DNS name or IP address"), "{e:#}");
    assert!(!data.exists(), "nothing was created");
}

/// A start that fails on a port in use leaves no new data folder (CA, keys, database) behind; a folder that was
/// there before is kept.
#[tokio::test]
async fn a_start_that_fails_on_a_busy_port_leaves_no_new_data_folder() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = busy.local_addr().unwrap().port();
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join(".hubsim");
    let mut c = hubsim_hub::Config::new(&data);
    (c.mqtt_port, c.ws_port, c.http_port) = (port, 0, 0);
    let Err(e) = hubsim_hub::start(c).await else { panic!("started on a port in use") };
    assert!(format!("{e:#}").contains(&format!("binding MQTT port {port}")), "{e:#}");
    assert!(!data.exists(), "the folder this start made is gone");
    // An existing folder (another run's keys) stays.
    std::fs::create_dir(&data).unwrap();
    std::fs::write(data.join("keep"), "x").unwrap();
    let mut c = hubsim_hub::Config::new(&data);
    (c.mqtt_port, c.ws_port, c.http_port) = (port, 0, 0);
    assert!(hubsim_hub::start(c).await.is_err());
    assert!(data.join("keep").exists());
}
