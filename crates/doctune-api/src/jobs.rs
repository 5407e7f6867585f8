//! Long jobs the app starts and may cancel: each runs on its own thread, reports through its
//! sink, and ends with exactly one of `Finished` (carrying what the job returned), `Failed`
//! (with the error's code and message) or `Cancelled` — also when the job panics, which is
//! reported as `Failed` with code `internal` and leaves no lock poisoned.

use crate::ApiError;
use doctune_core::{CancelToken, Code, JobEvent, JobId, ProgressSink};
use serde::Serialize;
use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Mutex, MutexGuard};

/// The running jobs, by id. Cheap to clone; keep one in the app's state.
#[derive(Debug, Clone, Default)]
pub struct Jobs(Arc<Mutex<HashMap<JobId, CancelToken>>>);

impl Jobs {
    /// The registry, even if a thread panicked while holding it (it is only ever changed by
    /// single inserts and removes, so it is never half-updated).
    fn map(&self) -> MutexGuard<'_, HashMap<JobId, CancelToken>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts `work` on a new thread; returns its id at once. What `work` returns goes out in
    /// `Finished` (nothing for `()`).
    pub fn start<T, F>(&self, kind: &str, sink: Arc<dyn ProgressSink>, work: F) -> JobId
    where
        T: Serialize,
        F: FnOnce(&dyn ProgressSink, &CancelToken) -> Result<T, ApiError> + Send + 'static,
    {
        let id = JobId(format!("{kind}-{}", uuid::Uuid::new_v4().simple()));
        let cancel = CancelToken::new();
        self.map().insert(id.clone(), cancel.clone());
        let (jobs, job, kind) = (self.clone(), id.clone(), kind.to_string());
        std::thread::spawn(move || {
            sink.emit(JobEvent::Started {
                job: job.clone(),
                kind: kind.clone(),
            });
            let result = catch_unwind(AssertUnwindSafe(|| work(sink.as_ref(), &cancel)))
                .unwrap_or_else(|panic| {
                    let what = doctune_core::panic_message(panic.as_ref());
                    tracing::error!("job {job} ({kind}) panicked: {what}");
                    Err(ApiError::new(
                        Code::Internal,
                        format!("the {kind} job stopped on an internal error ({what}); this is a bug in DocTune"),
                    ))
                });
            sink.emit(match result {
                Ok(value) => JobEvent::Finished {
                    result: serde_json::to_value(value).ok().filter(|v| !v.is_null()),
                },
                Err(e) if e.code == Code::Cancelled || cancel.is_cancelled() => JobEvent::Cancelled,
                Err(e) => JobEvent::Failed {
                    code: e.code,
                    message: e.message,
                },
            });
            jobs.map().remove(&job);
        });
        id
    }

    /// Asks job `id` to stop; false if no such job is running.
    pub fn cancel(&self, id: &JobId) -> bool {
        match self.map().get(id).cloned() {
            Some(c) => {
                c.cancel();
                true
            }
            None => false,
        }
    }

    pub fn running(&self) -> usize {
        self.map().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use doctune_core::VecSink;
    use std::time::Duration;

    fn wait_done(jobs: &Jobs) {
        for _ in 0..500 {
            if jobs.running() == 0 {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("job did not end");
    }

    #[test]
    fn jobs_end_with_one_terminal_event() {
        let jobs = Jobs::default();
        let sink = Arc::new(VecSink::default());
        jobs.start("ok", sink.clone(), |_, _| Ok(()));
        wait_done(&jobs);
        let ev = sink.events();
        assert!(matches!(ev[0], JobEvent::Started { .. }));
        assert_eq!(ev[1], JobEvent::FINISHED);

        let sink = Arc::new(VecSink::default());
        jobs.start("value", sink.clone(), |_, _| {
            Ok(serde_json::json!({"id": "run-1"}))
        });
        wait_done(&jobs);
        assert_eq!(
            sink.events()[1],
            JobEvent::Finished {
                result: Some(serde_json::json!({"id": "run-1"}))
            }
        );

        let sink = Arc::new(VecSink::default());
        jobs.start("bad", sink.clone(), |_, _| {
            Err::<(), _>(ApiError::invalid("x.pdf: broken"))
        });
        wait_done(&jobs);
        assert_eq!(
            sink.events()[1],
            JobEvent::Failed {
                code: Code::InvalidInput,
                message: "x.pdf: broken".into()
            }
        );
    }

    #[test]
    fn a_panicking_job_still_ends_and_the_next_one_runs() {
        let jobs = Jobs::default();
        let sink = Arc::new(VecSink::default());
        jobs.start("boom", sink.clone(), |_, _| -> Result<(), ApiError> {
            panic!("index out of bounds")
        });
        wait_done(&jobs);
        match &sink.events()[1] {
            JobEvent::Failed { code, message } => {
                assert_eq!(*code, Code::Internal);
                assert!(message.contains("index out of bounds"), "{message}");
            }
            other => panic!("expected failed, got {other:?}"),
        }
        let sink = Arc::new(VecSink::default());
        jobs.start("after", sink.clone(), |_, _| Ok(()));
        wait_done(&jobs);
        assert_eq!(sink.events()[1], JobEvent::FINISHED);
    }

    #[test]
    fn cancel_reaches_the_job() {
        let jobs = Jobs::default();
        let sink = Arc::new(VecSink::default());
        let id = jobs.start("slow", sink.clone(), |_, cancel| {
            while !cancel.is_cancelled() {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err::<(), _>(ApiError::new(Code::Cancelled, "cancelled"))
        });
        assert!(jobs.cancel(&id));
        wait_done(&jobs);
        assert_eq!(sink.events().last(), Some(&JobEvent::Cancelled));
        assert!(!jobs.cancel(&id));
    }
}
