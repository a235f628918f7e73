//! A small pool of search threads, each pinned (sched_setaffinity) to one CPU from the list
//! the caller gives: the resource manager's performance CPU set. Touches only its own
//! threads' affinity. Each thread probes its own CPU with CPUID after pinning
//! ([`Isa::detect_this_cpu`]); the pool's ISA is the lowest level any of them reports,
//! so AVX-512 runs only when every CPU in the list has it; pass only such CPUs to get it.
//!
//! `map` runs borrowed closures on the workers and blocks until all finish; do not call it
//! from inside a pool task (the pool would wait on itself).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crate::error::{Result, VectorError};
use crate::kernels::Isa;

/// How to build a [`SearchPool`].
#[derive(Debug, Clone, Default)]
pub struct PoolConfig {
    /// Number of search threads (0 means one per CPU in `cpus`).
    pub threads: usize,
    /// CPUs to pin to, round-robin. Empty means the CPUs this process may run on now.
    pub cpus: Vec<usize>,
    /// Cap on the ISA (e.g. `Some(Isa::Avx2)`); `None` uses the best all threads report.
    pub max_isa: Option<Isa>,
}

impl PoolConfig {
    /// `threads` threads over the process's current CPUs.
    pub fn threads(threads: usize) -> Self {
        PoolConfig {
            threads,
            ..Default::default()
        }
    }
}

struct Job {
    f: &'static (dyn Fn(usize) + Sync),
    index: usize,
    done: Arc<Latch>,
}

struct Latch {
    remaining: Mutex<usize>,
    cv: Condvar,
}

impl Latch {
    fn count_down(&self) {
        let mut r = self.remaining.lock().unwrap_or_else(|e| e.into_inner());
        *r -= 1;
        if *r == 0 {
            self.cv.notify_all();
        }
    }
}

struct Worker {
    tx: Option<mpsc::Sender<Job>>,
    handle: Option<JoinHandle<()>>,
}

/// Pinned search threads.
pub struct SearchPool {
    workers: Vec<Worker>,
    cpus: Vec<usize>,
    isa: Isa,
}

impl std::fmt::Debug for SearchPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SearchPool")
            .field("threads", &self.workers.len())
            .field("cpus", &self.cpus)
            .field("isa", &self.isa)
            .finish()
    }
}

/// CPUs the calling thread may run on.
pub fn current_affinity() -> Vec<usize> {
    // SAFETY: cpu_set_t is plain data; sched_getaffinity writes at most its size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return vec![0];
        }
        (0..libc::CPU_SETSIZE as usize)
            .filter(|&c| libc::CPU_ISSET(c, &set))
            .collect()
    }
}

fn pin_current_thread(cpu: usize) -> std::io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            format!("CPU id above {}", libc::CPU_SETSIZE - 1),
        ));
    }
    // SAFETY: cpu_set_t is plain data and `cpu` is within CPU_SETSIZE.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

impl SearchPool {
    /// Starts the threads, pins each, and probes the ISA on each pinned thread.
    pub fn new(config: PoolConfig) -> Result<SearchPool> {
        let cpus = if config.cpus.is_empty() {
            current_affinity()
        } else {
            config.cpus.clone()
        };
        if cpus.is_empty() {
            return Err(VectorError::PoolConfig("no CPUs to run on".into()));
        }
        let threads = if config.threads == 0 {
            cpus.len()
        } else {
            config.threads
        };
        if threads > 1024 {
            return Err(VectorError::PoolConfig(format!(
                "{threads} threads requested; use at most 1024"
            )));
        }
        let mut workers = Vec::with_capacity(threads);
        let mut isa = config.max_isa.unwrap_or(Isa::Avx512);
        let mut first_err = None;
        for t in 0..threads {
            let cpu = cpus[t % cpus.len()];
            let (tx, rx) = mpsc::channel::<Job>();
            let (ready_tx, ready_rx) = mpsc::channel::<std::io::Result<Isa>>();
            let spawned = std::thread::Builder::new()
                .name(format!("kiln-vec-{t}"))
                .spawn(move || {
                    if let Err(e) = pin_current_thread(cpu) {
                        let _ = ready_tx.send(Err(e));
                        return;
                    }
                    let _ = ready_tx.send(Ok(Isa::detect_this_cpu()));
                    drop(ready_tx);
                    for job in rx {
                        (job.f)(job.index);
                        job.done.count_down();
                    }
                });
            let handle = match spawned {
                Ok(h) => h,
                Err(e) => {
                    first_err = Some(VectorError::PoolConfig(format!("cannot start thread: {e}")));
                    break;
                }
            };
            let ready = ready_rx.recv().unwrap_or_else(|_| {
                Err(std::io::Error::other("search thread exited during start"))
            });
            workers.push(Worker {
                tx: Some(tx),
                handle: Some(handle),
            });
            match ready {
                Ok(thread_isa) => isa = isa.min(thread_isa),
                Err(source) => {
                    first_err = Some(VectorError::Pin { cpu, source });
                    break;
                }
            }
        }
        let pool = SearchPool { workers, cpus, isa };
        match first_err {
            Some(e) => Err(e), // dropping `pool` joins the started threads
            None => Ok(pool),
        }
    }

