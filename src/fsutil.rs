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

/// Writes several files all or none: each is written under a temporary name
/// first, and only when every one is complete are they renamed into place. A
/// target that is a folder is refused before anything is renamed. On a failure
/// the temporary files are removed and every target is left as it was.
///
/// # Errors
/// [`Error::Io`] naming the file that could not be written or renamed.
pub fn write_files_atomic(files: &[(&Path, &[u8])]) -> Result<()> {
    let mut staged: Vec<(PathBuf, &Path)> = Vec::with_capacity(files.len());
    let discard = |staged: &[(PathBuf, &Path)]| {
        for (tmp, _) in staged {
            let _ = std::fs::remove_file(tmp);
        }
    };
    for &(path, bytes) in files {
        if path.is_dir() {
            discard(&staged);
            return Err(Error::io(
                path,
                std::io::Error::new(std::io::ErrorKind::IsADirectory, "is a folder"),
            ));
        }
        let tmp = temp_sibling(path);
        let written = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .and_then(|mut f| {
                std::io::Write::write_all(&mut f, bytes)?;
                f.sync_data()
            });
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            discard(&staged);
            return Err(Error::io(path, e));
        }
        staged.push((tmp, path));
    }
    for (i, (tmp, path)) in staged.iter().enumerate() {
        if let Err(e) = std::fs::rename(tmp, path) {
            discard(&staged[i..]);
            return Err(Error::io(path, e));
        }
    }
    Ok(())
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
    dirs: Vec<PathBuf>,
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

    /// Runs `write`, an atomic writer of `path` (such as
    /// `render::write_mask_png`), remembering `path` if it did not exist before.
    ///
    /// # Errors
    /// Whatever `write` returns.
    pub fn track(&mut self, path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
        let existed = path.symlink_metadata().is_ok();
        write(path)?;
        if !existed {
            self.paths.push(path.to_path_buf());
        }
        Ok(())
    }

    /// Records a file this run created by other means.
    pub fn record(&mut self, path: &Path) {
        self.paths.push(path.to_path_buf());
    }

    /// Creates `dir` and its missing parents, remembering those it created (they
    /// are removed on failure if they are empty by then).
    ///
    /// # Errors
    /// [`Error::Io`] when a folder cannot be created.
    pub fn create_dir_all(&mut self, dir: &Path) -> Result<()> {
        let mut missing = Vec::new();
        let mut d = Some(dir);
        while let Some(p) = d.filter(|p| !p.as_os_str().is_empty() && !p.exists()) {
            missing.push(p.to_path_buf());
            d = p.parent();
        }
        for p in missing.into_iter().rev() {
            match std::fs::create_dir(&p) {
                Ok(()) => self.dirs.push(p),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(Error::io(&p, e)),
            }
        }
        Ok(())
    }

    /// Removes every file recorded here, then every folder this run created
    /// that is empty by then (the run failed).
    pub fn remove_all(&mut self) {
        for p in self.paths.drain(..).rev() {
            let _ = std::fs::remove_file(p);
        }
        for d in self.dirs.drain(..).rev() {
            let _ = std::fs::remove_dir(d);
        }
    }

    /// Forgets the files (the run succeeded).
    pub fn keep(&mut self) {
        self.paths.clear();
        self.dirs.clear();
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
    fn several_files_all_or_none() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.json"), dir.path().join("b.md"));
        std::fs::write(&a, b"old").unwrap();
        std::fs::create_dir(&b).unwrap();
        assert!(write_files_atomic(&[(&a, b"new"), (&b, b"new")]).is_err());
        assert_eq!(std::fs::read(&a).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
        std::fs::remove_dir(&b).unwrap();
        write_files_atomic(&[(&a, b"new"), (&b, b"md")]).unwrap();
        assert_eq!(std::fs::read(&a).unwrap(), b"new");
        assert_eq!(std::fs::read(&b).unwrap(), b"md");
    }

    #[test]
    fn a_failed_run_removes_only_what_it_created() {
        let dir = tempfile::tempdir().unwrap();
        let old = dir.path().join("old.txt");
        std::fs::write(&old, b"before").unwrap();
        let mut created = CreatedFiles::new();
        let sub = dir.path().join("x/y");
        created.create_dir_all(&sub).unwrap();
        created
            .write(&sub.join("n.txt"), |f| {
                std::io::Write::write_all(f, b"n").map_err(|e| Error::io(&old, e))
            })
            .unwrap();
        created
            .write(&old, |f| {
                std::io::Write::write_all(f, b"after").map_err(|e| Error::io(&old, e))
            })
            .unwrap();
        created.remove_all();
        assert!(!dir.path().join("x").exists());
        assert_eq!(std::fs::read(&old).unwrap(), b"after");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
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
