//! `.npy` reading and writing with the crate's errors (wraps `ndarray-npy`).

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use ndarray::{ArrayBase, ArrayD, Data, Dimension};
use ndarray_npy::{ReadNpyExt, WritableElement, WriteNpyExt};

use crate::error::{Error, Result};

/// Reads an f32 array of any rank.
///
/// # Errors
/// [`Error::Io`] when unreadable, [`Error::Format`] when not an f32 .npy.
pub fn read_f32(path: &Path) -> Result<ArrayD<f32>> {
    let file = File::open(path).map_err(|e| Error::io(path, e))?;
    ArrayD::<f32>::read_npy(file)
        .map_err(|e| Error::format(path, format!("not a little-endian float32 .npy array: {e}")))
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
    let file = File::create(path).map_err(|e| Error::io(path, e))?;
    array
        .write_npy(BufWriter::new(file))
        .map_err(|e| Error::format(path, format!("cannot write .npy: {e}")))
}
