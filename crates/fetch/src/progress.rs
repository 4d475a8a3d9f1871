//! What a fetch shows while it runs: one progress bar per file plus a total on a terminal, one
//! line per finished file otherwise (logs stay readable), or JSON events (one object per line on
//! stdout) for CI.
//!
//! The downloads only send events ([`FileProgress`] is a cheap handle on a channel); one consumer
//! ([`Display::run`]) owns the indicatif bars and everything written to the terminal, so lines of
//! concurrent files never interleave.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::json;
use tokio::sync::mpsc;

/// How progress is shown.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Bars,
    Lines,
    Json,
}

impl Mode {
    /// Bars on a terminal, lines otherwise, JSON when asked.
    pub fn pick(json: bool) -> Self {
        use std::io::IsTerminal;
        if json {
            Mode::Json
        } else if std::io::stdout().is_terminal() {
            Mode::Bars
        } else {
            Mode::Lines
        }
    }
}

/// What the downloads tell the display.
#[derive(Debug)]
enum Event {
    Start {
        id: usize,
        artifact: String,
        file: String,
        size: u64,
    },
    Advance {
        id: usize,
        n: u64,
    },
    Restart {
        id: usize,
    },
    /// A note of one file (`Some`) or of the whole fetch.
    Note {
        id: Option<usize>,
        text: String,
    },
    Finish {
        id: usize,
        state: String,
        detail: String,
    },
}

/// The sending side of one fetch's progress: cloned into every download.
#[derive(Clone)]
pub struct Progress {
    tx: mpsc::UnboundedSender<Event>,
    next_id: Arc<AtomicUsize>,
}

/// The receiving side: owns the bars and the output.
pub struct Display {
    mode: Mode,
    multi: MultiProgress,
    total: Option<ProgressBar>,
    rx: mpsc::UnboundedReceiver<Event>,
    files: HashMap<usize, FileView>,
}

/// What the display knows of one file.
struct FileView {
    bar: Option<ProgressBar>,
    label: String,
    artifact: String,
    file: String,
    /// Bytes counted so far, so a restart can take them back off the total.
    done: u64,
}

fn bytes_style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .expect("a valid template")
        .progress_chars("=> ")
}

