//! What `eval` writes and reads back: the per-image rows (`per_image.csv`), the
//! run's configuration (`config.json`, with the fingerprint that resumption and
//! merging check), and the summary (`summary.json`, `summary.md`: mIoU and mean
//! Dice per method, the shape of the paper's Tables 1 and 2).

use std::collections::HashSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use explainseg::dataset::csv::{line, Table};
use explainseg::eval::{mean_scores, Scores};
use explainseg::pipeline::Variant;
use ndarray::Array2;

pub const ROWS_FILE: &str = "per_image.csv";
pub const CONFIG_FILE: &str = "config.json";
pub const SHARD_FILE: &str = "shard.json";
pub const HEADER: [&str; 7] = ["id", "variant", "iou", "dice", "class", "seconds", "label"];

/// The chance rows every table carries, so that a weak model cannot pass for a working
/// one. Each image scored gets one row of each (class 0, 0 seconds), scored with the
/// methods' IoU and Dice against the same ground truth. The centred ellipse is the
/// fixed shape that framing alone predicts (`explainseg::eval::centred_ellipse`).
pub const CHANCE: [Chance; 3] = [
    Chance {
        variant: "chance-empty",
        name: "chance: empty mask",
        mask: |h, w| Array2::from_elem((h, w), false),
    },
    Chance {
        variant: "chance-whole",
        name: "chance: whole-image mask",
        mask: |h, w| Array2::from_elem((h, w), true),
    },
    Chance {
        variant: "chance-ellipse",
        name: "chance: centred ellipse",
        mask: explainseg::eval::centred_ellipse,
    },
];

/// One chance row: its per-image `variant`, its name in the tables, and its mask
/// for an image of (height, width).
pub struct Chance {
    pub variant: &'static str,
    pub name: &'static str,
    pub mask: fn(usize, usize) -> Array2<bool>,
}

/// One image scored with one method.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub id: String,
    pub variant: String,
    pub iou: f64,
    pub dice: f64,
    pub class: usize,
    pub seconds: f64,
    pub label: String,
}

impl Row {
    fn fields(&self) -> [String; 7] {
        // `{}` prints the shortest text that reads back as the same f64.
        [
            self.id.clone(),
            self.variant.clone(),
            self.iou.to_string(),
            self.dice.to_string(),
            self.class.to_string(),
            format!("{:.4}", self.seconds),
            self.label.clone(),
        ]
    }
}

/// Reads the rows of a `per_image.csv`; an absent file has none. A last line
/// without its line break (a run killed while writing it) is ignored.
pub fn read_rows(path: &Path) -> Result<Vec<Row>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let complete = &text[..text.rfind('\n').map_or(0, |i| i + 1)];
    if complete.is_empty() {
        return Ok(Vec::new());
    }
    let t = Table::parse(complete, path)?;
    if t.header != HEADER {
        bail!(
            "{}: header `{}` is not explainseg's ({})",
            path.display(),
            t.header.join(","),
            HEADER.join(",")
        );
    }
    t.rows
        .iter()
        .map(|r| {
            let f = &r.fields;
            let num = |i: usize| -> Result<f64> {
                f[i].parse()
                    .map_err(|_| t.row_error(r, format!("`{}` is not a number", f[i])).into())
            };
            Ok(Row {
                id: f[0].clone(),
                variant: f[1].clone(),
                iou: num(2)?,
                dice: num(3)?,
                class: f[4]
                    .parse()
                    .map_err(|_| t.row_error(r, format!("class `{}` is not an index", f[4])))?,
                seconds: num(5)?,
                label: f[6].clone(),
            })
        })
        .collect()
}

/// Appends rows to `per_image.csv`, writing the header first if the file is new,
/// and flushing after every row so an interrupted run loses at most one.
pub struct RowWriter {
    file: std::fs::File,
    path: PathBuf,
}

impl RowWriter {
    pub fn open(path: &Path) -> Result<RowWriter> {
        let fresh = std::fs::metadata(path)
            .map(|m| m.len() == 0)
            .unwrap_or(true);
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open {}", path.display()))?;
        let mut w = RowWriter {
            file,
            path: path.to_path_buf(),
        };
        if fresh {
            w.write_line(&line(&HEADER))?;
        } else {
            w.drop_partial_line()?;
        }
        Ok(w)
    }

    /// Cuts a line left half-written by a killed run.
    fn drop_partial_line(&mut self) -> Result<()> {
        let text = std::fs::read(&self.path)?;
        if text.last() != Some(&b'\n') {
            let keep = text.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            self.file.set_len(keep as u64)?;
        }
        Ok(())
    }

