//! Progress of long work: a bar with rate and ETA on a terminal (indicatif), plain lines
//! otherwise (a log file or a pipe gets one line per step, no control characters).

use std::io::IsTerminal;

/// A progress report over `total` units.
#[derive(Debug)]
pub struct Progress {
    bar: Option<indicatif::ProgressBar>,
    what: &'static str,
    total: u64,
}

impl Progress {
    /// Starts a report of `total` units of `what` (e.g. "messages").
    #[must_use]
    pub fn new(total: u64, what: &'static str) -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let b = indicatif::ProgressBar::new(total);
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} {msg} ({per_sec}, ETA {eta})",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            b.set_message(what);
            b
        });
        Self { bar, what, total }
    }

    /// `done` units are done.
    pub fn set(&self, done: u64) {
        match &self.bar {
            Some(b) => b.set_position(done),
            None => eprintln!("{done}/{} {}", self.total, self.what),
        }
    }

    /// The total changed (a task that learns its size as it goes).
    pub fn set_total(&mut self, total: u64) {
        self.total = total;
        if let Some(b) = &self.bar {
            b.set_length(total);
        }
    }

    /// Ends the report.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish();
        }
    }
}
