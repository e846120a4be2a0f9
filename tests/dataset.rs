//! Data set readers: the real layouts in `../shared/data` (skipped, with the
//! reason printed, when absent) and tiny NuInsSeg / CBIS-DDSM / folder layouts
//! built here in a temporary folder.

mod common;

use std::path::{Path, PathBuf};

use explainseg::dataset::patches::{labelled_patches, PatchConfig};
use explainseg::dataset::{self, image_size, DatasetKind, OpenOptions, Sample};
use explainseg::image::Pixels;

/// `../shared/data/<name>`, or `None` (after saying why) when it is absent.
fn shared(name: &str) -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/data")
        .join(name);
    if p.is_dir() {
        Some(p)
    } else {
        eprintln!(
            "skipped: {} not found (real data sets live in ../shared/data)",
            p.display()
        );
        None
    }
}

fn open(kind: DatasetKind, root: &Path, split: Option<&str>) -> explainseg::Result<Vec<Sample>> {
    dataset::open(
        kind,
        root,
        &OpenOptions {
            split: split.map(str::to_string),
            ..Default::default()
        },
    )
}

fn count_labels(samples: &[Sample], label: &str) -> usize {
    samples
        .iter()
        .filter(|s| s.label.as_deref() == Some(label))
        .count()
}

#[test]
fn kvasir_official_split_and_sizes() {
    let Some(root) = shared("kvasir_seg") else {
        return;
    };
    let train = open(DatasetKind::Kvasir, &root, Some("train")).unwrap();
    let val = open(DatasetKind::Kvasir, &root, Some("val")).unwrap();
    let all = open(DatasetKind::Kvasir, &root, None).unwrap();
    assert_eq!((train.len(), val.len(), all.len()), (880, 120, 1000));
    // The split files and index.csv agree.
    let listed = std::fs::read_to_string(root.join("splits/val.txt")).unwrap();
    let ids: Vec<&str> = listed.lines().filter(|l| !l.trim().is_empty()).collect();
    let mut got: Vec<&str> = val.iter().map(|s| s.id.as_str()).collect();
    got.sort();
    let mut want = ids.clone();
    want.sort();
    assert_eq!(got, want);
    // Every mask has its image's size (from the headers), as index.csv says.
    let index = dataset::csv::Table::read(&root.join("index.csv")).unwrap();
    let (cw, ch) = (
        index.column(&["width"]).unwrap(),
        index.column(&["height"]).unwrap(),
    );
    for (s, row) in all.iter().zip(&index.rows) {
        let (w, h) = s.size().unwrap();
        assert_eq!(
            (w.to_string(), h.to_string()),
            (row.fields[cw].clone(), row.fields[ch].clone()),
            "{}",
            s.id
        );
    }
    assert!(open(DatasetKind::Kvasir, &root, Some("test"))
        .unwrap_err()
        .to_string()
        .contains("train and val"));
}

#[test]
fn kvasir_patches_are_balanced_labelled_and_seeded() {
    let Some(root) = shared("kvasir_seg") else {
        return;
    };
    let val = open(DatasetKind::Kvasir, &root, Some("val")).unwrap();
    let images = &val[..30];
    let cfg = PatchConfig::default();
    let a = labelled_patches(images, &cfg).unwrap();
    assert_eq!(
        a,
        labelled_patches(images, &cfg).unwrap(),
        "same seed, same patches"
    );
    let (pos, neg) = (count_labels(&a, "positive"), count_labels(&a, "negative"));
    assert!(pos > 10 && pos == neg, "{pos} positive vs {neg} negative");
    let other = labelled_patches(
        images,
        &PatchConfig {
            seed: 7,
            ..cfg.clone()
        },
    )
    .unwrap();
    assert_eq!(other.len(), a.len());
    assert_ne!(
        other, a,
        "another seed picks other patches of the larger class"
    );
    // Labels follow the mask: re-count polyp pixels of a few patches by hand.
    for p in a.iter().step_by(7) {
        let m = p.load_mask().unwrap().unwrap();
        assert_eq!(m.dim(), (224, 224));
        let fraction = m.iter().filter(|v| **v).count() as f64 / m.len() as f64;
        match p.label.as_deref() {
            Some("positive") => assert!(fraction >= 0.05, "{} {fraction}", p.id),
            Some("negative") => assert_eq!(fraction, 0.0, "{}", p.id),
            other => panic!("label {other:?}"),
        }
        assert_eq!(p.load_image().unwrap().width, 224);
    }
    let unbalanced = labelled_patches(
        images,
        &PatchConfig {
            balance: false,
            ..cfg
        },
    )
    .unwrap();
    assert!(unbalanced.len() > a.len());
}

