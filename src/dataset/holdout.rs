//! A fixed train/test split for layouts that ship none (BUSI, `folder`): an image
//! is in `test` when the 64-bit FNV-1a hash of its id is 0 mod 5 (≈ 20%), else in
//! `train`. The hash depends on the id alone, so the split does not move when
//! images are added, removed or listed in another order, and `explainseg train
//! --split train` and `explainseg eval --split test` never share an image.

use crate::error::{Error, Result};

use super::Sample;

/// One in this many images is held out.
pub const TEST_ONE_IN: u64 = 5;

use crate::hash::fnv1a64;

/// Whether the image with this id is in the held-out `test` part.
pub fn is_test(id: &str) -> bool {
    fnv1a64(id.as_bytes()).is_multiple_of(TEST_ONE_IN)
}

/// Keeps the samples of `split` (`train` or `test`).
///
/// # Errors
/// [`Error::InvalidParam`] for another split name.
pub fn select(samples: Vec<Sample>, split: &str) -> Result<Vec<Sample>> {
    let want_test = match split.to_ascii_lowercase().as_str() {
        "test" => true,
        "train" => false,
        other => {
            return Err(Error::param(
                "split",
                format!("`{other}` is not train or test (a fixed 80/20 split by id hash)"),
            ))
        }
    };
    Ok(samples
        .into_iter()
        .filter(|s| is_test(&s.id) == want_test)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_are_disjoint_cover_everything_and_ignore_order() {
        let samples: Vec<Sample> = (0..200)
            .map(|i| Sample::new(format!("img{i}"), format!("img{i}.png")))
            .collect();
        let train = select(samples.clone(), "train").unwrap();
        let test = select(samples.clone(), "TEST").unwrap();
        assert_eq!(train.len() + test.len(), samples.len());
        assert!(test.iter().all(|t| !train.iter().any(|s| s.id == t.id)));
        // About one in five (binomial, n = 200: 40 ± 3σ ≈ 40 ± 17).
        assert!((23..=57).contains(&test.len()), "{}", test.len());
        let mut reversed = samples;
        reversed.reverse();
        let mut again: Vec<String> = select(reversed, "test")
            .unwrap()
            .into_iter()
            .map(|s| s.id)
            .collect();
        again.reverse();
        assert_eq!(again, test.into_iter().map(|s| s.id).collect::<Vec<_>>());
        assert!(select(vec![], "val").is_err());
    }
}
