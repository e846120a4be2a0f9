//! The training loop: epochs of shuffled (or class-balanced) mini-batches, the
//! cross-entropy's parameter gradients, one optimizer step per batch, the rate
//! from the schedule per epoch, validation accuracy after each epoch.
//!
//! Fast path: when only the head trains and nothing is augmented, the frozen
//! backbone's features are computed once and the epochs run on them.
//!
//! Reproducibility: every random choice is drawn from a stream keyed by (seed,
//! purpose, epoch, position), so a run resumed after epoch e draws what an
//! uninterrupted run would; with a fixed thread count the weights are
//! bit-identical.

use std::time::Instant;

use ndarray::{Array2, Axis};

use super::augment::AugmentConfig;
use super::data::{balanced_class_weights, epoch_order, split_indices, Balance, Dataset, Prepared};
use super::optimizer::{Optimizer, OptimizerKind};
use super::param_grad::{
    cross_entropy_rows, head_grads, loss_and_param_grads, loss_normaliser, LossOptions, ParamGrads,
    Trainable,
};
use super::schedule::Schedule;
use crate::backend::cpu::forward::{forward_in, Workspace};
use crate::backend::cpu::gemm::Threads;
use crate::error::{Error, Result};
use crate::image::Normalization;
use crate::model::Vit;

/// Settings of one training run.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainConfig {
    pub epochs: usize,
    pub batch_size: usize,
    /// Base learning rate (the schedule scales it per epoch).
    pub lr: f32,
    pub optimizer: OptimizerKind,
    pub schedule: Schedule,
    pub trainable: Trainable,
    pub augment: AugmentConfig,
    pub balance: Balance,
    pub seed: u64,
}

impl Default for TrainConfig {
    /// The paper's recipe (§4.1): SGD, lr 0.005, momentum 0.9, ×0.1 every 50
    /// epochs; flips, colour jitter and rotation; the head on a frozen backbone.
    fn default() -> Self {
        TrainConfig {
            epochs: 100,
            batch_size: 32,
            lr: 0.005,
            optimizer: OptimizerKind::Sgd {
                momentum: 0.9,
                weight_decay: 0.0,
            },
            schedule: Schedule::Step {
                every: 50,
                gamma: 0.1,
            },
            trainable: Trainable::Head,
            augment: AugmentConfig::paper(),
            balance: Balance::None,
            seed: 0,
        }
    }
}

impl TrainConfig {
    pub fn validate(&self) -> Result<()> {
        if self.epochs == 0 || self.batch_size == 0 {
            return Err(Error::param(
                "epochs / batch_size",
                "both must be at least 1",
            ));
        }
        if !(self.lr > 0.0 && self.lr.is_finite()) {
            return Err(Error::param(
                "lr",
                format!("{} is not a positive number", self.lr),
            ));
        }
        self.optimizer.validate()?;
        self.schedule.validate()?;
        self.augment.validate()
    }

    /// What must not change between a run and its resumption (all but `epochs`).
    pub fn fingerprint(&self) -> String {
        let TrainConfig {
            batch_size,
            lr,
            schedule,
            trainable,
            augment,
            balance,
            seed,
            ..
        } = self;
        format!("batch {batch_size}, lr {lr}, {schedule:?}, {trainable:?}, {augment:?}, {balance:?}, seed {seed}")
    }
}

/// The two splits at the training size, with the training split's statistics.
#[derive(Debug, Clone)]
pub struct TrainData {
    pub train: Prepared,
    pub val: Prepared,
    pub normalization: Normalization,
    pub class_names: Vec<String>,
}

impl TrainData {
    /// Splits `data` by seed (stratified, `val_fraction` to validation), loads both
    /// splits at `side`×`side` and computes mean/std on the training split only.
    ///
    /// # Errors
    /// Reading errors; [`Error::InvalidParam`] for a bad fraction or fewer than two classes.
    pub fn from_dataset(
        data: &dyn Dataset,
        side: usize,
        val_fraction: f32,
        seed: u64,
    ) -> Result<TrainData> {
        let labels = data.labels()?;
        let class_names = data.class_names();
        if let Some(&bad) = labels.iter().find(|&&l| l >= class_names.len()) {
            return Err(Error::param(
                "label",
                format!("label {bad} but only {} classes", class_names.len()),
            ));
        }
        let (train_idx, val_idx) = split_indices(&labels, val_fraction, seed)?;
        let train = Prepared::load(data, &train_idx, side)?;
        let val = Prepared::load(data, &val_idx, side)?;
        Ok(TrainData::from_prepared(train, val, class_names))
    }

    /// Mean/std come from the training split only (the paper's protocol).
    fn from_prepared(train: Prepared, val: Prepared, class_names: Vec<String>) -> TrainData {
        TrainData {
            normalization: train.channel_stats(),
            train,
            val,
            class_names,
        }
    }

