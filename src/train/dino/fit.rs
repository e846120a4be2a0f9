//! The DINO loop. Per step: the multi-crop views of a batch; the teacher
//! (backbone + head, no gradient) on the two global views; the student on every
//! view, keeping what its backward needs; the DINO loss; the student's head and
//! backbone backward (local views run at their own size, the positional table
//! interpolated, its gradient sent back through the interpolation); per-tensor
//! gradient clipping; AdamW at the step's rate and weight decay; the teacher's
//! EMA and the centre's.
//!
//! Reproducibility as in `train`: each image's crops come from a stream keyed by
//! (seed, epoch, image), each epoch's order from (seed, epoch); the student runs
//! in slices of at most eight images, one per thread, whose gradients are added
//! in slice order, so a fixed thread count gives bit-identical weights.

use std::time::Instant;

use ndarray::{s, Array4};
use rayon::prelude::*;

use super::config::DinoConfig;
use super::head::{HeadGrads, ProjectionHead};
use super::knn::knn_accuracy;
use super::loss::{dino_loss, update_center};
use super::multicrop::multi_crop;
use super::schedule::{teacher_temp_at, CosineSchedule};
use super::teacher::ema_update;
use crate::backend::cpu::forward::{forward_in, Workspace};
use crate::backend::cpu::gemm::Threads;
use crate::error::{Error, Result};
use crate::image::Normalization;
use crate::model::{PosEmbedMode, Vit};
use crate::rng::Rng;
use crate::train::data::Prepared;
use crate::train::optimizer::{NamedUpdate, Optimizer, OptimizerKind};
use crate::train::param_grad::{backbone_backward, forward_for_grads, ParamGrads, Trainable};
use crate::train::params::named_tensors_mut;
use crate::train::stream_key;

/// Student, teacher, centre and optimizer: everything a run carries from step to step.
#[derive(Debug)]
pub struct DinoModels {
    pub student: Vit,
    pub student_head: ProjectionHead,
    pub teacher: Vit,
    pub teacher_head: ProjectionHead,
    pub center: Vec<f32>,
    pub optimizer: Optimizer,
    pub epochs_done: usize,
}

/// DINO's AdamW (PyTorch defaults; the decay comes from the schedule).
pub fn dino_optimizer() -> OptimizerKind {
    OptimizerKind::AdamW {
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
    }
}

/// A copy of `vit`'s backbone without head (the teacher starts as the student).
pub fn backbone_copy(vit: &Vit) -> Vit {
    Vit::from_parts(
        vit.config.clone(),
        vit.weights.clone(),
        None,
        vit.pos_embed_mode,
    )
}

impl DinoModels {
    /// A fresh run from `backbone` (its classifier head, if any, is dropped):
    /// a seeded projection head, the teacher a copy of the student, centre 0.
    /// Positions are interpolated for the local crops as DINO does.
    pub fn new(backbone: &Vit, cfg: &DinoConfig) -> DinoModels {
        let mut student = backbone_copy(backbone);
        student.pos_embed_mode = PosEmbedMode::Dino;
        let head = ProjectionHead::new(student.config.dim, cfg.head, cfg.seed);
        let teacher = backbone_copy(&student);
        DinoModels {
            student,
            teacher,
            teacher_head: head.clone(),
            student_head: head,
            center: vec![0.0; cfg.head.out_dim],
            optimizer: Optimizer::new(dino_optimizer()),
            epochs_done: 0,
        }
    }
}

/// One epoch's numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct DinoEpochStats {
    /// From 0.
    pub epoch: usize,
    /// Rate and decay of the epoch's last step.
    pub lr: f32,
    pub weight_decay: f32,
    pub momentum: f32,
    pub teacher_temp: f32,
    /// Means over the epoch's steps.
    pub loss: f32,
    pub teacher_entropy: f32,
    pub teacher_marginal_entropy: f32,
    /// `loss − teacher_entropy`: the mean KL(teacher ‖ student) over the crop
    /// pairs, how far the student is from its targets. Falls as it learns, even
    /// while the loss itself rises with the teacher's entropy early in a run.
    pub student_kl: f32,
    /// Leave-one-out k-NN accuracy of the teacher's features on a labelled set,
    /// when one is given.
    pub knn_accuracy: Option<f32>,
    pub images_per_s: f64,
    pub seconds_per_step: f64,
}

