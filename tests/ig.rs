//! Input gradients, Integrated Gradients (all Captum rules) and NoiseTunnel parity
//! with PyTorch + Captum 0.9 (fixtures from tools/gen_engine.py), plus properties.

mod common;

use common::*;
use explainseg::attr::{
    integrated_gradients, noise_tunnel_ig, quadrature, Baseline, IgConfig, Method, Noise,
    NoiseTunnelConfig, NtType,
};
use explainseg::backend::cpu::CpuEngine;
use explainseg::backend::Engine;
use explainseg::model::Vit;
use ndarray::Array4;

/// Input-gradient / IG / NoiseTunnel tolerance (relative L2), from the issue.
const GRAD_TOL: f64 = 1e-4;
const CASES: [&str; 3] = ["s16_tiny", "p8_dino4", "hf_eps"];

struct Case {
    vit: Vit,
    x: Array4<f32>,
    target: usize,
    cfg: serde_json::Value,
    name: &'static str,
}

impl Case {
    fn load(name: &'static str) -> Case {
        let cfg = json(&fixture("engine", &format!("{name}/config.json")));
        let (vit, x) = engine_case(name);
        let target = cfg["target"].as_u64().unwrap() as usize;
        Case {
            vit,
            x,
            target,
            cfg,
            name,
        }
    }

    fn arr(&self, file: &str) -> Vec<f32> {
        to_vec(&npy_f32(&fixture(
            "engine",
            &format!("{}/{file}", self.name),
        )))
    }

    fn steps(&self, key: &str) -> usize {
        self.cfg["ig_steps"][key].as_u64().unwrap() as usize
    }
}

#[test]
fn input_gradients_match_autograd() {
    for name in CASES {
        let c = Case::load(name);
        let batch = dyn4(npy_f32(&fixture(
            "engine",
            &format!("{name}/grad_inputs.npy"),
        )));
        let targets = vec![c.target; batch.dim().0];
        let (_, grad) = CpuEngine::new(&c.vit)
            .logits_and_input_grad(batch.view(), &targets)
            .unwrap();
        let err = rel_l2(&to_vec(&grad), &c.arr("grad.npy"));
        eprintln!("{name}: input-gradient rel-L2 {err:.2e}");
        assert!(err <= GRAD_TOL, "{name}: input gradient rel-L2 {err:e}");
    }
}

#[test]
fn quadrature_matches_captum_at_50_steps() {
    for m in Method::CAPTUM {
        let q = quadrature(m, 50).unwrap();
        let alphas = npy_f64(&fixture(
            "engine",
            &format!("quadrature/alphas_{}_50.npy", m.name()),
        ));
        let steps = npy_f64(&fixture(
            "engine",
            &format!("quadrature/steps_{}_50.npy", m.name()),
        ));
        for (a, b) in q
            .alphas
            .iter()
            .zip(alphas.iter())
            .chain(q.steps.iter().zip(steps.iter()))
        {
            // IG only uses the f32 casts, which must be identical.
            assert_eq!(*a as f32, *b as f32, "{}: {a} vs {b}", m.name());
            assert!((a - b).abs() <= 1e-14, "{}: {a} vs {b}", m.name());
        }
    }
}

#[test]
fn ig_matches_captum_for_every_rule() {
    for name in CASES {
        let c = Case::load(name);
        let engine = CpuEngine::new(&c.vit);
        let zero = Array4::<f32>::zeros((1, 3, c.x.dim().2, c.x.dim().3));
        for m in Method::CAPTUM {
            let cfg = IgConfig {
                method: m,
                n_steps: c.steps("ig"),
                batch_size: 7,
                ..Default::default()
            };
            let out = integrated_gradients(&engine, c.x.view(), zero.view(), c.target, &cfg, None)
                .unwrap();
            let err = rel_l2(
                &to_vec(&out.attributions),
                &c.arr(&format!("ig_{}.npy", m.name())),
            );
            eprintln!("{name} {}: IG rel-L2 {err:.2e}", m.name());
            assert!(err <= GRAD_TOL, "{name} {}: IG rel-L2 {err:e}", m.name());
            let want_delta = c.arr(&format!("ig_{}_delta.npy", m.name()))[0];
            // The delta is a difference of O(1) sums: compare absolutely.
            assert!(
                (out.deltas[0] - want_delta).abs() <= 1e-4,
                "{name} {}: delta {} vs {want_delta}",
                m.name(),
                out.deltas[0]
            );
        }
    }
}

