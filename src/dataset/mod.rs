//! Segmentation data sets as their users have them on disk, behind one API: every
//! reader returns [`Sample`]s (an id, an image file, an optional mask file, an
//! optional label, and optionally the region of the image the sample is), and
//! [`open`] opens any of them by [`DatasetKind`].
//!
//! | kind | layout | module |
//! |---|---|---|
//! | `kvasir` | Kvasir-SEG: `index.csv` (image, mask, split) or `splits/{train,val}.txt` | [`kvasir`] (+ labelled patches, [`patches`]) |
//! | `monuseg` | MoNuSeg: `labels.csv` (image, mask_binary, label), tiled to 512 px | [`monuseg`], [`tiles`] |
//! | `busi` | BUSI: `labels.csv` (image, mask, label) | [`busi`] |
//! | `nuinsseg` | NuInsSeg: `<tissue>/tissue images/*.png` + `mask binary/` or `label masks modify/` | [`nuinsseg`] |
//! | `cbis` | CBIS-DDSM: `*case_description*.csv` + DICOM files | [`cbis`] |
//! | `folder` | `images/`, `masks/`, optional `labels.csv` (`id,label` or `file,label`) | [`folder`] |
//!
//! Files are only read when a sample is loaded ([`Sample::load`]); opening a data
//! set checks that every referenced file exists, so a broken layout fails at once
//! with the file (and CSV line) at fault.

pub mod busi;
pub mod cbis;
pub mod csv;
mod dicom;
pub mod folder;
pub mod holdout;
pub mod kvasir;
pub mod monuseg;
pub mod nuinsseg;
pub mod patches;
mod probe;
pub mod tiles;

use std::io::Read;
use std::path::{Path, PathBuf};

use ndarray::Array2;

use crate::error::{Error, Result};
use crate::image::{crop, decode_image_file, CropBox, DecodedImage, Pixels};

pub use probe::image_size;

/// How a mask file encodes the foreground.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MaskEncoding {
    /// Foreground above half the scale (> 127 on 8 bits, > 32767 on 16 bits), so
    /// JPEG-compressed masks with ringing still read right.
    #[default]
    Binary,
    /// An instance label map: every non-zero id is foreground.
    Instance,
}

/// One image of a data set.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Unique within the data set; used as the row key of evaluation files.
    pub id: String,
    pub image: PathBuf,
    pub mask: Option<PathBuf>,
    pub mask_encoding: MaskEncoding,
    /// Class label as the data set names it (e.g. `benign`, `positive`).
    pub label: Option<String>,
    /// The part of the image (and mask) this sample is; `None` for all of it.
    pub region: Option<CropBox>,
}

/// A sample's pixels and ground truth, both cropped to its region.
#[derive(Debug, Clone)]
pub struct LoadedSample {
    pub image: DecodedImage,
    /// (height, width), same size as the image.
    pub mask: Option<Array2<bool>>,
}

impl Sample {
    /// A whole-image sample without mask or label.
    pub fn new(id: impl Into<String>, image: impl Into<PathBuf>) -> Sample {
        Sample {
            id: id.into(),
            image: image.into(),
            mask: None,
            mask_encoding: MaskEncoding::Binary,
            label: None,
            region: None,
        }
    }

    /// Decodes the image (PNG, JPEG, TIFF or DICOM) and cuts out the region.
    ///
    /// # Errors
    /// I/O and decoding errors; [`Error::InvalidParam`] when the region leaves the image.
    pub fn load_image(&self) -> Result<DecodedImage> {
        let img = read_any_image(&self.image)?;
        match self.region {
            Some(bx) => crop_image(&img, bx),
            None => Ok(img),
        }
    }

    /// Decodes the mask, if any, and cuts out the region.
    ///
    /// # Errors
    /// As for [`Sample::load_image`].
    pub fn load_mask(&self) -> Result<Option<Array2<bool>>> {
        let Some(path) = &self.mask else {
            return Ok(None);
        };
        let img = read_any_image(path)?;
        let img = match self.region {
            Some(bx) => crop_image(&img, bx)?,
            None => img,
        };
        Ok(Some(mask_from_image(&img, self.mask_encoding)))
    }

