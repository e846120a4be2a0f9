//! Feature maps from the ViT at the patch grid (docs/method.md §8, paper §3.4): a scalar per
//! patch, min-max normalised to [0, 1], to fuse with the relevance map.
//!
//! Sources: one facet (query, key, value) or the output tokens of a chosen block,
//! reduced per patch by the first principal component or by the L2 norm; or the
//! CLS→patch attention of that block (mean over all or chosen heads, as DINO's
//! attention maps and dino-vit-features' saliency).

use ndarray::{Array2, ArrayView2, Axis};

use crate::backend::{BlockTaps, Engine, Facet, TapRequest};
use crate::error::{Error, Result};

/// Which per-patch descriptor is reduced to a map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Descriptor {
    Facet(Facet),
    /// The block's output tokens (before the final norm).
    Tokens,
}

/// How descriptors (patches × D) become one value per patch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduce {
    /// Projection on the first principal component of the image's descriptors
    /// (centred). Its sign is arbitrary; see [`FeatureConfig::sign_reference`].
    FirstPrincipalComponent,
    /// L2 norm of each descriptor (a cheap saliency proxy).
    Norm,
}

/// A feature map definition. Default: PC1 of the last block's keys (TokenCut and
/// dino-vit-features use last-layer keys).
#[derive(Debug, Clone, PartialEq)]
pub enum FeatureSource {
    Descriptor {
        descriptor: Descriptor,
        reduce: Reduce,
    },
    /// CLS→patch attention averaged over `heads` (all heads when empty).
    ClsAttention { heads: Vec<usize> },
}

/// Settings of [`feature_map`].
#[derive(Debug, Clone, PartialEq)]
pub struct FeatureConfig {
    pub source: FeatureSource,
    /// Block to read (`None`: the last).
    pub layer: Option<usize>,
}

impl Default for FeatureConfig {
    fn default() -> Self {
        FeatureConfig {
            source: FeatureSource::Descriptor {
                descriptor: Descriptor::Facet(Facet::Key),
                reduce: Reduce::FirstPrincipalComponent,
            },
            layer: None,
        }
    }
}

/// The raw descriptors (patches, D) of the single image `x` at block `layer`
/// (`None`: the last), CLS dropped, features in head-major order (h·head_dim + d,
/// as TokenCut concatenates heads).
///
/// # Errors
/// The engine's errors; a layer beyond the depth.
pub fn patch_descriptors(
    engine: &dyn Engine,
    x: ndarray::ArrayView4<f32>,
    descriptor: Descriptor,
    layer: Option<usize>,
) -> Result<Array2<f32>> {
    descriptors_of(&engine.block_taps(x, layer)?, descriptor)
}

fn descriptors_of(taps: &BlockTaps, descriptor: Descriptor) -> Result<Array2<f32>> {
    match descriptor {
        Descriptor::Facet(f) => {
            let a = taps.facet(f); // (heads, T, hd)
            let (h, t, hd) = a.dim();
            Ok(Array2::from_shape_fn((t - 1, h * hd), |(p, k)| {
                a[[k / hd, p + 1, k % hd]]
            }))
        }
        Descriptor::Tokens => Ok(taps.output_tokens()?.slice_move(ndarray::s![1.., ..])),
    }
}

/// The feature map (rows, cols) of image `x` (1, 3, H, W), in [0, 1].
///
/// `sign_reference` (same grid) fixes the sign of a principal component: the map
/// is flipped if it correlates negatively with the reference (e.g. the relevance
/// map pooled to the grid). Without one, the sign makes the largest-magnitude
/// projection positive.
///
/// # Errors
/// Forward errors; [`Error::InvalidParam`] for head indices out of range or a
/// reference of the wrong grid.
pub fn feature_map(
    engine: &dyn Engine,
    x: ndarray::ArrayView4<f32>,
    cfg: &FeatureConfig,
    sign_reference: Option<ArrayView2<f32>>,
) -> Result<Array2<f32>> {
    feature_map_of(&engine.block_taps(x, cfg.layer)?, cfg, sign_reference)
}

impl FeatureConfig {
    /// The block read, counted from 0, in a model of `depth` blocks.
    pub fn block(&self, depth: usize) -> usize {
        self.layer.unwrap_or(depth.saturating_sub(1))
    }

    /// The taps an explanation should bring back for this feature map
    /// ([`super::explain_map`]), or `None` when they cannot come from a device (the
    /// block's output tokens are not kept there).
    pub fn taps(&self, depth: usize) -> Option<TapRequest> {
        let layer = self.block(depth);
        match self.source {
            FeatureSource::ClsAttention { .. } => Some(TapRequest {
                layer,
                attention: true,
            }),
            FeatureSource::Descriptor {
                descriptor: Descriptor::Facet(_),
                ..
            } => Some(TapRequest {
                layer,
                attention: false,
            }),
            FeatureSource::Descriptor {
                descriptor: Descriptor::Tokens,
                ..
            } => None,
        }
    }
}

