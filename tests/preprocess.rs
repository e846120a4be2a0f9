//! Integration tests for `explainseg::image` against Pillow / torchvision fixtures.
//!
//! Fixtures: `tests/fixtures/preprocess/` (see its README), made by
//! `tools/gen_preprocess.py`. Tolerances: decoded pixels and 8-bit resizes must
//! be identical (max abs diff 0); float resizes identical to Pillow mode "F";
//! torchvision outputs within 1e-6 (they are in fact bit-identical, which the
//! normalisation test asserts on every u8 value).

use std::path::{Path, PathBuf};

use explainseg::error::Error;
use explainseg::image::{
    decode_image_bytes, decode_image_file, normalize_rgb8, pillow_pass_order, preprocess,
    preprocess_with_plan, resize_and_crop, resize_rgb8, resize_rgb_f32, DecodedImage,
    Normalization, PassOrder, Pixels, PreprocessConfig, ResampleFilter, ResizeMode,
};
use ndarray::{Array3, ArrayD, Axis};
use ndarray_npy::read_npy;
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/preprocess")
}

fn manifest() -> Value {
    let text = std::fs::read_to_string(fixtures().join("manifest.json")).expect("manifest.json");
    serde_json::from_str(&text).expect("valid manifest")
}

fn npy<T: ndarray_npy::ReadableElement>(name: &str) -> ArrayD<T> {
    read_npy(fixtures().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn s(v: &Value) -> &str {
    v.as_str().expect("string")
}

fn u(v: &Value) -> u32 {
    v.as_u64().expect("integer") as u32
}

fn filter_named(name: &str) -> ResampleFilter {
    match name {
        "bicubic" => ResampleFilter::Bicubic,
        "lanczos3" => ResampleFilter::Lanczos3,
        "bilinear" => ResampleFilter::Bilinear,
        other => panic!("unknown filter {other}"),
    }
}

fn u8_pixels(img: &DecodedImage) -> &[u8] {
    match &img.pixels {
        Pixels::U8(v) => v,
        Pixels::U16(_) => panic!("expected 8-bit pixels"),
    }
}

fn max_abs_diff_u8(a: &[u8], b: &[u8]) -> u8 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| x.abs_diff(*y))
        .max()
        .unwrap_or(0)
}

