//! Integration tests for `explainseg::post::ncut` against numpy/scipy references.
//!
//! Fixtures: `tests/fixtures/ncut/` (see its README), made by `tools/gen_ncut.py`
//! from the description in docs/postprocessing.md §1.2 (scipy `eigh(D−W, D, subset_by_index=[1,2])`).
//! Tolerances: TokenCut eigenvector relative L2 error ≤ 1e-5 (after the flip, and
//! also the raw vector with LAPACK's sign), bipartitions, masks, seeds and flips
//! identical; Shi–Malik grid map ≤ 1e-6, eigenvector ≤ 1e-4 up to sign, mask
//! identical. Timings are not tests: see the ignored `ncut_timings`.

mod common;

use common::{fixture, json, npy_f32, npy_f64};
use explainseg::error::Error;
use explainseg::post::ncut::{
    binary_affinity, binary_affinity_f64, fiedler_dense, foreground_by_relevance, resample_area,
    seed_component, shi_malik_ncut, tokencut_bipartition, ShiMalikParams, TOKENCUT_EPS,
    TOKENCUT_TAU,
};
use ndarray::{array, Array1, Array2, ArrayD, Ix1, Ix2};
use ndarray_npy::ReadNpyExt;

const STAGE: &str = "ncut";

fn f32_2d(name: &str) -> Array2<f32> {
    npy_f32(&fixture(STAGE, name))
        .into_dimensionality::<Ix2>()
        .expect("rank 2")
}

fn f64_1d(name: &str) -> Array1<f64> {
    npy_f64(&fixture(STAGE, name))
        .into_dimensionality::<Ix1>()
        .expect("rank 1")
}

fn u8_2d_bool(name: &str) -> Array2<bool> {
    let path = fixture(STAGE, name);
    let f = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let a = ArrayD::<u8>::read_npy(f).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    a.into_dimensionality::<Ix2>()
        .expect("rank 2")
        .mapv(|v| v != 0)
}

/// ‖a − b‖₂ / ‖b‖₂ in f64.
fn rel_err(a: &Array1<f64>, b: &Array1<f64>) -> f64 {
    assert_eq!(a.len(), b.len());
    let num: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
    let den: f64 = b.iter().map(|y| y * y).sum();
    (num / den).sqrt()
}

fn rel_err_up_to_sign(a: &Array1<f64>, b: &Array1<f64>) -> f64 {
    rel_err(a, b).min(rel_err(&a.mapv(|x| -x), b))
}

fn count_diff(a: &Array2<bool>, b: &Array2<bool>) -> usize {
    assert_eq!(a.dim(), b.dim());
    a.iter().zip(b).filter(|(x, y)| x != y).count()
}

#[test]
fn tokencut_matches_the_scipy_reference() {
    let manifest = json(&fixture(STAGE, "manifest.json"));
    let tau = manifest["tau"].as_f64().unwrap() as f32;
    let eps = manifest["eps"].as_f64().unwrap() as f32;
    assert_eq!((tau, eps), (TOKENCUT_TAU, TOKENCUT_EPS));
    let cases = manifest["tokencut"].as_array().unwrap();
    assert!(cases.len() >= 4);
    let mut flips = (0, 0);
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let grid = (
            case["rows"].as_u64().unwrap() as usize,
            case["cols"].as_u64().unwrap() as usize,
        );
        let feats = f32_2d(&format!("features_{name}.npy"));
        let out = tokencut_bipartition(feats.view(), grid, tau, eps).unwrap();
        let want = f64_1d(&format!("eigvec_{name}.npy"));
        let err = rel_err(&out.eigvec, &want);
        let lambda = case["eigenvalues"][0].as_f64().unwrap();
        let lambda_err = (out.eigenvalue - lambda).abs() / lambda;
        let lambda3_err =
            (out.next_eigenvalue.unwrap() - case["eigenvalues"][1].as_f64().unwrap()).abs();
        let bip_diff = count_diff(
            &out.bipartition,
            &u8_2d_bool(&format!("bipartition_{name}.npy")),
        );
        let mask_diff = count_diff(&out.mask, &u8_2d_bool(&format!("mask_{name}.npy")));
        println!(
            "{name} {grid:?}: eigvec rel err {err:.2e}, λ₂ rel err {lambda_err:.1e}, λ₃ abs err {lambda3_err:.1e}, \
             bipartition diff {bip_diff}, mask diff {mask_diff} (mask {} cells), seed {} flipped {}",
            out.mask.iter().filter(|&&b| b).count(),
            out.seed,
            out.flipped
        );
        assert!(err <= 1e-5, "{name}: eigenvector rel err {err}");
        assert!(
            lambda_err <= 1e-9 && lambda3_err <= 1e-9,
            "{name}: eigenvalues {lambda_err} {lambda3_err}"
        );
        assert_eq!(bip_diff, 0, "{name}: bipartitions differ");
        assert_eq!(mask_diff, 0, "{name}: masks differ");
        assert_eq!(
            out.seed as u64,
            case["seed"].as_u64().unwrap(),
            "{name}: seed"
        );
        assert_eq!(
            out.flipped,
            case["flipped"].as_bool().unwrap(),
            "{name}: flip"
        );
        assert!(
            out.eigvec[out.seed] > 0.0,
            "{name}: seed entry must be positive"
        );
        if out.flipped {
            flips.0 += 1;
        } else {
            flips.1 += 1;
        }
    }
    assert!(
        flips.0 > 0 && flips.1 > 0,
        "fixtures must exercise both the flip and no flip: {flips:?}"
    );
}

