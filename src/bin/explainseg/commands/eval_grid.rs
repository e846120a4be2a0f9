//! `grid.png`, like the paper's Figure 2: one row per example image; columns are
//! the image, the ground truth, then each method's mask. Masks are shown as a blue
//! tint with a green contour (render::overlay) on the image, each cell fitted into
//! a 160-px square (nearest sampling, aspect kept, black margins), with 4-px white
//! gaps between and around the cells.

use std::path::Path;

use anyhow::Result;
use explainseg::render::{overlay, write_rgb_png};
use ndarray::Array2;

const CELL_PX: usize = 160;
const GAP_PX: usize = 4;

/// One example: its 8-bit RGB pixels (H, W, 3), the ground truth, one mask per method.
pub struct GridRow {
    pub rgb: Vec<u8>,
    pub height: usize,
    pub width: usize,
    pub truth: Array2<bool>,
    pub masks: Vec<Array2<bool>>,
}

/// Fits (h, w) into the cell: the cell-sized source coordinates of each cell pixel,
/// or `None` in the margins.
fn fit(h: usize, w: usize) -> impl Fn(usize, usize) -> Option<(usize, usize)> {
    let scale = (CELL_PX as f64 / h as f64).min(CELL_PX as f64 / w as f64);
    let (ch, cw) = (
        ((h as f64 * scale).round() as usize).clamp(1, CELL_PX),
        ((w as f64 * scale).round() as usize).clamp(1, CELL_PX),
    );
    let (top, left) = ((CELL_PX - ch) / 2, (CELL_PX - cw) / 2);
    move |i, j| {
        if i < top || j < left || i >= top + ch || j >= left + cw {
            return None;
        }
        Some((((i - top) * h) / ch, ((j - left) * w) / cw))
    }
}

/// A CELL_PX² cell: the image, with `mask` tinted and outlined when given.
fn cell(row: &GridRow, mask: Option<&Array2<bool>>) -> Result<Vec<u8>> {
    let at = fit(row.height, row.width);
    let mut rgb = vec![0u8; CELL_PX * CELL_PX * 3];
    let mut m = Array2::from_elem((CELL_PX, CELL_PX), false);
    for i in 0..CELL_PX {
        for j in 0..CELL_PX {
            let Some((si, sj)) = at(i, j) else { continue };
            let src = &row.rgb[(si * row.width + sj) * 3..][..3];
            let dst = &mut rgb[(i * CELL_PX + j) * 3..][..3];
            let on = mask.is_some_and(|mk| mk[[si, sj]]);
            m[[i, j]] = on;
            for k in 0..3 {
                let tint = [0.0, 160.0, 255.0][k];
                dst[k] = if on {
                    (0.6 * src[k] as f32 + 0.4 * tint).round() as u8
                } else {
                    src[k]
                };
            }
        }
    }
    if mask.is_none() {
        return Ok(rgb);
    }
    Ok(overlay(&rgb, CELL_PX, CELL_PX, None, m.view())?)
}

/// Writes the grid; every row must have the same number of masks.
pub fn write_grid(path: &Path, rows: &[GridRow]) -> Result<()> {
    let cols = 2 + rows.first().map_or(0, |r| r.masks.len());
    let width = cols * CELL_PX + (cols + 1) * GAP_PX;
    let height = rows.len() * CELL_PX + (rows.len() + 1) * GAP_PX;
    let mut out = vec![255u8; width * height * 3];
    for (r, row) in rows.iter().enumerate() {
        let cells = std::iter::once(None)
            .chain(std::iter::once(Some(&row.truth)))
            .chain(row.masks.iter().map(Some));
        for (c, mask) in cells.enumerate() {
            let px = cell(row, mask)?;
            let (top, left) = (
                GAP_PX + r * (CELL_PX + GAP_PX),
                GAP_PX + c * (CELL_PX + GAP_PX),
            );
            for i in 0..CELL_PX {
                let dst = ((top + i) * width + left) * 3;
                out[dst..dst + CELL_PX * 3].copy_from_slice(&px[i * CELL_PX * 3..][..CELL_PX * 3]);
            }
        }
    }
    write_rgb_png(path, out, height, width)?;
    Ok(())
}
