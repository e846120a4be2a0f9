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
        walk_elements(&bytes).map_err(|reason| fail(path, reason))?;
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

    /// Frame 0 as the header describes it, checked against the limits and the
    /// file: where its samples lie in the file's bytes and how to read them.
    struct Frame {
        rows: u32,
        cols: u32,
        samples_per_pixel: usize,
        bits_allocated: u64,
        bits_stored: u64,
        signed: bool,
        monochrome1: bool,
        big_endian: bool,
        /// Byte range of frame 0's samples in the file.
        data: std::ops::Range<usize>,
    }

    /// Reads and checks the header of the file whose bytes are `bytes` before
    /// any pixel is touched: every element length against the file, the sizes
    /// against the limits, the sample layout against what is supported, and (in
    /// strict mode) BitsStored and the PixelData length against the header.
    fn frame(path: &Path, bytes: &[u8]) -> Result<Frame> {
        let strict = !crate::limits::lenient();
        let pixel_data = walk_elements(bytes).map_err(|reason| fail(path, reason))?;
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
        let signed = get(Tag(0x0028, 0x0103), "PixelRepresentation")? == 1;
        let photometric = head
            .element(Tag(0x0028, 0x0004))
            .map_err(|e| fail(path, format!("PhotometricInterpretation: {e}")))?
            .to_str()
            .map_err(|e| fail(path, format!("PhotometricInterpretation: {e}")))?
            .trim_end_matches(['\0', ' '])
            .to_string();
        if rows == 0 || cols == 0 {
            return Err(fail(path, format!("empty image {cols}x{rows}")));
        }
        if (!(1..=16).contains(&bits_stored) || bits_stored > bits_alloc.max(1)) && strict {
            return Err(fail(
                path,
                format!("BitsStored {bits_stored} is not in 1..=BitsAllocated ({bits_alloc}); pass --lenient to accept it"),
            ));
        }
        let pixels = crate::limits::check_product("image_pixels", &[rows, cols])?;
        let expected = crate::limits::check_product(
            "decoded_bytes",
            &[pixels, spp.max(1), bits_alloc.max(1).div_ceil(8)],
        )?;
        // The RGB image made from it: 1 or 2 bytes per sample, three samples.
        crate::limits::check_product(
            "decoded_bytes",
            &[pixels, 3, bits_alloc.max(1).div_ceil(8).min(2)],
        )?;
        let Some((at, declared)) = pixel_data else {
            return Err(fail(path, "no PixelData element"));
        };
        if declared == u32::MAX {
            return Err(fail(
                path,
                "encapsulated (compressed) pixel data is not supported; only native pixel data is read",
            ));
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
        if u64::from(declared) < expected {
            return Err(fail(
                path,
                format!("PixelData holds {declared} bytes, fewer than the {expected} of one frame"),
            ));
        }
        if bits_alloc != 8 && bits_alloc != 16 {
            return Err(fail(
                path,
                format!("BitsAllocated {bits_alloc} is not supported (8 or 16)"),
            ));
        }
        if spp != 1 && spp != 3 {
            return Err(fail(
                path,
                format!("{spp} samples per pixel (expected 1 or 3)"),
            ));
        }
        if spp == 3 && get(Tag(0x0028, 0x0006), "PlanarConfiguration").unwrap_or(0) != 0 {
            return Err(fail(
                path,
                "PlanarConfiguration 1 (colour planes one after the other) is not supported",
            ));
        }
        let big_endian = match head.meta().transfer_syntax() {
            "1.2.840.10008.1.2" | "1.2.840.10008.1.2.1" => false,
            "1.2.840.10008.1.2.2" => true,
            other => {
                return Err(fail(
                    path,
                    format!("transfer syntax {other} is not supported; only native (uncompressed) pixel data is read"),
                ))
            }
        };
        Ok(Frame {
            rows: rows as u32,
            cols: cols as u32,
            samples_per_pixel: spp as usize,
            bits_allocated: bits_alloc,
            bits_stored,
            signed,
            monochrome1: photometric == "MONOCHROME1",
            big_endian,
            data: at..at + expected as usize,
        })
    }

    /// Walks the elements (file meta group, then the data set in its transfer
    /// syntax: explicit or implicit VR, little or big endian; into sequences and
    /// items of undefined length) and checks that no defined length runs past the
    /// end of the file and that every explicit VR is well formed, up to the end of
    /// the file (elements after PixelData included: the parser reads them too).
    /// Accepts a deflated data set unchecked. A fuzzer found small files whose broken layout made
    /// the parser spend seconds and a gigabyte; they are refused here.
    ///
    /// Returns where the value of the last PixelData element starts and its
    /// declared length (the data set's own PixelData follows any icon image's).
    pub(super) fn walk_elements(b: &[u8]) -> std::result::Result<Option<(usize, u32)>, String> {
        // DICOM PS3.5 §6.2, table 6.2-1.
        const VRS: [&[u8; 2]; 34] = [
            b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT",
            b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"PN", b"SH", b"SL", b"SQ", b"SS", b"ST",
            b"SV", b"TM", b"UC", b"UI", b"UL", b"UN", b"UR", b"US", b"UT", b"UV",
        ];
        const LONG: [&[u8; 2]; 13] = [
            b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"OD", b"OL", b"UC", b"UR", b"OV", b"SV",
            b"UV",
        ];
        let mut pos = 132usize;
        let mut explicit = true;
        let mut big = false;
        let mut in_meta = true;
        let mut syntax = String::new();
        let mut pixel_data = None;
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
                    "1.2.840.10008.1.2.1.99" => return Ok(None), // deflated
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
                // Only the standard's VRs: a parser reads an unknown one with a 4-byte
                // length (as UN), so two letters of a mutated file can declare a
                // gigabyte that this walk would have measured as 2 bytes.
                if !VRS.contains(&&vr) {
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
            if !in_meta && (group, elem) == (0x7FE0, 0x0010) {
                pixel_data = Some((start, len));
            }
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
        Ok(pixel_data)
    }

    /// Decodes frame 0 straight from the file's bytes into the RGB image: the
    /// peak is the file plus the image, both checked against the limits before
    /// they are allocated (the image with `try_reserve`).
    pub(crate) fn read_dicom(path: &Path) -> Result<DecodedImage> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        let f = frame(path, &bytes)?;
        let data = &bytes[f.data.clone()];
        let sample = |k: usize| -> f64 {
            if f.bits_allocated == 8 {
                return f64::from(data[k]);
            }
            let b = [data[2 * k], data[2 * k + 1]];
            let u = if f.big_endian {
                u16::from_be_bytes(b)
            } else {
                u16::from_le_bytes(b)
            };
            if f.signed {
                f64::from(u as i16)
            } else {
                f64::from(u)
            }
        };
        // The stored values' range from BitsStored (8-bit samples are read as
        // unsigned bytes whatever PixelRepresentation says).
        let bits = f.bits_stored.clamp(1, 16) as i32;
        let (lo, hi) = if f.signed {
            (-(2f64.powi(bits - 1)), 2f64.powi(bits - 1) - 1.0)
        } else {
            (0.0, 2f64.powi(bits) - 1.0)
        };
        let unit = |v: f64| {
            let t = ((v - lo) / (hi - lo)).clamp(0.0, 1.0);
            if f.monochrome1 {
                1.0 - t
            } else {
                t
            }
        };
        let spp = f.samples_per_pixel;
        let rgb = |k: usize| unit(sample(if spp == 1 { k / 3 } else { k }));
        let n = f.rows as usize * f.cols as usize * 3;
        let pixels = if f.bits_allocated == 8 {
            let mut out = crate::limits::try_with_capacity(n, "the DICOM image")?;
            out.extend((0..n).map(|k| (rgb(k) * 255.0).round() as u8));
            Pixels::U8(out)
        } else {
            let mut out = crate::limits::try_with_capacity(n, "the DICOM image")?;
            out.extend((0..n).map(|k| (rgb(k) * 65535.0).round() as u16));
            Pixels::U16(out)
        };
        drop(bytes);
        DecodedImage::new(f.cols, f.rows, pixels)
    }
}

