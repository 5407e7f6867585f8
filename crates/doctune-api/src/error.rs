//! The wire error: every failure that leaves `doctune-api` is `{ code, message, details? }`.
//! `message` is one line that names the file or project and says what is wrong.

use doctune_core::{Code, ScopeError};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::Path;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiError {
    pub code: Code,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            details: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidInput, message)
    }

    /// An I/O failure on `path`, with the code chosen from the error kind.
    pub fn io(path: &Path, what: &str, e: &std::io::Error) -> Self {
        use std::io::ErrorKind as K;
        let code = match e.kind() {
            K::NotFound => Code::NotFound,
            K::AlreadyExists => Code::AlreadyExists,
            K::StorageFull => Code::NoSpace,
            _ => Code::Internal,
        };
        let reason = match e.kind() {
            K::NotFound => "no such file or folder".to_string(),
            K::PermissionDenied => "permission denied".to_string(),
            _ => e.to_string(),
        };
        Self::new(code, format!("{}: {what}: {reason}", path.display()))
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ApiError {}

impl From<ScopeError> for ApiError {
    fn from(e: ScopeError) -> Self {
        let code = match &e {
            ScopeError::ParentComponent { .. } | ScopeError::Escapes { .. } => Code::OutsideScope,
            ScopeError::RootNotDir { .. } => Code::InvalidInput,
            ScopeError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                Code::NotFound
            }
            ScopeError::Io { .. } => Code::Internal,
        };
        Self::new(code, e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serialises_as_the_wire_shape() {
        let e = ApiError::new(Code::NotFound, "a.pdf: no such file or folder");
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            serde_json::json!({"code": "notFound", "message": "a.pdf: no such file or folder"})
        );
    }
}