/// The solver's raw vector has scipy's (LAPACK dsygvx's) sign and D-normalisation,
/// which MaskCut's corner rule needs (docs/postprocessing.md §3.3).
#[test]
fn fiedler_dense_reproduces_the_lapack_sign() {
    let manifest = json(&fixture(STAGE, "manifest.json"));
    for case in manifest["tokencut"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let feats = f32_2d(&format!("features_{name}.npy"));
        let w = binary_affinity(feats.view(), TOKENCUT_TAU, TOKENCUT_EPS).unwrap();
        let f = fiedler_dense(w.view()).unwrap();
        let raw = f64_1d(&format!("eigvec_raw_{name}.npy"));
        let err = rel_err(&f.vector, &raw);
        let dnorm: f64 = f
            .vector
            .iter()
            .zip(&f.degrees)
            .map(|(v, d)| v * v * d)
            .sum();
        println!(
            "{name}: raw eigvec rel err (signed) {err:.2e}, vᵀDv − 1 = {:.1e}",
            dnorm - 1.0
        );
        assert!(
            err <= 1e-5,
            "{name}: raw eigenvector rel err {err} (a sign mismatch gives ~2)"
        );
        assert!((dnorm - 1.0).abs() < 1e-12);
    }
}

#[test]
fn shi_malik_matches_the_scipy_reference() {
    let manifest = json(&fixture(STAGE, "manifest.json"));
    for case in manifest["shi_malik"].as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let map = f32_2d(&format!("map_{name}.npy"));
        let params = ShiMalikParams {
            grid: Some((
                case["grid"][0].as_u64().unwrap() as usize,
                case["grid"][1].as_u64().unwrap() as usize,
            )),
            sigma_r: case["sigma_r"].as_f64().unwrap() as f32,
            sigma_x: case["sigma_x"].as_f64().unwrap() as f32,
            radius: case["radius"].as_f64().unwrap() as f32,
        };
        let out = shi_malik_ncut(map.view(), &params).unwrap();
        let grid_ref = npy_f64(&fixture(STAGE, &format!("grid_map_{name}.npy")));
        let grid_err = out
            .grid_map
            .iter()
            .zip(grid_ref.iter())
            .map(|(a, b)| (*a as f64 - b).abs())
            .fold(0.0, f64::max);
        let want = f64_1d(&format!("eigvec_{name}.npy"));
        let err = rel_err_up_to_sign(&out.eigvec, &want);
        let signed = rel_err(&out.eigvec, &want);
        let lambda = case["eigenvalues"][0].as_f64().unwrap();
        let mask_diff = count_diff(&out.mask, &u8_2d_bool(&format!("mask_{name}.npy")));
        println!(
            "{name}: grid map max err {grid_err:.1e}, eigvec rel err {err:.2e} (signed {signed:.2e}), \
             λ₂ {} vs {lambda} , mask diff {mask_diff}",
            out.eigenvalue
        );
        assert!(grid_err <= 1e-6, "{name}: grid map err {grid_err}");
        assert!(err <= 1e-4, "{name}: eigenvector rel err {err}");
        assert!((out.eigenvalue - lambda).abs() <= 1e-8 * lambda.max(1e-3));
        assert_eq!(mask_diff, 0, "{name}: masks differ");
        // resample_area is the same resampling.
        let g = resample_area(map.view(), params.grid.unwrap()).unwrap();
        assert_eq!(g, out.grid_map);
        // The mask is the relevance side.
        let fg = foreground_by_relevance(out.mask.view(), out.grid_map.view()).unwrap();
        assert_eq!(fg, out.mask);
    }
}

