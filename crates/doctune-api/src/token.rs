//! The Hugging Face access token: set, show whether one is stored, delete, test. It lives in the
//! OS keychain only (through a [`SecretStore`]); it is never printed, logged, written to a file,
//! sent in an event or put in an error.

use crate::{ApiError, Home};
use doctune_secrets::{SecretStore, Sensitive, HF_TOKEN_ACCOUNT};
use serde::Serialize;

/// Longest token accepted (Hub tokens are under 100 characters).
pub const MAX_TOKEN_CHARS: usize = 512;

/// Whether a token is stored, without revealing anything of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenStatus {
    pub stored: bool,
    /// Set when the keychain could not be asked; says what to do.
    pub problem: Option<String>,
}

/// Stores `token` (surrounding whitespace trimmed), replacing any earlier one.
pub fn set(store: &dyn SecretStore, token: Sensitive<String>) -> Result<(), ApiError> {
    let t = token.expose().trim();
    if t.is_empty() {
        return Err(ApiError::invalid("the token is empty"));
    }
    if t.chars().count() > MAX_TOKEN_CHARS || t.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(ApiError::invalid(
            "that does not look like an access token (it contains spaces or is too long)",
        ));
    }
    store.store(HF_TOKEN_ACCOUNT, &Sensitive::new(t.to_string()))?;
    Ok(())
}

pub fn status(store: &dyn SecretStore) -> TokenStatus {
    match store.read(HF_TOKEN_ACCOUNT) {
        Ok(t) => TokenStatus {
            stored: t.is_some(),
            problem: None,
        },
        Err(e) => TokenStatus {
            stored: false,
            problem: Some(e.to_string()),
        },
    }
}

pub fn delete(store: &dyn SecretStore) -> Result<(), ApiError> {
    store.delete(HF_TOKEN_ACCOUNT)?;
    Ok(())
}

/// The token to send, if one is stored and the keychain answers.
pub(crate) fn current(store: &dyn SecretStore) -> Option<Sensitive<String>> {
    match store.read(HF_TOKEN_ACCOUNT) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!("not using an access token: {e}");
            None
        }
    }
}

/// Asks the Hub whose token this is; returns the account name.
pub fn test(home: &Home, store: &dyn SecretStore) -> Result<String, ApiError> {
    let token = current(store)
        .ok_or_else(|| ApiError::invalid("no access token is stored; add one first"))?;
    let client = crate::hub::client(home, Some(&token))?;
    Ok(crate::hub::block_on(async { client.whoami().await })?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use doctune_secrets::MemoryStore;

    #[test]
    fn set_status_delete() {
        let s = MemoryStore::default();
        assert!(!status(&s).stored);
        set(&s, Sensitive::new("  hf_abc123  ".into())).unwrap();
        assert!(status(&s).stored);
        assert_eq!(current(&s).unwrap().expose(), "hf_abc123");
        assert!(set(&s, Sensitive::new("hf abc".into())).is_err());
        assert!(set(&s, Sensitive::new("".into())).is_err());
        delete(&s).unwrap();
        assert!(!status(&s).stored);
    }
}
