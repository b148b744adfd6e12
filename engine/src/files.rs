//! Atomic file writes: what a reader (or a reboot) finds is the old content or the new,
//! never a mixture or an empty file.
//!
//! The new content goes to a temporary file in the same directory, which is flushed to disk,
//! renamed over the target (atomic on POSIX file systems) and followed by a flush of the
//! directory so the rename itself survives a crash. What it does not do: lock against a second
//! writer (the last rename wins).

use std::io::Write as _;
use std::path::Path;

/// Remove the temporary files a writer of `path` left when it was killed mid-write (they are
/// named after the file and the writer's process id; only this process writes `path` now).
pub fn remove_stale_temporaries(path: &Path) {
    let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
        return;
    };
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    let prefix = format!(".{}.", name.to_string_lossy());
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().into_owned();
        if file.starts_with(&prefix) && file.ends_with(".tmp") {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Replace `path` with `data`, keeping the old file's permissions when there was one.
pub fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "no file name"))?;
    let temp = dir.join(format!(
        ".{}.{}.tmp",
        name.to_string_lossy(),
        std::process::id()
    ));
    let result = (|| {
        let mut file = std::fs::File::create(&temp)?;
        if let Ok(old) = std::fs::metadata(path) {
            file.set_permissions(old.permissions())?;
        }
        file.write_all(data)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&temp, path)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_content_keeps_mode_and_leaves_no_temporary() {
        let dir = std::env::temp_dir().join(format!("shardcast-files-{}", std::process::id()));
        let path = dir.join("sub/config.toml");
        write_atomically(&path, b"one").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        write_atomically(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o640);
        let entries = std::fs::read_dir(dir.join("sub")).unwrap().count();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(entries, 1);
    }
}
