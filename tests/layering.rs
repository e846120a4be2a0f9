//! Keeps the crate's layer order (docs/architecture.md):
//!
//! error, limits, fsutil, npy, rng, hash → image, model, ig, eval → backend → attr
//! → post, render → pipeline → dataset, train, synth → capi, fuzzing
//!
//! A module may import from its own layer or below, never from above; and no two
//! modules (files) import each other, except a parent and its own children.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

const LAYERS: &[&[&str]] = &[
    &[
        "error",
        "limits",
        "fsutil",
        "npy",
        "npy_header",
        "rng",
        "hash",
    ],
    &["image", "model", "ig", "eval"],
    &["backend"],
    &["attr"],
    &["post", "render"],
    &["pipeline"],
    &["dataset", "train", "synth"],
    &["capi", "fuzzing"],
];

fn layer_of(top: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&top))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The module path of a file: `src/backend/cuda/device.rs` → backend::cuda::device,
/// `src/backend/mod.rs` → backend.
fn module_of(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// The code of a file without comments and string literals (which may mention
/// paths that are not imports).
fn code_only(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let b = text.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'/' && b.get(i + 1) == Some(&b'/') {
            while i < b.len() && b[i] != b'\n' {
                i += 1;
            }
        } else if b[i] == b'/' && b.get(i + 1) == Some(&b'*') {
            i += 2;
            while i + 1 < b.len() && !(b[i] == b'*' && b[i + 1] == b'/') {
                i += 1;
            }
            i += 2;
        } else if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
        } else {
            out.push(b[i] as char);
            i += 1;
        }
    }
    out
}

/// `crate::a::b::c` and `super::x` paths in `code`, as module paths.
fn referenced_paths(code: &str, module: &[String], is_mod_rs: bool) -> Vec<Vec<String>> {
    let ident = |s: &str| -> Vec<String> {
        let mut parts = Vec::new();
        let mut rest = s;
        loop {
            let end = rest
                .find(|c: char| !(c.is_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            if end == 0 {
                break;
            }
            parts.push(rest[..end].to_string());
            rest = &rest[end..];
            match rest.strip_prefix("::") {
                Some(r) => rest = r,
                None => break,
            }
        }
        parts
    };
    let mut out = Vec::new();
    for (pos, _) in code.match_indices("crate::") {
        let before = code[..pos].chars().last();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        out.push(ident(&code[pos + "crate::".len()..]));
    }
    for (pos, _) in code.match_indices("super::") {
        let before = code[..pos].chars().last();
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        // `super` of a mod.rs is its parent's parent only from inside it; files
        // are modules themselves, so `super` is the enclosing module.
        let mut base: Vec<String> = module.to_vec();
        if !is_mod_rs || !base.is_empty() {
            base.pop();
        }
        let mut rest = &code[pos + "super::".len()..];
        while let Some(r) = rest.strip_prefix("super::") {
            base.pop();
            rest = r;
        }
        base.extend(ident(rest));
        out.push(base);
    }
    out
}

#[test]
fn modules_import_only_from_their_layer_or_below_and_never_each_other() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.retain(|f| !f.starts_with(src.join("bin")) && f != &src.join("lib.rs"));
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_of(&src, f)).collect();
    let resolve = |path: &[String]| -> Option<Vec<String>> {
        (1..=path.len())
            .rev()
            .map(|n| path[..n].to_vec())
            .find(|p| modules.contains(p))
    };

    let mut upward = Vec::new();
    let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for file in &files {
        let module = module_of(&src, file);
        let top = &module[0];
        let Some(own) = layer_of(top) else {
            panic!(
                "{}: module `{top}` has no layer; add it to LAYERS and docs/architecture.md",
                file.display()
            );
        };
        let code = code_only(&std::fs::read_to_string(file).unwrap());
        let is_mod_rs = file.file_name().is_some_and(|n| n == "mod.rs");
        for path in referenced_paths(&code, &module, is_mod_rs) {
            let Some(first) = path.first() else { continue };
            if let Some(theirs) = layer_of(first) {
                if theirs > own {
                    upward.push(format!(
                        "{} (layer {own}) imports {} (layer {theirs})",
                        file.display(),
                        path.join("::")
                    ));
                }
            }
            if let Some(target) = resolve(&path) {
                if target != module {
                    edges.entry(module.clone()).or_default().insert(target);
                }
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports from a layer above:\n{}",
        upward.join("\n")
    );

    let mut mutual = Vec::new();
    for (a, targets) in &edges {
        for b in targets {
            let related = a.starts_with(b) || b.starts_with(a);
            if a < b && !related && edges.get(b).is_some_and(|t| t.contains(a)) {
                mutual.push(format!("{} ↔ {}", a.join("::"), b.join("::")));
            }
        }
    }
    assert!(
        mutual.is_empty(),
        "modules that import each other:\n{}",
        mutual.join("\n")
    );
}

#[test]
fn the_checker_sees_upward_and_mutual_imports() {
    // A `post` file importing `crate::pipeline` and a sibling via `super::`.
    let module = vec!["post".to_string(), "maskcut".to_string()];
    let code = code_only("use crate::pipeline::Variant; // crate::attr in a comment\nuse super::ncut::x; let s = \"crate::capi\";");
    let paths = referenced_paths(&code, &module, false);
    assert_eq!(
        paths,
        vec![
            vec!["pipeline".to_string(), "Variant".to_string()],
            vec!["post".to_string(), "ncut".to_string(), "x".to_string()],
        ]
    );
    assert!(layer_of("pipeline").unwrap() > layer_of("post").unwrap());
}
