//! The single writer thread and its group commit (see the module docs of `store`).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::thread;

use rusqlite::Connection;
use tokio::sync::{mpsc, oneshot};

use super::StoreError;
use super::checkpoint::Checkpointer;

/// Called after the batch's commit with its outcome, to answer the job's caller.
type Finish = Box<dyn FnOnce(Result<(), &str>) + Send>;
/// Runs a job's statements and says how to answer afterwards; `None` when no transaction
/// could be opened, so the job runs nothing and reports that.
type Job = Box<dyn FnOnce(Option<&Connection>, Isolation) -> Ran + Send>;

/// How a job's changes are kept apart from the other jobs of its transaction.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Isolation {
    /// Its own savepoint: a failing job undoes only its changes.
    Savepoint,
    /// The job is alone in its transaction, which is rolled back if it fails. A savepoint
    /// would copy every page the job touches into the statement journal for nothing (a
    /// twentieth of a 1,000-email batch's time).
    Alone,
}

/// A job that ran: how to answer, and whether its transaction must be rolled back
/// (a failed job that ran [`Isolation::Alone`]).
struct Ran {
    finish: Finish,
    failed_alone: bool,
}

impl Ran {
    fn answer(finish: Finish) -> Ran {
        Ran {
            finish,
            failed_alone: false,
        }
    }
}

enum Msg {
    Job(Job),
    Stop,
}

thread_local! {
    /// Rollbacks on this thread so far (see [`rollback_epoch`]).
    static ROLLBACKS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// How many rollbacks (of a transaction or of a job's savepoint) the writer thread has made.
/// A cache of database state kept on the writer thread notes this number when it loads and
/// reloads when it changed: a rollback can undo a change the cache already saw.
pub fn rollback_epoch() -> u64 {
    ROLLBACKS.with(|r| r.get())
}

fn rolled_back() {
    ROLLBACKS.with(|r| r.set(r.get() + 1));
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
    /// `checkpointer` is told of every commit (the writer's own connection never
    /// checkpoints on its own, see `store::checkpoint`).
    pub fn start(conn: Connection, checkpointer: Checkpointer) -> Writer {
        let (tx, rx) = mpsc::unbounded_channel();
        let handle = thread::Builder::new()
            .name("mailsflux-db-writer".into())
            .spawn(move || writer_loop(conn, checkpointer, rx))
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
        Box::new(
            move |conn: Option<&Connection>, isolation: Isolation| -> Ran {
                let Some(conn) = conn else {
                    return Ran::answer(Box::new(move |commit: Result<(), &str>| {
                        let msg = commit.err().unwrap_or("no transaction");
                        let _ = reply.send(Err(E::from(StoreError::Task(format!(
                            "cannot begin a write transaction: {msg}"
                        )))));
                    }));
                };
                let savepoint = isolation == Isolation::Savepoint;
                if savepoint && let Err(e) = conn.execute_batch("SAVEPOINT job") {
                    let err = E::from(StoreError::from(e));
                    return Ran::answer(Box::new(move |_| {
                        let _ = reply.send(Err(err));
                    }));
                }
                let outcome = catch_unwind(AssertUnwindSafe(|| f(conn))).unwrap_or_else(|_| {
                    Err(E::from(StoreError::Task("a write job panicked".into())))
                });
                let released = match (&outcome, savepoint) {
                    (Ok(_), true) => conn.execute_batch("RELEASE job").map_err(StoreError::from),
                    _ => Ok(()),
                };
                match (outcome, released) {
                    (Ok(value), Ok(())) => {
                        Ran::answer(Box::new(move |commit: Result<(), &str>| {
                            let _ = reply.send(match commit {
                                Ok(()) => Ok(value),
                                Err(msg) => Err(E::from(StoreError::Task(format!(
                                    "the commit failed: {msg}"
                                )))),
                            });
                        }))
                    }
                    (outcome, released) => {
                        let err = match (outcome, released) {
                            (Err(err), _) => err,
                            (Ok(_), Err(e)) => E::from(e),
                            (Ok(_), Ok(())) => unreachable!("handled above"),
                        };
                        if savepoint {
                            let _ = conn.execute_batch("ROLLBACK TO job; RELEASE job");
                            rolled_back();
                        }
                        Ran {
                            finish: Box::new(move |_| {
                                let _ = reply.send(Err(err));
                            }),
                            failed_alone: !savepoint,
                        }
                    }
                }
            },
        )
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

fn writer_loop(conn: Connection, checkpointer: Checkpointer, mut rx: mpsc::UnboundedReceiver<Msg>) {
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
        checkpointer.committed();
        if checkpointer.restart_due() {
            // Between two transactions, so this checkpoint can finish and the next
            // transaction restarts the WAL from its beginning (see `store::checkpoint`).
            let started = std::time::Instant::now();
            if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                tracing::warn!(error = %e, "a WAL checkpoint by the writer failed");
            }
            tracing::debug!(
                ms = started.elapsed().as_secs_f64() * 1e3,
                "writer checkpoint"
            );
        }
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
            (job(None, Isolation::Alone).finish)(Err(&msg));
        }
        return;
    }
    let isolation = if jobs.len() == 1 {
        Isolation::Alone
    } else {
        Isolation::Savepoint
    };
    let mut rollback = false;
    let finishes: Vec<Finish> = jobs
        .drain(..)
        .map(|job| {
            let ran = job(Some(conn), isolation);
            rollback |= ran.failed_alone;
            ran.finish
        })
        .collect();
    if rollback {
        // The one job of this transaction failed: nothing of it is kept.
        let _ = conn.execute_batch("ROLLBACK");
        rolled_back();
        for finish in finishes {
            finish(Ok(()));
        }
        return;
    }
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
            rolled_back();
            for finish in finishes {
                finish(Err(&msg));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::store::{Db, StoreError};

    fn settings_count(db: &Db, key: &str) -> i64 {
        db.read_blocking()
            .unwrap()
            .query_row("SELECT count(*) FROM settings WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .unwrap()
    }

    fn insert_then(db: &Db, key: &'static str, fail: bool) -> Result<(), StoreError> {
        db.write_blocking(move |c| {
            c.execute("INSERT INTO settings (key, value) VALUES (?1, 'x')", [key])?;
            if fail {
                return Err(StoreError::Task("the job changed its mind".into()));
            }
            Ok(())
        })
    }

    /// A failing job leaves nothing behind, whether it was alone in its transaction (no
    /// savepoint, the transaction is rolled back) or shared it with others (its savepoint).
    #[test]
    fn a_failed_job_keeps_nothing_and_spares_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_for_test(dir.path());
        // Alone: one job at a time.
        assert!(insert_then(&db, "alone-failed", true).is_err());
        insert_then(&db, "alone-ok", false).unwrap();
        assert_eq!(settings_count(&db, "alone-failed"), 0);
        assert_eq!(settings_count(&db, "alone-ok"), 1);
        // Together: many jobs queued at once share transactions.
        let threads: Vec<_> = (0..16)
            .map(|i| {
                let db = db.clone();
                std::thread::spawn(move || {
                    let key: &'static str = Box::leak(format!("together-{i}").into_boxed_str());
                    (key, i % 2 == 0, insert_then(&db, key, i % 2 == 0))
                })
            })
            .collect();
        for t in threads {
            let (key, fail, result) = t.join().unwrap();
            assert_eq!(result.is_err(), fail);
            assert_eq!(settings_count(&db, key), i64::from(!fail), "{key}");
        }
        db.close();
    }
}
