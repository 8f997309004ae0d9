//! The three MQTT 3.1.1 packets the Mosquitto baseline exchanges (OASIS MQTT 3.1.1, §2-3):
//! CONNECT and DISCONNECT, which the benchmark client sends, and CONNACK, which it checks. Two
//! packets do not call for an MQTT crate; this encoder is small and tested against the spec.

/// The largest Remaining Length MQTT 3.1.1 can encode (§2.2.3: four bytes of seven bits).
const MAX_REMAINING_LENGTH: usize = 268_435_455;

/// The DISCONNECT packet (§3.14): fixed header only.
pub const DISCONNECT: [u8; 2] = [0xE0, 0x00];

/// Length of a CONNACK packet (§3.2): two bytes of fixed header, two of variable header.
pub const CONNACK_LEN: usize = 4;

/// Appends the Remaining Length of a fixed header (§2.2.3): seven bits per byte, least
/// significant group first, the top bit set while more bytes follow. `None` above
/// [`MAX_REMAINING_LENGTH`].
fn put_remaining_length(out: &mut Vec<u8>, mut len: usize) -> Option<()> {
    if len > MAX_REMAINING_LENGTH {
        return None;
    }
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            return Some(());
        }
    }
}

/// Appends a UTF-8 encoded string (§1.5.3): a two-byte big-endian length, then the bytes.
fn put_string(out: &mut Vec<u8>, s: &str) -> Option<()> {
    out.extend_from_slice(&u16::try_from(s.len()).ok()?.to_be_bytes());
    out.extend_from_slice(s.as_bytes());
    Some(())
}

/// A CONNECT packet (§3.1) asking for a clean session (§3.1.2.4), with no will, user name or
/// password, for `client_id` and a keep-alive of `keep_alive_secs` (§3.1.2.10). `None` if the
/// client identifier is longer than a string can be.
pub fn connect(client_id: &str, keep_alive_secs: u16) -> Option<Vec<u8>> {
    const CLEAN_SESSION: u8 = 0x02;
    let mut body = Vec::with_capacity(12 + client_id.len());
    put_string(&mut body, "MQTT")?; // §3.1.2.1 Protocol Name
    body.push(0x04); // §3.1.2.2 Protocol Level: 3.1.1
    body.push(CLEAN_SESSION); // §3.1.2.3 Connect Flags
    body.extend_from_slice(&keep_alive_secs.to_be_bytes());
    put_string(&mut body, client_id)?; // §3.1.3.1 Client Identifier
    let mut packet = Vec::with_capacity(body.len() + 5);
    packet.push(0x10); // §3.1.1: type 1, flags 0
    put_remaining_length(&mut packet, body.len())?;
    packet.extend_from_slice(&body);
    Some(packet)
}

/// Why a CONNACK did not accept the connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConnackError {
    /// The bytes are not a CONNACK of a clean session (§3.2.1, §3.2.2.1-2).
    Malformed([u8; CONNACK_LEN]),
    /// The server refused the connection with this return code (§3.2.2.3, Table 3.1).
    Refused(u8),
}

impl core::fmt::Display for ConnackError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            ConnackError::Malformed(b) => write!(f, "not a CONNACK: {:02x?}", b),
            ConnackError::Refused(code) => {
                let why = match code {
                    1 => "unacceptable protocol version",
                    2 => "identifier rejected",
                    3 => "server unavailable",
                    4 => "bad user name or password",
                    5 => "not authorized",
                    _ => "reserved return code",
                };
                write!(f, "CONNACK refused the connection: {code} ({why})")
            }
        }
    }
}

impl std::error::Error for ConnackError {}

