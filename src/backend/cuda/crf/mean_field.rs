//! Mean-field inference on the device, as the CPU's `post::crf::mean_field::inference`:
//! Q⁰ = softmax(−U); per iteration each kernel's message K_k(Q) = n_k ∘ L_k(n_k ∘ Q),
//! then Q = softmax(−U − Σ_k (−w_k)·K_k(Q)). One upload of the image and the unary,
//! one download of the labels (and of Q when asked): no host sync in between.

use super::kernels;
use super::lattice_for;
use super::plan::Plan;
use super::{CrfImage, CrfResult, CrfSpec, CrfWant, State};
use crate::backend::cuda::api::{Dev, DevBuf};
use crate::error::Result;

/// The per-pixel buffers of one image size and label count.
#[derive(Debug)]
pub(crate) struct MeanField {
    key: (usize, usize, usize),
    image: DevBuf<u8>,
    unary: DevBuf<f32>,
    q: DevBuf<f32>,
    messages: [DevBuf<f32>; 2],
    norms: [DevBuf<f32>; 2],
    ones: DevBuf<f32>,
    filtered_ones: DevBuf<f32>,
    /// Labels, then the fault flag of the lattices.
    labels: DevBuf<i32>,
    /// The foreground mask, then the fault flag.
    foreground: DevBuf<u8>,
    /// A zero flag standing for an absent kernel's.
    no_fault: DevBuf<u32>,
}

impl MeanField {
    fn new(dev: &Dev, n: usize, channels: usize, m: usize) -> Result<Self> {
        let f = |len| DevBuf::<f32>::zeros(dev, len);
        Ok(MeanField {
            key: (n, channels, m),
            image: DevBuf::zeros(dev, n * channels)?,
            unary: f(n * m)?,
            q: f(n * m)?,
            messages: [f(n * m)?, f(n * m)?],
            norms: [f(n)?, f(n)?],
            ones: f(n)?,
            filtered_ones: f(n)?,
            labels: DevBuf::zeros(dev, n + 1)?,
            foreground: DevBuf::zeros(dev, n + 1)?,
            no_fault: DevBuf::zeros(dev, 1)?,
        })
    }
}

/// Copies `src` into the front of `dst` (sizes were checked by the caller).
fn upload_into<T: crate::backend::cuda::api::DevScalar>(
    dev: &Dev,
    src: &[T],
    dst: &mut DevBuf<T>,
) -> Result<()> {
    assert!(
        src.len() <= dst.len(),
        "upload of {} into {}",
        src.len(),
        dst.len()
    );
    // SAFETY: T is plain data; the bytes of `src` are initialised.
    let bytes = unsafe {
        std::slice::from_raw_parts(src.as_ptr().cast::<u8>(), std::mem::size_of_val(src))
    };
    // SAFETY: the destination view covers src.len() values of a live allocation.
    unsafe { dev.htod(bytes, dst.as_view_mut().ptr()) }
}

/// The lattice features of one kernel: (d, sxy, srgb, weight).
fn kernels_of(spec: &CrfSpec, channels: usize) -> Vec<(usize, f32, f32, f32)> {
    let mut k = Vec::with_capacity(2);
    if let Some((sxy, w)) = spec.positional {
        k.push((2, sxy, 1.0, w));
    }
    if let Some((sxy, srgb, w)) = spec.bilateral {
        k.push((2 + channels, sxy, srgb, w));
    }
    k
}

