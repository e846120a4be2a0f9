//! The post-processing stages on their own: `mask`, `crf`, `ncut`.

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use explainseg::attr::fusion::{fuse, upsample_mask, Upsample};
use explainseg::image::decode_image_file;
use explainseg::post::crf::{
    dense_crf_labels_on, dense_crf_on, refine_mask, unary_from_labels, unary_from_mask, CrfParams,
};
use explainseg::post::morphology::{morphology_mask, MorphologyParams};
use explainseg::post::ncut::{shi_malik_ncut, tokencut_bipartition, ShiMalikParams};
use explainseg::post::otsu::{apply_threshold, threshold_otsu};
use explainseg::render::{read_labels, read_mask, write_labels_png, write_mask_png};
use ndarray::{Array2, Array3, Ix2};

use crate::commands::attribute::write_all;
use crate::output::{spinner, Output};

/// DenseCRF settings shared by `mask --crf` and `crf`.
#[derive(Args, Debug, Clone)]
pub struct CrfArgs {
    /// Mean-field iterations.
    #[arg(long, default_value_t = 10)]
    pub iters: usize,
    /// Positional kernel: spatial std (px) and Potts weight.
    #[arg(long, default_value_t = 3.0)]
    pub pos_sxy: f32,
    #[arg(long, default_value_t = 7.0)]
    pub pos_w: f32,
    /// Bilateral kernel: spatial std (px), intensity std (levels), Potts weight.
    #[arg(long, default_value_t = 50.0)]
    pub bi_sxy: f32,
    #[arg(long, default_value_t = 5.0)]
    pub bi_srgb: f32,
    #[arg(long, default_value_t = 10.0)]
    pub bi_w: f32,
}

impl CrfArgs {
    fn params(&self) -> CrfParams {
        CrfParams {
            n_iterations: self.iters,
            pos_sxy_px: self.pos_sxy,
            pos_weight: self.pos_w,
            bi_sxy_px: self.bi_sxy,
            bi_srgb: self.bi_srgb,
            bi_weight: self.bi_w,
        }
    }
}

fn image_pixels(path: &std::path::Path) -> Result<Array3<u8>> {
    let img = decode_image_file(path)?;
    Ok(Array3::from_shape_vec(
        (img.height as usize, img.width as usize, 3),
        img.to_rgb8(),
    )?)
}

