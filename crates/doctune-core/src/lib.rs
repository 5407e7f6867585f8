//! DocTune's shared vocabulary, used by every other crate and by neither shell directly.
//!
//! - [`Scope`]: confines paths to a root folder (canonicalised; `..` and symlink escapes refused).
//! - [`atomic`]: write-to-temp, fsync, rename — a crash leaves the old file or the new one;
//!   [`StagedDir`]: the same for whole folders (datasets, checkpoints, imports, exports).
//! - [`ProjectDir`] and [`Area`]: the one owner of a project folder's layout; [`id`]: folder
//!   ids (checked, stamped with the time) and the RFC 3339 clock.
//! - [`JobEvent`], [`ProgressSink`], [`CancelToken`]: how long jobs report and are stopped.
//! - [`open`]: opening without following links, handle checks, bounded reads of an open file.
//! - [`space`]: free disk space, checked against an estimate before a large write.
//! - [`worker`]: untrusted work (document parsers, chat templates) in a child process with
//!   memory, CPU and wall-clock limits, killed when it passes one.
//! - [`Code`]: the small set of error codes a caller (the UI) branches on.
//! - [`Family`]: the model families DocTune supports, by `config.json` architecture.

pub mod atomic;
pub mod code;
pub mod families;
pub mod id;
pub mod job;
pub mod layout;
pub mod open;
pub mod read;
pub mod scope;
pub mod space;
pub mod staged;
pub mod units;
pub mod worker;

pub use atomic::{write_atomic, write_json_atomic};
pub use code::Code;
pub use families::Family;
pub use id::{check_id, now_rfc3339, stamped_id, InvalidId};
pub use job::{
    panic_message, CancelToken, JobEvent, JobId, NullSink, ProgressSink, Throttle, VecSink,
};
pub use layout::{Area, LayoutError, ProjectDir};
pub use read::read_limited;
pub use scope::{Scope, ScopeError};
pub use staged::StagedDir;
