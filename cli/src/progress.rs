//! Progress bars on stderr for long operations (OPTIMIZE, VACUUM).
//!
//! The library reports phases through [`Progress`]; here each phase becomes one
//! indicatif bar (or a spinner when the phase has no total), cleared when the phase
//! ends so that only the command's summary stays on the screen. Bars are drawn only
//! for a person watching: stderr must be a terminal, `TERM` not `dumb` (indicatif
//! hides them then), and neither `--json` nor `--no-progress` given.

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use shoal_format::ops::progress::{Phase, Progress, Unit};

/// The bars of one command; at most one phase is open at a time.
pub struct Bars {
    current: Mutex<Option<ProgressBar>>,
    target: fn() -> ProgressDrawTarget,
}

/// Bars for a command, or `None` when nobody would see them.
pub fn bars(json: bool, no_progress: bool) -> Option<Arc<Bars>> {
    if json || no_progress || !std::io::stderr().is_terminal() {
        return None;
    }
    Some(Arc::new(Bars::new(ProgressDrawTarget::stderr)))
}

/// Sets `bars` on a builder when there are any.
pub fn attach<B>(
    builder: B,
    bars: &Option<Arc<Bars>>,
    with: impl FnOnce(B, Arc<dyn Progress>) -> B,
) -> B {
    match bars {
        Some(b) => with(builder, b.clone()),
        None => builder,
    }
}

impl Bars {
    fn new(target: fn() -> ProgressDrawTarget) -> Self {
        Bars {
            current: Mutex::new(None),
            target,
        }
    }

    fn with_current(&self, f: impl FnOnce(&mut Option<ProgressBar>)) {
        let mut guard = self.current.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut guard);
    }
}

fn message(phase: Phase) -> String {
    match phase {
        Phase::Rewrite { bins, files } => {
            format!("rewriting {files} file(s) in {bins} bin(s)")
        }
        other => other.label().to_string(),
    }
}

fn template(unit: Unit, total: Option<u64>) -> &'static str {
    match (unit, total) {
        (Unit::Bytes, Some(_)) => {
            "{msg} [{wide_bar}] {binary_bytes}/{binary_total_bytes} ({binary_bytes_per_sec}, eta {eta})"
        }
        (Unit::Files, Some(_)) => "{msg} [{wide_bar}] {human_pos}/{human_len} files ({eta})",
        (Unit::Bytes, None) => "{spinner} {msg}: {binary_bytes}",
        (Unit::Files, None) => "{spinner} {msg}: {human_pos} files",
        (Unit::None, _) => "{spinner} {msg}…",
    }
}

fn style(unit: Unit, total: Option<u64>) -> ProgressStyle {
    ProgressStyle::with_template(template(unit, total))
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

impl Progress for Bars {
    fn start(&self, phase: Phase, total: Option<u64>) {
        let bar = ProgressBar::with_draw_target(total, (self.target)());
        bar.set_style(style(phase.unit(), total));
        bar.set_message(message(phase));
        if total.is_none() {
            bar.enable_steady_tick(Duration::from_millis(120));
        }
        self.with_current(|current| {
            if let Some(old) = current.replace(bar) {
                old.finish_and_clear();
            }
        });
    }

    fn advance(&self, n: u64) {
        self.with_current(|current| {
            if let Some(bar) = current {
                bar.inc(n);
            }
        });
    }

    fn finish(&self) {
        self.with_current(|current| {
            if let Some(bar) = current.take() {
                bar.finish_and_clear();
            }
        });
    }
}

impl Drop for Bars {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_open_and_close_bars() {
        let bars = Bars::new(ProgressDrawTarget::hidden);
        bars.advance(3); // outside a phase: ignored
        bars.start(Phase::Rewrite { bins: 2, files: 7 }, Some(100));
        bars.advance(60);
        bars.advance(40);
        let pos = bars.current.lock().unwrap().as_ref().map(|b| b.position());
        assert_eq!(pos, Some(100));
        bars.finish();
        assert!(bars.current.lock().unwrap().is_none());
        bars.start(Phase::List, None);
        bars.advance(5);
        bars.start(Phase::Delete, Some(2)); // a new phase replaces an open one
        let len = bars
            .current
            .lock()
            .unwrap()
            .as_ref()
            .and_then(|b| b.length());
        assert_eq!(len, Some(2));
        bars.finish();
        bars.finish();
    }

    #[test]
    fn every_template_parses() {
        for unit in [Unit::Bytes, Unit::Files, Unit::None] {
            for total in [None, Some(1)] {
                let t = template(unit, total);
                assert!(ProgressStyle::with_template(t).is_ok(), "{t}");
            }
        }
    }
}
