//! Hostile inputs through the CLI and the C ABI. Every case runs in a child
//! process under a 3 GiB address-space cap (`prlimit --as`) and a 20 s limit
//! (`timeout`): an abort, a signal, a hang or an allocation beyond the cap fails
//! the case. CLI cases also check the exit code (1 or 2), the message, the
//! absence of a panic and that no file in the working folder was created or
//! changed. C-ABI cases run this test binary again as a child that makes the
//! call and checks the returned status and the last error.

use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::ptr::{null, null_mut};

use explainseg::capi::*;

const AS_CAP: &str = "--as=3221225472";

fn fixture(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

fn weights() -> PathBuf {
    fixture("engine/s16_tiny/model_timm.safetensors")
}

fn jpeg() -> PathBuf {
    fixture("preprocess/jpeg420_q85.jpg")
}

/// A lower cap, for inputs whose limits were raised on purpose: the buffer they
/// ask for passes every limit but cannot be reserved under this cap.
const SMALL_AS_CAP: &str = "--as=1073741824";

fn capped(program: &Path) -> Command {
    capped_at(program, AS_CAP)
}

fn capped_at(program: &Path, cap: &str) -> Command {
    let mut c = Command::new("prlimit");
    c.arg(cap).arg("timeout").arg("20").arg(program);
    c
}

/// Every file under `dir` with its length and content hash.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, (u64, u64)> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.is_dir() {
                stack.push(p);
            } else {
                let bytes = std::fs::read(&p).unwrap_or_default();
                let h = bytes.iter().fold(0xcbf29ce484222325u64, |h, &b| {
                    (h ^ u64::from(b)).wrapping_mul(0x100000001b3)
                });
                out.insert(p, (meta.len(), h));
            }
        }
    }
    out
}

/// Runs the CLI in `dir` with `args`; asserts exit 1 or 2, a message containing
/// `needle` (case-insensitive), no panic, and no file created or changed.
fn cli_fails(dir: &Path, args: &[&str], needle: &str) -> Result<(), String> {
    cli_fails_under(dir, args, needle, AS_CAP)
}

/// [`cli_fails`] under the address-space cap `cap` (a `prlimit` argument).
fn cli_fails_under(dir: &Path, args: &[&str], needle: &str, cap: &str) -> Result<(), String> {
    let before = snapshot(dir);
    let out = capped_at(Path::new(env!("CARGO_BIN_EXE_explainseg")), cap)
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run the CLI");
    let stderr = String::from_utf8_lossy(&out.stderr);
    let code = out.status.code();
    if !matches!(code, Some(1) | Some(2)) {
        return Err(format!(
            "{args:?}: exit {:?} (a signal or timeout if None or 124), stderr: {stderr}",
            out.status
        ));
    }
    if stderr.contains("panicked") {
        return Err(format!("{args:?}: panic: {stderr}"));
    }
    if !stderr.to_lowercase().contains(&needle.to_lowercase()) {
        return Err(format!("{args:?}: message lacks `{needle}`: {stderr}"));
    }
    let after = snapshot(dir);
    if before != after {
        return Err(format!("{args:?}: files changed: {before:?} -> {after:?}"));
    }
    Ok(())
}

fn npy_header(descr: &str, shape: &str) -> Vec<u8> {
    let mut dict = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    while (10 + dict.len() + 1) % 64 != 0 {
        dict.push(' ');
    }
    dict.push('\n');
    let mut v = b"\x93NUMPY\x01\x00".to_vec();
    v.extend_from_slice(&(dict.len() as u16).to_le_bytes());
    v.extend_from_slice(dict.as_bytes());
    v
}

fn png_header(w: u32, h: u32, depth: u8, color: u8) -> Vec<u8> {
    let mut v = b"\x89PNG\r\n\x1a\n".to_vec();
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&w.to_be_bytes());
    ihdr.extend_from_slice(&h.to_be_bytes());
    ihdr.extend_from_slice(&[depth, color, 0, 0, 0]);
    v.extend_from_slice(&13u32.to_be_bytes());
    v.extend_from_slice(&ihdr);
    v.extend_from_slice(&crc32(&ihdr).to_be_bytes());
    // A tiny (invalid) IDAT and IEND.
    let idat = b"IDAT\x78\x9c\x03\x00\x00\x00\x00\x01";
    v.extend_from_slice(&8u32.to_be_bytes());
    v.extend_from_slice(idat);
    v.extend_from_slice(&crc32(idat).to_be_bytes());
    v.extend_from_slice(&0u32.to_be_bytes());
    v.extend_from_slice(b"IEND");
    v.extend_from_slice(&crc32(b"IEND").to_be_bytes());
    v
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xFFFF_FFFFu32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// The fixture JPEG with its frame header (SOF0) declaring `w`×`h`.
fn jpeg_header(w: u16, h: u16) -> Vec<u8> {
    let mut v = std::fs::read(jpeg()).unwrap();
    let at = v.windows(2).position(|m| m == [0xFF, 0xC0]).expect("SOF0");
    v[at + 5..at + 7].copy_from_slice(&h.to_be_bytes());
    v[at + 7..at + 9].copy_from_slice(&w.to_be_bytes());
    v
}