/// [`feature_map`] from block taps already read (those of block `cfg.layer`).
///
/// # Errors
/// As [`feature_map`].
pub fn feature_map_of(
    taps: &BlockTaps,
    cfg: &FeatureConfig,
    sign_reference: Option<ArrayView2<f32>>,
) -> Result<Array2<f32>> {
    let (gr, gc) = taps.grid;
    let values: Vec<f32> = match &cfg.source {
        FeatureSource::ClsAttention { heads } => {
            let a = taps.cls_attention()?; // (heads, gr, gc)
            let all: Vec<usize> = (0..a.dim().0).collect();
            let chosen = if heads.is_empty() { &all } else { heads };
            if let Some(&bad) = chosen.iter().find(|&&h| h >= a.dim().0) {
                return Err(Error::param(
                    "heads",
                    format!("head {bad} does not exist (the model has {})", a.dim().0),
                ));
            }
            let mean = chosen
                .iter()
                .map(|&h| a.index_axis(Axis(0), h).to_owned())
                .reduce(|acc, m| acc + m)
                .expect("at least one head")
                / chosen.len() as f32;
            mean.iter().copied().collect()
        }
        FeatureSource::Descriptor { descriptor, reduce } => {
            let desc = descriptors_of(taps, *descriptor)?;
            match reduce {
                Reduce::Norm => desc
                    .outer_iter()
                    .map(|r| r.iter().map(|v| v * v).sum::<f32>().sqrt())
                    .collect(),
                Reduce::FirstPrincipalComponent => {
                    let mut pc = first_principal_projection(desc.view());
                    orient(&mut pc, sign_reference, (gr, gc))?;
                    pc
                }
            }
        }
    };
    Ok(min_max(
        Array2::from_shape_vec((gr, gc), values).expect("one value per patch"),
    ))
}

/// Projections of the centred rows of `x` (n, d) on their first principal axis
/// (power iteration on the d×d covariance, in f64).
pub fn first_principal_projection(x: ArrayView2<f32>) -> Vec<f32> {
    let (n, d) = x.dim();
    let xf = x.mapv(|v| v as f64);
    let mean = xf.mean_axis(Axis(0)).expect("n ≥ 1");
    let centred = &xf - &mean;
    let cov = centred.t().dot(&centred) / (n.max(2) - 1) as f64;
    // Deterministic start: the diagonal of the covariance (non-zero unless all-constant).
    let mut v: ndarray::Array1<f64> = (0..d)
        .map(|i| cov[[i, i]] + 1e-12 * (i + 1) as f64)
        .collect();
    for _ in 0..500 {
        let next = cov.dot(&v);
        let norm = next.dot(&next).sqrt();
        if norm == 0.0 {
            break;
        }
        let next = next / norm;
        let change = (&next - &v).mapv(f64::abs).sum();
        v = next;
        if change < 1e-12 {
            break;
        }
    }
    centred.dot(&v).iter().map(|p| *p as f32).collect()
}

fn orient(pc: &mut [f32], reference: Option<ArrayView2<f32>>, grid: (usize, usize)) -> Result<()> {
    let flip = match reference {
        Some(r) => {
            if r.dim() != grid {
                return Err(Error::shape(
                    "sign reference (patch grid)",
                    &[grid.0, grid.1],
                    &[r.nrows(), r.ncols()],
                ));
            }
            let rm = r.mean().unwrap_or(0.0);
            pc.iter()
                .zip(r.iter())
                .map(|(p, v)| (*p as f64) * (*v - rm) as f64)
                .sum::<f64>()
                < 0.0
        }
        None => {
            pc.iter()
                .fold(0f32, |m, v| if v.abs() > m.abs() { *v } else { m })
                < 0.0
        }
    };
    if flip {
        pc.iter_mut().for_each(|v| *v = -*v);
    }
    Ok(())
}

/// (v − min)/(max − min); all zeros for a constant map.
pub fn min_max(m: Array2<f32>) -> Array2<f32> {
    let lo = m.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = m.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
        return Array2::zeros(m.dim());
    }
    m.mapv(|v| (v - lo) / (hi - lo))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn principal_projection_separates_two_clusters() {
        // Points along (1, 1) at ±2 plus small orthogonal jitter: PC1 is (1,1)/√2.
        let x = array![[2.0f32, 2.1], [2.1, 2.0], [-2.0, -1.9], [-1.9, -2.0]];
        let p = first_principal_projection(x.view());
        assert!(
            p[0] > 2.5 && p[1] > 2.5 && p[2] < -2.5 && p[3] < -2.5,
            "{p:?}"
        );
    }

    #[test]
    fn orientation_follows_the_reference() {
        let mut pc = vec![1.0f32, -1.0, 2.0, -2.0];
        let reference = array![[0.0f32, 1.0], [0.0, 1.0]];
        orient(&mut pc, Some(reference.view()), (2, 2)).unwrap();
        assert_eq!(pc, vec![-1.0, 1.0, -2.0, 2.0]);
        let mut pc = vec![1.0f32, -3.0];
        orient(&mut pc, None, (1, 2)).unwrap();
        assert_eq!(pc, vec![-1.0, 3.0]);
    }
}
