//! Writing output files the way a careful tool does, for every writer in fovea (records, PNGs,
//! CSVs, JSONL summaries, app sessions).
//!
//! - **Atomic**: bytes go to a hidden temporary file beside the destination, which is flushed,
//!   synced and then renamed over it, so a reader (or a crash) never sees half a file.
//! - **Buffered**: writers get a `BufWriter`, so serialising a large JSON record is a handful of
//!   system calls, not one per token.
//! - **Normal permissions**: the temporary file is created with mode 0666 filtered by the umask
//!   (0644 under the usual umask 022), like a file made by `>` in a shell; a plain temporary
//!   file would be 0600 and keep that mode through the rename.
//!
//! This module sits at the bottom of the house: it knows nothing of images, models or JSON
//! shapes beyond serde.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use anyhow::{Context, Result};

/// Write `path` atomically through a buffered writer; `fill` produces the content.
///
/// `kind` names the temporary file's suffix (".json", ".png", ...) so a leftover from a killed
/// process is recognisable.
pub fn write_with(
    path: &Path,
    kind: &str,
    fill: impl FnOnce(&mut BufWriter<&mut File>) -> Result<()>,
) -> Result<()> {
    let dir = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let suffix = format!("{kind}.partial");
    let mut builder = tempfile::Builder::new();
    builder.prefix(".fovea-").suffix(&suffix);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        builder.permissions(std::fs::Permissions::from_mode(0o666));
    }
    let mut temp = builder
        .tempfile_in(dir)
        .with_context(|| format!("cannot create a temporary file in {}", dir.display()))?;
    {
        let mut writer = BufWriter::with_capacity(1 << 16, temp.as_file_mut());
        fill(&mut writer).with_context(|| format!("cannot write {}", path.display()))?;
        writer
            .flush()
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    temp.as_file()
        .sync_all()
        .with_context(|| format!("cannot sync {}", path.display()))?;
    persist(temp, path)
}

/// Rename the finished temporary file over `path`.
///
/// Windows refuses to replace a file another program holds open without delete sharing (a
/// viewer, an indexer, a virus scanner reading the new file): the rename fails with "access
/// denied" or "sharing violation" until that program lets go, usually within a second. So on
/// Windows the rename is retried for up to about 2 s before the error is given, naming the file
/// and the likely cause. (A POSIX rename replaces an open file at once.)
fn persist(mut temp: tempfile::NamedTempFile, path: &Path) -> Result<()> {
    let waits_ms: &[u64] = if cfg!(windows) {
        &[10, 20, 40, 80, 160, 320, 640, 800]
    } else {
        &[]
    };
    for wait in waits_ms.iter().map(|&ms| Some(ms)).chain([None]) {
        match temp.persist(path) {
            Ok(_) => return Ok(()),
            Err(err) => {
                let held = is_held_open(&err.error);
                match wait {
                    Some(ms) if held => {
                        temp = err.file;
                        std::thread::sleep(std::time::Duration::from_millis(ms));
                    }
                    _ if held => {
                        return Err(err.error).with_context(|| {
                            format!(
                                "cannot replace {}: another program keeps it open (close it there \
                                 and try again)",
                                path.display()
                            )
                        })
                    }
                    _ => {
                        return Err(err.error)
                            .with_context(|| format!("cannot write {}", path.display()))
                    }
                }
            }
        }
    }
    unreachable!("the last attempt returns")
}

/// Windows' answers to replacing a file that is open elsewhere: ERROR_ACCESS_DENIED (5) and
/// ERROR_SHARING_VIOLATION (32). Never true elsewhere.
fn is_held_open(err: &std::io::Error) -> bool {
    cfg!(windows) && matches!(err.raw_os_error(), Some(5 | 32))
}

/// Write bytes atomically.
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<()> {
    write_with(path, "", |writer| Ok(writer.write_all(bytes)?))
}

/// Write pretty-printed JSON atomically.
pub fn write_json(path: &Path, value: &impl serde::Serialize) -> Result<()> {
    write_with(path, ".json", |writer| {
        serde_json::to_writer_pretty(&mut *writer, value)?;
        Ok(())
    })
}

/// Write a PNG atomically.
pub fn write_png(path: &Path, img: &image::RgbImage) -> Result<()> {
    write_with(path, ".png", |writer| {
        img.write_to(writer, image::ImageFormat::Png)
            .context("cannot encode PNG")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn files_follow_the_umask_and_replace_atomically() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.json");
        // The umask is process-wide; read it without changing it for other threads' files.
        let probe = dir.path().join("probe");
        std::fs::write(&probe, b"").unwrap();
        let expected = std::fs::metadata(&probe).unwrap().permissions().mode() & 0o777;
        write_json(&path, &serde_json::json!({"a": [1, 2, 3]})).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, expected, "same mode as std::fs::write gives");
        write_bytes(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.file_name().to_string_lossy().starts_with(".fovea-"))
            .collect();
        assert!(leftovers.is_empty(), "no temporary file left behind");
    }

    /// Windows: a reader holding the destination open without delete sharing for 300 ms (as
    /// a viewer or a virus scanner does) delays the replacement instead of failing it; one that
    /// never lets go gets an error naming the file, and the old content stays.
    #[cfg(windows)]
    #[test]
    fn a_file_held_open_elsewhere_is_replaced_when_released() {
        use std::os::windows::fs::OpenOptionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("held.json");
        write_bytes(&path, b"old").unwrap();
        let open_unshared = || {
            std::fs::OpenOptions::new()
                .read(true)
                .share_mode(1) // FILE_SHARE_READ only: no delete, so no rename over it
                .open(&path)
                .unwrap()
        };
        let held = open_unshared();
        let release = std::thread::spawn(move || {
            std::thread::sleep(std::time::Duration::from_millis(300));
            drop(held);
        });
        write_bytes(&path, b"new").unwrap();
        release.join().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");

        let held = open_unshared();
        let err = write_bytes(&path, b"newer").unwrap_err();
        drop(held);
        let text = format!("{err:#}");
        assert!(
            text.contains("held.json") && text.contains("keeps it open"),
            "{text}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
    }

    #[test]
    fn a_failing_writer_leaves_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keep.csv");
        write_bytes(&path, b"old").unwrap();
        let err = write_with(&path, ".csv", |writer| {
            writer.write_all(b"half")?;
            anyhow::bail!("disk full")
        })
        .unwrap_err();
        assert!(format!("{err:#}").contains("keep.csv"), "{err:#}");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }
}
