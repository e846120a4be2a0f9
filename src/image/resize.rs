//! Pillow-compatible separable resampling (`Image.resize`) and cropping.
//!
//! # The maths (re-implemented from Pillow's documented behaviour)
//! Each axis is resampled on its own with a 1-D convolution. For an axis of
//! `in_size` samples going to `out_size`:
//!
//! * `scale = in_size / out_size`, `fs = max(scale, 1)` (downscaling widens the
//!   kernel: antialiasing), `support = filter_support * fs`.
//! * Output sample `i` is centred at `c = (i + 0.5) * scale`; it reads input
//!   samples `xmin = max(trunc(c - support + 0.5), 0)` up to (excluded)
//!   `min(trunc(c + support + 0.5), in_size)`, with weights
//!   `w_j = f(((xmin + j) - c + 0.5) / fs)`, divided by their sum (in `f64`).
//! * Filters: bicubic with `a = -0.5` (support 2), Lanczos with `a = 3`
//!   (`sinc(x)·sinc(x/3)`, support 3), bilinear/triangle (support 1).
//!
//! **8-bit path** (bit-exact with Pillow for u8 images): weights become
//! fixed point with 22 fractional bits, rounded half away from zero; every
//! output is `clamp((2^21 + Σ v_j·k_j) >> 22, 0, 255)` (arithmetic shift). The
//! two passes store their intermediate image as u8.
//!
//! **Float path** (bit-exact with Pillow's mode `"F"`): the same `f64`
//! weights, accumulated in `f64` from 0 in tap order, each pass stored as
//! `f32`; no clamping, no rounding.
//!
//! **Pass order** (matters for the rounding): Pillow ≥ 13 runs the vertical
//! pass first when the height shrinks by more than twice as many pixels as the
//! width (`out_h < in_h && in_h - out_h > 2·(in_w - out_w)`), otherwise the
//! horizontal pass first (Pillow ≤ 12 always went horizontal first). An axis
//! whose size does not change is not resampled, and an unchanged size is a copy.
//! This rule was found by comparing both orders with Pillow 13.0.0 on thousands
//! of sizes; the fixtures of `tests/preprocess.rs` pin it.

use crate::error::{Error, Result};
use crate::image::decode::check_size;

/// Resampling filter, as in Pillow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResampleFilter {
    /// Triangle filter, support 1 (`Image.BILINEAR`).
    Bilinear,
    /// Cubic convolution with a = −0.5, support 2 (`Image.BICUBIC`).
    #[default]
    Bicubic,
    /// Lanczos, a = 3, support 3 (`Image.LANCZOS`).
    Lanczos3,
}

impl ResampleFilter {
    fn support(self) -> f64 {
        match self {
            ResampleFilter::Bilinear => 1.0,
            ResampleFilter::Bicubic => 2.0,
            ResampleFilter::Lanczos3 => 3.0,
        }
    }

    fn eval(self, x: f64) -> f64 {
        match self {
            ResampleFilter::Bilinear => {
                let x = x.abs();
                if x < 1.0 {
                    1.0 - x
                } else {
                    0.0
                }
            }
            ResampleFilter::Bicubic => {
                const A: f64 = -0.5;
                let x = x.abs();
                if x < 1.0 {
                    ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
                } else if x < 2.0 {
                    (((x - 5.0) * x + 8.0) * x - 4.0) * A
                } else {
                    0.0
                }
            }
            ResampleFilter::Lanczos3 => {
                if (-3.0..3.0).contains(&x) {
                    sinc(x) * sinc(x / 3.0)
                } else {
                    0.0
                }
            }
        }
    }
}

fn sinc(x: f64) -> f64 {
    if x == 0.0 {
        1.0
    } else {
        let y = x * std::f64::consts::PI;
        y.sin() / y
    }
}

/// Which pass runs first when both axes change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassOrder {
    /// Horizontal (along rows), then vertical.
    HorizontalFirst,
    /// Vertical (along columns), then horizontal.
    VerticalFirst,
}

/// The pass order Pillow 13 uses for a resize from `in_w × in_h` to `out_w × out_h`.
pub fn pillow_pass_order(in_w: u32, in_h: u32, out_w: u32, out_h: u32) -> PassOrder {
    let (iw, ih, ow, oh) = (
        i64::from(in_w),
        i64::from(in_h),
        i64::from(out_w),
        i64::from(out_h),
    );
    if oh < ih && ih - oh > 2 * (iw - ow) {
        PassOrder::VerticalFirst
    } else {
        PassOrder::HorizontalFirst
    }
}

