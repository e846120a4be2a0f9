//! DINO pretraining's student gradients against PyTorch autograd
//! (tools/gen_dino_grads.py): the p8_dino4 fixture ViT on two global views at
//! its own grid and two local views whose positional table is interpolated as
//! DINO does, DINO's projection head (weight-normalised last layer, g = 1) and
//! DINO's loss with centring and sharpening. Tolerances: loss 1e-5 relative,
//! rel-L2 ≤ 1e-4 per parameter tensor, centre update 1e-6.

mod common;

use std::collections::HashMap;

use common::{fixture, npy_f32, rel_l2};
use explainseg::backend::cpu::gemm::Threads;
use explainseg::model::tensor_file::TensorFile;
use explainseg::model::{LoadOptions, PosEmbedMode, Vit};
use explainseg::train::dino::head::{HeadConfig, ProjectionHead};
use explainseg::train::dino::loss::{dino_loss, update_center};
use explainseg::train::param_grad::{backbone_backward, forward_for_grads, ParamGrads, Trainable};
use ndarray::Array4;

fn tensors(path: &std::path::Path) -> HashMap<String, Vec<f32>> {
    TensorFile::read(path)
        .unwrap()
        .tensors
        .into_iter()
        .map(|(k, t)| (k, t.data))
        .collect()
}

#[test]
fn student_gradients_match_pytorch_autograd() {
    let meta = common::json(&fixture("dino_grads", "case.json"));
    let root = fixture("", "");
    let mut vit = Vit::load(
        &root.join(meta["backbone"].as_str().unwrap()),
        None,
        &LoadOptions::default(),
    )
    .unwrap();
    vit.head = None;
    vit.pos_embed_mode = PosEmbedMode::Dino;
    let h = &meta["head"];
    let cfg = HeadConfig {
        hidden: h["hidden"].as_u64().unwrap() as usize,
        bottleneck: h["bottleneck"].as_u64().unwrap() as usize,
        out_dim: h["out_dim"].as_u64().unwrap() as usize,
    };
    let head_file = tensors(&fixture("dino_grads", "head.safetensors"));
    assert!(head_file["head.last_layer.weight_g"]
        .iter()
        .all(|&g| g == 1.0));
    let head =
        ProjectionHead::from_named(vit.config.dim, cfg, &|n| head_file.get(n).cloned()).unwrap();
    let batch = meta["batch"].as_u64().unwrap() as usize;
    let n_views = meta["views"].as_u64().unwrap() as usize;
    let views: Vec<Array4<f32>> = (0..n_views)
        .map(|i| {
            npy_f32(&fixture("dino_grads", &format!("view{i}.npy")))
                .into_dimensionality()
                .unwrap()
        })
        .collect();
    let teacher: Vec<f32> = npy_f32(&fixture("dino_grads", "teacher.npy"))
        .iter()
        .copied()
        .collect();
    let center: Vec<f32> = npy_f32(&fixture("dino_grads", "center.npy"))
        .iter()
        .copied()
        .collect();

    let mut states: Vec<_> = views
        .iter()
        .map(|x| forward_for_grads(&vit, x.view(), Trainable::All, Threads::Single).unwrap())
        .collect();
    let feats: Vec<f32> = states
        .iter()
        .flat_map(|s| s.features.iter().copied())
        .collect();
    let fwd = head.forward(&feats, n_views * batch, Threads::Single);
    let out = dino_loss(
        &fwd.output,
        &teacher,
        &center,
        n_views,
        batch,
        meta["student_temp"].as_f64().unwrap() as f32,
        meta["teacher_temp"].as_f64().unwrap() as f32,
    )
    .unwrap();
    let want = meta["loss"].as_f64().unwrap() as f32;
    assert!(
        ((out.loss - want) / want).abs() <= 1e-5,
        "loss {} vs {want}",
        out.loss
    );

    let mut head_grads = head.zero_grads();
    let dfeat = head.backward(&fwd, &out.dstudent, &mut head_grads, Threads::Single);
    let d = vit.config.dim;
    let mut grads = ParamGrads::zeros_backbone(&vit, Trainable::All);
    for (v, (x, st)) in views.iter().zip(&mut states).enumerate() {
        let df = &dfeat[v * batch * d..][..batch * d];
        backbone_backward(
            &vit,
            st,
            x.view(),
            df,
            Trainable::All,
            &mut grads,
            Threads::Single,
        )
        .unwrap();
    }

    let reference = tensors(&fixture("dino_grads", "grads.safetensors"));
    let mut checked = 0;
    let mut worst = (0f64, String::new());
    for (name, g) in grads.named().into_iter().chain(head_grads.named()) {
        let expected = reference
            .get(&name)
            .unwrap_or_else(|| panic!("no reference gradient for {name}"));
        let err = rel_l2(g, expected);
        assert!(err <= 1e-4, "{name}: rel-L2 {err:.3e}");
        if err > worst.0 {
            worst = (err, name.clone());
        }
        checked += 1;
    }
    assert_eq!(checked, reference.len(), "every parameter is checked");
    println!(
        "{checked} tensors, worst rel-L2 {:.2e} ({})",
        worst.0, worst.1
    );

    let mut c = center.clone();
    update_center(
        &mut c,
        &out.batch_center,
        meta["center_momentum"].as_f64().unwrap() as f32,
    );
    let next: Vec<f32> = npy_f32(&fixture("dino_grads", "center_next.npy"))
        .iter()
        .copied()
        .collect();
    assert!(rel_l2(&c, &next) <= 1e-6);
}
