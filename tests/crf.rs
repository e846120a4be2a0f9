//! DenseCRF (`explainseg::post::crf`) against pydensecrf (fixtures from `tools/gen_crf.py`,
//! described with their tolerances in `tests/fixtures/crf/README.md`).
//!
//! Benchmark (ignored by default):
//! `cargo test --release --test crf -- --ignored --nocapture`

use std::path::PathBuf;

use explainseg::post::crf::{
    dense_crf, refine_mask, unary_from_mask, unary_from_softmax, CrfOutput, CrfParams,
};
use explainseg::Error;
use ndarray::{s, Array2, Array3, ArrayD, Axis};
use ndarray_npy::ReadNpyExt;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/crf")
        .join(name)
}

fn npy_f32(name: &str) -> ArrayD<f32> {
    let f = std::fs::File::open(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    ArrayD::<f32>::read_npy(f).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn npy_u8(name: &str) -> ArrayD<u8> {
    let f = std::fs::File::open(fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"));
    ArrayD::<u8>::read_npy(f).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn png_rgb(name: &str) -> Array3<u8> {
    let img = image::open(fixture(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .to_rgb8();
    let (w, h) = img.dimensions();
    Array3::from_shape_vec((h as usize, w as usize, 3), img.into_raw()).unwrap()
}

fn png_mask(name: &str) -> Array2<bool> {
    let img = image::open(fixture(name))
        .unwrap_or_else(|e| panic!("{name}: {e}"))
        .to_luma8();
    let (w, h) = img.dimensions();
    Array2::from_shape_vec((h as usize, w as usize), img.into_raw())
        .unwrap()
        .mapv(|v| v > 127)
}

fn manifest() -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(fixture("manifest.json")).unwrap()).unwrap()
}

/// (max |a − b|, number of elements that differ at all).
fn diff<'a>(
    a: impl IntoIterator<Item = &'a f32>,
    b: impl IntoIterator<Item = &'a f32>,
) -> (f32, usize) {
    a.into_iter().zip(b).fold((0f32, 0usize), |(m, n), (x, y)| {
        ((x - y).abs().max(m), n + usize::from(x != y))
    })
}

/// Marginals and labels against a pydensecrf `Q` (labels, H, W).
fn check_q(case: &str, out: &CrfOutput, q_ref: &ArrayD<f32>, tol: f32) {
    assert_eq!(out.probs.shape(), q_ref.shape(), "{case}: shape");
    let (max_diff, n_diff) = diff(out.probs.iter(), q_ref.iter());
    let labels_ref = q_ref.map_axis(Axis(0), |col| {
        let mut best = 0;
        for l in 1..col.len() {
            if col[l] > col[best] {
                best = l;
            }
        }
        best as u32
    });
    let label_diff = out
        .labels
        .iter()
        .zip(labels_ref.iter())
        .filter(|(a, b)| a != b)
        .count();
    println!("{case}: max |Q − Q_ref| = {max_diff:e} ({n_diff} of {} values differ), labels differ at {label_diff} pixels", q_ref.len());
    assert!(
        max_diff <= tol,
        "{case}: max |Q − Q_ref| = {max_diff:e} > {tol:e}"
    );
    assert_eq!(label_diff, 0, "{case}: MAP labels differ");
}

/// The unary of an image-sized mask is the two constants of docs/postprocessing.md §4, as pydensecrf's
/// `unary_from_softmax` computed them.
#[test]
fn mask_unary_matches_reference_constants() {
    let m = manifest();
    let own = m["unary_mask"][0].as_f64().unwrap() as f32;
    let other = m["unary_mask"][1].as_f64().unwrap() as f32;
    let mask = png_mask("small_mask.png");
    let u = unary_from_mask(mask.view(), mask.nrows(), mask.ncols()).unwrap();
    for ((y, x), &fg) in mask.indexed_iter() {
        let (u_bg, u_fg) = (u[[0, y, x]], u[[1, y, x]]);
        assert_eq!(
            if fg { (other, own) } else { (own, other) },
            (u_bg, u_fg),
            "pixel ({y}, {x})"
        );
    }
}

/// The MaskCut setting: 480×480 RGB, coarse mask from a 30×30 grid, default parameters.
#[test]
fn big_480_labels_match_pydensecrf() {
    let image = png_rgb("big_image.png");
    let mask = png_mask("big_mask.png");
    let want = png_mask("big_labels.png");
    let got = refine_mask(image.view(), mask.view(), &CrfParams::default()).unwrap();
    let same = got.iter().zip(want.iter()).filter(|(a, b)| a == b).count();
    let agreement = same as f64 / want.len() as f64;
    println!(
        "big 480×480: labels agree with pydensecrf on {same}/{} pixels ({:.4}%)",
        want.len(),
        100.0 * agreement
    );
    assert!(agreement >= 0.999, "agreement {agreement}");

    // Marginals on every 4th row and column.
    let unary = unary_from_mask(mask.view(), 480, 480).unwrap();
    let out = dense_crf(image.view(), unary.view(), &CrfParams::default()).unwrap();
    let q1 = out.probs.slice(s![1, ..;4, ..;4]).to_owned();
    let q_ref = npy_f32("big_q1_sub4.npy");
    let (max_diff, n_diff) = diff(q1.iter(), q_ref.iter());
    println!("big 480×480: max |Q1 − Q1_ref| on the 120×120 subsample = {max_diff:e} ({n_diff} values differ)");
    assert!(max_diff <= 1e-5, "{max_diff:e}");
    assert_eq!(out.labels.mapv(|l| l == 1), got);
}

/// 117×121 (N % 4 = 1: densecrf's zero-padding relay vertices), dark top-left corner.
#[test]
fn small_rgb_marginals_match_pydensecrf() {
    let image = png_rgb("small_image.png");
    let mask = png_mask("small_mask.png");
    let unary = unary_from_mask(mask.view(), 117, 121).unwrap();
    let out = dense_crf(image.view(), unary.view(), &CrfParams::default()).unwrap();
    check_q("small 117×121", &out, &npy_f32("small_q.npy"), 0.0);
}

/// A 15×15 patch mask for a 117×121 image: torch's bilinear resize of the logits.
#[test]
fn resized_mask_matches_torch_and_pydensecrf() {
    let image = png_rgb("small_image.png");
    let grid = png_mask("resize_mask15.png");
    let unary = unary_from_mask(grid.view(), 117, 121).unwrap();
    let u_ref = npy_f32("resize_unary.npy");
    let (max_u, n_u) = diff(unary.iter(), u_ref.iter());
    println!("resize 15×15 → 117×121: max |U − U_ref| = {max_u:e} ({n_u} values differ)");
    assert!(max_u <= 2e-7, "{max_u:e}");
    let out = dense_crf(image.view(), unary.view(), &CrfParams::default()).unwrap();
    check_q("resize 117×121", &out, &npy_f32("resize_q.npy"), 1e-6);
    // From the reference unary itself the result is exact.
    let u_ref3: Array3<f32> = u_ref.into_dimensionality().unwrap();
    let out = dense_crf(image.view(), u_ref3.view(), &CrfParams::default()).unwrap();
    check_q(
        "resize 117×121 (reference unary)",
        &out,
        &npy_f32("resize_q.npy"),
        0.0,
    );
}

/// Three labels (densecrf's SSE lattice path) and five labels (also Eigen's packet exp).
#[test]
fn multi_label_marginals_match_pydensecrf() {
    for m in [3, 5] {
        let image: Array3<u8> = npy_u8(&format!("labels{m}_image.npy"))
            .into_dimensionality()
            .unwrap();
        let unary: Array3<f32> = npy_f32(&format!("labels{m}_unary.npy"))
            .into_dimensionality()
            .unwrap();
        let out = dense_crf(image.view(), unary.view(), &CrfParams::default()).unwrap();
        check_q(
            &format!("{m} labels"),
            &out,
            &npy_f32(&format!("labels{m}_q.npy")),
            0.0,
        );
    }
}

/// Grayscale (C = 1) and 4-channel images; the reference is pydensecrf's
/// addPairwiseEnergy with features (x/50, y/50, c_k/5).
#[test]
fn gray_and_four_channel_match_pydensecrf() {
    for name in ["gray", "rgba"] {
        let image: Array3<u8> = npy_u8(&format!("{name}_image.npy"))
            .into_dimensionality()
            .unwrap();
        let mask: Array2<u8> = npy_u8(&format!("{name}_mask.npy"))
            .into_dimensionality()
            .unwrap();
        let (h, w, _) = image.dim();
        let unary = unary_from_mask(mask.mapv(|v| v != 0).view(), h, w).unwrap();
        let out = dense_crf(image.view(), unary.view(), &CrfParams::default()).unwrap();
        check_q(
            &format!("{name} C={}", image.dim().2),
            &out,
            &npy_f32(&format!("{name}_q.npy")),
            0.0,
        );
        let refined = refine_mask(
            image.view(),
            mask.mapv(|v| v != 0).view(),
            &CrfParams::default(),
        )
        .unwrap();
        assert_eq!(refined, out.labels.mapv(|l| l == 1));
    }
}

/// Two runs are identical, and so are runs on 1 and 2 threads.
#[test]
fn deterministic_across_runs_and_thread_counts() {
    let image = png_rgb("small_image.png");
    let unary: Array3<f32> = npy_f32("resize_unary.npy").into_dimensionality().unwrap();
    let run = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| dense_crf(image.view(), unary.view(), &CrfParams::default()).unwrap())
    };
    let a = run(2);
    let b = run(2);
    let c = run(1);
    assert_eq!(a, b);
    assert_eq!(a, c);
    // Five labels exercise the other value-size path.
    let image5: Array3<u8> = npy_u8("labels5_image.npy").into_dimensionality().unwrap();
    let unary5: Array3<f32> = npy_f32("labels5_unary.npy").into_dimensionality().unwrap();
    let run5 = |threads: usize| {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| dense_crf(image5.view(), unary5.view(), &CrfParams::default()).unwrap())
    };
    assert_eq!(run5(1), run5(3));
}