/// Normalised 1-D weights for one axis: output `i` reads `len[i]` inputs from
/// `start[i]` with weights `weights[i * ksize ..][.. len[i]]`.
struct AxisKernel {
    ksize: usize,
    start: Vec<usize>,
    len: Vec<usize>,
    weights: Vec<f64>,
}

impl AxisKernel {
    fn new(in_size: usize, out_size: usize, filter: ResampleFilter) -> Self {
        let scale = in_size as f64 / out_size as f64;
        let filterscale = scale.max(1.0);
        let support = filter.support() * filterscale;
        let ksize = support.ceil() as usize * 2 + 1;
        let inv = 1.0 / filterscale;
        let mut start = Vec::with_capacity(out_size);
        let mut len = Vec::with_capacity(out_size);
        let mut weights = vec![0.0f64; out_size * ksize];
        for i in 0..out_size {
            let center = (i as f64 + 0.5) * scale;
            // `as i64` truncates toward zero, like the C cast.
            let xmin = ((center - support + 0.5) as i64).max(0) as usize;
            let xmax = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let n = xmax.saturating_sub(xmin).min(ksize);
            let k = &mut weights[i * ksize..i * ksize + n];
            let mut sum = 0.0f64;
            for (j, w) in k.iter_mut().enumerate() {
                *w = filter.eval((((xmin + j) as f64) - center + 0.5) * inv);
                sum += *w;
            }
            if sum != 0.0 {
                for w in k.iter_mut() {
                    *w /= sum;
                }
            }
            start.push(xmin);
            len.push(n);
        }
        AxisKernel {
            ksize,
            start,
            len,
            weights,
        }
    }

    /// Weights as fixed point with 22 fractional bits, rounded half away from zero.
    fn fixed_point(&self) -> Vec<i32> {
        const ONE: f64 = (1u32 << PRECISION_BITS) as f64;
        self.weights
            .iter()
            .map(|&w| {
                if w < 0.0 {
                    (-0.5 + w * ONE) as i32
                } else {
                    (0.5 + w * ONE) as i32
                }
            })
            .collect()
    }

    fn taps(&self, i: usize) -> (usize, &[f64]) {
        let off = i * self.ksize;
        (self.start[i], &self.weights[off..off + self.len[i]])
    }

    fn taps_fixed<'a>(&self, fixed: &'a [i32], i: usize) -> (usize, &'a [i32]) {
        let off = i * self.ksize;
        (self.start[i], &fixed[off..off + self.len[i]])
    }

    /// First and one-past-last input index any output reads.
    fn input_range(&self) -> (usize, usize) {
        let last = self.start.len() - 1;
        (self.start[0], self.start[last] + self.len[last])
    }
}

/// 8 bits of result, one sign bit and one overflow bit out of 32.
const PRECISION_BITS: u32 = 32 - 8 - 2;

#[inline]
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

/// Sample types the two resampling paths work on.
trait Sample: Copy + Default {
    /// Horizontal pass over rows `rows` of a `(rows, in_w, ch)` image.
    fn h_pass(
        src: &[Self],
        in_w: usize,
        rows: std::ops::Range<usize>,
        ch: usize,
        k: &AxisKernel,
    ) -> Vec<Self>;
    /// Vertical pass of a `(in_h, w, ch)` image; `row_offset` is subtracted from
    /// every kernel start (the source holds rows from `row_offset` on).
    fn v_pass(src: &[Self], w: usize, ch: usize, k: &AxisKernel, row_offset: usize) -> Vec<Self>;
}

impl Sample for u8 {
    fn h_pass(
        src: &[u8],
        in_w: usize,
        rows: std::ops::Range<usize>,
        ch: usize,
        k: &AxisKernel,
    ) -> Vec<u8> {
        let fixed = k.fixed_point();
        let out_w = k.start.len();
        let mut out = Vec::with_capacity(rows.len() * out_w * ch);
        let mut acc = vec![0i32; ch];
        for y in rows {
            let row = &src[y * in_w * ch..(y + 1) * in_w * ch];
            for x in 0..out_w {
                let (start, taps) = k.taps_fixed(&fixed, x);
                acc.fill(1 << (PRECISION_BITS - 1));
                for (j, &kj) in taps.iter().enumerate() {
                    let px = &row[(start + j) * ch..(start + j + 1) * ch];
                    for (a, &v) in acc.iter_mut().zip(px) {
                        *a += i32::from(v) * kj;
                    }
                }
                out.extend(acc.iter().map(|&a| clip8(a)));
            }
        }
        out
    }

