//! Small writes of one kind from many callers, made as one.
//!
//! Concurrent single sends each became a job of their own in the writer's transaction:
//! every one ran its own one-row INSERTs, and each of those descended every B-tree it
//! writes from the root. A batch writes the same rows with multi-row statements (see
//! [`super::rows`]) for less than half the writer's work per email. A [`Combiner`] gives
//! single writes that: items queued while the writer is busy wait together, and one
//! repeatable writer job writes them all (up to [`MAX_ITEMS_PER_JOB`]; the rest wait for
//! the next job) with one call of the combiner's write function.
//!
//! Each item still gets the outcome it would have had alone. The combined call runs
//! without a savepoint of its own (a savepoint copies every page its work changes into a
//! journal, a tenth of the writer's work per send); if it fails, the job fails, the writer
//! undoes it and runs it again (it is repeatable), and that second run writes each item
//! under its own savepoint, so that only the items at fault fail. An answer still comes
//! only after the commit.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use rusqlite::Connection;
use tokio::sync::oneshot;

use super::writer::{rolled_back, unresolved_foreign_keys};
use super::{ExpectedWrite, StoreError, Writer, execute_cached};

/// Writes items in the writer's transaction and returns one output per item, in order.
/// It may run more than once for the same items (see [`ExpectedWrite::run_repeatable`]),
/// so it must only read them and write to the database.
pub type WriteAll<I, O, E> = fn(&Connection, &[I]) -> Result<Vec<O>, E>;

type Reply<O, E> = oneshot::Sender<Result<O, E>>;

/// Most items one job writes: bounds how long a burst holds the writer (and the first
/// caller's answer), as the writer's own bound on jobs per transaction does.
pub const MAX_ITEMS_PER_JOB: usize = 500;

/// Gathers items of one kind from concurrent callers into shared writer jobs.
pub struct Combiner<I, O, E> {
    pending: Mutex<Pending<I, O, E>>,
    write: WriteAll<I, O, E>,
    max_items: usize,
}

/// Items queued since the last job took them, with where their answers go.
struct Pending<I, O, E> {
    items: Vec<(I, Reply<O, E>)>,
    /// A job is on its way that has not taken its items yet: whoever queues an item now
    /// leaves it to that job.
    job_queued: bool,
}

impl<I, O, E> Combiner<I, O, E>
where
    I: Send + Sync + 'static,
    O: Send + 'static,
    E: From<StoreError> + Clone + Send + 'static,
{
    /// A combiner that writes with `write`, [`MAX_ITEMS_PER_JOB`] items a job at most.
    pub fn new(write: WriteAll<I, O, E>) -> Arc<Combiner<I, O, E>> {
        Combiner::with_max_items(write, MAX_ITEMS_PER_JOB)
    }

    /// A combiner that writes with `write`, `max_items` items a job at most.
    pub fn with_max_items(write: WriteAll<I, O, E>, max_items: usize) -> Arc<Combiner<I, O, E>> {
        Arc::new(Combiner {
            pending: Mutex::new(Pending {
                items: Vec::new(),
                job_queued: false,
            }),
            write,
            max_items: max_items.max(1),
        })
    }

    /// Writes `item` with the others queued at the time, and returns its output once the
    /// transaction is committed. `expected` is the caller's announcement of this write.
    pub async fn write(self: &Arc<Self>, expected: ExpectedWrite, item: I) -> Result<O, E> {
        let (reply, answer) = oneshot::channel();
        let first = {
            let mut pending = lock(&self.pending);
            pending.items.push((item, reply));
            !std::mem::replace(&mut pending.job_queued, true)
        };
        if first {
            // This caller queues the job, and answers everyone once it is done.
            Round::queue(self.clone(), expected).wait().await;
        } else {
            // The job on its way takes this item; the writer need not wait for it.
            drop(expected);
        }
        answer.await.map_err(|_| E::from(StoreError::WriterGone))?
    }

    /// Takes the pending items for a job, at most `max_items`, oldest first. What is left
    /// waits for the next job: queued by the next caller, or by this job's round once the
    /// writer has answered it (`Round::follow_up`).
    fn take_pending(&self) -> Vec<(I, Reply<O, E>)> {
        let mut pending = lock(&self.pending);
        pending.job_queued = false;
        let rest = if pending.items.len() > self.max_items {
            pending.items.split_off(self.max_items)
        } else {
            Vec::new()
        };
        std::mem::replace(&mut pending.items, rest)
    }

    /// Each item under its own savepoint: the outcome each would have had alone.
    fn write_each(&self, conn: &Connection, items: &[I]) -> Result<Vec<Result<O, E>>, E> {
        let mut outputs = Vec::with_capacity(items.len());
        for item in items {
            let output = self.in_savepoint(conn, std::slice::from_ref(item))?;
            outputs.push(output.map(|mut one| one.remove(0)));
        }
        Ok(outputs)
    }

    /// Runs the write of `items` inside a savepoint, undone if the write fails. The outer
    /// error is a failure of the savepoint itself.
    fn in_savepoint(&self, conn: &Connection, items: &[I]) -> Result<Result<Vec<O>, E>, E> {
        execute_cached(conn, "SAVEPOINT combined").map_err(sql_error::<E>)?;
        match checked(conn, items, (self.write)(conn, items)) {
            Ok(outputs) => {
                execute_cached(conn, "RELEASE combined").map_err(sql_error::<E>)?;
                Ok(Ok(outputs))
            }
            Err(e) => {
                execute_cached(conn, "ROLLBACK TO combined")
                    .and_then(|()| execute_cached(conn, "RELEASE combined"))
                    .map_err(sql_error::<E>)?;
                rolled_back();
                Ok(Err(e))
            }
        }
    }
}