#[test]
fn properties_without_reference() {
    let image = png_rgb("small_image.png");
    let mask = png_mask("small_mask.png");
    let unary = unary_from_mask(mask.view(), 117, 121).unwrap();
    // Marginals are distributions.
    let out = dense_crf(image.view(), unary.view(), &CrfParams::default()).unwrap();
    for col in out.probs.lanes(Axis(0)) {
        assert!((col.sum() - 1.0).abs() < 1e-5 && col.iter().all(|&p| (0.0..=1.0).contains(&p)));
    }
    // Zero iterations: softmax(−U), so the MAP is the mask itself.
    let p0 = CrfParams {
        n_iterations: 0,
        ..Default::default()
    };
    let out0 = dense_crf(image.view(), unary.view(), &p0).unwrap();
    assert_eq!(out0.labels.mapv(|l| l == 1), mask);
    // Both weights zero: nothing but the unary either.
    let pz = CrfParams {
        pos_weight: 0.0,
        bi_weight: 0.0,
        ..Default::default()
    };
    assert_eq!(
        dense_crf(image.view(), unary.view(), &pz).unwrap().probs,
        out0.probs
    );
    // One label: Q ≡ 1.
    let one = dense_crf(
        image.view(),
        unary.slice(s![..1, .., ..]),
        &CrfParams::default(),
    )
    .unwrap();
    assert!(one.probs.iter().all(|&p| p == 1.0) && one.labels.iter().all(|&l| l == 0));
    // A 1×1 image and a single-row image run.
    let tiny = Array3::<u8>::zeros((1, 1, 3));
    assert!(
        refine_mask(
            tiny.view(),
            Array2::from_elem((1, 1), true).view(),
            &CrfParams::default()
        )
        .unwrap()[[0, 0]]
    );
    let row = Array3::<u8>::from_shape_fn((1, 9, 2), |(_, x, c)| (x * 20 + c) as u8);
    let r = refine_mask(
        row.view(),
        Array2::from_shape_fn((1, 9), |(_, x)| x > 4).view(),
        &CrfParams::default(),
    )
    .unwrap();
    assert_eq!(r.dim(), (1, 9));
    // Many channels (d = 2 + C up to 72: hashed lattice keys), odd sizes.
    for c in [7usize, 12, 70] {
        let img = Array3::<u8>::from_shape_fn((9, 11, c), |(y, x, k)| {
            ((x * 23 + y * 7 + k * 31) % 256) as u8
        });
        let m = Array2::from_shape_fn((9, 11), |(y, x)| x + y > 9);
        let u = unary_from_mask(m.view(), 9, 11).unwrap();
        let out = dense_crf(img.view(), u.view(), &CrfParams::default()).unwrap();
        assert!(
            out.probs
                .lanes(Axis(0))
                .into_iter()
                .all(|col| (col.sum() - 1.0).abs() < 1e-5),
            "C={c}"
        );
    }
}