pub(crate) fn run(
    dev: &Dev,
    state: &mut State,
    image: CrfImage,
    unary: &[f32],
    m: usize,
    spec: &CrfSpec,
    want: CrfWant,
) -> Result<CrfResult> {
    let g = &**dev;
    let (h, w, c) = (image.h, image.w, image.channels);
    let n = h * w;
    let kernel_specs = kernels_of(spec, c);
    // Plans first: a size the device cannot take fails before any device work. The
    // feature ranges are the CPU's (x/sxy up to (w−1)/sxy; channel k up to its max/srgb).
    let mut channel_max = vec![0u8; c];
    for px in image.pixels.chunks_exact(c) {
        for (m, &v) in channel_max.iter_mut().zip(px) {
            *m = (*m).max(v);
        }
    }
    let mut plans = Vec::with_capacity(2);
    for &(d, sxy, srgb, _) in &kernel_specs {
        let mut max_abs = vec![((w - 1) as f32 / sxy) as f64, ((h - 1) as f32 / sxy) as f64];
        max_abs.extend(
            channel_max[..d - 2]
                .iter()
                .map(|&v| (v as f32 / srgb) as f64),
        );
        plans.push(Plan::new(n, &max_abs)?);
    }

    if state
        .mean_field
        .as_ref()
        .is_none_or(|mf| mf.key != (n, c, m))
    {
        state.mean_field = None;
        state.mean_field = Some(MeanField::new(dev, n, c, m)?);
    }
    let State {
        lattices,
        mean_field,
    } = state;
    let mf = mean_field.as_mut().expect("just set");
    upload_into(dev, image.pixels, &mut mf.image)?;
    upload_into(dev, unary, &mut mf.unary)?;

    // Build each kernel's lattice and its symmetric normalisation 1/sqrt(L(1) + 1e-20).
    let mut weights = Vec::with_capacity(2);
    for (k, (&(d, sxy, srgb, weight), plan)) in kernel_specs.iter().zip(&plans).enumerate() {
        let lattice = lattice_for(dev, &mut lattices[k], *plan, m.max(1))?;
        kernels::features(
            g,
            &mf.image.as_view(),
            n,
            w,
            d,
            sxy,
            srgb,
            &mut lattice.feats.as_view_mut(),
        )?;
        lattice.build(dev)?;
        kernels::fill(g, &mut mf.ones.as_view_mut(), n, 1.0)?;
        lattice.filter(
            dev,
            &mf.ones.as_view(),
            &mf.ones.as_view(),
            1,
            &mut mf.filtered_ones.as_view_mut(),
        )?;
        kernels::norm(
            g,
            &mf.filtered_ones.as_view(),
            n,
            &mut mf.norms[k].as_view_mut(),
        )?;
        weights.push(weight);
    }

    kernels::softmax_init(g, &mf.unary.as_view(), n, m, &mut mf.q.as_view_mut())?;
    for _ in 0..spec.n_iterations {
        for (k, lattice) in lattices.iter_mut().take(weights.len()).enumerate() {
            let lattice = lattice.as_mut().expect("built above");
            lattice.filter(
                dev,
                &mf.q.as_view(),
                &mf.norms[k].as_view(),
                m,
                &mut mf.messages[k].as_view_mut(),
            )?;
        }
        let messages: Vec<_> = mf
            .messages
            .iter()
            .zip(&weights)
            .map(|(f, &w)| (f.as_view(), w))
            .collect();
        kernels::update(
            g,
            &mf.unary.as_view(),
            &messages,
            n,
            m,
            &mut mf.q.as_view_mut(),
        )?;
    }
    let fault = |k: usize| match &lattices[k] {
        Some(l) if k < weights.len() => l.fault.as_view(),
        _ => mf.no_fault.as_view(),
    };
    let faults = [&fault(0), &fault(1)];
    let q = mf.q.as_view();
    if want == CrfWant::Foreground {
        kernels::labels(g, &q, n, m, faults, &mut mf.foreground.as_view_mut())?;
        let mut mask = mf.foreground.download()?;
        if mask.pop() != Some(0) {
            return Err(super::collision());
        }
        return Ok(CrfResult::Foreground(
            mask.into_iter().map(|b| b == 1).collect(),
        ));
    }
    kernels::labels(g, &q, n, m, faults, &mut mf.labels.as_view_mut())?;
    let mut labels = mf.labels.download()?;
    if labels.pop() != Some(0) {
        return Err(super::collision());
    }
    Ok(match want {
        CrfWant::LabelsAndProbs => CrfResult::LabelsAndProbs(labels, mf.q.download()?),
        _ => CrfResult::Labels(labels),
    })
}
