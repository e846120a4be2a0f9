//! Bringing masks and maps from the network input back to the original image, and
//! writing them as PNGs: 0/255 masks, label maps and overlays (heat map + mask contour).

use std::path::Path;

use ndarray::{Array2, ArrayView2};

use crate::error::{Error, Result};
use crate::image::ResizePlan;

/// Places a map of the network input (crop) back on the original image: inside the
/// crop it is resized with nearest sampling, outside it is `fill`.
pub fn to_original<T: Copy>(map: ArrayView2<T>, plan: &ResizePlan, fill: T) -> Result<Array2<T>> {
    let (ch, cw) = (plan.crop.height as usize, plan.crop.width as usize);
    if map.dim() != (ch, cw) {
        return Err(Error::shape(
            "map at the network input",
            &[ch, cw],
            &[map.nrows(), map.ncols()],
        ));
    }
    let (rh, rw) = (plan.resized_height as usize, plan.resized_width as usize);
    let (top, left) = (plan.crop.top as usize, plan.crop.left as usize);
    let (oh, ow) = (plan.input_height as usize, plan.input_width as usize);
    Ok(Array2::from_shape_fn((oh, ow), |(i, j)| {
        // Nearest: the resized-image pixel this original pixel maps to.
        let (ri, rj) = ((i * rh) / oh, (j * rw) / ow);
        if ri >= top && ri < top + ch && rj >= left && rj < left + cw {
            map[[ri - top, rj - left]]
        } else {
            fill
        }
    }))
}

/// Writes a mask as an 8-bit PNG, 255 for foreground.
///
/// # Errors
/// [`Error::Io`] when the file cannot be written.
pub fn write_mask_png(path: &Path, mask: ArrayView2<bool>) -> Result<()> {
    let (h, w) = mask.dim();
    let data: Vec<u8> = mask.iter().map(|&m| if m { 255 } else { 0 }).collect();
    let img = image::GrayImage::from_raw(w as u32, h as u32, data)
        .ok_or_else(|| Error::Internal("mask buffer size".into()))?;
    save_png_atomic(path, &image::DynamicImage::ImageLuma8(img))
}

/// Reads a PNG/JPEG/TIFF mask: pixels > 127 (of the first channel) are foreground.
///
/// # Errors
/// Decoding errors.
pub fn read_mask(path: &Path) -> Result<Array2<bool>> {
    let img = crate::image::decode_image_file(path)?;
    let (w, h) = (img.width as usize, img.height as usize);
    let rgb = img.to_rgb8();
    Ok(Array2::from_shape_fn((h, w), |(i, j)| {
        rgb[(i * w + j) * 3] > 127
    }))
}

/// Writes a label map (values `0..=255`) as an 8-bit grey PNG, one value per pixel.
///
/// # Errors
/// [`Error::Io`] when the file cannot be written.
pub fn write_labels_png(path: &Path, labels: ArrayView2<u8>) -> Result<()> {
    let (h, w) = labels.dim();
    let data: Vec<u8> = labels.iter().copied().collect();
    let img = image::GrayImage::from_raw(w as u32, h as u32, data)
        .ok_or_else(|| Error::Internal("label buffer size".into()))?;
    save_png_atomic(path, &image::DynamicImage::ImageLuma8(img))
}

/// Reads a label image: an 8-bit grey image (PNG, TIFF; any RGB with equal channels)
/// whose pixel values are the labels.
///
/// # Errors
/// Decoding errors; [`Error::InvalidParam`] for 16-bit samples or a colour pixel.
pub fn read_labels(path: &Path) -> Result<Array2<u8>> {
    let img = crate::image::decode_image_file(path)?;
    let crate::image::Pixels::U8(rgb) = &img.pixels else {
        return Err(Error::param(
            "labels",
            format!(
                "{}: a label image must have 8-bit samples, not 16-bit",
                path.display()
            ),
        ));
    };
    let w = img.width as usize;
    if let Some(p) = rgb
        .chunks_exact(3)
        .position(|c| c[0] != c[1] || c[0] != c[2])
    {
        return Err(Error::param(
            "labels",
            format!(
                "{}: a label image must be grey, pixel (x {}, y {}) is a colour",
                path.display(),
                p % w,
                p / w
            ),
        ));
    }
    Ok(Array2::from_shape_fn((img.height as usize, w), |(i, j)| {
        rgb[(i * w + j) * 3]
    }))
}

