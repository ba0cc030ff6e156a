#!/usr/bin/env python3
"""Writes protocol/tests/vectors/*.hex from SPEC.md's rules alone.

This encoder is written independently of the Rust codec, from the spec: the
Rust tests decode these files and re-encode them byte for byte, so the spec,
this script and the codec must agree. Run it after changing SPEC.md:
    python3 protocol/tools/gen_vectors.py
"""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "vectors")

# SPEC.md section 4, command codes.
CMD = {"logon": 0x01, "heartbeat": 0x02, "publish": 0x03, "subscribe": 0x04,
       "unsubscribe": 0x05, "ack": 0x06, "deliver": 0x07, "flush": 0x08,
       "sow": 0x10, "sow_and_subscribe": 0x11, "sow_delete": 0x12,
       "group_begin": 0x16, "group_end": 0x17, "sow_batch": 0x18}
# SPEC.md section 3, field tags.
TAG = {"command_id": 1, "topic": 2, "sub_id": 3, "sub_ids": 4, "bookmark": 5, "timestamp": 6,
       "client_name": 7, "credentials": 8, "ack_type": 9, "status": 10, "reason_code": 11,
       "reason": 12, "heartbeat_ms": 13, "filter": 14, "options": 15, "sequence": 16,
       "server_version": 17, "max_frame_bytes": 18, "bookmark_spec": 19, "top_n": 20,
       "skip_n": 21, "order_by": 22, "sow_key": 23, "sow_keys": 24, "records": 25,
       "batch_size": 26}
# SPEC.md section 7, the reason codes these vectors use.
REASON = {"unknown_command": 4, "sow_error": 28}

# A SowKey (SPEC.md section 4.9): any u64; these two stand for keys a broker computed.
KEY_1 = 0x9E3779B97F4A7C15
KEY_2 = 0x0123456789ABCDEF


class Value(bytes):
    """A field value's bytes, with how the annotation shows it."""

    def __new__(cls, data, shown):
        value = super().__new__(cls, data)
        value.shown = shown
        return value


def u8(v): return Value(struct.pack("<B", v), str(v))
def u16(v): return Value(struct.pack("<H", v), str(v))
def u32(v): return Value(struct.pack("<I", v), str(v))
def u64(v): return Value(struct.pack("<Q", v), str(v))
def u64s(vs): return Value(b"".join(struct.pack("<Q", v) for v in vs), str(list(vs)))
def text(v): return Value(v.encode("utf-8"), '"' + v + '"')
def raw(v): return Value(v, repr(v))


def frame(command, fields, payload=b""):
    """fields: list of (name, Value). Returns (bytes, annotated lines)."""
    body = b"".join(u8(TAG[n]) + u16(len(v)) + v for n, v in fields)
    after_prefix = 8 + len(body) + len(payload)
    head = u32(after_prefix) + u8(1) + u8(CMD[command]) + u16(0) + u32(len(body))
    lines = [
        (u32(after_prefix), f"length = {after_prefix} (bytes after this field)"),
        (u8(1), "version = 1"),
        (u8(CMD[command]), f"command = {CMD[command]:#04x} ({command})"),
        (u16(0), "flags = 0"),
        (u32(len(body)), f"fields_len = {len(body)}"),
    ]
    for n, v in fields:
        lines.append((u8(TAG[n]) + u16(len(v)), f"field {n} (tag {TAG[n]}), {len(v)} bytes:"))
        lines.append((v, f"  {n} = {v.shown}"))
    if payload:
        lines.append((payload, f"payload, {len(payload)} bytes: {payload.decode('utf-8', 'replace')}"))
    return head + body + payload, lines


def sow_batch(topic, sub_id, records):
    """A sow_batch frame (SPEC.md section 4.14); records: list of
    (sow_key, bookmark, timestamp, message). Each record's 28-byte header
    and message are annotated on lines of their own."""
    payload = b""
    lines = []
    for key, bookmark, timestamp, message in records:
        header = u64(key) + u64(bookmark) + u64(timestamp) + u32(len(message))
        payload += header + message
        lines.append((u64(key), f"record sow_key = {key}"))
        lines.append((u64(bookmark), f"  bookmark = {bookmark}"))
        lines.append((u64(timestamp), f"  timestamp = {timestamp}"))
        lines.append((u32(len(message)), f"  length = {len(message)}"))
        lines.append((message, f"  message: {message.decode('utf-8', 'replace')}"))
    data, head_lines = frame("sow_batch", [("topic", text(topic)), ("sub_id", u64(sub_id)),
                                           ("records", u64(len(records)))], payload)
    return data, head_lines[:-1] + lines