/// What [`pretrain`] reports while it runs.
#[derive(Debug)]
pub enum DinoProgress<'a> {
    EpochStart {
        epoch: usize,
        epochs: usize,
        steps: usize,
    },
    Step {
        loss: f32,
    },
    EpochEnd(&'a DinoEpochStats),
}

/// The schedules of a run with `steps` steps per epoch.
struct Schedules {
    lr: CosineSchedule,
    wd: CosineSchedule,
    momentum: CosineSchedule,
}

impl Schedules {
    fn new(cfg: &DinoConfig, steps: usize) -> Schedules {
        let total = cfg.epochs * steps;
        let cosine = |base: f32, end: f32, warmup: usize| CosineSchedule {
            base: base as f64,
            end: end as f64,
            total,
            warmup,
            start: 0.0,
        };
        Schedules {
            lr: cosine(
                cfg.lr * cfg.batch_size as f32 / 256.0,
                cfg.min_lr,
                cfg.warmup_epochs * steps,
            ),
            wd: cosine(cfg.weight_decay, cfg.weight_decay_end, 0),
            momentum: cosine(cfg.momentum_teacher, 1.0, 0),
        }
    }
}

/// The epoch's batches: a seeded shuffle, whole batches only (DINO drops the
/// last partial one) unless the data hold less than one batch.
fn epoch_batches(n: usize, batch: usize, seed: u64, epoch: usize) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..n).collect();
    Rng::stream(seed, &[stream_key::SHUFFLE, epoch as u64]).shuffle(&mut order);
    if n < batch {
        return vec![order];
    }
    order.chunks_exact(batch).map(<[usize]>::to_vec).collect()
}

/// Steps per epoch for `n` images.
pub fn steps_per_epoch(n: usize, batch: usize) -> usize {
    if n < batch {
        1
    } else {
        n / batch
    }
}

/// View `v` of every image's crops as a normalised (batch, 3, size, size) array.
fn view_batch(crops: &[Vec<Vec<f32>>], v: usize, size: usize, norm: &Normalization) -> Array4<f32> {
    let mut x = Array4::<f32>::zeros((crops.len(), 3, size, size));
    for (b, img) in crops.iter().enumerate() {
        let hwc = &img[v];
        for c in 0..3 {
            let (m, s) = (norm.mean[c], norm.std[c]);
            for i in 0..size {
                for j in 0..size {
                    x[[b, c, i, j]] = (hwc[(i * size + j) * 3 + c] - m) / s;
                }
            }
        }
    }
    x
}

/// DINO's parameter groups: biases and one-dimensional tensors (norms) are not decayed.
fn decayed(name: &str) -> bool {
    !(name.ends_with(".bias")
        || name.ends_with("norm.weight")
        || name.contains(".norm1.")
        || name.contains(".norm2."))
}

/// DINO's `clip_gradients`: each tensor's gradient scaled to norm ≤ `clip`.
fn clip_tensor(g: &mut [f32], clip: f32) {
    let norm = g
        .iter()
        .map(|v| (*v as f64) * (*v as f64))
        .sum::<f64>()
        .sqrt() as f32;
    let coef = clip / (norm + 1e-6);
    if coef < 1.0 {
        g.iter_mut().for_each(|v| *v *= coef);
    }
}

/// One step's numbers.
struct StepOut {
    loss: f32,
    teacher_entropy: f32,
    teacher_marginal_entropy: f32,
}

/// Slices of the batch each thread runs: (view, first image, end).
fn slices(views: usize, batch: usize) -> Vec<(usize, usize, usize)> {
    let threads = rayon::current_num_threads().max(1);
    let per = batch.div_ceil(threads.min(batch)).clamp(1, 8);
    (0..views)
        .flat_map(|v| {
            (0..batch)
                .step_by(per)
                .map(move |s| (v, s, (s + per).min(batch)))
        })
        .collect()
}

/// Normalised CLS features (2·batch, D) of the teacher on the two global views.
fn teacher_features(teacher: &Vit, views: &[Array4<f32>]) -> Result<Vec<f32>> {
    let mut out = Vec::new();
    let mut ws = Workspace::default();
    for x in &views[..2] {
        let mut state = forward_in(teacher, x.view(), false, ws, Threads::Pool, None)?;
        ws = std::mem::take(&mut state.workspace);
        out.extend(state.features.iter());
    }
    Ok(out)
}