/// Checks a CONNACK answering a clean-session CONNECT: packet type 2 with no flags, Remaining
/// Length 2, Session Present 0 (§3.2.2.2: a clean session never has one) and return code 0.
pub fn check_connack(b: [u8; CONNACK_LEN]) -> Result<(), ConnackError> {
    match b {
        [0x20, 0x02, 0x00, 0x00] => Ok(()),
        [0x20, 0x02, 0x00, code] => Err(ConnackError::Refused(code)),
        _ => Err(ConnackError::Malformed(b)),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn remaining_length_matches_the_spec_table() {
        // §2.2.3, Table 2.4: the bounds of each encoded length.
        let table: [(usize, &[u8]); 8] = [
            (0, &[0x00]),
            (127, &[0x7F]),
            (128, &[0x80, 0x01]),
            (16_383, &[0xFF, 0x7F]),
            (16_384, &[0x80, 0x80, 0x01]),
            (2_097_151, &[0xFF, 0xFF, 0x7F]),
            (2_097_152, &[0x80, 0x80, 0x80, 0x01]),
            (268_435_455, &[0xFF, 0xFF, 0xFF, 0x7F]),
        ];
        for (len, bytes) in table {
            let mut out = Vec::new();
            assert_eq!(put_remaining_length(&mut out, len), Some(()));
            assert_eq!(out, bytes, "length {len}");
        }
        // §2.2.3's own example: 64 is one byte, 321 is two (0xC1 0x02).
        for (len, bytes) in [(64, &[0x40][..]), (321, &[0xC1, 0x02][..])] {
            let mut out = Vec::new();
            assert_eq!(put_remaining_length(&mut out, len), Some(()));
            assert_eq!(out, bytes);
        }
        assert_eq!(put_remaining_length(&mut Vec::new(), 268_435_456), None);
    }

    #[test]
    fn connect_is_the_spec_layout() {
        let packet = connect("bench-1", 60).unwrap();
        #[rustfmt::skip]
        let expected: &[u8] = &[
            0x10, 19,                                  // CONNECT, Remaining Length 10 + 2 + 7
            0x00, 0x04, b'M', b'Q', b'T', b'T',        // §3.1.2.1 Protocol Name
            0x04,                                      // §3.1.2.2 Protocol Level
            0x02,                                      // §3.1.2.3 flags: Clean Session only
            0x00, 0x3C,                                // §3.1.2.10 Keep Alive: 60 s
            0x00, 0x07, b'b', b'e', b'n', b'c', b'h', b'-', b'1', // §3.1.3.1 Client Identifier
        ];
        assert_eq!(packet, expected);
        // The spec's variable header example (§3.1.2.10, Figure 3.6) differs from ours only in
        // its flags (0xCE) and keep-alive (10): the first six bytes and the level are the same.
        assert_eq!(&packet[2..9], &[0x00, 0x04, 0x4D, 0x51, 0x54, 0x54, 0x04]);
        // A long identifier takes a two-byte Remaining Length.
        let long = connect(&"x".repeat(200), 60).unwrap();
        assert_eq!(&long[..3], &[0x10, 0xD4, 0x01]); // 212 = 0x54 + 1 * 128
        assert_eq!(long.len(), 3 + 212);
        assert_eq!(connect(&"x".repeat(65_536), 60), None);
    }

    #[test]
    fn connack_accepts_only_return_code_zero() {
        assert_eq!(check_connack([0x20, 0x02, 0x00, 0x00]), Ok(()));
        for code in 1..=5 {
            assert_eq!(
                check_connack([0x20, 0x02, 0x00, code]),
                Err(ConnackError::Refused(code))
            );
        }
        let refused = check_connack([0x20, 0x02, 0x00, 0x05]).unwrap_err();
        assert!(refused.to_string().contains("not authorized"));
        // Session Present on a clean session, another packet type, a wrong length.
        for bad in [
            [0x20, 0x02, 0x01, 0x00],
            [0x30, 0x02, 0x00, 0x00],
            [0x20, 0x03, 0x00, 0x00],
        ] {
            assert_eq!(check_connack(bad), Err(ConnackError::Malformed(bad)));
        }
    }

    #[test]
    fn disconnect_is_type_14_with_no_body() {
        assert_eq!(DISCONNECT, [14 << 4, 0]);
    }
}
