//! Self-supervised pretraining of the ViT backbone with DINO (Caron et al. 2021,
//! "Emerging Properties in Self-Supervised Vision Transformers"): a student
//! trained to match a momentum teacher's centred, sharpened output on other
//! crops of the same image. docs/pretraining.md describes the method and the
//! defaults.
//!
//! One job per file: `config.rs` (settings), `head.rs` (projection head),
//! `loss.rs` (DINO loss and centre), `multicrop.rs` (augmentation),
//! `schedule.rs` (warm-up + cosine schedules), `teacher.rs` (EMA), `images.rs`
//! (unlabelled images), `init.rs` (DINO's initialisation), `knn.rs` (k-NN health signal), `fit.rs` (the loop), `checkpoint.rs` (save/resume).

pub mod checkpoint;
pub mod config;
pub mod fit;
pub mod head;
pub mod images;
pub mod init;
pub mod knn;
pub mod loss;
pub mod multicrop;
pub mod schedule;
pub mod teacher;

pub use checkpoint::{load_dino, save_dino_state, save_pretrained};
pub use config::DinoConfig;
pub use fit::{pretrain, DinoEpochStats, DinoModels, DinoProgress};
pub use head::{HeadConfig, ProjectionHead};
pub use images::{folder_samples, load_unlabelled};
pub use init::dino_init;
pub use knn::knn_accuracy;
pub use multicrop::MultiCropConfig;
