//! The per-model scheduler: a queue served by a dedicated pool of worker threads (one per
//! pooled infer request, pinned to the compute CPUs), so OpenVINO's blocking calls never run
//! on the async workers. With
//! batching on, a worker gathers compatible queued requests (same input shapes after
//! dimension 0) up to the max batch, capped by the free UMA budget, waiting at most the max
//! queue delay, runs them as one inference and splits the outputs. A panic inside an
//! inference fails that batch with INTERNAL and the worker carries on. Touches the compiled
//! model (through [`Runner`]) and the budget ledger only.

use super::stats::Stats;
use crate::budget::Ledger;
use crate::threads::ThreadPlacement;
use kiln_hal::ports::{LoadedModel, PortError, Tensor};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Outputs of one request, in model order.
pub type Outputs = Result<Vec<(String, Tensor)>, PortError>;

/// What the scheduler needs of a compiled model.
pub trait Runner: Send + Sync {
    fn infer(&self, inputs: &[(String, Tensor)]) -> Outputs;
    /// Concurrent inferences it supports: one worker each.
    fn pool_size(&self) -> usize;
}

impl Runner for Arc<dyn LoadedModel> {
    fn infer(&self, inputs: &[(String, Tensor)]) -> Outputs {
        LoadedModel::infer(&**self, inputs)
    }
    fn pool_size(&self) -> usize {
        LoadedModel::pool_size(&**self)
    }
}

fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| p.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "no message".into())
}

/// One inference; a panic in it becomes this batch's error instead of the worker's end.
fn infer_guarded(runner: &dyn Runner, inputs: &[(String, Tensor)]) -> Outputs {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runner.infer(inputs))).unwrap_or_else(
        |p| {
            let why = panic_text(p.as_ref());
            tracing::error!("an inference panicked: {why}");
            Err(PortError::internal(format!(
                "the inference panicked ({why}); the worker carries on"
            )))
        },
    )
}

struct Job {
    inputs: Vec<(String, Tensor)>,
    samples: u64,
    enqueued: Instant,
    reply: oneshot::Sender<Outputs>,
}

struct Queue {
    jobs: Mutex<VecDeque<Job>>,
    cv: Condvar,
    closed: AtomicBool,
}

struct Shared {
    compiled: Arc<dyn Runner>,
    queue: Queue,
    stats: Arc<Stats>,
    ledger: Ledger,
    max_batch: usize,
    delay: Duration,
    max_queue: usize,
    /// Workers, and how many hold a request now.
    workers: usize,
    busy: std::sync::atomic::AtomicUsize,
}

/// Batching settings in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batching {
    pub max_batch: usize,
    pub max_queue_delay: Duration,
    /// Requests that may wait at once.
    pub max_queue: usize,
}

/// Why a request was not queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refused {
    /// The model is being unloaded.
    Closed,
    /// `depth` requests already wait (the limit).
    Full { depth: usize },
}

pub struct Scheduler {
    shared: Arc<Shared>,
    workers: Mutex<Vec<JoinHandle<()>>>,
}

impl Scheduler {
    /// Start `compiled.pool_size()` workers.
    pub fn start(
        label: &str,
        compiled: Arc<dyn Runner>,
        stats: Arc<Stats>,
        ledger: Ledger,
        batching: Batching,
        placement: &ThreadPlacement,
    ) -> Result<Scheduler, String> {
        let n = compiled.pool_size().max(1);
        let shared = Arc::new(Shared {
            compiled,
            queue: Queue {
                jobs: Mutex::new(VecDeque::new()),
                cv: Condvar::new(),
                closed: AtomicBool::new(false),
            },
            stats,
            ledger,
            max_batch: batching.max_batch.max(1),
            delay: batching.max_queue_delay,
            max_queue: batching.max_queue.max(1),
            workers: n,
            busy: std::sync::atomic::AtomicUsize::new(0),
        });
        let mut workers = Vec::with_capacity(n);
        for i in 0..n {
            let s = shared.clone();
            let placement = placement.clone();
            let h = std::thread::Builder::new()
                .name(format!("infer-{i}"))
                .spawn(move || {
                    if let Err(e) = placement.pin_compute() {
                        tracing::warn!("inference worker {i} not pinned: {e}");
                    }
                    worker(&s)
                })
                .map_err(|e| format!("cannot start inference worker {i} for {label}: {e}"))?;
            workers.push(h);
        }
        Ok(Scheduler {
            shared,
            workers: Mutex::new(workers),
        })
    }

