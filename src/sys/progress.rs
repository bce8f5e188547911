//! Progress of long steps: an indicatif spinner per step on a terminal, plain lines when
//! stderr is not one, nothing under `--json`.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// How progress is shown for this run.
#[derive(Clone)]
pub struct Progress {
    mode: Mode,
}

#[derive(Clone)]
enum Mode {
    Quiet,
    Plain,
    Bars(MultiProgress),
}

impl Progress {
    /// Spinners on a terminal, plain lines otherwise, nothing when `quiet`.
    pub fn new(quiet: bool) -> Self {
        let mode = if quiet {
            Mode::Quiet
        } else if std::io::stderr().is_terminal() {
            Mode::Bars(MultiProgress::new())
        } else {
            Mode::Plain
        };
        Self { mode }
    }

    /// Starts a step; `who` prefixes it (the machine it is about).
    pub fn step(&self, who: &str, what: &str) -> Step {
        let bar = match &self.mode {
            Mode::Quiet => None,
            Mode::Plain => {
                eprintln!("[{who}] {what} ...");
                None
            }
            Mode::Bars(multi) => {
                let bar = multi.add(ProgressBar::new_spinner());
                bar.set_style(
                    ProgressStyle::with_template("{spinner:.cyan} [{prefix}] {msg} ({elapsed})").expect("template"),
                );
                bar.set_prefix(who.to_string());
                bar.set_message(what.to_string());
                bar.enable_steady_tick(Duration::from_millis(120));
                Some(bar)
            }
        };
        Step {
            who: who.into(),
            what: what.into(),
            started: Instant::now(),
            bar,
            quiet: matches!(self.mode, Mode::Quiet),
        }
    }
}

/// One step under way. Dropping it without `done` marks it failed.
pub struct Step {
    who: String,
    what: String,
    started: Instant,
    bar: Option<ProgressBar>,
    quiet: bool,
}

impl Step {
    /// Ends the step successfully, with an optional summary.
    pub fn done(mut self, summary: &str) {
        let line = format!(
            "[{}] {}: {}{:.1}s",
            self.who,
            self.what,
            if summary.is_empty() {
                String::new()
            } else {
                format!("{summary}, ")
            },
            self.started.elapsed().as_secs_f64()
        );
        self.finish(&format!("✓ {line}"), &line);
    }

    /// Shows `note` on the step's line while it runs (a spinner's message; a plain line
    /// otherwise), from any thread.
    pub fn notifier(&self) -> impl Fn(&str) + Send + Sync + 'static {
        let (who, what, bar, quiet) = (self.who.clone(), self.what.clone(), self.bar.clone(), self.quiet);
        move |note: &str| match &bar {
            Some(bar) => bar.set_message(format!("{what}: {note}")),
            None if !quiet => eprintln!("[{who}] {what}: {note}"),
            None => {}
        }
    }

    fn finish(&mut self, bar_line: &str, plain_line: &str) {
        match self.bar.take() {
            Some(bar) => bar.finish_with_message(bar_line.to_string()),
            None if !self.quiet => eprintln!("{plain_line}"),
            None => {}
        }
        self.quiet = true;
    }
}

impl Drop for Step {
    fn drop(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.abandon_with_message(format!("✗ [{}] {} failed", self.who, self.what));
        } else if !self.quiet {
            eprintln!("[{}] {}: failed", self.who, self.what);
        }
    }
}
