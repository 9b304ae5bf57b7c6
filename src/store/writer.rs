//! The single writer thread and its group commit (see the module docs of `store`).

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::thread;
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::checkpoint::Checkpointer;
use super::{StoreError, execute_cached};

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

/// A job whose work may run more than once: it only reads what it captured and only
/// touches the database. Such jobs share one savepoint per transaction instead of one each
/// (see [`run_batch`]); a savepoint copies every page its job changes into the statement
/// journal, which for single sends was a fifth of the writer's work.
trait RepeatableJob: Send {
    /// Runs the work and keeps its outcome; true when it succeeded.
    fn attempt(&mut self, conn: &Connection) -> bool;
    /// Makes the job's outcome this failure (its savepoint could not be managed).
    fn fail(&mut self, error: StoreError);
    /// Answers the caller with the kept outcome, or with the commit's failure.
    fn finish(self: Box<Self>, commit: Result<(), &str>);
}

struct Repeatable<T, E, F> {
    work: F,
    reply: oneshot::Sender<Result<T, E>>,
    outcome: Option<Result<T, E>>,
}

impl<T, E, F> RepeatableJob for Repeatable<T, E, F>
where
    T: Send + 'static,
    E: From<StoreError> + Send + 'static,
    F: Fn(&Connection) -> Result<T, E> + Send + 'static,
{
    fn attempt(&mut self, conn: &Connection) -> bool {
        let outcome = run_checked(conn, &self.work);
        let ok = outcome.is_ok();
        self.outcome = Some(outcome);
        ok
    }

    fn fail(&mut self, error: StoreError) {
        self.outcome = Some(Err(E::from(error)));
    }

    fn finish(self: Box<Self>, commit: Result<(), &str>) {
        let answer = match (self.outcome, commit) {
            (Some(Ok(_)), Err(msg)) => Err(E::from(commit_failed(msg))),
            (Some(outcome), _) => outcome,
            (None, commit) => Err(E::from(StoreError::Task(format!(
                "cannot begin a write transaction: {}",
                commit.err().unwrap_or("no transaction")
            )))),
        };
        let _ = self.reply.send(answer);
    }
}

