//! DenseCRF on a CUDA device ([`CrfDevice`]): the twin of the CPU DenseCRF in
//! `post::crf` (pydensecrf's model), on the same [`DeviceApi`](super::DeviceApi) as the
//! engine — a GPU, or the emulated device in CI. The design and what was verified:
//! docs/postprocessing.md, "DenseCRF on the GPU".
//!
//! - `plan`: sizes and key packing of a lattice, decided as on the CPU.
//! - `kernels`: the typed launch wrappers of `kernels/crf_*.cu`.
//! - `lattice`: a lattice on the device (build, filter) and its buffers.
//! - `mean_field`: the inference loop.

mod kernels;
mod lattice;
mod mean_field;
mod plan;

use std::sync::Mutex;

use super::api::{Counters, Dev, DevBuf};
use crate::error::{Error, Result};
use lattice::DeviceLattice;
use mean_field::MeanField;
use plan::Plan;

/// The CRF model on the device, in the backend's terms (`post::crf::CrfParams` maps
/// onto it): mean-field iterations and the two Potts Gaussian kernels, each optional.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CrfSpec {
    pub n_iterations: usize,
    /// Positional kernel: (sxy in pixels, Potts weight).
    pub positional: Option<(f32, f32)>,
    /// Bilateral kernel: (sxy in pixels, srgb in 8-bit levels, Potts weight).
    pub bilateral: Option<(f32, f32, f32)>,
}

/// An 8-bit image, row-major `(h, w, channels)`.
#[derive(Debug, Clone, Copy)]
pub struct CrfImage<'a> {
    pub pixels: &'a [u8],
    pub h: usize,
    pub w: usize,
    pub channels: usize,
}

/// What [`CrfDevice::run`] downloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CrfWant {
    /// The MAP labels.
    Labels,
    /// The MAP labels and the marginals.
    LabelsAndProbs,
    /// Only whether the MAP label is 1 (the mask refinement), one byte per pixel.
    Foreground,
}

/// What [`CrfDevice::run`] returns.
#[derive(Debug, Clone, PartialEq)]
pub enum CrfResult {
    /// MAP label of each pixel (argmax, ties to the lower label).
    Labels(Vec<i32>),
    /// Labels, and the marginals pixel-major `(h·w, labels)`.
    LabelsAndProbs(Vec<i32>, Vec<f32>),
    /// Whether each pixel's MAP label is 1.
    Foreground(Vec<bool>),
}

/// DenseCRF on one device. Owns its device buffers and keeps them: a call of the same
/// size as the previous one allocates nothing. Calls are serialised (one at a time).
#[derive(Debug)]
pub struct CrfDevice {
    dev: Dev,
    state: Mutex<State>,
}

/// Buffers kept from call to call.
#[derive(Debug, Default)]
pub(crate) struct State {
    /// The positional and the bilateral lattice (or the one of [`CrfDevice::filter`]).
    pub lattices: [Option<DeviceLattice>; 2],
    pub mean_field: Option<MeanField>,
}

/// The lattice in `slot` for `plan` and values of up to `max_vs` components, reused
/// when the last one was made for the same.
pub(crate) fn lattice_for<'s>(
    dev: &Dev,
    slot: &'s mut Option<DeviceLattice>,
    plan: Plan,
    max_vs: usize,
) -> Result<&'s mut DeviceLattice> {
    if !slot
        .as_ref()
        .is_some_and(|l| l.plan == plan && l.max_vs == max_vs)
    {
        *slot = None; // free before allocating anew
        *slot = Some(DeviceLattice::new(dev, plan, max_vs)?);
    }
    Ok(slot.as_mut().expect("just set"))
}

impl CrfDevice {
    /// DenseCRF on `dev`; allocates nothing until the first call.
    pub fn new(dev: Dev) -> CrfDevice {
        CrfDevice {
            dev,
            state: Mutex::new(State::default()),
        }
    }

    /// The device's counters (launches, allocations, copies, syncs).
    pub fn counters(&self) -> Counters {
        self.dev.counters()
    }

