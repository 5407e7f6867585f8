//! Secrets live in the OS keychain (Secret Service on Linux, Keychain on macOS, Credential
//! Manager on Windows) and, in memory, inside [`Sensitive`], whose `Debug`, `Display` and
//! `Serialize` all print `<redacted>`. There is no file fallback: when no keychain is reachable
//! the caller gets [`SecretError::NoKeychain`] with what to install.
//!
//! Use cases take a `&dyn` [`SecretStore`]: [`Keychain`] in the app and the CLI,
//! [`MemoryStore`] in tests that must not touch the user's keychain.

use serde::{Serialize, Serializer};
use std::fmt;

/// The keychain service name every DocTune secret is stored under.
pub const SERVICE: &str = "dev.doctune.DocTune";
/// The keychain account name of the Hugging Face access token.
pub const HF_TOKEN_ACCOUNT: &str = "huggingface-token";

/// A value that must never be printed, logged, serialised or sent in an event.
#[derive(Clone, PartialEq, Eq)]
pub struct Sensitive<T>(T);

impl<T> Sensitive<T> {
    pub fn new(value: T) -> Self {
        Self(value)
    }
    /// The value itself, for the one place that needs it (an HTTP header, the keychain call).
    pub fn expose(&self) -> &T {
        &self.0
    }
}

impl<T> fmt::Debug for Sensitive<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<T> fmt::Display for Sensitive<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl<T> Serialize for Sensitive<T> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("<redacted>")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// No keychain service answered. The message says what to install; there is no fallback.
    #[error("no OS keychain is reachable ({detail}). {hint}")]
    NoKeychain { detail: String, hint: &'static str },
    /// The keychain answered but is locked, has no default keyring, or wants a prompt.
    #[error("the OS keychain is locked or has no default keyring ({detail}). {hint}")]
    Locked { detail: String, hint: &'static str },
    #[error("the keychain refused the operation: {0}")]
    Keychain(String),
}

/// What to install so that a keychain is reachable, per OS.
pub const fn install_hint() -> &'static str {
    if cfg!(target_os = "linux") {
        "Install and unlock a Secret Service provider (GNOME Keyring: `gnome-keyring`, or KWallet) \
         and make sure a D-Bus session is running."
    } else if cfg!(target_os = "macos") {
        "The macOS Keychain should always be present; check that the login keychain is unlocked."
    } else {
        "Windows Credential Manager should always be present; check that the Credential Manager service is running."
    }
}

/// What to do about a locked keychain, per OS.
pub const fn unlock_hint() -> &'static str {
    if cfg!(target_os = "linux") {
        "Log in to a desktop session that unlocks the login keyring, or create and unlock one \
         (e.g. with Seahorse, or `gnome-keyring-daemon --unlock`)."
    } else {
        "Unlock the login keychain and try again."
    }
}

/// Whether a keychain answers and can be used, and which backend it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct KeychainStatus {
    pub backend: &'static str,
    /// The keychain service answered.
    pub reachable: bool,
    /// It can store and read secrets now (reachable, unlocked, with a default keyring).
    pub usable: bool,
    pub message: String,
}

/// The backend this build talks to.
pub const fn backend_name() -> &'static str {
    if cfg!(target_os = "linux") {
        "Secret Service (D-Bus)"
    } else if cfg!(target_os = "macos") {
        "macOS Keychain"
    } else {
        "Windows Credential Manager"
    }
}

/// Asks the keychain for an entry that does not exist; reading nothing writes nothing.
pub fn probe() -> KeychainStatus {
    let backend = backend_name();
    let (reachable, usable, message) = match read(HF_TOKEN_ACCOUNT) {
        Ok(_) => (true, true, "reachable and unlocked".to_string()),
        Err(e @ SecretError::Locked { .. }) => (true, false, e.to_string()),
        Err(e) => (false, false, e.to_string()),
    };
    KeychainStatus {
        backend,
        reachable,
        usable,
        message,
    }
}

fn map_err(e: keyring::Error) -> SecretError {
    match e {
        keyring::Error::PlatformFailure(inner) => SecretError::NoKeychain {
            detail: inner.to_string(),
            hint: install_hint(),
        },
        keyring::Error::NoStorageAccess(inner) => SecretError::Locked {
            detail: inner.to_string(),
            hint: unlock_hint(),
        },
        other => SecretError::Keychain(other.to_string()),
    }
}

fn entry(account: &str) -> Result<keyring::Entry, SecretError> {
    keyring::Entry::new(SERVICE, account).map_err(map_err)
}