/// What a writer job answers: one outcome per item, or the job's own failure.
type Outcome<O, E> = Result<Vec<Result<O, E>>, E>;

/// One writer job of a [`Combiner`]: the items it took, where their answers go, and the
/// writer's answer until it comes. Dropped before that (the request of the caller that
/// queued it went away), it hands the wait to a task of its own, so that the other callers
/// still get their answers.
struct Round<I, O, E>
where
    I: Send + Sync + 'static,
    O: Send + 'static,
    E: From<StoreError> + Clone + Send + 'static,
{
    combiner: Arc<Combiner<I, O, E>>,
    /// Taken by the job's first run; a second run writes the same items.
    taken: Arc<OnceLock<Vec<I>>>,
    replies: Arc<Mutex<Vec<Reply<O, E>>>>,
    /// For the counters, and the job that takes what this one left (more than it could).
    writer: Writer,
    /// The writer's answer, until it came (none when the job could not be queued: its
    /// callers were answered at once).
    answer: Option<oneshot::Receiver<Outcome<O, E>>>,
}

impl<I, O, E> Round<I, O, E>
where
    I: Send + Sync + 'static,
    O: Send + 'static,
    E: From<StoreError> + Clone + Send + 'static,
{
    /// Queues one writer job for what is pending when it runs.
    fn queue(combiner: Arc<Combiner<I, O, E>>, expected: ExpectedWrite) -> Round<I, O, E> {
        let taken: Arc<OnceLock<Vec<I>>> = Arc::default();
        let replies: Arc<Mutex<Vec<Reply<O, E>>>> = Arc::default();
        let job = {
            let (combiner, taken, replies) = (combiner.clone(), taken.clone(), replies.clone());
            let runs = AtomicUsize::new(0);
            move |conn: &Connection| -> Outcome<O, E> {
                let items = taken.get_or_init(|| {
                    let (items, answers): (Vec<I>, Vec<Reply<O, E>>) =
                        combiner.take_pending().into_iter().unzip();
                    *lock(&replies) = answers;
                    items
                });
                if runs.fetch_add(1, Ordering::Relaxed) == 0 || items.len() == 1 {
                    let outputs = checked(conn, items, (combiner.write)(conn, items))?;
                    Ok(outputs.into_iter().map(Ok).collect())
                } else {
                    combiner.write_each(conn, items)
                }
            }
        };
        let mut round = Round {
            combiner,
            taken,
            replies,
            writer: expected.writer(),
            answer: None,
        };
        match expected.queue_repeatable(job) {
            Ok(answer) => round.answer = Some(answer),
            Err(e) => round.answer_callers(Err(e)),
        }
        round
    }

    /// Waits for the writer's answer, then answers each caller.
    async fn wait(mut self) {
        let Some(answer) = self.answer.as_mut() else {
            return;
        };
        let outcome = answer
            .await
            .unwrap_or_else(|_| Err(E::from(StoreError::WriterGone)));
        self.answer = None;
        self.answer_callers(outcome);
    }

    fn answer_callers(&self, outcome: Outcome<O, E>) {
        let mut replies = std::mem::take(&mut *lock(&self.replies));
        self.writer
            .stats()
            .add_carried(replies.len().saturating_sub(1) as u64);
        if self.taken.get().is_none() {
            // The job never ran (the writer could not begin a transaction, or is gone):
            // what is pending is this job's to answer.
            let mut pending = lock(&self.combiner.pending);
            pending.job_queued = false;
            replies = std::mem::take(&mut pending.items)
                .into_iter()
                .map(|(_, reply)| reply)
                .collect();
        } else {
            self.follow_up();
        }
        match outcome {
            Ok(outputs) => {
                for (reply, output) in replies.into_iter().zip(outputs) {
                    let _ = reply.send(output);
                }
            }
            Err(e) => {
                for reply in replies {
                    let _ = reply.send(Err(e.clone()));
                }
            }
        }
    }

    /// Queues a job for the items this one left, if nobody queued one since: those came
    /// when it took its items and found more than it could take.
    fn follow_up(&self) {
        {
            let mut pending = lock(&self.combiner.pending);
            if pending.items.is_empty() || pending.job_queued {
                return;
            }
            pending.job_queued = true;
        }
        let next = Round::queue(self.combiner.clone(), self.writer.expect());
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(next.wait());
        }
    }
}