    /// Queue a request; the receiver gets the outputs.
    pub fn submit(
        &self,
        inputs: Vec<(String, Tensor)>,
        samples: u64,
    ) -> Result<oneshot::Receiver<Outputs>, Refused> {
        let (tx, rx) = oneshot::channel();
        let mut q = self.lock();
        if self.shared.queue.closed.load(Ordering::Acquire) {
            return Err(Refused::Closed);
        }
        if q.len() >= self.shared.max_queue {
            return Err(Refused::Full { depth: q.len() });
        }
        q.push_back(Job {
            inputs,
            samples,
            enqueued: Instant::now(),
            reply: tx,
        });
        drop(q);
        self.shared.queue.cv.notify_one();
        Ok(rx)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, VecDeque<Job>> {
        self.shared
            .queue
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Refuse new work, let the workers finish what is queued, and join them (blocking).
    pub fn shutdown(&self) {
        {
            let _q = self.lock();
            self.shared.queue.closed.store(true, Ordering::Release);
        }
        self.shared.queue.cv.notify_all();
        let workers = std::mem::take(&mut *self.workers.lock().unwrap_or_else(|p| p.into_inner()));
        for w in workers {
            let _ = w.join();
        }
    }
}

impl Drop for Scheduler {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn compatible(a: &Job, b: &Job) -> bool {
    a.inputs.len() == b.inputs.len()
        && a.inputs.iter().zip(&b.inputs).all(|((na, ta), (nb, tb))| {
            na == nb
                && ta.dtype == tb.dtype
                && ta.shape.len() == tb.shape.len()
                && !ta.shape.is_empty()
                && ta.shape[1..] == tb.shape[1..]
        })
}

fn worker(s: &Shared) {
    loop {
        let mut q = s.queue.jobs.lock().unwrap_or_else(|p| p.into_inner());
        let first = loop {
            if let Some(j) = q.pop_front() {
                s.busy.fetch_add(1, Ordering::AcqRel);
                break j;
            }
            if s.queue.closed.load(Ordering::Acquire) {
                return;
            }
            q = s.queue.cv.wait(q).unwrap_or_else(|p| p.into_inner());
        };
        let mut batch = vec![first];
        if s.max_batch > 1 {
            // Cap by what the free budget can hold (inputs + outputs, roughly 2x input bytes).
            let per_sample = batch[0]
                .inputs
                .iter()
                .map(|(_, t)| t.data.len() as u64)
                .sum::<u64>()
                .saturating_mul(2)
                / batch[0].samples.max(1);
            let cap = s.ledger.batch_size(per_sample, 1, s.max_batch).unwrap_or(1);
            let deadline = batch[0].enqueued + s.delay;
            let mut total = batch[0].samples as usize;
            // Waiting for company pays only under load: requests already queued behind this
            // one, or every other worker busy. Otherwise run now (an idle worker would take
            // the next request at once anyway).
            let under_load =
                !q.is_empty() || (s.workers > 1 && s.busy.load(Ordering::Acquire) >= s.workers);
            while total < cap {
                if let Some(pos) = q
                    .iter()
                    .position(|j| compatible(&batch[0], j) && total + j.samples as usize <= cap)
                {
                    let j = q.remove(pos).expect("position is in range");
                    total += j.samples as usize;
                    batch.push(j);
                    continue;
                }
                let now = Instant::now();
                if !under_load || now >= deadline || s.queue.closed.load(Ordering::Acquire) {
                    break;
                }
                q = s
                    .queue
                    .cv
                    .wait_timeout(q, deadline - now)
                    .unwrap_or_else(|p| p.into_inner())
                    .0;
            }
        }
        drop(q);
        let _busy = Busy(&s.busy);
        // Second line of defence (merging or splitting tensors): the batch's callers see
        // their request end, the worker stays.
        if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| run(s, batch))) {
            tracing::error!(
                "an inference worker caught a panic: {}",
                panic_text(p.as_ref())
            );
        }
    }
}

/// Counts a worker busy until dropped (also when its inference panics).
struct Busy<'a>(&'a std::sync::atomic::AtomicUsize);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

