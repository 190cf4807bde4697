//! A TCP stream that remembers when the kernel received the bytes it last read (`SO_TIMESTAMPNS`),
//! so the load generator times a reply from its arrival at the socket, not from the moment its own
//! task got a core to read it. On 2 cores shared with the server, with hundreds of connections
//! ready at once, the second can be milliseconds later (BENCHMARKS.md, "Tails").
//!
//! On loopback the kernel stamps a segment when the sending socket hands it to the device, in the
//! server's `write`: the stamp is when the server wrote its reply. The kernel turns stamping on a
//! moment after the first socket asks (a deferred switch), so the first reads of a fresh process
//! may carry none: `loadgen echo` warms up first, and a reply it measures without one is an error.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
use tokio::net::TcpStream;

/// A connected TCP stream; with stamps on, each read keeps the kernel's receive time.
pub struct Stamped {
    tcp: TcpStream,
    received: Option<SystemTime>,
}

impl Stamped {
    /// Wraps `tcp`; `stamps`: ask the kernel for receive timestamps.
    pub fn new(tcp: TcpStream, stamps: bool) -> io::Result<Stamped> {
        if stamps {
            enable_timestamps(tcp.as_raw_fd())?;
        }
        Ok(Stamped { tcp, received: None })
    }

    /// When the kernel received the bytes of the last read that carried a stamp (wall clock, as
    /// the kernel stamps), and forgets it: the next call answers for reads after this one.
    pub fn take_received(&mut self) -> Option<SystemTime> {
        self.received.take()
    }
}

impl AsyncRead for Stamped {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let fd = this.tcp.as_raw_fd();
        loop {
            ready!(this.tcp.poll_read_ready(cx))?;
            let unfilled = buf.initialize_unfilled();
            // `try_io` clears the readiness when the read would block, so the loop waits again.
            match this.tcp.try_io(Interest::READABLE, || receive(fd, unfilled)) {
                Ok((read, stamp)) => {
                    if stamp.is_some() {
                        this.received = stamp;
                    }
                    buf.advance(read);
                    return Poll::Ready(Ok(()));
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
    }
}

impl AsyncWrite for Stamped {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().tcp).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().tcp).poll_shutdown(cx)
    }
}

/// `SO_TIMESTAMPNS` on `fd`: every `recvmsg` then carries the receive time as a control message.
#[allow(unsafe_code)]
fn enable_timestamps(fd: RawFd) -> io::Result<()> {
    let on: libc::c_int = 1;
    // SAFETY: `fd` is an open socket owned by the caller's `TcpStream`; the option value is a
    // c_int that lives across the call, and its size is passed with it.
    let done = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_TIMESTAMPNS,
            (&on as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if done == 0 { Ok(()) } else { Err(io::Error::last_os_error()) }
}

/// One non-blocking `recvmsg` into `buf`: the bytes read and the kernel's stamp, if it gave one.
#[allow(unsafe_code)]
fn receive(fd: RawFd, buf: &mut [u8]) -> io::Result<(usize, Option<SystemTime>)> {
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    // u64s: aligned for `cmsghdr`; 64 bytes hold the one timestamp message (32) with room.
    let mut control = [0u64; 8];
    // SAFETY: an all-zero `msghdr` is a valid value of that plain C struct (null pointers, zero
    // lengths); the fields set below point at `iov`, `buf` and `control`, which outlive the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&control) as _;
    // SAFETY: `fd` is an open, non-blocking socket (tokio's); `msg` is valid as said above, and the
    // kernel writes at most `iov_len` bytes into `buf` and `msg_controllen` into `control`.
    let read = unsafe { libc::recvmsg(fd, &mut msg, 0) };
    if read < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut stamp = None;
    // SAFETY: `msg` was filled by a successful `recvmsg`, so the CMSG macros walk the control
    // messages the kernel wrote into `control` (bounded by the `msg_controllen` it set); the data
    // of an `SCM_TIMESTAMPNS` message is one `timespec`, read unaligned.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_TIMESTAMPNS {
                let at: libc::timespec = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast());
                stamp = Some(SystemTime::UNIX_EPOCH + Duration::new(at.tv_sec as u64, at.tv_nsec as u32));
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok((read as usize, stamp))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Writes a message from `server` and reads it through `client`: its stamp, checked to fall
    /// between the write and the read.
    async fn exchange(server: &mut TcpStream, client: &mut Stamped) -> anyhow::Result<Option<SystemTime>> {
        let before = SystemTime::now();
        server.write_all(b"reply").await?;
        let mut buf = [0u8; 16];
        let read = client.read(&mut buf).await?;
        let after = SystemTime::now();
        assert_eq!(&buf[..read], b"reply");
        let stamp = client.take_received();
        if let Some(at) = stamp {
            assert!(before <= at && at <= after, "{before:?} {at:?} {after:?}");
        }
        assert_eq!(client.take_received(), None, "a stamp is taken once");
        Ok(stamp)
    }

    #[tokio::test]
    async fn a_read_carries_the_kernels_receive_time() -> anyhow::Result<()> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mut client = Stamped::new(TcpStream::connect(addr).await?, true)?;
        let (mut server, _) = listener.accept().await?;
        // The kernel turns stamping on a moment after the first socket asks for it (a deferred
        // switch), so the first reads may carry none; the load generator's warm-up covers that.
        let mut stamped = false;
        for _ in 0..100 {
            stamped = exchange(&mut server, &mut client).await?.is_some();
            if stamped {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(stamped, "no read carried a stamp within a second");
        // Without stamps on, none, even while the kernel stamps for the other socket.
        let mut plain = Stamped::new(TcpStream::connect(addr).await?, false)?;
        let (mut server, _) = listener.accept().await?;
        assert_eq!(exchange(&mut server, &mut plain).await?, None);
        Ok(())
    }
}
