//! DICOM images (CBIS-DDSM's mammograms and ROI masks) through dicom-rs.
//!
//! Only native (uncompressed) pixel data is decoded; that is what CBIS-DDSM ships.
//! The stored values of frame 0 are scaled from their bit range (`BitsStored`) to
//! the full 8- or 16-bit range, with MONOCHROME1 inverted so that bright means
//! dense, as on MONOCHROME2. No modality or VOI LUT is applied: windowing is a
//! display choice that the classifier's training pipeline must make the same way.

use std::path::Path;

use crate::error::{Error, Result};
use crate::image::DecodedImage;

/// True when `prefix` (the first 132 bytes or more of a file) has the DICOM
/// preamble and `DICM` magic.
pub(crate) fn is_dicom(prefix: &[u8]) -> bool {
    prefix.len() >= 132 && &prefix[128..132] == b"DICM"
}

#[cfg(not(feature = "dicom"))]
fn not_compiled(path: &Path) -> Error {
    Error::format(
        path,
        "this is a DICOM file, but explainseg was built without the `dicom` feature",
    )
}

/// Decodes a DICOM file into RGB (gray replicated to three channels).
///
/// # Errors
/// [`Error::Decode`] for an unreadable or compressed file, or an unsupported
/// sample layout; [`Error::Format`] when the `dicom` feature is off.
#[cfg(not(feature = "dicom"))]
pub(crate) fn read_dicom(path: &Path) -> Result<DecodedImage> {
    Err(not_compiled(path))
}

/// (width, height) from the header, without decoding the pixels.
#[cfg(not(feature = "dicom"))]
pub(crate) fn dicom_size(path: &Path) -> Result<(u32, u32)> {
    Err(not_compiled(path))
}

#[cfg(feature = "dicom")]
pub(crate) use with_dicom::{dicom_size, read_dicom};

#[cfg(feature = "dicom")]
mod with_dicom {
    use super::*;
    use crate::image::Pixels;
    use dicom_object::{OpenFileOptions, Tag};
    use dicom_pixeldata::{ConvertOptions, ModalityLutOption, PixelDecoder, PixelRepresentation};

    const ROWS: Tag = Tag(0x0028, 0x0010);
    const COLUMNS: Tag = Tag(0x0028, 0x0011);
    const PIXEL_DATA: Tag = Tag(0x7FE0, 0x0010);

    fn fail(path: &Path, reason: impl std::fmt::Display) -> Error {
        Error::Decode {
            path: path.to_path_buf(),
            reason: format!("DICOM: {reason}"),
        }
    }

