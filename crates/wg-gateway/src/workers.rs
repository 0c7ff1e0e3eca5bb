//! Connection workers: every client connection of a gateway runs wholly on one of a fixed set of
//! single-threaded tokio runtimes (one per core), chosen as the least loaded when the
//! connection is accepted.
//!
//! Why: one relayed packet passes three tasks — the client leg's russh session loop, the relay
//! task of its channel, the target leg's session loop — and a recorded one a fourth, the
//! recorder's writer. On one shared work-stealing runtime each of those wake-ups can pull an
//! idle worker thread out of its sleep to steal the task, so a bulk transfer ping-pongs between
//! cores and spends CPU on thread wake-ups and cache misses instead of on the ciphers. Pinning
//! a connection (and everything it spawns: relay tasks, the target leg, the recorder) to one
//! thread keeps every hop a queue push on that thread; connections spread over the threads, so
//! the gateway still uses every core. `bench/ssh_throughput.sh` measures the difference (see the
//! README's performance section).
//!
//! Everything else of the gateway (the control-plane client, the event journal, the command
//! stream) stays on the process's main runtime; connections reach it through channels, which
//! work across runtimes.
//!
//! Lifetime: the worker threads stop when the [`Workers`] is dropped (the last clone of the
//! listener's shared state, i.e. once the listener has stopped and its last connection has
//! ended); a worker that stops drops whatever tasks it still holds.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio_util::sync::CancellationToken;

/// One worker: its runtime and how many connections it holds.
struct Worker {
    handle: tokio::runtime::Handle,
    connections: Arc<AtomicUsize>,
}

/// The connection workers of one listener (see the module docs).
pub(crate) struct Workers {
    workers: Vec<Worker>,
    stop: CancellationToken,
}

impl Workers {
    /// Starts `n` worker threads (at least 1), named `wg-conn-N`. If a runtime or thread cannot
    /// be created (out of memory or threads), the workers started so far serve, and with none
    /// connections run on the caller's runtime: degraded, never refused.
    pub(crate) fn start(n: usize) -> Workers {
        let stop = CancellationToken::new();
        let mut workers = Vec::new();
        for i in 0..n.max(1) {
            match start_worker(i, stop.clone()) {
                Ok(handle) => workers.push(Worker {
                    handle,
                    connections: Arc::new(AtomicUsize::new(0)),
                }),
                Err(e) => {
                    tracing::warn!(error = %e, worker = i, "cannot start a connection worker; connections share the main runtime");
                    break;
                }
            }
        }
        Workers { workers, stop }
    }

    /// One worker per available core (2 if the count cannot be read), or as many as the
    /// environment variable `WARDENGATE_CONNECTION_WORKERS` says; `0` there runs connections on
    /// the main runtime (for comparisons, see `bench/`).
    pub(crate) fn per_core() -> Workers {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        match std::env::var("WARDENGATE_CONNECTION_WORKERS")
            .ok()
            .map(|v| v.trim().parse::<usize>())
        {
            None => Workers::start(cores),
            Some(Ok(0)) => Workers {
                workers: Vec::new(),
                stop: CancellationToken::new(),
            },
            Some(Ok(n)) => Workers::start(n.min(1024)),
            Some(Err(_)) => {
                tracing::warn!(
                    "WARDENGATE_CONNECTION_WORKERS is not a number; using one worker per core"
                );
                Workers::start(cores)
            }
        }
    }

    /// Runs `serve(stream)` for an accepted connection on the least loaded worker. The stream
    /// moves to that worker's I/O driver; the worker counts the connection until `serve`
    /// returns.
    pub(crate) fn spawn<F, Fut>(&self, stream: tokio::net::TcpStream, serve: F)
    where
        F: FnOnce(tokio::net::TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Some(worker) = self
            .workers
            .iter()
            .min_by_key(|w| w.connections.load(Ordering::Relaxed))
        else {
            tokio::spawn(serve(stream));
            return;
        };
        // Deregister from this runtime's I/O driver; the worker registers it with its own.
        let std_stream = match stream.into_std() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot hand an accepted connection to a worker");
                return;
            }
        };
        let connections = worker.connections.clone();
        connections.fetch_add(1, Ordering::Relaxed);
        let guard = CountGuard(connections);
        worker.handle.spawn(async move {
            let _guard = guard;
            match tokio::net::TcpStream::from_std(std_stream) {
                Ok(stream) => serve(stream).await,
                Err(e) => tracing::warn!(error = %e, "cannot register a connection on its worker"),
            }
        });
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Counts one connection of a worker while it lives.
struct CountGuard(Arc<AtomicUsize>);

impl Drop for CountGuard {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Starts worker `i`: a thread driving a current-thread runtime until `stop`, then dropping it
/// (with whatever tasks it still holds) on that thread.
fn start_worker(i: usize, stop: CancellationToken) -> std::io::Result<tokio::runtime::Handle> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let handle = rt.handle().clone();
    std::thread::Builder::new()
        .name(format!("wg-conn-{i}"))
        .spawn(move || {
            rt.block_on(stop.cancelled());
            drop(rt);
        })?;
    Ok(handle)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Connections land on the least loaded worker, each wholly on one thread, and the count
    /// drops when a connection ends.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn connections_spread_and_stay_on_their_worker() {
        let workers = Workers::start(2);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut clients = Vec::new();
        for _ in 0..4 {
            clients.push(tokio::net::TcpStream::connect(addr).await.unwrap());
            let (stream, _) = listener.accept().await.unwrap();
            let tx = tx.clone();
            workers.spawn(stream, move |mut stream| async move {
                use tokio::io::AsyncReadExt;
                let before = std::thread::current().name().map(str::to_string);
                // Hold the connection until the client closes it.
                let mut buf = [0u8; 1];
                let _ = stream.read(&mut buf).await;
                let after = std::thread::current().name().map(str::to_string);
                let _ = tx.send((before, after));
            });
            // Let the worker count the connection before the next one is placed.
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        let loads: Vec<usize> = workers
            .workers
            .iter()
            .map(|w| w.connections.load(Ordering::Relaxed))
            .collect();
        assert_eq!(loads, vec![2, 2], "least loaded placement");
        drop(clients);
        let mut names = Vec::new();
        for _ in 0..4 {
            let (before, after) = rx.recv().await.unwrap();
            assert_eq!(before, after, "a connection never moves between threads");
            names.push(before.unwrap_or_default());
        }
        names.sort();
        assert_eq!(
            names,
            vec!["wg-conn-0", "wg-conn-0", "wg-conn-1", "wg-conn-1"]
        );
        for _ in 0..100 {
            if workers
                .workers
                .iter()
                .all(|w| w.connections.load(Ordering::Relaxed) == 0)
            {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("connection counts did not return to 0");
    }
}