    fn v_pass(src: &[u8], w: usize, ch: usize, k: &AxisKernel, row_offset: usize) -> Vec<u8> {
        let fixed = k.fixed_point();
        let out_h = k.start.len();
        let row_len = w * ch;
        let mut out = Vec::with_capacity(out_h * row_len);
        let mut acc = vec![0i32; row_len];
        for y in 0..out_h {
            let (start, taps) = k.taps_fixed(&fixed, y);
            let start = start - row_offset;
            acc.fill(1 << (PRECISION_BITS - 1));
            for (j, &kj) in taps.iter().enumerate() {
                let row = &src[(start + j) * row_len..(start + j + 1) * row_len];
                for (a, &v) in acc.iter_mut().zip(row) {
                    *a += i32::from(v) * kj;
                }
            }
            out.extend(acc.iter().map(|&a| clip8(a)));
        }
        out
    }
}

impl Sample for f32 {
    fn h_pass(
        src: &[f32],
        in_w: usize,
        rows: std::ops::Range<usize>,
        ch: usize,
        k: &AxisKernel,
    ) -> Vec<f32> {
        let out_w = k.start.len();
        let mut out = Vec::with_capacity(rows.len() * out_w * ch);
        let mut acc = vec![0f64; ch];
        for y in rows {
            let row = &src[y * in_w * ch..(y + 1) * in_w * ch];
            for x in 0..out_w {
                let (start, taps) = k.taps(x);
                acc.fill(0.0);
                for (j, &kj) in taps.iter().enumerate() {
                    let px = &row[(start + j) * ch..(start + j + 1) * ch];
                    for (a, &v) in acc.iter_mut().zip(px) {
                        *a += f64::from(v) * kj;
                    }
                }
                out.extend(acc.iter().map(|&a| a as f32));
            }
        }
        out
    }

    fn v_pass(src: &[f32], w: usize, ch: usize, k: &AxisKernel, row_offset: usize) -> Vec<f32> {
        let out_h = k.start.len();
        let row_len = w * ch;
        let mut out = Vec::with_capacity(out_h * row_len);
        let mut acc = vec![0f64; row_len];
        for y in 0..out_h {
            let (start, taps) = k.taps(y);
            let start = start - row_offset;
            acc.fill(0.0);
            for (j, &kj) in taps.iter().enumerate() {
                let row = &src[(start + j) * row_len..(start + j + 1) * row_len];
                for (a, &v) in acc.iter_mut().zip(row) {
                    *a += f64::from(v) * kj;
                }
            }
            out.extend(acc.iter().map(|&a| a as f32));
        }
        out
    }
}

fn check_buffer(what: &'static str, len: usize, w: u32, h: u32, ch: usize) -> Result<()> {
    check_size(w, h)?;
    let expected = w as usize * h as usize * ch;
    if len != expected {
        return Err(Error::shape(what, &[h as usize, w as usize, ch], &[len]));
    }
    Ok(())
}

fn resize_generic<T: Sample>(
    src: &[T],
    width: u32,
    height: u32,
    ch: usize,
    out_width: u32,
    out_height: u32,
    filter: ResampleFilter,
) -> Result<Vec<T>> {
    check_buffer(
        "resize input (height, width, channels)",
        src.len(),
        width,
        height,
        ch,
    )?;
    check_size(out_width, out_height).map_err(|_| {
        Error::param(
            "resize output size",
            format!("{out_width}x{out_height} is empty or too large"),
        )
    })?;
    let (iw, ih, ow, oh) = (
        width as usize,
        height as usize,
        out_width as usize,
        out_height as usize,
    );
    let need_h = ow != iw;
    let need_v = oh != ih;
    match (need_h, need_v) {
        (false, false) => Ok(src.to_vec()),
        (true, false) => Ok(T::h_pass(
            src,
            iw,
            0..ih,
            ch,
            &AxisKernel::new(iw, ow, filter),
        )),
        (false, true) => Ok(T::v_pass(src, iw, ch, &AxisKernel::new(ih, oh, filter), 0)),
        (true, true) => {
            let kh = AxisKernel::new(iw, ow, filter);
            let kv = AxisKernel::new(ih, oh, filter);
            match pillow_pass_order(width, height, out_width, out_height) {
                PassOrder::HorizontalFirst => {
                    // Only the rows the vertical pass reads are resampled.
                    let (first, last) = kv.input_range();
                    let tmp = T::h_pass(src, iw, first..last, ch, &kh);
                    Ok(T::v_pass(&tmp, ow, ch, &kv, first))
                }
                PassOrder::VerticalFirst => {
                    let tmp = T::v_pass(src, iw, ch, &kv, 0);
                    Ok(T::h_pass(&tmp, iw, 0..oh, ch, &kh))
                }
            }
        }
    }
}

