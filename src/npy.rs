//! `.npy` reading and writing with the crate's errors (wraps `ndarray-npy`).

use std::fs::File;
use std::io::{BufWriter, Read, Seek, SeekFrom};
use std::path::Path;

use ndarray::{ArrayBase, ArrayD, Data, Dimension};
use ndarray_npy::{WritableElement, WriteNpyExt};

use crate::error::{Error, Result};

/// Reads a float32 array of any rank (little- or big-endian, C or Fortran order).
///
/// The header is checked before anything is allocated: its element count against
/// [`crate::limits::Limits::npy_elements`], and its data length against the file's.
/// The one buffer (the array's own) is reserved with `try_reserve`.
///
/// # Errors
/// [`Error::Io`] when unreadable, [`Error::Format`] when not a float32 .npy or
/// its length differs from what its header says, [`Error::LimitExceeded`] when
/// too large, [`Error::OutOfMemory`] when the process cannot hold it.
pub fn read_f32(path: &Path) -> Result<ArrayD<f32>> {
    let mut file = File::open(path).map_err(|e| Error::io(path, e))?;
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut head = Vec::with_capacity(4096);
    (&mut file)
        .take(1 << 16)
        .read_to_end(&mut head)
        .map_err(|e| Error::io(path, e))?;
    let header = crate::npy_header::parse(&head)
        .map_err(|reason| Error::format(path, format!("not a float32 .npy array: {reason}")))?;
    let (header_len, elements) = (header.data_offset, header.elements);
    crate::limits::check("npy_elements", elements)?;
    let data_len = elements.saturating_mul(4);
    if header_len.saturating_add(data_len) != file_len {
        return Err(Error::format(
            path,
            format!(
                "the .npy header declares {elements} float32 elements ({data_len} bytes), but the file holds {} bytes after its header",
                file_len.saturating_sub(header_len)
            ),
        ));
    }
    // Below the npy_elements limit, so the sizes fit in usize.
    let shape: Vec<usize> = header.shape.iter().map(|&d| d as usize).collect();
    let mut data = crate::limits::try_vec(elements as usize, 0f32, "the .npy array")?;
    // SAFETY: f32 has no padding and every byte pattern is a valid f32; the byte
    // view covers exactly the vector's initialised elements.
    let bytes =
        unsafe { std::slice::from_raw_parts_mut(data.as_mut_ptr().cast::<u8>(), data.len() * 4) };
    file.seek(SeekFrom::Start(header_len))
        .and_then(|_| file.read_exact(bytes))
        .map_err(|e| Error::io(path, e))?;
    let from_bytes = if header.big_endian {
        f32::from_be_bytes
    } else {
        f32::from_le_bytes
    };
    for v in &mut data {
        *v = from_bytes(v.to_ne_bytes());
    }
    let shaped = ndarray::ShapeBuilder::set_f(ndarray::IxDyn(&shape), header.fortran_order);
    ArrayD::from_shape_vec(shaped, data)
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A version-1 `.npy` file: the header dict padded with spaces to a
    /// multiple of 64 bytes and ended by a newline, then the data.
    fn npy_bytes(descr: &str, fortran: bool, shape: &str, data: &[u8]) -> Vec<u8> {
        let f = if fortran { "True" } else { "False" };
        let mut dict = format!("{{'descr': '{descr}', 'fortran_order': {f}, 'shape': {shape}, }}");
        while (10 + dict.len() + 1) % 64 != 0 {
            dict.push(' ');
        }
        dict.push('\n');
        let mut v = b"\x93NUMPY\x01\x00".to_vec();
        v.extend_from_slice(&(dict.len() as u16).to_le_bytes());
        v.extend_from_slice(dict.as_bytes());
        v.extend_from_slice(data);
        v
    }

    #[test]
    fn byte_orders_and_layouts() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.npy");
        let values = [1f32, 2.0, 3.0, 4.0, 5.0, 6.0];
        let expected = ndarray::arr2(&[[1f32, 2.0, 3.0], [4.0, 5.0, 6.0]]).into_dyn();
        // C order, little-endian: what `write` produces.
        write(&p, &expected).unwrap();
        assert_eq!(read_f32(&p).unwrap(), expected);
        // Fortran order, big-endian: the same array stored column by column.
        let column_major: Vec<u8> = [0usize, 3, 1, 4, 2, 5]
            .iter()
            .flat_map(|&i| values[i].to_be_bytes())
            .collect();
        std::fs::write(&p, npy_bytes(">f4", true, "(2, 3)", &column_major)).unwrap();
        assert_eq!(read_f32(&p).unwrap(), expected);
        // A byte too many or too few is refused.
        let le: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        for data in [&le[..23], &[&le[..], &[0u8][..]].concat()[..]] {
            std::fs::write(&p, npy_bytes("<f4", false, "(2, 3)", data)).unwrap();
            assert!(matches!(read_f32(&p), Err(Error::Format { .. })));
        }
    }
}
