//! The loaded model: configuration, weights, optional classifier head, and a cache
//! of positional tables per input grid.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::config::{PosEmbedMode, VitConfig};
use super::head::LinearHead;
use super::keymap::Naming;
use super::pos_embed::pos_embed_for_grid;
use super::weights::{load_vit, load_vit_bytes, LoadOptions, VitWeights};
use crate::error::{Error, Result};
use crate::image::Normalization;

/// A ViT classifier ready for inference. Immutable after loading, so one `Vit` can
/// serve many threads at once (the positional cache is behind a mutex).
#[derive(Debug)]
pub struct Vit {
    pub config: VitConfig,
    pub weights: VitWeights,
    pub head: Option<LinearHead>,
    pub pos_embed_mode: PosEmbedMode,
    /// Which naming the backbone file used.
    pub naming: Naming,
    /// The input mean/std the model was trained with, when its file records them
    /// (checkpoints of `explainseg train`); callers default to it over ImageNet's.
    pub normalization: Option<Normalization>,
    /// Class names by index, when its file records them; empty otherwise.
    pub class_names: Vec<String>,
    pos_cache: Mutex<PosCache>,
}

/// Interpolated positional tables by patch grid (rows, cols).
type PosCache = HashMap<(usize, usize), Arc<Vec<f32>>>;

impl Vit {
    /// Loads a backbone from `backbone` and the head from the same file or `head`.
    ///
    /// # Errors
    /// See [`load_vit`].
    pub fn load(backbone: &Path, head: Option<&Path>, opts: &LoadOptions) -> Result<Vit> {
        Ok(Self::from_loaded(load_vit(backbone, head, opts)?, opts))
    }

    /// Loads a model (backbone and head) from safetensors bytes in memory; `name`
    /// stands for the file in error messages.
    ///
    /// # Errors
    /// See [`load_vit`].
    pub fn from_bytes(bytes: &[u8], name: &str, opts: &LoadOptions) -> Result<Vit> {
        Ok(Self::from_loaded(
            load_vit_bytes(bytes, Path::new(name), opts)?,
            opts,
        ))
    }

    fn from_loaded(loaded: super::weights::LoadedVit, opts: &LoadOptions) -> Vit {
        Vit {
            config: loaded.config,
            weights: loaded.weights,
            head: loaded.head,
            pos_embed_mode: opts.pos_embed_mode,
            naming: loaded.naming,
            normalization: loaded.normalization,
            class_names: loaded.class_names,
            pos_cache: Mutex::new(HashMap::new()),
        }
    }

    /// The name of class `index`: the recorded one, else `class <index>`.
    pub fn class_name(&self, index: usize) -> String {
        self.class_names
            .get(index)
            .cloned()
            .unwrap_or_else(|| format!("class {index}"))
    }

    /// Assembles a model from already-checked parts.
    pub fn from_parts(
        config: VitConfig,
        weights: VitWeights,
        head: Option<LinearHead>,
        pos_embed_mode: PosEmbedMode,
    ) -> Vit {
        Vit {
            config,
            weights,
            head,
            pos_embed_mode,
            naming: Naming::TimmOrDino,
            normalization: None,
            class_names: Vec::new(),
            pos_cache: Mutex::new(HashMap::new()),
        }
    }

    /// Number of classes, or an error if the model has no head.
    pub fn classes(&self) -> Result<usize> {
        self.head.as_ref().map(|h| h.classes).ok_or_else(|| {
            Error::param("head", "the model has no classifier head; pass a head file")
        })
    }

    /// The head, or an error saying one is needed.
    pub fn require_head(&self) -> Result<&LinearHead> {
        self.head.as_ref().ok_or_else(|| {
            Error::param("head", "the model has no classifier head; pass a head file")
        })
    }

    /// Forgets the interpolated positional tables; call after changing
    /// `weights.pos_embed` (training does, after each update).
    pub fn clear_pos_cache(&self) {
        self.pos_cache
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
            .clear();
    }

    /// Positional table (1 + rows·cols, D) for a patch grid, interpolated once per
    /// grid with this model's [`PosEmbedMode`].
    pub fn pos_embed(&self, grid: (usize, usize)) -> Result<Arc<Vec<f32>>> {
        let mut cache = self
            .pos_cache
            .lock()
            .unwrap_or_else(|poison| poison.into_inner());
        if let Some(t) = cache.get(&grid) {
            return Ok(t.clone());
        }
        let table = Arc::new(pos_embed_for_grid(
            &self.config,
            &self.weights.pos_embed,
            grid,
            self.pos_embed_mode,
        )?);
        cache.insert(grid, table.clone());
        Ok(table)
    }
}
