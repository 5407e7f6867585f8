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
            ScopeError::ParentComponent { .. }
            | ScopeError::Escapes { .. }
            | ScopeError::Changed { .. } => Code::OutsideScope,
            ScopeError::RootNotDir { .. } => Code::InvalidInput,
            ScopeError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound => {
                Code::NotFound
            }
            ScopeError::Io { .. } => Code::Internal,
        };
        Self::new(code, e.to_string())
    }
}

impl From<doctune_core::InvalidId> for ApiError {
    fn from(e: doctune_core::InvalidId) -> Self {
        Self::invalid(e.to_string())
    }
}

impl From<doctune_core::LayoutError> for ApiError {
    fn from(e: doctune_core::LayoutError) -> Self {
        match e {
            doctune_core::LayoutError::InvalidId(e) => e.into(),
            doctune_core::LayoutError::Scope(e) => e.into(),
        }
    }
}

impl From<doctune_train::TrainError> for ApiError {
    fn from(e: doctune_train::TrainError) -> Self {
        use doctune_train::TrainError as E;
        let code = match &e {
            E::OutOfMemory { .. } => Code::NoSpace,
            E::Model(doctune_models::ModelError::Write { source, .. })
                if source.kind() == std::io::ErrorKind::StorageFull =>
            {
                Code::NoSpace
            }
            E::Io { source, .. } if source.kind() == std::io::ErrorKind::StorageFull => {
                Code::NoSpace
            }
            E::Io { .. } | E::Candle(_) | E::Corrupt { .. } => Code::Internal,
            E::Dataset(d) => {
                return dataset_code(d).map_or_else(
                    || Self::invalid(e.to_string()),
                    |c| Self::new(c, e.to_string()),
                )
            }
            _ => Code::InvalidInput,
        };
        Self::new(code, e.to_string())
    }
}

fn dataset_code(e: &doctune_dataset::DatasetError) -> Option<Code> {
    use doctune_dataset::DatasetError as E;
    match e {
        E::Cancelled => Some(Code::Cancelled),
        E::Io { source, .. } if source.kind() == std::io::ErrorKind::StorageFull => {
            Some(Code::NoSpace)
        }
        E::Io { .. } => Some(Code::Internal),
        _ => None,
    }
}

impl From<doctune_dataset::DatasetError> for ApiError {
    fn from(e: doctune_dataset::DatasetError) -> Self {
        Self::new(
            dataset_code(&e).unwrap_or(Code::InvalidInput),
            e.to_string(),
        )
    }
}

impl From<doctune_hub::HubError> for ApiError {
    fn from(e: doctune_hub::HubError) -> Self {
        use doctune_hub::HubError as E;
        let code = match &e {
            E::Cancelled => Code::Cancelled,
            E::NoSpace { .. } => Code::NoSpace,
            E::NotFound { .. } => Code::NotFound,
            E::Scope(_) => Code::OutsideScope,
            E::PickleOnly { .. }
            | E::RemoteCode { .. }
            | E::NotAModel { .. }
            | E::InvalidModel { .. }
            | E::TokenRequired { .. }
            | E::Endpoint { .. }
            | E::AccessDenied { .. } => Code::InvalidInput,
            _ => Code::Internal,
        };
        Self::new(code, e.to_string())
    }
}

impl From<doctune_models::ModelError> for ApiError {
    fn from(e: doctune_models::ModelError) -> Self {
        use doctune_models::ModelError as E;
        let code = match &e {
            E::Cancelled => Code::Cancelled,
            E::Candle(_) => Code::Internal,
            E::Write { source, .. } if source.kind() == std::io::ErrorKind::StorageFull => {
                Code::NoSpace
            }
            E::Write { .. } => Code::Internal,
            _ => Code::InvalidInput,
        };
        Self::new(code, e.to_string())
    }
}

impl From<doctune_export::ExportError> for ApiError {
    fn from(e: doctune_export::ExportError) -> Self {
        use doctune_export::ExportError as E;
        match e {
            E::Train(t) => t.into(),
            E::Model(m) => m.into(),
            E::Tokenizer(t) => t.into(),
            E::Dataset(d) => d.into(),
            other => {
                let code = match &other {
                    E::Cancelled => Code::Cancelled,
                    E::Exists { .. } => Code::AlreadyExists,
                    E::NoSpace { .. } => Code::NoSpace,
                    E::Io { source, .. } if source.kind() == std::io::ErrorKind::StorageFull => {
                        Code::NoSpace
                    }
                    E::Io { .. } | E::Candle(_) => Code::Internal,
                    _ => Code::InvalidInput,
                };
                Self::new(code, other.to_string())
            }
        }
    }
}

impl From<doctune_tokenizer::TokenizerError> for ApiError {
    fn from(e: doctune_tokenizer::TokenizerError) -> Self {
        Self::invalid(e.to_string())
    }
}

impl From<doctune_models::TargetError> for ApiError {
    fn from(e: doctune_models::TargetError) -> Self {
        Self::invalid(e.to_string())
    }
}

impl From<doctune_secrets::SecretError> for ApiError {
    fn from(e: doctune_secrets::SecretError) -> Self {
        Self::new(Code::Internal, e.to_string())
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

    #[test]
    fn library_errors_keep_the_codes_callers_branch_on() {
        let corrupt: ApiError = doctune_train::TrainError::Corrupt {
            path: "run.json".into(),
            message: "not a run".into(),
        }
        .into();
        assert_eq!(corrupt.code, Code::Internal);
        let bad: ApiError = doctune_train::TrainError::Invalid("rank 0".into()).into();
        assert_eq!(bad.code, Code::InvalidInput);
        let cancelled: ApiError = doctune_dataset::DatasetError::Cancelled.into();
        assert_eq!(cancelled.code, Code::Cancelled);
        let id: ApiError = doctune_core::check_id("run", "..").unwrap_err().into();
        assert_eq!(id.code, Code::InvalidInput);
    }
}