    /// Two parts split by the caller (e.g. by source image, see
    /// [`super::samples::split_sources`]), loaded at `side`×`side`; mean/std from
    /// `train` only.
    ///
    /// # Errors
    /// Reading errors; [`Error::InvalidParam`] when the parts' classes differ.
    pub fn from_parts(train: &dyn Dataset, val: &dyn Dataset, side: usize) -> Result<TrainData> {
        let class_names = train.class_names();
        if val.class_names() != class_names {
            return Err(Error::param(
                "classes",
                format!(
                    "validation classes {:?} differ from training classes {class_names:?}",
                    val.class_names()
                ),
            ));
        }
        let all = |d: &dyn Dataset| (0..d.len()).collect::<Vec<_>>();
        let train = Prepared::load(train, &all(train), side)?;
        let val = Prepared::load(val, &all(val), side)?;
        Ok(TrainData::from_prepared(train, val, class_names))
    }
}

/// One epoch's numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct EpochStats {
    /// From 0.
    pub epoch: usize,
    pub lr: f32,
    /// Mean training loss over the epoch's batches.
    pub loss: f32,
    pub train_accuracy: f32,
    /// `None` without a validation split.
    pub val_accuracy: Option<f32>,
    /// Training images per second (forward + backward + update).
    pub images_per_s: f64,
}

/// What [`fit`] reports while it runs.
#[derive(Debug)]
pub enum Progress<'a> {
    EpochStart {
        epoch: usize,
        epochs: usize,
        batches: usize,
    },
    Batch {
        loss: f32,
    },
    EpochEnd(&'a EpochStats),
}

/// Where a run starts: fresh, or from a saved optimizer after `epochs_done`.
#[derive(Debug, Clone)]
pub struct Start {
    pub optimizer: Optimizer,
    pub epochs_done: usize,
}

/// Features (batch, in_dim) of the frozen backbone for prepared images.
fn features_of(
    vit: &Vit,
    set: &Prepared,
    norm: &Normalization,
    batch: usize,
) -> Result<Array2<f32>> {
    let mut parts = Vec::new();
    let mut ws = Workspace::default();
    let rows: Vec<usize> = (0..set.len()).collect();
    for chunk in rows.chunks(batch.max(1)) {
        let x = set.batch(chunk, norm, None);
        let mut state = forward_in(vit, x.view(), false, ws, Threads::Pool, None)?;
        ws = std::mem::take(&mut state.workspace);
        parts.push(state.features);
    }
    let in_dim = vit.require_head()?.kind.in_dim(vit.config.dim);
    if parts.is_empty() {
        return Ok(Array2::zeros((0, in_dim)));
    }
    ndarray::concatenate(Axis(0), &parts.iter().map(|a| a.view()).collect::<Vec<_>>())
        .map_err(|e| Error::Internal(e.to_string()))
}

/// Head logits for features.
fn head_logits(vit: &Vit, features: &Array2<f32>) -> Result<Array2<f32>> {
    let h = vit.require_head()?;
    let w = ndarray::ArrayView2::from_shape((h.classes, features.ncols()), &h.weight)
        .map_err(|e| Error::Internal(e.to_string()))?;
    let mut logits = features.dot(&w.t());
    logits
        .rows_mut()
        .into_iter()
        .for_each(|mut r| r.iter_mut().zip(&h.bias).for_each(|(v, b)| *v += b));
    Ok(logits)
}

fn argmax(row: ndarray::ArrayView1<f32>) -> usize {
    row.iter()
        .enumerate()
        .fold((0, f32::NEG_INFINITY), |(bi, bv), (i, &v)| {
            if v > bv {
                (i, v)
            } else {
                (bi, bv)
            }
        })
        .0
}

fn correct(logits: &Array2<f32>, labels: &[usize]) -> usize {
    logits
        .outer_iter()
        .zip(labels)
        .filter(|(r, &y)| argmax(r.view()) == y)
        .count()
}

/// Validation accuracy of `vit` on prepared images (full forward).
///
/// # Errors
/// Forward errors.
pub fn accuracy(vit: &Vit, set: &Prepared, norm: &Normalization, batch: usize) -> Result<f32> {
    if set.is_empty() {
        return Err(Error::param("validation", "no images"));
    }
    let logits = head_logits(vit, &features_of(vit, set, norm, batch)?)?;
    Ok(correct(&logits, &set.labels) as f32 / set.len() as f32)
}

