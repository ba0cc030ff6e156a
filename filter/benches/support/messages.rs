//! The benchmark's filter and messages, shared by the criterion bench and
//! the `eval_loop` example (which callgrind runs to count instructions).

/// The issue's filter plus one term: five predicates.
pub const FILTER: &str = "/symbol IN ('IBM','MSFT') AND /price > 100 AND /trader/desk = 'FX' AND NOT /cancelled AND /qty >= 10";

/// A 1 KiB order message with the filter's fields spread from start to end.
pub fn message(symbol: &str, qty: u32) -> Vec<u8> {
    let text = format!(
        r#"{{"id":"ord-20261123-000123456","type":"new_order","venue":"XNYS","symbol":"{symbol}","account":{{"id":"ACC-77812","region":"EMEA","book":"prop-rates","limits":[1000000,2500000,5000000]}},"side":"buy","tif":"day","notes":"client called at open; wants fills spread over the morning, avoid the auction","price":101.25,"currency":"USD","route":["SOR","DARK1","LIT2"],"trader":{{"name":"A. Lovelace","id":4471,"location":{{"city":"London","floor":12}},"desk":"FX","phone":"+44 20 7946 0000"}},"strategy":{{"name":"vwap","start":"09:30:00","end":"11:30:00","participation":0.15,"params":{{"aggression":2,"min_fill":100,"tags":["algo","vwap","eu"]}}}},"flags":{{"short":false,"odd_lot":false,"iso":false}},"created":"2026-11-23T09:29:58.123456Z","updated":"2026-11-23T09:30:01.654321Z","version":7,"parent":null,"children":[{{"id":"c1","qty":200}},{{"id":"c2","qty":300}}],"commission":{{"rate":0.0005,"min":1.5,"currency":"USD"}},"compliance":{{"checked":true,"rules":["R1","R7","R12"]}},"cancelled":false,"ref":"REF-2026-0000000000000","settle":"T+1","qty":{qty}}}"#
    );
    assert!(
        (1000..1100).contains(&text.len()),
        "message is {} bytes",
        text.len()
    );
    text.into_bytes()
}

/// The same message with the filter's fields moved to the front, where the
/// scan can stop early: what a publisher gains by putting filtered fields first.
pub fn message_fields_first(symbol: &str, qty: u32) -> Vec<u8> {
    let text = String::from_utf8(message(symbol, qty)).expect("UTF-8");
    let body = text.trim_start_matches('{');
    let front = format!(
        r#"{{"symbol":"{symbol}","price":101.25,"trader":{{"desk":"FX"}},"cancelled":false,"qty":{qty},"#
    );
    // Renaming the originals keeps the size and the shape; the first of
    // duplicate names would win anyway.
    let renamed = body
        .replacen(r#""symbol":"#, r#""symbo_":"#, 1)
        .replacen(r#""price":"#, r#""pric_":"#, 1)
        .replacen(r#""trader":"#, r#""trade_":"#, 1)
        .replacen(r#""cancelled":"#, r#""cancelle_":"#, 1)
        .replacen(r#""qty":"#, r#""qt_":"#, 1);
    format!("{front}{renamed}").into_bytes()
}