/// A perceptual heat colour for v ∈ [0, 1] (black → red → yellow → white, "hot").
fn hot(v: f32) -> [f32; 3] {
    let v = v.clamp(0.0, 1.0) * 3.0;
    [
        v.min(1.0),
        (v - 1.0).clamp(0.0, 1.0),
        (v - 2.0).clamp(0.0, 1.0),
    ]
}

/// RGB overlay: the image, the heat map blended at 50% (where given), and the mask
/// contour in green.
///
/// # Errors
/// [`Error::Shape`] when the inputs disagree in size.
pub fn overlay(
    rgb: &[u8],
    height: usize,
    width: usize,
    heat: Option<ArrayView2<f32>>,
    mask: ArrayView2<bool>,
) -> Result<Vec<u8>> {
    if rgb.len() != height * width * 3
        || mask.dim() != (height, width)
        || heat.is_some_and(|h| h.dim() != (height, width))
    {
        return Err(Error::shape(
            "overlay inputs (H, W)",
            &[height, width],
            &[mask.nrows(), mask.ncols()],
        ));
    }
    let mut out = rgb.to_vec();
    if let Some(heat) = heat {
        for ((px, &v), _) in out.chunks_exact_mut(3).zip(heat.iter()).zip(0..) {
            let c = hot(v);
            for k in 0..3 {
                px[k] = (0.5 * px[k] as f32 + 0.5 * 255.0 * c[k]).round() as u8;
            }
        }
    }
    for i in 0..height {
        for j in 0..width {
            let m = mask[[i, j]];
            let edge = m
                && [(0isize, 1isize), (0, -1), (1, 0), (-1, 0)]
                    .iter()
                    .any(|(di, dj)| {
                        let (ni, nj) = (i as isize + di, j as isize + dj);
                        ni < 0
                            || nj < 0
                            || ni >= height as isize
                            || nj >= width as isize
                            || !mask[[ni as usize, nj as usize]]
                    });
            if edge {
                out[(i * width + j) * 3..][..3].copy_from_slice(&[0, 255, 0]);
            }
        }
    }
    Ok(out)
}

/// Writes 8-bit RGB pixels as a PNG.
///
/// # Errors
/// [`Error::Io`] when the file cannot be written.
pub fn write_rgb_png(path: &Path, rgb: Vec<u8>, height: usize, width: usize) -> Result<()> {
    let img = image::RgbImage::from_raw(width as u32, height as u32, rgb)
        .ok_or_else(|| Error::Internal("image buffer size".into()))?;
    save_png_atomic(path, &image::DynamicImage::ImageRgb8(img))
}

/// Encodes `img` as PNG into `path` atomically; any extension but `.png` is
/// refused before anything is created.
fn save_png_atomic(path: &Path, img: &image::DynamicImage) -> Result<()> {
    crate::fsutil::require_extension(path, "png")?;
    let mut bytes = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut bytes),
        image::ImageFormat::Png,
    )
    .map_err(|e| Error::io(path, std::io::Error::other(e.to_string())))?;
    crate::fsutil::write_bytes_atomic(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::ResizeMode;

    #[test]
    fn masks_map_back_through_resize_and_crop() {
        // 8×4 image, DINO-style: short side 4 → 4 (no resize), centre crop 4 → columns 2..6.
        let plan = ResizeMode::DinoEval {
            short_side: 4,
            crop: 4,
        }
        .plan(8, 4)
        .unwrap();
        let m = Array2::from_elem((4, 4), true);
        let back = to_original(m.view(), &plan, false).unwrap();
        assert_eq!(back.dim(), (4, 8));
        assert_eq!(
            back.row(0).to_vec(),
            vec![false, false, true, true, true, true, false, false]
        );
    }
}
