//! Proves the codec against its spec: every SPEC.md test vector decodes to the
//! command it documents and that command encodes back to the same bytes;
//! random commands round-trip; a stream decodes identically however it is
//! split across reads; malformed input yields the documented errors.

use std::path::{Path, PathBuf};

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use statecast_protocol::{
    Ack, AckSet, AckType, Command, CommandCode, DecodeError, Deliver, Flush, FrameDecoder,
    GroupBegin, GroupEnd, Heartbeat, Logon, Publish, REASONS, ReasonCode,
    SOW_BATCH_RECORD_HEADER_LEN, SowBatch, SowBatchRecord, SowDelete, SowQuery, Status, SubIds,
    Subscribe, Unsubscribe, Utf8, encode_deliver_header, encode_record_header,
    encode_sow_batch_header, encode_sow_batch_record_header, sow_batch_header_len,
};

const MAX: usize = 1 << 20;

/// The SowKeys the vectors use (`KEY_1`, `KEY_2` in gen_vectors.py).
const KEY_1: u64 = 0x9E37_79B9_7F4A_7C15;
const KEY_2: u64 = 0x0123_4567_89AB_CDEF;

fn vectors() -> Vec<(&'static str, Command)> {
    vec![
        (
            "logon",
            Command::Logon(Logon {
                command_id: Some(1),
                client_name: Utf8::from("app-1"),
                credentials: None,
                heartbeat_ms: Some(5000),
            }),
        ),
        ("heartbeat", Command::Heartbeat(Heartbeat)),
        (
            "publish",
            Command::Publish(Publish {
                command_id: Some(7),
                topic: Utf8::from("orders"),
                ack: AckSet::only(AckType::Processed),
                sequence: None,
                sow_key: None,
                payload: Bytes::from_static(b"{\"id\":1}"),
            }),
        ),
        (
            "publish_no_ack",
            Command::Publish(Publish {
                command_id: None,
                topic: Utf8::from("t"),
                ack: AckSet::NONE,
                sequence: None,
                sow_key: None,
                payload: Bytes::from_static(b"hi"),
            }),
        ),
        (
            "subscribe",
            Command::Subscribe(Subscribe {
                command_id: Some(2),
                sub_id: 42,
                topic: Utf8::from("orders"),
                filter: None,
                options: None,
                bookmark: None,
            }),
        ),
        (
            "unsubscribe",
            Command::Unsubscribe(Unsubscribe {
                command_id: Some(3),
                sub_id: Some(42),
            }),
        ),
        ("flush", Command::Flush(Flush { command_id: 9 })),
        (
            "ack_logon",
            Command::Ack(Ack {
                client_name: Some(Utf8::from("app-1")),
                heartbeat_ms: Some(5000),
                max_frame_bytes: Some(16_777_216),
                server_version: Some(Utf8::from("0.1.0")),
                ..Ack::success(AckType::Processed, Some(1))
            }),
        ),
        (
            "ack_failure",
            Command::Ack(Ack::failure(
                AckType::Processed,
                None,
                ReasonCode::UnknownCommand,
                "unknown command code 0x7f",
            )),
        ),
        (
            "deliver",
            Command::Deliver(Deliver {
                topic: Utf8::from("orders"),
                sub_ids: SubIds::from_ids(&[42]),
                bookmark: None,
                timestamp: 1_700_000_000_000_000_000,
                sow_key: None,
                payload: Bytes::from_static(b"{\"id\":1}"),
            }),
        ),
        (
            "publish_sow_key",
            Command::Publish(Publish {
                command_id: Some(8),
                topic: Utf8::from("prices"),
                ack: AckSet::only(AckType::Processed),
                sequence: None,
                sow_key: Some(Bytes::from_static(b"EURUSD")),
                payload: Bytes::from_static(b"{\"bid\":1.08}"),
            }),
        ),
        (
            "sow",
            Command::Sow(SowQuery {
                command_id: Some(10),
                sub_id: 5,
                topic: Utf8::from("orders"),
                filter: Some(Utf8::from("/qty > 10")),
                options: None,
                order_by: None,
                top_n: Some(2),
                skip_n: None,
                sow_keys: None,
                batch_size: None,
            }),
        ),
        (
            "sow_and_subscribe",
            Command::SowAndSubscribe(SowQuery {
                command_id: Some(11),
                sub_id: 6,
                topic: Utf8::from("orders"),
                filter: Some(Utf8::from("/region = 'eu'")),
                options: Some(Utf8::from("non_regex_topic")),
                order_by: Some(Utf8::from("/price DESC, /id")),
                top_n: Some(100),
                skip_n: Some(100),
                sow_keys: Some(SubIds::from_ids(&[KEY_1])),
                batch_size: None,
            }),
        ),
        (
            "sow_delete",
            Command::SowDelete(SowDelete {
                command_id: 12,
                topic: Utf8::from("orders"),
                filter: Some(Utf8::from("/status = 'closed'")),
                sow_keys: None,
                ack: AckSet::NONE,
                payload: Bytes::new(),
            }),
        ),
        (
            "sow_delete_keys",
            Command::SowDelete(SowDelete {
                command_id: 13,
                topic: Utf8::from("orders"),
                filter: None,
                sow_keys: Some(SubIds::from_ids(&[KEY_1, KEY_2])),
                ack: AckSet::only(AckType::Processed).with(AckType::Persisted),
                payload: Bytes::new(),
            }),
        ),
        (
            "sow_delete_example",
            Command::SowDelete(SowDelete {
                command_id: 14,
                topic: Utf8::from("orders"),
                filter: None,
                sow_keys: None,
                ack: AckSet::only(AckType::Processed),
                payload: Bytes::from_static(b"{\"id\":1}"),
            }),
        ),
        (
            "group_begin",
            Command::GroupBegin(GroupBegin {
                command_id: Some(10),
                sub_id: 5,
            }),
        ),
        (
            "deliver_sow_record",
            Command::Deliver(Deliver {
                topic: Utf8::from("orders"),
                sub_ids: SubIds::from_ids(&[5]),
                bookmark: Some(1234),
                timestamp: 1_700_000_000_000_000_000,
                sow_key: Some(KEY_1),
                payload: Bytes::from_static(b"{\"id\":1,\"qty\":20}"),
            }),
        ),
        (
            "group_end",
            Command::GroupEnd(GroupEnd {
                command_id: Some(10),
                sub_id: 5,
                records: 2,
                status: Status::Success,
                reason_code: ReasonCode::None,
                reason: None,
            }),
        ),
        (
            "group_end_failure",
            Command::GroupEnd(GroupEnd {
                command_id: Some(10),
                sub_id: 5,
                records: 1,
                status: Status::Failure,
                reason_code: ReasonCode::SowError,
                reason: Some(Utf8::from("orders: damaged record in slab 3")),
            }),
        ),
        (
            "sow_batched",
            Command::Sow(SowQuery {
                command_id: Some(15),
                sub_id: 7,
                topic: Utf8::from("orders"),
                filter: None,
                options: None,
                order_by: None,
                top_n: None,
                skip_n: None,
                sow_keys: None,
                batch_size: Some(100),
            }),
        ),
        (
            "sow_batch",
            Command::SowBatch(
                SowBatch::from_records(
                    Utf8::from("orders"),
                    7,
                    &[
                        SowBatchRecord {
                            key: KEY_1,
                            bookmark: Some(1234),
                            timestamp: 1_700_000_000_000_000_000,
                            payload: Bytes::from_static(b"{\"id\":1,\"qty\":20}"),
                        },
                        SowBatchRecord {
                            key: KEY_2,
                            bookmark: Some(1240),
                            timestamp: 1_700_000_000_000_000_600,
                            payload: Bytes::from_static(b"{\"id\":2}"),
                        },
                    ],
                )
                .unwrap(),
            ),
        ),
        (
            "ack_sow_delete",
            Command::Ack(Ack {
                records: Some(3),
                ..Ack::success(AckType::Processed, Some(12))
            }),
        ),
    ]
}

