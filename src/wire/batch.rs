//! Batched frames (`?batch=1`): several queued messages sent as one
//! WebSocket message, for clients that pay per message rather than per byte.
//!
//! A browser pays for every WebSocket message twice over: an IPC hop from
//! its network code to the page's renderer, and a task on the page's main
//! thread. In headless Chromium on the 2-core machine that was some 33 µs
//! on the renderer's IO thread per message, and at 10,000 updates/s the
//! trading page got 6 animation frames a second (BENCHMARKS.md, "The
//! JavaScript client in Chromium"). A client that asks for batches gets,
//! per write, the small data frames waiting for it as one message that is
//! still a single valid document of its encoding:
//!
//! - JSON: an array of the messages, `[{...},{...}]`;
//! - MessagePack: an array of the maps;
//! - Protobuf: a `ServerMessage` with `type` = `"batch"` and the messages
//!   in its repeated field `batch` (field 20).
//!
//! The messages themselves are the frames the engine encoded once for
//! every subscriber: a batch copies their payloads behind one header (as
//! the writer's gather buffer copies small frames anyway), and encodes
//! nothing. Control replies (acks, errors, pongs) and frames larger than
//! [`BATCH_FRAME_MAX`] (snapshots of deep books) are never batched, and a
//! batch holds at most [`BATCH_PAYLOAD_MAX`] bytes of payload.

use bytes::{BufMut, Bytes, BytesMut};

use super::Encoding;

/// Frames larger than this (header included) are sent as they are.
pub const BATCH_FRAME_MAX: usize = 1024;

/// Most payload bytes in one batch: a batch is one allocation-free copy
/// into the session's batch buffer, which grows to about this size once.
pub const BATCH_PAYLOAD_MAX: usize = 64 * 1024;

/// The `type` a protobuf batch carries: field 1, length 5, `"batch"`.
const PROTOBUF_TYPE: &[u8] = b"\x0a\x05batch";

/// The key of one element of a protobuf batch: field 20 (`batch`), wire
/// type 2 (length-delimited), as a varint.
const PROTOBUF_ELEMENT_KEY: &[u8] = &[0xa2, 0x01];

/// The payload of a final, unmasked text or binary frame as the server
/// builds them ([`frame`](super::frame)); `None` for anything else (control
/// frames, fragments), which is never batched.
pub fn data_payload(frame: &[u8]) -> Option<&[u8]> {
    let (&b0, rest) = frame.split_first()?;
    // FIN set, no extension bits, opcode text (1) or binary (2).
    if b0 != 0x81 && b0 != 0x82 {
        return None;
    }
    let (&b1, rest) = rest.split_first()?;
    if b1 & 0x80 != 0 {
        return None; // masked: not one of ours
    }
    let (len, rest) = match b1 & 0x7f {
        126 => (u16::from_be_bytes(rest.get(..2)?.try_into().ok()?) as usize, &rest[2..]),
        127 => (usize::try_from(u64::from_be_bytes(rest.get(..8)?.try_into().ok()?)).ok()?, &rest[8..]),
        n => (n as usize, rest),
    };
    (rest.len() == len).then_some(rest)
}

/// Bytes a varint of `n` takes.
fn varint_len(mut n: usize) -> usize {
    let mut len = 1;
    while n >= 0x80 {
        n >>= 7;
        len += 1;
    }
    len
}

/// The MessagePack header of an array of `count` elements (fixarray,
/// array 16 or array 32), and how many of its bytes are used.
fn msgpack_array_header(count: usize) -> ([u8; 5], usize) {
    let mut header = [0u8; 5];
    if count < 16 {
        header[0] = 0x90 | count as u8;
        (header, 1)
    } else if count <= 0xffff {
        header[0] = 0xdc;
        header[1..3].copy_from_slice(&(count as u16).to_be_bytes());
        (header, 3)
    } else {
        header[0] = 0xdd;
        header[1..5].copy_from_slice(&(count as u32).to_be_bytes());
        (header, 5)
    }
}

fn put_varint(out: &mut BytesMut, mut n: usize) {
    while n >= 0x80 {
        out.put_u8((n as u8 & 0x7f) | 0x80);
        n >>= 7;
    }
    out.put_u8(n as u8);
}