#[test]
fn monuseg_tiles() {
    let Some(root) = shared("monuseg") else {
        return;
    };
    let tiles = open(DatasetKind::MoNuSeg, &root, None).unwrap();
    // 14 images of 1000×1000, 512-px tiles at origins {0, 488} on each axis.
    assert_eq!(tiles.len(), 14 * 4);
    assert_eq!(count_labels(&tiles, "kidney"), 3 * 4);
    let first = &tiles[..4];
    let origins: Vec<(u32, u32)> = first
        .iter()
        .map(|t| {
            let r = t.region.unwrap();
            (r.top, r.left)
        })
        .collect();
    assert_eq!(origins, [(0, 0), (0, 488), (488, 0), (488, 488)]);
    for t in first {
        let s = t.load().unwrap();
        assert_eq!((s.image.width, s.image.height), (512, 512));
        assert_eq!(s.mask.as_ref().unwrap().dim(), (512, 512));
        assert!(s.mask.unwrap().iter().any(|m| *m), "{} has nuclei", t.id);
    }
    // The overlap is the same pixels in both tiles.
    let (a, b) = (first[0].load().unwrap(), first[1].load().unwrap());
    let (Pixels::U8(pa), Pixels::U8(pb)) = (&a.image.pixels, &b.image.pixels) else {
        panic!("8-bit")
    };
    assert_eq!(
        pa[(10 * 512 + 500) * 3..][..3],
        pb[(10 * 512 + 12) * 3..][..3]
    );
}

#[test]
fn busi_labels_and_sizes() {
    let Some(root) = shared("busi") else { return };
    let all = open(DatasetKind::Busi, &root, None).unwrap();
    assert_eq!(all.len(), 500);
    assert_eq!(
        (
            count_labels(&all, "benign"),
            count_labels(&all, "malignant"),
            count_labels(&all, "normal")
        ),
        (250, 210, 40)
    );
    for s in &all {
        s.size().unwrap();
    }
    // The fixed holdout split: disjoint parts that cover the set, every class in both.
    let train = open(DatasetKind::Busi, &root, Some("train")).unwrap();
    let test = open(DatasetKind::Busi, &root, Some("test")).unwrap();
    assert_eq!(train.len() + test.len(), 500);
    assert!(test.iter().all(|t| !train.iter().any(|s| s.id == t.id)));
    for part in [&train, &test] {
        for class in ["benign", "malignant", "normal"] {
            assert!(count_labels(part, class) > 0, "{class}");
        }
    }
    assert!(open(DatasetKind::Busi, &root, Some("val")).is_err());
}

fn save_gray(path: &Path, w: u32, h: u32, f: impl Fn(u32, u32) -> u8) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::GrayImage::from_fn(w, h, |x, y| image::Luma([f(x, y)]))
        .save(path)
        .unwrap();
}

fn save_rgb(path: &Path, w: u32, h: u32) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    image::RgbImage::from_fn(w, h, |x, y| image::Rgb([x as u8 * 9, y as u8 * 7, 100]))
        .save(path)
        .unwrap();
}

#[test]
fn nuinsseg_tissue_folders() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    // human bladder: binary PNG masks; mouse lung: 16-bit instance labels only.
    for i in 1..=2 {
        save_rgb(
            &root.join(format!(
                "human bladder/tissue images/human_bladder_0{i}.png"
            )),
            12,
            10,
        );
        save_gray(
            &root.join(format!("human bladder/mask binary/human_bladder_0{i}.png")),
            12,
            10,
            |x, _| if x < 4 { 255 } else { 0 },
        );
    }
    save_rgb(
        &root.join("mouse lung/tissue images/mouse_lung_01.png"),
        12,
        10,
    );
    let labels = root.join("mouse lung/label masks modify/mouse_lung_01.tif");
    std::fs::create_dir_all(labels.parent().unwrap()).unwrap();
    // Instance ids 1 and 2 (tiny values a >127 threshold would miss).
    image::ImageBuffer::<image::Luma<u16>, _>::from_fn(12, 10, |x, y| {
        image::Luma([if y < 3 {
            1
        } else if x > 9 {
            2
        } else {
            0
        }])
    })
    .save(&labels)
    .unwrap();
    std::fs::create_dir_all(root.join("not a tissue")).unwrap();

    let all = open(DatasetKind::NuInsSeg, root, None).unwrap();
    let ids: Vec<&str> = all.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "human bladder/human_bladder_01",
            "human bladder/human_bladder_02",
            "mouse lung/mouse_lung_01"
        ]
    );
    assert_eq!(count_labels(&all, "mouse lung"), 1);
    let m = all[0].load().unwrap().mask.unwrap();
    assert_eq!(m.iter().filter(|v| **v).count(), 4 * 10);
    let m = all[2].load().unwrap().mask.unwrap();
    // Rows 0..3 (36 px) plus columns 10..12 of rows 3..10 (14 px).
    assert_eq!(m.iter().filter(|v| **v).count(), 36 + 14);
    assert_eq!(
        open(DatasetKind::NuInsSeg, root, Some("mouse lung"))
            .unwrap()
            .len(),
        1
    );
    assert!(open(DatasetKind::NuInsSeg, root, Some("liver"))
        .unwrap_err()
        .to_string()
        .contains("human bladder, mouse lung"));
    std::fs::remove_file(labels).unwrap();
    let e = open(DatasetKind::NuInsSeg, root, None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("mouse_lung_01.png") && e.contains("no mask"),
        "{e}"
    );
}

