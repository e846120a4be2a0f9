//! Post-processing: from a relevance (or fused) map to a mask — Otsu, the paper's
//! morphology chain, Normalized Cut, DenseCRF (docs/postprocessing.md).

pub mod crf;
pub mod maskcut;
pub mod morphology;
pub mod ncut;
pub mod otsu;