#[test]
fn bad_input_is_an_error() {
    let p = CrfParams::default();
    let image = Array3::<u8>::zeros((8, 9, 3));
    let unary = Array3::<f32>::from_elem((2, 8, 9), 0.5);
    assert!(dense_crf(image.view(), unary.view(), &p).is_ok());
    let is_param = |r: explainseg::Result<CrfOutput>| matches!(r, Err(Error::InvalidParam { .. }));
    // Empty image, no channels, no labels.
    assert!(is_param(dense_crf(
        Array3::<u8>::zeros((0, 9, 3)).view(),
        Array3::<f32>::zeros((2, 0, 9)).view(),
        &p
    )));
    assert!(is_param(dense_crf(
        Array3::<u8>::zeros((8, 9, 0)).view(),
        unary.view(),
        &p
    )));
    assert!(is_param(dense_crf(
        image.view(),
        Array3::<f32>::zeros((0, 8, 9)).view(),
        &p
    )));
    // Size mismatch.
    let r = dense_crf(image.view(), Array3::<f32>::zeros((2, 9, 8)).view(), &p);
    assert!(matches!(r, Err(Error::Shape { .. })), "{r:?}");
    // NaN / infinite unary.
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let mut u = unary.clone();
        u[[1, 3, 4]] = bad;
        assert!(is_param(dense_crf(image.view(), u.view(), &p)), "{bad}");
    }
    // Parameters.
    for bad in [
        CrfParams {
            pos_sxy_px: 0.0,
            ..Default::default()
        },
        CrfParams {
            bi_sxy_px: -1.0,
            ..Default::default()
        },
        CrfParams {
            bi_srgb: f32::NAN,
            ..Default::default()
        },
        CrfParams {
            bi_weight: f32::INFINITY,
            ..Default::default()
        },
        CrfParams {
            pos_weight: f32::NAN,
            ..Default::default()
        },
    ] {
        assert!(
            is_param(dense_crf(image.view(), unary.view(), &bad)),
            "{bad:?}"
        );
    }
    // A standard deviation so small that lattice coordinates overflow.
    let tiny_sigma = CrfParams {
        bi_srgb: 1e-30,
        ..Default::default()
    };
    let bright = Array3::<u8>::from_elem((8, 9, 3), 200);
    assert!(is_param(dense_crf(
        bright.view(),
        unary.view(),
        &tiny_sigma
    )));
    // Masks.
    assert!(matches!(
        refine_mask(
            image.view(),
            Array2::<bool>::from_elem((0, 3), true).view(),
            &p
        ),
        Err(Error::InvalidParam { .. })
    ));
    assert!(matches!(
        refine_mask(
            Array3::<u8>::zeros((0, 0, 3)).view(),
            Array2::from_elem((2, 2), true).view(),
            &p
        ),
        Err(Error::InvalidParam { .. })
    ));
    // unary_from_softmax.
    let probs = Array3::<f64>::from_elem((2, 2, 2), 0.5);
    assert!(unary_from_softmax(probs.view(), 0.0).is_err());
    assert!(
        unary_from_softmax(Array3::<f64>::from_elem((2, 2, 2), f64::NAN).view(), 1e-5).is_err()
    );
    assert_eq!(
        unary_from_softmax(probs.view(), 1e-5).unwrap()[[0, 0, 0]],
        0.5f64.ln().abs() as f32
    );
}