#[derive(Args, Debug)]
pub struct MaskArgs {
    /// Relevance (or any) map, (H, W) float32 .npy.
    #[arg(long, value_name = "R.npy")]
    pub map: PathBuf,
    /// Feature map at a patch grid, (rows, cols) float32 .npy, fused with the map.
    #[arg(long, value_name = "F.npy")]
    pub feature: Option<PathBuf>,
    /// The image the map belongs to (sets the output size; used by --crf).
    #[arg(long, value_name = "FILE")]
    pub image: PathBuf,
    /// otsu (threshold only), morph (the paper's morphology chain), ncut (Shi–Malik).
    #[arg(long, default_value = "morph")]
    pub method: String,
    /// Refine with DenseCRF.
    #[arg(long)]
    pub crf: bool,
    #[command(flatten)]
    pub crf_args: CrfArgs,
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

pub fn run_mask(args: &MaskArgs, out: &Output) -> Result<()> {
    let busy = spinner(out, &format!("mask ({})", args.method));
    let map = explainseg::npy::read_f32(&args.map)?
        .into_dimensionality::<Ix2>()
        .with_context(|| format!("{}: the map must be 2-D (H, W)", args.map.display()))?;
    let map = match &args.feature {
        Some(f) => {
            let feat = explainseg::npy::read_f32(f)?
                .into_dimensionality::<Ix2>()
                .with_context(|| format!("{}: the feature map must be 2-D", f.display()))?;
            fuse(map.view(), feat.view(), Upsample::Nearest)?
        }
        None => map,
    };
    let pixels = image_pixels(&args.image)?;
    let (h, w) = (pixels.dim().0, pixels.dim().1);
    let (mask, text) = match args.method.as_str() {
        "otsu" => {
            let t = threshold_otsu(map.view(), 256)?;
            (apply_threshold(map.view(), t), format!("threshold {t}"))
        }
        "morph" => {
            let m = morphology_mask(map.view(), &MorphologyParams::default())?;
            (m.mask, format!("threshold {} (equalised map)", m.threshold))
        }
        "ncut" => (
            shi_malik_ncut(map.view(), &ShiMalikParams::default())?.mask,
            "ncut".to_string(),
        ),
        other => bail!("--method `{other}` is not one of otsu, morph, ncut"),
    };
    let mask = if mask.dim() != (h, w) {
        upsample_mask(mask.view(), h, w)
    } else {
        mask
    };
    let mask = if args.crf {
        refine_mask(pixels.view(), mask.view(), &args.crf_args.params())?
    } else {
        mask
    };
    write_all(
        &args.out,
        &[("mask.png", &|p| write_mask_png(p, mask.view()))],
    )?;
    busy.finish_and_clear();
    out.result(&text, serde_json::json!({"method": args.method, "foreground": mask.iter().filter(|m| **m).count()}));
    Ok(())
}

#[derive(Args, Debug)]
pub struct CrfCmdArgs {
    #[arg(long, value_name = "FILE")]
    pub image: PathBuf,
    /// Coarse mask (PNG; > 127 is foreground), the image's size.
    #[arg(long, value_name = "M.png", required_unless_present = "label_image")]
    pub mask: Option<PathBuf>,
    /// Instead of --mask: a label image (8-bit grey PNG, values 0..K-1, the image's
    /// size), with --labels K; its unary is pydensecrf's unary_from_labels(labels, K,
    /// gt_prob, zero_unsure=False). --out then holds the refined labels 0..K-1.
    #[arg(
        long,
        value_name = "L.png",
        conflicts_with = "mask",
        requires = "labels"
    )]
    pub label_image: Option<PathBuf>,
    /// Number of labels K of --label-image (2..=256).
    #[arg(long, value_name = "K", requires = "label_image")]
    pub labels: Option<usize>,
    /// Probability that --label-image's label is right (pydensecrf's gt_prob), in (0, 1).
    #[arg(long, default_value_t = 0.5, requires = "label_image")]
    pub gt_prob: f64,
    #[command(flatten)]
    pub crf_args: CrfArgs,
    /// Refined mask PNG (0/255), or the refined labels with --label-image.
    #[arg(long, value_name = "O.png")]
    pub out: PathBuf,
    /// Also write the marginals (labels, H, W) float32.
    #[arg(long, value_name = "P.npy")]
    pub probs: Option<PathBuf>,
    /// Compute device: cpu, cuda or cuda-emu (the CUDA code path emulated on the CPU).
    #[arg(long, default_value = "cpu")]
    pub device: explainseg::backend::Device,
}

/// The unary of `crf`'s input (a mask or a label image), checked against the image size.
fn crf_unary(args: &CrfCmdArgs, h: usize, w: usize) -> Result<Array3<f32>> {
    let (path, size, unary) = match (&args.label_image, &args.mask) {
        (Some(path), _) => {
            let k = args.labels.context("--label-image needs --labels K")?;
            let labels = read_labels(path)?;
            let size = labels.dim();
            let unary = (size == (h, w))
                .then(|| unary_from_labels(labels.view(), k, args.gt_prob))
                .transpose()
                .with_context(|| path.display().to_string())?;
            (path, size, unary)
        }
        (None, Some(path)) => {
            let mask = read_mask(path)?;
            let size = mask.dim();
            let unary = (size == (h, w))
                .then(|| unary_from_mask(mask.view(), h, w))
                .transpose()?;
            (path, size, unary)
        }
        (None, None) => bail!("crf needs --mask or --label-image"),
    };
    unary.with_context(|| {
        format!(
            "{}: it is {}x{} pixels but the image is {w}x{h}; they must match",
            path.display(),
            size.1,
            size.0
        )
    })
}