fn vector_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/vectors")
        .join(format!("{name}.hex"))
}

fn parse_hex(text: &str) -> Vec<u8> {
    let digits: String = text
        .lines()
        .map(|line| line.split('#').next().unwrap_or(""))
        .flat_map(|line| line.chars().filter(char::is_ascii_hexdigit))
        .collect();
    assert!(digits.len().is_multiple_of(2), "odd number of hex digits");
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).expect("hex digit"))
        .collect()
}

#[test]
fn spec_vectors_decode_and_encode_byte_for_byte() {
    let decoder = FrameDecoder::new(MAX);
    for (name, command) in vectors() {
        let path = vector_path(name);
        let text =
            std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let bytes = parse_hex(&text);
        let frame = decoder
            .decode_one(Bytes::from(bytes.clone()))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(
            Command::decode(&frame).as_ref(),
            Ok(&command),
            "vector {name} decodes"
        );
        assert_eq!(
            command.to_bytes().unwrap().as_ref(),
            bytes.as_slice(),
            "vector {name} encodes"
        );
    }
}

#[test]
fn every_vector_file_is_checked() {
    let names: Vec<_> = vectors().into_iter().map(|(name, _)| name).collect();
    for entry in std::fs::read_dir(vector_path("x").parent().unwrap()).unwrap() {
        let path = entry.unwrap().path();
        let stem = path.file_stem().unwrap().to_str().unwrap().to_owned();
        assert!(
            names.contains(&stem.as_str()),
            "{} has no test",
            path.display()
        );
    }
}

