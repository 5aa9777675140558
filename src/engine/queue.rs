//! The bounded job queue between sessions (async) and inference workers (threads).
//!
//! Finals are taken before partials, except that a partial which has waited
//! [`PARTIAL_MAX_WAIT`] goes next, once between finals: a busy pool (several streams ending
//! utterances on one core) would otherwise keep every caption frozen for as long as finals
//! keep coming. When the queue is full a new partial is refused (shed) — its session will ask
//! again with more audio — while a final evicts the oldest waiting partial or, failing that,
//! waits for room: finals are never dropped.
//!
//! Finals are taken round-robin by session ([`Fair`]): a session that queues a burst of finals
//! (a file sent at full speed, `flush` spam) gets one turn in every round like the others,
//! so it cannot push everyone else's finals behind its own. An early final whose utterance may
//! still go on (a [`Guess`](super::Guess)) waits behind every confirmed final, ahead of the
//! partials: on a busy pool it then costs a caption update, never another session's final.
//!
//! Among partials, an utterance's first goes ahead of partials of captions already on screen:
//! on a busy pool a new speaker would otherwise wait for every other session's next caption
//! before showing anything (the others' captions lose one turn, and with live audio
//! ([`super::live`]) their next partial covers the time they waited).

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::{EngineError, Job, JobKind};

/// A partial that has waited this long is taken before the next final. A second is what a
/// live caption can lag before it looks stuck; a final waits at most one partial (a few
/// hundred ms of a worker) for it.
pub const PARTIAL_MAX_WAIT: Duration = Duration::from_millis(1000);

/// Jobs queued per session, served one per session in turn.
#[derive(Default)]
struct Fair {
    /// Sessions with waiting jobs, in the order of their next turn; each keeps its own jobs
    /// in arrival order. Few sessions are ever waiting at once, so a linear scan is cheap.
    turns: VecDeque<(u64, VecDeque<Job>)>,
    len: usize,
}

impl Fair {
    fn push(&mut self, job: Job) {
        self.len += 1;
        match self.turns.iter_mut().find(|(s, _)| *s == job.session) {
            Some((_, jobs)) => jobs.push_back(job),
            None => self.turns.push_back((job.session, VecDeque::from([job]))),
        }
    }

    /// The next session's oldest job; that session then goes to the back of the round. A
    /// session whose oldest job is still a guess ([`Job::speculative`]) lets the others' finals
    /// go first and keeps its place.
    fn pop(&mut self) -> Option<Job> {
        let at = self
            .turns
            .iter()
            .position(|(_, jobs)| jobs.front().is_some_and(|j| !j.speculative()))
            .unwrap_or(0);
        let (session, mut jobs) = self.turns.remove(at)?;
        let job = jobs.pop_front();
        if !jobs.is_empty() {
            self.turns.push_back((session, jobs));
        }
        self.len -= job.is_some() as usize;
        job
    }
}

#[derive(Default)]
struct Queues {
    finals: Fair,
    partials: VecDeque<Job>,
    closed: bool,
    /// The last job taken was a partial that jumped the finals, so the next turn is a final's.
    partial_jumped: bool,
}

impl Queues {
    fn len(&self) -> usize {
        self.finals.len + self.partials.len()
    }

    /// Queues a partial: an utterance's first behind the other firsts, ahead of the rest.
    fn push_partial(&mut self, job: Job) {
        let first = |j: &Job| j.partial.as_ref().is_some_and(|p| p.first);
        let at = if first(&job) {
            self.partials.iter().take_while(|j| first(j)).count()
        } else {
            self.partials.len()
        };
        self.partials.insert(at, job);
    }

    /// The job a worker takes at `now`: finals first, but an aged partial between two finals.
    fn next(&mut self, now: Instant) -> Option<Job> {
        let aged = self
            .partials
            .iter()
            .any(|p| now.saturating_duration_since(p.enqueued) >= PARTIAL_MAX_WAIT);
        if aged && !self.partial_jumped && self.finals.len > 0 {
            self.partial_jumped = true;
            return self.partials.pop_front();
        }
        self.partial_jumped = false;
        self.finals.pop().or_else(|| self.partials.pop_front())
    }
}

pub struct JobQueue {
    capacity: usize,
    queues: Mutex<Queues>,
    /// Wakes workers (threads) when a job arrives.
    available: Condvar,
    /// Wakes sessions (async) waiting to enqueue a final when room frees up.
    room: Notify,
}