/// The fixture JPEG cut to a third of its bytes, with an EOI appended.
fn truncated_jpeg() -> Vec<u8> {
    let b = std::fs::read(jpeg()).unwrap();
    let mut v = b[..b.len() / 3].to_vec();
    v.extend_from_slice(&[0xFF, 0xD9]);
    v
}

/// The fixture JPEG with bits flipped in the middle of its scan data.
fn corrupt_jpeg() -> Vec<u8> {
    let mut b = std::fs::read(jpeg()).unwrap();
    let sos = b.windows(2).position(|m| m == [0xFF, 0xDA]).expect("SOS");
    let n = b.len();
    // Garbage over a stretch of the entropy-coded data (no 0xFF, so no markers).
    for (k, i) in (sos + 40..n - 2).enumerate().filter(|(k, _)| k % 2 == 0) {
        if k > 4000 {
            break;
        }
        b[i] = 0xFE;
    }
    b
}

/// The fixture model with its header rewritten by `edit` (data unchanged) and
/// the f32 at `poison` (tensor name, element) replaced by `value`.
fn crafted_weights(
    edit: impl FnOnce(&mut serde_json::Value),
    poison: Option<(&str, f32)>,
) -> Vec<u8> {
    let b = std::fs::read(weights()).unwrap();
    let n = u64::from_le_bytes(b[..8].try_into().unwrap()) as usize;
    let mut header: serde_json::Value = serde_json::from_slice(&b[8..8 + n]).unwrap();
    let mut data = b[8 + n..].to_vec();
    if let Some((name, value)) = poison {
        let start = header[name]["data_offsets"][0].as_u64().unwrap() as usize;
        data[start..start + 4].copy_from_slice(&value.to_le_bytes());
    }
    edit(&mut header);
    let h = serde_json::to_vec(&header).unwrap();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(&data);
    out
}

/// A model whose backbone width is 0 (every tensor empty).
fn zero_width_weights() -> Vec<u8> {
    let header = serde_json::json!({
        "patch_embed.proj.weight": {"dtype": "F32", "shape": [0, 3, 16, 16], "data_offsets": [0, 0]},
        "patch_embed.proj.bias": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]},
        "cls_token": {"dtype": "F32", "shape": [1, 1, 0], "data_offsets": [0, 0]},
        "pos_embed": {"dtype": "F32", "shape": [1, 5, 0], "data_offsets": [0, 0]},
        "blocks.0.attn.qkv.weight": {"dtype": "F32", "shape": [0, 0], "data_offsets": [0, 0]},
        "blocks.0.mlp.fc1.weight": {"dtype": "F32", "shape": [0, 0], "data_offsets": [0, 0]},
        "head.weight": {"dtype": "F32", "shape": [2, 0], "data_offsets": [0, 0]},
        "head.bias": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
    });
    let h = serde_json::to_vec(&header).unwrap();
    let mut out = (h.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(&h);
    out.extend_from_slice(&[0u8; 8]);
    out
}

/// A 728-byte DICOM declaring PixelData of 0xFFFFFFF0 bytes.
fn huge_dicom() -> Vec<u8> {
    let mut v = vec![0u8; 128];
    v.extend_from_slice(b"DICM");
    let mut el = |g: u16, e: u16, vr: &[u8; 2], val: &[u8]| {
        v.extend_from_slice(&g.to_le_bytes());
        v.extend_from_slice(&e.to_le_bytes());
        v.extend_from_slice(vr);
        v.extend_from_slice(&(val.len() as u16).to_le_bytes());
        v.extend_from_slice(val);
    };
    el(0x0002, 0x0010, b"UI", b"1.2.840.10008.1.2.1\0");
    el(0x0028, 0x0002, b"US", &1u16.to_le_bytes());
    el(0x0028, 0x0004, b"CS", b"MONOCHROME2 ");
    el(0x0028, 0x0010, b"US", &64u16.to_le_bytes());
    el(0x0028, 0x0011, b"US", &64u16.to_le_bytes());
    el(0x0028, 0x0100, b"US", &16u16.to_le_bytes());
    el(0x0028, 0x0101, b"US", &16u16.to_le_bytes());
    el(0x0028, 0x0103, b"US", &0u16.to_le_bytes());
    v.extend_from_slice(&[0xE0, 0x7F, 0x10, 0x00, b'O', b'W', 0, 0]);
    v.extend_from_slice(&0xFFFF_FFF0u32.to_le_bytes());
    v.resize(728, 0);
    v
}

struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Files {
        Files {
            dir: tempfile::tempdir().unwrap(),
        }
    }
    fn put(&self, name: &str, bytes: &[u8]) -> String {
        let p = self.dir.path().join(name);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent).unwrap();
        }
        std::fs::write(&p, bytes).unwrap();
        p.to_str().unwrap().to_string()
    }
    fn path(&self) -> &Path {
        self.dir.path()
    }
}

#[test]
fn hostile_cli_inputs() {
    let f = Files::new();
    let w = weights().to_str().unwrap().to_string();
    let img = f.put("img.jpg", &std::fs::read(jpeg()).unwrap());
    let big_npy = f.put("big.npy", &npy_header("<f4", "(1099511627776,)"));
    let short_npy = f.put("short.npy", &npy_header("<f4", "(1024, 1024)"));
    let f8_npy = f.put("f8.npy", &npy_header("<f8", "(4,)"));
    let big_feat = f.put("feat.npy", &npy_header("<f4", "(1048576, 4)"));
    let huge_png = f.put("huge.png", &png_header(2_147_483_647, 2_147_483_647, 8, 2));
    let rgba16 = f.put("rgba16.png", &png_header(16384, 16384, 16, 6));
    let wide_jpg = f.put("wide.jpg", &jpeg_header(65000, 65000));
    let trunc = f.put("trunc.jpg", &truncated_jpeg());
    let corrupt = f.put("corrupt.jpg", &corrupt_jpeg());
    let empty = f.put("empty.png", b"");
    let nan_w = f.put(
        "nan.safetensors",
        &crafted_weights(|_| {}, Some(("cls_token", f32::NAN))),
    );
    let inf_w = f.put(
        "inf.safetensors",
        &crafted_weights(|_| {}, Some(("head.weight", f32::INFINITY))),
    );
    let grid_w = f.put(
        "grid.safetensors",
        &crafted_weights(
            |h| {
                h["__metadata__"] = serde_json::json!({"pos_grid": "9223372036854775840x2"});
            },
            None,
        ),
    );
    let heads_w = f.put(
        "heads.safetensors",
        &crafted_weights(
            |h| h["__metadata__"] = serde_json::json!({"num_heads": "0"}),
            None,
        ),
    );
    let zero_w = f.put("zero.safetensors", &zero_width_weights());
    let garbage_w = f.put("garbage.safetensors", b"\xff\xff\xff\xff\xff\xff\xff\x7f{}");
    let mask_small = f.put("small_mask.png", &{
        let mut b = Vec::new();
        ::image::GrayImage::new(7, 5)
            .write_to(&mut std::io::Cursor::new(&mut b), ::image::ImageFormat::Png)
            .unwrap();
        b
    });
    let decoded = explainseg::image::decode_image_file(&jpeg()).unwrap();
    let (iw, ih) = (decoded.width, decoded.height);
    let mask_same = f.put("same_mask.png", &{
        let mut b = Vec::new();
        ::image::GrayImage::new(iw, ih)
            .write_to(&mut std::io::Cursor::new(&mut b), ::image::ImageFormat::Png)
            .unwrap();
        b
    });
    let map_ok = f.put("map.npy", &{
        let mut v = npy_header("<f4", "(8, 8)");
        v.extend(std::iter::repeat_n(0u8, 256));
        v
    });
    std::fs::create_dir_all(f.path().join("existing")).unwrap();
    f.put("existing/mask.png", b"old content");
    f.put("dcm/x.dcm", &huge_dicom());
    std::fs::create_dir_all(f.path().join("loop/sub")).unwrap();
    std::os::unix::fs::symlink(f.path().join("loop"), f.path().join("loop/sub/back")).unwrap();
    let out = f.path().join("out").to_str().unwrap().to_string();
    let seg = |extra: &[&str]| {
        let pick = |flag: &str, default: &str| {
            extra
                .iter()
                .position(|a| *a == flag)
                .map_or(default.to_string(), |i| extra[i + 1].to_string())
        };
        let mut a = vec![
            "segment".to_string(),
            "--weights".into(),
            pick("--weights", &w),
            "--image".into(),
            pick("--image", &img),
            "--out".into(),
            out.clone(),
        ];
        let mut i = 0;
        while i < extra.len() {
            if extra[i] == "--weights" || extra[i] == "--image" {
                i += 2;
                continue;
            }
            a.push(extra[i].to_string());
            i += 1;
        }
        a
    };
    let cases: Vec<(Vec<String>, &str)> = vec![
        // .npy
        (
            s(&[
                "mask", "--map", &big_npy, "--image", &img, "--method", "otsu", "--out", &out,
            ]),
            "npy_elements",
        ),
        (
            s(&["mask", "--map", &short_npy, "--image", &img, "--out", &out]),
            "declares",
        ),
        (
            s(&["mask", "--map", &f8_npy, "--image", &img, "--out", &out]),
            "float32",
        ),
        (
            s(&[
                "ncut",
                "--features",
                &big_npy,
                "--grid",
                "1024,1024",
                "--out",
                &out,
            ]),
            "npy_elements",
        ),
        (
            s(&[
                "ncut",
                "--features",
                &big_feat,
                "--grid",
                "1024,1024",
                "--out",
                &out,
            ]),
            "declares",
        ),
        // images
        (seg(&["--image", &huge_png]), "image_pixels"),
        (seg(&["--image", &rgba16]), "image_pixels"),
        (seg(&["--image", &wide_jpg]), "image_pixels"),
        (seg(&["--image", &trunc]), "JPEG"),
        (seg(&["--image", &corrupt]), "JPEG"),
        (seg(&["--image", &empty]), "empty"),
        (
            s(&[
                "crf",
                "--image",
                &huge_png,
                "--mask",
                &mask_small,
                "--out",
                "r.png",
            ]),
            "image_pixels",
        ),
        // parameters
        (seg(&["--size", "2048"]), "tokens"),
        (seg(&["--size", "16384"]), "image_pixels"),
        (
            seg(&["--steps", "100000", "--nt-samples", "100"]),
            "ig_passes",
        ),
        (
            seg(&[
                "--variant",
                "xncut",
                "--size",
                "64",
                "--ncut-grid",
                "100000",
            ]),
            "ncut_nodes",
        ),
        (
            seg(&[
                "--variant",
                "xncut",
                "--size",
                "64",
                "--ncut-dilation",
                "4000000000",
            ]),
            "dilation_px",
        ),
        (
            seg(&["--variant", "xncut", "--size", "64", "--ncut-radius", "1e9"]),
            "ncut_edges",
        ),
        (
            s(&[
                "--threads",
                "100000",
                "segment",
                "--weights",
                &w,
                "--image",
                &img,
                "--out",
                &out,
            ]),
            "threads",
        ),
        (
            s(&[
                "--limit",
                "bogus=3",
                "segment",
                "--weights",
                &w,
                "--image",
                &img,
                "--out",
                &out,
            ]),
            "unknown limit",
        ),
        (
            s(&[
                "--limit",
                "tokens=0",
                "segment",
                "--weights",
                &w,
                "--image",
                &img,
                "--out",
                &out,
            ]),
            "at least 1",
        ),
        (
            s(&[
                "--limit",
                "tokens=10",
                "segment",
                "--weights",
                &w,
                "--image",
                &img,
                "--size",
                "64",
                "--out",
                &out,
            ]),
            "tokens",
        ),
        (
            s(&[
                "crf", "--image", &img, "--mask", &mask_same, "--iters", "1000000", "--out",
                "r.png",
            ]),
            "crf_iterations",
        ),
        // weights
        (seg(&["--weights", &nan_w]), "cls_token"),
        (seg(&["--weights", &inf_w]), "head.weight"),
        (seg(&["--weights", &grid_w]), "pos_grid"),
        (seg(&["--weights", &heads_w]), "heads"),
        (seg(&["--weights", &zero_w]), "error"),
        (seg(&["--weights", &garbage_w]), "safetensors"),
        // files
        (
            s(&[
                "crf",
                "--image",
                &img,
                "--mask",
                &mask_small,
                "--out",
                "r.jpg",
            ]),
            ".png",
        ),
        (
            s(&[
                "crf",
                "--image",
                &img,
                "--mask",
                &mask_small,
                "--out",
                "r.png",
            ]),
            "must match",
        ),
        (
            s(&[
                "mask",
                "--map",
                &big_npy,
                "--image",
                &img,
                "--out",
                f.path().join("existing").to_str().unwrap(),
            ]),
            "npy_elements",
        ),
        (
            s(&[
                "mask",
                "--map",
                &map_ok,
                "--image",
                &huge_png,
                "--out",
                f.path().join("existing").to_str().unwrap(),
            ]),
            "image_pixels",
        ),
        (
            s(&[
                "eval",
                "--dataset",
                "cbis",
                "--root",
                f.path().join("loop").to_str().unwrap(),
                "--weights",
                &w,
                "--out",
                &out,
            ]),
            "error",
        ),
        (
            s(&[
                "eval",
                "--dataset",
                "folder",
                "--root",
                f.path().join("dcm").to_str().unwrap(),
                "--weights",
                &w,
                "--out",
                &out,
            ]),
            "error",
        ),
    ];
    assert!(cases.len() >= 35);
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|(args, needle)| {
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            cli_fails(f.path(), &a, needle).err()
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n\n")
    );
}

