//! Parameter gradients of the training backward against PyTorch autograd
//! (tools/gen_param_grads.py; timm ViT with explicit attention). Tolerance: rel-L2
//! ≤ 1e-4 per parameter tensor; loss and logits ≤ 1e-5.

mod common;

use std::collections::HashMap;

use common::{fixture, npy_f32, rel_l2};
use explainseg::model::tensor_file::TensorFile;
use explainseg::model::{LoadOptions, Vit};
use explainseg::train::param_grad::{loss_and_param_grads, LossOptions, Trainable};
use ndarray::Array4;

struct Case {
    vit: Vit,
    x: Array4<f32>,
    labels: Vec<usize>,
    class_weights: Option<Vec<f32>>,
    loss: f32,
    logits: Vec<f32>,
    grads: HashMap<String, Vec<f32>>,
}

fn load_case(name: &str) -> Case {
    let meta = common::json(&fixture("param_grads", &format!("{name}/case.json")));
    let root = fixture("", "");
    let backbone = root.join(meta["files"]["backbone"].as_str().unwrap());
    let head = meta["files"]["head"].as_str().map(|h| root.join(h));
    let vit = Vit::load(&backbone, head.as_deref(), &LoadOptions::default()).unwrap();
    let x = npy_f32(&fixture("param_grads", &format!("{name}/input.npy")))
        .into_dimensionality()
        .unwrap();
    let labels = meta["labels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    let class_weights = meta["class_weights"].as_array().map(|a| {
        a.iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect::<Vec<_>>()
    });
    let logits = meta["logits"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| {
            r.as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap() as f32)
        })
        .collect();
    let file = TensorFile::read(&fixture(
        "param_grads",
        &format!("{name}/grads.safetensors"),
    ))
    .unwrap();
    let grads = file.tensors.into_iter().map(|(k, t)| (k, t.data)).collect();
    Case {
        vit,
        x,
        labels,
        class_weights,
        loss: meta["loss"].as_f64().unwrap() as f32,
        logits,
        grads,
    }
}

/// Runs the backward with `trainable` and checks every returned tensor; returns
/// the names it returned.
fn check(case: &Case, trainable: Trainable) -> Vec<String> {
    let opts = LossOptions {
        class_weights: case.class_weights.as_deref(),
    };
    let out =
        loss_and_param_grads(&case.vit, case.x.view(), &case.labels, &opts, trainable).unwrap();
    let loss_err = ((out.loss - case.loss) / case.loss).abs();
    assert!(
        loss_err <= 1e-5,
        "loss {} vs {} ({loss_err:.2e})",
        out.loss,
        case.loss
    );
    let logits: Vec<f32> = out.logits.iter().copied().collect();
    assert!(rel_l2(&logits, &case.logits) <= 1e-5);
    let mut names = Vec::new();
    let mut worst = (0f64, String::new());
    for (name, g) in out.grads.named() {
        let expected = case
            .grads
            .get(&name)
            .unwrap_or_else(|| panic!("no reference gradient for {name}"));
        let err = rel_l2(g, expected);
        assert!(err <= 1e-4, "{trainable:?} {name}: rel-L2 {err:.3e}");
        if err > worst.0 {
            worst = (err, name.clone());
        }
        names.push(name);
    }
    println!(
        "{trainable:?}: {} tensors, worst rel-L2 {:.2e} ({})",
        names.len(),
        worst.0,
        worst.1
    );
    names
}

fn check_all_freezings(name: &str) {
    let case = load_case(name);
    let depth = case.vit.config.depth;
    let all = check(&case, Trainable::All);
    assert_eq!(
        all.len(),
        case.grads.len(),
        "every parameter gets a gradient"
    );
    let head = check(&case, Trainable::Head);
    assert_eq!(head, ["head.weight", "head.bias"]);
    let last1 = check(&case, Trainable::LastBlocks(1));
    let expected_last1: Vec<String> = all
        .iter()
        .filter(|n| {
            n.starts_with(&format!("blocks.{}.", depth - 1))
                || n.starts_with("norm.")
                || n.starts_with("head.")
        })
        .cloned()
        .collect();
    assert_eq!(last1, expected_last1);
    let every_block = check(&case, Trainable::LastBlocks(depth));
    assert_eq!(
        every_block.len(),
        all.len() - 4,
        "all but patch embed, CLS, positions"
    );
}

#[test]
fn cls_head_with_class_weights_matches_autograd() {
    check_all_freezings("s16_cls");
}

#[test]
fn dino_last4_head_matches_autograd() {
    check_all_freezings("p8_dino4");
}

#[test]
fn avgpool_head_matches_autograd() {
    check_all_freezings("s16_avgpool");
}

#[test]
fn bad_labels_and_weights_are_errors() {
    let case = load_case("s16_cls");
    let x = case.x.view();
    let opts = LossOptions::default();
    assert!(loss_and_param_grads(&case.vit, x, &[0, 1, 2, 3], &opts, Trainable::All).is_err());
    assert!(loss_and_param_grads(&case.vit, x, &[0, 1], &opts, Trainable::All).is_err());
    let w = [1.0, 1.0];
    let bad = LossOptions {
        class_weights: Some(&w),
    };
    assert!(loss_and_param_grads(&case.vit, x, &case.labels, &bad, Trainable::All).is_err());
    assert!(
        loss_and_param_grads(&case.vit, x, &case.labels, &opts, Trainable::LastBlocks(9)).is_err()
    );
    // Training the positional table at another grid is refused, not silently wrong.
    let small = Array4::<f32>::zeros((1, 3, 32, 32));
    assert!(loss_and_param_grads(&case.vit, small.view(), &[0], &opts, Trainable::All).is_err());
    assert!(loss_and_param_grads(
        &case.vit,
        small.view(),
        &[0],
        &opts,
        Trainable::LastBlocks(1)
    )
    .is_ok());
}