VECTORS = {
    "logon": frame("logon", [("command_id", u64(1)), ("client_name", text("app-1")),
                             ("heartbeat_ms", u32(5000))]),
    "heartbeat": frame("heartbeat", []),
    "publish": frame("publish", [("command_id", u64(7)), ("topic", text("orders")),
                                 ("ack_type", u8(1))], b'{"id":1}'),
    "publish_no_ack": frame("publish", [("topic", text("t"))], b"hi"),
    "subscribe": frame("subscribe", [("command_id", u64(2)), ("sub_id", u64(42)),
                                     ("topic", text("orders"))]),
    "unsubscribe": frame("unsubscribe", [("command_id", u64(3)), ("sub_id", u64(42))]),
    "flush": frame("flush", [("command_id", u64(9))]),
    "ack_logon": frame("ack", [("command_id", u64(1)), ("ack_type", u8(1)), ("status", u8(0)),
                               ("client_name", text("app-1")), ("heartbeat_ms", u32(5000)),
                               ("max_frame_bytes", u32(16777216)),
                               ("server_version", text("0.1.0"))]),
    "ack_failure": frame("ack", [("ack_type", u8(1)), ("status", u8(1)),
                                 ("reason_code", u16(REASON["unknown_command"])),
                                 ("reason", text("unknown command code 0x7f"))]),
    "deliver": frame("deliver", [("topic", text("orders")), ("sub_ids", u64s([42])),
                                 ("timestamp", u64(1700000000000000000))], b'{"id":1}'),
    # SOW (SPEC.md sections 4.3, 4.6, 4.7, 4.9-4.13).
    "publish_sow_key": frame("publish", [("command_id", u64(8)), ("topic", text("prices")),
                                         ("ack_type", u8(1)), ("sow_key", raw(b"EURUSD"))],
                             b'{"bid":1.08}'),
    "sow": frame("sow", [("command_id", u64(10)), ("sub_id", u64(5)), ("topic", text("orders")),
                         ("filter", text("/qty > 10")), ("top_n", u64(2))]),
    "sow_and_subscribe": frame("sow_and_subscribe", [
        ("command_id", u64(11)), ("sub_id", u64(6)), ("topic", text("orders")),
        ("filter", text("/region = 'eu'")), ("options", text("non_regex_topic")),
        ("order_by", text("/price DESC, /id")), ("top_n", u64(100)), ("skip_n", u64(100)),
        ("sow_keys", u64s([KEY_1]))]),
    "sow_delete": frame("sow_delete", [("command_id", u64(12)), ("topic", text("orders")),
                                       ("filter", text("/status = 'closed'"))]),
    "sow_delete_keys": frame("sow_delete", [("command_id", u64(13)), ("topic", text("orders")),
                                            ("sow_keys", u64s([KEY_1, KEY_2])),
                                            ("ack_type", u8(1 | 2))]),
    "sow_delete_example": frame("sow_delete", [("command_id", u64(14)), ("topic", text("orders")),
                                               ("ack_type", u8(1))], b'{"id":1}'),
    "group_begin": frame("group_begin", [("command_id", u64(10)), ("sub_id", u64(5))]),
    "deliver_sow_record": frame("deliver", [("topic", text("orders")), ("sub_ids", u64s([5])),
                                            ("bookmark", u64(1234)),
                                            ("timestamp", u64(1700000000000000000)),
                                            ("sow_keys", u64s([KEY_1]))],
                                b'{"id":1,"qty":20}'),
    "group_end": frame("group_end", [("command_id", u64(10)), ("sub_id", u64(5)),
                                     ("records", u64(2))]),
    "group_end_failure": frame("group_end", [("command_id", u64(10)), ("sub_id", u64(5)),
                                             ("records", u64(1)), ("status", u8(1)),
                                             ("reason_code", u16(REASON["sow_error"])),
                                             ("reason", text("orders: damaged record in slab 3"))]),
    "sow_batched": frame("sow", [("command_id", u64(15)), ("sub_id", u64(7)),
                                 ("topic", text("orders")), ("batch_size", u32(100))]),
    "sow_batch": sow_batch("orders", 7, [
        (KEY_1, 1234, 1700000000000000000, b'{"id":1,"qty":20}'),
        (KEY_2, 1240, 1700000000000000600, b'{"id":2}')]),
    "ack_sow_delete": frame("ack", [("command_id", u64(12)), ("ack_type", u8(1)),
                                    ("status", u8(0)), ("records", u64(3))]),
}

for name, (data, lines) in VECTORS.items():
    with open(os.path.join(OUT, name + ".hex"), "w") as f:
        f.write(f"# {name}: {len(data)} bytes. Generated by protocol/tools/gen_vectors.py.\n")
        for chunk, comment in lines:
            f.write(f"{chunk.hex(' '):<48} # {comment}\n" if len(chunk) <= 16 else
                    "\n".join(chunk[i:i + 16].hex(" ") for i in range(0, len(chunk), 16))
                    + f"  # {comment}\n")
