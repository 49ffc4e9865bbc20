//! Dynamic batching: a bounded queue per served method, drained by its own OS worker threads
//! (never tokio's), each running one batch of the compiled `batch_size` at a time.
//!
//! A worker takes the oldest request and waits up to `max_queue_delay` (counted from that
//! request's arrival) for more items; it then takes items front to back until the batch is full.
//! A request larger than the batch is taken in slices over several executions, and its reply
//! is sent once every slice is done. A partial batch is padded with zeros; only the real items'
//! rows are copied into replies.
//!
//! A panic while a batch runs fails that batch's requests (500, the detail in the log) and the
//! worker goes on with the next batch. A worker that ends for any other reason is counted: with
//! none left, every queued request fails, new ones are refused with 503 and the method reports
//! not ready ([`Batcher::healthy`]), so nothing waits on a queue no one drains.

use super::error::ServeError;
use super::metrics::ModelMetrics;
use crate::models::{run_batch, MethodSig};
use plugin_api::ModelBox;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Queueing options.
#[derive(Debug, Clone, Copy)]
pub struct QueueConfig {
    /// Worker threads.
    pub instances: usize,
    /// Wait for more items after the oldest request arrived.
    pub max_queue_delay: Duration,
    /// Requests queued before new ones are refused.
    pub max_queue_size: usize,
}

/// Outputs of one request: each output's rows for the request's items, in `MethodSig` order.
pub type Reply = Result<Vec<Vec<f32>>, ServeError>;

struct Job {
    input: Vec<f32>,
    items: usize,
    enqueued: Instant,
    deadline: Option<Instant>,
    state: Mutex<JobState>,
}

struct JobState {
    done: usize,
    outputs: Vec<Vec<f32>>,
    reply: Option<oneshot::Sender<Reply>>,
}

struct Queued {
    job: Arc<Job>,
    taken: usize,
}

struct Queue {
    jobs: VecDeque<Queued>,
    closed: bool,
}

struct Shared {
    /// The served name (`model.method`), in logs and errors.
    name: String,
    /// Workers still running.
    alive: AtomicUsize,
    sig: MethodSig,
    cfg: QueueConfig,
    model: Arc<ModelBox>,
    metrics: Arc<ModelMetrics>,
    queue: Mutex<Queue>,
    wake: Condvar,
}

/// A ticket for a queued request.
pub struct Ticket {
    job: Arc<Job>,
    /// Resolves with the reply.
    pub reply: oneshot::Receiver<Reply>,
}

/// The queue and workers of one served method (cheap to clone: the clones share them).
#[derive(Clone)]
pub struct Batcher {
    shared: Arc<Shared>,
}