/// One message of `encoding` holding the payloads of `frames` (each a data
/// frame, see [`data_payload`]; others are skipped), in order, built in
/// `buf` (which keeps its capacity for the next batch once this one is
/// dropped). The opcode is the encoding's: text for JSON, else binary.
pub fn merge<'a>(encoding: Encoding, frames: impl Iterator<Item = &'a Bytes> + Clone, buf: &mut BytesMut) -> Bytes {
    let payloads = frames.filter_map(|f| data_payload(f));
    let (count, sum) = payloads.clone().fold((0usize, 0usize), |(c, s), p| (c + 1, s + p.len()));
    let len = match encoding {
        Encoding::Json => sum + count.saturating_sub(1) + 2,
        Encoding::Msgpack => sum + msgpack_array_header(count).1,
        Encoding::Protobuf => {
            PROTOBUF_TYPE.len()
                + payloads.clone().map(|p| PROTOBUF_ELEMENT_KEY.len() + varint_len(p.len()) + p.len()).sum::<usize>()
        }
    };
    buf.clear();
    buf.reserve(10 + len);
    buf.put_u8(if encoding == Encoding::Json { 0x81 } else { 0x82 });
    if len < 126 {
        buf.put_u8(len as u8);
    } else if len <= 0xffff {
        buf.put_u8(126);
        buf.put_u16(len as u16);
    } else {
        buf.put_u8(127);
        buf.put_u64(len as u64);
    }
    match encoding {
        Encoding::Json => {
            buf.put_u8(b'[');
            for (i, p) in payloads.enumerate() {
                if i > 0 {
                    buf.put_u8(b',');
                }
                buf.put_slice(p);
            }
            buf.put_u8(b']');
        }
        Encoding::Msgpack => {
            let (header, header_len) = msgpack_array_header(count);
            buf.put_slice(&header[..header_len]);
            for p in payloads {
                buf.put_slice(p);
            }
        }
        Encoding::Protobuf => {
            buf.put_slice(PROTOBUF_TYPE);
            for p in payloads {
                buf.put_slice(PROTOBUF_ELEMENT_KEY);
                put_varint(buf, p.len());
                buf.put_slice(p);
            }
        }
    }
    buf.split().freeze()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Side, Trade, Update};
    use crate::wire::{encode_frame, pb, ServerMessage};
    use prost::Message as _;

    fn trades(encoding: Encoding, n: u64) -> Vec<Bytes> {
        (1..=n)
            .map(|seq| {
                let trade = Update::Trade(Trade { px: 100.0 + seq as f64, sz: 1.5, side: Side::Buy });
                let msg = ServerMessage::update("AAPL", seq, 10 + seq, 20 + seq, &trade, 0);
                encode_frame(encoding, &msg, &mut Vec::new())
            })
            .collect()
    }

    #[test]
    fn data_payload_reads_the_servers_frames_and_refuses_the_rest() {
        for size in [0, 5, 125, 126, 300, 70_000] {
            let payload = vec![7u8; size];
            let framed = crate::wire::frame(fastwebsockets::OpCode::Binary, &payload);
            assert_eq!(data_payload(&framed), Some(&payload[..]), "size {size}");
        }
        let ping = crate::wire::frame(fastwebsockets::OpCode::Ping, b"x");
        assert_eq!(data_payload(&ping), None);
        assert_eq!(data_payload(&[0x82, 5, 1, 2]), None, "truncated");
        assert_eq!(data_payload(&[0x82, 0x81, 0, 0, 0, 0, 1]), None, "masked");
        assert_eq!(data_payload(&[0x02, 1, 1]), None, "not final");
        assert_eq!(data_payload(&[]), None);
    }

    #[test]
    fn a_json_batch_is_an_array_of_the_messages() {
        for n in [1, 2, 40] {
            let frames = trades(Encoding::Json, n);
            let merged = merge(Encoding::Json, frames.iter(), &mut BytesMut::new());
            assert_eq!(merged[0], 0x81, "a text frame");
            let value: serde_json::Value = serde_json::from_slice(data_payload(&merged).unwrap()).unwrap();
            let seqs: Vec<u64> = value.as_array().unwrap().iter().map(|m| m["seq"].as_u64().unwrap()).collect();
            assert_eq!(seqs, (1..=n).collect::<Vec<_>>());
        }
    }

    #[test]
    fn a_msgpack_batch_is_an_array_of_the_maps() {
        for n in [1, 15, 16, 300] {
            let frames = trades(Encoding::Msgpack, n);
            let merged = merge(Encoding::Msgpack, frames.iter(), &mut BytesMut::new());
            assert_eq!(merged[0], 0x82);
            let value: Vec<serde_json::Value> = rmp_serde::from_slice(data_payload(&merged).unwrap()).unwrap();
            let seqs: Vec<u64> = value.iter().map(|m| m["seq"].as_u64().unwrap()).collect();
            assert_eq!(seqs, (1..=n).collect::<Vec<_>>(), "{n} messages");
            assert_eq!(value[0]["px"], 101.0);
        }
    }

    #[test]
    fn a_protobuf_batch_is_a_server_message_of_type_batch() {
        for n in [1, 2, 200] {
            let frames = trades(Encoding::Protobuf, n);
            let merged = merge(Encoding::Protobuf, frames.iter(), &mut BytesMut::new());
            let msg = pb::ServerMessage::decode(data_payload(&merged).unwrap()).unwrap();
            assert_eq!(msg.r#type, "batch");
            let seqs: Vec<u64> = msg.batch.iter().map(|m| m.seq).collect();
            assert_eq!(seqs, (1..=n).collect::<Vec<_>>());
            assert_eq!(msg.batch[0].r#type, "trade");
        }
    }

    #[test]
    fn the_buffer_is_reused_once_a_batch_is_dropped() {
        let frames = trades(Encoding::Msgpack, 50);
        let mut buf = BytesMut::new();
        let first = merge(Encoding::Msgpack, frames.iter(), &mut buf);
        let at = first.as_ptr();
        drop(first);
        let second = merge(Encoding::Msgpack, frames.iter(), &mut buf);
        assert_eq!(second.as_ptr(), at, "no new allocation in the steady state");
    }
}
