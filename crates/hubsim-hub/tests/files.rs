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