impl Batcher {
    /// Starts `cfg.instances` worker threads running `sig.method` of `model`.
    pub fn start(
        name: &str,
        model: Arc<ModelBox>,
        sig: MethodSig,
        cfg: QueueConfig,
        metrics: Arc<ModelMetrics>,
    ) -> std::io::Result<Batcher> {
        let shared = Arc::new(Shared {
            name: name.to_string(),
            alive: AtomicUsize::new(0),
            sig,
            cfg,
            model,
            metrics,
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                closed: false,
            }),
            wake: Condvar::new(),
        });
        for i in 0..cfg.instances.max(1) {
            let s = shared.clone();
            s.alive.fetch_add(1, SeqCst);
            let spawned = std::thread::Builder::new()
                .name(format!("{name}#{i}"))
                .spawn(move || {
                    Worker {
                        shared: &s,
                        current: RefCell::new(Vec::new()),
                    }
                    .work()
                });
            if let Err(e) = spawned {
                shared.alive.fetch_sub(1, SeqCst);
                shared.close();
                return Err(e);
            }
        }
        Ok(Batcher { shared })
    }

    /// The method's signature.
    pub fn sig(&self) -> &MethodSig {
        &self.shared.sig
    }

    /// True while at least one worker runs (the method can answer).
    pub fn healthy(&self) -> bool {
        self.shared.alive.load(SeqCst) > 0
    }

    /// Queues `items` rows of `input` (already validated); refuses at once when the queue is
    /// full or closed.
    pub fn submit(
        &self,
        input: Vec<f32>,
        items: usize,
        deadline: Option<Instant>,
    ) -> Result<Ticket, ServeError> {
        let (tx, rx) = oneshot::channel();
        let job = Arc::new(Job {
            input,
            items,
            enqueued: Instant::now(),
            deadline,
            state: Mutex::new(JobState {
                done: 0,
                outputs: vec![Vec::new(); self.shared.sig.outputs.len()],
                reply: Some(tx),
            }),
        });
        let mut q = self.shared.lock();
        if q.closed {
            return Err(ServeError::NotReady(if self.healthy() {
                "the server is shutting down".into()
            } else {
                format!("{} has no running worker", self.shared.name)
            }));
        }
        if q.jobs.len() >= self.shared.cfg.max_queue_size {
            return Err(ServeError::QueueFull(format!(
                "the queue is full ({} requests); retry later",
                self.shared.cfg.max_queue_size
            )));
        }
        q.jobs.push_back(Queued {
            job: job.clone(),
            taken: 0,
        });
        self.shared.metrics.pending.fetch_add(1, Relaxed);
        drop(q);
        self.shared.wake.notify_all();
        Ok(Ticket { job, reply: rx })
    }

    /// Queues `items` rows like a request without a deadline and waits for the reply; for
    /// callers on blocking threads (pipeline steps), never on tokio's workers.
    pub fn call_blocking(&self, input: Vec<f32>, items: usize) -> Reply {
        let ticket = self.submit(input, items, None)?;
        ticket.reply.blocking_recv().map_err(|_| {
            ServeError::Internal(format!(
                "{}: the worker ended without a reply",
                self.shared.name
            ))
        })?
    }

    /// Removes a request that no worker has started; false if one has (it will complete).
    pub fn withdraw(&self, ticket: &Ticket) -> bool {
        let mut q = self.shared.lock();
        let at = q
            .jobs
            .iter()
            .position(|e| Arc::ptr_eq(&e.job, &ticket.job) && e.taken == 0);
        match at {
            Some(i) => {
                q.jobs.remove(i);
                self.shared.metrics.pending.fetch_sub(1, Relaxed);
                true
            }
            None => false,
        }
    }

    /// Stops accepting requests; workers finish what is queued, then exit.
    pub fn close(&self) {
        self.shared.close();
    }
}

/// One worker thread: it runs batches until the queue is closed and drained. When its thread
/// ends, however it ends, it fails the requests of the batch it held, and the last worker to
/// end fails what is still queued.
struct Worker<'a> {
    shared: &'a Shared,
    /// The requests of the batch being run.
    current: RefCell<Vec<Arc<Job>>>,
}

impl Worker<'_> {
    fn work(&self) {
        let s = self.shared;
        while let Some(slices) = s.next_batch() {
            *self.current.borrow_mut() = slices.iter().map(|(job, _, _)| job.clone()).collect();
            super::fault::in_worker(&s.name);
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| s.execute(slices))) {
                let what = panic_message(payload.as_ref());
                tracing::error!("{}: a batch panicked: {what}", s.name);
                s.fail(
                    &self.current.borrow(),
                    &ServeError::Internal(format!("{}: the batch panicked: {what}", s.name)),
                );
            }
            self.current.borrow_mut().clear();
        }
    }
}

impl Drop for Worker<'_> {
    fn drop(&mut self) {
        let s = self.shared;
        // Counted out (and, for the last worker, the queue closed) before any request is
        // answered, so that a client told of the failure already sees the model not ready.
        let last = s.alive.fetch_sub(1, SeqCst) == 1;
        let mut abandoned = Vec::new();
        if last {
            let mut q = s.lock();
            abandoned = q.jobs.drain(..).map(|e| e.job).collect();
            let shutting_down = q.closed;
            q.closed = true;
            drop(q);
            if !shutting_down || !abandoned.is_empty() {
                tracing::error!("{}: no worker is left running", s.name);
            }
        }
        let held = std::mem::take(&mut *self.current.borrow_mut());
        if !held.is_empty() {
            tracing::error!("{}: a worker ended while running a batch", s.name);
            s.fail(
                &held,
                &ServeError::Internal(format!("{}: the worker ended", s.name)),
            );
        }
        s.fail(
            &abandoned,
            &ServeError::Internal(format!("{}: no worker is left running", s.name)),
        );
    }
}

