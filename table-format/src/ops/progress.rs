//! Progress of long operations (OPTIMIZE, VACUUM), reported to whoever asks.
//!
//! The library draws nothing: an operation reports phases and their advance to a
//! [`Progress`] the caller sets with the builder's `with_progress`; the CLI turns them
//! into progress bars. Unset, an operation pays one `Option` check per bin or file.
//!
//! ```
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use shoal_format::ops::progress::{Phase, Progress};
//!
//! #[derive(Default)]
//! struct Count(AtomicU64);
//! impl Progress for Count {
//!     fn start(&self, phase: Phase, total: Option<u64>) {
//!         eprintln!("{} ({total:?} {})", phase.label(), phase.unit().name());
//!     }
//!     fn advance(&self, n: u64) {
//!         self.0.fetch_add(n, Ordering::Relaxed);
//!     }
//!     fn finish(&self) {}
//! }
//! ```

use std::fmt;
use std::sync::Arc;

/// A stretch of an operation's work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Phase {
    /// OPTIMIZE: planning is done and the planned bins are being rewritten; the total
    /// is their input bytes, and each bin advances by its input bytes once written.
    Rewrite { bins: usize, files: usize },
    /// OPTIMIZE: committing the rewritten files (no total).
    Commit,
    /// VACUUM: listing the table's files (no total); advances per file seen.
    List,
    /// VACUUM: deleting; the total is the files to delete, advancing per file deleted.
    Delete,
}

/// What a phase counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    Bytes,
    Files,
    /// A phase without a count.
    None,
}

impl Unit {
    pub fn name(self) -> &'static str {
        match self {
            Unit::Bytes => "bytes",
            Unit::Files => "files",
            Unit::None => "",
        }
    }
}

impl Phase {
    /// A short human name: `rewriting`, `committing`, `listing`, `deleting`.
    pub fn label(&self) -> &'static str {
        match self {
            Phase::Rewrite { .. } => "rewriting",
            Phase::Commit => "committing",
            Phase::List => "listing",
            Phase::Delete => "deleting",
        }
    }

    pub fn unit(&self) -> Unit {
        match self {
            Phase::Rewrite { .. } => Unit::Bytes,
            Phase::Commit => Unit::None,
            Phase::List | Phase::Delete => Unit::Files,
        }
    }
}

/// Receives an operation's progress: `start` opens a phase, `advance` counts work
/// done in it (in the phase's [`Unit`]), `finish` closes it. Phases do not nest; every
/// `start` is followed by one `finish`, also when the operation fails midway.
pub trait Progress: Send + Sync {
    fn start(&self, phase: Phase, total: Option<u64>);
    fn advance(&self, n: u64);
    fn finish(&self);
}

/// A builder's optional [`Progress`] (cheap to clone; prints as set or not).
#[derive(Clone, Default)]
pub(crate) struct Reporter(Option<Arc<dyn Progress>>);

impl fmt::Debug for Reporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Reporter(set)"
        } else {
            "Reporter(none)"
        })
    }
}

impl Reporter {
    pub(crate) fn new(progress: Arc<dyn Progress>) -> Self {
        Reporter(Some(progress))
    }

    /// Opens a phase, closed when the returned guard drops (error paths included).
    pub(crate) fn phase(&self, phase: Phase, total: Option<u64>) -> PhaseGuard<'_> {
        if let Some(p) = &self.0 {
            p.start(phase, total);
        }
        PhaseGuard(self.0.as_deref())
    }
}

/// An open phase; [`Progress::finish`] on drop.
pub(crate) struct PhaseGuard<'a>(Option<&'a dyn Progress>);

impl PhaseGuard<'_> {
    pub(crate) fn advance(&self, n: u64) {
        if let Some(p) = self.0 {
            p.advance(n);
        }
    }
}

impl Drop for PhaseGuard<'_> {
    fn drop(&mut self) {
        if let Some(p) = self.0 {
            p.finish();
        }
    }
}

/// Records every event, for tests of the operations' reporting.
#[cfg(test)]
pub(crate) mod recording {
    use std::sync::Mutex;

    use super::{Phase, Progress};

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub(crate) enum Event {
        Start(Phase, Option<u64>),
        Advance(u64),
        Finish,
    }

    #[derive(Default)]
    pub(crate) struct Recorder(pub(crate) Mutex<Vec<Event>>);

    impl Recorder {
        pub(crate) fn events(&self) -> Vec<Event> {
            self.0.lock().map(|e| e.clone()).unwrap_or_default()
        }

        /// Per phase started: (phase, total, sum of its advances, finished).
        pub(crate) fn phases(&self) -> Vec<(Phase, Option<u64>, u64, bool)> {
            let mut out: Vec<(Phase, Option<u64>, u64, bool)> = Vec::new();
            for e in self.events() {
                match e {
                    Event::Start(p, t) => out.push((p, t, 0, false)),
                    Event::Advance(n) => {
                        let last = out.last_mut().expect("advance outside a phase");
                        assert!(!last.3, "advance after finish");
                        last.2 += n;
                    }
                    Event::Finish => {
                        let last = out.last_mut().expect("finish outside a phase");
                        assert!(!last.3, "finished twice");
                        last.3 = true;
                    }
                }
            }
            out
        }
    }

    impl Progress for Recorder {
        fn start(&self, phase: Phase, total: Option<u64>) {
            self.0.lock().unwrap().push(Event::Start(phase, total));
        }
        fn advance(&self, n: u64) {
            self.0.lock().unwrap().push(Event::Advance(n));
        }
        fn finish(&self) {
            self.0.lock().unwrap().push(Event::Finish);
        }
    }
}
