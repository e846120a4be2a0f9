//! The version of the library that was actually loaded.

use std::ffi::c_char;

use super::status::guard_value;

/// `"major.minor.patch"`, static.
#[no_mangle]
pub extern "C" fn explainseg_version() -> *const c_char {
    guard_value(c"".as_ptr(), || {
        concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
    })
}

fn part(s: &str) -> u32 {
    s.parse().unwrap_or(0)
}

/// Major version number.
#[no_mangle]
pub extern "C" fn explainseg_version_major() -> u32 {
    guard_value(0, || part(env!("CARGO_PKG_VERSION_MAJOR")))
}

/// Minor version number.
#[no_mangle]
pub extern "C" fn explainseg_version_minor() -> u32 {
    guard_value(0, || part(env!("CARGO_PKG_VERSION_MINOR")))
}

/// Patch version number.
#[no_mangle]
pub extern "C" fn explainseg_version_patch() -> u32 {
    guard_value(0, || part(env!("CARGO_PKG_VERSION_PATCH")))
}
