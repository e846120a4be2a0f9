//! `.npy` reading and writing with the crate's errors (wraps `ndarray-npy`).

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom};
use std::path::Path;

use ndarray::{ArrayBase, ArrayD, Data, Dimension};
use ndarray_npy::{ReadNpyExt, WritableElement, WriteNpyExt};

use crate::error::{Error, Result};

/// Reads a float32 array of any rank (little- or big-endian, C or Fortran order).
///
/// The header is checked before anything is allocated: its element count against
/// [`crate::limits::Limits::npy_elements`], and its data length against the file's.
///
/// # Errors
/// [`Error::Io`] when unreadable, [`Error::Format`] when not a float32 .npy or
/// shorter than its header says, [`Error::LimitExceeded`] when too large.
pub fn read_f32(path: &Path) -> Result<ArrayD<f32>> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut head = Vec::with_capacity(4096);
    (&mut file)
        .take(1 << 16)
        .read_to_end(&mut head)
        .map_err(|e| Error::io(path, e))?;
    let (header_len, elements) = crate::npy_header::parse(&head)
        .map_err(|reason| Error::format(path, format!("not a float32 .npy array: {reason}")))?;
    crate::limits::check("npy_elements", elements)?;
    let data_len = elements.checked_mul(4).unwrap_or(u64::MAX);
    if header_len.saturating_add(data_len) > file_len {
        return Err(Error::format(
            path,
            format!(
                "the .npy header declares {elements} float32 elements ({data_len} bytes), but the file holds {} bytes after its header",
                file_len.saturating_sub(header_len)
            ),
        ));
    }
    file.seek(SeekFrom::Start(0))
        .map_err(|e| Error::io(path, e))?;
    ArrayD::<f32>::read_npy(file)
        .map_err(|e| Error::format(path, format!("not a float32 .npy array: {e}")))
}

/// Writes an array as .npy.
///
/// # Errors
/// [`Error::Io`] / [`Error::Format`] when the file cannot be written.
pub fn write<A, S, D>(path: &Path, array: &ArrayBase<S, D>) -> Result<()>
where
    A: WritableElement,
    S: Data<Elem = A>,
    D: Dimension,
{
    crate::fsutil::write_atomic(path, |file| {
        array
            .write_npy(BufWriter::new(file))
            .map_err(|e| Error::format(path, format!("cannot write .npy: {e}")))
    })
}
