//! Fuzzes the receive path of a session (docs/design.md §3): length prefix, frame kind, envelope.
//! Nothing may panic; an envelope that decodes must re-encode to bytes that decode to the same
//! envelope.

#![no_main]

use cpns_wire::codec::{self, LEN_PREFIX, frame_len, split_frame};
use cpns_wire::{DEFAULT_MAX_FRAME, decode_envelope};
use libfuzzer_sys::fuzz_target;

fn check(payload: &[u8]) {
    if let Ok(env) = decode_envelope(payload) {
        let mut again = Vec::new();
        codec::encode_envelope(&env, &mut again);
        assert_eq!(decode_envelope(&again).as_ref(), Ok(&env));
    }
}

fuzz_target!(|data: &[u8]| {
    // As a whole frame: prefix, then kind byte and payload.
    if let Some(prefix) = data
        .get(..LEN_PREFIX)
        .and_then(|p| <[u8; LEN_PREFIX]>::try_from(p).ok())
        && let Ok(len) = frame_len(prefix, DEFAULT_MAX_FRAME)
        && let Some(body) = data.get(LEN_PREFIX..LEN_PREFIX + len)
        && let Ok((_, payload)) = split_frame(body)
    {
        check(payload);
    }
    // As a frame without its prefix, and as a bare envelope.
    if let Ok((_, payload)) = split_frame(data) {
        check(payload);
    }
    check(data);
});