#[allow(clippy::too_many_arguments)]
fn step(
    m: &mut DinoModels,
    data: &Prepared,
    norm: &Normalization,
    cfg: &DinoConfig,
    rows: &[usize],
    epoch: usize,
    it: usize,
    sched: &Schedules,
) -> Result<StepOut> {
    let crops_cfg = &cfg.crops;
    let n_views = crops_cfg.crops();
    let batch = rows.len();
    let d = m.student.config.dim;
    let crops: Vec<Vec<Vec<f32>>> = rows
        .par_iter()
        .map(|&i| {
            let mut rng = Rng::stream(cfg.seed, &[stream_key::AUGMENT, epoch as u64, i as u64]);
            multi_crop(&data.images[i], data.side, crops_cfg, &mut rng)
        })
        .collect::<Result<_>>()?;
    let views: Vec<Array4<f32>> = (0..n_views)
        .map(|v| {
            let size = if v < 2 {
                crops_cfg.global_size
            } else {
                crops_cfg.local_size
            };
            view_batch(&crops, v, size, norm)
        })
        .collect();
    drop(crops);

    // Teacher targets.
    let t_feat = teacher_features(&m.teacher, &views)?;
    let t_out = m.teacher_head.forward(&t_feat, 2 * batch, Threads::Pool);

    // Student forward, slice by slice, keeping what the backward needs.
    let items = slices(n_views, batch);
    let student = &m.student;
    let mut states = items
        .par_iter()
        .map(|&(v, a, b)| {
            forward_for_grads(
                student,
                views[v].slice(s![a..b, .., .., ..]),
                Trainable::All,
                Threads::Single,
            )
        })
        .collect::<Result<Vec<_>>>()?;
    let mut s_feat = Vec::with_capacity(n_views * batch * d);
    for st in &states {
        s_feat.extend(st.features.iter());
    }
    let s_fwd = m
        .student_head
        .forward(&s_feat, n_views * batch, Threads::Pool);
    let temp = teacher_temp_at(
        cfg.warmup_teacher_temp,
        cfg.teacher_temp,
        cfg.warmup_teacher_temp_epochs,
        epoch,
    );
    let loss = dino_loss(
        &s_fwd.output,
        &t_out.output,
        &m.center,
        n_views,
        batch,
        cfg.student_temp,
        temp,
    )?;
    if !loss.loss.is_finite() {
        return Err(Error::param(
            "lr",
            format!(
                "the loss diverged ({}) in epoch {epoch}; lower the learning rate",
                loss.loss
            ),
        ));
    }

    // Student backward: head, then each slice's backbone part, added in order.
    let mut head_grads: HeadGrads = m.student_head.zero_grads();
    let dfeat = m
        .student_head
        .backward(&s_fwd, &loss.dstudent, &mut head_grads, Threads::Pool);
    let parts = items
        .par_iter()
        .zip(states.par_iter_mut())
        .map(|(&(v, a, b), st)| {
            let mut g = ParamGrads::zeros_backbone(student, Trainable::All);
            let row0 = v * batch + a;
            let df = &dfeat[row0 * d..][..(b - a) * d];
            backbone_backward(
                student,
                st,
                views[v].slice(s![a..b, .., .., ..]),
                df,
                Trainable::All,
                &mut g,
                Threads::Single,
            )?;
            Ok(g)
        })
        .collect::<Result<Vec<_>>>()?;
    drop(states);
    let mut parts = parts.into_iter();
    let mut grads = parts
        .next()
        .ok_or_else(|| Error::Internal("no batch slice was run".into()))?;
    for mut p in parts {
        grads.add(&mut p);
    }

    // Clipping, then the update (the last layer waits out its frozen epochs).
    if cfg.clip_grad > 0.0 {
        for g in grads.tensors_mut() {
            clip_tensor(g, cfg.clip_grad);
        }
        for g in head_grads.tensors_mut() {
            clip_tensor(g, cfg.clip_grad);
        }
    }
    let (lr, wd) = (sched.lr.at(it), sched.wd.at(it));
    let frozen_last = epoch < cfg.freeze_last_layer;
    {
        let DinoModels {
            student,
            student_head,
            optimizer,
            ..
        } = m;
        let mut params: std::collections::BTreeMap<String, &mut Vec<f32>> =
            named_tensors_mut(student).into_iter().collect();
        params.extend(student_head.tensors_mut());
        let mut updates = Vec::new();
        let named = grads.named().into_iter().chain(head_grads.named());
        for (name, g) in named {
            if frozen_last && name == "head.last_layer.weight_v" {
                continue;
            }
            let p = params
                .remove(&name)
                .ok_or_else(|| Error::Internal(format!("gradient `{name}` fits no tensor")))?;
            updates.push(NamedUpdate {
                weight_decay: if decayed(&name) { wd } else { 0.0 },
                name,
                param: p,
                grad: g,
            });
        }
        optimizer.step_named(updates, lr)?;
    }
    m.student.clear_pos_cache();

    // Teacher and centre.
    let momentum = sched.momentum.at(it);
    ema_update(
        &mut m.teacher,
        &mut m.teacher_head,
        &mut m.student,
        &mut m.student_head,
        momentum,
    )?;
    update_center(&mut m.center, &loss.batch_center, cfg.center_momentum);
    Ok(StepOut {
        loss: loss.loss,
        teacher_entropy: loss.teacher_entropy,
        teacher_marginal_entropy: loss.teacher_marginal_entropy,
    })
}