    /// Mean-field inference on `image` with unary energies `unary`, pixel-major
    /// `(h·w, labels)` (−log probabilities), as `post::crf::dense_crf` on the CPU.
    /// Downloads what `want` says.
    ///
    /// # Errors
    /// [`Error::InvalidParam`] for sizes the device lattice cannot take (see
    /// `plan::Plan::new`) or inconsistent shapes; device errors.
    pub fn run(
        &self,
        image: CrfImage,
        unary: &[f32],
        labels: usize,
        spec: &CrfSpec,
        want: CrfWant,
    ) -> Result<CrfResult> {
        let n = image.h * image.w;
        if n == 0 || image.channels == 0 || image.pixels.len() != n * image.channels {
            return Err(Error::param(
                "image",
                format!(
                    "{} bytes for an image of (H, W, C) = ({}, {}, {})",
                    image.pixels.len(),
                    image.h,
                    image.w,
                    image.channels
                ),
            ));
        }
        if labels == 0 || unary.len() != n * labels {
            return Err(Error::param(
                "unary",
                format!("{} values for {n} pixels × {labels} labels", unary.len()),
            ));
        }
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        mean_field::run(&self.dev, &mut state, image, unary, labels, spec, want)
    }

    /// The permutohedral-lattice filter alone: `s ∘ L(s ∘ input)` for `features`
    /// point-major `(n, d)`, `input` `(n, vs)` and `scale` `(n)` — the twin of the CPU's
    /// `post::crf::lattice_filter`. Returns the output and the lattice's vertex count.
    ///
    /// # Errors
    /// As [`CrfDevice::run`].
    pub fn filter(
        &self,
        features: &[f32],
        d: usize,
        input: &[f32],
        scale: &[f32],
        vs: usize,
    ) -> Result<(Vec<f32>, u32)> {
        let n = crate::backend::input::check_lattice_input(features, d, input, scale, vs)?;
        let mut max_abs = vec![0f64; d];
        for f in features.chunks_exact(d) {
            for (m, &x) in max_abs.iter_mut().zip(f) {
                *m = m.max((x as f64).abs());
            }
        }
        let plan = Plan::new(n, &max_abs)?;
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let lattice = lattice_for(&self.dev, &mut state.lattices[0], plan, vs)?;
        let up = |v: &[f32]| DevBuf::upload(&self.dev, v);
        let (inp, sc) = (up(input)?, up(scale)?);
        let mut out = DevBuf::<f32>::zeros(&self.dev, n * vs)?;
        lattice.feats = up(features)?;
        lattice.build(&self.dev)?;
        lattice.filter(
            &self.dev,
            &inp.as_view(),
            &sc.as_view(),
            vs,
            &mut out.as_view_mut(),
        )?;
        let (vertices, fault) = lattice.n_vertices_and_fault()?;
        if fault != 0 {
            return Err(collision());
        }
        Ok((out.download()?, vertices))
    }
}

/// The error of a 64-bit collision of two hashed lattice keys (never seen in practice;
/// the result would be wrong, so it is refused).
pub(crate) fn collision() -> Error {
    Error::Internal(
        "DenseCRF on the device: two lattice keys share a 64-bit hash; use the cpu device".into(),
    )
}

/// Launches of one [`CrfDevice::run`] on an `(h, w, channels)` image with `labels`
/// labels (for counter checks): features + build + normalisation per kernel, the
/// softmax, per iteration one filter per kernel and the update, the labels.
///
/// # Errors
/// As [`CrfDevice::run`] for sizes the device lattice cannot take.
pub fn run_launches(image: (usize, usize, usize), spec: &CrfSpec) -> Result<u64> {
    let (h, w, c) = image;
    let n = h * w;
    let mut launches = 2; // softmax init, labels
    let mut per_iteration = 1; // update
    let mut plans = Vec::new();
    if spec.positional.is_some() {
        plans.push(Plan::new(n, &[1.0, 1.0])?);
    }
    if spec.bilateral.is_some() {
        plans.push(Plan::new(n, &vec![1.0; 2 + c])?);
    }
    for p in &plans {
        // features, build, fill + filter + norm
        launches += 1 + lattice::build_launches(p) + 2 + lattice::filter_launches(p);
        per_iteration += lattice::filter_launches(p);
    }
    Ok(launches + spec.n_iterations as u64 * per_iteration)
}