    pub fn append(&mut self, row: &Row) -> Result<()> {
        self.write_line(&line(&row.fields()))
    }

    fn write_line(&mut self, text: &str) -> Result<()> {
        self.file
            .write_all(text.as_bytes())
            .and_then(|_| self.file.flush())
            .with_context(|| format!("cannot write {}", self.path.display()))
    }
}

/// Writes rows to a new `per_image.csv` (for merges).
pub fn write_rows(path: &Path, rows: &[Row]) -> Result<()> {
    let mut text = line(&HEADER);
    for r in rows {
        text.push_str(&line(&r.fields()));
    }
    Ok(explainseg::fsutil::write_bytes_atomic(
        path,
        text.as_bytes(),
    )?)
}

/// The paper's name for a method.
pub fn method_name(variant: &str) -> String {
    match variant.parse::<Variant>() {
        Ok(Variant::A) => "Variant A (fusion + morphology)".into(),
        Ok(Variant::B) => "Variant B (fusion + NCut)".into(),
        Ok(Variant::C) => "Variant C (XAI + morphology)".into(),
        Ok(Variant::XNCut) => "XNCut (XAI + NCut)".into(),
        Ok(Variant::TokenCut) => "TokenCut".into(),
        Ok(Variant::MaskCut) => "MaskCut".into(),
        Err(_) => variant.to_string(),
    }
}

/// Per-method means over all rows, methods in the paper's order (`methods`), and the
/// same for the chance rows (`chance`). Rows are summed in id order, so the numbers do
/// not depend on the order runs and shards wrote them.
pub fn summarize(rows: &[Row], header: &serde_json::Value) -> serde_json::Value {
    let mut out = header.clone();
    out["methods"] = means(
        rows,
        Variant::ALL
            .iter()
            .map(|v| (v.name(), method_name(v.name()))),
    )
    .into();
    out["chance"] = means(rows, CHANCE.iter().map(|c| (c.variant, c.name.to_string()))).into();
    let images: HashSet<&str> = rows.iter().map(|r| r.id.as_str()).collect();
    out["images"] = images.len().into();
    out
}

/// Mean scores of the rows of each `(variant, name)` that has rows.
fn means<'a>(
    rows: &[Row],
    variants: impl Iterator<Item = (&'a str, String)>,
) -> Vec<serde_json::Value> {
    let mut methods = Vec::new();
    for (v, name) in variants {
        let mut mine: Vec<&Row> = rows.iter().filter(|r| r.variant == v).collect();
        if mine.is_empty() {
            continue;
        }
        mine.sort_by(|a, b| a.id.cmp(&b.id));
        let scores: Vec<Scores> = mine
            .iter()
            .map(|r| Scores {
                iou: r.iou,
                dice: r.dice,
            })
            .collect();
        let m = mean_scores(&scores).expect("non-empty");
        let seconds = mine.iter().map(|r| r.seconds).sum::<f64>() / mine.len() as f64;
        methods.push(serde_json::json!({
            "variant": v,
            "method": name,
            "images": mine.len(),
            "miou": m.iou,
            "dice": m.dice,
            "seconds_per_image": seconds,
        }));
    }
    methods
}

