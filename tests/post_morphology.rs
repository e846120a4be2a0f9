//! Otsu, histogram equalisation, binary morphology and the paper's chain against
//! scikit-image 0.26.0 / SciPy 1.17.1 fixtures (`tools/gen_morphology.py`,
//! `tests/fixtures/morphology/README.md`), plus properties that need no reference data.
//!
//! Timing (ignored): `cargo test --release --test post_morphology -- --ignored --nocapture`;
//! compare with `python3 tools/gen_morphology.py --bench`.

mod common;

use std::path::PathBuf;

use explainseg::post::morphology::{
    binary_dilation, binary_erosion, binary_fill_holes, clear_border, clear_border_labels, label,
    morphology_mask, remove_small_objects, Footprint, FootprintShape, MorphologyParams,
};
use explainseg::post::otsu::{apply_threshold, equalize_hist, histogram, threshold_otsu};
use ndarray::{Array2, ArrayView2};
use ndarray_npy::{ReadNpyExt, ReadableElement};
use serde_json::Value;

const STAGE: &str = "morphology";

fn path(name: &str) -> PathBuf {
    common::fixture(STAGE, name)
}

fn npy<T: ReadableElement>(name: &str) -> Array2<T> {
    let p = path(name);
    let f = std::fs::File::open(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    Array2::<T>::read_npy(f).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn mask(name: &str) -> Array2<bool> {
    npy::<u8>(name).mapv(|v| v != 0)
}

fn manifest() -> Value {
    common::json(&path("manifest.json"))
}

fn f32_of(v: &Value) -> f32 {
    v.as_f64().expect("a number") as f32
}

fn usize_of(v: &Value) -> usize {
    v.as_u64().expect("an unsigned integer") as usize
}

/// Asserts two masks are identical, reporting the first differing pixels.
fn assert_same_mask(what: &str, got: ArrayView2<bool>, want: ArrayView2<bool>) {
    assert_eq!(got.dim(), want.dim(), "{what}: shape");
    let diff: Vec<(usize, usize)> = got
        .indexed_iter()
        .filter(|(ij, &g)| g != want[*ij])
        .map(|(ij, _)| ij)
        .collect();
    assert!(
        diff.is_empty(),
        "{what}: {} pixels differ, first {:?}",
        diff.len(),
        &diff[..diff.len().min(8)]
    );
}

fn params_of(v: &Value) -> MorphologyParams {
    MorphologyParams {
        nbins: usize_of(&v["nbins"]),
        equalize: v["equalize"].as_bool().unwrap(),
        connectivity: usize_of(&v["connectivity"]),
        clear_border: v["clear_border"].as_bool().unwrap(),
        dilation_radius: usize_of(&v["dilation_radius"]),
        erosion_radius: usize_of(&v["erosion_radius"]),
        footprint: match v["footprint"].as_str().unwrap() {
            "disk" => FootprintShape::Disk,
            "square" => FootprintShape::Square,
            other => panic!("unknown footprint {other}"),
        },
        fill_holes: v["fill_holes"].as_bool().unwrap(),
        min_object_size: usize_of(&v["min_object_size"]),
    }
}

fn maps(m: &Value) -> Vec<(String, Value)> {
    m["maps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["name"].as_str().unwrap().to_string(), e.clone()))
        .collect()
}

fn masks(m: &Value) -> Vec<(String, Array2<bool>, Value)> {
    m["masks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            let name = e["name"].as_str().unwrap().to_string();
            let mk = mask(&format!("bin_{name}.npy"));
            (name, mk, e.clone())
        })
        .collect()
}

fn assert_rel(what: &str, got: f32, want: f32, rel: f64) {
    let err = (got as f64 - want as f64).abs() / (want as f64).abs().max(f64::MIN_POSITIVE);
    assert!(
        err <= rel,
        "{what}: got {got:e}, want {want:e} (rel err {err:e} > {rel:e})"
    );
}

// ----------------------------------------------------------------------------------------
// Otsu, histogram, equalisation
// ----------------------------------------------------------------------------------------

#[test]
fn histograms_match_skimage() {
    let m = manifest();
    for (name, _) in maps(&m) {
        let rel = npy::<f32>(&format!("rel_{name}.npy"));
        let h = histogram(rel.view(), 256).unwrap();
        let counts = npy_1d_i64(&format!("hist_counts_{name}.npy"));
        let centers = npy_1d_f32(&format!("hist_centers_{name}.npy"));
        assert_eq!(
            h.counts.iter().map(|&c| c as i64).collect::<Vec<_>>(),
            counts,
            "{name}: counts"
        );
        assert_eq!(
            h.centers.iter().map(|c| c.to_bits()).collect::<Vec<_>>(),
            centers.iter().map(|c| c.to_bits()).collect::<Vec<_>>(),
            "{name}: centres (bit-exact)"
        );
    }
}

fn npy_1d_i64(name: &str) -> Vec<i64> {
    let f = std::fs::File::open(path(name)).unwrap();
    ndarray::Array1::<i64>::read_npy(f).unwrap().to_vec()
}

fn npy_1d_f32(name: &str) -> Vec<f32> {
    let f = std::fs::File::open(path(name)).unwrap();
    ndarray::Array1::<f32>::read_npy(f).unwrap().to_vec()
}

#[test]
fn otsu_thresholds_and_masks_match_skimage() {
    let m = manifest();
    for (name, e) in maps(&m) {
        let rel = npy::<f32>(&format!("rel_{name}.npy"));
        let t256 = threshold_otsu(rel.view(), 256).unwrap();
        assert_rel(
            &format!("{name} otsu(256)"),
            t256,
            f32_of(&e["otsu"]["nbins256"]),
            1e-6,
        );
        let t16 = threshold_otsu(rel.view(), 16).unwrap();
        assert_rel(
            &format!("{name} otsu(16)"),
            t16,
            f32_of(&e["otsu"]["nbins16"]),
            1e-6,
        );
        // On scikit-image's own equalised map, to isolate Otsu from equalize_hist.
        let eq_ref = npy::<f32>(&format!("eq_{name}.npy"));
        let teq = threshold_otsu(eq_ref.view(), 256).unwrap();
        assert_rel(
            &format!("{name} otsu(eq)"),
            teq,
            f32_of(&e["otsu"]["equalized_nbins256"]),
            1e-6,
        );
        let want = mask(&format!("otsu_mask_{name}.npy"));
        assert_same_mask(
            &format!("{name} otsu mask"),
            apply_threshold(rel.view(), t256).view(),
            want.view(),
        );
        // Measured: every threshold is bit-identical; say so if that ever changes.
        if t256.to_bits() != f32_of(&e["otsu"]["nbins256"]).to_bits() {
            eprintln!("note: {name}: otsu(256) within tolerance but not bit-identical");
        }
    }
}

#[test]
fn equalize_hist_matches_skimage() {
    let m = manifest();
    for (name, _) in maps(&m) {
        let rel = npy::<f32>(&format!("rel_{name}.npy"));
        let want = npy::<f32>(&format!("eq_{name}.npy"));
        let got = equalize_hist(rel.view(), 256).unwrap();
        let max = got
            .iter()
            .zip(want.iter())
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(max <= 1e-6, "{name}: equalize_hist max abs diff {max:e}");
    }
}

// ----------------------------------------------------------------------------------------
// Morphology primitives
// ----------------------------------------------------------------------------------------

#[test]
fn labels_match_skimage() {
    let m = manifest();
    for (name, mk, e) in masks(&m) {
        for c in [1usize, 2] {
            let want = npy::<u16>(&format!("label_c{c}_{name}.npy")).mapv(u32::from);
            let got = label(mk.view(), c).unwrap();
            assert_eq!(
                got.count,
                usize_of(&e[format!("label_c{c}_count")]),
                "{name} c{c}: count"
            );
            assert_eq!(got.labels, want, "{name} c{c}: labels (raster order)");
        }
    }
}

#[test]
fn clear_border_matches_skimage() {
    let m = manifest();
    for (name, mk, _) in masks(&m) {
        for b in [0usize, 2] {
            let want = mask(&format!("clear_border_b{b}_{name}.npy"));
            assert_same_mask(
                &format!("{name} clear_border b{b}"),
                clear_border(mk.view(), b).unwrap().view(),
                want.view(),
            );
        }
        let lab1 = label(mk.view(), 1).unwrap().labels;
        let want = npy::<u16>(&format!("clear_border_labels_c1_{name}.npy")).mapv(u32::from);
        assert_eq!(
            clear_border_labels(lab1.view(), 0).unwrap(),
            want,
            "{name}: clear_border on 4-conn labels"
        );
    }
}

#[test]
fn remove_small_objects_matches_skimage() {
    let m = manifest();
    for (name, mk, _) in masks(&m) {
        for case in m["rso_cases"].as_array().unwrap() {
            let (min_size, c) = (usize_of(&case[0]), usize_of(&case[1]));
            let want = mask(&format!("rso_min{min_size}_c{c}_{name}.npy"));
            let got = remove_small_objects(mk.view(), min_size, c).unwrap();
            assert_same_mask(
                &format!("{name} rso min {min_size} c{c}"),
                got.view(),
                want.view(),
            );
        }
    }
}

fn footprints(m: &Value) -> Vec<(String, Footprint)> {
    m["footprints"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let rows: Vec<Vec<bool>> = v
                .as_array()
                .unwrap()
                .iter()
                .map(|r| {
                    r.as_array()
                        .unwrap()
                        .iter()
                        .map(|x| x.as_u64().unwrap() != 0)
                        .collect()
                })
                .collect();
            let a = Array2::from_shape_fn((rows.len(), rows[0].len()), |(i, j)| rows[i][j]);
            let fp = Footprint::from_mask(a.view()).unwrap();
            // Our constructors give the same footprints.
            let ours = match k.as_str() {
                "disk1" => Footprint::disk(1),
                "disk3" => Footprint::disk(3),
                "square2" => Footprint::square(2).unwrap(),
                other => panic!("unknown footprint {other}"),
            };
            assert_eq!(ours.to_array(), a, "footprint {k}");
            (k.clone(), fp)
        })
        .collect()
}

#[test]
fn dilation_and_erosion_match_skimage() {
    let m = manifest();
    let fps = footprints(&m);
    for (name, mk, _) in masks(&m) {
        for (fname, fp) in &fps {
            let want = mask(&format!("dilation_{fname}_{name}.npy"));
            assert_same_mask(
                &format!("{name} dilation {fname}"),
                binary_dilation(mk.view(), fp).view(),
                want.view(),
            );
            let want = mask(&format!("erosion_{fname}_{name}.npy"));
            assert_same_mask(
                &format!("{name} erosion {fname}"),
                binary_erosion(mk.view(), fp).view(),
                want.view(),
            );
        }
    }
}

#[test]
fn fill_holes_matches_scipy() {
    let m = manifest();
    for (name, mk, _) in masks(&m) {
        let want = mask(&format!("fill_holes_{name}.npy"));
        assert_same_mask(
            &format!("{name} fill_holes"),
            binary_fill_holes(mk.view()).view(),
            want.view(),
        );
    }
}

// ----------------------------------------------------------------------------------------
// The chain
// ----------------------------------------------------------------------------------------

#[test]
fn default_params_are_the_fixture_defaults() {
    let m = manifest();
    assert_eq!(
        params_of(&m["param_sets"]["default"]),
        MorphologyParams::default()
    );
}

#[test]
fn chain_matches_skimage_for_every_parameter_set() {
    let m = manifest();
    let sets = m["param_sets"].as_object().unwrap();
    assert!(sets.len() >= 2);
    for (name, e) in maps(&m) {
        let rel = npy::<f32>(&format!("rel_{name}.npy"));
        for (pname, pv) in sets {
            let p = params_of(pv);
            let out = morphology_mask(rel.view(), &p).unwrap();
            let want = mask(&format!("chain_{pname}_{name}.npy"));
            assert_same_mask(
                &format!("{name} chain {pname}"),
                out.mask.view(),
                want.view(),
            );
            assert_rel(
                &format!("{name} chain {pname} threshold"),
                out.threshold,
                f32_of(&e["chain"][pname]["threshold"]),
                1e-6,
            );
            assert_eq!(
                out.mask.iter().filter(|&&v| v).count(),
                usize_of(&e["chain"][pname]["pixels"])
            );
        }
    }
}

// ----------------------------------------------------------------------------------------
// Properties (no reference data)
// ----------------------------------------------------------------------------------------

/// SplitMix64, enough for seeded test inputs.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Power-of-two scalings are exact in f32, and every step of the histogram and of Otsu
/// (differences, ratios, products) commutes with them exactly, so the mask cannot change:
/// checked on continuous random images.
#[test]
fn otsu_mask_invariant_under_power_of_two_scaling() {
    let mut rng = Rng(7);
    for case in 0..60 {
        let (h, w) = (1 + rng.below(40), 2 + rng.below(40));
        let x = Array2::from_shape_fn((h, w), |_| (rng.unit() * 3.0 - 1.0) as f32);
        let t = threshold_otsu(x.view(), 256).unwrap();
        let base = apply_threshold(x.view(), t);
        for a in [0.25f32, 2.0, 1024.0] {
            let y = x.mapv(|v| a * v);
            let ty = threshold_otsu(y.view(), 256).unwrap();
            assert_same_mask(
                &format!("case {case}, a = {a}"),
                apply_threshold(y.view(), ty).view(),
                base.view(),
            );
        }
    }
}

/// General `a·x + b` (a > 0) rounds, so the property is tested where rounding has room: the
/// values sit a quarter of a bin above a bin edge of the 256-bin grid on [min, max] (plus the
/// min and max themselves), so they keep their bins, and pixels in the threshold bin stay
/// below its centre. The masks (not the thresholds) must be identical.
#[test]
fn otsu_mask_invariant_under_positive_affine_maps() {
    let mut rng = Rng(11);
    for case in 0..80 {
        let (h, w) = (2 + rng.below(30), 2 + rng.below(30));
        let n_levels = 2 + rng.below(12);
        let mut levels: Vec<f64> = vec![0.0, 1.0];
        for _ in 0..n_levels {
            levels.push((rng.below(255) as f64 + 0.25) / 256.0);
        }
        let x = Array2::from_shape_fn((h, w), |(i, j)| {
            // Make sure the min and max occur.
            if (i, j) == (0, 0) {
                0.0
            } else if (i, j) == (0, 1) {
                1.0
            } else {
                levels[rng.below(levels.len())] as f32
            }
        });
        let t = threshold_otsu(x.view(), 256).unwrap();
        let base = apply_threshold(x.view(), t);
        for _ in 0..5 {
            let a = (0.5 + rng.unit() * 50.0) as f32;
            let b = (rng.unit() * 40.0 - 20.0) as f32;
            let y = x.mapv(|v| a * v + b);
            let ty = threshold_otsu(y.view(), 256).unwrap();
            assert_same_mask(
                &format!("case {case}, a = {a}, b = {b}"),
                apply_threshold(y.view(), ty).view(),
                base.view(),
            );
        }
    }
}

/// Equalisation makes the chain depend on the rank order only (up to f32 rounding of the
/// edges), so a positive affine change of the relevance keeps the chain's mask here too.
#[test]
fn chain_invariant_under_positive_affine_maps_of_few_level_maps() {
    let rel = npy::<f32>("rel_levels_40x50.npy");
    let p = MorphologyParams::default();
    let base = morphology_mask(rel.view(), &p).unwrap().mask;
    for (a, b) in [(2.0f32, 0.0f32), (7.5, 3.0), (0.01, -1.0)] {
        let y = rel.mapv(|v| a * v + b);
        let got = morphology_mask(y.view(), &p).unwrap().mask;
        assert_same_mask(&format!("a = {a}, b = {b}"), got.view(), base.view());
    }
}

#[test]
fn errors_not_panics_on_bad_input() {
    let p = MorphologyParams::default();
    for shape in [(0usize, 0usize), (0, 5), (5, 0)] {
        let empty = Array2::<f32>::zeros(shape);
        assert!(threshold_otsu(empty.view(), 256).is_err(), "{shape:?}");
        assert!(equalize_hist(empty.view(), 256).is_err(), "{shape:?}");
        assert!(histogram(empty.view(), 256).is_err(), "{shape:?}");
        assert!(morphology_mask(empty.view(), &p).is_err(), "{shape:?}");
        let em = Array2::<bool>::from_elem(shape, false);
        assert!(clear_border(em.view(), 0).is_err(), "{shape:?}");
        // Shape-preserving primitives accept empty images.
        assert_eq!(label(em.view(), 2).unwrap().count, 0);
        assert_eq!(remove_small_objects(em.view(), 64, 1).unwrap().dim(), shape);
        assert_eq!(binary_dilation(em.view(), &Footprint::disk(3)).dim(), shape);
        assert_eq!(binary_erosion(em.view(), &Footprint::disk(3)).dim(), shape);
        assert_eq!(binary_fill_holes(em.view()).dim(), shape);
    }
    let mut rel = npy::<f32>("rel_blobs_64x80.npy");
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let keep = rel[[10, 10]];
        rel[[10, 10]] = bad;
        assert!(threshold_otsu(rel.view(), 256).is_err(), "{bad}");
        assert!(equalize_hist(rel.view(), 256).is_err(), "{bad}");
        assert!(morphology_mask(rel.view(), &p).is_err(), "{bad}");
        assert!(
            morphology_mask(
                rel.view(),
                &MorphologyParams {
                    equalize: false,
                    ..p.clone()
                }
            )
            .is_err(),
            "{bad}"
        );
        rel[[10, 10]] = keep;
    }
    let nan = Array2::from_elem((3, 3), f32::NAN);
    assert!(threshold_otsu(nan.view(), 256).is_err());
    // A range of a few ulps cannot hold 256 distinct f32 edges: NumPy raises, so do we.
    let mut tight = Array2::from_elem((4, 4), 1.0f32);
    tight[[1, 1]] = 1.0 + 2.0 * f32::EPSILON;
    assert!(threshold_otsu(tight.view(), 256).is_err());
    assert!(morphology_mask(
        tight.view(),
        &MorphologyParams {
            equalize: false,
            ..p.clone()
        }
    )
    .is_err());
    // Tiny images work.
    let one = Array2::from_elem((1, 1), 0.3f32);
    assert!(!morphology_mask(one.view(), &p).unwrap().mask[[0, 0]]);
    let row = Array2::from_shape_fn((1, 7), |(_, j)| j as f32);
    assert_eq!(morphology_mask(row.view(), &p).unwrap().mask.dim(), (1, 7));
    // Bad parameters.
    let m = Array2::from_elem((4, 4), true);
    assert!(label(m.view(), 0).is_err());
    assert!(remove_small_objects(m.view(), 3, 4).is_err());
    assert!(clear_border(m.view(), 4).is_err());
    assert!(Footprint::rectangle(0, 3).is_err());
}

