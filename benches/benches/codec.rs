//! Criterion micro-benchmarks of the frame codec on the message path: what a
//! publisher pays to encode a 1 KiB publish, what the broker pays to write a
//! delivery header in front of a shared payload, and what a subscriber pays
//! to split and decode a stream of 1 KiB deliveries.
//!
//! `cargo bench -p statecast-bench --bench codec`; figures are per frame
//! (the stream benchmarks report elements, one element = one frame).

use std::hint::black_box;

use bytes::{Bytes, BytesMut};
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use statecast_protocol::{
    AckSet, Command, Deliver, FrameDecoder, Publish, SubIds, Utf8, encode_deliver_header,
};

const PAYLOAD_BYTES: usize = 1024;
const FRAMES_PER_STREAM: usize = 1000;
const TOPIC: &str = "bench_fanout";

fn payload() -> Bytes {
    Bytes::from(vec![b'x'; PAYLOAD_BYTES])
}

fn deliver_stream() -> Bytes {
    let mut stream = BytesMut::new();
    for i in 0..FRAMES_PER_STREAM as u64 {
        Command::Deliver(Deliver {
            topic: Utf8::from(TOPIC),
            sub_ids: SubIds::from_ids(&[1]),
            bookmark: None,
            timestamp: 1_700_000_000_000_000_000 + i,
            sow_key: None,
            payload: payload(),
        })
        .encode(&mut stream)
        .expect("a deliver frame encodes");
    }
    stream.freeze()
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    group.throughput(Throughput::Elements(1));
    let publish = Command::Publish(Publish {
        command_id: None,
        topic: Utf8::from(TOPIC),
        ack: AckSet::NONE,
        sequence: None,
        sow_key: None,
        payload: payload(),
    });
    let mut buf = BytesMut::with_capacity(4096);
    group.bench_function("publish_1KiB", |b| {
        b.iter(|| {
            buf.clear();
            black_box(&publish).encode(&mut buf).expect("encodes");
            black_box(buf.len())
        });
    });
    // What the SDK's `publish` does per call: build the command (topic
    // copied into a `Utf8`) and encode it.
    group.bench_function("publish_1KiB_with_command_build", |b| {
        let payload = payload();
        b.iter(|| {
            buf.clear();
            let command = Command::Publish(Publish {
                command_id: None,
                topic: Utf8::from(black_box(TOPIC)),
                ack: AckSet::NONE,
                sequence: None,
                sow_key: None,
                payload: payload.clone(),
            });
            command.encode(&mut buf).expect("encodes");
            black_box(buf.len())
        });
    });
    let mut header = [0u8; 256];
    group.bench_function("deliver_header", |b| {
        b.iter(|| {
            let mut dst = &mut header[..];
            encode_deliver_header(
                black_box(TOPIC.as_bytes()),
                black_box(&[7]),
                None,
                black_box(1_700_000_000_000_000_000),
                PAYLOAD_BYTES,
                &mut dst,
            )
            .expect("encodes")
        });
    });
    group.finish();
}

fn decode(c: &mut Criterion) {
    let stream = deliver_stream();
    let decoder = FrameDecoder::new(16 << 20);
    let mut group = c.benchmark_group("decode_1KiB_deliver_stream");
    group.throughput(Throughput::Elements(FRAMES_PER_STREAM as u64));
    group.bench_function("frames", |b| {
        b.iter_batched(
            || BytesMut::from(&stream[..]),
            |mut buf| {
                let mut payload_bytes = 0;
                while let Some(frame) = decoder.decode(&mut buf).expect("decodes") {
                    payload_bytes += frame.payload.len();
                }
                payload_bytes
            },
            BatchSize::LargeInput,
        );
    });
    group.bench_function("frames_and_commands", |b| {
        b.iter_batched(
            || BytesMut::from(&stream[..]),
            |mut buf| {
                let mut payload_bytes = 0;
                while let Some(frame) = decoder.decode(&mut buf).expect("decodes") {
                    if let Command::Deliver(deliver) = Command::decode(&frame).expect("decodes") {
                        payload_bytes += deliver.payload.len();
                    }
                }
                payload_bytes
            },
            BatchSize::LargeInput,
        );
    });
    group.finish();
}

criterion_group!(benches, encode, decode);
criterion_main!(benches);
