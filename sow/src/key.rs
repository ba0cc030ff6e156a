//! SowKeys: the identity of a record within its topic.

use std::fmt;

use statecast_filter::Value;
use statecast_filter::value::write_text;

use crate::config::TopicSpec;
use crate::error::KeyError;
use crate::extract::values_at;
use crate::format::stable_hash;

/// The key of a SOW record: a 64-bit hash of the topic and the key field
/// values (or of the topic and a publisher-supplied key). Shown and parsed as
/// decimal digits, as AMPS shows its SowKeys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SowKey(pub u64);

impl fmt::Display for SowKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::str::FromStr for SowKey {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse().map(SowKey)
    }
}

impl SowKey {
    /// The key of a publisher-supplied key string on `topic`.
    pub fn explicit(topic: &str, key: &[u8]) -> SowKey {
        SowKey(stable_hash(&[topic.as_bytes(), b"\x00explicit", key]))
    }

    /// The key of a topic and key field values given as text (each value as
    /// [`write_text`] prints it: strings as their bytes, numbers canonical).
    pub fn from_values(topic: &str, values: &[&[u8]]) -> SowKey {
        let mut parts: Vec<&[u8]> = Vec::with_capacity(values.len() + 2);
        parts.push(topic.as_bytes());
        parts.push(b"\x00fields");
        parts.extend_from_slice(values);
        SowKey(stable_hash(&parts))
    }
}

/// Reusable buffers for key computation.
#[derive(Debug, Default)]
pub(crate) struct KeyScratch {
    values: Vec<Value>,
    texts: Vec<Vec<u8>>,
}

/// Computes the key of `payload` on `topic` from the key fields of `spec`.
/// The first value of each key field counts (an array contributes its first
/// element); a missing, null or empty value is an error.
pub(crate) fn compute_key(
    spec: &TopicSpec,
    topic: &str,
    payload: &[u8],
    scratch: &mut KeyScratch,
) -> Result<SowKey, KeyError> {
    let all = || {
        spec.key
            .iter()
            .map(|(_, t)| t.as_str())
            .collect::<Vec<_>>()
            .join(" + ")
    };
    if spec.key.is_empty() {
        return Err(KeyError::ExplicitKeyRequired {
            topic: topic.to_string(),
        });
    }
    scratch.texts.resize_with(spec.key.len(), Vec::new);
    for ((path, text), out) in spec.key.iter().zip(scratch.texts.iter_mut()) {
        scratch.values.clear();
        values_at(payload, path, &mut scratch.values).map_err(|m| KeyError::NotJson {
            topic: topic.to_string(),
            reason: m.reason,
            offset: m.offset,
            all: all(),
        })?;
        out.clear();
        let present = match scratch.values.first() {
            Some(v) => write_text(v.as_scalar(), out) && !out.is_empty(),
            None => false,
        };
        if !present {
            return Err(KeyError::MissingField {
                topic: topic.to_string(),
                path: text.clone(),
                all: all(),
            });
        }
    }
    let parts: Vec<&[u8]> = scratch.texts.iter().map(Vec::as_slice).collect();
    Ok(SowKey::from_values(topic, &parts))
}
