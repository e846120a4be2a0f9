//! The momentum teacher: after each student update, every teacher tensor moves
//! to `m·teacher + (1 − m)·student`, with m rising from m₀ to 1 on a cosine
//! over the run (DINO's `momentum_schedule`). The teacher gets no gradient.

use super::head::ProjectionHead;
use crate::error::{Error, Result};
use crate::model::Vit;
use crate::train::params::named_tensors_mut;

/// `teacher ← m·teacher + (1 − m)·student` over the backbone and the head.
///
/// # Errors
/// [`Error::Internal`] if the two models' tensors differ in number or size.
pub fn ema_update(
    teacher: &mut Vit,
    teacher_head: &mut ProjectionHead,
    student: &mut Vit,
    student_head: &mut ProjectionHead,
    momentum: f32,
) -> Result<()> {
    let t = named_tensors_mut(teacher)
        .into_iter()
        .map(|(_, v)| v)
        .chain(teacher_head.tensors_mut().into_iter().map(|(_, v)| v));
    let s = named_tensors_mut(student)
        .into_iter()
        .map(|(_, v)| v)
        .chain(student_head.tensors_mut().into_iter().map(|(_, v)| v));
    let (t, s): (Vec<_>, Vec<_>) = (t.collect(), s.collect());
    if t.len() != s.len() || t.iter().zip(&s).any(|(a, b)| a.len() != b.len()) {
        return Err(Error::Internal(
            "teacher and student differ in shape".into(),
        ));
    }
    for (tv, sv) in t.into_iter().zip(s) {
        tv.iter_mut()
            .zip(sv.iter())
            .for_each(|(a, b)| *a = *a * momentum + (1.0 - momentum) * b);
    }
    teacher.clear_pos_cache();
    Ok(())
}
