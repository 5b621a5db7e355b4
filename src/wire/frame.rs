//! WebSocket framing for the server side: final, unmasked frames built
//! once and shared as `Bytes`.

use bytes::{Bytes, BytesMut};
use fastwebsockets::{Frame, OpCode, Payload};

/// Frames `payload` as one final, unmasked server frame.
pub fn frame(opcode: OpCode, payload: &[u8]) -> Bytes {
    let mut head = [0u8; 14];
    let head_len = Frame::new(true, opcode, None, Payload::Borrowed(payload)).fmt_head(&mut head);
    let mut out = BytesMut::with_capacity(head_len + payload.len());
    out.extend_from_slice(&head[..head_len]);
    out.extend_from_slice(payload);
    out.freeze()
}

/// A close frame with `code` and a short UTF-8 `reason` (at most 123 bytes,
/// as RFC 6455 allows for control frames; longer reasons are cut).
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    let mut cut = reason.len().min(123);
    while !reason.is_char_boundary(cut) {
        cut -= 1;
    }
    payload.extend_from_slice(&reason.as_bytes()[..cut]);
    frame(OpCode::Close, &payload)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn frames_are_final_unmasked_with_the_right_opcode_and_length() {
        for len in [0usize, 125, 126, 65535, 65536] {
            let payload = vec![b'x'; len];
            let f = frame(OpCode::Binary, &payload);
            assert_eq!(f[0], 0x82);
            assert_eq!(f[1] & 0x80, 0, "server frames are unmasked");
            assert_eq!(strip_header(&f).len(), len);
        }
        let f = frame(OpCode::Text, b"{}");
        assert_eq!(f[0], 0x81);
        let c = close_frame(1009, "message too big");
        assert_eq!(c[0], 0x88);
        assert_eq!(&c[2..4], &1009u16.to_be_bytes());
    }

    /// The payload of an unmasked frame.
    pub(crate) fn strip_header(frame: &[u8]) -> &[u8] {
        let len = frame[1] & 0x7f;
        let start = match len {
            126 => 4,
            127 => 10,
            _ => 2,
        };
        &frame[start..]
    }
}
