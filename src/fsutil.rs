//! Output files that are never half-written and never destroy what was there:
//! every file is written under a temporary name in its target folder and renamed
//! over the target only once complete; names taken from input files are
//! sanitised so that no output escapes its folder.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A temporary sibling of `path`: `.tmp-<pid>-<n>-<name>` in the same folder (so
/// that the final rename stays within one file system; the name keeps its
/// extension, which some writers check).
pub fn temp_sibling(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    path.with_file_name(format!(".tmp-{}-{n}-{name}", std::process::id()))
}

/// Writes `path` atomically: `write` fills a new temporary file next to it, which
/// then replaces `path` by a rename. On any error the temporary file is removed
/// and `path` is left as it was (absent, or with its old content).
///
/// # Errors
/// [`Error::Io`] when the temporary file cannot be created or renamed; whatever
/// `write` returns.
pub fn write_atomic(path: &Path, write: impl FnOnce(&mut File) -> Result<()>) -> Result<()> {
    let tmp = temp_sibling(path);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| Error::io(path, e))?;
    let result = write(&mut file).and_then(|()| file.sync_data().map_err(|e| Error::io(path, e)));
    drop(file);
    let result = result.and_then(|()| std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e)));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// [`write_atomic`] of a byte buffer.
///
/// # Errors
/// As for [`write_atomic`].
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, |f| {
        std::io::Write::write_all(f, bytes).map_err(|e| Error::io(path, e))
    })
}

/// An identifier (taken from a file name or a CSV cell) made safe as one path
/// component: path separators, `..`, leading dots, control characters and
/// characters that are special on common file systems become `_`; an empty
/// result becomes `_`. Ordinary ids (letters, digits, `-`, `_`, inner dots)
/// are unchanged.
pub fn sanitize_id(id: &str) -> String {
    let mut s: String = id
        .chars()
        .map(|c| match c {
            '/' | '\\' | ':' | '*' | '?' | '"' | '<' | '>' | '|' => '_',
            c if c.is_control() => '_',
            c => c,
        })
        .collect();
    // No component may be "." or ".." or start with a dot (hidden files,
    // and "..png"-style names that resolve outside the folder).
    let dots = s.len() - s.trim_start_matches('.').len();
    s.replace_range(..dots, &"_".repeat(dots));
    if s.is_empty() {
        s.push('_');
    }
    s
}

/// Refuses, before anything is created, a path whose extension is not `ext`
/// (compared without case).
///
/// # Errors
/// [`Error::InvalidParam`] naming the path.
pub fn require_extension(path: &Path, ext: &str) -> Result<()> {
    let ok = path
        .extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case(ext));
    if ok {
        Ok(())
    } else {
        Err(Error::param(
            "output path",
            format!("{}: only .{ext} files are written here", path.display()),
        ))
    }
}

/// Files a run has created, removed again (only those) when the run fails.
#[derive(Debug, Default)]
pub struct CreatedFiles {
    paths: Vec<PathBuf>,
}

impl CreatedFiles {
    /// Nothing created yet.
    pub fn new() -> Self {
        CreatedFiles::default()
    }

    /// Writes `path` atomically with `write`, remembering it if it did not exist
    /// before (an existing file is replaced on success, never removed on failure).
    ///
    /// # Errors
    /// As for [`write_atomic`].
    pub fn write(
        &mut self,
        path: &Path,
        write: impl FnOnce(&mut File) -> Result<()>,
    ) -> Result<()> {
        let existed = path.symlink_metadata().is_ok();
        write_atomic(path, write)?;
        if !existed {
            self.paths.push(path.to_path_buf());
        }
        Ok(())
    }

    /// Records a file this run created by other means.
    pub fn record(&mut self, path: &Path) {
        self.paths.push(path.to_path_buf());
    }

    /// Removes every file recorded here (the run failed).
    pub fn remove_all(&mut self) {
        for p in self.paths.drain(..).rev() {
            let _ = std::fs::remove_file(p);
        }
    }

    /// Forgets the files (the run succeeded).
    pub fn keep(&mut self) {
        self.paths.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_cannot_escape() {
        assert_eq!(sanitize_id("case_01"), "case_01");
        assert_eq!(sanitize_id("a.b"), "a.b");
        assert_eq!(sanitize_id(".."), "__");
        assert_eq!(sanitize_id("..png"), "__png");
        assert_eq!(sanitize_id("../x"), "___x");
        assert_eq!(sanitize_id(""), "_");
        assert_eq!(sanitize_id("a/b\\c"), "a_b_c");
    }

    #[test]
    fn atomic_write_keeps_the_old_file_on_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.bin");
        std::fs::write(&p, b"old").unwrap();
        let r = write_atomic(&p, |_| Err(Error::Internal("no".into())));
        assert!(r.is_err());
        assert_eq!(std::fs::read(&p).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        write_bytes_atomic(&p, b"new").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
    }
}
