//! Keeps docs/PROTOCOL.md honest: every example block is decoded with the
//! code the server and clients use, and re-encoded examples must match.

use tickcast::feed::json::parse_line;
use tickcast::wire::request::ClientRequest;
use tickcast::wire::{decode, encode_payload, Encoding, ServerMessage};

fn blocks(kind: &str) -> Vec<String> {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/PROTOCOL.md")).expect("read doc");
    let fence = format!("```json {kind}");
    let mut out = Vec::new();
    let mut lines = doc.lines();
    while let Some(line) = lines.next() {
        if line.trim() == fence {
            let body: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
            out.push(body.join("\n"));
        }
    }
    out
}

#[test]
fn server_examples_decode_and_survive_every_encoding() {
    let examples = blocks("server");
    assert!(examples.len() >= 8, "found {} server examples", examples.len());
    let mut kinds = std::collections::HashSet::new();
    for text in examples {
        let msg: ServerMessage<'static> =
            decode(Encoding::Json, text.as_bytes()).unwrap_or_else(|e| panic!("{text}\n{e}"));
        kinds.insert(msg.kind());
        for encoding in Encoding::ALL {
            let mut buf = Vec::new();
            encode_payload(encoding, &msg, &mut buf);
            assert_eq!(decode(encoding, &buf).unwrap(), msg, "{encoding:?}: {text}");
        }
        // The JSON the server writes is exactly the documented text.
        let mut buf = Vec::new();
        encode_payload(Encoding::Json, &msg, &mut buf);
        let ours: serde_json::Value = serde_json::from_slice(&buf).unwrap();
        let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(ours, doc, "documented example differs from what the server sends");
    }
    for kind in ["trade", "quote", "book", "snapshot", "ack", "error", "conflated", "reset", "replay_end"] {
        assert!(kinds.contains(kind), "no example of {kind}");
    }
}

#[test]
fn client_examples_parse() {
    let examples = blocks("client");
    assert!(examples.len() >= 3);
    for text in examples {
        ClientRequest::parse(text.as_bytes()).unwrap_or_else(|e| panic!("{text}: {}", e.message));
    }
}

#[test]
fn replay_control_examples_parse() {
    let examples = blocks("replay");
    assert_eq!(examples.len(), 4);
    let ops: Vec<&str> = examples
        .iter()
        .map(|text| {
            tickcast::session::replay::parse_control(text.as_bytes())
                .unwrap_or_else(|e| panic!("{text}: {}", e.message))
                .op()
        })
        .collect();
    assert_eq!(ops, ["pause", "resume", "speed", "seek"]);
}

#[test]
fn feed_examples_parse() {
    let examples = blocks("feed");
    assert_eq!(examples.len(), 3);
    for text in examples {
        parse_line(text.as_bytes()).unwrap_or_else(|e| panic!("{text}: {e}"));
    }
}

#[test]
fn the_binary_feed_example_is_the_first_json_feed_example() {
    use tickcast::feed::binary::parse_record;
    use tickcast::model::record::next_frame;
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/PROTOCOL.md")).unwrap();
    let hex = doc.split("```text feed-binary\n").nth(1).and_then(|t| t.split("```").next()).expect("binary example");
    let bytes: Vec<u8> = hex.split_whitespace().map(|b| u8::from_str_radix(b, 16).expect("hex byte")).collect();
    let (record, rest) = next_frame(&bytes).expect("one frame").expect("not empty");
    assert!(rest.is_empty());
    let json = blocks("feed").into_iter().next().expect("a feed example");
    assert_eq!(parse_record(record).expect("the record parses"), parse_line(json.as_bytes()).unwrap());
}

#[test]
fn the_documented_slow_policy_error_is_what_the_server_says() {
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/PROTOCOL.md")).unwrap();
    let ours = tickcast::server::upgrade::choose_slow_mode(Some("slow=drop")).unwrap_err();
    assert!(doc.contains(&format!("```text\n{ours}\n```")), "PROTOCOL.md lacks: {ours}");
}

#[test]
fn the_documented_bad_json_message_is_what_the_server_says() {
    let err = ClientRequest::parse(b"{nope").unwrap_err();
    let doc = blocks("server").into_iter().find(|b| b.contains("bad_json")).expect("bad_json example");
    let doc: serde_json::Value = serde_json::from_str(&doc).unwrap();
    assert!(doc["message"].as_str().unwrap().starts_with("control message is not valid JSON"));
    assert!(err.message.starts_with("control message is not valid JSON"));
}

#[test]
fn the_documented_checksums_are_what_the_server_computes() {
    use tickcast::model::{checksum, BookDelta};
    let doc = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/PROTOCOL.md")).unwrap();
    let messages: Vec<ServerMessage<'static>> =
        blocks("server").iter().map(|t| decode(Encoding::Json, t.as_bytes()).unwrap()).collect();
    // The snapshot example's checksum, and the worked example's bytes.
    let (depth, book) = messages
        .iter()
        .find_map(|m| match m {
            ServerMessage::Snapshot { depth, book, .. } => Some((*depth as usize, book.clone())),
            _ => None,
        })
        .expect("a snapshot example");
    assert_eq!(checksum(&book.bids, &book.asks, depth), book.checksum);
    let mut hex = String::new();
    for level in book.asks.iter().chain(book.bids.iter()) {
        for x in [level.px, level.sz] {
            hex.push_str(&x.to_le_bytes().iter().map(|b| format!("{b:02x}")).collect::<String>());
        }
    }
    let worked = doc.split("```text checksum\n").nth(1).and_then(|t| t.split("```").next()).expect("worked example");
    let documented: String = worked
        .lines()
        .filter(|l| !l.starts_with("crc32"))
        .flat_map(|l| l.split_whitespace().filter(|w| w.len() == 16))
        .collect();
    assert_eq!(documented, hex, "the worked example's bytes");
    assert!(worked.contains(&format!("= {}", book.checksum)), "the worked example's result");
    // The book example, applied to the snapshot, has the checksum it says.
    let (bids, asks, expected) = messages
        .iter()
        .find_map(|m| match m {
            ServerMessage::Book { bids, asks, checksum, .. } => Some((bids.to_vec(), asks.to_vec(), *checksum)),
            _ => None,
        })
        .expect("a book example");
    let mut full = tickcast::model::Book::default();
    full.apply(&BookDelta { bids: book.bids.to_vec(), asks: book.asks.to_vec() });
    full.apply(&BookDelta { bids, asks });
    assert_eq!(full.checksum(depth), expected);
    assert!(doc.contains(&format!("checksum is `{expected}`")));
}
