//! Files private from creation. The data folder holds device keys (in the database) and private keys (`ca.key`,
//! `server.key`), so on Unix the folder is created 0700 and those files 0600 **when they are created** (`mode` on
//! `create`, never write-then-chmod, which leaves a window where others can open them). A folder or file left
//! wider by an older hubsim or by hand is narrowed at start, with a warning naming it.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::Path;

/// Mode of the data folder.
pub const DIR_MODE: u32 = 0o700;
/// Mode of the database and of private keys.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` (and missing parents) 0700, or narrows an existing one to 0700.
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        if !dir.exists() {
            std::fs::DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)?;
        }
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir)?;
    narrow(dir, DIR_MODE)
}

/// Creates `path` empty with mode 0600 if it does not exist; narrows it to 0600 if it does.
pub fn ensure_private_file(path: &Path) -> io::Result<()> {
    let mut o = OpenOptions::new();
    o.read(true).write(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, FILE_MODE);
    drop(o.open(path)?);
    narrow(path, FILE_MODE)
}

/// Writes `data` to `path` through a temporary file created 0600 and renamed over it: a reader never sees a
/// half-written file, and the file is never readable by others.
pub fn write_private(path: &Path, data: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut o = OpenOptions::new();
    o.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, FILE_MODE);
    let mut f = o.open(&tmp)?;
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)
}

/// Narrows an existing path's permissions to `mode` when group or others have any access, with a warning.
pub fn narrow(path: &Path, mode: u32) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let current = std::fs::metadata(path)?.permissions().mode() & 0o777;
        if current & 0o077 != 0 {
            tracing::warn!("{} was readable by others (mode {current:o}); narrowing it to {mode:o}", path.display());
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        }
    }
    #[cfg(not(unix))]
    let _ = (path, mode);
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn created_private_and_wider_ones_narrowed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        create_private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        let f = dir.join("x.key");
        write_private(&f, b"secret").unwrap();
        assert_eq!(mode(&f), 0o600);
        assert_eq!(std::fs::read(&f).unwrap(), b"secret");
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        ensure_private_file(&f).unwrap();
        assert_eq!(mode(&f), 0o600);
        assert_eq!(std::fs::read(&f).unwrap(), b"secret", "an existing file keeps its content");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        create_private_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
    }
}
