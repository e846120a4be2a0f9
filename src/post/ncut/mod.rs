//! Normalized cut (`docs/postprocessing.md` §1–§3): TokenCut's
//! bipartition of a patch-feature graph, the building blocks MaskCut reuses, and
//! a Shi–Malik cut of a scalar relevance map for the XAI variants.
//!
//! * [`tokencut_bipartition`]: binary cosine graph → dense Fiedler vector with
//!   scipy `eigh(D−W, D, subset_by_index=[1,2])` semantics → split at the mean →
//!   seed rule → the seed's 4-connected component.
//! * [`binary_affinity`], [`binary_affinity_f64`], [`fiedler_dense`],
//!   [`orient_at_mean`], [`seed_component`]: the same steps one by one (MaskCut
//!   iterates them with its own corner rule, which needs the LAPACK sign that
//!   [`fiedler_dense`] reproduces).
//! * [`shi_malik_ncut`], [`foreground_by_relevance`], [`resample_area`]: sparse
//!   graph on a coarse grid of the map, Lanczos eigensolver.
//! * [`ncut_foreground`], [`ncut_mask`]: the NCut variants' mask from that cut
//!   (σ_r scaled to the map's spread, a dilation).
//!
//! Files: `affinity.rs` (graph), `householder.rs` (tridiagonal reduction),
//! `tridiagonal.rs` (bisection, inverse iteration), `dense.rs` (generalized
//! problem), `lanczos.rs` (sparse problem), `components.rs`, `tokencut.rs`,
//! `shi_malik.rs`, `foreground.rs`.

mod affinity;
mod components;
mod dense;
mod foreground;
mod householder;
mod lanczos;
mod shi_malik;
mod tokencut;
mod tridiagonal;

pub use affinity::{binary_affinity, binary_affinity_f64, NORMALIZE_EPS};
pub use components::seed_component;
pub use dense::{fiedler_dense, Fiedler};
pub use foreground::{ncut_foreground, ncut_mask, NcutForeground, NcutForegroundParams};
pub use shi_malik::{
    foreground_by_relevance, resample_area, shi_malik_ncut, shi_malik_split, NcutSplit,
    ShiMalikOutput, ShiMalikParams,
};
pub use tokencut::{
    orient_at_mean, tokencut_bipartition, Oriented, TokenCutOutput, TOKENCUT_EPS, TOKENCUT_TAU,
};
