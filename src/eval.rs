//! Segmentation metrics: foreground IoU and Dice per image, and their means over a
//! set (the paper's mIoU and mean Dice, Tables 1–2).
//!
//! Empty masks: when both prediction and ground truth are empty the image counts
//! as a perfect match (IoU = Dice = 1), since there was nothing to find and nothing
//! was found; when exactly one is empty both scores are 0.

use ndarray::{Array2, ArrayView2};

use crate::error::{Error, Result};

/// IoU and Dice of one prediction against its ground truth.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Scores {
    pub iou: f64,
    pub dice: f64,
}

/// Foreground IoU = |P∩G|/|P∪G| and Dice = 2|P∩G|/(|P|+|G|).
///
/// # Errors
/// [`Error::Shape`] when the masks differ in size.
pub fn scores(pred: ArrayView2<bool>, truth: ArrayView2<bool>) -> Result<Scores> {
    if pred.dim() != truth.dim() {
        return Err(Error::shape(
            "prediction vs ground truth",
            &[truth.nrows(), truth.ncols()],
            &[pred.nrows(), pred.ncols()],
        ));
    }
    let (mut inter, mut p, mut g) = (0u64, 0u64, 0u64);
    for (&a, &b) in pred.iter().zip(truth.iter()) {
        inter += (a && b) as u64;
        p += a as u64;
        g += b as u64;
    }
    if p == 0 && g == 0 {
        return Ok(Scores {
            iou: 1.0,
            dice: 1.0,
        });
    }
    let union = p + g - inter;
    Ok(Scores {
        iou: inter as f64 / union as f64,
        dice: 2.0 * inter as f64 / (p + g) as f64,
    })
}

/// Means over a set: (mIoU, mean Dice). `None` for an empty set.
pub fn mean_scores(all: &[Scores]) -> Option<Scores> {
    if all.is_empty() {
        return None;
    }
    let n = all.len() as f64;
    Some(Scores {
        iou: all.iter().map(|s| s.iou).sum::<f64>() / n,
        dice: all.iter().map(|s| s.dice).sum::<f64>() / n,
    })
}

/// The fixed-shape baseline a localising method must beat: a centred ellipse whose
/// semi-axes are a third of the image's sides (it covers π/9 ≈ 35% of the image).
/// Polyps and lesions are usually framed near the centre, so on such data this
/// shape alone scores well above the empty and the whole-image masks. A pixel is
/// inside when its centre, (x + ½, y + ½), is.
pub fn centred_ellipse(height: usize, width: usize) -> Array2<bool> {
    let (cy, cx) = (height as f64 / 2.0, width as f64 / 2.0);
    let (ry, rx) = (height as f64 / 3.0, width as f64 / 3.0);
    Array2::from_shape_fn((height, width), |(y, x)| {
        let (dy, dx) = ((y as f64 + 0.5 - cy) / ry, (x as f64 + 0.5 - cx) / rx);
        dy * dy + dx * dx <= 1.0
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::array;

    #[test]
    fn scores_by_hand() {
        // P = 3 pixels, G = 2, overlap 1: IoU = 1/4, Dice = 2/5.
        let p = array![[true, true], [true, false]];
        let g = array![[false, true], [false, true]];
        let s = scores(p.view(), g.view()).unwrap();
        assert_eq!((s.iou, s.dice), (0.25, 0.4));
        let empty = array![[false, false], [false, false]];
        assert_eq!(
            scores(empty.view(), empty.view()).unwrap(),
            Scores {
                iou: 1.0,
                dice: 1.0
            }
        );
        assert_eq!(
            scores(p.view(), empty.view()).unwrap(),
            Scores {
                iou: 0.0,
                dice: 0.0
            }
        );
        assert_eq!(
            scores(empty.view(), g.view()).unwrap(),
            Scores {
                iou: 0.0,
                dice: 0.0
            }
        );
        let m = mean_scores(&[
            s,
            Scores {
                iou: 0.75,
                dice: 0.6,
            },
        ])
        .unwrap();
        assert_eq!((m.iou, m.dice), (0.5, 0.5));
        assert!(mean_scores(&[]).is_none());
        assert!(scores(p.view(), array![[true]].view()).is_err());
    }

    #[test]
    fn centred_ellipse_is_symmetric_and_covers_pi_over_nine() {
        for (h, w) in [(160, 160), (144, 200), (31, 17)] {
            let e = centred_ellipse(h, w);
            let n = e.iter().filter(|&&v| v).count() as f64;
            let area = std::f64::consts::PI * (h as f64 / 3.0) * (w as f64 / 3.0);
            // The pixel count differs from the area by about the perimeter at most.
            assert!((n - area).abs() <= (h + w) as f64, "{h}x{w}: {n} vs {area}");
            for ((y, x), &v) in e.indexed_iter() {
                assert_eq!(v, e[[h - 1 - y, x]]);
                assert_eq!(v, e[[y, w - 1 - x]]);
            }
            assert!(e[[h / 2, w / 2]] && !e[[0, 0]] && !e[[h / 2, 0]] && !e[[0, w / 2]]);
        }
    }
}