/// Runs a job's work: a panic becomes an error, and so does a deferred foreign key the
/// work left unresolved (see [`unresolved_foreign_keys`]), so that the job fails by itself.
fn run_checked<T, E>(
    conn: &Connection,
    work: impl FnOnce(&Connection) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<StoreError>,
{
    catch_unwind(AssertUnwindSafe(|| work(conn)))
        .unwrap_or_else(|_| Err(E::from(StoreError::Task("a write job panicked".into()))))
        .and_then(|value| match unresolved_foreign_keys(conn) {
            0 => Ok(value),
            n => Err(E::from(StoreError::Task(format!(
                "the write left {n} foreign key constraint(s) unresolved \
                 (rows that point at rows that do not exist)"
            )))),
        })
}

fn commit_failed(msg: &str) -> StoreError {
    StoreError::Task(format!("the commit failed: {msg}"))
}

enum Msg {
    /// A job that shares its transaction with whatever else is queued.
    Job(Job),
    /// A job that shares its transaction and may run twice (see [`RepeatableJob`]).
    Repeatable(Box<dyn RepeatableJob>),
    /// A job that gets a transaction of its own (see [`Writer::run_alone`]).
    BigJob(Job),
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

pub(super) fn rolled_back() {
    ROLLBACKS.with(|r| r.set(r.get() + 1));
}

/// How many foreign key constraints the transaction so far leaves unresolved. Those of
/// `recipients` and `email_contents` are deferred to COMMIT (schema.sql, step 8), which a
/// group commit shares between jobs: checked after each job, a violation fails the job
/// that made it (its savepoint is rolled back, which takes the count back with it), not
/// the whole commit.
pub(super) fn unresolved_foreign_keys(conn: &Connection) -> i32 {
    let (mut current, mut highest) = (0, 0);
    // SAFETY: the handle is this live connection's, used on its own thread; the call only
    // reads a counter into the two integers.
    let rc = unsafe {
        rusqlite::ffi::sqlite3_db_status(
            conn.handle(),
            rusqlite::ffi::SQLITE_DBSTATUS_DEFERRED_FKS,
            &mut current,
            &mut highest,
            0,
        )
    };
    if rc == rusqlite::ffi::SQLITE_OK {
        current
    } else {
        0
    }
}

/// Most jobs in one transaction: bounds the latency a huge burst adds to its first caller.
const MAX_JOBS_PER_COMMIT: usize = 512;

/// While requests that will write are on their way ([`ExpectedWrite`]), a transaction
/// waits for them until this long after the one before it began. Without it the writer,
/// quicker than the requests that feed it, committed groups of a few single sends (800
/// commits a second): each commit rewrites the same dozen B-tree pages into the WAL, which
/// the checkpoint then copies and syncs. (Under `synchronous = full` the writer no longer
/// waits for the fsync, see [`Syncer`], so the window gathers there too.) With nothing on
/// its way, nothing waits.
pub(super) const GATHER_WINDOW: Duration = Duration::from_micros(2_000);

/// How often a gathering writer looks again whether the writes it waits for are still on
/// their way (a request that fails validation never sends its job).
const GATHER_POLL: Duration = Duration::from_micros(200);

/// Handle to the writer thread.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Msg>,
    thread: Arc<std::sync::Mutex<Option<thread::JoinHandle<()>>>>,
    /// Requests holding an [`ExpectedWrite`].
    expected: Arc<AtomicUsize>,
    stats: Arc<WriterStats>,
}

/// What the writer has done so far, for `/metrics`: jobs per transaction is how much
/// group commit is sharing.
#[derive(Debug, Default)]
pub struct WriterStats {
    transactions: AtomicU64,
    jobs: AtomicU64,
    /// Commits whose WAL frames the [`Syncer`] has synced (zero without one).
    synced: AtomicU64,
}

impl WriterStats {
    /// Commits made durable by the WAL sync thread so far (under `synchronous = full`).
    pub fn synced(&self) -> u64 {
        self.synced.load(Ordering::Acquire)
    }

    /// Transactions run (each one commit, or one rollback of a lone failed job).
    pub fn transactions(&self) -> u64 {
        self.transactions.load(Ordering::Relaxed)
    }

    /// Jobs run in them (a combined job counts each write it carries, see
    /// `store::combine`).
    pub fn jobs(&self) -> u64 {
        self.jobs.load(Ordering::Relaxed)
    }

    /// Counts `n` more writes carried by a job already counted once.
    pub(super) fn add_carried(&self, n: u64) {
        self.jobs.fetch_add(n, Ordering::Relaxed);
    }
}

/// A write a request is about to queue (a single send, while it is being prepared): the
/// writer lets its transaction gather a moment longer for it (see `GATHER_WINDOW`).
/// Spent by [`ExpectedWrite::run_repeatable`] (or a [`super::combine::Combiner`]); dropping
/// it unspent withdraws it.
pub struct ExpectedWrite {
    writer: Writer,
}

impl ExpectedWrite {
    /// The writer this write goes to.
    pub(super) fn writer(&self) -> Writer {
        self.writer.clone()
    }

    /// Like [`Writer::run`] for work that may run more than once (see `RepeatableJob`):
    /// `f` must only read its captures and write to the database. The expectation is
    /// withdrawn once the job is queued.
    pub async fn run_repeatable<T, E, F>(self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: Fn(&Connection) -> Result<T, E> + Send + 'static,
    {
        self.queue_repeatable(f)?
            .await
            .map_err(|_| E::from(StoreError::WriterGone))?
    }

    /// [`ExpectedWrite::run_repeatable`] without the wait: where the answer will come.
    pub(super) fn queue_repeatable<T, E, F>(
        self,
        f: F,
    ) -> Result<oneshot::Receiver<Result<T, E>>, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: Fn(&Connection) -> Result<T, E> + Send + 'static,
    {
        self.writer.queue_repeatable(f)
    }
}

impl Drop for ExpectedWrite {
    fn drop(&mut self) {
        self.writer.expected.fetch_sub(1, Ordering::Release);
    }
}

impl Writer {
    /// Starts the writer thread, which owns `conn` from now on.
    /// `checkpointer` is told of every commit (the writer's own connection never
    /// checkpoints on its own, see `store::checkpoint`). `gather_window` is
    /// `GATHER_WINDOW` but in tests.
    ///
    /// With `sync_wal` (under `synchronous = full`), `conn` must run at `synchronous =
    /// NORMAL`: a thread of its own then syncs the WAL after the commits and answers their
    /// jobs only once it has, while the writer goes on with the next transaction.
    pub fn start(
        conn: Connection,
        checkpointer: Checkpointer,
        gather_window: Duration,
        sync_wal: Option<PathBuf>,
    ) -> Writer {
        let (tx, rx) = mpsc::channel();
        let expected = Arc::new(AtomicUsize::new(0));
        let stats = Arc::new(WriterStats::default());
        let incoming = Incoming {
            rx,
            expected: expected.clone(),
            stats: stats.clone(),
        };
        let syncer = sync_wal.map(|wal| Syncer::start(wal, stats.clone()));
        let handle = thread::Builder::new()
            .name("mailsflux-db-writer".into())
            .spawn(move || writer_loop(conn, checkpointer, incoming, gather_window, syncer))
            .expect("spawning the database writer thread");
        Writer {
            tx,
            thread: Arc::new(std::sync::Mutex::new(Some(handle))),
            expected,
            stats,
        }
    }

    /// What the writer has done so far.
    pub fn stats(&self) -> Arc<WriterStats> {
        self.stats.clone()
    }

    /// Announces a write this caller is about to queue (see [`ExpectedWrite`]).
    pub fn expect(&self) -> ExpectedWrite {
        self.expected.fetch_add(1, Ordering::Release);
        ExpectedWrite {
            writer: self.clone(),
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
                if savepoint && let Err(e) = execute_cached(conn, "SAVEPOINT job") {
                    let err = E::from(StoreError::from(e));
                    return Ran::answer(Box::new(move |_| {
                        let _ = reply.send(Err(err));
                    }));
                }
                let outcome = run_checked(conn, f);
                let released = match (&outcome, savepoint) {
                    (Ok(_), true) => execute_cached(conn, "RELEASE job").map_err(StoreError::from),
                    _ => Ok(()),
                };
                match (outcome, released) {
                    (Ok(value), Ok(())) => {
                        Ran::answer(Box::new(move |commit: Result<(), &str>| {
                            let _ = reply.send(match commit {
                                Ok(()) => Ok(value),
                                Err(msg) => Err(E::from(commit_failed(msg))),
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
                            let _ = execute_cached(conn, "ROLLBACK TO job")
                                .and_then(|()| execute_cached(conn, "RELEASE job"));
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
        self.queue(Msg::Job, f).await
    }

    /// Like [`Writer::run`], in a transaction of its own. For big jobs (a batch of a
    /// thousand emails): sharing a commit saves them nothing, and sharing it would put them
    /// in a savepoint, which copies every page they touch into the statement journal.
    pub async fn run_alone<T, E, F>(&self, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        self.queue(Msg::BigJob, f).await
    }

    fn queue_repeatable<T, E, F>(&self, f: F) -> Result<oneshot::Receiver<Result<T, E>>, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: Fn(&Connection) -> Result<T, E> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Repeatable {
            work: f,
            reply,
            outcome: None,
        };
        self.tx
            .send(Msg::Repeatable(Box::new(job)))
            .map_err(|_| E::from(StoreError::WriterGone))?;
        Ok(answer)
    }

    async fn queue<T, E, F>(&self, kind: fn(Job) -> Msg, f: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: From<StoreError> + Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(kind(Self::job(f, reply)))
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

/// The jobs gathered for one transaction.
#[derive(Default)]
struct Group {
    jobs: Vec<Job>,
    repeatables: Vec<Box<dyn RepeatableJob>>,
}

impl Group {
    fn len(&self) -> usize {
        self.jobs.len() + self.repeatables.len()
    }

    fn push(&mut self, msg: Msg) {
        match msg {
            Msg::Job(job) | Msg::BigJob(job) => self.jobs.push(job),
            Msg::Repeatable(job) => self.repeatables.push(job),
            Msg::Stop => {}
        }
    }
}

/// The writer's end of the queue, the count of writes on their way to it, and what the
/// writer tells of its work.
struct Incoming {
    rx: mpsc::Receiver<Msg>,
    expected: Arc<AtomicUsize>,
    stats: Arc<WriterStats>,
}

impl Incoming {
    /// The next queued message. When none is queued but writes are expected, waits for
    /// one until `gather_until`.
    fn next(&self, gather_until: Instant) -> Option<Msg> {
        loop {
            match self.rx.try_recv() {
                Ok(msg) => return Some(msg),
                Err(TryRecvError::Disconnected) => return None,
                Err(TryRecvError::Empty) => {}
            }
            if self.expected.load(Ordering::Acquire) == 0 {
                return None;
            }
            let wait = gather_until.checked_duration_since(Instant::now())?;
            match self.rx.recv_timeout(wait.min(GATHER_POLL)) {
                Ok(msg) => return Some(msg),
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return None,
            }
        }
    }
}

fn writer_loop(
    conn: Connection,
    checkpointer: Checkpointer,
    incoming: Incoming,
    window: Duration,
    syncer: Option<Syncer>,
) {
    // Dropped before `conn` (a parameter outlives the locals), as it must be.
    let _kept = super::rows::keep_statements(&conn);
    let mut group = Group::default();
    // A message taken from the queue that could not join the transaction being gathered.
    let mut held: Option<Msg> = None;
    // When the last transaction began.
    let mut last_start = Instant::now();
    loop {
        let first = match held.take() {
            Some(msg) => msg,
            None => match incoming.rx.recv() {
                Ok(msg) => msg,
                Err(_) => break,
            },
        };
        let shares = match first {
            Msg::Stop => break,
            Msg::BigJob(_) => false,
            Msg::Job(_) | Msg::Repeatable(_) => true,
        };
        group.push(first);
        let gather_until = last_start + window;
        while shares && group.len() < MAX_JOBS_PER_COMMIT {
            match incoming.next(gather_until) {
                Some(msg @ (Msg::Job(_) | Msg::Repeatable(_))) => group.push(msg),
                Some(other) => {
                    held = Some(other);
                    break;
                }
                None => break,
            }
        }
        last_start = Instant::now();
        let jobs = group.len() as u64;
        run_batch(&conn, &mut group, syncer.as_ref());
        incoming.stats.transactions.fetch_add(1, Ordering::Relaxed);
        incoming.stats.jobs.fetch_add(jobs, Ordering::Relaxed);
        checkpointer.committed();
        if checkpointer.restart_due() {
            // Between two transactions, so this checkpoint can finish and the next
            // transaction restarts the WAL from its beginning (see `store::checkpoint`).
            let started = Instant::now();
            match super::checkpoint::passive(&conn) {
                Ok((log, done)) => tracing::debug!(
                    log,
                    done,
                    ms = started.elapsed().as_secs_f64() * 1e3,
                    "writer checkpoint"
                ),
                Err(e) => tracing::warn!(error = %e, "a WAL checkpoint by the writer failed"),
            }
        }
    }
    // Jobs that arrived after Stop still get an answer.
    while let Ok(msg) = incoming.rx.try_recv() {
        group.push(msg);
    }
    if group.len() > 0 {
        run_batch(&conn, &mut group, syncer.as_ref());
    }
    let _ = conn.execute_batch("PRAGMA optimize");
}

fn run_batch(conn: &Connection, group: &mut Group, syncer: Option<&Syncer>) {
    if let Err(e) = execute_cached(conn, "BEGIN IMMEDIATE") {
        let msg = e.to_string();
        tracing::error!(error = %msg, "cannot begin a write transaction");
        for job in group.jobs.drain(..) {
            (job(None, Isolation::Alone).finish)(Err(&msg));
        }
        for job in group.repeatables.drain(..) {
            job.finish(Err(&msg));
        }
        return;
    }
    let isolation = if group.len() == 1 {
        Isolation::Alone
    } else {
        Isolation::Savepoint
    };
    let mut rollback = false;
    let finishes: Vec<Finish> = group
        .jobs
        .drain(..)
        .map(|job| {
            let ran = job(Some(conn), isolation);
            rollback |= ran.failed_alone;
            ran.finish
        })
        .collect();
    let mut repeatables = std::mem::take(&mut group.repeatables);
    if !repeatables.is_empty() {
        rollback |= !attempt_repeatables(conn, &mut repeatables, isolation);
    }
    let commit = if rollback {
        // The one job of this transaction failed: nothing of it is kept.
        let _ = execute_cached(conn, "ROLLBACK");
        rolled_back();
        Ok(())
    } else {
        execute_cached(conn, "COMMIT").map_err(|e| {
            let msg = e.to_string();
            tracing::error!(error = %msg, "a group commit failed");
            let _ = execute_cached(conn, "ROLLBACK");
            rolled_back();
            msg
        })
    };
    let commit = commit.as_ref().map_err(String::as_str).copied();
    match syncer {
        // Something was committed: answered once it is on disk.
        Some(syncer) if commit.is_ok() && !rollback => syncer.answer_when_synced(Committed {
            finishes,
            repeatables: std::mem::take(&mut repeatables),
        }),
        _ => {
            for finish in finishes {
                finish(commit);
            }
            for job in repeatables.drain(..) {
                job.finish(commit);
            }
        }
    }
    // The vector's room is kept for the next transaction.
    group.repeatables = repeatables;
}

/// The answers of one committed transaction, waiting for its WAL frames to be synced.
struct Committed {
    finishes: Vec<Finish>,
    repeatables: Vec<Box<dyn RepeatableJob>>,
}

/// Syncs the WAL for the writer under `synchronous = full` and answers the commits' jobs
/// once their frames are on disk.
///
/// SQLite syncs the WAL inside COMMIT, holding the write lock, so under `full` the writer
/// sat idle through every fsync (several milliseconds on the benchmark machine) while the
/// next group waited. Its connection now commits at `synchronous = NORMAL` (the same
/// frames, the same order, no fsync) and hands the answers here: one `fdatasync` covers
/// every commit made before it began, and only then are their callers answered, so an
/// answer still means "on disk", while the writer runs the next transaction. SQLite's own
/// checkpoints and WAL restarts sync as they do under `full`. What differs: a reader may
/// see rows committed but not synced yet, whose writers have not been answered (a crash
/// then loses them, as it would have lost them unanswered before).
struct Syncer {
    tx: Option<mpsc::Sender<Committed>>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Syncer {
    fn start(wal: PathBuf, stats: Arc<WriterStats>) -> Syncer {
        let (tx, rx) = mpsc::channel();
        let thread = thread::Builder::new()
            .name("mailsflux-db-sync".into())
            .spawn(move || sync_loop(&wal, &rx, &stats))
            .expect("spawning the WAL sync thread");
        Syncer {
            tx: Some(tx),
            thread: Some(thread),
        }
    }

    fn answer_when_synced(&self, committed: Committed) {
        if let Some(Err(mpsc::SendError(committed))) = self.tx.as_ref().map(|tx| tx.send(committed))
        {
            // The thread is gone (it panicked): nothing can vouch for these commits.
            answer(committed, Err("the WAL sync thread stopped"));
        }
    }
}

impl Drop for Syncer {
    /// Answers what is still waiting (after a last sync) before the writer closes.
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn answer(committed: Committed, outcome: Result<(), &str>) {
    for finish in committed.finishes {
        finish(outcome);
    }
    for job in committed.repeatables {
        job.finish(outcome);
    }
}

fn sync_loop(wal_path: &Path, rx: &mpsc::Receiver<Committed>, stats: &WriterStats) {
    let mut wal: Option<std::fs::File> = None;
    while let Ok(first) = rx.recv() {
        let mut waiting = vec![first];
        waiting.extend(rx.try_iter());
        let synced = match &wal {
            Some(file) => file.sync_data(),
            // Opened at the first commit, when the WAL surely exists. SQLite keeps the
            // file while any connection is open (a restart rewrites it in place).
            None => std::fs::File::open(wal_path).and_then(|file| {
                let synced = file.sync_data();
                wal = Some(file);
                synced
            }),
        };
        let failure = synced.err().map(|e| {
            tracing::error!(error = %e, wal = %wal_path.display(), "syncing the WAL failed");
            format!("syncing the write-ahead log failed: {e}")
        });
        if failure.is_none() {
            stats
                .synced
                .fetch_add(waiting.len() as u64, Ordering::Release);
        }
        for committed in waiting {
            answer(committed, failure.as_deref().map_or(Ok(()), Err));
        }
    }
}

/// Runs the repeatable jobs of a transaction under one shared savepoint (none for a job
/// alone in its transaction). When one fails, that is undone and each runs again under its
/// own savepoint, so that only the failing ones fail, as if each had been alone; a job
/// that can undo part of its work itself (`store::combine`) learns from its second run
/// that it must. Returns false when the transaction could not be begun again after
/// undoing a lone job: the caller rolls back.
fn attempt_repeatables(
    conn: &Connection,
    jobs: &mut [Box<dyn RepeatableJob>],
    isolation: Isolation,
) -> bool {
    if isolation == Isolation::Alone {
        if jobs.iter_mut().all(|job| job.attempt(conn)) {
            return true;
        }
        let _ = execute_cached(conn, "ROLLBACK");
        rolled_back();
        if let Err(e) = execute_cached(conn, "BEGIN IMMEDIATE") {
            let msg = e.to_string();
            for job in jobs.iter_mut() {
                job.fail(StoreError::Task(format!(
                    "cannot begin a write transaction: {msg}"
                )));
            }
            return false;
        }
    } else if execute_cached(conn, "SAVEPOINT shared").is_ok() {
        if jobs.iter_mut().all(|job| job.attempt(conn))
            && execute_cached(conn, "RELEASE shared").is_ok()
        {
            return true;
        }
        let _ = execute_cached(conn, "ROLLBACK TO shared")
            .and_then(|()| execute_cached(conn, "RELEASE shared"));
        rolled_back();
    }
    for job in jobs.iter_mut() {
        if let Err(e) = execute_cached(conn, "SAVEPOINT job") {
            job.fail(StoreError::from(e));
            continue;
        }
        let kept = job.attempt(conn)
            && match execute_cached(conn, "RELEASE job") {
                Ok(()) => true,
                Err(e) => {
                    job.fail(StoreError::from(e));
                    false
                }
            };
        if !kept {
            let _ = execute_cached(conn, "ROLLBACK TO job")
                .and_then(|()| execute_cached(conn, "RELEASE job"));
            rolled_back();
        }
    }
    true
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
        sixteen_at_once(&db, 2, insert_then);
        db.close();
    }

    /// Under `synchronous = full` the writer commits without syncing and each answer waits
    /// for a sync of the WAL that covers its commit: every job notes how many
    /// transactions came before its own, and when its answer arrives the syncer must have
    /// synced at least one more than that. Failing jobs still fail alone.
    #[test]
    fn under_full_an_answer_comes_only_after_its_commit_is_synced() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&crate::config::DatabaseConfig {
            path: dir.path().join("full.db"),
            synchronous: crate::config::Synchronous::Full,
        })
        .unwrap();
        let stats = db.writer_stats();
        let threads: Vec<_> = (0..8)
            .map(|t| {
                let (db, stats) = (db.clone(), stats.clone());
                std::thread::spawn(move || {
                    for i in 0..25 {
                        let inner = stats.clone();
                        let before: u64 = db
                            .write_blocking(move |c| -> Result<u64, StoreError> {
                                c.execute(
                                    "INSERT INTO settings (key, value) VALUES (?1, 'x')",
                                    [format!("full-{t}-{i}")],
                                )?;
                                Ok(inner.transactions())
                            })
                            .unwrap();
                        let synced = stats.synced();
                        assert!(
                            synced > before,
                            "answered with {synced} synced, own commit #{}",
                            before + 1
                        );
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let rows: i64 = db
            .read_blocking()
            .unwrap()
            .query_row(
                "SELECT count(*) FROM settings WHERE key LIKE 'full-%'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(rows, 200);
        assert!(stats.synced() >= 1 && stats.synced() <= stats.transactions());
        sixteen_at_once(&db, 3, insert_then);
        db.close();
        // Without `full` nothing is synced by the writer's side.
        let normal = Db::open_for_test(dir.path());
        insert_then(&normal, "normal", false).unwrap();
        assert_eq!(normal.writer_stats().synced(), 0);
        normal.close();
    }

    /// Runs sixteen jobs `job(db, key, fails)` at once from as many threads, so that they
    /// share transactions; every `nth` one fails. Checks that exactly those failed and
    /// left their `key` out of `settings`.
    fn sixteen_at_once(
        db: &Db,
        nth: usize,
        job: fn(&Db, &'static str, bool) -> Result<(), StoreError>,
    ) {
        let threads: Vec<_> = (0..16)
            .map(|i| {
                let db = db.clone();
                std::thread::spawn(move || {
                    let key: &'static str = Box::leak(format!("together-{i}").into_boxed_str());
                    (key, i % nth == 0, job(&db, key, i % nth == 0))
                })
            })
            .collect();
        for t in threads {
            let (key, fails, result) = t.join().unwrap();
            assert_eq!(result.is_err(), fails, "{key}");
            assert_eq!(settings_count(db, key), i64::from(!fails), "{key}");
        }
    }

    /// A job that leaves a row pointing at nothing (a deferred foreign key, see
    /// `unresolved_foreign_keys`) fails by itself, alone or sharing its transaction, and
    /// the jobs committed with it keep their rows.
    #[test]
    fn a_job_that_breaks_a_deferred_foreign_key_fails_alone() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_for_test(dir.path());
        fn orphan(db: &Db, key: &'static str, broken: bool) -> Result<(), StoreError> {
            db.write_blocking(move |c| -> Result<(), StoreError> {
                c.execute("INSERT INTO settings (key, value) VALUES (?1, 'x')", [key])?;
                if broken {
                    c.execute(
                        "INSERT INTO email_contents (email_id, raw) VALUES ('msg_none', x'00')",
                        [],
                    )?;
                }
                Ok(())
            })
        }
        let err = orphan(&db, "alone", true).unwrap_err().to_string();
        assert!(err.contains("foreign key"), "{err}");
        assert_eq!(settings_count(&db, "alone"), 0);
        sixteen_at_once(&db, 3, orphan);
        assert_eq!(contents_count(&db), 0);
        db.close();
    }

    /// Rows of `email_contents` (none exists in these tests but an orphan left behind).
    fn contents_count(db: &Db) -> i64 {
        db.read_blocking()
            .unwrap()
            .query_row("SELECT count(*) FROM email_contents", [], |r| r.get(0))
            .unwrap()
    }

    /// A repeatable job that counts its runs in `runs`, inserts `key` into `settings`, then
    /// does `then` (which may fail, panic or leave an orphan row).
    async fn counted_insert(
        db: Db,
        runs: std::sync::Arc<std::sync::atomic::AtomicUsize>,
        key: String,
        then: fn(&rusqlite::Connection) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        db.expect_write()
            .run_repeatable(move |c| -> Result<(), StoreError> {
                runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                c.execute("INSERT INTO settings (key, value) VALUES (?1, 'x')", [&key])?;
                then(c)
            })
            .await
    }

    fn succeed(_: &rusqlite::Connection) -> Result<(), StoreError> {
        Ok(())
    }

    fn change_mind(_: &rusqlite::Connection) -> Result<(), StoreError> {
        Err(StoreError::Task("the job changed its mind".into()))
    }

    fn panic_midway(_: &rusqlite::Connection) -> Result<(), StoreError> {
        panic!("a job panics")
    }

    fn leave_orphan(c: &rusqlite::Connection) -> Result<(), StoreError> {
        c.execute(
            "INSERT INTO email_contents (email_id, raw) VALUES ('msg_none', x'00')",
            [],
        )?;
        Ok(())
    }

    /// Repeatable jobs share one savepoint; when one of them fails (an error, a panic, a
    /// broken foreign key) they are undone and run again each in its own, so that exactly
    /// the failing ones fail and the others keep their rows.
    #[test]
    fn repeatable_jobs_that_fail_fail_alone() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_for_test(dir.path());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        // Holds the writer until every job is queued, so that they share one transaction.
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let hold = db.write(move |_| -> Result<(), StoreError> {
            let _ = gate.recv();
            Ok(())
        });
        let then = |i: usize| match i {
            2 => panic_midway,
            3 => leave_orphan,
            i if i % 5 == 1 => change_mind,
            _ => succeed,
        };
        let runs = Arc::new(AtomicUsize::new(0));
        let results = runtime.block_on(async {
            let jobs =
                futures_util::future::join_all((0..16).map(|i| {
                    counted_insert(db.clone(), runs.clone(), format!("rep-{i}"), then(i))
                }));
            let (held, results, ()) = tokio::join!(hold, jobs, async {
                tokio::task::yield_now().await;
                release.send(()).unwrap();
            });
            held.unwrap();
            results
        });
        let failing = |i: usize| i % 5 == 1 || i == 2 || i == 3;
        for (i, result) in results.iter().enumerate() {
            assert_eq!(result.is_err(), failing(i), "job {i}: {result:?}");
            assert_eq!(
                settings_count(&db, &format!("rep-{i}")),
                i64::from(!failing(i))
            );
        }
        // A failure in the shared savepoint made every job run a second time.
        assert!(
            runs.load(Ordering::SeqCst) > 16,
            "the jobs were never run again"
        );
        assert_eq!(contents_count(&db), 0);
        db.close();
    }

    /// Without failures, repeatable jobs run once; a lone failing one rolls back its own
    /// transaction and runs once more, alone under a savepoint in a new one (where a
    /// combined job writes each of its items alone, see `store::combine`).
    #[test]
    fn repeatable_jobs_run_once_when_all_succeed() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_for_test(dir.path());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let runs = Arc::new(AtomicUsize::new(0));
        let results =
            runtime.block_on(futures_util::future::join_all((0..16).map(|i| {
                counted_insert(db.clone(), runs.clone(), format!("ok-{i}"), succeed)
            })));
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(runs.load(Ordering::SeqCst), 16);
        let lone = counted_insert(db.clone(), runs.clone(), "lone".into(), change_mind);
        assert!(runtime.block_on(lone).is_err());
        assert_eq!(settings_count(&db, "lone"), 0);
        assert_eq!(runs.load(Ordering::SeqCst), 18, "the lone job ran twice");
        // The writer goes on as before.
        let next = counted_insert(db.clone(), runs.clone(), "next".into(), succeed);
        assert!(runtime.block_on(next).is_ok());
        assert_eq!(settings_count(&db, "next"), 1);
        db.close();
    }

    /// A big job runs in a transaction of its own, which its failure rolls back whole: the
    /// small jobs queued around it must never share that transaction, or they would be
    /// rolled back with it.
    #[test]
    fn a_failing_big_job_undoes_only_itself() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_for_test(dir.path());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let small = |i: usize| {
            let db = db.clone();
            async move {
                db.write(move |c| -> Result<(), StoreError> {
                    c.execute(
                        "INSERT INTO settings (key, value) VALUES (?1, 'x')",
                        [format!("small-{i}")],
                    )?;
                    Ok(())
                })
                .await
            }
        };
        let big = |key: &'static str, fail: bool| {
            let db = db.clone();
            async move {
                db.write_alone(move |c| -> Result<(), StoreError> {
                    for n in 0..1_000 {
                        c.execute(
                            "INSERT INTO settings (key, value) VALUES (?1, 'x')",
                            [format!("{key}-{n}")],
                        )?;
                    }
                    if fail {
                        return Err(StoreError::Task("the big job changed its mind".into()));
                    }
                    Ok(())
                })
                .await
            }
        };
        let (first, failed, kept, last) = runtime.block_on(async {
            tokio::join!(
                futures_util::future::join_all((0..8).map(small)),
                big("big-failed", true),
                big("big-kept", false),
                futures_util::future::join_all((8..16).map(small)),
            )
        });
        assert!(first.iter().chain(&last).all(Result::is_ok));
        assert!(failed.is_err());
        assert!(kept.is_ok());
        let count = |pattern: &str| -> i64 {
            db.read_blocking()
                .unwrap()
                .query_row(
                    "SELECT count(*) FROM settings WHERE key LIKE ?1",
                    [pattern],
                    |r| r.get(0),
                )
                .unwrap()
        };
        assert_eq!(count("small-%"), 16);
        assert_eq!(count("big-failed-%"), 0);
        assert_eq!(count("big-kept-%"), 1_000);
        db.close();
    }

    /// A writer on a fresh database with a gathering window long enough that only the
    /// expectations decide, and a table `t (x)`.
    fn patient_writer(dir: &std::path::Path) -> super::Writer {
        use crate::config::Synchronous;
        use crate::store::open_connection;
        let path = dir.join("w.db");
        let conn = open_connection(&path, Synchronous::Normal).unwrap();
        conn.execute_batch("CREATE TABLE t (x TEXT NOT NULL)")
            .unwrap();
        let checkpointer =
            super::Checkpointer::start(open_connection(&path, Synchronous::Normal).unwrap());
        super::Writer::start(conn, checkpointer, std::time::Duration::from_secs(60), None)
    }

    /// Inserts `x` from a thread of its own; the receiver hears once it has committed.
    fn insert_from_thread(
        writer: &super::Writer,
        x: &'static str,
    ) -> std::sync::mpsc::Receiver<()> {
        let (done, committed) = std::sync::mpsc::channel();
        let writer = writer.clone();
        std::thread::spawn(move || {
            writer
                .run_blocking(move |c| -> Result<(), StoreError> {
                    c.execute("INSERT INTO t (x) VALUES (?1)", [x])?;
                    Ok(())
                })
                .unwrap();
            let _ = done.send(());
        });
        committed
    }

    /// While a write is expected, the transaction after a recent one waits for it (here
    /// for as long as it takes: the window is a minute), and both commit together; an
    /// expectation dropped unspent stops the wait; with none, nothing waits.
    #[test]
    fn a_transaction_waits_for_expected_writes() {
        use std::sync::mpsc::RecvTimeoutError;
        use std::time::Duration;
        let dir = tempfile::tempdir().unwrap();
        let writer = patient_writer(dir.path());

        // Nothing expected: no wait, although a transaction just began.
        insert_from_thread(&writer, "first")
            .recv_timeout(Duration::from_secs(20))
            .unwrap();
        insert_from_thread(&writer, "unexpected")
            .recv_timeout(Duration::from_secs(20))
            .unwrap();

        let expected = writer.expect();
        let waiting = insert_from_thread(&writer, "waits");
        assert_eq!(
            waiting.recv_timeout(Duration::from_millis(300)),
            Err(RecvTimeoutError::Timeout),
            "the transaction did not wait for the expected write"
        );
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime
            .block_on(expected.run_repeatable(|c| -> Result<(), StoreError> {
                // The job waiting for this one is in the same transaction.
                let seen: i64 =
                    c.query_row("SELECT count(*) FROM t WHERE x = 'waits'", [], |r| r.get(0))?;
                assert_eq!(seen, 1);
                c.execute("INSERT INTO t (x) VALUES ('expected')", [])?;
                Ok(())
            }))
            .unwrap();
        waiting.recv_timeout(Duration::from_secs(20)).unwrap();

        let withdrawn = writer.expect();
        let waiting = insert_from_thread(&writer, "withdrawn");
        assert_eq!(
            waiting.recv_timeout(Duration::from_millis(300)),
            Err(RecvTimeoutError::Timeout)
        );
        drop(withdrawn);
        waiting.recv_timeout(Duration::from_secs(20)).unwrap();
        writer.stop();
        let conn = rusqlite::Connection::open(dir.path().join("w.db")).unwrap();
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .unwrap();
        assert_eq!(rows, 5);
    }
}
