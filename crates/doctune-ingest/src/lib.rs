//! Document ingestion. Today: what a file *is*, decided by its content ([`detect`]), with the
//! extension used only as a hint and any mismatch reported. Text extraction builds on this.

pub mod detect;

pub use detect::{detect, detect_reader, DetectError, Detection, Format};
