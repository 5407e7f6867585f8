//! Long jobs: the event enum the UI renders, the sink jobs report to, and cooperative cancel.
//!
//! Every pipeline function takes `&dyn ProgressSink` and `&CancelToken`; it neither knows nor
//! cares whether a window, the CLI or a test is listening.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Identifies a running or finished job.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub String);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One thing that happened in a job. Serialised as `{ "type": "progress", "data": { .. } }`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "camelCase")]
pub enum JobEvent {
    Started {
        job: JobId,
        kind: String,
    },
    #[serde(rename_all = "camelCase")]
    Progress {
        current: u64,
        total: u64,
        unit: String,
        #[serde(skip_serializing_if = "Option::is_none")]
        message: Option<String>,
        /// Seconds left, when the job can estimate them.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        eta_secs: Option<f64>,
    },
    #[serde(rename_all = "camelCase")]
    Metrics {
        step: u64,
        /// Fractional epochs done.
        #[serde(default)]
        epoch: f64,
        loss: f64,
        #[serde(skip_serializing_if = "Option::is_none")]
        eval_loss: Option<f64>,
        lr: f64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        grad_norm: Option<f64>,
        tokens_per_sec: f64,
        #[serde(default)]
        elapsed_secs: f64,
        eta_secs: f64,
        #[serde(skip_serializing_if = "Option::is_none")]
        mem_bytes: Option<u64>,
        /// GPU memory the process holds, when training on an NVIDIA GPU.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        gpu_mem_bytes: Option<u64>,
        /// The held-out loss measured before the first step (the base model's, for LoRA), on
        /// every metrics event once it is known.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        base_eval_loss: Option<f64>,
    },
    Warning {
        message: String,
    },
    Checkpoint {
        path: String,
    },
    /// A piece of generated text, as soon as it is complete.
    Text {
        text: String,
    },
    /// A generation ended (before `Finished`): how many tokens, why, how fast.
    #[serde(rename_all = "camelCase")]
    Generated {
        tokens: u64,
        stop_reason: String,
        tokens_per_sec: f64,
    },
    /// The job ended well; `result` is what it produced, for the caller to act on (the new
    /// run's summary, the built dataset), when it produces anything.
    Finished {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result: Option<serde_json::Value>,
    },
    /// The job failed: the same `{ code, message }` an error of a command carries.
    Failed {
        code: crate::Code,
        message: String,
    },
    Cancelled,
}

impl JobEvent {
    /// `Finished` with nothing to report.
    pub const FINISHED: JobEvent = JobEvent::Finished { result: None };

    /// `Progress` of `current` out of `total` `unit`s, with an optional note (a file name).
    pub fn progress(current: u64, total: u64, unit: &str, message: Option<String>) -> Self {
        Self::progress_eta(current, total, unit, message, None)
    }

    /// [`JobEvent::progress`] with an estimate of the seconds left.
    pub fn progress_eta(
        current: u64,
        total: u64,
        unit: &str,
        message: Option<String>,
        eta_secs: Option<f64>,
    ) -> Self {
        JobEvent::Progress {
            current,
            total,
            unit: unit.into(),
            message,
            eta_secs,
        }
    }
}

/// Where a job reports what it does. Implementations must be cheap and must not block.
pub trait ProgressSink: Send + Sync {
    fn emit(&self, event: JobEvent);
}

/// A sink that discards everything (for callers that do not watch).
#[derive(Debug, Default, Clone, Copy)]
pub struct NullSink;

impl ProgressSink for NullSink {
    fn emit(&self, _event: JobEvent) {}
}

/// A sink that records every event; used by tests and by the CLI's `--json` summaries.
#[derive(Debug, Default)]
pub struct VecSink(Mutex<Vec<JobEvent>>);