#[test]
fn spec_lists_every_reason_code_and_field() {
    let spec =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("SPEC.md")).unwrap();
    for (code, name, _) in REASONS {
        assert!(
            spec.contains(&format!("| {code} | `{name}` |")),
            "SPEC.md lacks reason {code} {name}"
        );
    }
    for tag in 1..=255u8 {
        if let Some(field) = statecast_protocol::FieldTag::from_u8(tag) {
            assert!(
                spec.contains(&format!("| {tag} | `{}` |", field.name())),
                "SPEC.md lacks field {tag}"
            );
        }
    }
}

#[test]
fn spec_lists_every_command_code_and_only_0x13_to_0x15_are_reserved() {
    let spec =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("SPEC.md")).unwrap();
    for code in 0..=255u8 {
        match CommandCode::from_u8(code) {
            Ok(command) => assert!(
                spec.contains(&format!("| {code:#04x} | `{}` |", command.name())),
                "SPEC.md lacks command {code:#04x} {}",
                command.name()
            ),
            Err(DecodeError::UnsupportedCommand { .. }) => {
                assert!((0x13..=0x15).contains(&code), "{code:#04x} is reserved");
            }
            Err(e) => assert_eq!(e, DecodeError::UnknownCommand(code)),
        }
    }
    assert!(spec.contains("| 0x13–0x15 | reserved: `delta_publish`, `delta_subscribe`, `oof` |"));
}

#[test]
fn deliver_header_plus_payload_equals_whole_deliver_frame() {
    let payload = Bytes::from_static(b"payload bytes");
    let whole = Command::Deliver(Deliver {
        topic: Utf8::from("a/b"),
        sub_ids: SubIds::from_ids(&[1, 2, 3]),
        bookmark: Some(77),
        timestamp: 5,
        sow_key: None,
        payload: payload.clone(),
    })
    .to_bytes()
    .unwrap();
    let mut split = BytesMut::new();
    let written =
        encode_deliver_header(b"a/b", &[1, 2, 3], Some(77), 5, payload.len(), &mut split).unwrap();
    assert_eq!(written, split.len());
    split.extend_from_slice(&payload);
    assert_eq!(split.as_ref(), whole.as_ref());
}

proptest! {
    #[test]
    fn record_header_plus_payload_equals_whole_deliver_frame(
        topic in utf8(),
        ids in proptest::collection::vec(any::<u64>(), 0..20),
        bookmark in any::<Option<u64>>(),
        timestamp in any::<u64>(),
        sow_key in any::<Option<u64>>(),
        payload in payload(),
    ) {
        let whole = Command::Deliver(Deliver {
            topic: topic.clone(),
            sub_ids: SubIds::from_ids(&ids),
            bookmark,
            timestamp,
            sow_key,
            payload: payload.clone(),
        })
        .to_bytes()
        .unwrap();
        let mut split = BytesMut::new();
        let written = encode_record_header(
            topic.as_bytes(),
            &ids,
            bookmark,
            timestamp,
            sow_key,
            payload.len(),
            &mut split,
        )
        .unwrap();
        prop_assert_eq!(written, split.len());
        split.extend_from_slice(&payload);
        prop_assert_eq!(split.as_ref(), whole.as_ref());
    }
}

/// A frame built by hand: `fields` as (tag, value), in order.
fn raw_frame(command: u8, fields: &[(u8, &[u8])], payload: &[u8]) -> Bytes {
    let mut area = Vec::new();
    for (tag, value) in fields {
        area.push(*tag);
        area.extend_from_slice(&u16::try_from(value.len()).unwrap().to_le_bytes());
        area.extend_from_slice(value);
    }
    let mut frame = Vec::new();
    let len = u32::try_from(8 + area.len() + payload.len()).unwrap();
    frame.extend_from_slice(&len.to_le_bytes());
    frame.extend_from_slice(&[1, command, 0, 0]);
    frame.extend_from_slice(&u32::try_from(area.len()).unwrap().to_le_bytes());
    frame.extend_from_slice(&area);
    frame.extend_from_slice(payload);
    Bytes::from(frame)
}

/// Decodes a hand-built frame's command.
fn decode_raw(command: u8, fields: &[(u8, &[u8])], payload: &[u8]) -> Result<Command, DecodeError> {
    let frame = FrameDecoder::new(MAX)
        .decode_one(raw_frame(command, fields, payload))
        .unwrap();
    Command::decode(&frame)
}

// Field tags, as SPEC.md section 3 numbers them.
const COMMAND_ID: u8 = 1;
const TOPIC: u8 = 2;
const SUB_ID: u8 = 3;
const SUB_IDS: u8 = 4;
const TIMESTAMP: u8 = 6;
const STATUS: u8 = 10;
const SOW_KEYS: u8 = 24;
const RECORDS: u8 = 25;