/// The mutex guards plain queues; a panic while holding it cannot leave them half-updated,
/// so a poisoned lock is recovered rather than propagated.
fn lock(m: &Mutex<Queues>) -> std::sync::MutexGuard<'_, Queues> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl JobQueue {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            queues: Mutex::default(),
            available: Condvar::new(),
            room: Notify::new(),
        }
    }

    /// Enqueues a job. Partials are shed when full; finals wait for room.
    pub async fn submit(&self, job: Job) -> Result<(), EngineError> {
        let mut job = Some(job);
        loop {
            // Register interest before checking, so a wake-up between the check and the
            // await is not lost.
            let notified = self.room.notified();
            {
                let mut q = lock(&self.queues);
                if q.closed {
                    return Err(EngineError::Closed);
                }
                let kind = job
                    .as_ref()
                    .map(|j| j.kind)
                    .expect("job present until queued");
                if q.len() >= self.capacity {
                    match kind {
                        JobKind::Partial => {
                            let job = job.take().expect("job present");
                            let _ = job.reply.send(Err(EngineError::Shed));
                            return Err(EngineError::Shed);
                        }
                        JobKind::Final => {
                            if let Some(evicted) = q.partials.pop_front() {
                                let _ = evicted.reply.send(Err(EngineError::Shed));
                            }
                        }
                    }
                }
                if q.len() < self.capacity {
                    let job = job.take().expect("job present");
                    match job.kind {
                        JobKind::Final => q.finals.push(job),
                        JobKind::Partial => q.push_partial(job),
                    }
                    self.available.notify_one();
                    return Ok(());
                }
            }
            notified.await;
        }
    }

    /// Blocks a worker thread until a job is available; `None` once closed and drained.
    pub fn take(&self) -> Option<Job> {
        let mut q = lock(&self.queues);
        loop {
            if let Some(job) = q.next(Instant::now()) {
                self.room.notify_waiters();
                return Some(job);
            }
            if q.closed {
                return None;
            }
            q = self.available.wait(q).unwrap_or_else(|p| p.into_inner());
        }
    }

    pub fn depth(&self) -> usize {
        lock(&self.queues).len()
    }

    /// Stops accepting jobs; workers finish what is queued and exit.
    pub fn close(&self) {
        lock(&self.queues).closed = true;
        self.available.notify_all();
        self.room.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    type Reply = tokio::sync::oneshot::Receiver<Result<super::super::Transcript, EngineError>>;

    fn job(kind: JobKind) -> (Job, Reply) {
        job_of(0, kind, 0)
    }

    /// A job of `session` whose audio has `tag` samples, so the test can tell jobs apart.
    fn job_of(session: u64, kind: JobKind, tag: usize) -> (Job, Reply) {
        Job::new(super::super::TranscribeRequest {
            kind,
            session,
            audio: Arc::new(vec![0.0; tag]),
            prompt: String::new(),
            language: "en".into(),
            partial: None,
            guess: None,
        })
    }

    #[tokio::test]
    async fn finals_go_first_and_partials_are_shed_when_full() {
        let q = JobQueue::new(2);
        let (p1, mut p1_rx) = job(JobKind::Partial);
        let (p2, _p2_rx) = job(JobKind::Partial);
        q.submit(p1).await.unwrap();
        q.submit(p2).await.unwrap();
        let (p3, _) = job(JobKind::Partial);
        assert_eq!(q.submit(p3).await, Err(EngineError::Shed));
        // A final evicts the oldest partial instead of waiting.
        let (f, _f_rx) = job(JobKind::Final);
        q.submit(f).await.unwrap();
        assert_eq!(p1_rx.try_recv().unwrap(), Err(EngineError::Shed));
        assert_eq!(q.take().unwrap().kind, JobKind::Final);
        assert_eq!(q.take().unwrap().kind, JobKind::Partial);
        assert_eq!(q.depth(), 0);
    }

    #[tokio::test]
    async fn finals_wait_for_room_when_only_finals_are_queued() {
        let q = Arc::new(JobQueue::new(1));
        let (f1, _r1) = job(JobKind::Final);
        q.submit(f1).await.unwrap();
        let (f2, _r2) = job(JobKind::Final);
        let waiter = tokio::spawn({
            let q = q.clone();
            async move { q.submit(f2).await }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiter.is_finished(), "second final waits");
        let taken = tokio::task::spawn_blocking({
            let q = q.clone();
            move || q.take().map(|j| j.kind)
        });
        assert_eq!(taken.await.unwrap(), Some(JobKind::Final));
        assert_eq!(waiter.await.unwrap(), Ok(()));
        assert_eq!(q.depth(), 1);
        q.close();
        assert!(q.take().is_some(), "queued work drains after close");
        assert!(q.take().is_none());
    }

    #[tokio::test]
    async fn a_partial_that_waited_too_long_goes_between_finals() {
        let q = JobQueue::new(16);
        let now = Instant::now();
        let mut replies = Vec::new();
        for tag in 0..3 {
            let (j, r) = job_of(1, JobKind::Final, 10 + tag);
            q.submit(j).await.unwrap();
            replies.push(r);
        }
        // Two partials of other sessions, queued long enough ago to have aged...
        for (session, tag) in [(2, 20), (3, 30)] {
            let (mut j, r) = job_of(session, JobKind::Partial, tag);
            j.enqueued = now - PARTIAL_MAX_WAIT;
            q.submit(j).await.unwrap();
            replies.push(r);
        }
        // ...and a fresh one, which waits behind every final.
        let (mut fresh, r) = job_of(4, JobKind::Partial, 40);
        fresh.enqueued = now;
        q.submit(fresh).await.unwrap();
        replies.push(r);
        let order: Vec<usize> = (0..6)
            .map(|_| lock(&q.queues).next(now).unwrap().audio.len())
            .collect();
        assert_eq!(
            order,
            vec![20, 10, 30, 11, 12, 40],
            "an aged partial jumps one final at a time; a fresh partial does not jump"
        );
    }

    #[tokio::test]
    async fn an_utterances_first_partial_goes_ahead_of_captions_on_screen() {
        let q = JobQueue::new(16);
        let mut replies = Vec::new();
        for (session, tag, first) in [(1, 10, false), (2, 20, true), (3, 30, false), (4, 40, true)]
        {
            let (mut j, r) = job_of(session, JobKind::Partial, tag);
            j.partial = Some(super::super::PartialOf {
                live: Arc::default(),
                utterance: 0,
                first,
            });
            q.submit(j).await.unwrap();
            replies.push(r);
        }
        let order: Vec<usize> = (0..4).map(|_| q.take().unwrap().audio.len()).collect();
        assert_eq!(
            order,
            vec![20, 40, 10, 30],
            "firsts in order, then the rest"
        );
    }

    #[tokio::test]
    async fn finals_are_taken_round_robin_by_session() {
        let q = JobQueue::new(16);
        let mut replies = Vec::new();
        // Session 1 queues a burst of five finals, then sessions 2 and 3 one each.
        for tag in 0..5 {
            let (j, r) = job_of(1, JobKind::Final, 10 + tag);
            q.submit(j).await.unwrap();
            replies.push(r);
        }
        for session in [2, 3] {
            let (j, r) = job_of(session, JobKind::Final, 20 + session as usize);
            q.submit(j).await.unwrap();
            replies.push(r);
        }
        let (p, _p_rx) = job_of(2, JobKind::Partial, 99);
        q.submit(p).await.unwrap();
        let order: Vec<(u64, usize)> = (0..8)
            .map(|_| q.take().map(|j| (j.session, j.audio.len())).unwrap())
            .collect();
        assert_eq!(
            order,
            vec![
                (1, 10),
                (2, 22),
                (3, 23),
                (1, 11),
                (1, 12),
                (1, 13),
                (1, 14),
                (2, 99)
            ],
            "the burst waits its turns; each session's finals stay in order; partials last"
        );
        assert_eq!(q.depth(), 0);
    }

    #[tokio::test]
    async fn a_guess_waits_behind_confirmed_finals_until_it_is_confirmed() {
        let q = JobQueue::new(16);
        let mut replies = Vec::new();
        let guess = super::super::Guess::default();
        // Session 1's early final arrives first, then a partial and two other sessions' finals.
        let (mut early, r) = job_of(1, JobKind::Final, 10);
        early.guess = Some(guess.clone());
        q.submit(early).await.unwrap();
        replies.push(r);
        let (p, r) = job_of(4, JobKind::Partial, 40);
        q.submit(p).await.unwrap();
        replies.push(r);
        for session in [2, 3] {
            let (j, r) = job_of(session, JobKind::Final, 10 * session as usize);
            q.submit(j).await.unwrap();
            replies.push(r);
        }
        let take = || q.take().map(|j| j.audio.len()).unwrap();
        assert_eq!(take(), 20, "a confirmed final goes before the guess");
        guess.confirm();
        assert_eq!(take(), 10, "once confirmed, the guess has its turn back");
        assert_eq!(take(), 30);
        assert_eq!(take(), 40, "partials last");

        // Unconfirmed, a guess still goes before partials.
        let (mut early, _r1) = job_of(1, JobKind::Final, 11);
        early.guess = Some(super::super::Guess::default());
        let (p, _r2) = job_of(4, JobKind::Partial, 41);
        q.submit(p).await.unwrap();
        q.submit(early).await.unwrap();
        assert_eq!(q.take().unwrap().audio.len(), 11);
    }
}