    /// Image and mask, checked to have the same size.
    ///
    /// # Errors
    /// Those of [`Sample::load_image`] and [`Sample::load_mask`]; [`Error::Shape`]
    /// when the mask's size differs from the image's.
    pub fn load(&self) -> Result<LoadedSample> {
        let image = self.load_image()?;
        let mask = self.load_mask()?;
        if let Some(m) = &mask {
            let (h, w) = (image.height as usize, image.width as usize);
            if m.dim() != (h, w) {
                return Err(
                    self.size_mismatch((w as u32, h as u32), (m.ncols() as u32, m.nrows() as u32))
                );
            }
        }
        Ok(LoadedSample { image, mask })
    }

    /// (width, height) of the sample from the file headers; checks that the mask
    /// has the image's size.
    ///
    /// # Errors
    /// [`Error::Shape`] when the mask's size differs; header errors.
    pub fn size(&self) -> Result<(u32, u32)> {
        let full = image_size(&self.image)?;
        if let Some(m) = &self.mask {
            let mask = image_size(m)?;
            if mask != full {
                return Err(self.size_mismatch(full, mask));
            }
        }
        Ok(self.region.map_or(full, |r| (r.width, r.height)))
    }

    fn size_mismatch(&self, image: (u32, u32), mask: (u32, u32)) -> Error {
        Error::shape(
            format!(
                "sample `{}`: mask {} (height, width) vs image {}",
                self.id,
                self.mask.as_deref().unwrap_or(Path::new("")).display(),
                self.image.display()
            ),
            &[image.1 as usize, image.0 as usize],
            &[mask.1 as usize, mask.0 as usize],
        )
    }
}

/// PNG, JPEG, TIFF (by signature) or DICOM (by its `DICM` magic).
fn read_any_image(path: &Path) -> Result<DecodedImage> {
    let mut head = Vec::with_capacity(132);
    std::fs::File::open(path)
        .and_then(|f| f.take(132).read_to_end(&mut head))
        .map_err(|e| Error::io(path, e))?;
    if dicom::is_dicom(&head) {
        dicom::read_dicom(path)
    } else {
        decode_image_file(path)
    }
}

fn crop_image(img: &DecodedImage, bx: CropBox) -> Result<DecodedImage> {
    let pixels = match &img.pixels {
        Pixels::U8(p) => Pixels::U8(crop(p, img.width, img.height, 3, bx)?),
        Pixels::U16(p) => Pixels::U16(crop(p, img.width, img.height, 3, bx)?),
    };
    DecodedImage::new(bx.width, bx.height, pixels)
}

/// The first channel of a decoded mask, thresholded as `encoding` says.
pub fn mask_from_image(img: &DecodedImage, encoding: MaskEncoding) -> Array2<bool> {
    let (h, w) = (img.height as usize, img.width as usize);
    let fg = |i: usize| -> bool {
        match (&img.pixels, encoding) {
            (Pixels::U8(p), MaskEncoding::Binary) => p[i * 3] > 127,
            (Pixels::U16(p), MaskEncoding::Binary) => p[i * 3] > 32767,
            (Pixels::U8(p), MaskEncoding::Instance) => p[i * 3] > 0,
            (Pixels::U16(p), MaskEncoding::Instance) => p[i * 3] > 0,
        }
    };
    Array2::from_shape_fn((h, w), |(i, j)| fg(i * w + j))
}

/// The data set layouts [`open`] knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatasetKind {
    Kvasir,
    MoNuSeg,
    Busi,
    NuInsSeg,
    Cbis,
    Folder,
}

impl DatasetKind {
    pub const ALL: [DatasetKind; 6] = [
        DatasetKind::Kvasir,
        DatasetKind::MoNuSeg,
        DatasetKind::Busi,
        DatasetKind::NuInsSeg,
        DatasetKind::Cbis,
        DatasetKind::Folder,
    ];

    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::Kvasir => "kvasir",
            DatasetKind::MoNuSeg => "monuseg",
            DatasetKind::Busi => "busi",
            DatasetKind::NuInsSeg => "nuinsseg",
            DatasetKind::Cbis => "cbis",
            DatasetKind::Folder => "folder",
        }
    }
}