    /// Number of threads.
    pub fn threads(&self) -> usize {
        self.workers.len()
    }

    /// The CPUs the threads are pinned to (round-robin).
    pub fn cpus(&self) -> &[usize] {
        &self.cpus
    }

    /// The kernel level every pinned thread supports.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// Runs `f(0..tasks)` on the pinned threads (task `i` on thread `i % threads`) and
    /// returns the results in task order. Blocks until every task has finished.
    pub fn map<T, F>(&self, tasks: usize, f: F) -> Result<Vec<T>>
    where
        T: Send,
        F: Fn(usize) -> T + Sync,
    {
        let slots: Vec<Mutex<Option<std::thread::Result<T>>>> =
            (0..tasks).map(|_| Mutex::new(None)).collect();
        let run = |i: usize| {
            let r = catch_unwind(AssertUnwindSafe(|| f(i)));
            *slots[i].lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
        };
        let run_ref: &(dyn Fn(usize) + Sync) = &run;
        // SAFETY: the 'static reference never outlives this call: every job holding it is
        // counted in `latch`, and we wait below until all sent jobs have counted down
        // (workers count down after the call returns, panics included).
        let run_static: &'static (dyn Fn(usize) + Sync) = unsafe { std::mem::transmute(run_ref) };
        let latch = Arc::new(Latch {
            remaining: Mutex::new(tasks),
            cv: Condvar::new(),
        });
        let mut unsent = 0;
        for i in 0..tasks {
            let w = &self.workers[i % self.workers.len()];
            let job = Job {
                f: run_static,
                index: i,
                done: latch.clone(),
            };
            if w.tx.as_ref().is_none_or(|tx| tx.send(job).is_err()) {
                unsent += 1;
            }
        }
        {
            let mut r = latch.remaining.lock().unwrap_or_else(|e| e.into_inner());
            *r -= unsent;
            while *r > 0 {
                r = latch.cv.wait(r).unwrap_or_else(|e| e.into_inner());
            }
        }
        if unsent > 0 {
            return Err(VectorError::Worker(format!(
                "{unsent} tasks could not reach a search thread (pool shut down)"
            )));
        }
        let mut out = Vec::with_capacity(tasks);
        for s in slots {
            match s.into_inner().unwrap_or_else(|e| e.into_inner()) {
                Some(Ok(v)) => out.push(v),
                Some(Err(p)) => {
                    let msg = p
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| p.downcast_ref::<String>().cloned())
                        .unwrap_or_else(|| "panic".into());
                    return Err(VectorError::Worker(format!(
                        "a search task panicked: {msg}"
                    )));
                }
                None => return Err(VectorError::Worker("a search task did not run".into())),
            }
        }
        Ok(out)
    }
}

impl Drop for SearchPool {
    fn drop(&mut self) {
        for w in &mut self.workers {
            w.tx.take();
        }
        for w in &mut self.workers {
            if let Some(h) = w.handle.take() {
                let _ = h.join();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn affinity_of_current() -> Vec<usize> {
        current_affinity()
    }

    #[test]
    fn threads_are_pinned_and_results_ordered() {
        let cpus = current_affinity();
        let last = *cpus.last().unwrap();
        let pool = SearchPool::new(PoolConfig {
            threads: 3,
            cpus: vec![last],
            max_isa: None,
        })
        .unwrap();
        assert_eq!(pool.threads(), 3);
        let seen = pool.map(6, |i| (i * 10, affinity_of_current())).unwrap();
        for (i, (v, aff)) in seen.iter().enumerate() {
            assert_eq!(*v, i * 10);
            assert_eq!(aff, &vec![last], "worker not pinned");
        }
        assert!(pool.isa() <= Isa::detect());
    }

    #[test]
    fn panics_become_errors_and_pool_survives() {
        let pool = SearchPool::new(PoolConfig::threads(2)).unwrap();
        let borrowed = [1u32, 2, 3];
        let r = pool.map(3, |i| {
            if i == 1 {
                panic!("boom");
            }
            borrowed[i]
        });
        assert!(matches!(r, Err(VectorError::Worker(ref m)) if m.contains("boom")));
        assert_eq!(pool.map(3, |i| borrowed[i]).unwrap(), vec![1, 2, 3]);
    }

    #[test]
    fn bad_cpu_is_a_clear_error() {
        let err = SearchPool::new(PoolConfig {
            threads: 1,
            cpus: vec![100_000],
            max_isa: None,
        })
        .unwrap_err();
        assert!(err.to_string().contains("CPU 100000"), "{err}");
    }

    #[test]
    fn max_isa_caps_the_level() {
        let pool = SearchPool::new(PoolConfig {
            threads: 1,
            cpus: vec![],
            max_isa: Some(Isa::Scalar),
        })
        .unwrap();
        assert_eq!(pool.isa(), Isa::Scalar);
    }
}