fn dicom_fixture(name: &str) -> PathBuf {
    common::fixture("dataset", name)
}

#[cfg(not(feature = "dicom"))]
#[test]
fn dicom_without_the_feature_is_a_clear_error() {
    let e = Sample::new("m", dicom_fixture("mammo_16bit.dcm"))
        .load_image()
        .unwrap_err();
    assert!(e.to_string().contains("`dicom` feature"), "{e}");
}

#[cfg(feature = "dicom")]
#[test]
fn dicom_pixels_scaled_from_their_bit_range() {
    // mammo_16bit.dcm: 12 bits stored, value 40·k at pixel k (tools/gen_dicom.py),
    // scaled to 16 bits: round(40k · 65535 / 4095).
    let s = Sample::new("m", dicom_fixture("mammo_16bit.dcm"));
    let img = s.load_image().unwrap();
    assert_eq!((img.width, img.height), (8, 10));
    assert_eq!(image_size(&s.image).unwrap(), (8, 10));
    let Pixels::U16(px) = &img.pixels else {
        panic!("16-bit expected")
    };
    for k in [0usize, 1, 37, 79] {
        let want = (40.0 * k as f64 * 65535.0 / 4095.0).round() as u16;
        assert_eq!(&px[k * 3..k * 3 + 3], &[want; 3], "pixel {k}");
    }
    // MONOCHROME1 (8 bits, value 3k) is inverted: 255 − 3k.
    let img = Sample::new("m1", dicom_fixture("mammo_mono1.dcm"))
        .load_image()
        .unwrap();
    let Pixels::U8(px) = &img.pixels else {
        panic!("8-bit expected")
    };
    assert_eq!((px[0], px[5 * 3], px[79 * 3]), (255, 255 - 15, 255 - 237));
}

#[cfg(feature = "dicom")]
/// A CBIS-DDSM case-description CSV (quoted paths with the published trailing
/// line break) and DICOM files at its paths, or at TCIA-download names.
fn cbis_layout(root: &Path, csv_paths: bool) {
    let case_img = "Mass-Test_P_00016_LEFT_CC/1.3.6.1.4.1.9590.100.1.2.1/1.3.6.1.4.1.9590.100.1.2.2/000000.dcm";
    let case_roi = "Mass-Test_P_00016_LEFT_CC_1/1.3.6.1.4.1.9590.100.1.2.3/1.3.6.1.4.1.9590.100.1.2.4/000001.dcm";
    let (img, roi, crop) = if csv_paths {
        (root.join(case_img), root.join(case_roi), None)
    } else {
        (
            root.join("CBIS-DDSM/Mass-Test_P_00016_LEFT_CC/10-04-2016-DDSM-1/1.000000-full mammogram images-1/1-1.dcm"),
            root.join("CBIS-DDSM/Mass-Test_P_00016_LEFT_CC_1/10-04-2016-DDSM-2/1.000000-ROI mask images-2/1-2.dcm"),
            Some(root.join("CBIS-DDSM/Mass-Test_P_00016_LEFT_CC_1/10-04-2016-DDSM-2/1.000000-ROI mask images-2/1-1.dcm")),
        )
    };
    for (from, to) in [("mammo_16bit.dcm", &img), ("roi_mask_8bit.dcm", &roi)] {
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(dicom_fixture(from), to).unwrap();
    }
    if let Some(c) = crop {
        // The cropped lesion beside the mask, another size: it must not be taken for the mask.
        std::fs::copy(dicom_fixture("roi_crop_8bit.dcm"), c).unwrap();
    }
    let csv = format!(
        "patient_id,abnormality id,pathology,image file path,cropped image file path,ROI mask file path\n\
         P_00016,1,MALIGNANT,{case_img},\"x/000000.dcm\n\",\"{case_roi}\n\"\n"
    );
    std::fs::write(root.join("mass_case_description_test_set.csv"), csv).unwrap();
}

