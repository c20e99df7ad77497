//! A live status line on stderr for long work (tables and bytes done, with an estimate
//! when the total is known): redrawn in place on a terminal, and nothing at all when
//! stderr is not one, so logs and pipes get only the lines that say what happened.

use std::io::{IsTerminal as _, Write as _};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often the line is redrawn at most.
const EVERY: Duration = Duration::from_millis(100);

pub(crate) struct StatusLine {
    on: bool,
    /// When it was last drawn; `None` while nothing is shown.
    drawn: Mutex<Option<Instant>>,
}

impl StatusLine {
    /// On when stderr is a terminal that can redraw a line (`TERM` not `dumb`).
    pub(crate) fn new() -> StatusLine {
        let dumb = std::env::var_os("TERM").is_some_and(|t| t == "dumb");
        StatusLine {
            on: !dumb && std::io::stderr().is_terminal(),
            drawn: Mutex::new(None),
        }
    }

    /// Redraws the line with `text` (built only when it will be drawn).
    pub(crate) fn show(&self, text: impl FnOnce() -> String) {
        if !self.on {
            return;
        }
        let mut drawn = self.drawn.lock().unwrap_or_else(|e| e.into_inner());
        if drawn.is_some_and(|at| at.elapsed() < EVERY) {
            return;
        }
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{}", text());
        let _ = err.flush();
        *drawn = Some(Instant::now());
    }

    /// Removes the line, before a line that stays is printed.
    pub(crate) fn clear(&self) {
        let mut drawn = self.drawn.lock().unwrap_or_else(|e| e.into_inner());
        if drawn.take().is_some() {
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        }
    }
}

/// `12.3 MiB`.
pub(crate) fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    match unit {
        0 => format!("{n} B"),
        _ => format!("{value:.1} {}", UNITS[unit]),
    }
}

/// `45%, about 12s left` for `done` of `total` after `elapsed`.
pub(crate) fn estimate(done: u64, total: u64, elapsed: Duration) -> String {
    if total == 0 || done == 0 {
        return String::new();
    }
    let fraction = (done as f64 / total as f64).min(1.0);
    let left = elapsed.as_secs_f64() * (1.0 - fraction) / fraction;
    format!("{:.0}%, about {left:.0}s left", fraction * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_estimates_read_like_a_person_wrote_them() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(3 * 1024 * 1024 / 2), "1.5 MiB");
        assert_eq!(
            estimate(25, 100, Duration::from_secs(10)),
            "25%, about 30s left"
        );
        assert_eq!(estimate(0, 100, Duration::from_secs(1)), "");
    }
}