/// Trains `vit` (which must have a head with one output per class) on `data`.
/// `on_epoch` runs after each epoch (e.g. to save a checkpoint); an error from
/// it stops the run.
///
/// # Errors
/// Invalid settings, gradient errors, and whatever `on_epoch` returns.
pub fn fit(
    vit: &mut Vit,
    data: &TrainData,
    cfg: &TrainConfig,
    start: Option<Start>,
    progress: &mut dyn FnMut(Progress),
    on_epoch: &mut dyn FnMut(&Vit, &Optimizer, &EpochStats) -> Result<()>,
) -> Result<Vec<EpochStats>> {
    cfg.validate()?;
    let classes = data.class_names.len();
    if vit.require_head()?.classes != classes {
        return Err(Error::param(
            "head",
            format!(
                "the head has {} outputs, the data {classes} classes",
                vit.require_head()?.classes
            ),
        ));
    }
    if let Trainable::LastBlocks(k) = cfg.trainable {
        if k == 0 || k > vit.config.depth {
            return Err(Error::param(
                "finetune",
                format!(
                    "last {k} blocks requested; the model has {}",
                    vit.config.depth
                ),
            ));
        }
    }
    if data.train.is_empty() {
        return Err(Error::param("data", "the training split is empty"));
    }
    let Start {
        mut optimizer,
        epochs_done,
    } = start.unwrap_or(Start {
        optimizer: Optimizer::new(cfg.optimizer),
        epochs_done: 0,
    });
    let class_weights = (cfg.balance == Balance::LossWeights)
        .then(|| balanced_class_weights(&data.train.labels, classes));
    let opts = LossOptions {
        class_weights: class_weights.as_deref(),
    };
    let norm = &data.normalization;
    let fast = cfg.trainable == Trainable::Head && cfg.augment.is_identity();
    let cached = if fast {
        Some((
            features_of(vit, &data.train, norm, cfg.batch_size)?,
            features_of(vit, &data.val, norm, cfg.batch_size)?,
        ))
    } else {
        None
    };
    let mut history = Vec::new();
    for epoch in epochs_done..cfg.epochs {
        let lr = cfg.schedule.lr_at(cfg.lr, epoch);
        let order = epoch_order(&data.train.labels, classes, cfg.balance, cfg.seed, epoch);
        let batches: Vec<&[usize]> = order.chunks(cfg.batch_size).collect();
        progress(Progress::EpochStart {
            epoch,
            epochs: cfg.epochs,
            batches: batches.len(),
        });
        let t0 = Instant::now();
        let (mut loss_sum, mut hits) = (0f64, 0usize);
        let mut first = 0;
        for rows in &batches {
            let labels: Vec<usize> = rows.iter().map(|&i| data.train.labels[i]).collect();
            let (loss, logits, grads) = match &cached {
                Some((train_f, _)) => {
                    let f = train_f.select(Axis(0), rows);
                    let logits = head_logits(vit, &f)?;
                    let head = vit.require_head()?;
                    let normaliser = loss_normaliser(classes, &labels, &opts)?;
                    let (loss, dlogits) =
                        cross_entropy_rows(&logits, &labels, opts.class_weights, normaliser);
                    let mut g = ParamGrads::zeros(vit, head, Trainable::Head);
                    head_grads(&dlogits, &f, &mut g.head_w, &mut g.head_b);
                    (loss, logits, g)
                }
                None => {
                    let aug = (!cfg.augment.is_identity()).then_some((
                        &cfg.augment,
                        cfg.seed,
                        epoch,
                        first,
                    ));
                    let x = data.train.batch(rows, norm, aug);
                    let out = loss_and_param_grads(vit, x.view(), &labels, &opts, cfg.trainable)?;
                    (out.loss, out.logits, out.grads)
                }
            };
            if !loss.is_finite() {
                return Err(Error::param(
                    "lr",
                    format!("the loss diverged ({loss}) in epoch {epoch}; lower the learning rate"),
                ));
            }
            optimizer.step(vit, &grads, lr)?;
            if cfg.trainable.embedding() {
                vit.clear_pos_cache();
            }
            loss_sum += loss as f64;
            hits += correct(&logits, &labels);
            first += rows.len();
            progress(Progress::Batch { loss });
        }
        let seconds = t0.elapsed().as_secs_f64();
        let val_accuracy = match (&cached, data.val.is_empty()) {
            (_, true) => None,
            (Some((_, val_f)), false) => Some(
                correct(&head_logits(vit, val_f)?, &data.val.labels) as f32 / data.val.len() as f32,
            ),
            (None, false) => Some(accuracy(vit, &data.val, norm, cfg.batch_size)?),
        };
        let stats = EpochStats {
            epoch,
            lr,
            loss: (loss_sum / batches.len() as f64) as f32,
            train_accuracy: hits as f32 / order.len() as f32,
            val_accuracy,
            images_per_s: order.len() as f64 / seconds.max(1e-9),
        };
        progress(Progress::EpochEnd(&stats));
        on_epoch(vit, &optimizer, &stats)?;
        history.push(stats);
    }
    Ok(history)
}