/// The method rows, then the chance rows, of a summary.
pub fn table_rows(summary: &serde_json::Value) -> impl Iterator<Item = &serde_json::Value> {
    summary["methods"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(summary["chance"].as_array().into_iter().flatten())
}

/// The summary as a Markdown table (percentages, one decimal, as in the paper).
pub fn summary_markdown(summary: &serde_json::Value, grid_columns: Option<&[String]>) -> String {
    let mut md = format!(
        "# explainseg eval: {} ({} images)\n\n| method | images | mIoU % | Dice % | s/image |\n|---|---:|---:|---:|---:|\n",
        summary["dataset"].as_str().unwrap_or("?"),
        summary["images"]
    );
    for m in table_rows(summary) {
        md.push_str(&format!(
            "| {} | {} | {:.1} | {:.1} | {:.2} |\n",
            m["method"].as_str().unwrap_or("?"),
            m["images"],
            100.0 * m["miou"].as_f64().unwrap_or(f64::NAN),
            100.0 * m["dice"].as_f64().unwrap_or(f64::NAN),
            m["seconds_per_image"].as_f64().unwrap_or(f64::NAN),
        ));
    }
    if summary["chance"].as_array().is_some_and(|c| !c.is_empty()) {
        md.push_str("\nThe chance rows score the empty mask, the whole-image mask and a centred ellipse (semi-axes a third of the sides) on the same images: a method that localises must beat all three.\n");
    }
    md.push_str(&format!(
        "\nConfiguration fingerprint `{}` (see config.json); per-image rows in {ROWS_FILE}.\n",
        summary["fingerprint"].as_str().unwrap_or("?")
    ));
    if let Some(cols) = grid_columns {
        md.push_str(&format!(
            "\n![examples](grid.png)\n\ngrid.png columns: {}.\n",
            cols.join(", ")
        ));
    }
    md
}

/// Writes summary.json and summary.md into `dir`.
pub fn write_summary(
    dir: &Path,
    summary: &serde_json::Value,
    grid_columns: Option<&[String]>,
) -> Result<()> {
    let json = serde_json::to_string_pretty(summary)? + "\n";
    let md = summary_markdown(summary, grid_columns);
    // Both or neither: a summary.md never describes another run's summary.json.
    explainseg::fsutil::write_files_atomic(&[
        (&dir.join("summary.json"), json.as_bytes()),
        (&dir.join("summary.md"), md.as_bytes()),
    ])?;
    Ok(())
}

/// Reads a run's config.json.
pub fn read_config(dir: &Path) -> Result<serde_json::Value> {
    let path = dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("{}: not an eval output folder", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{}: not valid JSON", path.display()))
}

/// `shard.json`: which share of the images a folder holds and whether the run that
/// wrote it got through all of them, so `eval-merge` can name shards that are
/// missing, given twice or unfinished. Rewritten by every run into the folder.
#[derive(Debug, Clone, PartialEq)]
pub struct ShardManifest {
    /// K of `--shard K/N`.
    pub index: usize,
    /// N of `--shard K/N`.
    pub count: usize,
    /// Images assigned to the shard (before `--limit`).
    pub images: usize,
    /// The methods of the last run.
    pub methods: Vec<String>,
    /// Images left out by `--skip-empty` (they have no rows).
    pub empty_left_out: usize,
    /// The last run reached the shard's last image.
    pub complete: bool,
}

impl ShardManifest {
    pub fn write(&self, dir: &Path) -> Result<()> {
        let json = serde_json::json!({
            "shard": format!("{}/{}", self.index, self.count),
            "index": self.index,
            "count": self.count,
            "images": self.images,
            "methods": self.methods,
            "empty_left_out": self.empty_left_out,
            "complete": self.complete,
        });
        let path = dir.join(SHARD_FILE);
        let text = serde_json::to_string_pretty(&json)? + "\n";
        Ok(explainseg::fsutil::write_bytes_atomic(
            &path,
            text.as_bytes(),
        )?)
    }

    /// Reads `dir/shard.json`; a folder without one is named with what to do about it.
    pub fn read(dir: &Path) -> Result<ShardManifest> {
        let path = dir.join(SHARD_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
                "{} has no {SHARD_FILE} (it records K/N; older versions did not write it); rerun the same `eval --shard K/N --out {}` once to record it (done images are skipped)",
                dir.display(),
                dir.display()
            ),
            Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
        };
        let bad = |what: &str| anyhow::anyhow!("{}: {what}", path.display());
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(&format!("not valid JSON ({e})")))?;
        let uint = |key: &str| -> Result<usize> {
            v[key]
                .as_u64()
                .map(|n| n as usize)
                .ok_or_else(|| bad(&format!("`{key}` is missing or not a count")))
        };
        let m = ShardManifest {
            index: uint("index")?,
            count: uint("count")?,
            images: uint("images")?,
            methods: v["methods"]
                .as_array()
                .and_then(|a| a.iter().map(|m| m.as_str().map(str::to_string)).collect())
                .ok_or_else(|| bad("`methods` is missing or not a list of names"))?,
            empty_left_out: uint("empty_left_out")?,
            complete: v["complete"]
                .as_bool()
                .ok_or_else(|| bad("`complete` is missing or not true/false"))?,
        };
        if m.index == 0 || m.index > m.count {
            return Err(bad(&format!(
                "shard {}/{} is not K/N with 1 <= K <= N",
                m.index, m.count
            )));
        }
        Ok(m)
    }
}

pub use explainseg::hash::{fnv1a, FNV_OFFSET};

/// FNV-1a of a file's content.
pub fn file_hash(path: &Path) -> Result<u64> {
    use std::io::Read;
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let (mut h, mut buf) = (FNV_OFFSET, vec![0u8; 1 << 20]);
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok(h);
        }
        h = fnv1a(&buf[..n], h);
    }
}