fn explainseg_bin() -> assert_cmd::Command {
    assert_cmd::Command::cargo_bin("explainseg").unwrap()
}

fn png_luma(path: &std::path::Path) -> Array2<u8> {
    let img = image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_luma8();
    let (w, h) = img.dimensions();
    Array2::from_shape_vec((h as usize, w as usize), img.into_raw()).unwrap()
}

/// `explainseg crf --label-image L.png --labels 5 --gt-prob 0.7` against pydensecrf with
/// `unary_from_labels(L, 5, 0.7, zero_unsure=False)`: the labels written and the
/// marginals, exactly.
#[test]
fn cli_label_image_matches_pydensecrf() {
    let case = &manifest()["cases"]["cli5"];
    let tmp = tempfile::tempdir().unwrap();
    let (out, probs) = (tmp.path().join("labels.png"), tmp.path().join("q.npy"));
    explainseg_bin()
        .args(["--threads", "1", "crf", "--labels", "5", "--gt-prob", "0.7"])
        .arg("--image")
        .arg(fixture("cli5_image.png"))
        .arg("--label-image")
        .arg(fixture("cli5_labels_in.png"))
        .arg("--out")
        .arg(&out)
        .arg("--probs")
        .arg(&probs)
        .assert()
        .success();
    let want = png_luma(&fixture("cli5_labels_out.png"));
    let got = png_luma(&out);
    assert_eq!(got.dim(), (97, 103));
    let differ = got.iter().zip(&want).filter(|(a, b)| a != b).count();
    assert_eq!(differ, 0, "labels differ at {differ} pixels");
    // The CRF changed the input labels: the test would notice a no-op.
    let changed = png_luma(&fixture("cli5_labels_in.png"))
        .iter()
        .zip(&got)
        .filter(|(a, b)| a != b)
        .count();
    assert_eq!(changed as u64, case["changed_pixels"].as_u64().unwrap());
    assert!(changed > 0);
    let q = ArrayD::<f32>::read_npy(std::fs::File::open(&probs).unwrap()).unwrap();
    let q_ref = npy_f32("cli5_q.npy");
    assert_eq!(q.shape(), q_ref.shape());
    let (max_diff, n_diff) = diff(q.iter(), q_ref.iter());
    assert_eq!(n_diff, 0, "max |Q − Q_ref| = {max_diff:e}");
}

