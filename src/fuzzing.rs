//! Entry points of the fuzz targets (`fuzz/`) and of the corpus replay test
//! (`tests/fuzz_corpus.rs`). Each takes arbitrary bytes and must return without
//! panicking, aborting or allocating beyond the limits; errors are expected.
//! Not a stable API.

#![doc(hidden)]

use std::path::{Path, PathBuf};

/// The fuzz targets by name.
pub const TARGETS: [&str; 6] = ["safetensors", "image", "npy", "dicom", "csv", "capi_params"];

/// Runs target `name` on `data`.
///
/// # Panics
/// For an unknown target name.
pub fn run(name: &str, data: &[u8]) {
    match name {
        "safetensors" => safetensors(data),
        "image" => image(data),
        "npy" => npy(data),
        "dicom" => dicom(data),
        "csv" => csv(data),
        "capi_params" => capi_params(data),
        other => panic!("unknown fuzz target {other}"),
    }
}

/// Model loading from safetensors bytes (header, dtypes, shapes, metadata,
/// validation).
pub fn safetensors(data: &[u8]) {
    let _ = crate::model::Vit::from_bytes(
        data,
        "fuzz.safetensors",
        &crate::model::LoadOptions::default(),
    );
}

/// PNG, JPEG and TIFF decoding (format found from the bytes).
pub fn image(data: &[u8]) {
    if let Ok(img) = crate::image::decode_image_bytes(data, Path::new("fuzz.img")) {
        assert_eq!(
            img.pixels.len(),
            img.width as usize * img.height as usize * 3
        );
    }
}

/// A scratch file of this process and thread for the targets that read paths.
fn scratch(name: &str, data: &[u8]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "explainseg-fuzz-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let _ = std::fs::create_dir_all(&dir);
    let p = dir.join(name);
    std::fs::write(&p, data).expect("write the scratch file");
    p
}

/// `.npy` reading (header parse, size checks, data).
pub fn npy(data: &[u8]) {
    let p = scratch("fuzz.npy", data);
    let _ = crate::npy::read_f32(&p);
}

/// DICOM decoding and header probing.
pub fn dicom(data: &[u8]) {
    let p = scratch("fuzz.dcm", data);
    let _ = crate::dataset::image_size(&p);
    let _ = crate::dataset::Sample::new("fuzz", &p).load_image();
}

/// The data-set CSV reader, and the CBIS-DDSM and folder readers on a CSV.
pub fn csv(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::dataset::csv::Table::parse(text, Path::new("fuzz.csv"));
    }
    let p = scratch("mass_case_description_fuzz.csv", data);
    let root = p.parent().expect("scratch folder");
    let _ = crate::dataset::cbis::open(root, None);
    let _ = std::fs::write(root.join("labels.csv"), data);
    let _ = crate::dataset::folder::open(root);
}

/// The C ABI's parameter structs read from arbitrary bytes (enum and bool
/// fields checked before use), then turned into the pipeline's settings; and
/// `EsLimits` set from arbitrary bytes (restored afterwards).
pub fn capi_params(data: &[u8]) {
    use crate::capi::{EsLimits, EsModelParams, EsSegmentParams};
    use std::mem::{size_of, MaybeUninit};

    fn from_bytes<T>(data: &[u8]) -> MaybeUninit<T> {
        let mut v = MaybeUninit::<T>::zeroed();
        let n = data.len().min(size_of::<T>());
        // SAFETY: at most size_of::<T>() bytes into a T-sized buffer; the value
        // is only ever read through `read_checked`, which checks the raw enum
        // and bool fields before forming a T.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), v.as_mut_ptr().cast::<u8>(), n) };
        v
    }
    let seg = from_bytes::<EsSegmentParams>(data);
    // SAFETY: a readable buffer of the struct's size.
    if let Ok(p) = unsafe { crate::capi::params::read_checked(seg.as_ptr()) } {
        let _ = p.preprocess_config(None).and_then(|c| c.validate());
        let _ = p.explain_config();
        let _ = p.pipeline_config(16);
        let _ = p.crf.crf_params().validate();
    }
    let model = from_bytes::<EsModelParams>(data);
    // SAFETY: as above.
    if let Ok(p) = unsafe { crate::capi::params::read_checked(model.as_ptr()) } {
        let _ = p.load_options();
    }
    if data.len() >= size_of::<EsLimits>() {
        let before = crate::limits::current();
        // EsLimits has integer fields only: every bit pattern is a value.
        let l = from_bytes::<EsLimits>(data);
        // SAFETY: a readable EsLimits.
        let _ = unsafe { crate::capi::explainseg_limits_set(l.as_ptr()) };
        crate::limits::set(before).expect("restore the limits");
    }
}
