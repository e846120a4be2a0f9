//! The k-NN health signal of DINO's `eval_knn.py`: features are the backbone's
//! final-normed CLS tokens, L2-normalised; each image is classified by its k
//! most cosine-similar *other* images of the set (leave one out), each voting
//! for its label with weight exp(similarity/T) (k = 20, T = 0.07 in DINO).

use crate::backend::cpu::forward::{forward_in, Workspace};
use crate::backend::cpu::gemm::Threads;
use crate::error::{Error, Result};
use crate::image::Normalization;
use crate::model::Vit;
use crate::train::data::Prepared;

/// L2-normalised CLS features (n, D) of a headless backbone on `set`.
fn normalised_features(vit: &Vit, set: &Prepared, norm: &Normalization) -> Result<Vec<f32>> {
    let rows: Vec<usize> = (0..set.len()).collect();
    let mut out = Vec::with_capacity(set.len() * vit.config.dim);
    let mut ws = Workspace::default();
    for chunk in rows.chunks(64) {
        let x = set.batch(chunk, norm, None);
        let mut state = forward_in(vit, x.view(), false, ws, Threads::Pool, None)?;
        ws = std::mem::take(&mut state.workspace);
        for row in state.features.outer_iter() {
            let n = row.iter().map(|v| v * v).sum::<f32>().sqrt().max(1e-12);
            out.extend(row.iter().map(|v| v / n));
        }
    }
    Ok(out)
}

/// Leave-one-out weighted k-NN accuracy of `vit`'s features on the labelled `set`.
///
/// # Errors
/// [`Error::InvalidParam`] for fewer than two images, k = 0 or T ≤ 0; forward errors.
pub fn knn_accuracy(
    vit: &Vit,
    set: &Prepared,
    norm: &Normalization,
    k: usize,
    temperature: f32,
) -> Result<f32> {
    if set.len() < 2 || k == 0 || temperature.is_nan() || temperature <= 0.0 {
        return Err(Error::param(
            "k-NN",
            "needs two labelled images, k ≥ 1 and T > 0",
        ));
    }
    let mut plain = Vit::from_parts(
        vit.config.clone(),
        vit.weights.clone(),
        None,
        vit.pos_embed_mode,
    );
    plain.normalization = None;
    let d = vit.config.dim;
    let f = normalised_features(&plain, set, norm)?;
    let classes = set.labels.iter().max().map_or(0, |m| m + 1);
    let n = set.len();
    let mut hits = 0usize;
    for i in 0..n {
        let fi = &f[i * d..][..d];
        let mut sims: Vec<(f32, usize)> = (0..n)
            .filter(|&j| j != i)
            .map(|j| (fi.iter().zip(&f[j * d..][..d]).map(|(a, b)| a * b).sum(), j))
            .collect();
        sims.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut votes = vec![0f64; classes];
        for &(s, j) in sims.iter().take(k) {
            votes[set.labels[j]] += ((s / temperature) as f64).exp();
        }
        let pred = (0..classes)
            .max_by(|&a, &b| votes[a].total_cmp(&votes[b]).then(b.cmp(&a)))
            .unwrap_or(0);
        hits += usize::from(pred == set.labels[i]);
    }
    Ok(hits as f32 / n as f32)
}