/// The text of a panic's payload.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "a panic without a message".into()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn close(&self) {
        self.lock().closed = true;
        self.wake.notify_all();
    }

    /// Answers `jobs` that have not been answered with `err`, and drops what is left of them
    /// from the queue.
    fn fail(&self, jobs: &[Arc<Job>], err: &ServeError) {
        for job in jobs {
            let mut st = job.state.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(tx) = st.reply.take() {
                self.metrics.pending.fetch_sub(1, Relaxed);
                let _ = tx.send(Err(err.clone()));
            }
        }
        self.lock()
            .jobs
            .retain(|e| !jobs.iter().any(|j| Arc::ptr_eq(j, &e.job)));
    }

    /// Waits for work and takes up to `batch` items; None when closed and drained.
    fn next_batch(&self) -> Option<Vec<(Arc<Job>, usize, usize)>> {
        let batch = self.sig.batch;
        let mut q = self.lock();
        loop {
            self.expire(&mut q);
            if q.jobs.is_empty() {
                if q.closed {
                    return None;
                }
                q = self.wake.wait(q).unwrap_or_else(|p| p.into_inner());
                continue;
            }
            let avail: usize = q.jobs.iter().map(|e| e.job.items - e.taken).sum();
            // The delay is bounded by the manifest check; an unrepresentable one waits no longer.
            let until = q.jobs[0]
                .job
                .enqueued
                .checked_add(self.cfg.max_queue_delay)
                .unwrap_or(q.jobs[0].job.enqueued);
            let now = Instant::now();
            if avail < batch && !q.closed && now < until {
                q = self
                    .wake
                    .wait_timeout(q, until - now)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
                continue;
            }
            break;
        }
        let mut slices = Vec::new();
        let mut n = 0;
        while n < batch {
            let Some(front) = q.jobs.front_mut() else {
                break;
            };
            if front.taken == 0 {
                let waited = front.job.enqueued.elapsed().as_micros() as u64;
                self.metrics.queue_us.fetch_add(waited, Relaxed);
            }
            let k = (batch - n).min(front.job.items - front.taken);
            slices.push((front.job.clone(), front.taken, k));
            front.taken += k;
            n += k;
            if front.taken == front.job.items {
                q.jobs.pop_front();
            }
        }
        let more = !q.jobs.is_empty();
        drop(q);
        if more {
            self.wake.notify_one();
        }
        Some(slices)
    }

    /// Fails queued, unstarted requests whose deadline passed.
    fn expire(&self, q: &mut Queue) {
        let now = Instant::now();
        q.jobs.retain(|e| {
            let expired = e.taken == 0 && e.job.deadline.is_some_and(|d| d <= now);
            if expired {
                let waited = e.job.enqueued.elapsed().as_micros() as u64;
                let mut st = e.job.state.lock().unwrap_or_else(|p| p.into_inner());
                if let Some(tx) = st.reply.take() {
                    let _ = tx.send(Err(ServeError::Timeout(waited)));
                }
                self.metrics.pending.fetch_sub(1, Relaxed);
            }
            !expired
        });
    }

    fn execute(&self, slices: Vec<(Arc<Job>, usize, usize)>) {
        super::fault::in_batch(&self.name);
        let sig = &self.sig;
        let row = sig.input_row();
        let mut data = vec![0.0f32; sig.batch * row];
        let mut at = 0;
        for (job, start, k) in &slices {
            data[at * row..(at + k) * row]
                .copy_from_slice(&job.input[start * row..(start + k) * row]);
            at += k;
        }
        let items = at;
        let started = Instant::now();
        let result = run_batch(&self.model, sig, data).map_err(ServeError::from);
        self.metrics
            .executed(items, started.elapsed().as_micros() as u64);
        let mut offset = 0;
        for (job, start, k) in slices {
            let slice = result.as_ref().map(|outs| {
                outs.iter()
                    .map(|o| {
                        let r = o.len() / sig.batch;
                        &o[offset * r..(offset + k) * r]
                    })
                    .collect::<Vec<&[f32]>>()
            });
            offset += k;
            let mut st = job.state.lock().unwrap_or_else(|p| p.into_inner());
            match slice {
                Err(e) => {
                    if let Some(tx) = st.reply.take() {
                        self.metrics.pending.fetch_sub(1, Relaxed);
                        let _ = tx.send(Err(e.clone()));
                    }
                }
                Ok(parts) => {
                    for (buf, part) in st.outputs.iter_mut().zip(parts) {
                        if buf.is_empty() {
                            buf.resize(part.len() / k * job.items, 0.0);
                        }
                        let r = part.len() / k;
                        buf[start * r..(start + k) * r].copy_from_slice(part);
                    }
                    st.done += k;
                    if st.done == job.items {
                        if let Some(tx) = st.reply.take() {
                            self.metrics.pending.fetch_sub(1, Relaxed);
                            let _ = tx.send(Ok(std::mem::take(&mut st.outputs)));
                        }
                    }
                }
            }
        }
    }
}