#[test]
fn the_hand_built_frames_are_right() {
    // raw_frame writes what the codec writes: checked on a group_begin.
    let id = 5u64.to_le_bytes();
    let command_id = 10u64.to_le_bytes();
    assert_eq!(
        raw_frame(0x16, &[(COMMAND_ID, &command_id), (SUB_ID, &id)], b""),
        Command::GroupBegin(GroupBegin {
            command_id: Some(10),
            sub_id: 5
        })
        .to_bytes()
        .unwrap()
    );
}

#[test]
fn sow_queries_without_sub_id_or_topic_are_missing_a_field() {
    let id = 5u64.to_le_bytes();
    for (code, command) in [(0x10, "sow"), (0x11, "sow_and_subscribe")] {
        assert_eq!(
            decode_raw(code, &[(TOPIC, b"orders")], b""),
            Err(DecodeError::MissingField {
                command,
                field: "sub_id"
            })
        );
        assert_eq!(
            decode_raw(code, &[(SUB_ID, &id)], b""),
            Err(DecodeError::MissingField {
                command,
                field: "topic"
            })
        );
        assert!(matches!(
            decode_raw(code, &[(SUB_ID, &id), (TOPIC, b"")], b""),
            Err(DecodeError::InvalidField { field: "topic", .. })
        ));
        assert!(decode_raw(code, &[(SUB_ID, &id), (TOPIC, b"orders")], b"").is_ok());
    }
    // sow_delete needs command_id and topic.
    assert_eq!(
        decode_raw(0x12, &[(TOPIC, b"orders")], b"{}"),
        Err(DecodeError::MissingField {
            command: "sow_delete",
            field: "command_id"
        })
    );
    assert_eq!(
        decode_raw(0x12, &[(COMMAND_ID, &id)], b"{}"),
        Err(DecodeError::MissingField {
            command: "sow_delete",
            field: "topic"
        })
    );
}

#[test]
fn sow_keys_must_be_whole_u64s() {
    let id = 5u64.to_le_bytes();
    for len in [1, 7, 9, 15, 17] {
        let keys = vec![0xabu8; len];
        let invalid = Err(DecodeError::InvalidField {
            field: "sow_keys",
            reason: "length must be a multiple of 8",
        });
        for code in [0x10, 0x11] {
            assert_eq!(
                decode_raw(
                    code,
                    &[(SUB_ID, &id), (TOPIC, b"orders"), (SOW_KEYS, &keys)],
                    b""
                ),
                invalid,
                "{code:#04x} with {len} bytes of sow_keys"
            );
        }
        assert_eq!(
            decode_raw(
                0x12,
                &[(COMMAND_ID, &id), (TOPIC, b"orders"), (SOW_KEYS, &keys)],
                b""
            ),
            invalid,
            "sow_delete with {len} bytes of sow_keys"
        );
    }
    // None at all is a well-formed (empty) list.
    let Ok(Command::Sow(query)) = decode_raw(
        0x10,
        &[(SUB_ID, &id), (TOPIC, b"orders"), (SOW_KEYS, b"")],
        b"",
    ) else {
        panic!("an empty sow_keys decodes");
    };
    assert_eq!(query.sow_keys, Some(SubIds::from_ids(&[])));
}

#[test]
fn a_delivered_record_carries_exactly_one_sow_key() {
    let id = 5u64.to_le_bytes();
    let ts = 1u64.to_le_bytes();
    for len in [0, 1, 7, 9, 16] {
        let keys = vec![0xabu8; len];
        let decoded = decode_raw(
            0x07,
            &[
                (TOPIC, b"orders"),
                (SUB_IDS, &id),
                (TIMESTAMP, &ts),
                (SOW_KEYS, &keys),
            ],
            b"{}",
        );
        assert!(
            matches!(
                decoded,
                Err(DecodeError::InvalidField {
                    field: "sow_keys",
                    ..
                })
            ),
            "deliver with {len} bytes of sow_keys: {decoded:?}"
        );
    }
    let key = KEY_1.to_le_bytes();
    let Ok(Command::Deliver(deliver)) = decode_raw(
        0x07,
        &[
            (TOPIC, b"orders"),
            (SUB_IDS, &id),
            (TIMESTAMP, &ts),
            (SOW_KEYS, &key),
        ],
        b"{}",
    ) else {
        panic!("a deliver with one sow key decodes");
    };
    assert_eq!(deliver.sow_key, Some(KEY_1));
}