pub fn run_crf(args: &CrfCmdArgs, out: &Output) -> Result<()> {
    let pixels = image_pixels(&args.image)?;
    explainseg::fsutil::require_extension(&args.out, "png")?;
    if let Some(p) = &args.probs {
        explainseg::fsutil::require_extension(p, "npy")?;
    }
    // The device first: a missing one fails before any other work.
    let device = explainseg::backend::crf_device_for(args.device)?;
    let (h, w) = (pixels.dim().0, pixels.dim().1);
    let unary = crf_unary(args, h, w)?;
    let busy = spinner(out, "DenseCRF");
    let params = args.crf_args.params();
    // The marginals are copied out of the CRF only when they are written.
    let (labels, probs) = match &args.probs {
        Some(_) => {
            let res = dense_crf_on(device.as_ref(), pixels.view(), unary.view(), &params)?;
            (res.labels, Some(res.probs))
        }
        None => (
            dense_crf_labels_on(device.as_ref(), pixels.view(), unary.view(), &params)?,
            None,
        ),
    };
    busy.finish_and_clear();
    let n_labels = unary.dim().0;
    drop(unary);
    let refined: Array2<bool> = labels.mapv(|l| l == 1);
    // Both outputs staged under temporary names, renamed only when both are
    // complete: a failure leaves neither a new file nor a changed old one.
    let tmp_mask = explainseg::fsutil::temp_sibling(&args.out);
    let written = if args.label_image.is_some() {
        // Labels are < 256 (`MAX_LABELS`).
        write_labels_png(&tmp_mask, labels.mapv(|l| l as u8).view())
    } else {
        explainseg::render::write_mask_png(&tmp_mask, refined.view())
    };
    let staged = written.and_then(|()| match (&args.probs, &probs) {
        (Some(p), Some(q)) => {
            let tmp = explainseg::fsutil::temp_sibling(p);
            explainseg::npy::write(&tmp, q).map(|()| Some((tmp, p.clone())))
        }
        _ => Ok(None),
    });
    let probs_tmp = match staged {
        Ok(t) => t,
        Err(e) => {
            let _ = std::fs::remove_file(&tmp_mask);
            return Err(e.into());
        }
    };
    if let Some((tmp, p)) = &probs_tmp {
        if let Err(e) = std::fs::rename(tmp, p) {
            let _ = std::fs::remove_file(tmp);
            let _ = std::fs::remove_file(&tmp_mask);
            return Err(anyhow::Error::from(e).context(format!("cannot write {}", p.display())));
        }
    }
    std::fs::rename(&tmp_mask, &args.out).map_err(|e| {
        let _ = std::fs::remove_file(&tmp_mask);
        anyhow::Error::from(e).context(format!("cannot write {}", args.out.display()))
    })?;
    if args.label_image.is_some() {
        let mut counts = vec![0usize; n_labels];
        for &l in &labels {
            counts[l as usize] += 1;
        }
        out.result(
            &format!("pixels per label {counts:?}"),
            serde_json::json!({"pixels_per_label": counts}),
        );
    } else {
        out.result(
            &format!(
                "foreground {} of {} pixels",
                refined.iter().filter(|m| **m).count(),
                refined.len()
            ),
            serde_json::json!({"foreground": refined.iter().filter(|m| **m).count()}),
        );
    }
    Ok(())
}

#[derive(Args, Debug)]
pub struct NcutArgs {
    /// Patch features (N, D) float32 .npy, row-major patch order.
    #[arg(long, value_name = "F.npy")]
    pub features: PathBuf,
    /// Patch grid "H,W" with H·W = N.
    #[arg(long, value_name = "H,W")]
    pub grid: String,
    #[arg(long, default_value_t = 0.2)]
    pub tau: f32,
    #[arg(long, default_value_t = 1e-5)]
    pub eps: f32,
    /// Output folder: eigvec.npy (N, f64), mask.npy (H, W, u8).
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

pub fn run_ncut(args: &NcutArgs, out: &Output) -> Result<()> {
    let grid = explainseg::model::weights::parse_grid(&args.grid)
        .with_context(|| format!("--grid `{}` is not H,W", args.grid))?;
    let f = explainseg::npy::read_f32(&args.features)?
        .into_dimensionality::<Ix2>()
        .with_context(|| format!("{}: features must be 2-D (N, D)", args.features.display()))?;
    let cut = tokencut_bipartition(f.view(), grid, args.tau, args.eps)?;
    let mask = cut.mask.mapv(|m| m as u8);
    write_all(
        &args.out,
        &[
            ("eigvec.npy", &|p| explainseg::npy::write(p, &cut.eigvec)),
            ("mask.npy", &|p| explainseg::npy::write(p, &mask)),
        ],
    )?;
    out.result(
        &format!("seed {}\neigenvalue {}", cut.seed, cut.eigenvalue),
        serde_json::json!({"seed": cut.seed, "eigenvalue": cut.eigenvalue}),
    );
    Ok(())
}
