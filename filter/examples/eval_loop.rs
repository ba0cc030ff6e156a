//! Evaluates the benchmark's filter N times, for counting instructions
//! with callgrind, which does not depend on the machine's load:
//!
//! ```text
//! cargo build --release -p statecast-filter --example eval_loop
//! valgrind --tool=callgrind --callgrind-out-file=/dev/null \
//!     target/release/examples/eval_loop 3000 match
//! ```
//!
//! Cases: `match`, `early` (fails on the first term), `late` (fails on the
//! last), `first` (fields first), `tiny` (an 82-byte message holding only
//! the five fields: the fixed cost of a scan and the evaluation), `serde`
//! (the serde_json + reference baseline), `index1` and `index10k`; and, to
//! price one unwanted member, `xstr`, `xnum` and `xobj`: the `tiny` fields
//! after 100 members whose values are a short string, a number or a small
//! object (cost per member = (case − `tiny`) ÷ 100). Instructions per
//! message are the difference between runs of 3000 and 1000, divided by
//! 2000.

use std::hint::black_box;

use statecast_filter::{
    Filter, IndexScratch, Limits, MessageContext, Scratch, SubscriptionIndex, Truth, reference,
};

#[path = "../benches/support/messages.rs"]
mod messages;

fn main() {
    let mut args = std::env::args().skip(1);
    let count: u32 = args.next().and_then(|n| n.parse().ok()).unwrap_or(1000);
    let case = args.next().unwrap_or_else(|| "match".to_owned());
    let filter = Filter::parse(messages::FILTER, &Limits::default()).expect("filter parses");
    let payload = match case.as_str() {
        "early" => messages::message("ORCL", 500),
        "late" => messages::message("MSFT", 5),
        "first" => messages::message_fields_first("IBM", 500),
        "tiny" => {
            br#"{"symbol":"IBM","price":101.25,"trader":{"desk":"FX"},"cancelled":false,"qty":500}"#
                .to_vec()
        }
        "index1" | "index10k" => messages::message("S0", 500),
        "xstr" | "xnum" | "xobj" => {
            let mut text = String::from("{");
            for i in 0..100 {
                match case.as_str() {
                    "xstr" => text.push_str(&format!(r#""k{i:02}":"value","#)),
                    "xnum" => text.push_str(&format!(r#""k{i:02}":12345,"#)),
                    _ => text.push_str(&format!(r#""k{i:02}":{{"a":1,"b":"xyz"}},"#)),
                }
            }
            text.push_str(r#""symbol":"IBM","price":101.25,"trader":{"desk":"FX"},"cancelled":false,"qty":500}"#);
            text.into_bytes()
        }
        _ => messages::message("IBM", 500),
    };
    let mut matched = 0_u32;
    match case.as_str() {
        "serde" => {
            for _ in 0..count {
                let ctx = MessageContext::new(black_box(&payload));
                let doc: serde_json::Value =
                    serde_json::from_slice(ctx.payload).expect("valid JSON");
                if reference::evaluate_document(filter.expr(), Some(&doc), &ctx).truth()
                    == Truth::True
                {
                    matched += 1;
                }
            }
        }
        "index1" | "index10k" => {
            let subscriptions = if case == "index1" { 1 } else { 10_000 };
            let mut index = SubscriptionIndex::new();
            for i in 0..subscriptions {
                let text = format!("/symbol = 'S{i}' AND /price > 100");
                index.insert(
                    i,
                    Filter::parse(&text, &Limits::default()).expect("filter parses"),
                );
            }
            let mut scratch = IndexScratch::new();
            for _ in 0..count {
                index.for_each_match(
                    &MessageContext::new(black_box(&payload)),
                    &mut scratch,
                    |_| matched += 1,
                );
            }
        }
        _ => {
            let mut scratch = Scratch::new();
            for _ in 0..count {
                if filter.matches_with(&MessageContext::new(black_box(&payload)), &mut scratch) {
                    matched += 1;
                }
            }
        }
    }
    println!("{case}: {matched} of {count} matched");
}
