//! Reading safetensors files into f32 host tensors.
//!
//! Weights may be stored as F32, F16 or BF16; they are widened to f32 on load
//! (the engine computes in f32 throughout). The file is read whole: ViT-S/16 is
//! 87 MB in f32, and reading avoids keeping a mapping alive for the model's life.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};

/// A dense f32 tensor in row-major order.
#[derive(Debug, Clone, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl HostTensor {
    pub fn new(shape: Vec<usize>, data: Vec<f32>) -> Self {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len());
        HostTensor { shape, data }
    }
}

/// All tensors of one safetensors file, widened to f32, with the file's metadata.
#[derive(Debug, Clone)]
pub struct TensorFile {
    pub path: PathBuf,
    pub tensors: HashMap<String, HostTensor>,
    pub metadata: HashMap<String, String>,
}

impl TensorFile {
    /// Reads and widens every tensor of `path`.
    ///
    /// # Errors
    /// [`Error::Io`] when the file cannot be read, [`Error::Format`] when it is not a
    /// valid safetensors file, [`Error::UnsupportedDtype`] for dtypes other than
    /// F32/F16/BF16.
    pub fn read(path: &Path) -> Result<TensorFile> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&bytes, path)
    }

    /// Parses safetensors bytes; `path` is only used in error messages.
    pub fn parse(bytes: &[u8], path: &Path) -> Result<TensorFile> {
        let bad = |e: safetensors::SafeTensorError| {
            Error::format(path, format!("not a valid safetensors file: {e}"))
        };
        let (_, header) = SafeTensors::read_metadata(bytes).map_err(bad)?;
        let metadata = header.metadata().clone().unwrap_or_default();
        let file = SafeTensors::deserialize(bytes).map_err(bad)?;
        let mut tensors = HashMap::new();
        for (name, view) in file.iter() {
            let data =
                widen(view.data(), view.dtype())?.ok_or_else(|| Error::UnsupportedDtype {
                    path: path.to_path_buf(),
                    key: name.to_string(),
                    dtype: format!("{:?}", view.dtype()),
                })?;
            tensors.insert(
                name.to_string(),
                HostTensor::new(view.shape().to_vec(), data),
            );
        }
        Ok(TensorFile {
            path: path.to_path_buf(),
            tensors,
            metadata,
        })
    }
}

/// Little-endian bytes of `dtype` to f32; `None` for unsupported dtypes. The
/// f32 buffer (up to twice the stored bytes) is reserved without aborting.
fn widen(bytes: &[u8], dtype: Dtype) -> Result<Option<Vec<f32>>> {
    let width = match dtype {
        Dtype::F32 => 4,
        Dtype::F16 | Dtype::BF16 => 2,
        _ => return Ok(None),
    };
    let mut out = crate::limits::try_with_capacity(bytes.len() / width, "model weights")?;
    let pairs = || {
        bytes
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
    };
    match dtype {
        Dtype::F32 => out.extend(
            bytes
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        ),
        Dtype::F16 => out.extend(pairs().map(|b| half::f16::from_bits(b).to_f32())),
        _ => out.extend(pairs().map(|b| half::bf16::from_bits(b).to_f32())),
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widens_half_types_exactly() {
        // 1.5 is exact in both f16 (0x3E00) and bf16 (0x3FC0).
        assert_eq!(
            widen(&0x3E00u16.to_le_bytes(), Dtype::F16).unwrap(),
            Some(vec![1.5])
        );
        assert_eq!(
            widen(&0x3FC0u16.to_le_bytes(), Dtype::BF16).unwrap(),
            Some(vec![1.5])
        );
        assert_eq!(widen(&[0u8; 8], Dtype::F64).unwrap(), None);
    }

    #[test]
    fn garbage_is_a_format_error() {
        let err = TensorFile::parse(b"not a file", Path::new("x.safetensors")).unwrap_err();
        assert!(matches!(err, Error::Format { .. }), "{err}");
    }
}
