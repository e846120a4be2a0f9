//! ViT loading and forward parity with PyTorch/timm (fixtures from
//! tools/gen_engine.py; tolerances in tests/fixtures/engine/README.md).

mod common;

use common::*;
use explainseg::backend::cpu::{forward, CpuEngine, Facet};
use explainseg::backend::Engine;
use explainseg::model::{HeadKind, LoadOptions, Naming, PosEmbedMode, Vit};
use explainseg::Error;

/// Logits rel err tolerance (max-abs relative), from the issue.
const LOGITS_TOL: f64 = 1e-5;

fn opts_for(case: &str) -> LoadOptions {
    let cfg = json(&fixture("engine", &format!("{case}/config.json")));
    LoadOptions {
        heads: Some(cfg["heads"].as_u64().unwrap() as usize),
        eps: Some(cfg["eps"].as_f64().unwrap() as f32),
        ..Default::default()
    }
}

fn load(case: &str, file: &str, head: Option<&str>, opts: &LoadOptions) -> Vit {
    let head_path = head.map(|h| fixture("engine", &format!("{case}/{h}")));
    Vit::load(
        &fixture("engine", &format!("{case}/{file}")),
        head_path.as_deref(),
        opts,
    )
    .unwrap()
}

fn logits_of(vit: &Vit, case: &str) -> Vec<f32> {
    let x = dyn4(npy_f32(&fixture("engine", &format!("{case}/input.npy"))));
    to_vec(&CpuEngine::new(vit).logits(x.view()).unwrap())
}

#[test]
fn timm_file_with_metadata_matches_pytorch_logits() {
    // Heads and eps come from the file's metadata here.
    let vit = load(
        "s16_tiny",
        "model_timm.safetensors",
        None,
        &LoadOptions::default(),
    );
    assert_eq!(vit.config.heads, 3);
    assert_eq!(vit.naming, Naming::TimmOrDino);
    let want = to_vec(&npy_f32(&fixture("engine", "s16_tiny/logits.npy")));
    let got = logits_of(&vit, "s16_tiny");
    assert!(
        rel_max(&got, &want) <= LOGITS_TOL,
        "got {got:?} want {want:?}"
    );
}

#[test]
fn three_namings_of_one_checkpoint_give_identical_outputs() {
    for (case, dino_head) in [
        ("s16_tiny", "head_dino.safetensors"),
        ("hf_eps", "head_dino.safetensors"),
        ("p8_dino4", "head_dino.safetensors"),
    ] {
        let opts = opts_for(case);
        let timm_head = (case == "p8_dino4").then_some(dino_head);
        let timm = logits_of(
            &load(case, "model_timm.safetensors", timm_head, &opts),
            case,
        );
        let dino = logits_of(
            &load(case, "model_dino.safetensors", Some(dino_head), &opts),
            case,
        );
        let hf_head = (case == "p8_dino4").then_some(dino_head);
        let hf_vit = load(case, "model_hf.safetensors", hf_head, &opts);
        assert_eq!(hf_vit.naming, Naming::HuggingFace);
        let hf = logits_of(&hf_vit, case);
        assert_eq!(timm, dino, "{case}: timm vs DINO naming");
        assert_eq!(timm, hf, "{case}: timm vs HF naming");
        let want = to_vec(&npy_f32(&fixture("engine", &format!("{case}/logits.npy"))));
        eprintln!("{case}: logits rel err {:.2e}", rel_max(&timm, &want));
        assert!(
            rel_max(&timm, &want) <= LOGITS_TOL,
            "{case}: got {timm:?} want {want:?}"
        );
    }
}

#[test]
fn dino_linear_eval_head_reads_four_normed_cls_tokens() {
    let vit = load(
        "p8_dino4",
        "model_dino.safetensors",
        Some("head_dino.safetensors"),
        &opts_for("p8_dino4"),
    );
    assert_eq!(
        vit.head.as_ref().unwrap().kind,
        HeadKind::LastBlocksCls { n: 4 }
    );
    let x = dyn4(npy_f32(&fixture("engine", "p8_dino4/input.npy")));
    let state = forward(&vit, x.view(), false).unwrap();
    let want = to_vec(&npy_f32(&fixture("engine", "p8_dino4/cls_feature.npy")));
    assert!(rel_max(&to_vec(&state.features), &want) <= LOGITS_TOL);
}

#[test]
fn half_precision_files_load_and_match() {
    for (file, logits) in [
        ("model_timm_f16.safetensors", "logits_f16.npy"),
        ("model_timm_bf16.safetensors", "logits_bf16.npy"),
    ] {
        let vit = load("s16_tiny", file, None, &LoadOptions::default());
        let want = to_vec(&npy_f32(&fixture("engine", &format!("s16_tiny/{logits}"))));
        let got = logits_of(&vit, "s16_tiny");
        assert!(
            rel_max(&got, &want) <= LOGITS_TOL,
            "{file}: got {got:?} want {want:?}"
        );
    }
}

#[test]
fn hf_layer_norm_eps_comes_from_the_caller() {
    // The HF file carries no metadata, so eps (1e-12, HF's ViTConfig default) and
    // the head count must be given by the caller.
    let right = logits_of(
        &load("hf_eps", "model_hf.safetensors", None, &opts_for("hf_eps")),
        "hf_eps",
    );
    let want = to_vec(&npy_f32(&fixture("engine", "hf_eps/logits.npy")));
    assert!(rel_max(&right, &want) <= LOGITS_TOL);
}