impl Progress {
    /// `total_bytes`: everything this fetch may download (the total bar's length). The display
    /// shows nothing until [`Display::run`] consumes its events.
    pub fn new(mode: Mode, total_bytes: u64) -> (Self, Display) {
        let multi = MultiProgress::with_draw_target(if mode == Mode::Bars {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        let total = (mode == Mode::Bars).then(|| {
            let bar = multi.add(ProgressBar::new(total_bytes));
            bar.set_style(bytes_style(
                "total {bar:30} {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}",
            ));
            bar
        });
        let (tx, rx) = mpsc::unbounded_channel();
        let progress = Progress {
            tx,
            next_id: Arc::new(AtomicUsize::new(0)),
        };
        let display = Display {
            mode,
            multi,
            total,
            rx,
            files: HashMap::new(),
        };
        (progress, display)
    }

    /// A file starts: its bar (terminal) or its start event (JSON).
    pub fn file(&self, artifact: &str, file: &str, size: u64) -> FileProgress {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.send(Event::Start {
            id,
            artifact: artifact.to_string(),
            file: file.to_string(),
            size,
        });
        FileProgress {
            progress: self.clone(),
            id,
        }
    }

    /// A message outside any file's bar (stderr, or a JSON `note` event).
    pub fn message(&self, text: &str) {
        self.send(Event::Note {
            id: None,
            text: text.to_string(),
        });
    }

    fn send(&self, event: Event) {
        // The display only goes away after every sender did: a failed send cannot happen while
        // a fetch runs, and there is nobody left to show the event to afterwards.
        let _ = self.tx.send(event);
    }
}

impl Display {
    /// Shows events until every [`Progress`] and [`FileProgress`] is dropped, then removes the
    /// bars. Blocking: run it on a thread of its own (`spawn_blocking`).
    pub fn run(mut self) {
        while let Some(event) = self.rx.blocking_recv() {
            self.show(event);
        }
        if let Some(total) = &self.total {
            total.finish_and_clear();
        }
        let _ = self.multi.clear();
    }

    fn show(&mut self, event: Event) {
        match event {
            Event::Start {
                id,
                artifact,
                file,
                size,
            } => {
                let label = format!("{artifact}/{file}");
                let bar = (self.mode == Mode::Bars).then(|| {
                    let bar = self.multi.insert_from_back(1, ProgressBar::new(size));
                    bar.set_style(bytes_style("{msg:40!} {bar:30} {bytes}/{total_bytes}"));
                    bar.set_message(label.clone());
                    bar
                });
                if self.mode == Mode::Json {
                    emit_json(
                        json!({"event": "start", "artifact": artifact, "file": file, "size": size}),
                    );
                }
                self.files.insert(
                    id,
                    FileView {
                        bar,
                        label,
                        artifact,
                        file,
                        done: 0,
                    },
                );
            }
            Event::Advance { id, n } => {
                let Some(view) = self.files.get_mut(&id) else {
                    return;
                };
                view.done += n;
                if let Some(bar) = &view.bar {
                    bar.inc(n);
                }
                if let Some(total) = &self.total {
                    total.inc(n);
                }
            }
            Event::Restart { id } => {
                let Some(view) = self.files.get_mut(&id) else {
                    return;
                };
                let done = std::mem::take(&mut view.done);
                if let Some(bar) = &view.bar {
                    bar.set_position(0);
                }
                if let Some(total) = &self.total {
                    total.set_position(total.position().saturating_sub(done));
                }
            }
            Event::Note { id: None, text } => self.message(&text),
            Event::Note { id: Some(id), text } => {
                let Some(view) = self.files.get(&id) else {
                    return;
                };
                match self.mode {
                    Mode::Json => emit_json(json!({
                        "event": "note", "artifact": view.artifact, "file": view.file,
                        "message": text
                    })),
                    _ => self.message(&format!("{}: {text}", view.label)),
                }
            }
            Event::Finish { id, state, detail } => {
                let Some(view) = self.files.remove(&id) else {
                    return;
                };
                match self.mode {
                    Mode::Bars => {
                        if let Some(bar) = &view.bar {
                            bar.finish_and_clear();
                        }
                        let _ = self.multi.println(format!(
                            "{state:>9} {}{}",
                            view.label,
                            suffix(&detail)
                        ));
                    }
                    Mode::Lines => {
                        let mut out = std::io::stdout().lock();
                        let _ = writeln!(out, "{state:>9} {}{}", view.label, suffix(&detail));
                    }
                    Mode::Json => emit_json(json!({
                        "event": "done", "artifact": view.artifact, "file": view.file,
                        "state": state, "detail": detail
                    })),
                }
            }
        }
    }

    fn message(&self, text: &str) {
        match self.mode {
            Mode::Bars => {
                let _ = self.multi.println(text);
            }
            Mode::Lines => eprintln!("{text}"),
            Mode::Json => emit_json(json!({"event": "note", "message": text})),
        }
    }
}

fn emit_json(value: serde_json::Value) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{value}");
    let _ = out.flush();
}

/// The progress of one file; bytes it counts also move the total. Cheap to clone and `Send`:
/// the blocking transfers own a copy.
#[derive(Clone)]
pub struct FileProgress {
    progress: Progress,
    id: usize,
}

impl FileProgress {
    pub fn advance(&self, n: u64) {
        self.progress.send(Event::Advance { id: self.id, n });
    }

    /// The file starts again from zero bytes (a retry re-hashes its part; a restart drops it).
    pub fn restart(&self) {
        self.progress.send(Event::Restart { id: self.id });
    }

    /// A retry, a restart, a source that failed.
    pub fn note(&self, text: &str) {
        self.progress.send(Event::Note {
            id: Some(self.id),
            text: text.to_string(),
        });
    }

    /// The file's final state (`verified`, `present`, `mismatch`, `failed`, ...).
    pub fn finish(&self, state: &str, detail: &str) {
        self.progress.send(Event::Finish {
            id: self.id,
            state: state.to_string(),
            detail: detail.to_string(),
        });
    }
}

fn suffix(detail: &str) -> String {
    if detail.is_empty() {
        String::new()
    } else {
        format!(" ({detail})")
    }
}