/// Bad label images and label counts fail with a message naming the problem and write
/// nothing.
#[test]
fn cli_bad_label_image_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let image = fixture("cli5_image.png");
    let labels = fixture("cli5_labels_in.png");
    let small = tmp.path().join("small.png");
    image::GrayImage::from_pixel(10, 12, image::Luma([1]))
        .save(&small)
        .unwrap();
    let colour = tmp.path().join("colour.png");
    image::RgbImage::from_pixel(103, 97, image::Rgb([1, 2, 1]))
        .save(&colour)
        .unwrap();
    let out = tmp.path().join("out.png");
    let run = |label_image: &std::path::Path, extra: &[&str], expect: &str| {
        let a = explainseg_bin()
            .args(["crf", "--image"])
            .arg(&image)
            .arg("--label-image")
            .arg(label_image)
            .args(extra)
            .arg("--out")
            .arg(&out)
            .assert()
            .failure();
        let err = String::from_utf8_lossy(&a.get_output().stderr).to_string();
        assert!(err.contains(expect), "{extra:?}: `{expect}` not in {err}");
        assert!(!out.exists(), "{extra:?}: wrote {}", out.display());
    };
    // The fixture holds labels 0..=4.
    run(
        &labels,
        &["--labels", "4"],
        "has label 4, but there are only 4 labels",
    );
    run(
        &labels,
        &["--labels", "1"],
        "the label count must be 2..=256, got 1",
    );
    run(
        &labels,
        &["--labels", "257"],
        "the label count must be 2..=256, got 257",
    );
    run(
        &labels,
        &["--labels", "5", "--gt-prob", "1"],
        "must be in (0, 1)",
    );
    run(
        &small,
        &["--labels", "5"],
        "it is 10x12 pixels but the image is 103x97",
    );
    run(&colour, &["--labels", "5"], "must be grey");
    run(&labels, &[], "--labels");
    // A mask and a label image at once.
    let a = explainseg_bin()
        .args(["crf", "--labels", "5", "--image"])
        .arg(&image)
        .arg("--label-image")
        .arg(&labels)
        .arg("--mask")
        .arg(&labels)
        .arg("--out")
        .arg(&out)
        .assert()
        .failure();
    assert!(String::from_utf8_lossy(&a.get_output().stderr).contains("cannot be used with"));
}