/// DINO's k-NN settings (`eval_knn.py`): 20 neighbours, temperature 0.07.
const KNN_K: usize = 20;
const KNN_T: f32 = 0.07;

/// Pretrains `m` on the images of `data` (labels unused), from epoch
/// `m.epochs_done` to `cfg.epochs`; `norm` normalises the crops. After each
/// epoch, the teacher's k-NN accuracy on `knn` (labelled images at the global
/// crop size) is measured if given, then `on_epoch` runs (to save); an error
/// from it stops the run.
///
/// # Errors
/// Invalid settings, an empty data set, a diverging loss, and what `on_epoch` returns.
pub fn pretrain(
    m: &mut DinoModels,
    data: &Prepared,
    norm: &Normalization,
    cfg: &DinoConfig,
    knn: Option<&Prepared>,
    progress: &mut dyn FnMut(DinoProgress),
    on_epoch: &mut dyn FnMut(&DinoModels, &DinoEpochStats) -> Result<()>,
) -> Result<Vec<DinoEpochStats>> {
    cfg.validate()?;
    if data.is_empty() {
        return Err(Error::param("data", "no images to pretrain on"));
    }
    if m.center.len() != cfg.head.out_dim || m.student_head.config != cfg.head {
        return Err(Error::param(
            "head",
            "the run's head differs from the settings",
        ));
    }
    m.student
        .config
        .grid_for(cfg.crops.global_size, cfg.crops.global_size)?;
    m.student
        .config
        .grid_for(cfg.crops.local_size, cfg.crops.local_size)?;
    let steps = steps_per_epoch(data.len(), cfg.batch_size);
    let sched = Schedules::new(cfg, steps);
    let mut history = Vec::new();
    for epoch in m.epochs_done..cfg.epochs {
        let batches = epoch_batches(data.len(), cfg.batch_size, cfg.seed, epoch);
        progress(DinoProgress::EpochStart {
            epoch,
            epochs: cfg.epochs,
            steps: batches.len(),
        });
        let t0 = Instant::now();
        let (mut loss, mut ent, mut marg, mut images) = (0f64, 0f64, 0f64, 0usize);
        for (k, rows) in batches.iter().enumerate() {
            let it = epoch * steps + k;
            let out = step(m, data, norm, cfg, rows, epoch, it, &sched)?;
            loss += out.loss as f64;
            ent += out.teacher_entropy as f64;
            marg += out.teacher_marginal_entropy as f64;
            images += rows.len();
            progress(DinoProgress::Step { loss: out.loss });
        }
        let seconds = t0.elapsed().as_secs_f64();
        let n = batches.len() as f64;
        m.epochs_done = epoch + 1;
        let last = epoch * steps + batches.len() - 1;
        let stats = DinoEpochStats {
            epoch,
            lr: sched.lr.at(last),
            weight_decay: sched.wd.at(last),
            momentum: sched.momentum.at(last),
            teacher_temp: teacher_temp_at(
                cfg.warmup_teacher_temp,
                cfg.teacher_temp,
                cfg.warmup_teacher_temp_epochs,
                epoch,
            ),
            loss: (loss / n) as f32,
            teacher_entropy: (ent / n) as f32,
            teacher_marginal_entropy: (marg / n) as f32,
            student_kl: ((loss - ent) / n) as f32,
            knn_accuracy: match knn {
                Some(set) => Some(knn_accuracy(&m.teacher, set, norm, KNN_K, KNN_T)?),
                None => None,
            },
            images_per_s: images as f64 / seconds.max(1e-9),
            seconds_per_step: seconds / n,
        };
        progress(DinoProgress::EpochEnd(&stats));
        on_epoch(m, &stats)?;
        history.push(stats);
    }
    Ok(history)
}
