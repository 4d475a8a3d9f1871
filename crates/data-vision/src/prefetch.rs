//! Background batch loading.
//!
//! [`Prefetcher`] runs [`ImageDataset::load_batch`] for a list of index batches on a worker thread, keeping
//! at most `depth` finished batches queued, and yields them in order. The time the consumer spends blocked
//! waiting for a batch is recorded ([`Prefetcher::wait_seconds`]), so a benchmark can show whether training
//! is data-bound. After an error the worker stops and the iterator ends after yielding it. Dropping the
//! prefetcher stops the worker (after the batch it is working on, if any) and joins it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::{Batch, DataError, ImageDataset, Preprocess};

/// An iterator over preprocessed batches loaded ahead of time on a background thread.
pub struct Prefetcher {
    rx: Option<Receiver<Result<Batch, DataError>>>,
    worker: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    waited: Duration,
    remaining: usize,
    failed: bool,
}

impl Prefetcher {
    /// Starts loading `batches` (lists of dataset indices) in order. `depth` (clamped to `1..=16`; 2 to 4
    /// is typical) bounds the number of finished batches held in memory.
    pub fn spawn(
        dataset: Arc<ImageDataset>,
        batches: Vec<Vec<usize>>,
        pre: Preprocess,
        depth: usize,
    ) -> Prefetcher {
        let depth = depth.clamp(1, 16);
        let (tx, rx) = sync_channel(depth);
        let stop = Arc::new(AtomicBool::new(false));
        let remaining = batches.len();
        let worker_stop = stop.clone();
        let worker = std::thread::Builder::new()
            .name("peftbench-prefetch".to_string())
            .spawn(move || {
                for indices in batches {
                    if worker_stop.load(Ordering::Relaxed) {
                        return;
                    }
                    let result = dataset.load_batch(&indices, &pre);
                    let is_err = result.is_err();
                    if tx.send(result).is_err() || is_err {
                        return;
                    }
                }
            })
            .expect("spawning the prefetch thread");
        Prefetcher {
            rx: Some(rx),
            worker: Some(worker),
            stop,
            waited: Duration::ZERO,
            remaining,
            failed: false,
        }
    }

    /// Total seconds the consumer has spent blocked in `next()` waiting for the worker.
    pub fn wait_seconds(&self) -> f64 {
        self.waited.as_secs_f64()
    }

    /// Batches not yet yielded.
    pub fn remaining(&self) -> usize {
        self.remaining
    }
}

impl Iterator for Prefetcher {
    type Item = Result<Batch, DataError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 || self.failed {
            return None;
        }
        let rx = self.rx.as_ref()?;
        let start = Instant::now();
        let received = rx.recv();
        self.waited += start.elapsed();
        match received {
            Ok(result) => {
                self.remaining -= 1;
                if result.is_err() {
                    self.failed = true;
                }
                Some(result)
            }
            Err(_) => {
                // The worker ended without sending everything: it panicked.
                self.failed = true;
                let reason = match self.worker.take().map(|h| h.join()) {
                    Some(Err(panic)) => panic
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_else(|| "worker panicked".to_string()),
                    _ => "worker exited early".to_string(),
                };
                Some(Err(DataError::Worker(reason)))
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        (0, Some(self.remaining))
    }
}

impl Drop for Prefetcher {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Dropping the receiver makes a blocked `send` fail, so the worker exits.
        drop(self.rx.take());
        if let Some(h) = self.worker.take() {
            let _ = h.join();
        }
    }
}
