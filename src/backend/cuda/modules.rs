//! The kernel files, compiled by NVRTC at run time for the device's compute
//! capability and cached: the PTX once per process (per file and architecture), the
//! loaded module once per context.
//!
//! When build.rs found nvcc, devices of compute capability ≥ 8.0 use the PTX it
//! compiled instead (same source, same flags).
//!
//! A file's source is `kernels/common.cuh` followed by the `.cu` (which includes the
//! header only when it was not prepended), exactly what `tools/compile_kernels.py`
//! compiles in CI.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use cudarc::driver::{CudaContext, CudaFunction, CudaModule};
use cudarc::nvrtc::{compile_ptx_with_opts, CompileOptions, Ptx};

use crate::error::{Error, Result};

/// NVRTC flags that change results live here and nowhere else (faithful mode: IEEE
/// division and square root, no flush-to-zero; FMA contraction on, as nvcc's default —
/// the IG/NoiseTunnel kernels use `__f*_rn` intrinsics where bit-identity matters).
/// `tools/compile_kernels.py` uses the same list.
pub const NVRTC_OPTIONS: &[&str] = &[
    "--std=c++17",
    "--fmad=true",
    "--prec-div=true",
    "--prec-sqrt=true",
    "--ftz=false",
];

const COMMON: &str = include_str!("../../../kernels/common.cuh");

/// One `.cu` file of `kernels/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KernelFile {
    Attention,
    CrfFilter,
    CrfLattice,
    CrfSort,
    Elementwise,
    Gelu,
    Ig,
    Norm,
    PatchEmbed,
    Relevance,
    Softmax,
}

impl KernelFile {
    pub const ALL: [KernelFile; 11] = [
        KernelFile::Attention,
        KernelFile::CrfFilter,
        KernelFile::CrfLattice,
        KernelFile::CrfSort,
        KernelFile::Elementwise,
        KernelFile::Gelu,
        KernelFile::Ig,
        KernelFile::Norm,
        KernelFile::PatchEmbed,
        KernelFile::Relevance,
        KernelFile::Softmax,
    ];

    pub fn file_name(self) -> &'static str {
        match self {
            KernelFile::Attention => "attention.cu",
            KernelFile::CrfFilter => "crf_filter.cu",
            KernelFile::CrfLattice => "crf_lattice.cu",
            KernelFile::CrfSort => "crf_sort.cu",
            KernelFile::Elementwise => "elementwise.cu",
            KernelFile::Gelu => "gelu.cu",
            KernelFile::Ig => "ig.cu",
            KernelFile::Norm => "norm.cu",
            KernelFile::PatchEmbed => "patch_embed.cu",
            KernelFile::Relevance => "relevance.cu",
            KernelFile::Softmax => "softmax.cu",
        }
    }

    fn body(self) -> &'static str {
        match self {
            KernelFile::Attention => include_str!("../../../kernels/attention.cu"),
            KernelFile::CrfFilter => include_str!("../../../kernels/crf_filter.cu"),
            KernelFile::CrfLattice => include_str!("../../../kernels/crf_lattice.cu"),
            KernelFile::CrfSort => include_str!("../../../kernels/crf_sort.cu"),
            KernelFile::Elementwise => include_str!("../../../kernels/elementwise.cu"),
            KernelFile::Gelu => include_str!("../../../kernels/gelu.cu"),
            KernelFile::Ig => include_str!("../../../kernels/ig.cu"),
            KernelFile::Norm => include_str!("../../../kernels/norm.cu"),
            KernelFile::PatchEmbed => include_str!("../../../kernels/patch_embed.cu"),
            KernelFile::Relevance => include_str!("../../../kernels/relevance.cu"),
            KernelFile::Softmax => include_str!("../../../kernels/softmax.cu"),
        }
    }

    /// The source NVRTC compiles: the common header, then the file.
    pub fn source(self) -> String {
        format!("{COMMON}\n{}", self.body())
    }
}

/// The virtual architecture to compile for: the device's own when NVRTC knows it,
/// else the newest listed one below it (the driver JIT-compiles PTX forward).
pub fn virtual_arch(cc: (i32, i32)) -> &'static str {
    const KNOWN: &[((i32, i32), &str)] = &[
        ((12, 0), "compute_120"),
        ((10, 0), "compute_100"),
        ((9, 0), "compute_90"),
        ((8, 9), "compute_89"),
        ((8, 6), "compute_86"),
        ((8, 0), "compute_80"),
        ((7, 5), "compute_75"),
        ((7, 0), "compute_70"),
    ];
    KNOWN
        .iter()
        .find(|(k, _)| *k <= cc)
        .map(|(_, a)| *a)
        .unwrap_or("compute_70")
}