fn run(s: &Shared, batch: Vec<Job>) {
    let picked = Instant::now();
    let samples: u64 = batch.iter().map(|j| j.samples).sum();
    if batch.len() == 1 {
        let job = batch.into_iter().next().expect("one job");
        let t0 = Instant::now();
        let out = infer_guarded(s.compiled.as_ref(), &job.inputs);
        let infer = t0.elapsed();
        let zero = Duration::ZERO;
        s.stats.execution(samples, zero, infer, zero);
        finish(s, job, out, picked, (zero, infer, zero));
        return;
    }
    let t0 = Instant::now();
    let names: Vec<String> = batch[0].inputs.iter().map(|(n, _)| n.clone()).collect();
    let merged: Result<Vec<(String, Tensor)>, PortError> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let parts: Vec<&Tensor> = batch.iter().map(|j| &j.inputs[i].1).collect();
            Tensor::concat(&parts).map(|t| (n.clone(), t))
        })
        .collect();
    let input = t0.elapsed();
    let t1 = Instant::now();
    let out = merged.and_then(|m| infer_guarded(s.compiled.as_ref(), &m));
    let infer = t1.elapsed();
    let t2 = Instant::now();
    let sizes: Vec<i64> = batch.iter().map(|j| j.samples as i64).collect();
    let split: Result<Vec<Vec<(String, Tensor)>>, PortError> = out.and_then(|outs| {
        let mut per_job: Vec<Vec<(String, Tensor)>> = vec![Vec::new(); batch.len()];
        for (name, t) in outs {
            let parts = t.split(&sizes).map_err(|e| {
                PortError::unsupported(format!(
                    "output {name} of a batched inference cannot be split per request ({e}); \
                     disable batching for this model"
                ))
            })?;
            for (k, p) in parts.into_iter().enumerate() {
                per_job[k].push((name.clone(), p));
            }
        }
        Ok(per_job)
    });
    let output = t2.elapsed();
    s.stats.execution(samples, input, infer, output);
    match split {
        Ok(per_job) => {
            for (job, outs) in batch.into_iter().zip(per_job) {
                finish(s, job, Ok(outs), picked, (input, infer, output));
            }
        }
        Err(e) => {
            let msg = e.to_string();
            for job in batch {
                finish(
                    s,
                    job,
                    Err(PortError::unsupported(msg.clone())),
                    picked,
                    (input, infer, output),
                );
            }
        }
    }
}

