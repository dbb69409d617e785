//! Progress: a bar on a terminal; in a build log (stderr not a terminal), a short line every few
//! seconds once a run takes that long. Never with `--json`, `--quiet` or `--no-progress`.
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};

/// How often a line is printed when stderr is not a terminal
/// (`STOREPATCH_PROGRESS_INTERVAL_MS` overrides it, for tests).
const LOG_INTERVAL: Duration = Duration::from_secs(5);

pub(crate) struct Progress(Option<Display>);

enum Display {
    Bar(ProgressBar),
    Log(Log),
}

struct Log {
    message: &'static str,
    unit: &'static str,
    done: AtomicU64,
    start: Instant,
    interval: Duration,
    /// When the next line is due, in milliseconds since `start`.
    next_due: AtomicU64,
}

impl Progress {
    /// A counter of the entries done so far (their number is not known until the walk ends).
    pub(crate) fn new(message: &'static str, enabled: bool) -> Self {
        Self::counting(message, "entries", enabled)
    }

    /// A counter of things done so far, named `unit` ("files").
    pub(crate) fn counting(message: &'static str, unit: &'static str, enabled: bool) -> Self {
        if !enabled {
            return Self(None);
        }
        if !std::io::stderr().is_terminal() {
            let interval = std::env::var("STOREPATCH_PROGRESS_INTERVAL_MS")
                .ok()
                .and_then(|text| text.parse().ok())
                .map_or(LOG_INTERVAL, Duration::from_millis);
            return Self(Some(Display::Log(Log {
                message,
                unit,
                done: AtomicU64::new(0),
                start: Instant::now(),
                interval,
                next_due: AtomicU64::new(millis(interval)),
            })));
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(&format!(
            "{{msg:>10}} {{spinner}} {{human_pos}} {unit} ({{rate}})"
        )) {
            bar.set_style(style.with_key(
                "rate",
                |state: &ProgressState, out: &mut dyn std::fmt::Write| {
                    let _ = write!(out, "{}/s", thousands(rate(state.pos(), state.elapsed())));
                },
            ));
        }
        bar.set_message(message);
        Self(Some(Display::Bar(bar)))
    }

    pub(crate) fn inc(&self) {
        match &self.0 {
            None => {}
            Some(Display::Bar(bar)) => bar.inc(1),
            Some(Display::Log(log)) => log.inc(),
        }
    }

    pub(crate) fn finish(&self) {
        if let Some(Display::Bar(bar)) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

impl Log {
    #[expect(clippy::print_stderr, reason = "progress goes to stderr")]
    fn inc(&self) {
        let done = self.done.fetch_add(1, Ordering::Relaxed) + 1;
        // The clock is read after each entry (a few nanoseconds), so a line is due on time even
        // when entries are slow; of the threads that see it due, one prints it.
        let elapsed = self.start.elapsed();
        let due = self.next_due.load(Ordering::Relaxed);
        if millis(elapsed) < due
            || self
                .next_due
                .compare_exchange(
                    due,
                    millis(elapsed).saturating_add(millis(self.interval).max(1)),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            return;
        }
        eprintln!(
            "{}: {} {} so far ({}/s)",
            self.message,
            thousands(done),
            self.unit,
            thousands(rate(done, elapsed))
        );
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// Entries per second, rounded to a whole number.
fn rate(done: u64, elapsed: Duration) -> u64 {
    let millis = u64::try_from(elapsed.as_millis())
        .unwrap_or(u64::MAX)
        .max(1);
    done.saturating_mul(1000) / millis
}

/// `1234567` as `1,234,567`.
fn thousands(number: u64) -> String {
    let digits = number.to_string();
    let mut text = String::with_capacity(digits.len() + digits.len() / 3);
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            text.push(',');
        }
        text.push(digit);
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_whole_numbers_with_separators() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(8_831), "8,831");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(rate(8_831, Duration::from_secs(1)), 8_831);
        assert_eq!(rate(17_663, Duration::from_millis(2_001)), 8_827);
        assert_eq!(rate(5, Duration::ZERO), 5_000);
    }
}