impl std::str::FromStr for DatasetKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        DatasetKind::ALL
            .into_iter()
            .find(|k| k.name() == s.to_ascii_lowercase())
            .ok_or_else(|| {
                Error::param(
                    "dataset",
                    format!("`{s}` is not one of kvasir, monuseg, busi, nuinsseg, cbis, folder"),
                )
            })
    }
}

/// Choices that some layouts understand.
#[derive(Debug, Clone, PartialEq)]
pub struct OpenOptions {
    /// A subset: Kvasir `train`/`val`; CBIS a word the CSV file names must contain
    /// (`test`, `train`, `mass`, `calc`); NuInsSeg a tissue folder; BUSI and
    /// `folder` `train`/`test` ([`holdout`], a fixed 80/20 split by id). `None`: all.
    pub split: Option<String>,
    /// MoNuSeg tile side in pixels (see [`tiles`]).
    pub tile_px: u32,
}

impl Default for OpenOptions {
    fn default() -> Self {
        OpenOptions {
            split: None,
            tile_px: monuseg::TILE_PX,
        }
    }
}

/// Lists the samples of the data set of `kind` under `root`, in a stable order.
///
/// # Errors
/// [`Error::Format`] naming the missing file or folder, or the CSV line at fault;
/// [`Error::InvalidParam`] for an unknown split.
pub fn open(kind: DatasetKind, root: &Path, opts: &OpenOptions) -> Result<Vec<Sample>> {
    require_dir(root, "data set root")?;
    // MoNuSeg's tiles of one slide must not be split apart; it has no split.
    if opts.split.is_some() && kind == DatasetKind::MoNuSeg {
        return Err(Error::param(
            "split",
            format!("the {} layout has no splits", kind.name()),
        ));
    }
    let samples = match kind {
        DatasetKind::Kvasir => kvasir::open(root, opts.split.as_deref())?,
        DatasetKind::MoNuSeg => monuseg::open(root, opts.tile_px)?,
        DatasetKind::Busi => with_holdout(busi::open(root)?, opts)?,
        DatasetKind::NuInsSeg => nuinsseg::open(root, opts.split.as_deref())?,
        DatasetKind::Cbis => cbis::open(root, opts.split.as_deref())?,
        DatasetKind::Folder => with_holdout(folder::open(root)?, opts)?,
    };
    check_unique_ids(&samples, root)?;
    Ok(samples)
}

fn with_holdout(samples: Vec<Sample>, opts: &OpenOptions) -> Result<Vec<Sample>> {
    match &opts.split {
        Some(split) => holdout::select(samples, split),
        None => Ok(samples),
    }
}

pub(crate) fn require_dir(path: &Path, what: &str) -> Result<()> {
    if path.is_dir() {
        Ok(())
    } else {
        Err(Error::format(path, format!("{what}: folder not found")))
    }
}

pub(crate) fn require_file(path: &Path, what: &str) -> Result<()> {
    if path.is_file() {
        Ok(())
    } else {
        Err(Error::format(path, format!("{what}: file not found")))
    }
}

/// `root/rel` for a path read from a CSV row, which must exist.
pub(crate) fn csv_path(
    table: &csv::Table,
    row: &csv::Row,
    root: &Path,
    rel: &str,
    what: &str,
) -> Result<PathBuf> {
    let rel = rel.trim();
    if rel.is_empty() {
        return Err(table.row_error(row, format!("empty {what} path")));
    }
    let p = root.join(rel);
    if !p.is_file() {
        return Err(table.row_error(row, format!("{what} `{}` not found", p.display())));
    }
    Ok(p)
}

/// The file stem as an id.
pub(crate) fn stem(path: &Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Image files of a folder (PNG, JPEG, TIFF, DICOM by extension), sorted by name.
pub(crate) fn image_files(dir: &Path) -> Result<Vec<PathBuf>> {
    const EXT: [&str; 6] = ["png", "jpg", "jpeg", "tif", "tiff", "dcm"];
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension().is_some_and(|e| {
                    EXT.contains(&e.to_string_lossy().to_ascii_lowercase().as_str())
                })
        })
        .collect();
    files.sort();
    Ok(files)
}

fn check_unique_ids(samples: &[Sample], root: &Path) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for s in samples {
        if !seen.insert(s.id.as_str()) {
            return Err(Error::format(
                root,
                format!("two samples share the id `{}`", s.id),
            ));
        }
    }
    Ok(())
}
