//! Loader behaviour that needs no reference: standard configs load at patch 8 and
//! 16, and every missing or misshapen tensor is an error naming key and shapes.

mod common;

use std::collections::HashMap;
use std::path::Path;

use common::*;
use explainseg::model::{LoadOptions, Vit, VitConfig};
use explainseg::Error;
use safetensors::{serialize_to_file, Dtype, View};

/// A tensor of zeros for safetensors serialisation.
struct Zeros {
    shape: Vec<usize>,
    dtype: Dtype,
}

impl View for &Zeros {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> std::borrow::Cow<'_, [u8]> {
        std::borrow::Cow::Owned(vec![0u8; self.data_len()])
    }
    fn data_len(&self) -> usize {
        self.shape.iter().product::<usize>() * self.dtype.bitsize() / 8
    }
}

/// Canonical (timm) tensor shapes of a config, with a `classes`-way CLS head.
fn timm_shapes(c: &VitConfig, classes: usize) -> Vec<(String, Vec<usize>)> {
    let (d, h, p) = (c.dim, c.mlp_hidden, c.patch);
    let mut v = vec![
        ("cls_token".to_string(), vec![1, 1, d]),
        ("pos_embed".to_string(), vec![1, c.pos_patches + 1, d]),
        ("patch_embed.proj.weight".to_string(), vec![d, 3, p, p]),
        ("patch_embed.proj.bias".to_string(), vec![d]),
        ("norm.weight".to_string(), vec![d]),
        ("norm.bias".to_string(), vec![d]),
        ("head.weight".to_string(), vec![classes, d]),
        ("head.bias".to_string(), vec![classes]),
    ];
    for i in 0..c.depth {
        for (name, shape) in [
            ("norm1.weight", vec![d]),
            ("norm1.bias", vec![d]),
            ("attn.qkv.weight", vec![3 * d, d]),
            ("attn.qkv.bias", vec![3 * d]),
            ("attn.proj.weight", vec![d, d]),
            ("attn.proj.bias", vec![d]),
            ("norm2.weight", vec![d]),
            ("norm2.bias", vec![d]),
            ("mlp.fc1.weight", vec![h, d]),
            ("mlp.fc1.bias", vec![h]),
            ("mlp.fc2.weight", vec![d, h]),
            ("mlp.fc2.bias", vec![d]),
        ] {
            v.push((format!("blocks.{i}.{name}"), shape));
        }
    }
    v
}

fn write(path: &Path, shapes: &[(String, Vec<usize>)], dtype: Dtype) {
    let tensors: Vec<(String, Zeros)> = shapes
        .iter()
        .map(|(k, s)| {
            (
                k.clone(),
                Zeros {
                    shape: s.clone(),
                    dtype,
                },
            )
        })
        .collect();
    let views: Vec<(&str, &Zeros)> = tensors.iter().map(|(k, z)| (k.as_str(), z)).collect();
    serialize_to_file(views, None::<HashMap<String, String>>, path).unwrap();
}

#[test]
fn vit_ti_s_b_load_at_patch_8_and_16() {
    let tmp = tempfile::tempdir().unwrap();
    for size in ["ti", "s", "b"] {
        for patch in [8, 16] {
            let c = VitConfig::standard(size, patch, 224).unwrap();
            let path = tmp.path().join(format!("{size}{patch}.safetensors"));
            // ViT-B in bf16 keeps the file small; every dtype widens to f32 on load.
            write(
                &path,
                &timm_shapes(&c, 2),
                if size == "b" { Dtype::BF16 } else { Dtype::F16 },
            );
            let vit = Vit::load(&path, None, &LoadOptions::default()).unwrap();
            assert_eq!(vit.config, c, "{size}/{patch}");
            assert_eq!(
                vit.config.name(),
                format!(
                    "ViT-{}/{patch}",
                    match size {
                        "ti" => "Ti",
                        "s" => "S",
                        _ => "B",
                    }
                )
            );
            std::fs::remove_file(&path).unwrap();
        }
    }
}

