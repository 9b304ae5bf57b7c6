//! The single writer thread and its group commit (see the module docs of `store`).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::thread;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::StoreError;

/// Called after the batch's commit with its outcome, to answer the job's caller.
type Finish = Box<dyn FnOnce(Result<(), &str>) + Send>;
/// Runs a job's statements (inside its savepoint) and says how to answer afterwards; `None`
/// when no transaction could be opened, so the job runs nothing and reports that.
type Job = Box<dyn FnOnce(Option<&Connection>) -> Finish + Send>;

enum Msg {
    Job(Job),
    Stop,
}

/// Most jobs in one transaction: bounds the latency a huge burst adds to its first caller.
const MAX_JOBS_PER_COMMIT: usize = 512;

/// Handle to the writer thread.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::UnboundedSender<Msg>,
    thread: Arc<std::sync::Mutex<Option<thread::JoinHandle<()>>>>,
}

impl Writer {
    /// Starts the writer thread, which owns `conn` from now on.
    pub fn start(conn: Connection) -> Writer {
        let (tx, rx) = mpsc::unbounded_channel();
        let handle = thread::Builder::new()
            .name("mailsflux-db-writer".into())
            .spawn(move || writer_loop(conn, rx))
            .expect("spawning the database writer thread");
        Writer {
            tx,
            thread: Arc::new(std::sync::Mutex::new(Some(handle))),
        }
    }

    fn job<T, E, F>(f: F, reply: oneshot::Sender<Result<T, E>>) -> Job
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        Box::new(move |conn: Option<&Connection>| -> Finish {
            let Some(conn) = conn else {
                return Box::new(move |commit: Result<(), &str>| {
                    let msg = commit.err().unwrap_or("no transaction");
                    let _ = reply.send(Err(E::from(StoreError::Task(format!(
                        "cannot begin a write transaction: {msg}"
                    )))));
                });
            };
            if let Err(e) = conn.execute_batch("SAVEPOINT job") {
                let err = E::from(StoreError::from(e));
                return Box::new(move |_| {
                    let _ = reply.send(Err(err));
                });
            }
            let outcome = catch_unwind(AssertUnwindSafe(|| f(conn)))
                .unwrap_or_else(|_| Err(E::from(StoreError::Task("a write job panicked".into()))));
            match outcome {
                Ok(value) => {
                    if let Err(e) = conn.execute_batch("RELEASE job") {
                        let _ = conn.execute_batch("ROLLBACK TO job; RELEASE job");
                        let err = E::from(StoreError::from(e));
                        return Box::new(move |_| {
                            let _ = reply.send(Err(err));
                        });
                    }
                    Box::new(move |commit: Result<(), &str>| {
                        let _ = reply.send(match commit {
                            Ok(()) => Ok(value),
                            Err(msg) => Err(E::from(StoreError::Task(format!(
                                "the commit failed: {msg}"
                            )))),
                        });
                    })
                }
                Err(err) => {
                    let _ = conn.execute_batch("ROLLBACK TO job; RELEASE job");
                    Box::new(move |_| {
                        let _ = reply.send(Err(err));
                    })
                }
            }
        })
    }

    /// Queues `f` and waits for its commit.
    pub async fn run<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Msg::Job(Self::job(f, reply)))
            .map_err(|_| E::from(StoreError::WriterGone))?;
        answer.await.map_err(|_| E::from(StoreError::WriterGone))?
    }

    /// Like [`Writer::run`], for blocking threads (never call it on an async worker).
    pub fn run_blocking<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Msg::Job(Self::job(f, reply)))
            .map_err(|_| E::from(StoreError::WriterGone))?;
        answer
            .blocking_recv()
            .map_err(|_| E::from(StoreError::WriterGone))?
    }

    /// Finishes the queued jobs, then stops the thread and waits for it.
    pub fn stop(&self) {
        let _ = self.tx.send(Msg::Stop);
        let handle = self.thread.lock().ok().and_then(|mut h| h.take());
        if let Some(handle) = handle {
            let _ = handle.join();
        }
    }
}

fn writer_loop(conn: Connection, mut rx: mpsc::UnboundedReceiver<Msg>) {
    let mut jobs: Vec<Job> = Vec::with_capacity(MAX_JOBS_PER_COMMIT);
    let mut stopping = false;
    while !stopping {
        match rx.blocking_recv() {
            Some(Msg::Job(job)) => jobs.push(job),
            Some(Msg::Stop) | None => break,
        }
        while jobs.len() < MAX_JOBS_PER_COMMIT {
            match rx.try_recv() {
                Ok(Msg::Job(job)) => jobs.push(job),
                Ok(Msg::Stop) => {
                    stopping = true;
                    break;
                }
                Err(_) => break,
            }
        }
        run_batch(&conn, &mut jobs);
    }
    // Jobs that arrived after Stop still get an answer.
    rx.close();
    while let Ok(Msg::Job(job)) = rx.try_recv() {
        jobs.push(job);
    }
    if !jobs.is_empty() {
        run_batch(&conn, &mut jobs);
    }
    let _ = conn.execute_batch("PRAGMA optimize");
}

fn run_batch(conn: &Connection, jobs: &mut Vec<Job>) {
    if let Err(e) = conn.execute_batch("BEGIN IMMEDIATE") {
        let msg = e.to_string();
        tracing::error!(error = %msg, "cannot begin a write transaction");
        for job in jobs.drain(..) {
            job(None)(Err(&msg));
        }
        return;
    }
    let finishes: Vec<Finish> = jobs.drain(..).map(|job| job(Some(conn))).collect();
    let commit = conn.execute_batch("COMMIT");
    match commit {
        Ok(()) => {
            for finish in finishes {
                finish(Ok(()));
            }
        }
        Err(e) => {
            let msg = e.to_string();
            tracing::error!(error = %msg, "a group commit failed");
            let _ = conn.execute_batch("ROLLBACK");
            for finish in finishes {
                finish(Err(&msg));
            }
        }
    }
}