// PREBUILT_ARCH and PREBUILT_PTX: what build.rs compiled with nvcc, if anything.
include!(concat!(env!("OUT_DIR"), "/prebuilt_ptx.rs"));

/// The PTX nvcc built for `file` at build time, when the device can run it
/// (compute capability at least [`PREBUILT_ARCH`]'s).
fn prebuilt(file: KernelFile, cc: (i32, i32)) -> Option<Ptx> {
    let digits = PREBUILT_ARCH.trim_start_matches("compute_");
    let (major, minor) = digits.split_at(digits.len() - 1);
    let min = (major.parse().ok()?, minor.parse().ok()?);
    if cc < min {
        return None;
    }
    PREBUILT_PTX
        .iter()
        .find(|(name, _)| *name == file.file_name())
        .map(|(_, ptx)| Ptx::from_src(*ptx))
}

type PtxKey = (KernelFile, &'static str);

/// PTX compiled in this process, by file and architecture.
fn ptx_cache() -> &'static Mutex<HashMap<PtxKey, Ptx>> {
    static CACHE: OnceLock<Mutex<HashMap<PtxKey, Ptx>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

fn compile(file: KernelFile, arch: &'static str) -> Result<Ptx> {
    let mut cache = ptx_cache().lock().unwrap_or_else(|p| p.into_inner());
    if let Some(p) = cache.get(&(file, arch)) {
        return Ok(p.clone());
    }
    let opts = CompileOptions {
        arch: Some(arch),
        options: NVRTC_OPTIONS.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    let ptx = compile_ptx_with_opts(file.source(), opts).map_err(|e| {
        Error::CudaUnavailable(format!(
            "NVRTC could not compile kernels/{} for {arch}: {e:?}",
            file.file_name()
        ))
    })?;
    cache.insert((file, arch), ptx.clone());
    Ok(ptx)
}

/// Modules loaded into one context and the functions looked up in them.
#[derive(Default)]
pub struct ModuleCache {
    modules: Mutex<HashMap<KernelFile, Arc<CudaModule>>>,
    functions: Mutex<HashMap<&'static str, CudaFunction>>,
}

impl ModuleCache {
    /// Kernel `name` of `file` in context `ctx` (compute capability `cc`),
    /// compiling and loading the file on first use.
    ///
    /// # Errors
    /// [`Error::CudaUnavailable`] when NVRTC or the driver rejects the module, or the
    /// module has no such kernel.
    pub fn function(
        &self,
        ctx: &Arc<CudaContext>,
        cc: (i32, i32),
        file: KernelFile,
        name: &'static str,
    ) -> Result<CudaFunction> {
        let driver_err = |what: &'static str| move |e| Error::Cuda(format!("{what}: {e:?}"));
        if let Some(f) = self
            .functions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
        {
            return Ok(f.clone());
        }
        let module = {
            let mut modules = self.modules.lock().unwrap_or_else(|p| p.into_inner());
            match modules.get(&file) {
                Some(m) => m.clone(),
                None => {
                    let ptx = match prebuilt(file, cc) {
                        Some(ptx) => ptx,
                        None => compile(file, virtual_arch(cc))?,
                    };
                    let m = ctx
                        .load_module(ptx)
                        .map_err(driver_err("loading a kernel module"))?;
                    modules.insert(file, m.clone());
                    m
                }
            }
        };
        let f = module
            .load_function(name)
            .map_err(driver_err("looking up a kernel"))?;
        self.functions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(name, f.clone());
        Ok(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_file_is_listed_and_arch_falls_back() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".cu"))
            .collect();
        on_disk.sort();
        let listed: Vec<String> = KernelFile::ALL
            .iter()
            .map(|f| f.file_name().to_string())
            .collect();
        assert_eq!(on_disk, listed);
        assert_eq!(virtual_arch((9, 0)), "compute_90");
        assert_eq!(virtual_arch((8, 7)), "compute_86");
        assert_eq!(virtual_arch((6, 1)), "compute_70");
    }

    #[test]
    fn prebuilt_ptx_only_for_capable_devices() {
        assert!(prebuilt(KernelFile::Ig, (7, 5)).is_none());
        // Every prebuilt file is a listed kernel file, and a capable device gets it.
        for (name, _) in PREBUILT_PTX {
            let file = KernelFile::ALL
                .iter()
                .find(|f| f.file_name() == *name)
                .unwrap();
            assert!(prebuilt(*file, (9, 0)).is_some());
        }
    }
}