#[test]
fn ig_options_match_captum() {
    for name in CASES {
        let c = Case::load(name);
        let engine = CpuEngine::new(&c.vit);
        let n = c.steps("ig");
        let (h, w) = (c.x.dim().2, c.x.dim().3);
        let zero = Array4::<f32>::zeros((1, 3, h, w));
        let run = |baseline: &Array4<f32>, cfg: IgConfig| {
            integrated_gradients(&engine, c.x.view(), baseline.view(), c.target, &cfg, None)
                .unwrap()
        };
        let base_cfg = IgConfig {
            n_steps: n,
            ..Default::default()
        };

        let out = run(
            &zero,
            IgConfig {
                batch_size: 5,
                ..base_cfg.clone()
            },
        );
        assert!(
            rel_l2(
                &to_vec(&out.attributions),
                &c.arr("ig_gausslegendre_ibs5.npy")
            ) <= GRAD_TOL,
            "{name}: ibs5"
        );

        let out = run(
            &zero,
            IgConfig {
                multiply_by_inputs: false,
                ..base_cfg.clone()
            },
        );
        assert!(
            rel_l2(
                &to_vec(&out.attributions),
                &c.arr("ig_gausslegendre_nomul.npy")
            ) <= GRAD_TOL,
            "{name}: nomul"
        );

        let mean = [0.485, 0.456, 0.406];
        let std = [0.229, 0.224, 0.225];
        let black = Baseline::Black.resolve(c.x.view(), mean, std).unwrap();
        let out = run(&black, base_cfg.clone());
        assert!(
            rel_l2(&to_vec(&out.attributions), &c.arr("ig_black.npy")) <= GRAD_TOL,
            "{name}: black"
        );
        assert!(
            (out.deltas[0] - c.arr("ig_black_delta.npy")[0]).abs() <= 1e-4,
            "{name}: black delta"
        );

        let custom = dyn4(npy_f32(&fixture(
            "engine",
            &format!("{name}/baseline_custom.npy"),
        )));
        let resolved = Baseline::Tensor(custom)
            .resolve(c.x.view(), mean, std)
            .unwrap();
        let out = run(&resolved, base_cfg);
        assert!(
            rel_l2(&to_vec(&out.attributions), &c.arr("ig_custom.npy")) <= GRAD_TOL,
            "{name}: custom baseline"
        );
    }
}

#[test]
fn noise_tunnel_with_injected_noise_matches_captum() {
    for name in CASES {
        let c = Case::load(name);
        let engine = CpuEngine::new(&c.vit);
        let noise = dyn4(npy_f32(&fixture("engine", &format!("{name}/noise.npy"))));
        let zero = Array4::<f32>::zeros((1, 3, c.x.dim().2, c.x.dim().3));
        let ig = IgConfig {
            n_steps: c.steps("nt"),
            batch_size: 6,
            ..Default::default()
        };
        for t in [NtType::SmoothGrad, NtType::SmoothGradSq, NtType::VarGrad] {
            let nt = NoiseTunnelConfig {
                nt_type: t,
                noise: Noise::Injected(noise.clone()),
            };
            let out = noise_tunnel_ig(&engine, c.x.view(), zero.view(), c.target, &ig, &nt, None)
                .unwrap();
            let err = rel_l2(
                &to_vec(&out.attribution),
                &c.arr(&format!("nt_{}.npy", t.name())),
            );
            eprintln!("{name} {}: NoiseTunnel rel-L2 {err:.2e}", t.name());
            assert!(err <= GRAD_TOL, "{name} {}: rel-L2 {err:e}", t.name());
            if t == NtType::SmoothGrad {
                let want = c.arr("nt_smoothgrad_delta.npy");
                assert_eq!(out.deltas.len(), want.len());
                for (a, b) in out.deltas.iter().zip(&want) {
                    assert!((a - b).abs() <= 1e-4, "{name}: NT delta {a} vs {b}");
                }
            }
        }
    }
}

