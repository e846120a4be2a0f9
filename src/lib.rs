//! # explainseg
//!
//! ExplainSeg ("No Masks Needed: Explainable AI for Deriving Segmentation from
//! Classification", Ma, Stathaki, Lazarou): a ViT classifier is explained with
//! Integrated Gradients inside a NoiseTunnel, and the relevance map becomes a mask.
//!
//! This crate provides the engine: ViT loading from safetensors ([`model`]),
//! Pillow-exact pre-processing ([`image`]), a CPU forward and input-gradient
//! backward ([`backend::cpu`]), and Captum-faithful attribution ([`attr`]); the
//! method end to end in [`pipeline`], scored by [`eval`] on the data sets of
//! [`dataset`].
//!
//! The shortest path, load → explain → relevance map:
//!
//! ```
//! use explainseg::attr::{explain, normalize, reduce_channels, ExplainConfig, IgConfig, Normalizer, Reduction};
//! use explainseg::backend::cpu::CpuEngine;
//! use explainseg::image::{load_and_preprocess, PreprocessConfig, ResizeMode};
//! use explainseg::model::{LoadOptions, Vit};
//! use std::path::Path;
//!
//! # fn main() -> explainseg::Result<()> {
//! let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
//! let vit = Vit::load(&fixtures.join("engine/s16_tiny/model_timm.safetensors"), None, &LoadOptions::default())?;
//! let pre = PreprocessConfig { resize: ResizeMode::Fixed { height: 64, width: 64 }, ..Default::default() };
//! let x = load_and_preprocess(&fixtures.join("preprocess/jpeg420_q85.jpg"), &pre)?; // (1, 3, 64, 64)
//!
//! // The paper's defaults are 50 steps × 5 noise samples; fewer here to keep it quick.
//! let cfg = ExplainConfig { ig: IgConfig { n_steps: 8, ..Default::default() }, ..Default::default() };
//! let e = explain(&CpuEngine::new(&vit), x.view(), &cfg, None)?;
//! let relevance = normalize(&reduce_channels(e.attribution.index_axis(ndarray::Axis(0), 0), Reduction::AbsSum), Normalizer::captum())?;
//! assert_eq!(relevance.dim(), (64, 64));
//! println!("class {} explained, max relevance {}", e.predicted, relevance.fold(0f32, |m, v| m.max(*v)));
//! # Ok(())
//! # }
//! ```

pub mod attr;
pub mod backend;
pub mod capi;
pub mod dataset;
pub mod error;
pub mod eval;
pub mod fsutil;
// Fuzz entry points: only with the `fuzzing` feature (fuzz/, `cargo test`).
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
pub mod hash;
pub mod ig;
pub mod image;
pub mod limits;
pub mod model;
pub mod npy;
mod npy_header;
pub mod pipeline;
pub mod post;
pub mod render;
pub mod rng;
pub mod synth;
pub mod train;

pub use error::{Error, Result};
