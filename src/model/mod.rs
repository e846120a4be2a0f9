//! ViT backbones and linear heads: loading from safetensors in timm, DINO and HF
//! namings, configuration inference, positional-embedding interpolation.

pub mod config;
pub mod head;
pub mod keymap;
pub mod pos_embed;
mod random;
pub mod tensor_file;
mod validate;
pub mod vit;
pub mod weights;

pub use config::{PosEmbedMode, VitConfig};
pub use head::{HeadKind, LinearHead};
pub use keymap::Naming;
pub use validate::check_logits;
pub use vit::Vit;
pub use weights::LoadOptions;
