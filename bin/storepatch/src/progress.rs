//! The progress bar: only on a terminal, never with `--json` or `--quiet`.
use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub(crate) struct Progress(Option<ProgressBar>);

impl Progress {
    /// A counter of the entries done so far (their number is not known until the walk ends).
    pub(crate) fn new(message: &'static str, enabled: bool) -> Self {
        if !enabled || !std::io::stderr().is_terminal() {
            return Self(None);
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        if let Ok(style) =
            ProgressStyle::with_template("{msg:>10} {spinner} {pos} entries ({per_sec})")
        {
            bar.set_style(style);
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