fn max_abs_diff_f32(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn count_bit_identical(a: &[f32], b: &[f32]) -> usize {
    a.iter()
        .zip(b)
        .filter(|(x, y)| x.to_bits() == y.to_bits())
        .count()
}

/// Checks size, per-channel sums and the position-weighted sum written by the generator.
fn check_sums(name: &str, img: &DecodedImage, case: &Value) {
    assert_eq!(
        (img.width, img.height),
        (u(&case["width"]), u(&case["height"])),
        "{name}: size"
    );
    let px = u8_pixels(img);
    for c in 0..3 {
        let sum: u64 = px.iter().skip(c).step_by(3).map(|&v| u64::from(v)).sum();
        assert_eq!(
            sum,
            case["channel_sums"][c].as_u64().unwrap(),
            "{name}: channel {c} sum"
        );
    }
    let wsum = px.iter().enumerate().fold(0u64, |acc, (i, &v)| {
        let w = (i as u64).wrapping_mul(2_654_435_761) & 0xFFFF_FFFF;
        acc.wrapping_add(u64::from(v) * w)
    });
    assert_eq!(
        wsum.to_string(),
        s(&case["weighted_sum"]),
        "{name}: weighted sum"
    );
}

/// [`check_sums`] plus the sampled rows written by `checksums()` in the generator.
fn check_checksums(name: &str, img: &DecodedImage, case: &Value) {
    check_sums(name, img, case);
    let px = u8_pixels(img);
    let rows: ArrayD<u8> = npy(s(&case["row_values"]));
    let row_len = img.width as usize * 3;
    for (k, r) in case["rows"].as_array().unwrap().iter().enumerate() {
        let r = r.as_u64().unwrap() as usize;
        let expected: Vec<u8> = rows.index_axis(Axis(0), k).iter().copied().collect();
        let got = &px[r * row_len..(r + 1) * row_len];
        assert_eq!(max_abs_diff_u8(got, &expected), 0, "{name}: row {r}");
    }
}

#[test]
fn decoded_pixels_equal_pillow_for_every_fixture() {
    let m = manifest();
    let cases = m["decode"].as_array().unwrap();
    assert!(cases.len() >= 12);
    for case in cases {
        let file = s(&case["file"]);
        let path = fixtures().join(file);
        let img = decode_image_file(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
        img.validate().unwrap();
        // the in-memory entry point gives the same result
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(decode_image_bytes(&bytes, &path).unwrap(), img, "{file}");
        match s(&case["dtype"]) {
            "uint8" => {
                let exp: ArrayD<u8> = npy(s(&case["pixels"]));
                assert_eq!(
                    exp.shape(),
                    &[img.height as usize, img.width as usize, 3],
                    "{file}"
                );
                let got = u8_pixels(&img);
                let d = max_abs_diff_u8(got, exp.as_slice().unwrap());
                println!(
                    "{file}: {}x{} u8, max abs diff vs reference = {d}",
                    img.width, img.height
                );
                assert_eq!(d, 0, "{file}: pixels differ from Pillow");
            }
            "uint16" => {
                let exp: ArrayD<u16> = npy(s(&case["pixels"]));
                assert_eq!(
                    exp.shape(),
                    &[img.height as usize, img.width as usize, 3],
                    "{file}"
                );
                let Pixels::U16(got) = &img.pixels else {
                    panic!("{file}: expected 16-bit pixels")
                };
                assert_eq!(
                    got.as_slice(),
                    exp.as_slice().unwrap(),
                    "{file}: 16-bit pixels differ"
                );
                println!("{file}: {}x{} u16, identical", img.width, img.height);
            }
            other => panic!("{file}: unexpected dtype {other}"),
        }
    }
}

/// The important one: a 4:2:0 JPEG (chroma upsampling + islow IDCT) must come
/// out exactly as Pillow decodes it.
#[test]
fn jpeg_420_is_bit_exact_with_pillow() {
    let img = decode_image_file(&fixtures().join("jpeg420_q85.jpg")).unwrap();
    assert_eq!((img.width, img.height), (61, 47));
    let exp: ArrayD<u8> = npy("jpeg420_q85.rgb.npy");
    let d = max_abs_diff_u8(u8_pixels(&img), exp.as_slice().unwrap());
    println!("jpeg420_q85.jpg: max abs diff vs PIL = {d}");
    assert_eq!(d, 0);
}

#[test]
fn larger_jpeg_checksums_equal_pillow() {
    let m = manifest();
    for case in m["decode_checksum"].as_array().unwrap() {
        let file = s(&case["file"]);
        let img = decode_image_file(&fixtures().join(file)).unwrap();
        check_checksums(file, &img, case);
    }
}

#[test]
fn real_kvasir_jpegs_equal_pillow() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/kvasir_seg/images");
    if !dir.is_dir() {
        println!("skipped: {} not found", dir.display());
        return;
    }
    let m = manifest();
    let cases = m["kvasir"].as_array().unwrap();
    assert_eq!(cases.len(), 3, "fixtures hold three Kvasir checksums");
    for case in cases {
        let file = s(&case["file"]);
        let path = dir.join(file);
        if !path.is_file() {
            println!("skipped: {} not found", path.display());
            continue;
        }
        let img = decode_image_file(&path).unwrap_or_else(|e| panic!("{file}: {e}"));
        check_checksums(file, &img, case);
        println!(
            "{file}: {}x{} identical to PIL (sums, weighted sum, 4 rows)",
            img.width, img.height
        );
    }
}

fn resize_source_u8(name: &str) -> (Vec<u8>, u32, u32) {
    let a: ArrayD<u8> = npy(&format!("{name}.rgb.npy"));
    let (h, w) = (a.shape()[0] as u32, a.shape()[1] as u32);
    (a.as_slice().unwrap().to_vec(), w, h)
}

#[test]
fn resize_u8_equals_pillow() {
    let m = manifest();
    let cases = m["resize_u8"].as_array().unwrap();
    let mut orders = [0usize; 2];
    for case in cases {
        let (src, w, h) = resize_source_u8(s(&case["source"]));
        let (ow, oh) = (u(&case["width"]), u(&case["height"]));
        let filter = filter_named(s(&case["filter"]));
        let exp: ArrayD<u8> = npy(s(&case["expected"]));
        assert_eq!(exp.shape(), &[oh as usize, ow as usize, 3]);
        let got = resize_rgb8(&src, w, h, ow, oh, filter).unwrap();
        let d = max_abs_diff_u8(&got, exp.as_slice().unwrap());
        let order = pillow_pass_order(w, h, ow, oh);
        if ow != w && oh != h {
            orders[(order == PassOrder::VerticalFirst) as usize] += 1;
        }
        println!(
            "{} {w}x{h} -> {ow}x{oh} {filter:?} ({order:?}): max abs diff = {d}",
            s(&case["source"])
        );
        assert_eq!(
            d,
            0,
            "{}: resize to {ow}x{oh} with {filter:?} differs from Pillow",
            s(&case["expected"])
        );
    }
    // both pass orders are exercised
    assert!(
        orders[0] >= 3 && orders[1] >= 3,
        "pass orders covered: {orders:?}"
    );
}

#[test]
fn resize_f32_equals_pillow_mode_f() {
    let m = manifest();
    let src: ArrayD<f32> = npy("noise_40x37.f32.npy");
    let (h, w) = (src.shape()[0] as u32, src.shape()[1] as u32);
    let src = src.as_slice().unwrap();
    for case in m["resize_f32"].as_array().unwrap() {
        let (ow, oh) = (u(&case["width"]), u(&case["height"]));
        let filter = filter_named(s(&case["filter"]));
        let exp: ArrayD<f32> = npy(s(&case["expected"]));
        let got = resize_rgb_f32(src, w, h, ow, oh, filter).unwrap();
        let exp = exp.as_slice().unwrap();
        let d = max_abs_diff_f32(&got, exp);
        let same = count_bit_identical(&got, exp);
        println!(
            "f32 {w}x{h} -> {ow}x{oh} {filter:?}: max abs diff = {d}, bit-identical {same}/{}",
            exp.len()
        );
        assert_eq!(
            same,
            exp.len(),
            "{}: float resize differs from Pillow mode F",
            s(&case["expected"])
        );
    }
}

#[test]
fn normalization_is_bit_identical_to_torchvision() {
    let ramp: ArrayD<u8> = npy("norm_ramp.rgb.npy");
    let exp: ArrayD<f32> = npy("norm_ramp.expected.npy"); // (3, 16, 16), every u8 value per channel
    let got = normalize_rgb8(ramp.as_slice().unwrap(), 16, 16, &Normalization::imagenet()).unwrap();
    assert_eq!(got.shape(), &[1, 3, 16, 16]);
    let got: Vec<f32> = got.iter().copied().collect();
    let exp = exp.as_slice().unwrap();
    assert_eq!(
        count_bit_identical(&got, exp),
        exp.len(),
        "max abs diff {}",
        max_abs_diff_f32(&got, exp)
    );
}

fn mode_of(case: &Value) -> ResizeMode {
    match s(&case["mode"]) {
        "dino_eval" => ResizeMode::DinoEval {
            short_side: u(&case["short_side"]),
            crop: u(&case["crop"]),
        },
        "fixed" => ResizeMode::Fixed {
            height: u(&case["height"]),
            width: u(&case["width"]),
        },
        "none" => ResizeMode::None,
        other => panic!("unknown mode {other}"),
    }
}

#[test]
fn pipelines_match_torchvision() {
    let m = manifest();
    let cases = m["pipeline"].as_array().unwrap();
    for case in cases {
        let file = s(&case["file"]);
        let cfg = PreprocessConfig {
            resize: mode_of(case),
            ..PreprocessConfig::default()
        };
        let img = decode_image_file(&fixtures().join(file)).unwrap();
        let x = preprocess(&img, &cfg).unwrap();
        let shape: Vec<usize> = case["shape"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as usize)
            .collect();
        assert_eq!(x.shape(), shape.as_slice(), "{file} {:?}", cfg.resize);
        let x3: Array3<f32> = x.index_axis(Axis(0), 0).to_owned();
        let (d, same, n) = if let Some(full) = case.get("full") {
            let exp: ArrayD<f32> = npy(s(full));
            let got: Vec<f32> = x3.iter().copied().collect();
            let exp = exp.as_slice().unwrap();
            (
                max_abs_diff_f32(&got, exp),
                count_bit_identical(&got, exp),
                exp.len(),
            )
        } else {
            let exp: ArrayD<f32> = npy(s(&case["row_values"])); // (3, n_rows, W)
            let rows: Vec<usize> = case["rows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as usize)
                .collect();
            let mut got = Vec::new();
            for c in 0..3 {
                for &r in &rows {
                    got.extend(
                        x3.index_axis(Axis(0), c)
                            .index_axis(Axis(0), r)
                            .iter()
                            .copied(),
                    );
                }
            }
            let exp: Vec<f32> = exp.iter().copied().collect();
            (
                max_abs_diff_f32(&got, &exp),
                count_bit_identical(&got, &exp),
                exp.len(),
            )
        };
        for c in 0..3 {
            let sum: f64 = x3
                .index_axis(Axis(0), c)
                .iter()
                .map(|&v| f64::from(v))
                .sum();
            let exp = case["channel_sums"][c].as_f64().unwrap();
            assert!(
                (sum - exp).abs() <= 1e-9 * exp.abs().max(1.0),
                "{file}: channel {c} sum {sum} vs {exp}"
            );
        }
        println!(
            "{file} {:?}: max abs diff vs torchvision = {d:e}, bit-identical {same}/{n}",
            cfg.resize
        );
        assert!(d <= 1e-6, "{file} {:?}: max abs diff {d}", cfg.resize);
    }
}

#[test]
fn dino_eval_geometry_and_pixels() {
    // 299x257 -> Resize(256) -> 297x256; CenterCrop(224): left = round(36.5) = 36, top = 16
    let img = decode_image_file(&fixtures().join("big_299x257_q90.jpg")).unwrap();
    let (x, plan) = preprocess_with_plan(&img, &PreprocessConfig::default()).unwrap();
    assert_eq!(x.shape(), &[1, 3, 224, 224]);
    assert_eq!((plan.resized_width, plan.resized_height), (297, 256));
    assert_eq!((plan.crop.left, plan.crop.top), (36, 16));
    let (px, plan2) =
        resize_and_crop(&img, &ResizeMode::dino_eval(), ResampleFilter::Bicubic).unwrap();
    assert_eq!(plan, plan2);
    assert_eq!((px.width, px.height), (224, 224));
    // the pixel image normalises to the same tensor
    let again = normalize_rgb8(u8_pixels(&px), 224, 224, &Normalization::imagenet()).unwrap();
    assert_eq!(again, x);
}

#[test]
fn sixteen_bit_images_take_the_float_path() {
    let img = decode_image_file(&fixtures().join("rgb16.png")).unwrap();
    assert!(img.is_16bit());
    let cfg = PreprocessConfig {
        resize: ResizeMode::Fixed {
            height: 13,
            width: 17,
        },
        ..PreprocessConfig::default()
    };
    let x = preprocess(&img, &cfg).unwrap();
    assert_eq!(x.shape(), &[1, 3, 13, 17]);
    // same as resizing the samples in f32, dividing by 65535 and normalising by hand
    let f = resize_rgb_f32(
        &img.to_f32(),
        img.width,
        img.height,
        17,
        13,
        ResampleFilter::Bicubic,
    )
    .unwrap();
    let n = Normalization::imagenet();
    for (i, px) in f.chunks_exact(3).enumerate() {
        for c in 0..3 {
            let want = (px[c] / 65535.0 - n.mean[c]) / n.std[c];
            assert_eq!(x[[0, c, i / 17, i % 17]].to_bits(), want.to_bits());
        }
    }
    // the 16-bit pixel image is that float image rounded
    let (px16, _) = resize_and_crop(&img, &cfg.resize, cfg.filter).unwrap();
    let Pixels::U16(v) = &px16.pixels else {
        panic!("expected u16")
    };
    for (a, b) in v.iter().zip(&f) {
        assert_eq!(*a, b.round().clamp(0.0, 65535.0) as u16);
    }
    // ResizeMode::None on 16 bits is v / 65535
    let x0 = preprocess(
        &img,
        &PreprocessConfig {
            resize: ResizeMode::None,
            ..cfg
        },
    )
    .unwrap();
    let Pixels::U16(raw) = &img.pixels else {
        unreachable!()
    };
    let want = (f32::from(raw[3]) / 65535.0 - n.mean[0]) / n.std[0];
    assert_eq!(x0[[0, 0, 0, 1]].to_bits(), want.to_bits());
}

fn expect_decode_error(result: explainseg::Result<DecodedImage>, path: &Path, what: &str) {
    match result {
        Err(Error::Decode { path: p, reason }) => {
            assert_eq!(p, path, "{what}: error should name the path");
            println!("{what}: {reason}");
        }
        other => panic!("{what}: expected Error::Decode, got {other:?}"),
    }
}

#[test]
fn bad_files_are_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let jpeg = std::fs::read(fixtures().join("jpeg420_q85.jpg")).unwrap();
    let png = std::fs::read(fixtures().join("rgba.png")).unwrap();
    let tif = std::fs::read(fixtures().join("rgb8_lzw.tif")).unwrap();
    let progressive = std::fs::read(fixtures().join("progressive_q75.jpg")).unwrap();
    let mut garbage_jpeg = jpeg[..200].to_vec();
    garbage_jpeg.extend((0..400u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("empty.jpg", vec![]),
        ("text.jpg", b"this is not an image\n".to_vec()),
        ("truncated_half.jpg", jpeg[..jpeg.len() / 2].to_vec()),
        ("truncated_header.jpg", jpeg[..40].to_vec()),
        ("truncated_scan.jpg", jpeg[..jpeg.len() - 300].to_vec()),
        // Pillow also calls a JPEG without its EOI marker truncated
        ("no_eoi.jpg", jpeg[..jpeg.len() - 2].to_vec()),
        (
            "truncated_progressive.jpg",
            progressive[..progressive.len() * 2 / 3].to_vec(),
        ),
        ("soi_only.jpg", vec![0xFF, 0xD8, 0xFF]),
        ("garbage_after_header.jpg", garbage_jpeg),
        ("truncated.png", png[..png.len() / 2].to_vec()),
        ("signature_only.png", png[..8].to_vec()),
        ("truncated.tif", tif[..tif.len() / 3].to_vec()),
    ];
    for (name, bytes) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, &bytes).unwrap();
        expect_decode_error(decode_image_file(&path), &path, name);
        expect_decode_error(decode_image_bytes(&bytes, &path), &path, name);
        let r = explainseg::image::load_and_preprocess(&path, &PreprocessConfig::default());
        assert!(matches!(r, Err(Error::Decode { .. })), "{name}");
    }
    let missing = dir.path().join("does_not_exist.png");
    match decode_image_file(&missing) {
        Err(Error::Io { path, .. }) => assert_eq!(path, missing),
        other => panic!("missing file: expected Error::Io, got {other:?}"),
    }
}

