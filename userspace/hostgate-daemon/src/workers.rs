//! Connection workers: one thread per core, each with its own
//! current-thread tokio runtime. A service gives each worker its own copy
//! of every listening socket and accept loop, so a connection is served,
//! start to end, by the worker that accepted it, and no task is woken on
//! another core. (On one multi-thread runtime, as NGINX's workers would
//! not, an idle second worker was parked and woken about once per HTTP
//! request; those context switches cost more CPU than the proxying.)
//!
//! The HTTP proxy's workers live as long as the process (connections
//! outlive a control runtime's end during an upgrade hand-over, see
//! `lib.rs`); the SSH proxy's live for one daemon run. Workers stop when
//! the last clone of their `Workers` is dropped: each thread then drops
//! its runtime, and with it every task still on it.

use std::sync::Arc;

use anyhow::Context;
use tokio::runtime::Handle;

/// The workers' runtimes; each is driven by its own thread.
#[derive(Clone, Debug)]
pub struct Workers {
    handles: Vec<Handle>,
    /// Dropped with the last clone, which stops the threads.
    _running: Arc<Running>,
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
        Ok(Workers { handles, _running: Arc::new(Running { stop, threads }) })
    }

    pub fn handles(&self) -> &[Handle] {
        &self.handles
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
