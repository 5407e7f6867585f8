//! The real OS keychain: set, read, replace and delete a secret. Needs a reachable, unlocked
//! keychain, so it is built only with `--features keychain-tests`; `scripts/test` runs it inside
//! a private D-Bus session with a throwaway, unlocked gnome-keyring.
#![cfg(feature = "keychain-tests")]

use doctune_secrets::{Keychain, SecretStore, Sensitive};

#[test]
fn set_read_replace_delete_for_real() {
    let account = format!("doctune-test-{}", std::process::id());
    let k = Keychain;
    assert!(
        doctune_secrets::probe().usable,
        "{:?}",
        doctune_secrets::probe()
    );
    assert!(k.read(&account).unwrap().is_none());
    k.store(&account, &Sensitive::new("hf_first".into()))
        .unwrap();
    assert_eq!(k.read(&account).unwrap().unwrap().expose(), "hf_first");
    k.store(&account, &Sensitive::new("hf_second".into()))
        .unwrap();
    assert_eq!(k.read(&account).unwrap().unwrap().expose(), "hf_second");
    k.delete(&account).unwrap();
    assert!(k.read(&account).unwrap().is_none());
    k.delete(&account).unwrap(); // deleting nothing is fine
}
