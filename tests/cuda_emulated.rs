//! Every CUDA kernel of `kernels/` compiled for the CPU with g++ against the
//! emulator in `kernels/emu/` (threads as fibers, barriers as switch points, shared
//! memory poisoned with NaN per block) and checked against its CPU twin, under three
//! thread schedules (forward, reverse, seeded random). Outputs are NaN-poisoned
//! before each launch, so an element a kernel fails to write shows up.
//!
//! Tolerances: where the kernel and its twin do the same f32 operations in the same
//! order (copies, element-wise products, the IG/NoiseTunnel kernels written with
//! `__f*_rn` intrinsics) the results must be bit-identical. Reductions (LayerNorm,
//! softmax) sum in a different order than the CPU's 8-lane sums: relative error
//! ≤ a few f32 ulp times log2(n), hence 2e-6 relative + 2e-6 absolute (values ~1).
//! GELU uses the GPU's `erfcf` (≤ 4 ulp) against the CPU's polynomial erfc
//! (≤ 1.2e-7·z² relative): 1e-6 absolute + 1e-5 relative.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

mod common;

use explainseg::backend::cpu::ops;
use explainseg::rng::gaussian_noise;

// ---------------------------------------------------------------------------------
// The emulated kernel library.

struct Emu {
    lib: libloading::Library,
}

type LaunchFn = unsafe extern "C" fn(
    *const std::ffi::c_char,
    u32,
    u32,
    u32,
    u32,
    u32,
    u32,
    u32,
    *mut *mut std::ffi::c_void,
    *const usize,
    usize,
    i32,
    u64,
) -> i32;

fn kernel_sources(root: &Path) -> Vec<PathBuf> {
    let mut v = Vec::new();
    for dir in [root.join("kernels"), root.join("kernels/emu")] {
        for e in std::fs::read_dir(&dir).expect("kernels/ exists").flatten() {
            let p = e.path();
            if matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("cu" | "cuh" | "h" | "cpp")
            ) {
                v.push(p);
            }
        }
    }
    v
}

/// Builds kernels/emu/registry.cpp (which includes every .cu) into a shared library
/// under the test target directory, unless an up-to-date one exists. Extra g++ flags
/// come from `EXPLAINSEG_EMU_CXXFLAGS` (e.g. `-DES_EMU_UCONTEXT` for the portable
/// fiber switch, `-fsanitize=address`); each flag set gets its own library.
fn build_library() -> Result<PathBuf, String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let extra = std::env::var("EXPLAINSEG_EMU_CXXFLAGS").unwrap_or_default();
    let tag: String = extra
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("es_kernels_emu{tag}.so"));
    let newest = kernel_sources(&root)
        .iter()
        .filter_map(|p| p.metadata().and_then(|m| m.modified()).ok())
        .max();
    let built = out.metadata().and_then(|m| m.modified()).ok();
    if let (Some(n), Some(b)) = (newest, built) {
        if b > n {
            return Ok(out);
        }
    }
    let tmp = out.with_extension(format!("so.{}", std::process::id()));
    let status = Command::new(std::env::var("CXX").unwrap_or_else(|_| "g++".into()))
        .args([
            "-std=c++17",
            "-O2",
            "-fPIC",
            "-shared",
            "-fstack-clash-protection",
            // As the __f*_rn / __d*_rn intrinsics: never fuse a*b + c.
            "-ffp-contract=off",
            "-Wall",
            "-DES_EMULATE",
            "-I",
        ])
        .arg(root.join("kernels"))
        .args(extra.split_whitespace())
        .arg("-o")
        .arg(&tmp)
        .arg(root.join("kernels/emu/registry.cpp"))
        .status()
        .map_err(|e| format!("cannot run g++ (needed for the emulated kernel tests): {e}"))?;
    if !status.success() {
        return Err(format!(
            "g++ failed to build the emulated kernels ({status})"
        ));
    }
    std::fs::rename(&tmp, &out).map_err(|e| e.to_string())?;
    Ok(out)
}

fn emu() -> &'static Emu {
    static EMU: OnceLock<Result<Emu, String>> = OnceLock::new();
    let r = EMU.get_or_init(|| {
        let path = build_library()?;
        // SAFETY: the library is ours (built above) and has no load-time side effects
        // beyond static initialisers of the C++ standard library.
        let lib = unsafe { libloading::Library::new(&path) }.map_err(|e| e.to_string())?;
        Ok(Emu { lib })
    });
    match r {
        Ok(e) => e,
        Err(e) => panic!("{e}"),
    }
}

/// Kernel arguments as cuLaunchKernel takes them: one value per argument.
#[derive(Default)]
struct Args {
    vals: Vec<Vec<u8>>,
}

impl Args {
    fn raw<T: Copy>(mut self, v: T) -> Self {
        let bytes = unsafe {
            // SAFETY: T is Copy plain data (pointers, integers, floats); we copy its bytes.
            std::slice::from_raw_parts(&v as *const T as *const u8, std::mem::size_of::<T>())
        };
        self.vals.push(bytes.to_vec());
        self
    }
    fn out<T>(self, v: &mut [T]) -> Self {
        self.raw(v.as_mut_ptr())
    }
    fn inp<T>(self, v: &[T]) -> Self {
        self.raw(v.as_ptr())
    }
    fn i32(self, v: usize) -> Self {
        self.raw(i32::try_from(v).expect("fits in i32"))
    }
    fn f32(self, v: f32) -> Self {
        self.raw(v)
    }
    fn u64(self, v: u64) -> Self {
        self.raw(v)
    }
}

/// (schedule, seed): forward, reverse, seeded random order of the fibers.
const SCHEDULES: [(i32, u64); 3] = [(0, 0), (1, 0), (2, 0x5EED)];

fn try_launch(
    name: &str,
    grid: u32,
    block: u32,
    args: &Args,
    schedule: (i32, u64),
) -> Result<(), String> {
    let e = emu();
    // SAFETY: the symbols have the signatures declared in kernels/emu/registry.cpp.
    let (launch, last_error) = unsafe {
        (
            e.lib
                .get::<LaunchFn>(b"es_emu_launch\0")
                .expect("es_emu_launch exported"),
            e.lib
                .get::<unsafe extern "C" fn() -> *const std::ffi::c_char>(b"es_emu_last_error\0")
                .expect("es_emu_last_error exported"),
        )
    };
    let mut ptrs: Vec<*mut std::ffi::c_void> =
        args.vals.iter().map(|v| v.as_ptr() as *mut _).collect();
    let sizes: Vec<usize> = args.vals.iter().map(|v| v.len()).collect();
    let cname = std::ffi::CString::new(name).expect("no NUL in kernel names");
    // SAFETY: each pointer argument points into a live Rust buffer sized by the test
    // for the launch's grid (the kernels bound-check against the sizes passed).
    let rc = unsafe {
        launch(
            cname.as_ptr(),
            grid,
            1,
            1,
            block,
            1,
            1,
            0,
            ptrs.as_mut_ptr(),
            sizes.as_ptr(),
            ptrs.len(),
            schedule.0,
            schedule.1,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        // SAFETY: es_emu_last_error returns a NUL-terminated string owned by the library.
        Err(unsafe { std::ffi::CStr::from_ptr(last_error()) }
            .to_string_lossy()
            .into_owned())
    }
}

fn launch(name: &str, grid: u32, block: u32, args: Args, schedule: (i32, u64)) {
    if let Err(e) = try_launch(name, grid, block, &args, schedule) {
        panic!("launch of {name} failed: {e}");
    }
}

// ---------------------------------------------------------------------------------
// Inputs and comparisons.

/// Seeded N(0, scale²) values shifted by `shift`.
fn seeded(seed: u64, n: usize, scale: f32, shift: f32) -> Vec<f32> {
    gaussian_noise(seed, 0, n, scale)
        .into_iter()
        .map(|v| v + shift)
        .collect()
}

fn poisoned(n: usize) -> Vec<f32> {
    vec![f32::NAN; n]
}

fn assert_close(what: &str, got: &[f32], want: &[f32], rtol: f32, atol: f32) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    let mut worst = (0usize, 0f32);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            g.is_finite(),
            "{what}[{i}] = {g} (not written or not finite), want {w}"
        );
        let err = (g - w).abs() - rtol * w.abs();
        if err > worst.1 {
            worst = (i, err);
        }
    }
    let (i, excess) = worst;
    assert!(
        excess <= atol,
        "{what}[{i}] = {}, want {} (error beyond rtol {rtol} by {excess}, atol {atol})",
        got[i],
        want[i]
    );
}