/// Two-cluster token features on a grid, deterministic (no fixture): an ellipse of
/// one prototype on a background of another, plus hashed noise.
fn synthetic(rows: usize, cols: usize, dim: usize, seed: u64) -> Array2<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 11) as f32 / (1u64 << 53) as f32 * 2.0 - 1.0
    };
    let protos: Vec<Vec<f32>> = (0..2).map(|_| (0..dim).map(|_| next()).collect()).collect();
    Array2::from_shape_fn((rows * cols, dim), |(n, k)| {
        let (y, x) = ((n / cols) as f32, (n % cols) as f32);
        let (cy, cx) = (rows as f32 * 0.45, cols as f32 * 0.55);
        let inside = ((y - cy) / (rows as f32 * 0.3)).powi(2)
            + ((x - cx) / (cols as f32 * 0.25)).powi(2)
            <= 1.0;
        protos[inside as usize][k] + 1.2 * next()
    })
}

/// Property check of the dense solver on a mid-size graph: the pair solves the
/// generalized problem, `vᵀDv = 1`, `vᵀD1 = 0`, λ₂ ≤ λ₃.
#[test]
fn tokencut_eigenpair_solves_the_generalized_problem() {
    let (rows, cols, dim) = (24, 26, 48);
    let feats = synthetic(rows, cols, dim, 3);
    let w = binary_affinity(feats.view(), 0.2, 1e-5).unwrap();
    let f = fiedler_dense(w.view()).unwrap();
    let (v, d) = (&f.vector, &f.degrees);
    let wv = w.dot(v);
    let residual: f64 = (0..v.len())
        .map(|i| (d[i] * v[i] - wv[i] - f.eigenvalue * d[i] * v[i]).powi(2))
        .sum::<f64>()
        .sqrt();
    let dnorm: f64 = v.iter().zip(d).map(|(a, b)| a * a * b).sum();
    let dconst: f64 = v.iter().zip(d).map(|(a, b)| a * b).sum();
    println!(
        "N={}: residual {residual:.1e}, λ₂ {} λ₃ {:?}",
        v.len(),
        f.eigenvalue,
        f.next_eigenvalue
    );
    assert!(residual < 1e-10 * d.iter().fold(0.0f64, |m, x| m.max(*x)));
    assert!((dnorm - 1.0).abs() < 1e-12 && dconst.abs() < 1e-10);
    assert!(f.eigenvalue > 0.0 && f.eigenvalue <= f.next_eigenvalue.unwrap());
    let out = tokencut_bipartition(feats.view(), (rows, cols), 0.2, 1e-5).unwrap();
    assert!(
        out.mask
            .iter()
            .zip(&out.bipartition)
            .all(|(m, b)| !*m || *b),
        "mask ⊆ bipartition"
    );
    assert!(out.mask[(out.seed / cols, out.seed % cols)]);
    // The f64 graph path (MaskCut's later iterations) agrees on the same features.
    let w64 = binary_affinity_f64(feats.mapv(|x| x as f64).view(), 0.2f32 as f64, 1e-5).unwrap();
    let differ = w.iter().zip(&w64).filter(|(a, b)| a != b).count();
    assert!(differ <= 4, "f32 and f64 graphs differ in {differ} entries");
}

#[test]
fn foreground_by_relevance_picks_the_brighter_side() {
    let mask = array![[true, true], [false, false]];
    let map = array![[0.1f32, 0.2], [0.9, 0.8]];
    assert_eq!(
        foreground_by_relevance(mask.view(), map.view()).unwrap(),
        array![[false, false], [true, true]]
    );
    let map = array![[0.9f32, 0.2], [0.1, 0.8]];
    assert_eq!(
        foreground_by_relevance(mask.view(), map.view()).unwrap(),
        mask
    );
    // An empty side is never the foreground.
    let none = Array2::from_elem((2, 2), false);
    assert!(foreground_by_relevance(none.view(), map.view())
        .unwrap()
        .iter()
        .all(|&b| b));
    let comp = seed_component(array![[true, false], [false, true]].view(), (0, 0));
    assert_eq!(comp, array![[true, false], [false, false]]);
}