/// Resizes an 8-bit RGB image `(height, width, 3)` to `(out_height, out_width, 3)`,
/// bit-identical to Pillow 13's `Image.resize((out_width, out_height), filter)`
/// on a mode `"RGB"` image.
///
/// # Errors
/// [`Error::Shape`] when `src.len() != width * height * 3`;
/// [`Error::InvalidParam`] for an empty or too large size.
pub fn resize_rgb8(
    src: &[u8],
    width: u32,
    height: u32,
    out_width: u32,
    out_height: u32,
    filter: ResampleFilter,
) -> Result<Vec<u8>> {
    resize_generic(src, width, height, 3, out_width, out_height, filter)
}

/// Resizes a float RGB image `(height, width, 3)` with the same filter but no
/// quantisation: bit-identical to Pillow's mode `"F"` resize applied to each
/// channel. Values are not clamped (bicubic and Lanczos overshoot at edges).
///
/// # Errors
/// As for [`resize_rgb8`].
pub fn resize_rgb_f32(
    src: &[f32],
    width: u32,
    height: u32,
    out_width: u32,
    out_height: u32,
    filter: ResampleFilter,
) -> Result<Vec<f32>> {
    resize_generic(src, width, height, 3, out_width, out_height, filter)
}

/// Resizes a single-channel float image `(height, width)` (a relevance map, a
/// probability map) like [`resize_rgb_f32`].
///
/// # Errors
/// As for [`resize_rgb8`].
pub fn resize_gray_f32(
    src: &[f32],
    width: u32,
    height: u32,
    out_width: u32,
    out_height: u32,
    filter: ResampleFilter,
) -> Result<Vec<f32>> {
    resize_generic(src, width, height, 1, out_width, out_height, filter)
}

/// A crop rectangle in pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CropBox {
    /// First column.
    pub left: u32,
    /// First row.
    pub top: u32,
    /// Number of columns.
    pub width: u32,
    /// Number of rows.
    pub height: u32,
}

impl CropBox {
    /// The whole of a `width × height` image.
    pub fn full(width: u32, height: u32) -> Self {
        CropBox {
            left: 0,
            top: 0,
            width,
            height,
        }
    }

    /// torchvision `CenterCrop((crop_height, crop_width))` inside a `width × height`
    /// image: `top = round((height - crop_height) / 2)` with Python's
    /// round-half-to-even (16.5 → 16, 17.5 → 18), and the same for `left`.
    ///
    /// # Errors
    /// [`Error::InvalidParam`] when the crop is empty or larger than the image
    /// (torchvision would pad with zeros; we refuse instead).
    pub fn center(width: u32, height: u32, crop_width: u32, crop_height: u32) -> Result<Self> {
        if crop_width == 0 || crop_height == 0 || crop_width > width || crop_height > height {
            return Err(Error::param(
                "crop",
                format!("{crop_width}x{crop_height} crop does not fit in a {width}x{height} image"),
            ));
        }
        Ok(CropBox {
            left: half_round_even(width - crop_width),
            top: half_round_even(height - crop_height),
            width: crop_width,
            height: crop_height,
        })
    }
}

/// `round(d / 2)` with ties to even, as Python's `round` does.
fn half_round_even(d: u32) -> u32 {
    let q = d / 2;
    if d % 2 == 1 && q % 2 == 1 {
        q + 1
    } else {
        q
    }
}

