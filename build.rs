//! Build script. With the `cuda` feature and an `nvcc` at hand (`$NVCC`, else
//! `$CUDA_HOME/bin/nvcc` or `$CUDA_PATH/bin/nvcc`, else `nvcc` on PATH), every
//! `kernels/*.cu` is compiled to PTX for `compute_80` here, so devices of compute
//! capability ≥ 8.0 load it without running NVRTC. Without nvcc — or if nvcc fails,
//! which a cargo warning then reports — the runtime compiles with NVRTC as before.
//!
//! Writes `$OUT_DIR/prebuilt_ptx.rs`: `PREBUILT_PTX: &[(file name, PTX)]`, empty
//! when nothing was built.
//!
//! With the `cuda-emu` feature, also compiles `kernels/emu/registry.cpp` (every kernel
//! plus the fiber emulator) with g++ into `$OUT_DIR/es_kernels_emu.so`, which the
//! emulated device embeds; g++ is then required.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The virtual architecture of the prebuilt PTX; the driver JIT-compiles it forward.
const PREBUILT_ARCH: &str = "compute_80";

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=kernels");
    println!("cargo:rerun-if-changed=src/backend/cuda/modules.rs");
    for var in ["NVCC", "CUDA_HOME", "CUDA_PATH", "PATH"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    println!("cargo:rerun-if-env-changed=CXX");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    if env::var_os("CARGO_FEATURE_CUDA_EMU").is_some() {
        if let Err(e) = build_emulator(&out) {
            panic!("the cuda-emu feature needs g++ to build the emulated kernels: {e}");
        }
    }
    if env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let built = match find_nvcc() {
        Some(nvcc) => prebuild(&nvcc, &out).unwrap_or_else(|e| {
            println!("cargo:warning=nvcc could not prebuild the kernels ({e}); NVRTC compiles them at run time");
            Vec::new()
        }),
        None => Vec::new(),
    };
    let entries: String = built
        .iter()
        .map(|(name, ptx)| format!("    ({name:?}, include_str!({:?})),\n", ptx.display()))
        .collect();
    let code = format!(
        "/// Kernels nvcc compiled at build time, for `{PREBUILT_ARCH}`: (file name, PTX).\n\
         pub const PREBUILT_ARCH: &str = {PREBUILT_ARCH:?};\n\
         pub const PREBUILT_PTX: &[(&str, &str)] = &[\n{entries}];\n"
    );
    fs::write(out.join("prebuilt_ptx.rs"), code).expect("writing prebuilt_ptx.rs");
}

fn find_nvcc() -> Option<PathBuf> {
    if let Some(p) = env::var_os("NVCC") {
        return Some(PathBuf::from(p));
    }
    for home in ["CUDA_HOME", "CUDA_PATH"] {
        if let Some(h) = env::var_os(home) {
            let p = Path::new(&h).join("bin/nvcc");
            if p.is_file() {
                return Some(p);
            }
        }
    }
    env::split_paths(&env::var_os("PATH")?)
        .map(|d| d.join("nvcc"))
        .find(|p| p.is_file())
}

/// The result-changing flags, read from `NVRTC_OPTIONS` in modules.rs so that nvcc
/// and NVRTC compile with the same list.
fn nvrtc_options() -> Result<Vec<String>, String> {
    let src = fs::read_to_string("src/backend/cuda/modules.rs").map_err(|e| e.to_string())?;
    let start = src
        .find("pub const NVRTC_OPTIONS: &[&str] = &[")
        .ok_or("NVRTC_OPTIONS not found in modules.rs")?;
    let body = &src[start..];
    let end = body.find("];").ok_or("NVRTC_OPTIONS is not closed")?;
    Ok(body[..end]
        .lines()
        .skip(1)
        .filter_map(|l| l.trim().strip_prefix('"'))
        .filter_map(|l| l.split('"').next())
        .map(str::to_string)
        .collect())
}

/// Compiles each kernel file (common.cuh prepended, as the runtime does) to PTX.
fn prebuild(nvcc: &Path, out: &Path) -> Result<Vec<(String, PathBuf)>, String> {
    let options = nvrtc_options()?;
    let common = fs::read_to_string("kernels/common.cuh").map_err(|e| e.to_string())?;
    let mut files: Vec<PathBuf> = fs::read_dir("kernels")
        .map_err(|e| e.to_string())?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "cu"))
        .collect();
    files.sort();
    let mut built = Vec::new();
    for cu in files {
        let name = cu.file_name().unwrap().to_string_lossy().into_owned();
        let body = fs::read_to_string(&cu).map_err(|e| e.to_string())?;
        let src = out.join(&name);
        fs::write(&src, format!("{common}\n{body}")).map_err(|e| e.to_string())?;
        let ptx = out.join(format!("{}.ptx", cu.file_stem().unwrap().to_string_lossy()));
        let status = Command::new(nvcc)
            .arg("-ptx")
            .arg(format!("-arch={PREBUILT_ARCH}"))
            .args(&options)
            .arg("-o")
            .arg(&ptx)
            .arg(&src)
            .status()
            .map_err(|e| format!("{}: {e}", nvcc.display()))?;
        if !status.success() {
            return Err(format!("{name}: nvcc exited with {status}"));
        }
        built.push((name, ptx));
    }
    Ok(built)
}

/// The emulated kernel library, with the flags of tests/cuda_emulated.rs.
fn build_emulator(out: &Path) -> Result<(), String> {
    let cxx = env::var("CXX").unwrap_or_else(|_| "g++".into());
    let status = Command::new(&cxx)
        .args([
            "-std=c++17",
            "-O2",
            "-fPIC",
            "-shared",
            "-fstack-clash-protection",
            // As the __f*_rn / __d*_rn intrinsics: never fuse a*b + c.
            "-ffp-contract=off",
            "-DES_EMULATE",
            "-I",
            "kernels",
            "-o",
        ])
        .arg(out.join("es_kernels_emu.so"))
        .arg("kernels/emu/registry.cpp")
        .status()
        .map_err(|e| format!("{cxx}: {e}"))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{cxx} exited with {status}"))
    }
}
