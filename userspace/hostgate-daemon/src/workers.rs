//! Connection workers: one thread per core, each with its own
//! current-thread tokio runtime. A service gives each worker its own copy
//! of every listening socket and accept loop, so a connection is served,
//! start to end, by the worker that accepted it, and no task is woken on
//! another core. (On one multi-thread runtime, as NGINX's workers would
//! not, an idle second worker was parked and woken about once per HTTP
//! request; those context switches cost more CPU than the proxying.)
//!
//! Every worker accepts on its copy of the listener, but the first to run
//! would take a whole burst of connections (all of wrk's 32 in some
//! `bench http` runs, on one core): `serve_on` hands each accepted
//! connection to the worker with the fewest open ones.
//!
//! The HTTP proxy's workers live as long as the process (connections
//! outlive a control runtime's end during an upgrade hand-over, see
//! `lib.rs`); the SSH proxy's live for one daemon run. Workers stop when
//! the last clone of their `Workers` is dropped: each thread then drops
//! its runtime, and with it every task still on it.

use std::{
    future::Future,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
};

use anyhow::Context;
use tokio::runtime::Handle;

/// The workers' threads and runtimes; dropping the last clone stops them.
#[derive(Clone, Debug)]
pub struct Workers {
    pool: Pool,
    _running: Arc<Running>,
}

/// What tasks use of the workers: their runtimes and their load. It does
/// not keep the threads running (tasks on the workers hold one).
#[derive(Clone, Debug)]
pub struct Pool {
    handles: Arc<[Handle]>,
    /// Connections open per worker.
    open: Arc<[AtomicUsize]>,
}

/// The threads, and their signal to stop.
#[derive(Debug)]
struct Running {
    stop: tokio::sync::watch::Sender<()>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

/// Stops the threads and waits until each has dropped its runtime (and
/// so its tasks and what they held: the daemon, the store).
impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.stop.send(());
        let me = std::thread::current().id();
        for thread in self.threads.drain(..) {
            if thread.thread().id() != me {
                let _ = thread.join();
            }
        }
    }
}

impl Workers {
    /// One worker per core this process may run on, threads named
    /// `hostgate-<name>-<i>`.
    pub fn start(name: &str) -> anyhow::Result<Workers> {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Workers::start_n(name, cores)
    }

    fn start_n(name: &str, n: usize) -> anyhow::Result<Workers> {
        let (stop, _) = tokio::sync::watch::channel(());
        let (mut handles, mut threads) = (Vec::with_capacity(n), Vec::with_capacity(n));
        for i in 0..n {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .with_context(|| format!("starting {name} worker {i}'s runtime"))?;
            handles.push(runtime.handle().clone());
            let mut stopped = stop.subscribe();
            let thread = std::thread::Builder::new()
                .name(format!("hostgate-{name}-{i}"))
                .spawn(move || {
                    runtime.block_on(async move {
                        let _ = stopped.changed().await;
                    })
                })
                .with_context(|| format!("starting {name} worker {i}'s thread"))?;
            threads.push(thread);
        }
        let pool = Pool { handles: handles.into(), open: (0..n).map(|_| AtomicUsize::new(0)).collect() };
        Ok(Workers { pool, _running: Arc::new(Running { stop, threads }) })
    }

    /// What tasks may hold without keeping the workers running.
    pub fn pool(&self) -> Pool {
        self.pool.clone()
    }

    pub fn handles(&self) -> &[Handle] {
        self.pool.handles()
    }
}

impl Pool {
    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }

    /// The worker with the fewest open connections; `me` on a tie.
    pub fn least_loaded(&self, me: usize) -> usize {
        let open = |w: usize| self.open[w].load(Ordering::Relaxed);
        (0..self.open.len()).fold(me, |best, w| if open(w) < open(best) { w } else { best })
    }

    /// Counts one connection of `worker` while the guard lives.
    pub fn count(&self, worker: usize) -> Counted {
        self.open[worker].fetch_add(1, Ordering::Relaxed);
        Counted { open: self.open.clone(), worker }
    }

    /// Serves a connection that worker `me` accepted on the least loaded
    /// worker: `serve` gets the stream (registered with that worker's
    /// reactor) and the guard that counts it.
    pub fn serve_on<F, Fut>(&self, me: usize, tcp: tokio::net::TcpStream, serve: F)
    where
        F: FnOnce(tokio::net::TcpStream, Counted) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let to = self.least_loaded(me);
        let counted = self.count(to);
        if to == me {
            tokio::spawn(serve(tcp, counted));
            return;
        }
        match tcp.into_std() {
            Ok(std) => {
                self.handles[to].spawn(async move {
                    match tokio::net::TcpStream::from_std(std) {
                        Ok(tcp) => serve(tcp, counted).await,
                        Err(e) => tracing::debug!(error = %e, "moving a connection to another worker"),
                    }
                });
            }
            Err(e) => tracing::debug!(error = %e, "moving a connection to another worker"),
        }
    }
}

/// One open connection of a worker.
#[derive(Debug)]
pub struct Counted {
    open: Arc<[AtomicUsize]>,
    worker: usize,
}

impl Counted {
    pub fn worker(&self) -> usize {
        self.worker
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.open[self.worker].fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// A task spawned on a worker runs on that worker's thread.
    #[test]
    fn each_worker_runs_its_tasks_on_its_thread() {
        let workers = Workers::start_n("test", 2).expect("workers");
        for (i, worker) in workers.handles().iter().enumerate() {
            let (tx, rx) = std::sync::mpsc::channel();
            worker.spawn(async move {
                let _ = tx.send(std::thread::current().name().map(str::to_string));
            });
            let name = rx.recv_timeout(Duration::from_secs(5)).expect("ran");
            assert_eq!(name, Some(format!("hostgate-test-{i}")));
        }
    }

    /// A connection goes to the worker with the fewest open; a tie stays.
    #[test]
    fn connections_go_to_the_least_loaded_worker() {
        let running = Workers::start_n("test", 2).expect("workers");
        let workers = running.pool();
        assert_eq!(workers.least_loaded(0), 0, "all idle: the accepting worker");
        let both = (workers.count(0), workers.count(1));
        assert_eq!(workers.least_loaded(1), 1, "a tie stays");
        let extra = workers.count(0);
        assert_eq!(workers.least_loaded(0), 1, "the busier worker hands on");
        drop(both);
        assert_eq!(workers.least_loaded(1), 1);
        drop(extra);
        assert_eq!(workers.least_loaded(0), 0);
    }

    /// Dropping the last clone ends the tasks still running on them.
    #[test]
    fn dropping_the_workers_ends_their_tasks() {
        let workers = Workers::start_n("test", 2).expect("workers");
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        for worker in workers.handles() {
            let tx = tx.clone();
            worker.spawn(async move {
                let _held = tx;
                std::future::pending::<()>().await;
            });
        }
        drop(tx);
        let copy = workers.clone();
        drop(workers);
        let kept = rx.recv_timeout(Duration::from_millis(200));
        assert_eq!(kept, Err(std::sync::mpsc::RecvTimeoutError::Timeout), "a clone keeps them");
        drop(copy);
        // Every task (and its sender) was dropped with its runtime.
        let ended = rx.try_recv();
        assert_eq!(ended, Err(std::sync::mpsc::TryRecvError::Disconnected), "dropped before drop returned");
    }
}
