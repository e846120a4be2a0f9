//! How the CLI talks: human text or one JSON object, progress bars on stderr.

use std::io::Write;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Output mode chosen by --quiet / --json.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub quiet: bool,
    pub json: bool,
}

impl Output {
    /// Prints a command's result: `text` normally, `json` with --json.
    pub fn result(&self, text: &str, json: serde_json::Value) {
        let line = if self.json {
            json.to_string()
        } else if !self.quiet {
            text.to_string()
        } else {
            return;
        };
        // Not println!: it panics when the reader has gone (`explainseg … | head`),
        // which is the reader's choice, not an error.
        if let Err(e) = writeln!(std::io::stdout().lock(), "{line}") {
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                eprintln!("error: cannot write the result: {e}");
            }
        }
    }
}

/// A progress bar with ETA on stderr; hidden for --quiet/--json or without a terminal.
pub fn progress_bar(out: &Output, total: u64, what: &str) -> ProgressBar {
    if out.quiet || out.json {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({eta} left)")
            .expect("static template")
            .progress_chars("=> "),
    );
    bar.set_message(what.to_string());
    bar
}

/// The per-epoch bar of `train` and `pretrain`: one bar per epoch, ticked per
/// optimiser step with the loss, cleared at the epoch's end (whose summary line the
/// command prints itself).
pub struct EpochBar<'a> {
    out: &'a Output,
    bar: Option<ProgressBar>,
}

impl<'a> EpochBar<'a> {
    pub fn new(out: &'a Output) -> Self {
        EpochBar { out, bar: None }
    }

    pub fn start(&mut self, epoch: usize, epochs: usize, steps: usize) {
        self.bar = Some(progress_bar(
            self.out,
            steps as u64,
            &format!("epoch {}/{epochs}", epoch + 1),
        ));
    }

    pub fn step(&self, loss: f32) {
        if let Some(b) = &self.bar {
            b.inc(1);
            b.set_message(format!("loss {loss:.4}"));
        }
    }

    pub fn finish(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

/// A spinner with elapsed time on stderr, for work of unknown length; hidden like
/// [`progress_bar`].
pub fn spinner(out: &Output, what: &str) -> ProgressBar {
    if out.quiet || out.json {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg} ({elapsed})").expect("static template"),
    );
    bar.set_message(what.to_string());
    bar.enable_steady_tick(std::time::Duration::from_millis(120));
    bar
}
