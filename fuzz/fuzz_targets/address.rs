//! Address parsing over arbitrary strings: never panics; a refusal is an
//! `InvalidAddress` error that says what was expected; an accepted address
//! prints as a string that parses back to the same address (and prints the
//! same again).
#![no_main]

use ipc_core::{Address, Error};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    match input.parse::<Address>() {
        Ok(address) => {
            let shown = address.to_string();
            let again: Address = shown.parse().unwrap_or_else(|e| {
                panic!("{input:?} parsed, but its display {shown:?} did not: {e}")
            });
            assert_eq!(again, address, "{input:?} -> {shown:?} changed the address");
            assert_eq!(again.to_string(), shown);
            assert!(shown.starts_with(address.scheme()));
        }
        Err(e) => {
            assert!(
                matches!(e, Error::InvalidAddress { .. }),
                "{input:?}: {e:?}"
            );
            let message = e.to_string();
            assert!(message.contains("expected"), "{input:?}: {message}");
        }
    }
});
