//! The progress bar: only on a terminal, never with `--json` or `--quiet`.
use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub(crate) struct Progress(Option<ProgressBar>);

impl Progress {
    /// A bar towards `length`, or a counter when the length is not known yet.
    pub(crate) fn new(length: Option<u64>, message: &'static str, enabled: bool) -> Self {
        if !enabled || !std::io::stderr().is_terminal() {
            return Self(None);
        }
        let bar = ProgressBar::with_draw_target(length, ProgressDrawTarget::stderr());
        let template = if length.is_some() {
            "{msg:>10} [{bar:40}] {pos}/{len} ({eta})"
        } else {
            "{msg:>10} {spinner} {pos} entries ({per_sec})"
        };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(message);
        Self(Some(bar))
    }

    pub(crate) fn inc(&self) {
        if let Some(bar) = &self.0 {
            bar.inc(1);
        }
    }

    pub(crate) fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}