#[test]
fn group_end_needs_records_and_a_known_status() {
    let id = 5u64.to_le_bytes();
    assert_eq!(
        decode_raw(0x17, &[(SUB_ID, &id)], b""),
        Err(DecodeError::MissingField {
            command: "group_end",
            field: "records"
        })
    );
    assert_eq!(
        decode_raw(0x17, &[(RECORDS, &id)], b""),
        Err(DecodeError::MissingField {
            command: "group_end",
            field: "sub_id"
        })
    );
    assert!(matches!(
        decode_raw(0x17, &[(SUB_ID, &id), (RECORDS, &id), (STATUS, &[7])], b""),
        Err(DecodeError::InvalidField {
            field: "status",
            ..
        })
    ));
    // A status of 0 sent explicitly is a success, as is its absence.
    let Ok(Command::GroupEnd(end)) =
        decode_raw(0x17, &[(SUB_ID, &id), (RECORDS, &id), (STATUS, &[0])], b"")
    else {
        panic!("group_end with status 0 decodes");
    };
    assert_eq!(end.status, Status::Success);
    // group_begin needs its sub_id.
    assert_eq!(
        decode_raw(0x16, &[(COMMAND_ID, &id)], b""),
        Err(DecodeError::MissingField {
            command: "group_begin",
            field: "sub_id"
        })
    );
}

#[test]
fn oversize_length_is_rejected_before_the_frame_arrives() {
    let decoder = FrameDecoder::new(1024);
    let mut buf = BytesMut::from(&u32::MAX.to_le_bytes()[..]);
    assert_eq!(
        decoder.decode(&mut buf),
        Err(DecodeError::FrameTooLarge {
            declared: u64::from(u32::MAX) + 4,
            max: 1024
        })
    );
}

#[test]
fn malformed_frames_give_named_errors() {
    let decoder = FrameDecoder::new(MAX);
    let good = vectors()[2].1.to_bytes().unwrap();
    // Length shorter than the fixed header.
    let mut buf = BytesMut::from(&[3u8, 0, 0, 0, 1, 3, 0][..]);
    assert_eq!(
        decoder.decode(&mut buf),
        Err(DecodeError::FrameTooShort { declared: 3 })
    );
    // Wrong version.
    let mut bad = good.to_vec();
    bad[4] = 9;
    let err = decoder.decode(&mut BytesMut::from(&bad[..])).unwrap_err();
    assert_eq!(
        err,
        DecodeError::UnsupportedVersion {
            found: 9,
            supported: 1
        }
    );
    // Fields length past the end.
    let mut bad = good.to_vec();
    bad[8..12].copy_from_slice(&10_000u32.to_le_bytes());
    assert!(matches!(
        decoder.decode(&mut BytesMut::from(&bad[..])),
        Err(DecodeError::FieldsOverrun { .. })
    ));
    // Unknown and reserved command codes.
    let mut bad = good.to_vec();
    bad[5] = 0x7f;
    let frame = decoder
        .decode(&mut BytesMut::from(&bad[..]))
        .unwrap()
        .unwrap();
    assert_eq!(
        Command::decode(&frame),
        Err(DecodeError::UnknownCommand(0x7f))
    );
    bad[5] = 0x13;
    let frame = decoder
        .decode(&mut BytesMut::from(&bad[..]))
        .unwrap()
        .unwrap();
    assert!(matches!(
        Command::decode(&frame),
        Err(DecodeError::UnsupportedCommand {
            name: "delta_publish",
            ..
        })
    ));
}

#[test]
fn unknown_fields_are_skipped() {
    // A publish with an extra field tag 200 (3 bytes of value) in the middle.
    let good = Command::Publish(Publish {
        command_id: None,
        topic: Utf8::from("t"),
        ack: AckSet::NONE,
        sequence: None,
        sow_key: None,
        payload: Bytes::from_static(b"x"),
    });
    let bytes = good.to_bytes().unwrap();
    let mut extended = bytes[..12].to_vec();
    extended.extend_from_slice(&[200, 3, 0, b'a', b'b', b'c']);
    extended.extend_from_slice(&bytes[12..]);
    let fields_len = u32::from_le_bytes(extended[8..12].try_into().unwrap()) + 6;
    extended[8..12].copy_from_slice(&fields_len.to_le_bytes());
    let len = u32::try_from(extended.len() - 4).unwrap();
    extended[0..4].copy_from_slice(&len.to_le_bytes());
    let frame = FrameDecoder::new(MAX)
        .decode_one(Bytes::from(extended))
        .unwrap();
    assert_eq!(Command::decode(&frame), Ok(good));
}

