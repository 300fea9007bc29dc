//! Progress of long sweeps: a bar in a terminal, plain periodic lines elsewhere (notebooks,
//! logs), nothing when quiet.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

/// Reports how far a sweep has got.
pub struct Progress {
    bar: Option<ProgressBar>,
    label: String,
    total: u64,
    done: u64,
    start: Instant,
    last: Instant,
    quiet: bool,
}

impl Progress {
    /// A reporter for `total` steps; `quiet` prints nothing.
    pub fn new(label: &str, total: usize, quiet: bool) -> Self {
        let bar = (!quiet && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::new(total as u64);
            if let Ok(style) =
                ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} ({elapsed}, eta {eta})")
            {
                b.set_style(style.progress_chars("=> "));
            }
            b.set_message(label.to_string());
            b
        });
        let now = Instant::now();
        Progress {
            bar,
            label: label.into(),
            total: total as u64,
            done: 0,
            start: now,
            last: now,
            quiet,
        }
    }

    /// Marks `n` more steps done.
    pub fn inc(&mut self, n: usize) {
        self.done += n as u64;
        if let Some(b) = &self.bar {
            b.inc(n as u64);
        } else if !self.quiet
            && self.last.elapsed() >= Duration::from_secs(2)
            && self.done < self.total
        {
            self.last = Instant::now();
            eprintln!(
                "{}: {}/{} ({:.1} s)",
                self.label,
                self.done,
                self.total,
                self.start.elapsed().as_secs_f64()
            );
        }
    }

    /// Ends the report.
    pub fn finish(self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
        if !self.quiet && self.start.elapsed() >= Duration::from_secs(2) {
            eprintln!(
                "{}: {} runs in {:.1} s",
                self.label,
                self.total,
                self.start.elapsed().as_secs_f64()
            );
        }
    }
}