/// Reads a secret; `Ok(None)` when none is stored.
pub fn read(account: &str) -> Result<Option<Sensitive<String>>, SecretError> {
    match entry(account)?.get_password() {
        Ok(v) => Ok(Some(Sensitive::new(v))),
        Err(keyring::Error::NoEntry) => Ok(None),
        Err(e) => Err(map_err(e)),
    }
}

/// Stores a secret, replacing any earlier one.
pub fn store(account: &str, value: &Sensitive<String>) -> Result<(), SecretError> {
    entry(account)?
        .set_password(value.expose())
        .map_err(map_err)
}

/// Deletes a secret; deleting one that is not there is not an error.
pub fn delete(account: &str) -> Result<(), SecretError> {
    match entry(account)?.delete_credential() {
        Ok(()) | Err(keyring::Error::NoEntry) => Ok(()),
        Err(e) => Err(map_err(e)),
    }
}

/// Where secrets are kept.
pub trait SecretStore: Send + Sync {
    fn read(&self, account: &str) -> Result<Option<Sensitive<String>>, SecretError>;
    fn store(&self, account: &str, value: &Sensitive<String>) -> Result<(), SecretError>;
    fn delete(&self, account: &str) -> Result<(), SecretError>;
}

/// The OS keychain.
#[derive(Debug, Default, Clone, Copy)]
pub struct Keychain;

impl SecretStore for Keychain {
    fn read(&self, account: &str) -> Result<Option<Sensitive<String>>, SecretError> {
        read(account)
    }
    fn store(&self, account: &str, value: &Sensitive<String>) -> Result<(), SecretError> {
        store(account, value)
    }
    fn delete(&self, account: &str) -> Result<(), SecretError> {
        delete(account)
    }
}

/// Secrets in process memory only, for tests. Never a fallback for the keychain.
#[derive(Debug, Default)]
pub struct MemoryStore(std::sync::Mutex<std::collections::HashMap<String, Sensitive<String>>>);

impl SecretStore for MemoryStore {
    fn read(&self, account: &str) -> Result<Option<Sensitive<String>>, SecretError> {
        Ok(self.0.lock().ok().and_then(|m| m.get(account).cloned()))
    }
    fn store(&self, account: &str, value: &Sensitive<String>) -> Result<(), SecretError> {
        if let Ok(mut m) = self.0.lock() {
            m.insert(account.to_string(), value.clone());
        }
        Ok(())
    }
    fn delete(&self, account: &str) -> Result<(), SecretError> {
        if let Ok(mut m) = self.0.lock() {
            m.remove(account);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "hf_abcdefSECRETghijk";

    #[test]
    fn sensitive_never_prints_its_value() {
        let s = Sensitive::new(TOKEN.to_string());
        assert_eq!(format!("{s:?}"), "<redacted>");
        assert_eq!(format!("{s}"), "<redacted>");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"<redacted>\"");
        #[derive(Debug, Serialize)]
        struct Holder {
            token: Sensitive<String>,
        }
        let h = Holder { token: s.clone() };
        assert!(!format!("{h:?}").contains("SECRET"));
        assert!(!serde_json::to_string(&h).unwrap().contains("SECRET"));
        assert_eq!(s.expose(), TOKEN);
    }

    #[test]
    fn keychain_round_trip_with_the_mock_store() {
        keyring::set_default_credential_builder(keyring::mock::default_credential_builder());
        // The mock store keeps nothing between entries, so exercise one entry's life.
        let e = keyring::Entry::new(SERVICE, "test").unwrap();
        assert!(matches!(e.get_password(), Err(keyring::Error::NoEntry)));
        e.set_password(TOKEN).unwrap();
        assert_eq!(e.get_password().unwrap(), TOKEN);
        e.delete_credential().unwrap();
        assert!(matches!(e.get_password(), Err(keyring::Error::NoEntry)));
    }

    #[test]
    fn unreachable_keychain_errors_say_what_to_install() {
        let err = map_err(keyring::Error::PlatformFailure("no dbus".into()));
        let msg = err.to_string();
        assert!(msg.contains("no OS keychain is reachable"), "{msg}");
        assert!(msg.contains(install_hint()), "{msg}");
        let err = map_err(keyring::Error::NoStorageAccess("locked".into()));
        let msg = err.to_string();
        assert!(msg.contains("locked or has no default keyring"), "{msg}");
        assert!(msg.contains(unlock_hint()), "{msg}");
    }
}
