//! DINO's loss (Caron et al. 2021, Algorithm 1): the teacher's outputs on the two
//! global crops, centred and sharpened, `q = softmax((t − c)/τₜ)`, are the
//! targets of the student's log-softmax at temperature τₛ on every other crop:
//! `L = mean over pairs (q-view i, student view v ≠ i) of mean over images of
//! −Σₖ qₖ log softmax(s/τₛ)ₖ`. The teacher gets no gradient; the student's is
//! `∂L/∂s_v = Σ_{i≠v} (softmax(s_v/τₛ) − q_i)/(τₛ·B·n_pairs)`.
//!
//! The centre is an EMA of the teacher's mean output over the batch's global
//! crops: `c ← m·c + (1 − m)·mean(t)`.

use crate::error::{Error, Result};

/// The loss on one batch.
#[derive(Debug, Clone)]
pub struct DinoLossOut {
    pub loss: f32,
    /// ∂L/∂(student outputs), (crops·batch, K), crop-major like the input.
    pub dstudent: Vec<f32>,
    /// Mean entropy (nats) of the teacher's targets q: near 0 when each image
    /// picks one prototype, log K when the targets are uniform (collapse).
    pub teacher_entropy: f32,
    /// Entropy of the batch-mean target: near 0 when every image picks the same
    /// prototype (the other collapse).
    pub teacher_marginal_entropy: f32,
    /// Mean teacher output over the global crops (for the centre's update).
    pub batch_center: Vec<f32>,
}

fn softmax_row(row: &mut [f32]) {
    let max = row.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
    row.iter_mut().for_each(|v| *v = (*v - max).exp());
    let sum: f32 = row.iter().sum();
    row.iter_mut().for_each(|v| *v /= sum);
}

fn entropy(p: &[f32]) -> f64 {
    p.iter()
        .filter(|&&v| v > 0.0)
        .map(|&v| -(v as f64) * (v as f64).ln())
        .sum()
}

/// The loss for `student` outputs ((crops·batch, K), crop-major, the two global
/// crops first) and `teacher` outputs ((2·batch, K) on the global crops).
///
/// # Errors
/// [`Error::Shape`] for inconsistent sizes; [`Error::InvalidParam`] for fewer
/// than two crops or non-positive temperatures.
#[allow(clippy::too_many_arguments)]
pub fn dino_loss(
    student: &[f32],
    teacher: &[f32],
    center: &[f32],
    crops: usize,
    batch: usize,
    student_temp: f32,
    teacher_temp: f32,
) -> Result<DinoLossOut> {
    let k = center.len();
    if crops < 2 || batch == 0 || k == 0 {
        return Err(Error::param(
            "crops",
            "DINO needs two global crops, a batch and K ≥ 1",
        ));
    }
    if !(student_temp > 0.0 && teacher_temp > 0.0) {
        return Err(Error::param(
            "temperature",
            "the temperatures must be positive",
        ));
    }
    if student.len() != crops * batch * k {
        return Err(Error::shape(
            "student outputs",
            &[crops * batch, k],
            &[student.len()],
        ));
    }
    if teacher.len() != 2 * batch * k {
        return Err(Error::shape(
            "teacher outputs",
            &[2 * batch, k],
            &[teacher.len()],
        ));
    }
    // Targets.
    let mut q = teacher.to_vec();
    for row in q.chunks_exact_mut(k) {
        row.iter_mut()
            .zip(center)
            .for_each(|(v, c)| *v = (*v - c) / teacher_temp);
        softmax_row(row);
    }
    // Student probabilities and log-probabilities.
    let mut p = student
        .iter()
        .map(|v| v / student_temp)
        .collect::<Vec<f32>>();
    let mut loss = 0f64;
    let n_pairs = 2 * (crops - 1);
    let scale = 1.0 / (student_temp * batch as f32 * n_pairs as f32);
    let mut dstudent = vec![0f32; student.len()];
    for v in 0..crops {
        for b in 0..batch {
            let row = &mut p[(v * batch + b) * k..][..k];
            let max = row.iter().fold(f32::NEG_INFINITY, |m, x| m.max(*x));
            let lse = max + row.iter().map(|x| (x - max).exp()).sum::<f32>().ln();
            let d = &mut dstudent[(v * batch + b) * k..][..k];
            let pairs = (0..2).filter(|&i| i != v).count() as f32;
            for iq in (0..2).filter(|&i| i != v) {
                let qi = &q[(iq * batch + b) * k..][..k];
                let ce: f64 = qi
                    .iter()
                    .zip(row.iter())
                    .map(|(&qv, &s)| -(qv as f64) * (s - lse) as f64)
                    .sum();
                loss += ce / (batch * n_pairs) as f64;
                d.iter_mut().zip(qi).for_each(|(g, &qv)| *g -= qv * scale);
            }
            d.iter_mut()
                .zip(row.iter())
                .for_each(|(g, &s)| *g += pairs * (s - lse).exp() * scale);
        }
    }
    let rows = 2 * batch;
    let teacher_entropy = q.chunks_exact(k).map(entropy).sum::<f64>() / rows as f64;
    let mut mean_q = vec![0f32; k];
    for row in q.chunks_exact(k) {
        mean_q
            .iter_mut()
            .zip(row)
            .for_each(|(m, v)| *m += v / rows as f32);
    }
    let mut batch_center = vec![0f64; k];
    for row in teacher.chunks_exact(k) {
        batch_center
            .iter_mut()
            .zip(row)
            .for_each(|(m, &v)| *m += v as f64);
    }
    Ok(DinoLossOut {
        loss: loss as f32,
        dstudent,
        teacher_entropy: teacher_entropy as f32,
        teacher_marginal_entropy: entropy(&mean_q) as f32,
        batch_center: batch_center
            .iter()
            .map(|v| (v / rows as f64) as f32)
            .collect(),
    })
}

/// `c ← m·c + (1 − m)·batch_center`.
pub fn update_center(center: &mut [f32], batch_center: &[f32], momentum: f32) {
    center
        .iter_mut()
        .zip(batch_center)
        .for_each(|(c, b)| *c = *c * momentum + b * (1.0 - momentum));
}
