//! MaskCut's patch masks against a numpy/scipy re-creation of CutLER's
//! `maskcut_forward` (tools/gen_maskcut.py): masks must be identical.

mod common;

use common::*;
use explainseg::post::maskcut::{maskcut_patch_masks, MaskCutParams};
use ndarray::{Array2, Array3};
use ndarray_npy::ReadNpyExt;

#[test]
fn patch_masks_match_the_reference() {
    let manifest = json(&fixture("maskcut", "manifest.json"));
    for (name, case) in manifest["cases"].as_object().unwrap() {
        let grid = (
            case["grid"][0].as_u64().unwrap() as usize,
            case["grid"][1].as_u64().unwrap() as usize,
        );
        let feats: Array2<f32> = npy_f32(&fixture("maskcut", &format!("{name}_features.npy")))
            .into_dimensionality()
            .unwrap();
        let f = std::fs::File::open(fixture("maskcut", &format!("{name}_masks.npy"))).unwrap();
        let want = Array3::<u8>::read_npy(f).unwrap();
        let params = MaskCutParams {
            crf: None,
            n_masks: case["n_masks"].as_u64().unwrap() as usize,
            ..Default::default()
        };
        let got = maskcut_patch_masks(feats.view(), grid, &params).unwrap();
        assert_eq!(got.len(), want.dim().0, "{name}");
        for (k, (g, w)) in got.iter().zip(want.outer_iter()).enumerate() {
            assert_eq!(g.mapv(|b| b as u8), w, "{name}: mask {k}");
        }
    }
}