/// Copies the `bx` rectangle out of an interleaved `(height, width, channels)` image.
///
/// # Errors
/// [`Error::Shape`] when `src` has the wrong length; [`Error::InvalidParam`] when
/// the box is empty or leaves the image.
pub fn crop<T: Copy>(
    src: &[T],
    width: u32,
    height: u32,
    channels: usize,
    bx: CropBox,
) -> Result<Vec<T>> {
    check_buffer(
        "crop input (height, width, channels)",
        src.len(),
        width,
        height,
        channels,
    )?;
    let fits = u64::from(bx.left) + u64::from(bx.width) <= u64::from(width)
        && u64::from(bx.top) + u64::from(bx.height) <= u64::from(height);
    if bx.width == 0 || bx.height == 0 || !fits {
        return Err(Error::param(
            "crop",
            format!("{bx:?} does not fit in a {width}x{height} image"),
        ));
    }
    if bx == CropBox::full(width, height) {
        return Ok(src.to_vec());
    }
    let row_len = width as usize * channels;
    let mut out = Vec::with_capacity(bx.width as usize * bx.height as usize * channels);
    for y in bx.top as usize..(bx.top + bx.height) as usize {
        let s = y * row_len + bx.left as usize * channels;
        out.extend_from_slice(&src[s..s + bx.width as usize * channels]);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn python_round_half_even() {
        // (h - 224) / 2 for h = 256, 257, 258, 259, 261
        assert_eq!(half_round_even(32), 16);
        assert_eq!(half_round_even(33), 16); // 16.5 -> 16
        assert_eq!(half_round_even(34), 17);
        assert_eq!(half_round_even(35), 18); // 17.5 -> 18
        assert_eq!(half_round_even(37), 18); // 18.5 -> 18
        assert_eq!(half_round_even(0), 0);
        assert_eq!(half_round_even(1), 0); // 0.5 -> 0
    }

    #[test]
    fn weights_sum_to_one_and_fixed_point_rounds() {
        for filter in [
            ResampleFilter::Bilinear,
            ResampleFilter::Bicubic,
            ResampleFilter::Lanczos3,
        ] {
            for (i, o) in [(10, 3), (3, 10), (47, 256), (299, 256), (5, 5)] {
                let k = AxisKernel::new(i, o, filter);
                for y in 0..o {
                    let (_, w) = k.taps(y);
                    let s: f64 = w.iter().sum();
                    assert!((s - 1.0).abs() < 1e-12, "{filter:?} {i}->{o} row {y}: {s}");
                }
            }
        }
        let k = AxisKernel {
            ksize: 3,
            start: vec![0],
            len: vec![3],
            weights: vec![0.5, -0.25 - 0.5 / 4194304.0, 1.0 / 8388608.0],
        };
        // 0.5 -> 2^21; -0.25 - 2^-23 -> -(2^20 + 0.5) -> away from zero; 2^-23 -> 0.5 -> 1
        assert_eq!(k.fixed_point(), vec![1 << 21, -(1 << 20) - 1, 1]);
    }

    #[test]
    fn constant_image_stays_constant() {
        let src = vec![77u8; 13 * 9 * 3];
        for (w, h) in [(5, 4), (40, 31), (13, 2), (1, 1)] {
            for f in [
                ResampleFilter::Bicubic,
                ResampleFilter::Lanczos3,
                ResampleFilter::Bilinear,
            ] {
                let out = resize_rgb8(&src, 13, 9, w, h, f).unwrap();
                assert_eq!(out.len(), (w * h * 3) as usize);
                assert!(out.iter().all(|&v| v == 77), "{f:?} {w}x{h}");
            }
        }
    }

    #[test]
    fn pass_order_rule() {
        use PassOrder::*;
        assert_eq!(pillow_pass_order(40, 40, 21, 2), HorizontalFirst); // 38 == 2*19
        assert_eq!(pillow_pass_order(40, 40, 22, 2), VerticalFirst); // 38 > 36
        assert_eq!(pillow_pass_order(40, 40, 60, 50), HorizontalFirst); // height grows
        assert_eq!(pillow_pass_order(40, 37, 41, 12), VerticalFirst);
    }

    #[test]
    fn shape_errors() {
        assert!(resize_rgb8(&[0; 10], 2, 2, 3, 3, ResampleFilter::Bicubic).is_err());
        assert!(resize_rgb8(&[0; 12], 2, 2, 0, 3, ResampleFilter::Bicubic).is_err());
        assert!(crop(
            &[0u8; 12],
            2,
            2,
            3,
            CropBox {
                left: 1,
                top: 0,
                width: 2,
                height: 1
            }
        )
        .is_err());
        assert!(CropBox::center(10, 10, 11, 5).is_err());
    }
}
