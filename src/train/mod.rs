//! Training the classifier: the head G on frozen features (linear probing, the
//! paper's setting), or fine-tuning the last blocks or all of the backbone F.
//!
//! One job per file: `data.rs` (the [`Dataset`] trait, folder reader, split,
//! statistics, balancing), `augment.rs`, `optimizer.rs` (SGD/AdamW),
//! `schedule.rs` (step/cosine), `setup.rs` (architectures, heads, positional
//! resampling), `checkpoint.rs` (safetensors in timm naming + resume state),
//! `params.rs` (named tensors), `samples.rs` (the data set readers as
//! training data), `loop.rs`
//! ([`fit`]), `param_grad.rs` (the loss and its parameter gradients, from the
//! CPU backend's forward and block backward), `dino/` (self-supervised
//! pretraining of the backbone, DINO).

pub mod augment;
pub mod checkpoint;
pub mod data;
pub mod dino;
#[path = "loop.rs"]
pub mod fit_loop;
pub mod optimizer;
pub mod param_grad;
pub mod params;
pub mod samples;
pub mod schedule;
pub mod setup;

/// Purposes of the keyed [`crate::rng::Rng`] streams of a training run: any epoch's
/// order or any sample's augmentation is regenerated on its own, which is what makes
/// `--resume` continue exactly like an uninterrupted run.
pub mod stream_key {
    pub const SPLIT: u64 = 1;
    pub const SHUFFLE: u64 = 2;
    pub const AUGMENT: u64 = 3;
    pub const INIT: u64 = 4;
}

pub use augment::AugmentConfig;
pub use checkpoint::{
    load_state, read_checkpoint_meta, save_checkpoint, save_state, CheckpointMeta,
};
pub use data::{Balance, Dataset, FolderDataset, InMemoryDataset, LabeledImage, Prepared};
pub use fit_loop::{accuracy, fit, EpochStats, Progress, Start, TrainConfig, TrainData};
pub use optimizer::{Optimizer, OptimizerKind};
pub use param_grad::Trainable;
pub use samples::{split_sources, SampleDataset};
pub use schedule::Schedule;
pub use setup::{arch_config, new_head, prepare_model};