#[test]
fn errors_not_panics() {
    let feats = synthetic(4, 5, 8, 1);
    // Grid mismatch.
    assert!(matches!(
        tokencut_bipartition(feats.view(), (4, 4), 0.2, 1e-5),
        Err(Error::Shape { .. })
    ));
    assert!(matches!(
        tokencut_bipartition(feats.view(), (usize::MAX, 2), 0.2, 1e-5),
        Err(Error::Shape { .. })
    ));
    // N < 2.
    let one = Array2::<f32>::ones((1, 8));
    assert!(matches!(
        tokencut_bipartition(one.view(), (1, 1), 0.2, 1e-5),
        Err(Error::InvalidParam { .. })
    ));
    let none = Array2::<f32>::zeros((0, 8));
    assert!(tokencut_bipartition(none.view(), (0, 0), 0.2, 1e-5).is_err());
    // D = 0.
    let empty_d = Array2::<f32>::zeros((20, 0));
    assert!(matches!(
        tokencut_bipartition(empty_d.view(), (4, 5), 0.2, 1e-5),
        Err(Error::Shape { .. })
    ));
    // NaN / inf features, bad tau / eps.
    let mut nan = feats.clone();
    nan[[3, 2]] = f32::NAN;
    assert!(matches!(
        tokencut_bipartition(nan.view(), (4, 5), 0.2, 1e-5),
        Err(Error::InvalidParam { .. })
    ));
    nan[[3, 2]] = f32::INFINITY;
    assert!(tokencut_bipartition(nan.view(), (4, 5), 0.2, 1e-5).is_err());
    assert!(tokencut_bipartition(feats.view(), (4, 5), f32::NAN, 1e-5).is_err());
    assert!(tokencut_bipartition(feats.view(), (4, 5), 0.2, -1.0).is_err());
    assert!(tokencut_bipartition(feats.view(), (4, 5), 0.2, f32::NAN).is_err());
    // N = 2 works (only λ₂ exists); all-zero features give the eps-only graph.
    let two = array![[1.0f32, 0.0], [0.0, 1.0]];
    let out = tokencut_bipartition(two.view(), (1, 2), 0.2, 1e-5).unwrap();
    assert!(out.next_eigenvalue.is_none() && out.mask.iter().filter(|&&b| b).count() == 1);
    assert!(tokencut_bipartition(Array2::<f32>::zeros((20, 8)).view(), (4, 5), 0.2, 1e-5).is_ok());
    // Dense solver input checks.
    assert!(matches!(
        fiedler_dense(Array2::<f64>::ones((3, 4)).view()),
        Err(Error::Shape { .. })
    ));
    assert!(fiedler_dense(Array2::<f64>::zeros((3, 3)).view()).is_err());
    let mut w = Array2::<f64>::ones((3, 3));
    w[[1, 1]] = f64::NAN;
    assert!(fiedler_dense(w.view()).is_err());
    assert!(binary_affinity_f64(Array2::<f64>::ones((3, 2)).view(), f64::INFINITY, 1e-5).is_err());

    // Shi–Malik.
    let map = Array2::from_shape_fn((30, 30), |(y, x)| ((y * 7 + x * 3) % 11) as f32 / 10.0);
    let ok = ShiMalikParams {
        grid: Some((10, 10)),
        ..Default::default()
    };
    assert!(shi_malik_ncut(map.view(), &ok).is_ok());
    let mut bad_map = map.clone();
    bad_map[[4, 4]] = f32::NAN;
    assert!(matches!(
        shi_malik_ncut(bad_map.view(), &ok),
        Err(Error::InvalidParam { .. })
    ));
    assert!(matches!(
        shi_malik_ncut(Array2::<f32>::zeros((0, 5)).view(), &ok),
        Err(Error::Shape { .. })
    ));
    for bad in [
        ShiMalikParams {
            sigma_r: 0.0,
            ..ok.clone()
        },
        ShiMalikParams {
            sigma_x: f32::NAN,
            ..ok.clone()
        },
        ShiMalikParams {
            radius: 0.5,
            ..ok.clone()
        },
        ShiMalikParams {
            radius: f32::INFINITY,
            ..ok.clone()
        },
        ShiMalikParams {
            grid: Some((1, 1)),
            ..ok.clone()
        },
        ShiMalikParams {
            grid: Some((0, 7)),
            ..ok.clone()
        },
    ] {
        assert!(
            matches!(
                shi_malik_ncut(map.view(), &bad),
                Err(Error::InvalidParam { .. })
            ),
            "{bad:?}"
        );
    }
    assert!(shi_malik_ncut(
        Array2::<f32>::ones((1, 1)).view(),
        &ShiMalikParams {
            grid: None,
            ..ok.clone()
        }
    )
    .is_err());
    // A nearly disconnected graph (σ_r far below the contrast) exhausts the Lanczos
    // budget: still a result, with its residual, not an error.
    let tight = shi_malik_ncut(
        map.view(),
        &ShiMalikParams {
            grid: Some((28, 28)),
            sigma_r: 0.005,
            ..ok.clone()
        },
    );
    let tight = tight.expect("a slow convergence is not an error");
    assert!(tight.residual.is_finite() && tight.eigvec.iter().all(|v| v.is_finite()));
    // A constant map still cuts (spatially) without error; a 1×2 grid works.
    assert!(shi_malik_ncut(Array2::<f32>::ones((8, 8)).view(), &ok).is_ok());
    assert!(shi_malik_ncut(
        map.view(),
        &ShiMalikParams {
            grid: Some((1, 2)),
            ..ok.clone()
        }
    )
    .is_ok());
    assert!(matches!(
        foreground_by_relevance(Array2::from_elem((2, 3), true).view(), map.view()),
        Err(Error::Shape { .. })
    ));
    assert!(resample_area(map.view(), (0, 3)).is_err());
}