#[cfg(feature = "dicom")]
#[test]
fn cbis_rows_with_dicom_images() {
    for csv_paths in [true, false] {
        let tmp = tempfile::tempdir().unwrap();
        cbis_layout(tmp.path(), csv_paths);
        let all = open(DatasetKind::Cbis, tmp.path(), None).unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].id, "Mass-Test_P_00016_LEFT_CC_1");
        assert_eq!(all[0].label.as_deref(), Some("MALIGNANT"));
        let s = all[0].load().unwrap();
        // roi_mask_8bit.dcm: 255 in rows 2..6, cols 3..6 = 12 pixels.
        let m = s.mask.unwrap();
        assert_eq!(m.iter().filter(|v| **v).count(), 12);
        assert!(m[[2, 3]] && !m[[1, 3]] && !m[[2, 6]]);
        assert!(open(DatasetKind::Cbis, tmp.path(), Some("test")).is_ok());
        let e = open(DatasetKind::Cbis, tmp.path(), Some("calc"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("mass_case_description_test_set.csv"), "{e}");
    }
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("calc_case_description_train_set.csv"),
        "image file path,ROI mask file path,pathology\nmissing/a.dcm,missing/b.dcm,BENIGN\n",
    )
    .unwrap();
    let e = open(DatasetKind::Cbis, tmp.path(), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 2") && e.contains("missing/a.dcm"), "{e}");
}

#[test]
fn folder_layout_labels_and_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    for (name, w) in [("a", 10), ("b", 12)] {
        save_rgb(&root.join(format!("images/{name}.png")), w, 8);
        save_gray(&root.join(format!("masks/{name}.png")), w, 8, |x, _| {
            if x < 2 {
                255
            } else {
                0
            }
        });
    }
    std::fs::write(
        root.join("labels.csv"),
        "file,label\nb.png,tumour\na.png,healthy\n",
    )
    .unwrap();
    let all = open(DatasetKind::Folder, root, None).unwrap();
    assert_eq!(
        all.iter()
            .map(|s| (s.id.as_str(), s.label.as_deref().unwrap()))
            .collect::<Vec<_>>(),
        [("a", "healthy"), ("b", "tumour")]
    );
    assert_eq!(all[1].load().unwrap().mask.unwrap().dim(), (8, 12));

    std::fs::write(root.join("labels.csv"), "id,label\na,x\nzzz,y\n").unwrap();
    let e = open(DatasetKind::Folder, root, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("labels.csv: line 3") && e.contains("zzz"), "{e}");
    std::fs::write(root.join("labels.csv"), "id,label\na,x\nb\n").unwrap();
    let e = open(DatasetKind::Folder, root, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 3: 1 fields"), "{e}");
    std::fs::remove_file(root.join("labels.csv")).unwrap();

    // A mask of the wrong size is caught with both sizes named.
    save_gray(&root.join("masks/b.png"), 11, 8, |_, _| 0);
    let all = open(DatasetKind::Folder, root, None).unwrap();
    let e = all[1].load().unwrap_err().to_string();
    assert!(
        e.contains("sample `b`") && e.contains("[8, 12]") && e.contains("[8, 11]"),
        "{e}"
    );
    assert!(all[1].size().is_err());

    std::fs::remove_file(root.join("masks/b.png")).unwrap();
    let e = open(DatasetKind::Folder, root, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("no mask `masks/b.*`"), "{e}");
    let e = open(DatasetKind::Folder, &root.join("nope"), None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("folder not found"), "{e}");
    let e = open(DatasetKind::Kvasir, root, None)
        .unwrap_err()
        .to_string();
    assert!(e.contains("splits"), "{e}");
}

#[test]
fn kvasir_index_rows_name_their_line() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    save_rgb(&root.join("images/x.png"), 4, 4);
    save_gray(&root.join("masks/x.png"), 4, 4, |_, _| 0);
    std::fs::write(
        root.join("index.csv"),
        "image,mask,split_medico2020\nimages/x.png,masks/x.png,train\nimages/y.jpg,masks/y.png,val\n",
    )
    .unwrap();
    let e = open(DatasetKind::Kvasir, root, None)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("index.csv: line 3: image") && e.contains("y.jpg"),
        "{e}"
    );
    assert_eq!(
        open(DatasetKind::Kvasir, root, Some("train"))
            .unwrap()
            .len(),
        1
    );
}