/// Limits raised far above the defaults let a 16384² RGBA16 PNG header (2 GiB of
/// samples) through; under a 1 GiB address-space cap the buffer cannot be
/// reserved, which must be an error naming the allocation, never an abort.
#[test]
fn allocation_refused_by_the_address_space_cap_is_an_error() {
    let f = Files::new();
    let w = weights().to_str().unwrap().to_string();
    let rgba16 = f.put("rgba16.png", &png_header(16384, 16384, 16, 6));
    let out = f.path().join("out").to_str().unwrap().to_string();
    let raised = [
        "--limit",
        "image_pixels=268435456",
        "--limit",
        "decoded_bytes=17179869184",
    ];
    let mut failures = Vec::new();
    for cmd in ["segment", "attribute"] {
        let mut args = vec![cmd, "--weights", &w, "--image", &rgba16, "--out", &out];
        args.extend(raised);
        if let Err(e) = cli_fails_under(f.path(), &args, "cannot reserve", SMALL_AS_CAP) {
            failures.push(e);
        }
    }
    let child = capped_at(&std::env::current_exe().unwrap(), SMALL_AS_CAP)
        .args([
            "--exact",
            "c_abi_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env("HOSTILE_CASE", "image_beyond_address_space")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&child.stdout).into_owned()
        + &String::from_utf8_lossy(&child.stderr);
    if !child.status.success() || !text.contains("HOSTILE-OK") {
        failures.push(format!("C ABI: {:?}\n{text}", child.status));
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

fn s(a: &[&str]) -> Vec<String> {
    a.iter().map(|x| x.to_string()).collect()
}

// ---------------------------------------------------------------- C ABI ----

const C_CASES: &[&str] = &[
    "stride_negative",
    "stride_2_62",
    "pixels_too_many",
    "channels_2",
    "len_above_isize",
    "classify_2048",
    "classify_16384",
    "segment_ncut_grid",
    "segment_dilation",
    "segment_crf_iters",
    "segment_threads",
    "segment_ig_passes",
    "load_nan",
    "load_pos_grid",
    "load_zero_width",
    "load_heads_zero",
    "limits_zero",
    "limits_lenient_7",
    "limits_null",
    "image_huge_png",
    "image_truncated_jpeg",
    "image_corrupt_jpeg",
    "image_dicom_header",
    "limits_lowered_tokens",
    "png_checksums_strict_and_lenient",
    "tiff_strict_and_lenient",
];

#[test]
fn hostile_c_abi_calls() {
    let mut failures = Vec::new();
    for case in C_CASES {
        let out = capped(&std::env::current_exe().unwrap())
            .args([
                "--exact",
                "c_abi_child",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("HOSTILE_CASE", case)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let tail: String = text
            .lines()
            .filter(|l| {
                !l.trim_start()
                    .starts_with(|c: char| c.is_ascii_digit() || c == 'a')
            })
            .take(12)
            .collect::<Vec<_>>()
            .join("\n");
        if !out.status.success() || !text.contains("HOSTILE-OK") {
            failures.push(format!("case {case}: {:?}\n{tail}", out.status));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        C_CASES.len(),
        failures.join("\n\n")
    );
}

fn set_lenient(on: bool) {
    let l = EsLimits {
        lenient_decoding: u8::from(on),
        ..explainseg_limits_default()
    };
    // SAFETY: a valid struct.
    assert_eq!(unsafe { explainseg_limits_set(&l) }, EsStatus::Ok);
}

/// A 16×16 RGB PNG (one IDAT) with varied pixels.
fn small_png() -> Vec<u8> {
    let img =
        ::image::RgbImage::from_fn(16, 16, |x, y| ::image::Rgb([x as u8 * 16, y as u8 * 16, 7]));
    let mut b = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut b), ::image::ImageFormat::Png)
        .unwrap();
    b
}

/// (offset of the chunk's length field, data length) of the first `kind` chunk.
fn png_chunk(b: &[u8], kind: &[u8; 4]) -> (usize, usize) {
    let mut pos = 8;
    loop {
        let len = u32::from_be_bytes(b[pos..pos + 4].try_into().unwrap()) as usize;
        if &b[pos + 4..pos + 8] == kind {
            return (pos, len);
        }
        pos += 12 + len;
    }
}

fn fix_crc(b: &mut [u8], at: usize, len: usize) {
    let crc = crc32(&b[at + 4..at + 8 + len]);
    b[at + 8 + len..at + 12 + len].copy_from_slice(&crc.to_be_bytes());
}

/// The damages that strict PNG decoding refuses and lenient decoding accepts
/// without any change to the pixels: a wrong CRC of the image data chunk, a
/// wrong zlib Adler-32 (CRC made to match), a wrong CRC of an ancillary chunk.
fn damaged_pngs(clean: &[u8]) -> Vec<(&'static str, Vec<u8>)> {
    let (at, len) = png_chunk(clean, b"IDAT");
    let mut idat_crc = clean.to_vec();
    idat_crc[at + 8 + len] ^= 0x01;
    let mut adler = clean.to_vec();
    adler[at + 8 + len - 1] ^= 0x01;
    fix_crc(&mut adler, at, len);
    let mut text = clean[..at].to_vec();
    let mut chunk = 9u32.to_be_bytes().to_vec();
    chunk.extend_from_slice(b"tEXtComment\0x");
    chunk.extend_from_slice(&(crc32(&chunk[4..]) ^ 1).to_be_bytes());
    text.extend_from_slice(&chunk);
    text.extend_from_slice(&clean[at..]);
    vec![
        ("idat_crc", idat_crc),
        ("adler32", adler),
        ("text_crc", text),
    ]
}

/// A 16×16 RGB TIFF, the same with a strip byte count that runs past the end
/// of the file, and the same cut inside its first directory.
fn damaged_tiffs() -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let img = ::image::RgbImage::from_fn(16, 16, |x, y| ::image::Rgb([x as u8, y as u8, 9]));
    let mut clean = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut clean),
        ::image::ImageFormat::Tiff,
    )
    .unwrap();
    // Little-endian TIFF: the first directory's offset at byte 4; its entries of
    // 12 bytes; StripByteCounts (279) points past the end.
    let ifd = u32::from_le_bytes(clean[4..8].try_into().unwrap()) as usize;
    let count = u16::from_le_bytes([clean[ifd], clean[ifd + 1]]) as usize;
    let mut long_strip = clean.clone();
    for e in 0..count {
        let at = ifd + 2 + 12 * e;
        if u16::from_le_bytes([clean[at], clean[at + 1]]) == 279 {
            long_strip[at + 8..at + 12].copy_from_slice(&1_000_000u32.to_le_bytes());
        }
    }
    assert_ne!(long_strip, clean, "no StripByteCounts entry");
    let cut = clean[..ifd + 20].to_vec();
    (clean, long_strip, cut)
}

fn last_error() -> String {
    // SAFETY: never NULL, NUL-terminated.
    unsafe { CStr::from_ptr(explainseg_last_error()) }
        .to_string_lossy()
        .into_owned()
}

#[track_caller]
fn expect(status: EsStatus, want: EsStatus, needle: &str) {
    let msg = last_error();
    assert_eq!(status, want, "last error: {msg}");
    assert!(msg.contains(needle), "message `{msg}` lacks `{needle}`");
}

fn c_path(p: &Path) -> CString {
    CString::new(p.to_str().unwrap()).unwrap()
}

fn load_model(path: &Path) -> (EsStatus, *mut EsModel) {
    let mut m = null_mut();
    // SAFETY: valid string and out pointer.
    let st = unsafe { explainseg_model_load(c_path(path).as_ptr(), null(), null(), &mut m) };
    (st, m)
}

fn load_image(path: &Path) -> (EsStatus, *mut EsImage) {
    let mut img = null_mut();
    // SAFETY: valid string and out pointer.
    let st = unsafe { explainseg_image_load(c_path(path).as_ptr(), &mut img) };
    (st, img)
}

fn segment_with(edit: impl FnOnce(&mut EsSegmentParams)) -> (EsStatus, String) {
    let (st, m) = load_model(&weights());
    assert_eq!(st, EsStatus::Ok);
    let (st, img) = load_image(&jpeg());
    assert_eq!(st, EsStatus::Ok);
    let mut p = EsSegmentParams {
        image_size: 64,
        ig_steps: 2,
        nt_samples: 1,
        ncut_grid: 16,
        variant: EsVariant::Xncut,
        ..explainseg_segment_default_params()
    };
    edit(&mut p);
    let mut r = null_mut();
    // SAFETY: live handles, valid params and out pointer.
    let st = unsafe { explainseg_segment(m, img, &p, null(), &mut r) };
    let msg = last_error();
    // SAFETY: results/handles from this library, freed once.
    unsafe {
        explainseg_result_free(r);
        explainseg_image_free(img);
        explainseg_model_free(m);
    }
    (st, msg)
}

fn classify_at(size: u32) -> EsStatus {
    let (_, m) = load_model(&weights());
    let (_, img) = load_image(&jpeg());
    let p = EsSegmentParams {
        image_size: size,
        ..explainseg_segment_default_params()
    };
    let mut class = 0u32;
    // SAFETY: live handles; NULL buffers are allowed.
    let st = unsafe {
        explainseg_classify(
            m,
            img,
            &p,
            null_mut(),
            null_mut(),
            0,
            null_mut(),
            &mut class,
        )
    };
    // SAFETY: from this library, freed once.
    unsafe {
        explainseg_image_free(img);
        explainseg_model_free(m);
    }
    st
}

fn from_pixels(buf: &[u8], w: u32, h: u32, c: u32, stride: usize) -> EsStatus {
    let mut out = null_mut();
    // SAFETY: deliberately hostile sizes; the library must refuse them before
    // reading beyond `buf`.
    let st = unsafe { explainseg_image_from_pixels(buf.as_ptr(), w, h, c, stride, &mut out) };
    assert!(out.is_null() || st == EsStatus::Ok);
    st
}

#[test]
fn c_abi_child() {
    let Ok(case) = std::env::var("HOSTILE_CASE") else {
        return;
    };
    let f = Files::new();
    let buf = [7u8; 64];
    match case.as_str() {
        "stride_negative" => expect(
            from_pixels(&buf, 4, 4, 1, (-8isize) as usize),
            EsStatus::InvalidParam,
            "row_stride",
        ),
        "stride_2_62" => expect(
            from_pixels(&buf, 4, 2, 1, 1 << 62),
            EsStatus::LimitExceeded,
            "decoded_bytes",
        ),
        "pixels_too_many" => expect(
            from_pixels(&buf, 65535, 65535, 4, 0),
            EsStatus::LimitExceeded,
            "image_pixels",
        ),
        "channels_2" => expect(
            from_pixels(&buf, 4, 4, 2, 0),
            EsStatus::InvalidParam,
            "channels",
        ),
        "len_above_isize" => expect(
            from_pixels(&buf, 4, 3, 1, usize::MAX / 2),
            EsStatus::InvalidParam,
            "row_stride",
        ),
        "classify_2048" => expect(classify_at(2048), EsStatus::LimitExceeded, "tokens"),
        "classify_16384" => expect(classify_at(16384), EsStatus::LimitExceeded, "image_pixels"),
        "segment_ncut_grid" => {
            let (st, msg) = segment_with(|p| p.ncut_grid = 100_000);
            assert_eq!(st, EsStatus::LimitExceeded, "{msg}");
        }
        "segment_dilation" => {
            let (st, msg) = segment_with(|p| p.ncut_dilation_px = 4_000_000_000);
            assert_eq!(st, EsStatus::LimitExceeded, "{msg}");
        }
        "segment_crf_iters" => {
            let (st, msg) = segment_with(|p| {
                p.crf_enabled = true;
                p.crf.iterations = 1_000_000;
            });
            assert_eq!(st, EsStatus::LimitExceeded, "{msg}");
        }
        "segment_threads" => {
            let (st, msg) = segment_with(|p| p.threads = 100_000);
            assert_eq!(st, EsStatus::LimitExceeded, "{msg}");
        }
        "segment_ig_passes" => {
            let (st, msg) = segment_with(|p| {
                p.ig_steps = 100_000;
                p.nt_samples = 1000;
            });
            assert_eq!(st, EsStatus::LimitExceeded, "{msg}");
        }
        "load_nan" => {
            let p = f.put(
                "w.safetensors",
                &crafted_weights(|_| {}, Some(("cls_token", f32::NAN))),
            );
            expect(load_model(Path::new(&p)).0, EsStatus::Format, "cls_token");
        }
        "load_pos_grid" => {
            let p = f.put(
                "w.safetensors",
                &crafted_weights(
                    |h| {
                        h["__metadata__"] = serde_json::json!({"pos_grid": "9223372036854775840x2"})
                    },
                    None,
                ),
            );
            let st = load_model(Path::new(&p)).0;
            assert!(
                st != EsStatus::Ok && st != EsStatus::Panic,
                "{st:?}: {}",
                last_error()
            );
        }
        "load_zero_width" => {
            let p = f.put("w.safetensors", &zero_width_weights());
            let st = load_model(Path::new(&p)).0;
            assert!(
                st != EsStatus::Ok && st != EsStatus::Panic,
                "{st:?}: {}",
                last_error()
            );
        }
        "load_heads_zero" => {
            let p = f.put(
                "w.safetensors",
                &crafted_weights(
                    |h| h["__metadata__"] = serde_json::json!({"num_heads": "0"}),
                    None,
                ),
            );
            expect(load_model(Path::new(&p)).0, EsStatus::InvalidParam, "heads");
        }
        "limits_zero" => {
            let l = EsLimits {
                tokens: 0,
                ..explainseg_limits_default()
            };
            // SAFETY: a valid struct.
            expect(
                unsafe { explainseg_limits_set(&l) },
                EsStatus::InvalidParam,
                "tokens",
            );
        }
        "limits_lenient_7" => {
            let l = EsLimits {
                lenient_decoding: 7,
                ..explainseg_limits_default()
            };
            // SAFETY: a valid struct.
            expect(
                unsafe { explainseg_limits_set(&l) },
                EsStatus::InvalidParam,
                "lenient",
            );
        }
        "limits_null" => {
            // SAFETY: NULL is allowed and refused.
            expect(
                unsafe { explainseg_limits_set(null()) },
                EsStatus::NullArgument,
                "limits",
            );
        }
        "image_huge_png" => {
            let p = f.put("x.png", &png_header(2_147_483_647, 2_147_483_647, 8, 2));
            expect(
                load_image(Path::new(&p)).0,
                EsStatus::LimitExceeded,
                "image_pixels",
            );
        }
        "image_truncated_jpeg" => {
            let p = f.put("x.jpg", &truncated_jpeg());
            expect(load_image(Path::new(&p)).0, EsStatus::Decode, "JPEG");
        }
        "image_corrupt_jpeg" => {
            let p = f.put("x.jpg", &corrupt_jpeg());
            expect(load_image(Path::new(&p)).0, EsStatus::Decode, "JPEG");
        }
        "image_dicom_header" => {
            // Not a PNG/JPEG/TIFF: refused by signature, nothing allocated.
            let p = f.put("x.dcm", &huge_dicom());
            expect(
                load_image(Path::new(&p)).0,
                EsStatus::Decode,
                "unrecognised",
            );
        }
        "image_beyond_address_space" => {
            let l = EsLimits {
                image_pixels: 1 << 28,
                decoded_bytes: 1 << 34,
                ..explainseg_limits_default()
            };
            // SAFETY: a valid struct.
            assert_eq!(unsafe { explainseg_limits_set(&l) }, EsStatus::Ok);
            let p = f.put("rgba16.png", &png_header(16384, 16384, 16, 6));
            expect(
                load_image(Path::new(&p)).0,
                EsStatus::LimitExceeded,
                "cannot reserve",
            );
        }
        "png_checksums_strict_and_lenient" => {
            let clean = small_png();
            let want = explainseg::image::decode_image_bytes(&clean, Path::new("clean.png"))
                .unwrap()
                .pixels;
            for (name, bytes) in damaged_pngs(&clean) {
                let p = f.put(&format!("{name}.png"), &bytes);
                expect(load_image(Path::new(&p)).0, EsStatus::Decode, "PNG");
                set_lenient(true);
                let (st, img) = load_image(Path::new(&p));
                assert_eq!(st, EsStatus::Ok, "{name} lenient: {}", last_error());
                // SAFETY: a live handle from explainseg_image_load.
                unsafe { explainseg_image_free(img) };
                let got = explainseg::image::decode_image_bytes(&bytes, Path::new(&p)).unwrap();
                assert_eq!(got.pixels, want, "{name}: lenient pixels differ");
                set_lenient(false);
            }
        }
        "tiff_strict_and_lenient" => {
            let (clean, long_strip, cut) = damaged_tiffs();
            let want = explainseg::image::decode_image_bytes(&clean, Path::new("clean.tif"))
                .unwrap()
                .pixels;
            // A strip byte count past the end of the file: refused when strict;
            // lenient decoding reads what the image needs, as the tiff crate does.
            let p = f.put("long_strip.tif", &long_strip);
            expect(
                load_image(Path::new(&p)).0,
                EsStatus::Decode,
                "runs past the end",
            );
            set_lenient(true);
            let got = explainseg::image::decode_image_bytes(&long_strip, Path::new(&p)).unwrap();
            assert_eq!(got.pixels, want);
            // A file cut inside its directory stays an error either way.
            let p = f.put("cut.tif", &cut);
            for lenient in [true, false] {
                set_lenient(lenient);
                let (st, _) = load_image(Path::new(&p));
                assert_eq!(
                    st,
                    EsStatus::Decode,
                    "cut, lenient={lenient}: {}",
                    last_error()
                );
            }
        }
        "limits_lowered_tokens" => {
            let l = EsLimits {
                tokens: 10,
                ..explainseg_limits_default()
            };
            // SAFETY: a valid struct.
            assert_eq!(unsafe { explainseg_limits_set(&l) }, EsStatus::Ok);
            expect(classify_at(64), EsStatus::LimitExceeded, "tokens");
            let mut back = explainseg_limits_default();
            // SAFETY: writable struct.
            assert_eq!(unsafe { explainseg_limits_get(&mut back) }, EsStatus::Ok);
            assert_eq!(back.tokens, 10);
        }
        other => panic!("unknown case {other}"),
    }
    println!("HOSTILE-OK {case}");
}