#[test]
fn duplicate_and_missing_fields_are_errors() {
    let decoder = FrameDecoder::new(MAX);
    // publish asking for an ack without a command id.
    let mut bytes = Command::Publish(Publish {
        command_id: None,
        topic: Utf8::from("t"),
        ack: AckSet::NONE,
        sequence: None,
        sow_key: None,
        payload: Bytes::new(),
    })
    .to_bytes()
    .unwrap()
    .to_vec();
    bytes.splice(12..12, [9u8, 1, 0, 1]);
    let fields_len = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) + 4;
    bytes[8..12].copy_from_slice(&fields_len.to_le_bytes());
    let len = u32::try_from(bytes.len() - 4).unwrap();
    bytes[0..4].copy_from_slice(&len.to_le_bytes());
    let frame = decoder.decode_one(Bytes::from(bytes.clone())).unwrap();
    assert_eq!(
        Command::decode(&frame),
        Err(DecodeError::MissingField {
            command: "publish",
            field: "command_id"
        })
    );
    // The same field twice.
    bytes.splice(12..12, [9u8, 1, 0, 1]);
    let fields_len = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) + 4;
    bytes[8..12].copy_from_slice(&fields_len.to_le_bytes());
    let len = u32::try_from(bytes.len() - 4).unwrap();
    bytes[0..4].copy_from_slice(&len.to_le_bytes());
    let frame = decoder.decode_one(Bytes::from(bytes)).unwrap();
    assert_eq!(
        Command::decode(&frame),
        Err(DecodeError::DuplicateField { field: "ack_type" })
    );
}

fn utf8() -> impl Strategy<Value = Utf8> {
    "[a-zA-Z0-9/._é-]{1,40}".prop_map(Utf8::from)
}

fn payload() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..300).prop_map(Bytes::from)
}

/// An array of `u64` (sub ids, SowKeys), possibly empty.
fn u64s() -> impl Strategy<Value = SubIds> {
    proptest::collection::vec(any::<u64>(), 0..20).prop_map(|ids| SubIds::from_ids(&ids))
}

/// The ack set with wire value `bits` (0..8).
fn ack_set(bits: u8) -> AckSet {
    let mut set = AckSet::NONE;
    for t in [AckType::Processed, AckType::Persisted, AckType::Completed] {
        if bits & t as u8 != 0 {
            set = set.with(t);
        }
    }
    set
}

/// The fields of `sow` and `sow_and_subscribe`.
fn sow_query() -> impl Strategy<Value = SowQuery> {
    (
        any::<Option<u64>>(),
        any::<u64>(),
        utf8(),
        proptest::option::of(utf8()),
        proptest::option::of(utf8()),
        proptest::option::of(utf8()),
        any::<Option<u64>>(),
        any::<Option<u64>>(),
        proptest::option::of(u64s()),
        any::<Option<u32>>(),
    )
        .prop_map(
            |(
                command_id,
                sub_id,
                topic,
                filter,
                options,
                order_by,
                top_n,
                skip_n,
                sow_keys,
                batch_size,
            )| {
                SowQuery {
                    command_id,
                    sub_id,
                    topic,
                    filter,
                    options,
                    order_by,
                    top_n,
                    skip_n,
                    sow_keys,
                    batch_size,
                }
            },
        )
}

/// One record of a `sow_batch` (a bookmark of 0 is the wire's "none").
fn batch_record() -> impl Strategy<Value = SowBatchRecord> {
    (
        any::<u64>(),
        proptest::option::of(1u64..),
        any::<u64>(),
        payload(),
    )
        .prop_map(|(key, bookmark, timestamp, payload)| SowBatchRecord {
            key,
            bookmark,
            timestamp,
            payload,
        })
}

/// A `sow_batch` of 1 to 12 records.
fn sow_batch() -> impl Strategy<Value = SowBatch> {
    (
        utf8(),
        any::<u64>(),
        proptest::collection::vec(batch_record(), 1..12),
    )
        .prop_map(|(topic, sub_id, records)| {
            SowBatch::from_records(topic, sub_id, &records).unwrap()
        })
}