#[test]
fn ig_completeness_holds_for_many_baselines_and_inputs() {
    // Property: Σ IG = f(x) − f(b) up to the quadrature error, which for 64-point
    // Gauss–Legendre on these smooth models is far below 1e-3 of the logit range.
    let c = Case::load("s16_tiny");
    let engine = CpuEngine::new(&c.vit);
    let (h, w) = (c.x.dim().2, c.x.dim().3);
    for seed in 0..4u64 {
        let noise = explainseg::rng::gaussian_noise(seed, 0, 3 * h * w, 0.7);
        let x = &c.x + &Array4::from_shape_vec((1, 3, h, w), noise).unwrap();
        let baseline = Baseline::Blur {
            sigma_px: 1.0 + seed as f32,
        }
        .resolve(x.view(), [0.0; 3], [1.0; 3])
        .unwrap();
        let logits_x = engine.logits(x.view()).unwrap();
        let target = (seed as usize) % 3;
        let cfg = IgConfig {
            n_steps: 64,
            batch_size: 16,
            ..Default::default()
        };
        let out =
            integrated_gradients(&engine, x.view(), baseline.view(), target, &cfg, None).unwrap();
        let gap = logits_x[[0, target]] - engine.logits(baseline.view()).unwrap()[[0, target]];
        let sum: f32 = out.attributions.sum();
        assert!(
            (sum - gap).abs() <= 1e-3 * gap.abs().max(1.0),
            "seed {seed}: Σ IG {sum} vs gap {gap}"
        );
        assert!((out.deltas[0] - (sum - gap)).abs() <= 1e-4);
    }
}

#[test]
fn stratified_path_points_estimate_the_path_integral() {
    // Method::Stratified is a Monte Carlo rule (one random point per stratum of
    // [0, 1]): with many points it converges to the integral Gauss–Legendre
    // computes (Captum's rule, pinned above), and its sum keeps completeness.
    let c = Case::load("s16_tiny");
    let engine = CpuEngine::new(&c.vit);
    let zero = Array4::<f32>::zeros(c.x.dim());
    let run = |method, n_steps| {
        let cfg = IgConfig {
            method,
            n_steps,
            batch_size: 32,
            ..Default::default()
        };
        integrated_gradients(&engine, c.x.view(), zero.view(), 1, &cfg, None).unwrap()
    };
    let exact = run(Method::GaussLegendre, 64);
    let mut errors = Vec::new();
    for n in [16, 256] {
        let mc = run(Method::Stratified, n);
        let err = rel_l2(
            mc.attributions.as_slice().unwrap(),
            exact.attributions.as_slice().unwrap(),
        );
        eprintln!("stratified path, {n} points: rel-L2 {err:.2e} against Gauss-Legendre 64");
        errors.push(err);
    }
    assert!(errors[1] < 1e-3, "{errors:?}");
    assert!(errors[1] < errors[0], "more points, closer: {errors:?}");
}

#[test]
fn seeded_noise_tunnel_is_deterministic_and_abortable() {
    let c = Case::load("s16_tiny");
    let engine = CpuEngine::new(&c.vit);
    let zero = Array4::<f32>::zeros((1, 3, 64, 64));
    let ig = IgConfig {
        n_steps: 4,
        batch_size: 5,
        return_delta: false,
        ..Default::default()
    };
    let nt = NoiseTunnelConfig {
        nt_type: NtType::SmoothGrad,
        noise: Noise::Seeded {
            samples: 2,
            stdev: 1.0,
            seed: 9,
        },
    };
    let a = noise_tunnel_ig(&engine, c.x.view(), zero.view(), c.target, &ig, &nt, None).unwrap();
    let b = noise_tunnel_ig(&engine, c.x.view(), zero.view(), c.target, &ig, &nt, None).unwrap();
    assert_eq!(a.attribution, b.attribution);
    let stop = |done: usize, _total: usize| done < 5;
    let aborted = noise_tunnel_ig(
        &engine,
        c.x.view(),
        zero.view(),
        c.target,
        &ig,
        &nt,
        Some(&stop),
    );
    assert!(matches!(aborted, Err(explainseg::Error::Aborted)));
}
