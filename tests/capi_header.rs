//! `include/explainseg.h` must equal a fresh cbindgen run over the crate.
//! Regenerate with `EXPLAINSEG_BLESS=1 cargo test --release --test capi_header`.

use std::path::Path;

/// The header as cbindgen writes it from `cbindgen.toml`, plus version macros taken
/// from Cargo.toml so that they can never drift.
fn generate() -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut config = cbindgen::Config::from_file(root.join("cbindgen.toml"))
        .expect("cbindgen.toml is readable and valid");
    config.after_includes = Some(format!(
        "\n#define EXPLAINSEG_VERSION_MAJOR {}\n#define EXPLAINSEG_VERSION_MINOR {}\n#define EXPLAINSEG_VERSION_PATCH {}\n#define EXPLAINSEG_VERSION_STRING \"{}\"",
        env!("CARGO_PKG_VERSION_MAJOR"),
        env!("CARGO_PKG_VERSION_MINOR"),
        env!("CARGO_PKG_VERSION_PATCH"),
        env!("CARGO_PKG_VERSION"),
    ));
    let mut out = Vec::new();
    cbindgen::Builder::new()
        .with_crate(root)
        .with_config(config)
        .generate()
        .expect("cbindgen parses the crate")
        .write(&mut out);
    String::from_utf8(out).expect("cbindgen writes UTF-8")
}

#[test]
fn committed_header_is_current() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("include/explainseg.h");
    let fresh = generate();
    if std::env::var_os("EXPLAINSEG_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &fresh).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != fresh {
        let first_diff = committed
            .lines()
            .zip(fresh.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(committed.lines().count().min(fresh.lines().count()));
        panic!(
            "{} is out of date with src/capi/ (first difference at line {}).\n\
             Regenerate it with:\n    EXPLAINSEG_BLESS=1 cargo test --release --test capi_header",
            path.display(),
            first_diff + 1
        );
    }
}

#[test]
fn header_has_the_promised_shape() {
    let h = generate();
    for needle in [
        "#ifndef EXPLAINSEG_H",
        "extern \"C\" {",
        "typedef struct EsModel EsModel;",
        "ES_STATUS_OK = 0",
        "ES_STATUS_BUFFER_TOO_SMALL = 3",
        "EsSegmentParams explainseg_segment_default_params(void);",
        "#define EXPLAINSEG_VERSION_MAJOR",
        "Thread safety:",
    ] {
        assert!(h.contains(needle), "header lacks `{needle}`");
    }
}

/// The committed header compiles as strict C99 and as C++11 (where a compiler exists).
#[test]
fn header_compiles_as_c_and_cpp() {
    let include = Path::new(env!("CARGO_MANIFEST_DIR")).join("include");
    let dir = tempfile::tempdir().unwrap();
    let src = "#include <explainseg.h>\nint main(void) { EsSegmentParams p = explainseg_segment_default_params(); return (int)p.variant; }\n";
    for (compiler, file, std) in [("cc", "h.c", "-std=c99"), ("c++", "h.cpp", "-std=c++11")] {
        let path = dir.path().join(file);
        std::fs::write(&path, src).unwrap();
        let out = match std::process::Command::new(compiler)
            .args([
                std,
                "-Wall",
                "-Wextra",
                "-pedantic",
                "-Werror",
                "-fsyntax-only",
                "-I",
            ])
            .arg(&include)
            .arg(&path)
            .output()
        {
            Ok(out) => out,
            Err(e) => {
                eprintln!("skipped: no `{compiler}` to compile the header with ({e})");
                continue;
            }
        };
        assert!(
            out.status.success(),
            "{compiler} {std} rejects include/explainseg.h:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
