//! Dynamic batching: a bounded queue per served method, drained by its own OS worker threads
//! (never tokio's), each running one batch of the compiled `batch_size` at a time.
//!
//! A worker takes the oldest request and waits up to `max_queue_delay` (counted from that
//! request's arrival) for more items; it then takes items front to back until the batch is full.
//! A request larger than the batch is taken in slices over several executions, and its reply
//! is sent once every slice is done. A partial batch is padded with zeros; only the real items'
//! rows are copied into replies.

use super::error::ServeError;
use super::metrics::ModelMetrics;
use crate::models::{run_batch, MethodSig};
use plugin_api::ModelBox;
use std::collections::VecDeque;
use std::sync::atomic::Ordering::Relaxed;
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

/// The queue and workers of one served method.
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
            std::thread::Builder::new()
                .name(format!("{name}#{i}"))
                .spawn(move || s.work())?;
        }
        Ok(Batcher { shared })
    }

    /// The method's signature.
    pub fn sig(&self) -> &MethodSig {
        &self.shared.sig
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
            return Err(ServeError::NotReady("the server is shutting down".into()));
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
        self.shared.lock().closed = true;
        self.shared.wake.notify_all();
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn work(&self) {
        while let Some(slices) = self.next_batch() {
            self.execute(slices);
        }
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
            let until = q.jobs[0].job.enqueued + self.cfg.max_queue_delay;
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