fn command() -> impl Strategy<Value = Command> {
    let ack_type = prop_oneof![
        Just(AckType::Processed),
        Just(AckType::Persisted),
        Just(AckType::Completed)
    ];
    prop_oneof![
        (
            any::<Option<u64>>(),
            utf8(),
            proptest::option::of(payload()),
            any::<Option<u32>>()
        )
            .prop_map(|(command_id, client_name, credentials, heartbeat_ms)| {
                Command::Logon(Logon {
                    command_id,
                    client_name,
                    credentials,
                    heartbeat_ms,
                })
            }),
        Just(Command::Heartbeat(Heartbeat)),
        (
            any::<u64>(),
            utf8(),
            0u8..8,
            any::<Option<u64>>(),
            proptest::option::of(payload()),
            payload()
        )
            .prop_map(|(command_id, topic, ack, sequence, sow_key, payload)| {
                Command::Publish(Publish {
                    command_id: Some(command_id),
                    topic,
                    ack: ack_set(ack),
                    sequence,
                    sow_key,
                    payload,
                })
            }),
        (
            any::<Option<u64>>(),
            any::<u64>(),
            utf8(),
            proptest::option::of(utf8()),
            proptest::option::of(utf8()),
            proptest::option::of(utf8())
        )
            .prop_map(|(command_id, sub_id, topic, filter, options, bookmark)| {
                Command::Subscribe(Subscribe {
                    command_id,
                    sub_id,
                    topic,
                    filter,
                    options,
                    bookmark,
                })
            }),
        (any::<Option<u64>>(), any::<Option<u64>>()).prop_map(|(command_id, sub_id)| {
            Command::Unsubscribe(Unsubscribe { command_id, sub_id })
        }),
        any::<u64>().prop_map(|command_id| Command::Flush(Flush { command_id })),
        (
            any::<Option<u64>>(),
            ack_type,
            any::<bool>(),
            0u16..40,
            proptest::option::of(utf8()),
            any::<Option<u64>>(),
            any::<Option<u64>>()
        )
            .prop_map(
                |(command_id, ack_type, ok, code, reason, sub_id, records)| {
                    let mut ack = Ack::success(ack_type, command_id);
                    if !ok {
                        ack.status = Status::Failure;
                        ack.reason_code = ReasonCode::from_code(code);
                        ack.reason = reason;
                    }
                    ack.sub_id = sub_id;
                    ack.records = records;
                    Command::Ack(ack)
                }
            ),
        (
            utf8(),
            u64s(),
            any::<Option<u64>>(),
            any::<u64>(),
            any::<Option<u64>>(),
            payload()
        )
            .prop_map(|(topic, sub_ids, bookmark, timestamp, sow_key, payload)| {
                Command::Deliver(Deliver {
                    topic,
                    sub_ids,
                    bookmark,
                    timestamp,
                    sow_key,
                    payload,
                })
            }),
        (sow_query(), any::<bool>()).prop_map(|(query, subscribe)| if subscribe {
            Command::SowAndSubscribe(query)
        } else {
            Command::Sow(query)
        }),
        (
            any::<u64>(),
            utf8(),
            proptest::option::of(utf8()),
            proptest::option::of(u64s()),
            0u8..8,
            payload()
        )
            .prop_map(|(command_id, topic, filter, sow_keys, ack, payload)| {
                Command::SowDelete(SowDelete {
                    command_id,
                    topic,
                    filter,
                    sow_keys,
                    ack: ack_set(ack),
                    payload,
                })
            }),
        (any::<Option<u64>>(), any::<u64>()).prop_map(|(command_id, sub_id)| {
            Command::GroupBegin(GroupBegin { command_id, sub_id })
        }),
        (
            any::<Option<u64>>(),
            any::<u64>(),
            any::<u64>(),
            any::<bool>(),
            0u16..40,
            proptest::option::of(utf8())
        )
            .prop_map(|(command_id, sub_id, records, ok, code, reason)| {
                let failed = !ok;
                Command::GroupEnd(GroupEnd {
                    command_id,
                    sub_id,
                    records,
                    status: if failed {
                        Status::Failure
                    } else {
                        Status::Success
                    },
                    reason_code: if failed {
                        ReasonCode::from_code(code)
                    } else {
                        ReasonCode::None
                    },
                    reason: if failed { reason } else { None },
                })
            }),
        sow_batch().prop_map(Command::SowBatch),
    ]
}

