//! Error codes that cross the IPC boundary. A code exists only where a consumer branches on it;
//! everything else is `Internal` with a message that says what went wrong and what to do.

use serde::{Deserialize, Serialize};

/// What kind of failure an operation had, for callers that act differently per kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Code {
    /// Something the user gave us is wrong (bad name, bad option). The message says what.
    InvalidInput,
    /// A file or project does not exist.
    NotFound,
    /// A path resolved outside the folder it must stay in.
    OutsideScope,
    /// The path exists but is not something we can use (a directory, FIFO, device, unreadable).
    NotARegularFile,
    /// The thing already exists (a project name, a document with the same content).
    AlreadyExists,
    /// The disk does not have room for the operation.
    NoSpace,
    /// The job was cancelled by the user.
    Cancelled,
    /// Anything else: a bug or an environment problem; the message carries the detail.
    Internal,
}