#[test]
fn last_block_taps_match_pytorch() {
    let case = "s16_tiny";
    let vit = load(
        case,
        "model_timm.safetensors",
        None,
        &LoadOptions::default(),
    );
    let x = dyn4(npy_f32(&fixture("engine", &format!("{case}/input.npy"))));
    let s = explainseg::backend::cpu::forward_tapped(&vit, x.view(), None).unwrap();
    for (facet, name) in [
        (Facet::Query, "last_q.npy"),
        (Facet::Key, "last_k.npy"),
        (Facet::Value, "last_v.npy"),
    ] {
        let want = npy_f32(&fixture("engine", &format!("{case}/{name}")));
        let got = s.taps(0).unwrap().facet(facet);
        assert_eq!(got.shape(), want.shape());
        assert!(rel_l2(&to_vec(&got), &to_vec(&want)) <= 1e-5, "{name}");
    }
    assert!(s.taps(1).is_err());
    let cls = s.taps(0).unwrap().cls_attention().unwrap();
    assert_eq!(cls.dim(), (vit.config.heads, 4, 4));
    let want = npy_f32(&fixture("engine", &format!("{case}/last_attn.npy")));
    assert!(
        rel_l2(
            &to_vec(&s.taps(0).unwrap().attention().unwrap()),
            &to_vec(&want)
        ) <= 1e-5
    );
    // CLS→patch attention is row 0 of the softmax, laid out on the 4×4 patch grid.
    assert_eq!(
        cls[[1, 2, 3]],
        s.taps(0).unwrap().attention().unwrap()[[1, 0, 1 + 2 * 4 + 3]]
    );
    let want = npy_f32(&fixture("engine", &format!("{case}/last_tokens.npy")));
    assert!(
        rel_l2(
            &to_vec(&s.taps(0).unwrap().output_tokens().unwrap()),
            &to_vec(&want)
        ) <= 1e-5
    );
}

#[test]
fn pos_embed_interpolation_matches_each_library() {
    for (mode, name) in [
        (PosEmbedMode::Dino, "dino"),
        (PosEmbedMode::Timm, "timm"),
        (PosEmbedMode::Hf, "hf"),
    ] {
        let opts = LoadOptions {
            pos_embed_mode: mode,
            ..Default::default()
        };
        let vit = load("posembed", "model_timm.safetensors", None, &opts);
        let table = vit.pos_embed((6, 5)).unwrap();
        let want = to_vec(&npy_f32(&fixture(
            "engine",
            &format!("posembed/posembed_{name}.npy"),
        )));
        assert!(
            rel_max(&table, &want) <= 1e-5,
            "{name}: pos table rel err {}",
            rel_max(&table, &want)
        );
        let got = logits_of(&vit, "posembed");
        let want = to_vec(&npy_f32(&fixture(
            "engine",
            &format!("posembed/logits_{name}.npy"),
        )));
        eprintln!(
            "{name}: pos table rel err {:.2e}, logits rel err {:.2e}",
            rel_max(
                &table,
                &to_vec(&npy_f32(&fixture(
                    "engine",
                    &format!("posembed/posembed_{name}.npy")
                )))
            ),
            rel_max(&got, &want)
        );
        assert!(
            rel_max(&got, &want) <= 1e-5,
            "{name}: logits {got:?} want {want:?}"
        );
    }
}

#[test]
fn bad_inputs_are_clear_errors() {
    let vit = load(
        "s16_tiny",
        "model_timm.safetensors",
        None,
        &LoadOptions::default(),
    );
    let engine = CpuEngine::new(&vit);
    let odd = ndarray::Array4::<f32>::zeros((1, 3, 60, 64));
    assert!(matches!(
        engine.logits(odd.view()),
        Err(Error::InvalidParam { .. })
    ));
    let gray = ndarray::Array4::<f32>::zeros((1, 1, 64, 64));
    assert!(matches!(
        engine.logits(gray.view()),
        Err(Error::Shape { .. })
    ));
    let mut nan = ndarray::Array4::<f32>::zeros((1, 3, 64, 64));
    nan[[0, 1, 2, 3]] = f32::NAN;
    assert!(engine.logits(nan.view()).is_err());
    let x = ndarray::Array4::<f32>::zeros((1, 3, 64, 64));
    assert!(matches!(
        engine.logits_and_input_grad(x.view(), &[7]),
        Err(Error::InvalidParam { .. })
    ));
    let missing = Vit::load(
        &fixture("engine", "nope.safetensors"),
        None,
        &LoadOptions::default(),
    );
    assert!(matches!(missing, Err(Error::Io { .. })));
    let not_st = Vit::load(
        &fixture("engine", "README.md"),
        None,
        &LoadOptions::default(),
    );
    assert!(matches!(not_st, Err(Error::Format { .. })), "{not_st:?}");
    // The DINO head on its own is not a backbone.
    let head_only = Vit::load(
        &fixture("engine", "s16_tiny/head_dino.safetensors"),
        None,
        &LoadOptions::default(),
    );
    assert!(matches!(head_only, Err(Error::MissingTensor { .. })));
    // Heads that do not divide the width.
    let bad_heads = Vit::load(
        &fixture("engine", "s16_tiny/model_timm.safetensors"),
        None,
        &LoadOptions {
            heads: Some(5),
            ..Default::default()
        },
    );
    assert!(matches!(bad_heads, Err(Error::InvalidParam { .. })));
}
