//! The loopback test Hub as a process, for the app's end-to-end tests: serves `org/tiny` (a tiny
//! Llama) and `org/pickle` (pickle only) on 127.0.0.1, prints its endpoint on the first line of
//! stdout, and stops when its standard input closes or after ten minutes, whichever is first.
//! Test-only: a binary of the dev-only `doctune-testkit` crate, never shipped.

use doctune_testkit::hub::{self as support, tiny_llama, FakeHub};
use std::io::Read;

fn main() {
    let hub = FakeHub::start();
    hub.add_files("org/tiny", tiny_llama(2));
    hub.add_files("org/pickle", support::pickle_only());
    println!("{}", hub.endpoint);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        let _ = tx.send(());
    });
    let _ = rx.recv_timeout(std::time::Duration::from_secs(600));
}
