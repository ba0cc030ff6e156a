//! Reading a socket straight into a connection's buffer: the broker's one
//! `unsafe`, behind one safe function.
//!
//! `std::io::Read` writes only into initialised memory, so a safe read
//! lands in a zeroed scratch buffer and is then copied into the
//! connection's buffer: a copy of every byte received (zeroing the buffer's
//! spare capacity instead costs as much). Here the kernel writes into the
//! `BytesMut`'s spare capacity, and its length grows by what was written.

use std::io;
use std::os::fd::AsRawFd;

use bytes::BytesMut;

/// Reads from `socket` once, appending at most `max` bytes to `buf`
/// within its spare capacity (the caller reserves it). Returns how many
/// arrived; 0 at the end of the stream.
///
/// # Errors
/// The socket's (`WouldBlock` when nothing is waiting, `Interrupted`);
/// `InvalidInput`, reading nothing, when `buf` has no spare capacity or
/// `max` is 0 (a read of 0 bytes would look like the end of the stream).
pub fn read_into(socket: &impl AsRawFd, buf: &mut BytesMut, max: usize) -> io::Result<usize> {
    let spare = buf.spare_capacity_mut();
    let len = spare.len().min(max);
    if len == 0 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "no room to read into",
        ));
    }
    // SAFETY: `spare` is valid for writes of `spare.len()` ≥ `len` bytes,
    // and `recv` writes at most `len` bytes there; nothing reads them
    // before `set_len` below covers exactly the ones it wrote.
    let received = unsafe {
        nix::libc::recv(
            socket.as_raw_fd(),
            spare.as_mut_ptr().cast::<nix::libc::c_void>(),
            len,
            0,
        )
    };
    // Negative: failed, with errno set (nothing ran since to change it).
    let n = usize::try_from(received).map_err(|_| io::Error::last_os_error())?;
    let filled = buf.len() + n.min(len);
    // SAFETY: `recv` initialised the `n` (≤ `len`, hence within the spare
    // capacity) bytes after the old length.
    unsafe { buf.set_len(filled) };
    Ok(n)
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::net::{TcpListener, TcpStream};

    use super::*;

    #[test]
    fn reads_append_within_the_room_and_the_limit() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut writer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (reader, _) = listener.accept().unwrap();
        writer.write_all(b"hello, world").unwrap();
        let mut buf = BytesMut::with_capacity(64);
        buf.extend_from_slice(b">");
        assert_eq!(read_into(&reader, &mut buf, 5).unwrap(), 5);
        assert_eq!(&buf[..], b">hello");
        buf.reserve(64);
        let mut got = 0;
        while got < 7 {
            got += read_into(&reader, &mut buf, 1024).unwrap();
        }
        assert_eq!(&buf[..], b">hello, world");
        let mut full = BytesMut::new();
        let error = read_into(&reader, &mut full, 1024).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidInput);
        assert_eq!(
            read_into(&reader, &mut buf, 0).unwrap_err().kind(),
            io::ErrorKind::InvalidInput
        );
        drop(writer);
        buf.reserve(1);
        assert_eq!(
            read_into(&reader, &mut buf, 1024).unwrap(),
            0,
            "end of stream"
        );
        assert_eq!(&buf[..], b">hello, world");
    }

    #[test]
    fn an_empty_nonblocking_socket_would_block() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let _writer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (reader, _) = listener.accept().unwrap();
        reader.set_nonblocking(true).unwrap();
        let mut buf = BytesMut::with_capacity(16);
        let error = read_into(&reader, &mut buf, 16).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::WouldBlock);
        assert!(buf.is_empty());
    }
}
