//! Output files written whole or not at all (`bank account export -o`, `bank backup -o`, the
//! `--html` pages of `bank check` and `bank bench`): the
//! bytes go to `FILE.partial` beside FILE, which is flushed, synced, optionally checked, and
//! only then renamed over FILE, and the directory synced. A failure at any step removes the
//! partial file, so FILE is never left half-written.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

const WRITE_BUFFER_BYTES: usize = 1024 * 1024;

/// An output file being written; see the module documentation.
pub struct PartialFile {
    path: PathBuf,
    partial: PathBuf,
    out: BufWriter<File>,
    /// Whether the partial file was renamed into place (then there is nothing to remove).
    done: bool,
}

impl PartialFile {
    /// Starts writing `path` (as `path.partial`).
    pub fn create(path: &Path) -> Result<PartialFile> {
        let name = path
            .file_name()
            .with_context(|| format!("{}: names no file", path.display()))?;
        let mut partial_name = name.to_os_string();
        partial_name.push(".partial");
        let partial = path.with_file_name(partial_name);
        let file = File::create(&partial)
            .with_context(|| format!("cannot create {}", partial.display()))?;
        Ok(PartialFile {
            path: path.to_path_buf(),
            partial,
            out: BufWriter::with_capacity(WRITE_BUFFER_BYTES, file),
            done: false,
        })
    }

    /// Where the bytes go until [`PartialFile::finish`].
    pub fn out(&mut self) -> &mut BufWriter<File> {
        &mut self.out
    }

    /// Flushes and syncs the partial file, runs `check` on it (e.g. reads it back), and only
    /// if that passes renames it over the final path and syncs the directory.
    pub fn finish<T>(mut self, check: impl FnOnce(&Path) -> Result<T>) -> Result<T> {
        let partial = self.partial.clone();
        self.out
            .flush()
            .and_then(|()| self.out.get_ref().sync_all())
            .with_context(|| format!("cannot write {}", partial.display()))?;
        let checked = check(&partial)?;
        std::fs::rename(&partial, &self.path).with_context(|| {
            format!(
                "cannot rename {} to {}",
                partial.display(),
                self.path.display()
            )
        })?;
        self.done = true;
        let dir = match self.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir,
            _ => Path::new("."),
        };
        File::open(dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("cannot sync directory {}", dir.display()))?;
        Ok(checked)
    }
}

/// Writes `bytes` to `path` whole or not at all (through a [`PartialFile`]).
pub fn write_whole(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = PartialFile::create(path)?;
    file.out()
        .write_all(bytes)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.finish(|_| Ok(()))
}

/// Writes several files that belong together (Project 2's three parts): every one is written
/// and synced as a partial file before the first is renamed into place, so a failure while
/// writing leaves none of them.
pub fn write_all_whole(files: &[(PathBuf, Vec<u8>)]) -> Result<()> {
    let mut partials = Vec::with_capacity(files.len());
    for (path, bytes) in files {
        let mut file = PartialFile::create(path)?;
        file.out()
            .write_all(bytes)
            .with_context(|| format!("cannot write {}", path.display()))?;
        partials.push(file);
    }
    for file in partials {
        file.finish(|_| Ok(()))?;
    }
    Ok(())
}

impl Drop for PartialFile {
    fn drop(&mut self) {
        if !self.done {
            // Best effort: a partial file is never left behind as if it were output.
            let _ = std::fs::remove_file(&self.partial);
        }
    }
}
