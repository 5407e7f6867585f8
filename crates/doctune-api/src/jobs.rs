//! Long jobs the app starts and may cancel: each runs on its own thread, reports through its
//! sink, and ends with exactly one of `Finished`, `Failed` or `Cancelled`.

use crate::ApiError;
use doctune_core::{CancelToken, Code, JobEvent, JobId, ProgressSink};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The running jobs, by id. Cheap to clone; keep one in the app's state.
#[derive(Debug, Clone, Default)]
pub struct Jobs(Arc<Mutex<HashMap<JobId, CancelToken>>>);

impl Jobs {
    /// Starts `work` on a new thread; returns its id at once.
    pub fn start<F>(&self, kind: &str, sink: Arc<dyn ProgressSink>, work: F) -> JobId
    where
        F: FnOnce(&dyn ProgressSink, &CancelToken) -> Result<(), ApiError> + Send + 'static,
    {
        let id = JobId(format!("{kind}-{}", uuid::Uuid::new_v4().simple()));
        let cancel = CancelToken::new();
        if let Ok(mut m) = self.0.lock() {
            m.insert(id.clone(), cancel.clone());
        }
        let (jobs, job, kind) = (self.clone(), id.clone(), kind.to_string());
        std::thread::spawn(move || {
            sink.emit(JobEvent::Started {
                job: job.clone(),
                kind,
            });
            let result = work(sink.as_ref(), &cancel);
            sink.emit(match result {
                Ok(()) => JobEvent::Finished,
                Err(e) if e.code == Code::Cancelled || cancel.is_cancelled() => JobEvent::Cancelled,
                Err(e) => JobEvent::Failed { error: e.message },
            });
            if let Ok(mut m) = jobs.0.lock() {
                m.remove(&job);
            }
        });
        id
    }

    /// Asks job `id` to stop; false if no such job is running.
    pub fn cancel(&self, id: &JobId) -> bool {
        match self.0.lock().ok().and_then(|m| m.get(id).cloned()) {
            Some(c) => {
                c.cancel();
                true
            }
            None => false,
        }
    }

    pub fn running(&self) -> usize {
        self.0.lock().map(|m| m.len()).unwrap_or(0)
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
        assert_eq!(ev[1], JobEvent::Finished);

        let sink = Arc::new(VecSink::default());
        jobs.start("bad", sink.clone(), |_, _| {
            Err(ApiError::invalid("x.pdf: broken"))
        });
        wait_done(&jobs);
        assert_eq!(
            sink.events()[1],
            JobEvent::Failed {
                error: "x.pdf: broken".into()
            }
        );
    }

    #[test]
    fn cancel_reaches_the_job() {
        let jobs = Jobs::default();
        let sink = Arc::new(VecSink::default());
        let id = jobs.start("slow", sink.clone(), |_, cancel| {
            while !cancel.is_cancelled() {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(ApiError::new(Code::Cancelled, "cancelled"))
        });
        assert!(jobs.cancel(&id));
        wait_done(&jobs);
        assert_eq!(sink.events().last(), Some(&JobEvent::Cancelled));
        assert!(!jobs.cancel(&id));
    }
}
