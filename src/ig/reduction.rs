//! How an attribution's three channels become one value per pixel: the choice is
//! made by the pipeline and carried out by the host (`attr::relevance`) or by a
//! device that reduces the attribution where it was computed.

use crate::error::{Error, Result};

/// How the three channels become one value per pixel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Reduction {
    /// Σ_c a_c, signed.
    Sum,
    /// |Σ_c a_c| — Captum `visualize_image_attr(sign="absolute_value")`, the default.
    #[default]
    AbsSum,
    /// max(Σ_c a_c, 0) — Captum `sign="positive"`.
    Positive,
    /// Σ_c |a_c| — the PAIR saliency convention.
    SumAbs,
}

impl std::str::FromStr for Reduction {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "sum" => Ok(Reduction::Sum),
            "abs" => Ok(Reduction::AbsSum),
            "positive" => Ok(Reduction::Positive),
            "sum_abs" => Ok(Reduction::SumAbs),
            other => Err(Error::param(
                "reduce",
                format!("`{other}` is not one of sum, abs, positive, sum_abs"),
            )),
        }
    }
}
