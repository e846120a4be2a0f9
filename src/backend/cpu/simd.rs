//! Runtime dispatch of hot element-wise loops to an AVX2+FMA build of the same code.
//!
//! The crate is compiled for baseline x86-64 (SSE2) so it runs on any x86-64 host;
//! the loops below are written branch-free so LLVM vectorises them, and
//! [`simd_dispatch!`] compiles a second copy with AVX2+FMA enabled, picked at run
//! time when the CPU has them.

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

/// `simd_dispatch!(pub fn name(args...) => impl_fn);` defines `name`, which calls
/// `impl_fn` through an AVX2+FMA-compiled wrapper when available.
macro_rules! simd_dispatch {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident : $ty:ty),* $(,)?) => $imp:path;) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) {
            #[cfg(target_arch = "x86_64")]
            {
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