fn assert_bits(what: &str, got: &[f32], want: &[f32]) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            g.to_bits() == w.to_bits(),
            "{what}[{i}] = {g:e} ({:#x}), want {w:e} ({:#x}) bit for bit",
            g.to_bits(),
            w.to_bits()
        );
    }
}

/// Kernels each test below covers; `every_kernel_has_a_test` checks the table.
const TESTED: &[&str] = &[
    "layer_norm_f32",
    "layer_norm_bwd_f32",
    "softmax_scale_f32",
    "softmax_bwd_f32",
    "attention_fwd_f32",
    "attention_bwd_dq_f32",
    "attention_bwd_dkdv_f32",
    "bias_gelu_f32",
    "gelu_bwd_f32",
    "add_bias_rows_f32",
    "head_rows_f32",
    "im2col_f32",
    "col2im_f32",
    "embed_tokens_f32",
    "ig_path_f32",
    "ig_accumulate_f32",
    "ig_advance_row0",
    "ig_finish_f32",
    "nt_noise_f32",
    "nt_aggregate_f32",
    "selftest_early_return",
    "selftest_missing_barrier",
    "selftest_atomic_race",
    "selftest_atomic_claim",
];

/// The DenseCRF kernels (kernels/crf_*.cu): tested through their launch wrappers in
/// src/backend/cuda/crf/kernels.rs against the CPU DenseCRF by tests/cuda_emu_crf.rs
/// (feature `cuda-emu`), under every schedule.
const TESTED_THROUGH_CRF_DEVICE: &[&str] = &[
    "crf_features_f32",
    "lattice_locate_f32",
    "lattice_reset",
    "lattice_insert",
    "lattice_verify",
    "lattice_owner_flags",
    "lattice_number",
    "lattice_entry_vertex",
    "lattice_starts",
    "lattice_neighbors",
    "scan_exclusive_u32",
    "radix_histogram_u32",
    "radix_scatter_u32",
    "lattice_splat_f32",
    "lattice_blur_f32",
    "lattice_slice_f32",
    "crf_fill_f32",
    "crf_norm_f32",
    "crf_softmax_init_f32",
    "crf_update_f32",
    "crf_labels",
    "crf_foreground_u8",
];

/// The relevance-map and designed-noise kernels (kernels/relevance.cu,
/// `nt_designed_f32`): tested through the engine (their wrappers in
/// src/backend/cuda/launch.rs) against the host's computation, bit for bit, by
/// tests/cuda_emu_pipeline.rs (feature `cuda-emu`).
const TESTED_THROUGH_ENGINE: &[&str] = &[
    "select_target_i32",
    "reduce_channels_f32",
    "blur_axis_f32",
    "min_max_f32",
    "min_max_scale_f32",
    "nt_designed_f32",
];