#[cfg(all(test, feature = "dicom"))]
mod tests {
    use super::with_dicom::walk_elements;

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
            // The fixtures end with PixelData (rows × columns × bytes, even).
            let (at, len) = walk_elements(&b).unwrap().expect(name);
            assert_eq!(at + len as usize, b.len(), "{name}");
            // PixelData declaring 0xFFFFFFF0 bytes is left to the PixelData check;
            // any other element that lies about its length is refused here.
            let mut lie = b.clone();
            // (0028,0010) Rows, US, length 2 → 0xFFFF.
            if let Some(at) = lie.windows(4).position(|w| w == [0x28, 0x00, 0x10, 0x00]) {
                lie[at + 6] = 0xFF;
                lie[at + 7] = 0xFF;
                assert!(walk_elements(&lie).is_err(), "{name}");
            }
            // An unknown VR: the parser would read the next 4 bytes as a length.
            let mut unknown = b.clone();
            let at = unknown
                .windows(6)
                .position(|w| w == [0x28, 0x00, 0x10, 0x00, b'U', b'S'])
                .expect(name);
            unknown[at + 4..at + 6].copy_from_slice(b"SU");
            let err = walk_elements(&unknown).unwrap_err();
            assert!(err.contains("no valid VR"), "{name}: {err}");
        }
    }
}
