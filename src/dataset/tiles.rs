//! Cutting large images into fixed-size tiles (MoNuSeg's 1000×1000 tiles become
//! 512×512 inputs, near the network's size, instead of being shrunk 4×).
//!
//! Rule: along each axis of length L, tiles of side T (T ≤ L) start at
//! `round(i · (L − T) / (n − 1))` for i = 0..n, with n = ⌈L / T⌉ the fewest tiles that
//! cover the axis. Tiles therefore never leave the image (no padding) and overlap
//! evenly by at most T − 1 pixels; a 1000-px side gives n = 2 and origins 0 and 488
//! (24 px of overlap). An axis shorter than T gives one tile of length L.

use crate::error::Result;
use crate::image::CropBox;

use super::Sample;

/// Tile origins along an axis of `len` pixels for tiles of `tile` pixels.
pub fn tile_origins(len: u32, tile: u32) -> Vec<u32> {
    if tile == 0 || len <= tile {
        return vec![0];
    }
    let n = len.div_ceil(tile);
    let span = u64::from(len - tile);
    (0..n)
        .map(|i| ((u64::from(i) * span * 2 + u64::from(n - 1)) / (2 * u64::from(n - 1))) as u32)
        .collect()
}

/// The tiles of one sample, row by row; ids are `<id>_r<top>_c<left>`.
///
/// # Errors
/// Header errors, or [`crate::Error::Shape`] when the mask's size differs from the image's.
/// How many origins [`tile_origins`] gives, without building them.
fn tile_origins_len(len: u32, tile: u32) -> u64 {
    if tile == 0 || len <= tile {
        1
    } else {
        u64::from(len.div_ceil(tile))
    }
}

pub fn tile_sample(sample: &Sample, tile_px: u32) -> Result<Vec<Sample>> {
    let (w, h) = sample.size()?;
    let (th, tw) = (tile_px.min(h), tile_px.min(w));
    crate::limits::check("image_pixels", u64::from(w) * u64::from(h))?;
    let (rows, cols) = (tile_origins_len(h, tile_px), tile_origins_len(w, tile_px));
    crate::limits::check_product("dataset_items", &[rows, cols])?;
    let mut out = Vec::new();
    for top in tile_origins(h, tile_px) {
        for left in tile_origins(w, tile_px) {
            out.push(Sample {
                id: format!("{}_r{top}_c{left}", sample.id),
                region: Some(CropBox {
                    left,
                    top,
                    width: tw,
                    height: th,
                }),
                ..sample.clone()
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_cover_the_axis_evenly() {
        assert_eq!(tile_origins(1000, 512), vec![0, 488]);
        assert_eq!(tile_origins(512, 512), vec![0]);
        assert_eq!(tile_origins(300, 512), vec![0]);
        // 1100 = 3 tiles of 512: span 588 split in two halves of 294.
        assert_eq!(tile_origins(1100, 512), vec![0, 294, 588]);
        assert_eq!(tile_origins(1024, 512), vec![0, 512]);
    }
}