#[test]
fn unsupported_jpeg_colour_space_is_a_clear_error() {
    // A 4-component (CMYK) baseline JPEG, 8x8, written by hand: SOI, DQT, SOF0
    // with 4 components, DHT (DC/AC tables with a single code), SOS, one MCU, EOI.
    let mut j: Vec<u8> = vec![0xFF, 0xD8];
    j.extend([0xFF, 0xDB, 0x00, 0x43, 0x00]);
    j.extend([1u8; 64]);
    j.extend([0xFF, 0xC0, 0x00, 0x14, 0x08, 0x00, 0x08, 0x00, 0x08, 0x04]);
    for id in 1..=4u8 {
        j.extend([id, 0x11, 0x00]);
    }
    // DC table 0: one code of length 1 for category 0; AC table 0: one code of length 1 for EOB
    j.extend([0xFF, 0xC4, 0x00, 0x14, 0x00, 0x01]);
    j.extend([0u8; 15]);
    j.push(0x00);
    j.extend([0xFF, 0xC4, 0x00, 0x14, 0x10, 0x01]);
    j.extend([0u8; 15]);
    j.push(0x00);
    j.extend([0xFF, 0xDA, 0x00, 0x0E, 0x04]);
    for id in 1..=4u8 {
        j.extend([id, 0x00]);
    }
    j.extend([0x00, 0x3F, 0x00]);
    j.push(0x00); // 8 zero bits: DC=0, EOB for each of the 4 blocks
    j.extend([0xFF, 0xD9]);
    let path = Path::new("cmyk.jpg");
    match decode_image_bytes(&j, path) {
        Err(Error::Decode { reason, .. }) => {
            println!("cmyk: {reason}");
            assert!(reason.contains("colour space"), "{reason}");
        }
        other => panic!("expected a colour-space Decode error, got {other:?}"),
    }
}