impl VecSink {
    pub fn events(&self) -> Vec<JobEvent> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

impl ProgressSink for VecSink {
    fn emit(&self, event: JobEvent) {
        if let Ok(mut v) = self.0.lock() {
            v.push(event);
        }
    }
}

impl<F: Fn(JobEvent) + Send + Sync> ProgressSink for F {
    fn emit(&self, event: JobEvent) {
        self(event)
    }
}

/// Cooperative cancellation: cheap to clone, checked by jobs between units of work.
#[derive(Debug, Clone, Default)]
pub struct CancelToken(Arc<AtomicBool>);

impl CancelToken {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn cancel(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Lets through at most one event per interval (state transitions should bypass it).
#[derive(Debug)]
pub struct Throttle {
    every: std::time::Duration,
    last: Mutex<Option<std::time::Instant>>,
}

impl Throttle {
    /// At most `per_second` events a second.
    pub fn per_second(per_second: u32) -> Self {
        Self {
            every: std::time::Duration::from_secs(1) / per_second.max(1),
            last: Mutex::new(None),
        }
    }

    /// True if an event may go out now (and records that it did).
    pub fn ready(&self) -> bool {
        let now = std::time::Instant::now();
        let Ok(mut last) = self.last.lock() else {
            return true;
        };
        match *last {
            Some(t) if now.duration_since(t) < self.every => false,
            _ => {
                *last = Some(now);
                true
            }
        }
    }
}

/// The message a caught panic carried (`panic!("…")` gives a `&str` or a `String`), or
/// "unknown" — for the errors that say a parser, a library or a job stopped on a panic.
pub fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_serialise_as_tagged_camel_case() {
        let e = JobEvent::Progress {
            current: 1,
            total: 3,
            unit: "files".into(),
            message: None,
            eta_secs: None,
        };
        let json = serde_json::to_value(&e).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type": "progress", "data": {"current": 1, "total": 3, "unit": "files"}})
        );
        let m = JobEvent::Metrics {
            step: 2,
            epoch: 0.5,
            loss: 1.5,
            eval_loss: None,
            lr: 1e-4,
            grad_norm: Some(0.7),
            tokens_per_sec: 10.0,
            elapsed_secs: 4.0,
            eta_secs: 3.0,
            mem_bytes: Some(7),
            gpu_mem_bytes: None,
            base_eval_loss: None,
        };
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["type"], "metrics");
        assert_eq!(json["data"]["tokensPerSec"], 10.0);
        assert_eq!(json["data"]["memBytes"], 7);
        assert_eq!(json["data"]["gradNorm"], 0.7);
        assert!(json["data"].get("evalLoss").is_none());
        let back: JobEvent = serde_json::from_value(json).unwrap();
        assert_eq!(back, m);
        // Terminal events carry what a command's result or error would.
        let f = JobEvent::Failed {
            code: crate::Code::NotFound,
            message: "a.pdf: gone".into(),
        };
        assert_eq!(
            serde_json::to_value(&f).unwrap(),
            serde_json::json!({"type": "failed", "data": {"code": "notFound", "message": "a.pdf: gone"}})
        );
        let done = JobEvent::Finished {
            result: Some(serde_json::json!({"id": "run-1"})),
        };
        assert_eq!(
            serde_json::to_value(&done).unwrap()["data"]["result"]["id"],
            "run-1"
        );
        assert_eq!(
            serde_json::to_value(JobEvent::FINISHED).unwrap(),
            serde_json::json!({"type": "finished", "data": {}})
        );
    }

    #[test]
    fn throttle_lets_the_first_through_then_waits() {
        let t = Throttle::per_second(10);
        assert!(t.ready());
        assert!(!t.ready());
        std::thread::sleep(std::time::Duration::from_millis(110));
        assert!(t.ready());
    }

    #[test]
    fn cancel_is_shared_between_clones() {
        let t = CancelToken::new();
        let u = t.clone();
        assert!(!u.is_cancelled());
        t.cancel();
        assert!(u.is_cancelled());
    }

    #[test]
    fn closures_and_vec_sinks_receive_events() {
        let sink = VecSink::default();
        sink.emit(JobEvent::FINISHED);
        assert_eq!(sink.events(), vec![JobEvent::FINISHED]);
        let count = std::sync::atomic::AtomicUsize::new(0);
        let f = |_e: JobEvent| {
            count.fetch_add(1, Ordering::Relaxed);
        };
        (&f as &dyn ProgressSink).emit(JobEvent::Cancelled);
        assert_eq!(count.load(Ordering::Relaxed), 1);
    }
}