    pub(crate) fn dicom_size(path: &Path) -> Result<(u32, u32)> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        check_element_lengths(&bytes).map_err(|reason| fail(path, reason))?;
        drop(bytes);
        let obj = OpenFileOptions::new()
            .read_until(PIXEL_DATA)
            .open_file(path)
            .map_err(|e| fail(path, e))?;
        let get = |tag: Tag, name: &str| -> Result<u32> {
            obj.element(tag)
                .map_err(|e| fail(path, format!("{name}: {e}")))?
                .to_int::<u32>()
                .map_err(|e| fail(path, format!("{name}: {e}")))
        };
        let (w, h) = (get(COLUMNS, "Columns")?, get(ROWS, "Rows")?);
        crate::limits::check_product("image_pixels", &[u64::from(w), u64::from(h)])?;
        Ok((w, h))
    }

    /// Checks the header against the limits and the PixelData element against the
    /// file before anything is decoded: the parser allocates the declared length.
    fn precheck(path: &Path) -> Result<()> {
        let strict = !crate::limits::lenient();
        // Every element length against the file first: the parser reserves
        // (and zeroes) what an element declares before reading it.
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        check_element_lengths(&bytes).map_err(|reason| fail(path, reason))?;
        let head = OpenFileOptions::new()
            .read_until(PIXEL_DATA)
            .open_file(path)
            .map_err(|e| fail(path, e))?;
        let get = |tag: Tag, name: &str| -> Result<u64> {
            head.element(tag)
                .map_err(|e| fail(path, format!("{name}: {e}")))?
                .to_int::<u64>()
                .map_err(|e| fail(path, format!("{name}: {e}")))
        };
        let (rows, cols) = (get(ROWS, "Rows")?, get(COLUMNS, "Columns")?);
        let spp = get(Tag(0x0028, 0x0002), "SamplesPerPixel").unwrap_or(1);
        let bits_alloc = get(Tag(0x0028, 0x0100), "BitsAllocated")?;
        let bits_stored = get(Tag(0x0028, 0x0101), "BitsStored").unwrap_or(bits_alloc);
        if rows == 0 || cols == 0 {
            return Err(fail(path, format!("empty image {cols}x{rows}")));
        }
        if !(1..=16).contains(&bits_stored) || bits_stored > bits_alloc.max(1) {
            if strict {
                return Err(fail(
                    path,
                    format!("BitsStored {bits_stored} is not in 1..=BitsAllocated ({bits_alloc}); pass --lenient to accept it"),
                ));
            }
        }
        let pixels = crate::limits::check_product("image_pixels", &[rows, cols])?;
        let expected = crate::limits::check_product(
            "decoded_bytes",
            &[pixels, spp.max(1), bits_alloc.max(1).div_ceil(8)],
        )?;
        // 8 bytes per sample: the f64 frame the converter builds.
        crate::limits::check_product("decoded_bytes", &[pixels, spp.max(1), 8])?;
        let Some((at, declared)) = pixel_data_length(&bytes) else {
            return Err(fail(path, "no PixelData element"));
        };
        if declared == u32::MAX {
            return Ok(()); // encapsulated: refused later as compressed
        }
        let available = bytes.len().saturating_sub(at) as u64;
        if u64::from(declared) > available {
            return Err(fail(
                path,
                format!(
                    "PixelData declares {declared} bytes, but the file holds {available} after it"
                ),
            ));
        }
        let even = expected + (expected & 1);
        if strict && u64::from(declared) != expected && u64::from(declared) != even {
            return Err(fail(
                path,
                format!(
                    "PixelData holds {declared} bytes, but rows × columns × samples × bytes = {rows} × {cols} × {spp} × {} = {expected}; pass --lenient to accept it",
                    bits_alloc.div_ceil(8)
                ),
            ));
        }
        Ok(())
    }

    /// Walks the elements (file meta group, then the data set in its transfer
    /// syntax: explicit or implicit VR, little or big endian; into sequences and
    /// items of undefined length) and checks that no defined length runs past the
    /// end of the file and that every explicit VR is well formed, up to the end of
    /// the file (elements after PixelData included: the parser reads them too).
    /// Accepts a deflated data set unchecked. A fuzzer found small files whose broken layout made
    /// the parser spend seconds and a gigabyte; they are refused here.
    pub(super) fn check_element_lengths(b: &[u8]) -> std::result::Result<(), String> {
        const LONG: [&[u8; 2]; 13] = [
            b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"OD", b"OL", b"UC", b"UR", b"OV", b"SV",
            b"UV",
        ];
        let mut pos = 132usize;
        let mut explicit = true;
        let mut big = false;
        let mut in_meta = true;
        let mut syntax = String::new();
        while pos + 8 <= b.len() {
            let u16_at = |o: usize, big: bool| {
                let s = [b[o], b[o + 1]];
                if big {
                    u16::from_be_bytes(s)
                } else {
                    u16::from_le_bytes(s)
                }
            };
            // The file meta group is always explicit VR little endian.
            let group_le = u16::from_le_bytes([b[pos], b[pos + 1]]);
            if in_meta && group_le != 0x0002 {
                in_meta = false;
                match syntax.trim_end_matches(['\0', ' ']) {
                    "1.2.840.10008.1.2" => explicit = false,
                    "1.2.840.10008.1.2.2" => big = true,
                    "1.2.840.10008.1.2.1.99" => return Ok(()), // deflated
                    _ => {}
                }
            }
            let be = big && !in_meta;
            let (group, elem) = (u16_at(pos, be), u16_at(pos + 2, be));
            let (len, header) = if group == 0xFFFE {
                // Item and delimiters: no VR in any syntax, a 4-byte length.
                let s = [b[pos + 4], b[pos + 5], b[pos + 6], b[pos + 7]];
                (
                    if be {
                        u32::from_be_bytes(s)
                    } else {
                        u32::from_le_bytes(s)
                    },
                    8,
                )
            } else if explicit || in_meta {
                let vr = [b[pos + 4], b[pos + 5]];
                if !vr.iter().all(u8::is_ascii_uppercase) {
                    return Err(format!(
                        "element ({group:04X},{elem:04X}) at byte {pos} has no valid VR"
                    ));
                }
                if LONG.contains(&&vr) {
                    if pos + 12 > b.len() {
                        return Err(format!("element ({group:04X},{elem:04X}) is cut off"));
                    }
                    let s = [b[pos + 8], b[pos + 9], b[pos + 10], b[pos + 11]];
                    (
                        if be {
                            u32::from_be_bytes(s)
                        } else {
                            u32::from_le_bytes(s)
                        },
                        12,
                    )
                } else {
                    (u32::from(u16_at(pos + 6, be)), 8)
                }
            } else {
                let s = [b[pos + 4], b[pos + 5], b[pos + 6], b[pos + 7]];
                (
                    if be {
                        u32::from_be_bytes(s)
                    } else {
                        u32::from_le_bytes(s)
                    },
                    8,
                )
            };
            let start = pos + header;
            if len == u32::MAX {
                // A sequence or item of undefined length: walk into it.
                pos = start;
                continue;
            }
            let available = b.len().saturating_sub(start);
            if len as usize > available {
                return Err(format!(
                    "element ({group:04X},{elem:04X}) declares {len} bytes, but the file holds {available} after it"
                ));
            }
            if in_meta && (group, elem) == (0x0002, 0x0010) {
                syntax = String::from_utf8_lossy(&b[start..start + len as usize]).into_owned();
            }
            pos = start + len as usize;
        }
        Ok(())
    }

    /// The offset just after the last PixelData element header and its declared
    /// length (explicit or implicit VR, little- or big-endian).
    fn pixel_data_length(b: &[u8]) -> Option<(usize, u32)> {
        let le = b.windows(4).rposition(|w| w == [0xE0, 0x7F, 0x10, 0x00]);
        let be = b.windows(4).rposition(|w| w == [0x7F, 0xE0, 0x00, 0x10]);
        let (pos, big) = match (le, be) {
            (Some(l), Some(g)) if g > l => (g, true),
            (Some(l), _) => (l, false),
            (None, Some(g)) => (g, true),
            (None, None) => return None,
        };
        let rd = |o: usize| -> Option<u32> {
            let s: [u8; 4] = b.get(o..o + 4)?.try_into().ok()?;
            Some(if big {
                u32::from_be_bytes(s)
            } else {
                u32::from_le_bytes(s)
            })
        };
        let vr = b.get(pos + 4..pos + 6)?;
        if vr.iter().all(u8::is_ascii_uppercase) {
            // Explicit VR: OB/OW/UN have 2 reserved bytes and a 4-byte length.
            Some((pos + 12, rd(pos + 8)?))
        } else {
            Some((pos + 8, rd(pos + 4)?))
        }
    }

    pub(crate) fn read_dicom(path: &Path) -> Result<DecodedImage> {
        precheck(path)?;
        let obj = dicom_object::open_file(path).map_err(|e| fail(path, e))?;
        let px = obj.decode_pixel_data().map_err(|e| fail(path, e))?;
        let (w, h) = (px.columns(), px.rows());
        let spp = px.samples_per_pixel() as usize;
        if spp != 1 && spp != 3 {
            return Err(fail(
                path,
                format!("{spp} samples per pixel (expected 1 or 3)"),
            ));
        }
        let raw = ConvertOptions::new().with_modality_lut(ModalityLutOption::None);
        let values: Vec<f64> = px
            .to_vec_frame_with_options(0, &raw)
            .map_err(|e| fail(path, e))?;
        if values.len() != w as usize * h as usize * spp {
            return Err(fail(
                path,
                format!("{} samples for {w}x{h}x{spp}", values.len()),
            ));
        }
        let bits = u32::from(px.bits_stored().clamp(1, 16));
        let (lo, hi) = if px.pixel_representation() == PixelRepresentation::Signed {
            (
                -(2f64.powi(bits as i32 - 1)),
                2f64.powi(bits as i32 - 1) - 1.0,
            )
        } else {
            (0.0, 2f64.powi(bits as i32) - 1.0)
        };
        let invert = px.photometric_interpretation().to_string() == "MONOCHROME1";
        let unit = |v: f64| {
            let t = ((v - lo) / (hi - lo)).clamp(0.0, 1.0);
            if invert {
                1.0 - t
            } else {
                t
            }
        };
        let rgb = |i: usize, c: usize| values[if spp == 1 { i } else { i * 3 + c }];
        let n = w as usize * h as usize;
        let pixels = if px.bits_allocated() <= 8 {
            Pixels::U8(
                (0..n * 3)
                    .map(|k| (unit(rgb(k / 3, k % 3)) * 255.0).round() as u8)
                    .collect(),
            )
        } else {
            Pixels::U16(
                (0..n * 3)
                    .map(|k| (unit(rgb(k / 3, k % 3)) * 65535.0).round() as u16)
                    .collect(),
            )
        };
        DecodedImage::new(w, h, pixels)
    }
}

#[cfg(all(test, feature = "dicom"))]
mod tests {
    use super::with_dicom::check_element_lengths;

    fn fixture(name: &str) -> Vec<u8> {
        std::fs::read(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/dataset")
                .join(name),
        )
        .unwrap()
    }

    #[test]
    fn element_lengths_of_real_files_pass_and_lies_fail() {
        for name in [
            "mammo_16bit.dcm",
            "mammo_mono1.dcm",
            "roi_crop_8bit.dcm",
            "roi_mask_8bit.dcm",
        ] {
            let b = fixture(name);
            assert_eq!(check_element_lengths(&b), Ok(()), "{name}");
            // PixelData declaring 0xFFFFFFF0 bytes is left to the PixelData check;
            // any other element that lies about its length is refused here.
            let mut lie = b.clone();
            // (0028,0010) Rows, US, length 2 → 0xFFFF.
            if let Some(at) = lie.windows(4).position(|w| w == [0x28, 0x00, 0x10, 0x00]) {
                lie[at + 6] = 0xFF;
                lie[at + 7] = 0xFF;
                assert!(check_element_lengths(&lie).is_err(), "{name}");
            }
        }
    }
}
