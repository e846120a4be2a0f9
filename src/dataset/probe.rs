//! Image sizes from file headers, without decoding the pixels (for tiling and for
//! checking that masks match their images).

use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};
use crate::image::{detect_format, ImageFormat};

use super::dicom::{dicom_size, is_dicom};

/// (width, height) of a PNG, JPEG, TIFF or DICOM file.
///
/// # Errors
/// [`Error::Io`] when unreadable; [`Error::Decode`] for an unknown format or a
/// header that does not give the size.
pub fn image_size(path: &Path) -> Result<(u32, u32)> {
    let mut head = Vec::with_capacity(132);
    std::fs::File::open(path)
        .and_then(|f| f.take(132).read_to_end(&mut head))
        .map_err(|e| Error::io(path, e))?;
    let fail = |reason: &str| Error::Decode {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    if is_dicom(&head) {
        return dicom_size(path);
    }
    let (w, h) = match detect_format(&head) {
        Some(ImageFormat::Png) if head.len() >= 24 => Ok((
            u32::from_be_bytes(head[16..20].try_into().expect("4 bytes")),
            u32::from_be_bytes(head[20..24].try_into().expect("4 bytes")),
        )),
        Some(ImageFormat::Jpeg) => {
            let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
            jpeg_size(&bytes).ok_or_else(|| fail("JPEG without a frame header"))
        }
        Some(ImageFormat::Tiff) => image::ImageReader::open(path)
            .map_err(|e| Error::io(path, e))?
            .with_guessed_format()
            .map_err(|e| Error::io(path, e))?
            .into_dimensions()
            .map_err(|e| fail(&e.to_string())),
        _ => Err(fail(
            "unrecognised format: expected PNG, JPEG, TIFF or DICOM",
        )),
    }?;
    crate::limits::check_product("image_pixels", &[u64::from(w), u64::from(h)])?;
    Ok((w, h))
}

/// Walks the JPEG markers to the first start-of-frame (SOF0..SOF15 but DHT, JPG, DAC).
fn jpeg_size(b: &[u8]) -> Option<(u32, u32)> {
    let mut i = 2;
    while i + 4 <= b.len() {
        if b[i] != 0xFF {
            return None;
        }
        let marker = b[i + 1];
        if marker == 0xFF {
            i += 1;
            continue;
        }
        let len = u16::from_be_bytes([b[i + 2], b[i + 3]]) as usize;
        let is_sof = (0xC0..=0xCF).contains(&marker) && ![0xC4, 0xC8, 0xCC].contains(&marker);
        if is_sof && i + 9 <= b.len() {
            let h = u16::from_be_bytes([b[i + 5], b[i + 6]]) as u32;
            let w = u16::from_be_bytes([b[i + 7], b[i + 8]]) as u32;
            return Some((w, h));
        }
        i += 2 + len;
    }
    None
}
