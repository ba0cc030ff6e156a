//! The one `check` helper behind every table test: runs lines of the form
//! `expression → expected` against a payload and reports every mismatch.
//!
//! Format (shared by README.md's ```` ```filter ```` blocks and `cases/*.txt`):
//! - `-- payload: <bytes>` sets the payload for the lines after it (also
//!   `-- topic: <t>`, `-- size: <n>`, `-- now: <seconds>`); other `--` lines
//!   are comments;
//! - `expr → result`: `result` is a literal (`TRUE`, `NULL`, `3`, `3.0`,
//!   `'text'`, or `NaN`) that the expression's value must equal exactly, type
//!   included (`3` is not `3.0`);
//! - `expr → error: text`: parsing must fail with a message containing `text`.

use statecast_filter::{Filter, Limits, MessageContext, Scratch, Truth, Value, reference};

#[derive(Clone, Debug, Default)]
struct Env {
    payload: String,
    topic: String,
    size: Option<usize>,
    now: Option<f64>,
}

/// Runs every case in `source`; returns how many ran. Panics listing all
/// failures, each with `origin` and its line number.
pub fn check(source: &str, origin: &str) -> usize {
    check_lines(source.lines().enumerate().map(|(i, l)| (i + 1, l)), origin)
}

/// Like [`check`], over numbered lines (so README blocks keep README line numbers).
pub fn check_lines<'a>(lines: impl IntoIterator<Item = (usize, &'a str)>, origin: &str) -> usize {
    let mut env = Env::default();
    let mut failures = Vec::new();
    let mut count = 0;
    for (number, line) in lines {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Some(directive) = line.strip_prefix("--") {
            let directive = directive.trim();
            if let Some(p) = directive.strip_prefix("payload:") {
                env.payload = p.trim().to_owned();
            } else if let Some(t) = directive.strip_prefix("topic:") {
                env.topic = t.trim().to_owned();
            } else if let Some(s) = directive.strip_prefix("size:") {
                env.size = Some(s.trim().parse().expect("size"));
            } else if let Some(n) = directive.strip_prefix("now:") {
                env.now = Some(n.trim().parse().expect("now"));
            }
            continue;
        }
        let Some((expr, expected)) = line.split_once('→') else {
            failures.push(format!("{origin}:{number}: no '→' in {line:?}"));
            continue;
        };
        count += 1;
        if let Err(message) = check_one(&env, expr.trim(), expected.trim()) {
            failures.push(format!("{origin}:{number}: {}  →  {message}", expr.trim()));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {count} cases failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    count
}

fn check_one(env: &Env, expr: &str, expected: &str) -> Result<(), String> {
    let parsed = Filter::parse(expr, &Limits::default());
    if let Some(wanted) = expected.strip_prefix("error:") {
        let wanted = wanted.trim();
        return match parsed {
            Ok(f) => Err(format!(
                "parsed as {f}, wanted an error containing {wanted:?}"
            )),
            Err(e) if e.to_string().contains(wanted) => {
                let rendered = e.render(expr);
                if rendered.lines().count() == 2 && rendered.contains('^') {
                    Ok(())
                } else {
                    Err(format!("bad rendering {rendered:?}"))
                }
            }
            Err(e) => Err(format!("error {e:?} does not contain {wanted:?}")),
        };
    }
    let filter = parsed.map_err(|e| format!("does not parse: {}", e.render(expr)))?;
    let want = if expected == "NaN" {
        Value::Float(f64::NAN)
    } else {
        literal(expected)?
    };
    let mut ctx = MessageContext::new(env.payload.as_bytes()).with_topic(&env.topic);
    if let Some(size) = env.size {
        ctx = ctx.with_message_size(size);
    }
    if let Some(now) = env.now {
        ctx = ctx.with_unix_timestamp(now);
    }
    let got = filter.evaluate_value(&ctx, &mut Scratch::new());
    if got != want {
        return Err(format!("got {got}, want {want}"));
    }
    // Every table case is also a case for the reference interpreter and for
    // the boolean entry points.
    if let Some(doc) = statecast_filter::fuzz::comparable_document(env.payload.as_bytes()) {
        let reference = reference::evaluate_document(filter.expr(), Some(&doc), &ctx);
        if reference != got {
            return Err(format!(
                "reference interpreter gives {reference}, compiled {got}"
            ));
        }
    }
    if filter.matches(&ctx) != (got.truth() == Truth::True) {
        return Err("matches() disagrees with the value".to_owned());
    }
    Ok(())
}

/// The value of a literal written in filter syntax.
pub fn literal(text: &str) -> Result<Value, String> {
    let filter = Filter::parse(text, &Limits::default())
        .map_err(|e| format!("expected value {text:?}: {e}"))?;
    Ok(filter.evaluate_value(&MessageContext::new(b""), &mut Scratch::new()))
}