proptest! {
    #[test]
    fn commands_round_trip(command in command()) {
        let bytes = command.to_bytes().unwrap();
        prop_assert_eq!(bytes.len(), command.encoded_len().unwrap());
        let frame = FrameDecoder::new(MAX).decode_one(bytes.clone()).unwrap();
        prop_assert_eq!(Command::decode(&frame).unwrap(), command.clone());
        let mut slice = vec![0u8; bytes.len()];
        prop_assert_eq!(command.encode_to_slice(&mut slice).unwrap(), bytes.len());
        prop_assert_eq!(&slice[..], &bytes[..]);
        prop_assert!(command.encode_to_slice(&mut vec![0u8; bytes.len() - 1]).is_err());
    }

    #[test]
    fn stream_decodes_the_same_whatever_the_read_sizes(
        commands in proptest::collection::vec(command(), 1..8),
        cuts in proptest::collection::vec(1usize..64, 1..64),
    ) {
        let mut stream = Vec::new();
        for c in &commands {
            stream.extend_from_slice(&c.to_bytes().unwrap());
        }
        let decoder = FrameDecoder::new(MAX);
        let mut buf = BytesMut::new();
        let mut decoded = Vec::new();
        let mut offset = 0;
        let mut cut = cuts.iter().cycle();
        while offset < stream.len() {
            let n = (*cut.next().unwrap()).min(stream.len() - offset);
            buf.extend_from_slice(&stream[offset..offset + n]);
            offset += n;
            while let Some(frame) = decoder.decode(&mut buf).unwrap() {
                decoded.push(Command::decode(&frame).unwrap());
            }
        }
        prop_assert!(buf.is_empty());
        prop_assert_eq!(decoded, commands);
    }

    #[test]
    fn sow_batch_records_round_trip_and_lend_the_frame_s_bytes(
        topic in utf8(),
        sub_id in any::<u64>(),
        records in proptest::collection::vec(batch_record(), 1..16),
    ) {
        let batch = SowBatch::from_records(topic.clone(), sub_id, &records).unwrap();
        let bytes = Command::SowBatch(batch).to_bytes().unwrap();
        // The broker's way: the header, then each record's header and message.
        let mut by_parts = Vec::new();
        let payload_len: usize = records
            .iter()
            .map(|r| SOW_BATCH_RECORD_HEADER_LEN + r.payload.len())
            .sum();
        let header = encode_sow_batch_header(
            topic.as_bytes(),
            sub_id,
            records.len() as u64,
            payload_len,
            &mut by_parts,
        )
        .unwrap();
        prop_assert_eq!(header, sow_batch_header_len(topic.as_bytes()).unwrap());
        for r in &records {
            encode_sow_batch_record_header(r.key, r.bookmark, r.timestamp, r.payload.len(), &mut by_parts)
                .unwrap();
            by_parts.extend_from_slice(&r.payload);
        }
        prop_assert_eq!(&by_parts[..], &bytes[..]);
        let frame = FrameDecoder::new(MAX).decode_one(bytes).unwrap();
        let Ok(Command::SowBatch(decoded)) = Command::decode(&frame) else {
            panic!("a sow_batch decodes");
        };
        prop_assert_eq!((&decoded.topic, decoded.sub_id), (&topic, sub_id));
        let back: Vec<SowBatchRecord> = decoded.iter().map(Result::unwrap).collect();
        prop_assert_eq!(&back, &records);
        // Each message is a slice of the frame's payload, not a copy.
        let range = frame.payload.as_ptr_range();
        for record in &back {
            prop_assert!(record.payload.is_empty() || range.contains(&record.payload.as_ptr()));
        }
    }

    #[test]
    fn any_sow_batch_payload_is_a_batch_or_a_typed_error(
        records in 0u64..20,
        payload in proptest::collection::vec(any::<u8>(), 0..400),
        valid in proptest::option::of(proptest::collection::vec(batch_record(), 1..6)),
        cut in any::<prop::sample::Index>(),
    ) {
        // Arbitrary bytes, or a valid batch's bytes cut short or lengthened.
        let (records, payload) = match valid {
            None => (records, Bytes::from(payload)),
            Some(valid) => {
                let batch = SowBatch::from_records(Utf8::from("t"), 1, &valid).unwrap();
                let mut bytes = batch.payload.to_vec();
                if records % 2 == 0 {
                    bytes.truncate(cut.index(bytes.len() + 1));
                } else {
                    bytes.push(0);
                }
                (batch.records, Bytes::from(bytes))
            }
        };
        match SowBatch::from_parts(Utf8::from("t"), 1, records, payload.clone()) {
            Ok(batch) => {
                let walked: Vec<_> = batch.iter().collect();
                prop_assert_eq!(walked.len() as u64, records);
                prop_assert!(walked.iter().all(Result::is_ok));
            }
            Err(DecodeError::MalformedBatch { record, .. }) => prop_assert!(record <= records),
            Err(DecodeError::InvalidField { field: "records", .. }) => {
                prop_assert!(records == 0);
            }
            Err(other) => prop_assert!(false, "unexpected error {other}"),
        }
        // An unchecked batch's iterator ends at its first malformed record.
        let unchecked = SowBatch { topic: Utf8::from("t"), sub_id: 1, records, payload };
        let mut errors = 0;
        for record in unchecked.iter() {
            if record.is_err() {
                errors += 1;
            }
        }
        prop_assert!(errors <= 1);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        statecast_protocol::fuzz::frame_decode(&bytes);
    }
}

#[test]
fn fuzz_corpus_replays() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/frame_decode");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        statecast_protocol::fuzz::frame_decode(&data);
        count += 1;
    }
    assert!(count > 0, "corpus at {} is empty", dir.display());
}

proptest! {
    #[test]
    fn encode_publish_matches_the_command_encoder(
        topic in utf8(),
        command_id in any::<Option<u64>>(),
        ack in 0u8..8,
        sequence in any::<Option<u64>>(),
        payload in payload(),
    ) {
        let set = ack_set(ack);
        let command_id = if set.is_empty() { command_id } else { Some(command_id.unwrap_or(1)) };
        let whole = Command::Publish(Publish { command_id, topic: topic.clone(), ack: set, sequence, sow_key: None, payload: payload.clone() })
            .to_bytes()
            .unwrap();
        let mut direct = BytesMut::new();
        let len = statecast_protocol::publish_len(topic.as_bytes(), command_id, set, sequence, payload.len()).unwrap();
        direct.reserve(len);
        let written = statecast_protocol::encode_publish(topic.as_bytes(), command_id, set, sequence, &payload, &mut direct).unwrap();
        prop_assert_eq!(written, whole.len());
        prop_assert_eq!(direct.as_ref(), whole.as_ref());
    }
}