#[test]
fn missing_and_misshapen_tensors_name_the_key_and_shapes() {
    let tmp = tempfile::tempdir().unwrap();
    let c = VitConfig {
        patch: 16,
        dim: 64,
        depth: 2,
        heads: 1,
        mlp_hidden: 256,
        eps: 1e-6,
        pos_grid: Some((2, 2)),
        pos_patches: 4,
    };
    let good = timm_shapes(&c, 3);

    let path = tmp.path().join("missing.safetensors");
    write(
        &path,
        &good
            .iter()
            .filter(|(k, _)| k != "blocks.1.mlp.fc2.bias")
            .cloned()
            .collect::<Vec<_>>(),
        Dtype::F32,
    );
    let err = Vit::load(&path, None, &LoadOptions::default()).unwrap_err();
    assert!(
        matches!(&err, Error::MissingTensor { key, .. } if key == "blocks.1.mlp.fc2.bias"),
        "{err}"
    );

    let path = tmp.path().join("misshapen.safetensors");
    let bad: Vec<_> = good
        .iter()
        .map(|(k, s)| {
            if k == "blocks.0.attn.proj.weight" {
                (k.clone(), vec![64, 65])
            } else {
                (k.clone(), s.clone())
            }
        })
        .collect();
    write(&path, &bad, Dtype::F32);
    let err = Vit::load(&path, None, &LoadOptions::default()).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("blocks.0.attn.proj.weight")
            && msg.contains("[64, 64]")
            && msg.contains("[64, 65]"),
        "{msg}"
    );

    let path = tmp.path().join("extra.safetensors");
    let mut extra = good.clone();
    extra.push(("blocks.0.ls1.gamma".into(), vec![64]));
    write(&path, &extra, Dtype::F32);
    let err = Vit::load(&path, None, &LoadOptions::default()).unwrap_err();
    assert!(err.to_string().contains("blocks.0.ls1.gamma"), "{err}");

    let path = tmp.path().join("f64.safetensors");
    write(&path, &good, Dtype::F64);
    assert!(matches!(
        Vit::load(&path, None, &LoadOptions::default()),
        Err(Error::UnsupportedDtype { .. })
    ));

    // A head whose width fits no layout.
    let path = tmp.path().join("head.safetensors");
    let odd_head: Vec<_> = good
        .iter()
        .map(|(k, s)| {
            if k == "head.weight" {
                (k.clone(), vec![3, 100])
            } else {
                (k.clone(), s.clone())
            }
        })
        .collect();
    write(&path, &odd_head, Dtype::F32);
    let err = Vit::load(&path, None, &LoadOptions::default()).unwrap_err();
    assert!(matches!(err, Error::Shape { .. }), "{err}");

    // Truncated file.
    let bytes = std::fs::read(fixture("engine", "s16_tiny/model_timm.safetensors")).unwrap();
    let path = tmp.path().join("truncated.safetensors");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    assert!(matches!(
        Vit::load(&path, None, &LoadOptions::default()),
        Err(Error::Format { .. })
    ));
}

/// Full ViT-S/16 parity, on demand: `python tools/gen_engine.py --full` writes
/// /tmp/explainseg_full/vits16 (≈ 95 MB, not committed); set EXPLAINSEG_FULL_FIXTURES
/// to another folder if needed. Skips cleanly when absent.
#[test]
fn full_vit_s16_matches_pytorch_when_generated() {
    let dir = std::env::var("EXPLAINSEG_FULL_FIXTURES")
        .unwrap_or_else(|_| "/tmp/explainseg_full/vits16".into());
    let dir = Path::new(&dir);
    if !dir.join("model_timm.safetensors").exists() {
        eprintln!(
            "skipped: no full ViT-S/16 fixtures at {} (run tools/gen_engine.py --full)",
            dir.display()
        );
        return;
    }
    use explainseg::attr::{integrated_gradients, IgConfig};
    use explainseg::backend::cpu::CpuEngine;
    use explainseg::backend::Engine;
    let cfg = json(&dir.join("config.json").to_path_buf());
    let vit = Vit::load(
        &dir.join("model_timm.safetensors"),
        None,
        &LoadOptions::default(),
    )
    .unwrap();
    let x = dyn4(npy_f32(&dir.join("input.npy").to_path_buf()));
    let engine = CpuEngine::new(&vit);
    let logits = to_vec(&engine.logits(x.view()).unwrap());
    assert!(
        rel_max(
            &logits,
            &to_vec(&npy_f32(&dir.join("logits.npy").to_path_buf()))
        ) <= 1e-5,
        "{logits:?}"
    );
    let target = cfg["target"].as_u64().unwrap() as usize;
    let steps = cfg["ig_steps"]["ig"].as_u64().unwrap() as usize;
    let zero = ndarray::Array4::<f32>::zeros(x.dim());
    let out = integrated_gradients(
        &engine,
        x.view(),
        zero.view(),
        target,
        &IgConfig {
            n_steps: steps,
            batch_size: 4,
            ..Default::default()
        },
        None,
    )
    .unwrap();
    let want = to_vec(&npy_f32(&dir.join("ig_gausslegendre.npy").to_path_buf()));
    assert!(rel_l2(&to_vec(&out.attributions), &want) <= 1e-4);
}
