//! The DenseCRF of this module on a CUDA device (`backend::cuda::CrfDevice`, the CPU
//! lattice's twin): [`CrfParams`] in the backend's terms, the image as contiguous bytes.

use ndarray::ArrayView3;

use super::CrfParams;
use crate::backend::cuda::crf::{CrfImage, CrfResult, CrfSpec, CrfWant};
use crate::backend::CrfDevice;
use crate::error::Result;

/// The model of `params`: a kernel with weight 0 is dropped, as on the CPU.
fn spec(params: &CrfParams) -> CrfSpec {
    CrfSpec {
        n_iterations: params.n_iterations,
        positional: (params.pos_weight != 0.0).then_some((params.pos_sxy_px, params.pos_weight)),
        bilateral: (params.bi_weight != 0.0).then_some((
            params.bi_sxy_px,
            params.bi_srgb,
            params.bi_weight,
        )),
    }
}

/// The device's CRF for a checked unary `u`, pixel-major `(H·W, m)`.
pub(super) fn inference(
    dev: &CrfDevice,
    image: ArrayView3<u8>,
    u: &[f32],
    m: usize,
    params: &CrfParams,
    want: CrfWant,
) -> Result<CrfResult> {
    let (h, w, channels) = image.dim();
    let pixels = image.as_standard_layout();
    let img = CrfImage {
        pixels: pixels.as_slice().expect("standard layout"),
        h,
        w,
        channels,
    };
    dev.run(img, u, m, &spec(params), want)
}
