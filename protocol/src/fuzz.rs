//! Entry points for the fuzz targets in `fuzz/`, kept here so that the
//! committed corpora replay as ordinary tests of this crate.

use bytes::BytesMut;

use crate::{Command, FrameDecoder};

/// Splits `data` into frames as a receiver would and decodes each command.
/// Every command that decodes must re-encode to a frame that decodes to the
/// same command.
///
/// # Panics
/// When that round trip fails: a bug the fuzzer should report.
#[allow(
    clippy::expect_used,
    reason = "a fuzz oracle: panicking is how it reports a failed round trip"
)]
pub fn frame_decode(data: &[u8]) {
    let decoder = FrameDecoder::new(1 << 20);
    let mut buf = BytesMut::from(data);
    while let Ok(Some(frame)) = decoder.decode(&mut buf) {
        let Ok(command) = Command::decode(&frame) else {
            continue;
        };
        let encoded = command.to_bytes().expect("a decoded command re-encodes");
        let again = decoder
            .decode_one(encoded)
            .expect("a re-encoded frame decodes");
        assert_eq!(
            Command::decode(&again).as_ref(),
            Ok(&command),
            "round trip changed the command"
        );
    }
}
