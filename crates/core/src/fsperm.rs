//! The data directory holds what executes (compiled policy artifacts) and what unlocks the rest
//! (`master.key`, `admin.token`): it is created `0700`, its files `0600`, and at start-up a data
//! directory, key file or token file that another user could write — group- or world-writable, or
//! owned by someone other than this process's user or root — is refused, as ssh refuses a loose
//! `~/.ssh`.

use std::path::Path;

use crate::error::{Error, Result};

/// Creates `dir` (and parents) with mode `0700` for what this process creates.
pub fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut b, 0o700);
    b.create(dir)
}

/// Writes `bytes` to `path` (created or truncated), readable by the owner only.
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    let mut f = opts.open(path)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    }
    f.write_all(bytes)?;
    f.sync_all()
}

/// Refuses `path` (`what` names it in the message) if it exists and another user could change
/// it: group- or world-writable, or owned by a user other than this process's or root.
pub fn check_not_writable_by_others(path: &Path, what: &str) -> Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            return Ok(());
        };
        let shown = path.display().to_string();
        if meta.file_type().is_symlink() {
            // Follow it, but judge the target by the same rules.
            let target = std::fs::metadata(path).map_err(|e| {
                Error::msg(format!(
                    "{what} {shown:?} is a symbolic link that does not resolve: {e}"
                ))
            })?;
            return judge(&target, &shown, what);
        }
        return judge(&meta, &shown, what);

        fn judge(meta: &std::fs::Metadata, shown: &str, what: &str) -> Result<()> {
            let uid = current_uid();
            // Root may own it: root can change anything anyway, and it is how orchestrators
            // mount secrets (a Kubernetes Secret is root-owned, readable through fsGroup).
            if meta.uid() != uid && meta.uid() != 0 {
                return Err(Error::msg(format!(
                    "{what} {shown:?} is owned by user {} but Conduit runs as user {uid}; another user could replace what it holds — chown it to the user Conduit runs as",
                    meta.uid()
                )));
            }
            if meta.mode() & 0o022 != 0 {
                return Err(Error::msg(format!(
                    "{what} {shown:?} is writable by its group or by everyone (mode {:o}); fix with `chmod go-w {shown}` (Conduit creates it 0700 / 0600)",
                    meta.mode() & 0o7777
                )));
            }
            Ok(())
        }
    }
    #[cfg(not(unix))]
    {
        let _ = (path, what);
        Ok(())
    }
}

/// The effective user id, from `/proc/self` (no libc dependency): its owner is this process's
/// effective uid.
#[cfg(unix)]
fn current_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or_else(|_| {
        // Without /proc: a file this process creates is owned by its effective uid.
        let probe = std::env::temp_dir().join(format!("conduit-uid-{}", std::process::id()));
        let uid = std::fs::write(&probe, b"")
            .and_then(|()| std::fs::metadata(&probe))
            .map(|m| m.uid())
            .unwrap_or(u32::MAX);
        let _ = std::fs::remove_file(&probe);
        uid
    })
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn loose_permissions_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        create_private_dir(&data).unwrap();
        assert_eq!(std::fs::metadata(&data).unwrap().permissions().mode() & 0o777, 0o700);
        check_not_writable_by_others(&data, "the data directory").unwrap();
        let key = data.join("master.key");
        write_private(&key, b"k").unwrap();
        assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
        check_not_writable_by_others(&key, "the master key file").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o666)).unwrap();
        let e = check_not_writable_by_others(&key, "the master key file")
            .unwrap_err()
            .to_string();
        assert!(e.contains("chmod go-w") && e.contains("666"), "{e}");
        std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(check_not_writable_by_others(&data, "the data directory").is_err());
        check_not_writable_by_others(&dir.path().join("absent"), "x").unwrap();
        // Root's files pass (a mounted Kubernetes Secret is root-owned); another user's do not.
        check_not_writable_by_others(Path::new("/"), "x").unwrap();
        if current_uid() == 0 {
            let theirs = dir.path().join("theirs");
            write_private(&theirs, b"k").unwrap();
            std::os::unix::fs::chown(&theirs, Some(65534), Some(65534)).unwrap();
            let e = check_not_writable_by_others(&theirs, "the master key file")
                .unwrap_err()
                .to_string();
            assert!(e.contains("owned by user 65534"), "{e}");
        }
    }
}