#[test]
fn every_kernel_has_a_test() {
    let e = emu();
    // SAFETY: signatures as declared in kernels/emu/registry.cpp.
    let (count, name) = unsafe {
        (
            e.lib
                .get::<unsafe extern "C" fn() -> i32>(b"es_emu_kernel_count\0")
                .unwrap(),
            e.lib
                .get::<unsafe extern "C" fn(i32) -> *const std::ffi::c_char>(
                    b"es_emu_kernel_name\0",
                )
                .unwrap(),
        )
    };
    let n = unsafe { count() };
    let names: Vec<String> = (0..n)
        // SAFETY: valid indices give static NUL-terminated names.
        .map(|i| {
            unsafe { std::ffi::CStr::from_ptr(name(i)) }
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let crf_wrappers = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src/backend/cuda/crf/kernels.rs"),
    )
    .unwrap();
    let engine_wrappers = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("src/backend/cuda/launch.rs"),
    )
    .unwrap();
    for k in &names {
        let through_crf = TESTED_THROUGH_CRF_DEVICE.contains(&k.as_str())
            && crf_wrappers.contains(&format!("\"{k}\""));
        let through_engine = TESTED_THROUGH_ENGINE.contains(&k.as_str())
            && engine_wrappers.contains(&format!("\"{k}\""));
        assert!(
            TESTED.contains(&k.as_str()) || through_crf || through_engine,
            "kernel {k} has no emulated test"
        );
    }
    // Every .cu kernel is in the emulator's table.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels");
    for entry in std::fs::read_dir(&root).unwrap().flatten() {
        let p = entry.path();
        if p.extension().and_then(|e| e.to_str()) != Some("cu") {
            continue;
        }
        let src = std::fs::read_to_string(&p).unwrap();
        for line in src.lines() {
            if let Some(rest) = line.strip_prefix("extern \"C\" __global__ void ") {
                let k = rest.split('(').next().unwrap().trim();
                assert!(
                    names.iter().any(|n| n == k),
                    "{k} ({}) is missing from kernels/emu/registry.cpp",
                    p.display()
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------
// Emulator self-checks.

#[test]
fn emulator_reports_a_divergent_barrier_as_deadlock() {
    let mut out = poisoned(64);
    let err = try_launch(
        "selftest_early_return",
        1,
        64,
        &Args::default().out(&mut out),
        SCHEDULES[0],
    )
    .unwrap_err();
    assert!(err.contains("deadlock"), "{err}");
}

#[test]
fn emulator_exposes_a_missing_barrier_under_some_schedule() {
    let input = seeded(1, 256, 1.0, 0.0);
    let want: f32 = input.iter().sum();
    let mut wrong = 0;
    for s in SCHEDULES {
        let mut out = poisoned(1);
        launch(
            "selftest_missing_barrier",
            1,
            256,
            Args::default().inp(&input).out(&mut out),
            s,
        );
        // A NaN (an unwritten slot was read) counts as wrong too.
        let right = (out[0] - want).abs() < 1e-3;
        wrong += usize::from(!right);
    }
    assert!(wrong > 0, "the race went unnoticed under every schedule");
}

/// A planted race between two atomics (check, then act) is caught: with yields at
/// atomics every thread sees the claim still free, so many win, in the schedule's order;
/// the correct single-atomicCAS claim has exactly one winner under every schedule.
#[test]
fn emulator_catches_a_planted_race_between_atomics() {
    let threads = 64usize;
    let run = |name: &str, s: (i32, u64)| {
        let mut claim = [0u64];
        let mut winners = [0u32];
        let mut order = vec![u32::MAX; threads];
        launch(
            name,
            1,
            threads as u32,
            Args::default()
                .out(&mut claim)
                .out(&mut winners)
                .out(&mut order),
            s,
        );
        let w = winners[0] as usize;
        (claim[0], w, order[..w].to_vec())
    };
    let mut race_orders = Vec::new();
    for s in SCHEDULES {
        let (_, winners, order) = run("selftest_atomic_race", s);
        assert!(
            winners > 1,
            "schedule {s:?}: the check-then-act race went unnoticed ({winners} winner)"
        );
        race_orders.push(order);
        let (claim, winners, order) = run("selftest_atomic_claim", s);
        assert_eq!(winners, 1, "schedule {s:?}: atomicCAS claim");
        assert_eq!(claim, u64::from(order[0]) + 1, "schedule {s:?}");
    }
    // The race's outcome depends on the schedule.
    assert!(
        race_orders[0] != race_orders[1] && race_orders[0] != race_orders[2],
        "{race_orders:?}"
    );
}

#[test]
fn emulator_rejects_mismatched_arguments() {
    // add_bias_rows_f32(float* x, const float* bias, int rows, int cols)
    let mut out = poisoned(64);
    let bias = poisoned(8);
    let err = try_launch(
        "add_bias_rows_f32",
        1,
        64,
        &Args::default().out(&mut out).inp(&bias),
        SCHEDULES[0],
    )
    .unwrap_err();
    assert!(err.contains("takes 4 arguments"), "{err}");
    let err = try_launch(
        "add_bias_rows_f32",
        1,
        64,
        &Args::default().out(&mut out).inp(&bias).u64(8).i32(8),
        SCHEDULES[0],
    )
    .unwrap_err();
    assert!(err.contains("argument 2 has 8 bytes"), "{err}");
    let err = try_launch("add_bias_rows_f32", 1, 48, &Args::default(), SCHEDULES[0]).unwrap_err();
    assert!(err.contains("takes 4"), "{err}");
}

// ---------------------------------------------------------------------------------
// Row-wise kernels: LayerNorm and softmax (reductions; tolerance, see the top).

const RED_RTOL: f32 = 2e-6;
const RED_ATOL: f32 = 2e-6;

#[test]
fn layer_norm_matches_cpu_on_strided_rows() {
    let (rows, cols, eps) = (130, 384, 1e-6f32);
    let (x_ld, y_ld) = (cols + 5, cols + 3);
    let x = seeded(10, rows * x_ld, 1.5, 0.3);
    let gamma = seeded(11, cols, 0.5, 1.0);
    let beta = seeded(12, cols, 0.2, 0.0);
    let (mut want_y, mut want_h, mut want_r) =
        (poisoned(rows * y_ld), poisoned(rows * cols), poisoned(rows));
    for r in 0..rows {
        ops::layer_norm_row(
            &x[r * x_ld..][..cols],
            &gamma,
            &beta,
            eps,
            &mut want_y[r * y_ld..][..cols],
            &mut want_h[r * cols..][..cols],
            &mut want_r[r],
        );
    }
    for s in SCHEDULES {
        let (mut y, mut h, mut rs) = (poisoned(rows * y_ld), poisoned(rows * cols), poisoned(rows));
        let args = Args::default()
            .inp(&x)
            .i32(x_ld)
            .inp(&gamma)
            .inp(&beta)
            .out(&mut y)
            .i32(y_ld)
            .out(&mut h)
            .out(&mut rs)
            .i32(rows)
            .i32(cols)
            .f32(eps);
        launch("layer_norm_f32", rows as u32, 128, args, s);
        let pick = |v: &[f32]| -> Vec<f32> {
            (0..rows)
                .flat_map(|r| v[r * y_ld..][..cols].to_vec())
                .collect()
        };
        assert_close(
            "layer_norm y",
            &pick(&y),
            &pick(&want_y),
            RED_RTOL,
            RED_ATOL,
        );
        assert_close("layer_norm xhat", &h, &want_h, RED_RTOL, RED_ATOL);
        assert_close("layer_norm rstd", &rs, &want_r, RED_RTOL, 0.0);
        // The gaps between strided rows stay untouched.
        assert!(y.chunks(y_ld).all(|r| r[cols..].iter().all(|v| v.is_nan())));
    }
}

#[test]
fn layer_norm_backward_matches_cpu_accumulating_into_strided_rows() {
    let (rows, cols) = (130, 384);
    let (g_ld, dx_ld) = (cols * 2, cols + 1);
    let g = seeded(20, rows * g_ld, 1.0, 0.0);
    let gamma = seeded(21, cols, 0.5, 1.0);
    // A genuine x̂ and r from a forward.
    let x = seeded(22, rows * cols, 2.0, -0.4);
    let beta = vec![0f32; cols];
    let (mut y, mut xhat, mut rstd) = (
        vec![0f32; rows * cols],
        vec![0f32; rows * cols],
        vec![0f32; rows],
    );
    for r in 0..rows {
        let (xr, yr, hr) = (
            &x[r * cols..][..cols],
            &mut y[r * cols..][..cols],
            &mut xhat[r * cols..][..cols],
        );
        ops::layer_norm_row(xr, &gamma, &beta, 1e-6, yr, hr, &mut rstd[r]);
    }
    let dx0 = seeded(23, rows * dx_ld, 0.3, 0.0);
    let mut want = dx0.clone();
    for r in 0..rows {
        ops::layer_norm_bwd_row(
            &g[r * g_ld..][..cols],
            &gamma,
            &xhat[r * cols..][..cols],
            rstd[r],
            &mut want[r * dx_ld..][..cols],
            true,
        );
    }
    for s in SCHEDULES {
        let mut dx = dx0.clone();
        let args = Args::default()
            .inp(&g)
            .i32(g_ld)
            .inp(&gamma)
            .inp(&xhat)
            .inp(&rstd)
            .out(&mut dx)
            .i32(dx_ld)
            .i32(rows)
            .i32(cols)
            .i32(1);
        launch("layer_norm_bwd_f32", rows as u32, 128, args, s);
        assert_close("layer_norm_bwd dx", &dx, &want, RED_RTOL, RED_ATOL);
    }
    // accumulate = 0 overwrites.
    let mut dx = poisoned(rows * dx_ld);
    let args = Args::default()
        .inp(&g)
        .i32(g_ld)
        .inp(&gamma)
        .inp(&xhat)
        .inp(&rstd)
        .out(&mut dx)
        .i32(dx_ld)
        .i32(rows)
        .i32(cols)
        .i32(0);
    launch("layer_norm_bwd_f32", rows as u32, 128, args, SCHEDULES[2]);
    for r in 0..rows {
        let mut w = vec![0f32; cols];
        ops::layer_norm_bwd_row(
            &g[r * g_ld..][..cols],
            &gamma,
            &xhat[r * cols..][..cols],
            rstd[r],
            &mut w,
            false,
        );
        assert_close(
            "layer_norm_bwd overwrite",
            &dx[r * dx_ld..][..cols],
            &w,
            RED_RTOL,
            RED_ATOL,
        );
    }
}

#[test]
fn softmax_forward_and_backward_match_cpu() {
    // 2 images × 6 heads × 21 query rows of 197 keys ≈ 50k scores (the 224² token count).
    let (rows, cols, scale) = (252, 197, 0.125f32);
    let scores = seeded(30, rows * cols, 4.0, 0.0);
    let mut want = scores.clone();
    want.chunks_exact_mut(cols)
        .for_each(|r| ops::softmax_row(r, scale));
    let dp0 = seeded(31, rows * cols, 1.0, 0.0);
    let mut want_d = dp0.clone();
    want_d
        .chunks_exact_mut(cols)
        .zip(want.chunks_exact(cols))
        .for_each(|(d, p)| ops::softmax_bwd_row(p, d, scale));
    for s in SCHEDULES {
        let mut p = scores.clone();
        launch(
            "softmax_scale_f32",
            rows as u32,
            64,
            Args::default().out(&mut p).i32(rows).i32(cols).f32(scale),
            s,
        );
        // expf on the GPU is within 2 ulp: 2e-6 relative covers it and the sum order.
        assert_close("softmax", &p, &want, RED_RTOL, 1e-9);
        let mut d = dp0.clone();
        launch(
            "softmax_bwd_f32",
            rows as u32,
            64,
            Args::default()
                .inp(&want)
                .out(&mut d)
                .i32(rows)
                .i32(cols)
                .f32(scale),
            s,
        );
        assert_close("softmax_bwd", &d, &want_d, RED_RTOL, 1e-7);
    }
}

// ---------------------------------------------------------------------------------
// Fused attention (kernels/attention.cu) against its twin, backend::cpu::fused_attention.
//
// Against the twin: bit for bit. The twin does the kernels' f32 operations in their
// order, and the emulator has no FMA contraction and the host's expf/logf, so any
// difference is a kernel bug (a missing barrier, a stale or unwritten tile). On a
// GPU, whose expf is within 2 ulp and which contracts a·b + c, the allowance is
// 2e-6 absolute + 2e-6 relative per element (values of order 1; the absolute part
// because outputs near 0 have no meaningful relative error).
//
// Against the unfused path (S = Q·Kᵀ, softmax_row, O = P·V and softmax_bwd_row, the
// CPU engine's operations): O to 1e-5 of max |O| and LSE to 1e-5, gradients to 1e-4
// relative L2, the engine parity tolerances.

mod attention {
    use super::*;
    use explainseg::backend::cpu::fused_attention::{self as twin, AttnShape};

    const BLOCK: u32 = 32; // ES_ATTN_ROWS

    fn grid(s: AttnShape) -> u32 {
        (s.batch * s.heads * s.tokens.div_ceil(BLOCK as usize)) as u32
    }

    fn max_abs_err(got: &[f32], want: &[f32]) -> f32 {
        got.iter()
            .zip(want)
            .map(|(g, w)| (g - w).abs())
            .fold(0.0, f32::max)
    }

    /// (O, LSE, gqkv) from the unfused CPU path, per image and head.
    fn unfused(
        qkv: &[f32],
        d_out: &[f32],
        s: AttnShape,
        scale: f32,
    ) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let (t, hd) = (s.tokens, s.head_dim);
        let d = s.heads * hd;
        let mut out = vec![0.0; s.batch * t * d];
        let mut lse = vec![0.0; s.batch * s.heads * t];
        let mut g = vec![0.0; s.batch * t * 3 * d];
        let at = |img: usize, part: usize, h: usize, i: usize, c: usize| {
            qkv[(img * t + i) * 3 * d + part * d + h * hd + c]
        };
        for img in 0..s.batch {
            for h in 0..s.heads {
                let mut p = vec![0.0f32; t * t];
                for i in 0..t {
                    for j in 0..t {
                        p[i * t + j] = (0..hd)
                            .map(|c| at(img, 0, h, i, c) * at(img, 1, h, j, c))
                            .sum();
                    }
                    let row = &p[i * t..(i + 1) * t];
                    let m = row
                        .iter()
                        .fold(f64::NEG_INFINITY, |a, &v| a.max((v * scale) as f64));
                    let sum: f64 = row.iter().map(|&v| ((v * scale) as f64 - m).exp()).sum();
                    lse[(img * s.heads + h) * t + i] = (m + sum.ln()) as f32;
                    ops::softmax_row(&mut p[i * t..(i + 1) * t], scale);
                }
                let dout = |i: usize, c: usize| d_out[(img * t + i) * d + h * hd + c];
                let mut dp = vec![0.0f32; t * t];
                for i in 0..t {
                    for c in 0..hd {
                        out[(img * t + i) * d + h * hd + c] =
                            (0..t).map(|j| p[i * t + j] * at(img, 2, h, j, c)).sum();
                    }
                    for j in 0..t {
                        dp[i * t + j] = (0..hd).map(|c| dout(i, c) * at(img, 2, h, j, c)).sum();
                    }
                    ops::softmax_bwd_row(
                        &p[i * t..(i + 1) * t],
                        &mut dp[i * t..(i + 1) * t],
                        scale,
                    );
                }
                for i in 0..t {
                    for c in 0..hd {
                        let row = (img * t + i) * 3 * d + h * hd + c;
                        // dQ = dS·K, dK = dSᵀ·Q, dV = Pᵀ·dO.
                        g[row] = (0..t).map(|j| dp[i * t + j] * at(img, 1, h, j, c)).sum();
                        g[row + d] = (0..t).map(|j| dp[j * t + i] * at(img, 0, h, j, c)).sum();
                        g[row + 2 * d] = (0..t).map(|j| p[j * t + i] * dout(j, c)).sum();
                    }
                }
            }
        }
        (out, lse, g)
    }

    fn check(s: AttnShape, seed: u64) {
        let (t, hd) = (s.tokens, s.head_dim);
        let d = s.heads * hd;
        let scale = (hd as f32).powf(-0.5);
        // Scores of a few units: peaked softmax rows, as trained ViTs have.
        let qkv = seeded(seed, s.batch * t * 3 * d, 1.5, 0.0);
        let d_out = seeded(seed + 1, s.batch * t * d, 1.0, 0.0);
        let mut want_o = vec![0.0; s.batch * t * d];
        let mut want_lse = vec![0.0; s.batch * s.heads * t];
        twin::forward(&qkv, s, scale, &mut want_o, &mut want_lse);
        let mut want_delta = vec![0.0; s.batch * s.heads * t];
        let mut want_g = vec![0.0; s.batch * t * 3 * d];
        twin::backward(
            &qkv,
            &want_o,
            &d_out,
            &want_lse,
            s,
            scale,
            &mut want_delta,
            &mut want_g,
        );

        let (ref_o, ref_lse, ref_g) = unfused(&qkv, &d_out, s, scale);
        let (o_rel, lse_rel, g_rel) = (
            crate::common::rel_max(&want_o, &ref_o),
            crate::common::rel_max(&want_lse, &ref_lse),
            crate::common::rel_l2(&want_g, &ref_g),
        );
        eprintln!("attention {s:?}: twin vs unfused: O rel {o_rel:.2e}, LSE rel {lse_rel:.2e}, dQKV rel-L2 {g_rel:.2e}");
        assert!(
            o_rel <= 1e-5 && lse_rel <= 1e-5,
            "O rel {o_rel}, LSE rel {lse_rel}"
        );
        assert!(g_rel <= 1e-4, "dQKV rel-L2 {g_rel}");

        let ints = |a: Args| a.i32(s.batch).i32(s.heads).i32(t).i32(hd).f32(scale);
        for sched in SCHEDULES {
            let (mut o, mut lse) = (poisoned(want_o.len()), poisoned(want_lse.len()));
            launch(
                "attention_fwd_f32",
                grid(s),
                BLOCK,
                ints(Args::default().inp(&qkv).out(&mut o).out(&mut lse)),
                sched,
            );
            assert_bits("attention O", &o, &want_o);
            assert_bits("attention LSE", &lse, &want_lse);
            let (mut delta, mut g) = (poisoned(want_delta.len()), poisoned(want_g.len()));
            launch(
                "attention_bwd_dq_f32",
                grid(s),
                BLOCK,
                ints(
                    Args::default()
                        .inp(&qkv)
                        .inp(&o)
                        .inp(&d_out)
                        .inp(&lse)
                        .out(&mut delta)
                        .out(&mut g),
                ),
                sched,
            );
            launch(
                "attention_bwd_dkdv_f32",
                grid(s),
                BLOCK,
                ints(
                    Args::default()
                        .inp(&qkv)
                        .inp(&d_out)
                        .inp(&lse)
                        .inp(&delta)
                        .out(&mut g),
                ),
                sched,
            );
            assert_bits("attention D", &delta, &want_delta);
            assert_bits("attention dQKV", &g, &want_g);
            eprintln!(
                "attention {s:?} schedule {sched:?}: max |kernel − twin| O {:.1e}, LSE {:.1e}, dQKV {:.1e}",
                max_abs_err(&o, &want_o),
                max_abs_err(&lse, &want_lse),
                max_abs_err(&g, &want_g)
            );
        }
    }

    #[test]
    fn fused_attention_matches_its_twin_and_the_unfused_path_at_vit_s16_224() {
        // ViT-S/16 at 224²: 6 heads of 64, T = 197 (6 full key tiles and one of 5).
        check(
            AttnShape {
                batch: 2,
                heads: 6,
                tokens: 197,
                head_dim: 64,
            },
            40,
        );
    }

    #[test]
    fn fused_attention_matches_its_twin_and_the_unfused_path_at_a_tiny_shape() {
        // The s16_tiny fixture's shape (T = 17, head dim 8): one partial tile.
        check(
            AttnShape {
                batch: 2,
                heads: 2,
                tokens: 17,
                head_dim: 8,
            },
            50,
        );
        // Two key tiles, the second of one row; query tiles of 16 and 1 in dK/dV.
        check(
            AttnShape {
                batch: 1,
                heads: 3,
                tokens: 33,
                head_dim: 24,
            },
            60,
        );
    }
}

// ---------------------------------------------------------------------------------
// Element-wise kernels.

fn grid_for(n: usize, block: usize) -> u32 {
    // Few blocks, so the grid-stride loops run several iterations.
    n.div_ceil(block).min(16) as u32
}

#[test]
fn bias_gelu_and_its_backward_match_cpu() {
    let (rows, cols) = (33, 1536);
    let h0 = seeded(40, rows * cols, 2.0, 0.0);
    let bias = seeded(41, cols, 0.5, 0.0);
    let mut want = h0.clone();
    ops::add_bias_rows(&mut want, &bias);
    let mut want_d = vec![0f32; rows * cols];
    ops::gelu_in_place_with_grad(&mut want, &mut want_d);
    let g0 = seeded(42, rows * cols, 1.0, 0.0);
    for s in SCHEDULES {
        let mut h = h0.clone();
        let mut d = poisoned(rows * cols);
        let args = Args::default()
            .out(&mut h)
            .inp(&bias)
            .out(&mut d)
            .i32(rows)
            .i32(cols);
        launch("bias_gelu_f32", grid_for(rows * cols, 256), 256, args, s);
        assert_close("bias_gelu h", &h, &want, 1e-5, 1e-6);
        assert_close("bias_gelu dgelu", &d, &want_d, 1e-5, 1e-6);
        // The backward multiplies by the saved derivative: one rounding, exact.
        let mut g = g0.clone();
        launch(
            "gelu_bwd_f32",
            grid_for(rows * cols, 256),
            256,
            Args::default().inp(&want_d).out(&mut g).i32(rows * cols),
            s,
        );
        let want_g: Vec<f32> = g0.iter().zip(&want_d).map(|(a, b)| a * b).collect();
        assert_bits("gelu_bwd", &g, &want_g);
    }
    // And the twin of the backward itself: ops::gelu_bwd recomputes the derivative.
    let mut via_x = g0.clone();
    let mut pre = h0.clone();
    ops::add_bias_rows(&mut pre, &bias);
    ops::gelu_bwd(&pre, &mut via_x);
    let want_g: Vec<f32> = g0.iter().zip(&want_d).map(|(a, b)| a * b).collect();
    assert_close("gelu_bwd twin", &want_g, &via_x, 1e-6, 1e-7);
}

#[test]
fn bias_and_head_rows_match_cpu() {
    let (rows, cols) = (130, 384);
    let x0 = seeded(50, rows * cols, 1.0, 0.0);
    let bias = seeded(51, cols, 1.0, 0.0);
    let mut want = x0.clone();
    ops::add_bias_rows(&mut want, &bias);
    for s in SCHEDULES {
        let mut x = x0.clone();
        let args = Args::default().out(&mut x).inp(&bias).i32(rows).i32(cols);
        launch(
            "add_bias_rows_f32",
            grid_for(rows * cols, 128),
            128,
            args,
            s,
        );
        assert_bits("add_bias_rows", &x, &want);
    }
    // Head rows of the targets.
    let (classes, in_dim) = (10, 768);
    let head_w = seeded(54, classes * in_dim, 0.1, 0.0);
    let targets = [3usize, 0, 9, 3, 7];
    let t32: Vec<i32> = targets.iter().map(|&t| t as i32).collect();
    let mut df = poisoned(targets.len() * in_dim);
    let args = Args::default()
        .inp(&head_w)
        .inp(&t32)
        .out(&mut df)
        .i32(targets.len())
        .i32(in_dim);
    launch("head_rows_f32", 8, 64, args, SCHEDULES[0]);
    assert_bits("head_rows", &df, &ops::head_rows(&head_w, &targets, in_dim));
}

#[test]
fn patch_embedding_kernels_match_cpu() {
    // 2 images of 3×80×96 with 16-pixel patches: 5×6 patches of 768 values ≈ 46k.
    let (batch, h, w, p) = (2, 80, 96, 16);
    let grid = (h / p, w / p);
    let np = grid.0 * grid.1;
    let x = seeded(60, batch * 3 * h * w, 1.0, 0.0);
    let mut want = poisoned(batch * np * 3 * p * p);
    for b in 0..batch {
        ops::im2col_image(
            &x[b * 3 * h * w..][..3 * h * w],
            h,
            w,
            p,
            grid,
            &mut want[b * np * 3 * p * p..][..np * 3 * p * p],
        );
    }
    for s in SCHEDULES {
        let mut cols = poisoned(want.len());
        let args = Args::default()
            .inp(&x)
            .out(&mut cols)
            .i32(batch)
            .i32(h)
            .i32(w)
            .i32(p)
            .i32(grid.0)
            .i32(grid.1);
        launch("im2col_f32", grid_for(cols.len(), 256), 256, args, s);
        assert_bits("im2col", &cols, &want);
    }
    // col2im of arbitrary patch gradients, on an image one pixel wider than the grid
    // (the extra column gets 0).
    let wide = w + 1;
    let gcols = seeded(61, want.len(), 1.0, 0.0);
    let mut want_img = poisoned(batch * 3 * h * wide);
    for b in 0..batch {
        ops::col2im_image(
            &gcols[b * np * 3 * p * p..][..np * 3 * p * p],
            h,
            wide,
            p,
            grid,
            &mut want_img[b * 3 * h * wide..][..3 * h * wide],
        );
    }
    for s in SCHEDULES {
        let mut img = poisoned(want_img.len());
        let args = Args::default()
            .inp(&gcols)
            .out(&mut img)
            .i32(batch)
            .i32(h)
            .i32(wide)
            .i32(p)
            .i32(grid.0)
            .i32(grid.1);
        launch("col2im_f32", grid_for(img.len(), 256), 256, args, s);
        assert_bits("col2im", &img, &want_img);
    }
    // Round trip: col2im(im2col(x)) = x.
    let mut img = poisoned(x.len());
    let args = Args::default()
        .inp(&want)
        .out(&mut img)
        .i32(batch)
        .i32(h)
        .i32(w)
        .i32(p)
        .i32(grid.0)
        .i32(grid.1);
    launch("col2im_f32", 16, 256, args, SCHEDULES[0]);
    assert_bits("col2im ∘ im2col", &img, &x);

    // Token assembly.
    let (tokens, d) = (np + 1, 384);
    let emb = seeded(62, batch * np * d, 1.0, 0.0);
    let patch_b = seeded(63, d, 0.1, 0.0);
    let cls = seeded(64, d, 1.0, 0.0);
    let pos = seeded(65, tokens * d, 0.2, 0.0);
    let mut want_xs = poisoned(batch * tokens * d);
    for b in 0..batch {
        ops::embed_tokens_image(
            &emb[b * np * d..][..np * d],
            &patch_b,
            &cls,
            &pos,
            &mut want_xs[b * tokens * d..][..tokens * d],
        );
    }
    for s in SCHEDULES {
        let mut xs = poisoned(want_xs.len());
        let args = Args::default()
            .inp(&emb)
            .inp(&patch_b)
            .inp(&cls)
            .inp(&pos)
            .out(&mut xs)
            .i32(batch)
            .i32(tokens)
            .i32(d);
        launch("embed_tokens_f32", grid_for(xs.len(), 128), 128, args, s);
        assert_bits("embed_tokens", &xs, &want_xs);
    }
}

// ---------------------------------------------------------------------------------
// Integrated Gradients and NoiseTunnel: bit-identical to the CPU path.

mod ig_twin {
    use std::sync::Mutex;

    use explainseg::backend::Engine;
    use ndarray::{Array2, Array4, ArrayView4};

    /// A stand-in classifier whose input gradient is an element-wise function of the
    /// input; it records every batch of path points it is asked about.
    pub struct Recorder {
        pub batches: Mutex<Vec<Array4<f32>>>,
        /// Only to satisfy `Engine::vit`; the recorder never runs it.
        pub vit: explainseg::model::Vit,
    }

    impl Recorder {
        pub fn new() -> Self {
            let config = explainseg::model::VitConfig::standard("ti", 8, 16).unwrap();
            Recorder {
                batches: Mutex::new(Vec::new()),
                vit: explainseg::model::Vit::random(config, 1, 0),
            }
        }
    }

    pub fn grad_of(v: f32) -> f32 {
        (0.7 * v).sin() + 0.1 * v
    }

    impl Engine for Recorder {
        fn vit(&self) -> &explainseg::model::Vit {
            &self.vit
        }
        fn device(&self) -> explainseg::backend::Device {
            explainseg::backend::Device::Cpu
        }
        fn classes(&self) -> explainseg::Result<usize> {
            Ok(1)
        }
        fn block_taps(
            &self,
            _x: ArrayView4<f32>,
            _layer: Option<usize>,
        ) -> explainseg::Result<explainseg::backend::BlockTaps> {
            Err(explainseg::Error::Internal(
                "the recorder has no blocks".into(),
            ))
        }
        fn logits(&self, x: ArrayView4<f32>) -> explainseg::Result<Array2<f32>> {
            Ok(Array2::zeros((x.dim().0, 1)))
        }
        fn logits_and_input_grad(
            &self,
            x: ArrayView4<f32>,
            _targets: &[usize],
        ) -> explainseg::Result<(Array2<f32>, Array4<f32>)> {
            self.batches.lock().unwrap().push(x.to_owned());
            Ok((Array2::zeros((x.dim().0, 1)), x.mapv(grad_of)))
        }
    }
}

#[test]
fn ig_kernels_reproduce_the_cpu_integrated_gradients_bit_for_bit() {
    use explainseg::attr::{integrated_gradients, IgConfig};
    use explainseg::ig::{quadrature, Method};
    use ndarray::Array4;

    let (n_inputs, c, h, w) = (2, 3, 48, 64);
    let len = c * h * w;
    let inputs =
        Array4::from_shape_vec((n_inputs, c, h, w), seeded(70, n_inputs * len, 1.0, 0.2)).unwrap();
    let baseline = Array4::from_shape_vec((1, c, h, w), seeded(71, len, 0.3, -0.1)).unwrap();
    let n_steps = 5;
    let q = quadrature(Method::GaussLegendre, n_steps).unwrap();
    let alphas: Vec<f32> = q.alphas.iter().map(|&a| a as f32).collect();
    let weights: Vec<f32> = q.steps.iter().map(|&s| s as f32).collect();
    for multiply in [true, false] {
        let recorder = ig_twin::Recorder::new();
        // 3 rows per batch: batches straddle the two inputs' paths.
        let cfg = IgConfig {
            method: Method::GaussLegendre,
            n_steps,
            multiply_by_inputs: multiply,
            batch_size: 3,
            return_delta: false,
        };
        let want =
            integrated_gradients(&recorder, inputs.view(), baseline.view(), 0, &cfg, None).unwrap();
        let batches = recorder.batches.into_inner().unwrap();
        let x = inputs.as_slice().unwrap();
        let b = baseline.as_slice().unwrap();
        let mut acc = vec![0f32; n_inputs * len];
        let mut row0 = 0;
        let mut row0_at = [0i32];
        for (i, batch) in batches.iter().enumerate() {
            let rows = batch.dim().0;
            let mut path = poisoned(rows * len);
            let args = Args::default()
                .inp(x)
                .inp(b)
                .inp(&alphas)
                .out(&mut path)
                .inp(&row0_at)
                .i32(rows)
                .i32(n_steps)
                .i32(n_steps)
                .i32(len);
            let s = SCHEDULES[i % 3];
            launch("ig_path_f32", grid_for(path.len(), 128), 128, args, s);
            assert_bits("ig_path", &path, batch.as_slice().unwrap());
            let grads: Vec<f32> = path.iter().map(|&v| ig_twin::grad_of(v)).collect();
            let args = Args::default()
                .inp(&grads)
                .inp(&weights)
                .out(&mut acc)
                .inp(&row0_at)
                .i32(rows)
                .i32(n_steps)
                .i32(n_steps)
                .i32(len);
            launch("ig_accumulate_f32", grid_for(len, 128), 128, args, s);
            // The batch's first row lives on the device; the engine moves it on
            // with a kernel so a captured batch replays unchanged.
            let args = Args::default().out(&mut row0_at).i32(rows);
            launch("ig_advance_row0", 1, 32, args, s);
            row0 += rows;
            assert_eq!(row0_at, [row0 as i32]);
        }
        assert_eq!(row0, n_inputs * n_steps);
        let mut out = poisoned(n_inputs * len);
        let args = Args::default()
            .inp(&acc)
            .inp(x)
            .inp(b)
            .out(&mut out)
            .i32(n_inputs)
            .i32(len)
            .i32(multiply as usize);
        launch(
            "ig_finish_f32",
            grid_for(out.len(), 128),
            128,
            args,
            SCHEDULES[2],
        );
        assert_bits(
            "ig attributions",
            &out,
            want.attributions.as_slice().unwrap(),
        );
    }
}

#[test]
fn noise_tunnel_noise_is_bit_identical_to_the_cpu_generator() {
    use explainseg::ig::{make_noise, Noise};
    use ndarray::Array4;

    let (samples, c, h, w) = (4, 3, 64, 64);
    let len = c * h * w;
    let x = Array4::from_shape_vec((1, c, h, w), seeded(80, len, 1.0, 0.0)).unwrap();
    for (seed, stdev) in [(99u64, 0.7f32), (0, 1.0), (u64::MAX, 0.15)] {
        let noise = make_noise(
            &Noise::Seeded {
                samples,
                stdev,
                seed,
            },
            x.view(),
        )
        .unwrap();
        let want = &noise + &x;
        let mut noisy = poisoned(samples * len);
        let args = Args::default()
            .inp(x.as_slice().unwrap())
            .out(&mut noisy)
            .u64(seed)
            .f32(stdev)
            .i32(samples)
            .i32(len);
        launch(
            "nt_noise_f32",
            grid_for(noisy.len(), 256),
            256,
            args,
            SCHEDULES[(seed % 3) as usize],
        );
        assert_bits("nt_noise", &noisy, want.as_slice().unwrap());
    }
}

#[test]
fn noise_tunnel_aggregation_is_bit_identical_to_the_cpu() {
    use explainseg::ig::{aggregate, NtType};
    use ndarray::Array4;

    let (samples, c, h, w) = (5, 3, 56, 56);
    let len = c * h * w;
    let per_sample =
        Array4::from_shape_vec((samples, c, h, w), seeded(90, samples * len, 0.01, 0.002)).unwrap();
    for (code, nt) in [
        (0, NtType::SmoothGrad),
        (1, NtType::SmoothGradSq),
        (2, NtType::VarGrad),
    ] {
        let want = aggregate(&per_sample, nt);
        let mut out = poisoned(len);
        let args = Args::default()
            .inp(per_sample.as_slice().unwrap())
            .out(&mut out)
            .i32(samples)
            .i32(len)
            .i32(code);
        launch(
            "nt_aggregate_f32",
            grid_for(len, 128),
            128,
            args,
            SCHEDULES[code],
        );
        assert_bits(nt.name(), &out, want.as_slice().unwrap());
    }
}

// ---------------------------------------------------------------------------------
// The whole model composed from emulated kernels, GEMMs by the CPU reference of the
// column-major calls the CUDA engine makes (backend::blas_layout), in the order of
// backend::cuda::engine, against the CPU engine.

mod composed {
    use super::{launch, Args, SCHEDULES};
    use explainseg::backend::blas_layout::{reference_sgemm, row_major_gemm, RowMajor};
    use explainseg::model::{HeadKind, Vit};
    use ndarray::{Array2, Array4};

    /// Row-major `C[c_off..] = op(A[a_off..])·op(B[b_off..]) + beta·C`, `count` times.
    #[allow(clippy::too_many_arguments)]
    pub fn gemm(
        (m, n, k): (usize, usize, usize),
        a: (&[f32], usize, usize, bool),
        b: (&[f32], usize, usize, bool),
        c: (&mut [f32], usize, usize),
        beta: f32,
        (count, stride_a, stride_b, stride_c): (usize, usize, usize, usize),
    ) {
        let g = row_major_gemm(
            m,
            n,
            k,
            RowMajor {
                ld: a.2,
                t: a.3,
                stride: stride_a,
            },
            RowMajor {
                ld: b.2,
                t: b.3,
                stride: stride_b,
            },
            c.2,
            count,
            stride_c,
        );
        // The call's first operand is B's storage, its second A's.
        reference_sgemm(&g, &b.0[b.1..], &a.0[a.1..], &mut c.0[c.1..], beta);
    }

    const ONE: (usize, usize, usize, usize) = (1, 0, 0, 0);

    // The layer GEMMs of `launch.rs` (`linear`, `linear_backward_input`, `heads_a_bt`,
    // `heads_p_b`), argument for argument, so the calls below read as the engine's.

    /// `y (rows, out) = x·Wᵀ` (`+ y` when accumulating), then the bias if any.
    #[allow(clippy::too_many_arguments)]
    fn linear(
        x: &[f32],
        w: &[f32],
        bias: Option<&[f32]>,
        y: &mut [f32],
        rows: usize,
        inp: usize,
        out: usize,
        accumulate: bool,
    ) {
        let beta = if accumulate { 1.0 } else { 0.0 };
        gemm(
            (rows, out, inp),
            (x, 0, inp, false),
            (w, 0, inp, true),
            (&mut *y, 0, out),
            beta,
            ONE,
        );
        if let Some(b) = bias {
            let a = Args::default().out(y).inp(b).i32(rows).i32(out);
            launch("add_bias_rows_f32", 8, 128, a, SCHEDULES[2]);
        }
    }

    /// `dx (rows, in) = dy (rows, out)·W`, dy at `dy.1` with rows `dy_ld` apart.
    #[allow(clippy::too_many_arguments)]
    fn linear_backward_input(
        dy: (&[f32], usize),
        dy_ld: usize,
        w: &[f32],
        dx: &mut [f32],
        rows: usize,
        inp: usize,
        out: usize,
        repeat: (usize, usize, usize, usize),
    ) {
        gemm(
            (rows, inp, out),
            (dy.0, dy.1, dy_ld, false),
            (w, 0, inp, false),
            (dx, 0, inp),
            0.0,
            repeat,
        );
    }

    /// Per head: `C_h (t, t) = A_h·B_hᵀ`.
    #[allow(clippy::too_many_arguments)]
    fn heads_a_bt(
        a: (&[f32], usize),
        lda: usize,
        b: (&[f32], usize),
        ldb: usize,
        c: (&mut [f32], usize),
        t: usize,
        hd: usize,
        heads: usize,
    ) {
        gemm(
            (t, t, hd),
            (a.0, a.1, lda, false),
            (b.0, b.1, ldb, true),
            (c.0, c.1, t),
            0.0,
            (heads, hd, hd, t * t),
        );
    }

    /// Per head: `C_h (t, hd) = op(P_h)·B_h`.
    #[allow(clippy::too_many_arguments)]
    fn heads_p_b(
        p: (&[f32], usize),
        p_t: bool,
        b: (&[f32], usize),
        ldb: usize,
        c: (&mut [f32], usize),
        ldc: usize,
        t: usize,
        hd: usize,
        heads: usize,
    ) {
        gemm(
            (t, hd, t),
            (p.0, p.1, t, p_t),
            (b.0, b.1, ldb, false),
            (c.0, c.1, ldc),
            0.0,
            (heads, t * t, hd, hd),
        );
    }

    fn rows_grid(rows: usize) -> u32 {
        rows as u32
    }

    /// Logits and input gradient of Σ_b logits[b, targets[b]], as CudaEngine computes them.
    pub fn forward_backward(
        vit: &Vit,
        x: &Array4<f32>,
        targets: &[usize],
    ) -> (Array2<f32>, Array4<f32>) {
        let c = &vit.config;
        let w = &vit.weights;
        let head = vit.head.as_ref().unwrap();
        let n_chunks = match head.kind {
            HeadKind::Cls => 1,
            HeadKind::LastBlocksCls { n } => n,
            HeadKind::ClsAvgPoolInterleaved => panic!("not a CUDA head"),
        };
        let (batch, _, h, wd) = x.dim();
        let grid = c.grid_for(h, wd).unwrap();
        let (d, hidden, heads, hd, p) = (c.dim, c.mlp_hidden, c.heads, c.head_dim(), c.patch);
        let np = grid.0 * grid.1;
        let t = np + 1;
        let m = batch * t;
        let pp3 = 3 * p * p;
        let scale = c.attn_scale();
        let s = SCHEDULES[2];
        let geo = |a: Args| a.i32(batch).i32(h).i32(wd).i32(p).i32(grid.0).i32(grid.1);
        let xs_in = x.as_standard_layout().to_owned();
        let mut cols = vec![f32::NAN; batch * np * pp3];
        launch(
            "im2col_f32",
            8,
            128,
            geo(Args::default()
                .inp(xs_in.as_slice().unwrap())
                .out(&mut cols)),
            s,
        );
        let mut emb = vec![f32::NAN; batch * np * d];
        linear(&cols, &w.patch_w, None, &mut emb, batch * np, pp3, d, false);
        let pos = vit.pos_embed(grid).unwrap();
        let mut xs = vec![f32::NAN; m * d];
        let a = Args::default()
            .inp(&emb)
            .inp(&w.patch_b)
            .inp(&w.cls_token)
            .inp(&pos[..])
            .out(&mut xs);
        launch("embed_tokens_f32", 4, 128, a.i32(batch).i32(t).i32(d), s);

        struct Saved {
            xhat1: Vec<f32>,
            rstd1: Vec<f32>,
            qkv: Vec<f32>,
            probs: Vec<f32>,
            xhat2: Vec<f32>,
            rstd2: Vec<f32>,
            gelu_grad: Vec<f32>,
        }
        let nan = |n: usize| vec![f32::NAN; n];
        let mut normed = nan(m * d);
        let mut attn_cat = nan(m * d);
        let mut act = nan(m * hidden);
        let mut features = nan(batch * n_chunks * d);
        let mut head_norms = Vec::new();
        let first_tapped = c.depth - n_chunks;
        let mut saved = Vec::new();
        let ln = |x: &[f32],
                  x_ld: usize,
                  g: &[f32],
                  b: &[f32],
                  y: &mut [f32],
                  y_ld: usize,
                  xh: &mut [f32],
                  r: &mut [f32],
                  rows: usize| {
            let a = Args::default()
                .inp(x)
                .i32(x_ld)
                .inp(g)
                .inp(b)
                .out(y)
                .i32(y_ld)
                .out(xh)
                .out(r);
            launch(
                "layer_norm_f32",
                rows_grid(rows),
                128,
                a.i32(rows).i32(d).f32(c.eps),
                s,
            );
        };
        for (bi, bw) in w.blocks.iter().enumerate() {
            let mut sv = Saved {
                xhat1: nan(m * d),
                rstd1: nan(m),
                qkv: nan(m * 3 * d),
                probs: nan(batch * heads * t * t),
                xhat2: nan(m * d),
                rstd2: nan(m),
                gelu_grad: nan(m * hidden),
            };
            ln(
                &xs,
                d,
                &bw.norm1_w,
                &bw.norm1_b,
                &mut normed,
                d,
                &mut sv.xhat1,
                &mut sv.rstd1,
                m,
            );
            linear(
                &normed,
                &bw.qkv_w,
                Some(&bw.qkv_b),
                &mut sv.qkv,
                m,
                d,
                3 * d,
                false,
            );
            for b in 0..batch {
                let base = b * t * 3 * d;
                heads_a_bt(
                    (&sv.qkv, base),
                    3 * d,
                    (&sv.qkv, base + d),
                    3 * d,
                    (&mut sv.probs, b * heads * t * t),
                    t,
                    hd,
                    heads,
                );
            }
            let a = Args::default()
                .out(&mut sv.probs)
                .i32(batch * heads * t)
                .i32(t)
                .f32(scale);
            launch("softmax_scale_f32", rows_grid(batch * heads * t), 64, a, s);
            for b in 0..batch {
                heads_p_b(
                    (&sv.probs, b * heads * t * t),
                    false,
                    (&sv.qkv, b * t * 3 * d + 2 * d),
                    3 * d,
                    (&mut attn_cat, b * t * d),
                    d,
                    t,
                    hd,
                    heads,
                );
            }
            linear(
                &attn_cat,
                &bw.proj_w,
                Some(&bw.proj_b),
                &mut xs,
                m,
                d,
                d,
                true,
            );
            ln(
                &xs,
                d,
                &bw.norm2_w,
                &bw.norm2_b,
                &mut normed,
                d,
                &mut sv.xhat2,
                &mut sv.rstd2,
                m,
            );
            linear(&normed, &bw.fc1_w, None, &mut act, m, d, hidden, false);
            let a = Args::default()
                .out(&mut act)
                .inp(&bw.fc1_b)
                .out(&mut sv.gelu_grad)
                .i32(m)
                .i32(hidden);
            launch("bias_gelu_f32", 8, 128, a, s);
            linear(
                &act,
                &bw.fc2_w,
                Some(&bw.fc2_b),
                &mut xs,
                m,
                hidden,
                d,
                true,
            );
            if bi >= first_tapped {
                let chunk = bi - first_tapped;
                let (mut xh, mut r) = (nan(batch * d), nan(batch));
                ln(
                    &xs,
                    t * d,
                    &w.norm_w,
                    &w.norm_b,
                    &mut features[chunk * d..],
                    n_chunks * d,
                    &mut xh,
                    &mut r,
                    batch,
                );
                head_norms.push((xh, r));
            }
            saved.push(sv);
        }
        let in_dim = n_chunks * d;
        let mut logits = nan(batch * head.classes);
        linear(
            &features,
            &head.weight,
            Some(&head.bias),
            &mut logits,
            batch,
            in_dim,
            head.classes,
            false,
        );

        // Backward.
        let t32: Vec<i32> = targets.iter().map(|&v| v as i32).collect();
        let mut dfeat = nan(batch * in_dim);
        let a = Args::default()
            .inp(&head.weight)
            .inp(&t32)
            .out(&mut dfeat)
            .i32(batch)
            .i32(in_dim);
        launch("head_rows_f32", 2, 64, a, s);
        let mut g = vec![0f32; m * d];
        let (mut ga, mut gn, mut gqkv, mut dp) = (
            nan(m * hidden),
            nan(m * d),
            nan(m * 3 * d),
            nan(batch * heads * t * t),
        );
        let ln_bwd = |gi: &[f32],
                      g_ld: usize,
                      gamma: &[f32],
                      xh: &[f32],
                      r: &[f32],
                      dx: &mut [f32],
                      dx_ld: usize,
                      rows: usize| {
            let a = Args::default()
                .inp(gi)
                .i32(g_ld)
                .inp(gamma)
                .inp(xh)
                .inp(r)
                .out(dx)
                .i32(dx_ld);
            launch(
                "layer_norm_bwd_f32",
                rows_grid(rows),
                128,
                a.i32(rows).i32(d).i32(1),
                s,
            );
        };
        for bi in (0..c.depth).rev() {
            if bi >= first_tapped {
                let chunk = bi - first_tapped;
                let (xh, r) = &head_norms[chunk];
                ln_bwd(
                    &dfeat[chunk * d..],
                    in_dim,
                    &w.norm_w,
                    xh,
                    r,
                    &mut g,
                    t * d,
                    batch,
                );
            }
            let bw = &w.blocks[bi];
            let sv = &saved[bi];
            linear_backward_input((&g, 0), d, &bw.fc2_w, &mut ga, m, hidden, d, ONE);
            let a = Args::default()
                .inp(&sv.gelu_grad)
                .out(&mut ga)
                .i32(m * hidden);
            launch("gelu_bwd_f32", 8, 128, a, s);
            linear_backward_input((&ga, 0), hidden, &bw.fc1_w, &mut gn, m, d, hidden, ONE);
            ln_bwd(&gn, d, &bw.norm2_w, &sv.xhat2, &sv.rstd2, &mut g, d, m);
            linear_backward_input((&g, 0), d, &bw.proj_w, &mut gn, m, d, d, ONE);
            for b in 0..batch {
                let base = b * t * 3 * d;
                heads_a_bt(
                    (&gn, b * t * d),
                    d,
                    (&sv.qkv, base + 2 * d),
                    3 * d,
                    (&mut dp, b * heads * t * t),
                    t,
                    hd,
                    heads,
                );
                heads_p_b(
                    (&sv.probs, b * heads * t * t),
                    true,
                    (&gn, b * t * d),
                    d,
                    (&mut gqkv, base + 2 * d),
                    3 * d,
                    t,
                    hd,
                    heads,
                );
            }
            let a = Args::default()
                .inp(&sv.probs)
                .out(&mut dp)
                .i32(batch * heads * t)
                .i32(t)
                .f32(scale);
            launch("softmax_bwd_f32", rows_grid(batch * heads * t), 64, a, s);
            for b in 0..batch {
                let base = b * t * 3 * d;
                let ds = b * heads * t * t;
                heads_p_b(
                    (&dp, ds),
                    false,
                    (&sv.qkv, base + d),
                    3 * d,
                    (&mut gqkv, base),
                    3 * d,
                    t,
                    hd,
                    heads,
                );
                heads_p_b(
                    (&dp, ds),
                    true,
                    (&sv.qkv, base),
                    3 * d,
                    (&mut gqkv, base + d),
                    3 * d,
                    t,
                    hd,
                    heads,
                );
            }
            linear_backward_input((&gqkv, 0), 3 * d, &bw.qkv_w, &mut gn, m, d, 3 * d, ONE);
            ln_bwd(&gn, d, &bw.norm1_w, &sv.xhat1, &sv.rstd1, &mut g, d, m);
        }
        let mut gpatch = nan(batch * np * pp3);
        linear_backward_input(
            (&g, d),
            d,
            &w.patch_w,
            &mut gpatch,
            np,
            pp3,
            d,
            (batch, t * d, 0, np * pp3),
        );
        let mut gx = nan(batch * 3 * h * wd);
        launch(
            "col2im_f32",
            8,
            128,
            geo(Args::default().inp(&gpatch).out(&mut gx)),
            s,
        );
        (
            Array2::from_shape_vec((batch, head.classes), logits).unwrap(),
            Array4::from_shape_vec((batch, 3, h, wd), gx).unwrap(),
        )
    }
}

#[test]
fn whole_model_from_emulated_kernels_matches_the_cpu_engine() {
    use explainseg::backend::cpu::CpuEngine;
    use explainseg::backend::Engine;
    use explainseg::model::{LoadOptions, Vit};

    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/engine");
    // A CLS head (s16_tiny) and a DINO last-4-blocks head on 8-pixel patches (p8_dino4).
    for (name, heads, size) in [("s16_tiny", 3, 64), ("p8_dino4", 1, 32)] {
        let opts = LoadOptions {
            heads: Some(heads),
            eps: Some(1e-6),
            ..Default::default()
        };
        let vit = Vit::load(
            &fixtures.join(name).join("model_dino.safetensors"),
            Some(&fixtures.join(name).join("head_dino.safetensors")),
            &opts,
        )
        .unwrap();
        let x = ndarray::Array4::from_shape_vec(
            (2, 3, size, size),
            seeded(120, 2 * 3 * size * size, 1.0, 0.0),
        )
        .unwrap();
        let targets = [1usize, 0];
        let (want_l, want_g) = CpuEngine::new(&vit)
            .logits_and_input_grad(x.view(), &targets)
            .unwrap();
        let (got_l, got_g) = composed::forward_backward(&vit, &x, &targets);
        let rel = crate::common::rel_l2;
        let (gl, wl) = (got_l.as_slice().unwrap(), want_l.as_slice().unwrap());
        let (gg, wg) = (got_g.as_slice().unwrap(), want_g.as_slice().unwrap());
        assert!(
            gg.iter().all(|v| v.is_finite()),
            "{name}: gradient has unwritten values"
        );
        // f32 throughout, different summation orders (and f64 GEMM accumulation here):
        // agreement to ~1e-6 relative (L2); 1e-5 leaves room, a wrong index does not fit.
        assert!(rel(gl, wl) < 1e-5, "{name}: logits rel L2 {}", rel(gl, wl));
        assert!(
            rel(gg, wg) < 1e-5,
            "{name}: input gradient rel L2 {}",
            rel(gg, wg)
        );
    }
}
