//! Runtime dispatch of hot element-wise loops to AVX-512 and AVX2+FMA builds of the
//! same code.
//!
//! The crate is compiled for baseline x86-64 (SSE2) so it runs on any x86-64 host;
//! the loops below are written branch-free so LLVM vectorises them, and
//! [`simd_dispatch!`] compiles an AVX-512 copy and an AVX2+FMA copy, picked at run
//! time by what the CPU has. The copies run the same f32 operations in the same
//! order (Rust never contracts a multiply and an add into an FMA on its own, and
//! the reductions keep 8 explicit accumulators), so they agree to the bit; only the
//! vector width differs (on CPUs with full-width AVX-512 units, e.g. AMD Zen 5,
//! 16 lanes halve the time of the exp/erf-heavy loops).

/// Whether this CPU can run the AVX2+FMA copies (cached by std).
#[inline]
pub fn has_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether this CPU can run the AVX-512 copies (cached by std).
#[inline]
pub fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx512f")
            && std::is_x86_feature_detected!("avx512vl")
            && has_avx2_fma()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `simd_dispatch!(pub fn name(args...) => impl_fn);` defines `name`, which calls
/// `impl_fn` through an AVX-512- or AVX2+FMA-compiled wrapper when available.
macro_rules! simd_dispatch {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) => $imp:path;) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
                fn avx512($($arg: $ty),*) {
                    $imp($($arg),*)
                }
                if $crate::backend::cpu::simd::has_avx512() {
                    // SAFETY: the CPU supports AVX-512F/VL, AVX2 and FMA (checked
                    // just above), the only requirement of a #[target_feature] function.
                    unsafe { avx512($($arg),*) };
                    return;
                }
                #[target_feature(enable = "avx2,fma")]
                fn avx2($($arg: $ty),*) {
                    $imp($($arg),*)
                }
                if $crate::backend::cpu::simd::has_avx2_fma() {
                    // SAFETY: the CPU supports AVX2 and FMA (checked just above), the
                    // only requirement of a #[target_feature] function.
                    unsafe { avx2($($arg),*) };
                    return;
                }
            }
            $imp($($arg),*)
        }
    };
}
pub(crate) use simd_dispatch;