#[test]
fn absurd_sizes_are_refused() {
    // PNG header claiming 65535 x 65535 (> 2^28 pixels), no data
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    let ihdr: Vec<u8> = [
        &b"IHDR"[..],
        &65535u32.to_be_bytes(),
        &65535u32.to_be_bytes(),
        &[8, 2, 0, 0, 0],
    ]
    .concat();
    png.extend((13u32).to_be_bytes());
    png.extend(&ihdr);
    png.extend(crc32(&ihdr).to_be_bytes());
    let r = decode_image_bytes(&png, Path::new("huge.png"));
    // Above the `image_pixels` limit: refused from the header, before decoding.
    match r {
        Err(Error::LimitExceeded {
            limit: "image_pixels",
            ..
        }) => {}
        other => panic!("expected a LimitExceeded error, got {other:?}"),
    }
    assert!(DecodedImage::new(1 << 15, (1 << 13) + 1, Pixels::U8(vec![])).is_err());
    assert!(ResizeMode::Fixed {
        height: 1 << 15,
        width: (1 << 13) + 1
    }
    .validate()
    .is_err());
}

fn crc32(data: &[u8]) -> u32 {
    let mut crc = 0xFFFF_FFFFu32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0xEDB8_8320
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

/// Wide comparison with Pillow on random sizes (run by hand, see
/// `tools/gen_preprocess.py --sweep`): skipped unless
/// `EXPLAINSEG_PILLOW_SWEEP_DIR` names a sweep directory.
#[test]
#[ignore = "needs a sweep directory made by tools/gen_preprocess.py --sweep"]
fn pillow_sweep() {
    let Ok(dir) = std::env::var("EXPLAINSEG_PILLOW_SWEEP_DIR") else {
        println!("skipped: EXPLAINSEG_PILLOW_SWEEP_DIR not set");
        return;
    };
    let dir = PathBuf::from(dir);
    let cases: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("sweep.json")).unwrap()).unwrap();
    let (mut n_u8, mut n_f32) = (0, 0);
    for case in cases.as_array().unwrap() {
        let src: ArrayD<u8> = read_npy(dir.join(s(&case["src"]))).unwrap();
        let exp: ArrayD<u8> = read_npy(dir.join(s(&case["out"]))).unwrap();
        let (h, w) = (src.shape()[0] as u32, src.shape()[1] as u32);
        let (ow, oh) = (u(&case["width"]), u(&case["height"]));
        let filter = filter_named(s(&case["filter"]));
        let got = resize_rgb8(src.as_slice().unwrap(), w, h, ow, oh, filter).unwrap();
        let d = max_abs_diff_u8(&got, exp.as_slice().unwrap());
        assert_eq!(d, 0, "{w}x{h} -> {ow}x{oh} {filter:?}: max abs diff {d}");
        n_u8 += 1;
        if let Some(srcf) = case.get("srcf") {
            let srcf: ArrayD<f32> = read_npy(dir.join(s(srcf))).unwrap();
            let expf: ArrayD<f32> = read_npy(dir.join(s(&case["outf"]))).unwrap();
            let got = resize_rgb_f32(srcf.as_slice().unwrap(), w, h, ow, oh, filter).unwrap();
            let expf = expf.as_slice().unwrap();
            assert_eq!(
                count_bit_identical(&got, expf),
                expf.len(),
                "f32 {w}x{h} -> {ow}x{oh} {filter:?}"
            );
            n_f32 += 1;
        }
    }
    println!("sweep: {n_u8} u8 and {n_f32} f32 resizes identical to Pillow");
}

/// Decodes every image listed by `tools/gen_preprocess.py --decode-sweep` and
/// compares with Pillow's checksums; skipped unless
/// `EXPLAINSEG_DECODE_SWEEP_JSON` is set.
#[test]
#[ignore = "needs a checksum list made by tools/gen_preprocess.py --decode-sweep"]
fn decode_sweep() {
    let Ok(list) = std::env::var("EXPLAINSEG_DECODE_SWEEP_JSON") else {
        println!("skipped: EXPLAINSEG_DECODE_SWEEP_JSON not set");
        return;
    };
    let cases: Value = serde_json::from_str(&std::fs::read_to_string(list).unwrap()).unwrap();
    let mut n = 0;
    for case in cases.as_array().unwrap() {
        let path = PathBuf::from(s(&case["path"]));
        let img = decode_image_file(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let img = DecodedImage::new(img.width, img.height, Pixels::U8(img.to_rgb8())).unwrap();
        check_sums(&path.display().to_string(), &img, case);
        n += 1;
    }
    println!("decode sweep: {n} images identical to Pillow");
}