/// Random masks and footprints against a brute-force definition of each primitive.
#[test]
fn primitives_agree_with_brute_force_definitions() {
    let mut rng = Rng(3);
    for case in 0..150 {
        let (h, w) = (1 + rng.below(20), 1 + rng.below(20));
        let density = rng.unit();
        let m = Array2::from_shape_fn((h, w), |_| rng.unit() < density);
        let (fh, fw) = (1 + rng.below(6), 1 + rng.below(6));
        let mut fa = Array2::from_shape_fn((fh, fw), |_| rng.unit() < 0.6);
        fa[[fh / 2, fw / 2]] |= case % 2 == 0;
        if !fa.iter().any(|&v| v) {
            fa[[0, 0]] = true;
        }
        let fp = Footprint::from_mask(fa.view()).unwrap();
        let (cy, cx) = ((fh / 2) as isize, (fw / 2) as isize);
        let at = |y: isize, x: isize, outside: bool| {
            if y < 0 || x < 0 || y >= h as isize || x >= w as isize {
                outside
            } else {
                m[[y as usize, x as usize]]
            }
        };
        let dil = Array2::from_shape_fn((h, w), |(y, x)| {
            fa.indexed_iter().any(|((i, j), &f)| {
                f && at(
                    y as isize - (i as isize - cy),
                    x as isize - (j as isize - cx),
                    false,
                )
            })
        });
        let ero = Array2::from_shape_fn((h, w), |(y, x)| {
            fa.indexed_iter().all(|((i, j), &f)| {
                !f || at(
                    y as isize + (i as isize - cy),
                    x as isize + (j as isize - cx),
                    true,
                )
            })
        });
        assert_same_mask(
            &format!("case {case} dilation"),
            binary_dilation(m.view(), &fp).view(),
            dil.view(),
        );
        assert_same_mask(
            &format!("case {case} erosion"),
            binary_erosion(m.view(), &fp).view(),
            ero.view(),
        );
        // Labels: same partition as a flood fill, numbered by first pixel in raster order.
        for c in [1usize, 2] {
            let got = label(m.view(), c).unwrap();
            let mut want = Array2::<u32>::zeros((h, w));
            let mut next = 0;
            for y in 0..h {
                for x in 0..w {
                    if m[[y, x]] && want[[y, x]] == 0 {
                        next += 1;
                        let mut stack = vec![(y, x)];
                        want[[y, x]] = next;
                        while let Some((py, px)) = stack.pop() {
                            for dy in -1isize..=1 {
                                for dx in -1isize..=1 {
                                    if (dy, dx) == (0, 0) || (c == 1 && dy != 0 && dx != 0) {
                                        continue;
                                    }
                                    let (ny, nx) = (py as isize + dy, px as isize + dx);
                                    if at(ny, nx, false) && want[[ny as usize, nx as usize]] == 0 {
                                        want[[ny as usize, nx as usize]] = next;
                                        stack.push((ny as usize, nx as usize));
                                    }
                                }
                            }
                        }
                    }
                }
            }
            assert_eq!(got.labels, want, "case {case} label c{c}");
            assert_eq!(got.count, next as usize);
        }
    }
}