impl<I, O, E> Drop for Round<I, O, E>
where
    I: Send + Sync + 'static,
    O: Send + 'static,
    E: From<StoreError> + Clone + Send + 'static,
{
    fn drop(&mut self) {
        if self.answer.is_none() {
            return;
        }
        let rest = Round {
            combiner: self.combiner.clone(),
            taken: self.taken.clone(),
            replies: self.replies.clone(),
            writer: self.writer.clone(),
            answer: self.answer.take(),
        };
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(rest.wait());
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// The outcome of writing `items`, failed when it left a deferred foreign key unresolved
/// or did not give one output per item.
fn checked<I, O, E: From<StoreError>>(
    conn: &Connection,
    items: &[I],
    outcome: Result<Vec<O>, E>,
) -> Result<Vec<O>, E> {
    let outputs = outcome?;
    if unresolved_foreign_keys(conn) != 0 {
        return Err(E::from(StoreError::Task(
            "the write left foreign key constraint(s) unresolved \
             (rows that point at rows that do not exist)"
                .into(),
        )));
    }
    if outputs.len() != items.len() {
        return Err(E::from(StoreError::Task(format!(
            "a combined write gave {} outputs for {} items",
            outputs.len(),
            items.len()
        ))));
    }
    Ok(outputs)
}

fn sql_error<E: From<StoreError>>(e: rusqlite::Error) -> E {
    E::from(StoreError::from(e))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::store::Db;

    /// The calls of [`insert_values`]: the database file and how many items it was given.
    static CALLS: Mutex<Vec<(String, usize)>> = Mutex::new(Vec::new());

    /// A caller's error: combined writes answer several callers with one error.
    #[derive(Debug, Clone)]
    struct Failed(String);

    impl From<StoreError> for Failed {
        fn from(e: StoreError) -> Failed {
            Failed(e.to_string())
        }
    }

    /// Inserts each value; a negative one breaks the table's CHECK. Returns the rowids.
    fn insert_values(conn: &Connection, values: &[i64]) -> Result<Vec<i64>, Failed> {
        let path = conn.path().unwrap_or_default().to_string();
        CALLS.lock().unwrap().push((path, values.len()));
        let mut insert = conn
            .prepare_cached("INSERT INTO t (v) VALUES (?1)")
            .map_err(|e| Failed(e.to_string()))?;
        values
            .iter()
            .map(|v| {
                insert.execute([v]).map_err(|e| Failed(e.to_string()))?;
                Ok(conn.last_insert_rowid())
            })
            .collect()
    }

    async fn database() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open_for_test(dir.path());
        db.write(|c| -> Result<(), StoreError> {
            Ok(c.execute_batch(
                "CREATE TABLE t (v INTEGER NOT NULL CHECK (v >= 0));
                 CREATE TABLE u (v INTEGER NOT NULL);",
            )?)
        })
        .await
        .unwrap();
        (dir, db)
    }

    /// Writes `values` from concurrent tasks while the writer is busy, so that they queue
    /// up; with `beside`, another job, which inserts that value into `u`, queues up with
    /// them and shares their transaction.
    async fn write_concurrently(
        db: &Db,
        combiner: &Arc<Combiner<i64, i64, Failed>>,
        values: &[i64],
        beside: Option<i64>,
    ) -> Vec<Result<i64, Failed>> {
        let (started, busy) = oneshot::channel();
        let holder = db.clone();
        let hold = tokio::spawn(async move {
            holder
                .write_alone(move |_| -> Result<(), StoreError> {
                    let _ = started.send(());
                    std::thread::sleep(Duration::from_millis(100));
                    Ok(())
                })
                .await
        });
        busy.await.unwrap();
        let tasks: Vec<_> = values
            .iter()
            .map(|&v| {
                let (db, combiner) = (db.clone(), combiner.clone());
                tokio::spawn(async move { combiner.write(db.expect_write(), v).await })
            })
            .collect();
        if let Some(v) = beside {
            db.write(move |c| -> Result<(), StoreError> {
                c.execute("INSERT INTO u (v) VALUES (?1)", [v])?;
                Ok(())
            })
            .await
            .unwrap();
        }
        hold.await.unwrap().unwrap();
        let mut answers = Vec::new();
        for task in tasks {
            answers.push(task.await.unwrap());
        }
        answers
    }

    async fn stored(db: &Db) -> Vec<(i64, i64)> {
        db.read(|c| -> Result<Vec<(i64, i64)>, StoreError> {
            let mut stmt = c.prepare("SELECT rowid, v FROM t ORDER BY rowid")?;
            let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
        .unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_share_one_call_and_each_gets_its_own_answer() {
        let (_dir, db) = database().await;
        let combiner = Combiner::new(insert_values);
        let values: Vec<i64> = (0..40).collect();
        let answers = write_concurrently(&db, &combiner, &values, None).await;
        let rows = stored(&db).await;
        assert_eq!(rows.len(), values.len());
        for (value, answer) in values.iter().zip(answers) {
            let rowid = answer.unwrap();
            assert!(
                rows.contains(&(rowid, *value)),
                "{value} answered with row {rowid}"
            );
        }
        assert!(
            calls_on(&db).1 > 1,
            "the writes queued while the writer was busy were written together"
        );
        // `/metrics` counts each write, not each job: the table, the hold, the forty.
        assert_eq!(db.writer_stats().jobs(), 2 + values.len() as u64);
    }

    /// Calls made on `db` and the most items one was given.
    fn calls_on(db: &Db) -> (usize, usize) {
        let path = db.path().display().to_string();
        let calls = CALLS.lock().unwrap();
        let sizes: Vec<usize> = calls
            .iter()
            .filter(|(p, _)| *p == path)
            .map(|(_, n)| *n)
            .collect();
        (sizes.len(), sizes.into_iter().max().unwrap_or(0))
    }

    /// More items queued than a job takes: jobs take at most that many each, and the
    /// items left get jobs of their own, also when nobody else writes after them.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_burst_is_written_in_jobs_of_bounded_size() {
        let (_dir, db) = database().await;
        let combiner = Combiner::with_max_items(insert_values, 3);
        let values: Vec<i64> = (0..10).collect();
        let answers = tokio::time::timeout(
            Duration::from_secs(10),
            write_concurrently(&db, &combiner, &values, None),
        )
        .await
        .expect("the items left by a full job get jobs of their own");
        let rows = stored(&db).await;
        assert_eq!(rows.len(), values.len());
        for (value, answer) in values.iter().zip(answers) {
            assert!(rows.contains(&(answer.unwrap(), *value)));
        }
        let (calls, most) = calls_on(&db);
        assert_eq!(most, 3, "a job took at most three items");
        assert!(
            calls >= 4,
            "ten items need four jobs of three ({calls} calls)"
        );
        assert_eq!(db.writer_stats().jobs(), 2 + values.len() as u64);
    }

    /// One item breaks the table's CHECK: the combined write fails, and the second run
    /// writes each item alone, so only that one fails. `beside`: the combined job shares
    /// its transaction with another job (undone by a savepoint), or has it to itself
    /// (undone by a rollback).
    async fn a_failing_item_fails_alone(beside: Option<i64>) {
        let (_dir, db) = database().await;
        let combiner = Combiner::new(insert_values);
        let values = [1, 2, -3, 4, 5];
        let answers = write_concurrently(&db, &combiner, &values, beside).await;
        assert!(calls_on(&db).1 > 1, "the combined write was tried");
        for (value, answer) in values.iter().zip(&answers) {
            match answer {
                Ok(_) => assert!(*value >= 0),
                Err(e) => {
                    assert_eq!(*value, -3);
                    assert!(e.0.contains("CHECK"), "{e:?}");
                }
            }
        }
        let mut kept: Vec<i64> = stored(&db).await.into_iter().map(|(_, v)| v).collect();
        kept.sort_unstable();
        assert_eq!(kept, vec![1, 2, 4, 5]);
        let other: Vec<i64> = db
            .read(|c| -> Result<Vec<i64>, StoreError> {
                let mut stmt = c.prepare("SELECT v FROM u")?;
                let rows = stmt.query_map([], |r| r.get(0))?;
                Ok(rows.collect::<Result<_, _>>()?)
            })
            .await
            .unwrap();
        assert_eq!(other, Vec::from_iter(beside));
        // A later write finds the combiner ready again.
        let answer = combiner.write(db.expect_write(), 6).await.unwrap();
        assert!(stored(&db).await.contains(&(answer, 6)));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_item_fails_alone_in_a_transaction_of_its_own() {
        a_failing_item_fails_alone(None).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_item_fails_alone_beside_another_job() {
        a_failing_item_fails_alone(Some(42)).await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_lone_failing_item_fails() {
        let (_dir, db) = database().await;
        let combiner = Combiner::new(insert_values);
        let err = combiner.write(db.expect_write(), -1).await.unwrap_err();
        assert!(err.0.contains("CHECK"), "{err:?}");
        assert!(stored(&db).await.is_empty());
        assert_eq!(combiner.write(db.expect_write(), 7).await.unwrap(), 1);
    }

    /// The caller whose write queued the job waits for the writer's answer and hands the
    /// others theirs: when its request goes away first, the others are still answered.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn callers_are_answered_when_the_caller_that_queued_the_job_goes_away() {
        let (_dir, db) = database().await;
        let combiner = Combiner::new(insert_values);
        let (started, busy) = oneshot::channel();
        let (release, gate) = std::sync::mpsc::channel::<()>();
        let holder = db.clone();
        let hold = tokio::spawn(async move {
            holder
                .write_alone(move |_| -> Result<(), StoreError> {
                    let _ = started.send(());
                    let _ = gate.recv();
                    Ok(())
                })
                .await
        });
        busy.await.unwrap();
        let pending =
            |combiner: &Arc<Combiner<i64, i64, Failed>>| lock(&combiner.pending).items.len();
        let first = tokio::spawn({
            let (db, combiner) = (db.clone(), combiner.clone());
            async move { combiner.write(db.expect_write(), 100).await }
        });
        while pending(&combiner) < 1 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let others: Vec<_> = (0..3)
            .map(|v| {
                let (db, combiner) = (db.clone(), combiner.clone());
                tokio::spawn(async move { combiner.write(db.expect_write(), v).await })
            })
            .collect();
        while pending(&combiner) < 4 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        first.abort();
        assert!(first.await.unwrap_err().is_cancelled());
        release.send(()).unwrap();
        hold.await.unwrap().unwrap();
        for other in others {
            other.await.unwrap().unwrap();
        }
        let mut kept: Vec<i64> = stored(&db).await.into_iter().map(|(_, v)| v).collect();
        kept.sort_unstable();
        assert_eq!(
            kept,
            vec![0, 1, 2, 100],
            "the first caller's write was kept too"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn callers_get_an_answer_when_the_writer_is_gone() {
        let (_dir, db) = database().await;
        let combiner = Combiner::new(insert_values);
        db.close();
        let answers = tokio::time::timeout(
            Duration::from_secs(10),
            futures_util::future::join_all((0..3).map(|v| combiner.write(db.expect_write(), v))),
        )
        .await
        .expect("every caller is answered");
        for answer in answers {
            assert!(answer.is_err());
        }
    }
}