fn finish(
    s: &Shared,
    job: Job,
    out: Outputs,
    picked: Instant,
    compute: (Duration, Duration, Duration),
) {
    let queue = picked.saturating_duration_since(job.enqueued);
    s.stats.request(
        out.is_ok(),
        job.samples,
        queue,
        compute,
        job.enqueued.elapsed(),
    );
    let _ = job.reply.send(out);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Doubles its f32 input; panics when the first value is negative.
    struct Doubler;
    impl Runner for Doubler {
        fn infer(&self, inputs: &[(String, Tensor)]) -> Outputs {
            let v = inputs[0].1.to_f32()?;
            assert!(v[0] >= 0.0, "negative input");
            let out: Vec<f32> = v.iter().map(|x| x * 2.0).collect();
            Ok(vec![(
                "y".into(),
                Tensor::from_f32(&inputs[0].1.shape, &out)?,
            )])
        }
        fn pool_size(&self) -> usize {
            1
        }
    }

    fn start(runner: Arc<dyn Runner>, batching: Batching) -> Scheduler {
        Scheduler::start(
            "test model",
            runner,
            Arc::new(Stats::new("m", 1, "CPU", "f32")),
            Ledger::new(1 << 30, 100.0),
            batching,
            &ThreadPlacement::default(),
        )
        .unwrap()
    }

    /// One worker, no batching, at most two requests waiting.
    fn scheduler(runner: Arc<dyn Runner>) -> Scheduler {
        let one = Batching {
            max_batch: 1,
            max_queue_delay: Duration::ZERO,
            max_queue: 2,
        };
        start(runner, one)
    }

    fn x(v: f32) -> Vec<(String, Tensor)> {
        vec![("x".into(), Tensor::from_f32(&[1, 2], &[v, v]).unwrap())]
    }

    /// Counts the requests in each inference it runs (batch sizes), after a short pause.
    struct Counter(Mutex<Vec<i64>>, usize);
    impl Runner for Counter {
        fn infer(&self, inputs: &[(String, Tensor)]) -> Outputs {
            std::thread::sleep(Duration::from_millis(20));
            self.0.lock().unwrap().push(inputs[0].1.shape[0]);
            Ok(inputs.to_vec())
        }
        fn pool_size(&self) -> usize {
            self.1
        }
    }

    fn batching(runner: Arc<dyn Runner>, delay: Duration) -> Scheduler {
        let eight = Batching {
            max_batch: 8,
            max_queue_delay: delay,
            max_queue: 64,
        };
        start(runner, eight)
    }

    #[tokio::test]
    async fn batching_at_one_request_at_a_time_does_not_wait() {
        for workers in [1, 2] {
            let s = batching(
                Arc::new(Counter(Mutex::new(Vec::new()), workers)),
                Duration::from_secs(2),
            );
            let t = Instant::now();
            for v in 0..3 {
                s.submit(x(v as f32), 1).unwrap().await.unwrap().unwrap();
            }
            assert!(
                t.elapsed() < Duration::from_millis(1500),
                "{workers} workers: three lone requests took {:?}; batching waited for company",
                t.elapsed()
            );
        }
    }

    #[tokio::test]
    async fn under_load_requests_are_batched() {
        let runner = Arc::new(Counter(Mutex::new(Vec::new()), 1));
        let s = batching(runner.clone(), Duration::from_millis(50));
        let rx: Vec<_> = (0..9).map(|v| s.submit(x(v as f32), 1).unwrap()).collect();
        for r in rx {
            r.await.unwrap().unwrap();
        }
        let sizes = runner.0.lock().unwrap().clone();
        assert_eq!(sizes.iter().sum::<i64>(), 9, "{sizes:?}");
        assert!(
            sizes.iter().any(|&n| n > 1),
            "queued requests ran together: {sizes:?}"
        );
    }

    #[tokio::test]
    async fn a_panicking_inference_fails_its_request_and_the_worker_serves_the_next() {
        let s = scheduler(Arc::new(Doubler));
        let ok = s.submit(x(1.5), 1).unwrap().await.unwrap().unwrap();
        assert_eq!(ok[0].1.to_f32().unwrap(), [3.0, 3.0]);
        let bad = s.submit(x(-1.0), 1).unwrap().await.unwrap().unwrap_err();
        assert_eq!(bad.kind(), kiln_hal::ports::ErrorKind::Internal);
        assert!(bad.to_string().contains("negative input"), "{bad}");
        // The only worker is still there.
        let again = s.submit(x(2.0), 1).unwrap().await.unwrap().unwrap();
        assert_eq!(again[0].1.to_f32().unwrap(), [4.0, 4.0]);
    }

    /// Blocks every inference until released.
    struct Gate(Mutex<bool>, Condvar);
    impl Runner for Gate {
        fn infer(&self, inputs: &[(String, Tensor)]) -> Outputs {
            let mut open = self.0.lock().unwrap();
            while !*open {
                open = self.1.wait(open).unwrap();
            }
            Ok(inputs.to_vec())
        }
        fn pool_size(&self) -> usize {
            1
        }
    }

    #[tokio::test]
    async fn a_full_queue_refuses_with_its_depth_and_serves_what_it_took() {
        let gate = Arc::new(Gate(Mutex::new(false), Condvar::new()));
        let s = scheduler(gate.clone());
        let first = s.submit(x(1.0), 1).unwrap();
        // Wait until the worker holds the first request (blocked in the gate).
        while !s.lock().is_empty() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let queued: Vec<_> = (0..2).map(|_| s.submit(x(2.0), 1).unwrap()).collect();
        assert_eq!(s.submit(x(3.0), 1).unwrap_err(), Refused::Full { depth: 2 });
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
        assert!(first.await.unwrap().is_ok());
        for r in queued {
            assert!(r.await.unwrap().is_ok());
        }
        s.shutdown();
        assert_eq!(s.submit(x(1.0), 1).unwrap_err(), Refused::Closed);
    }
}
