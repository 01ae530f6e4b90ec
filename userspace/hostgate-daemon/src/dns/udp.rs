//! Batched UDP I/O for the DNS workers: up to a batch of queries in one
//! recvmmsg(2) and their replies in one sendmmsg(2), as NSD does, on the
//! worker's non-blocking socket (the caller waits for readiness through
//! tokio). Under load a worker's queue holds many queries, and two system
//! calls a batch instead of two a query is most of what is left to save
//! once the answers themselves come from the cache.

use std::{
    io,
    mem::{size_of, zeroed},
    net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6},
    os::fd::AsRawFd,
};

/// Buffers for one batch: the queries received and the replies to send.
pub(super) struct Batch {
    queries: Vec<Vec<u8>>,
    lens: Vec<usize>,
    peers: Vec<libc::sockaddr_storage>,
    peer_lens: Vec<libc::socklen_t>,
    received: usize,
    /// Reply `k` goes to the sender of query `reply_to[k]`; the buffers
    /// are kept from batch to batch.
    replies: Vec<Vec<u8>>,
    reply_to: Vec<usize>,
    ready: usize,
}

impl Batch {
    pub(super) fn new(size: usize, query_buffer: usize) -> Self {
        Batch {
            queries: vec![vec![0u8; query_buffer]; size],
            lens: vec![0; size],
            // SAFETY: sockaddr_storage is plain data; all zeroes is a valid value
            peers: vec![unsafe { zeroed() }; size],
            peer_lens: vec![0; size],
            received: 0,
            replies: Vec::new(),
            reply_to: Vec::new(),
            ready: 0,
        }
    }

    /// Receives what is queued, up to the batch size, without blocking
    /// (WouldBlock when nothing is). Forgets the previous batch.
    pub(super) fn receive(&mut self, socket: &impl AsRawFd) -> io::Result<usize> {
        self.received = 0;
        self.ready = 0;
        let n = self.queries.len();
        // SAFETY: iovec and mmsghdr are plain data; zeroes are valid
        let mut iov: Vec<libc::iovec> = vec![unsafe { zeroed() }; n];
        let mut headers: Vec<libc::mmsghdr> = vec![unsafe { zeroed() }; n];
        for i in 0..n {
            iov[i] = libc::iovec { iov_base: self.queries[i].as_mut_ptr().cast(), iov_len: self.queries[i].len() };
            let h = &mut headers[i].msg_hdr;
            h.msg_name = (&mut self.peers[i] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_iov = &mut iov[i];
            h.msg_iovlen = 1;
        }
        // SAFETY: every header points at a live buffer of the length it
        // gives and at a sockaddr_storage with its size, all owned by self
        // or this frame, for the duration of the call
        let got = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                headers.as_mut_ptr(),
                n as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if got < 0 {
            return Err(io::Error::last_os_error());
        }
        let got = got as usize;
        for (i, h) in headers.iter().enumerate().take(got) {
            // a longer datagram was cut to the buffer (MSG_TRUNC): answered
            // from what fits, as the responder would any short query
            self.lens[i] = (h.msg_len as usize).min(self.queries[i].len());
            self.peer_lens[i] = h.msg_hdr.msg_namelen;
        }
        self.received = got;
        Ok(got)
    }

    pub(super) fn query(&self, i: usize) -> &[u8] {
        self.queries.get(i).and_then(|q| q.get(..self.lens[i])).unwrap_or_default()
    }

    /// Query `i`'s sender.
    pub(super) fn peer(&self, i: usize) -> Option<SocketAddr> {
        if i >= self.received {
            return None;
        }
        let storage = &self.peers[i];
        match i32::from(storage.ss_family) {
            libc::AF_INET if self.peer_lens[i] as usize >= size_of::<libc::sockaddr_in>() => {
                // SAFETY: the kernel wrote a sockaddr_in (family and length checked)
                let a: &libc::sockaddr_in = unsafe { &*(storage as *const libc::sockaddr_storage).cast() };
                let ip = Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
                Some(SocketAddr::V4(SocketAddrV4::new(ip, u16::from_be(a.sin_port))))
            }
            libc::AF_INET6 if self.peer_lens[i] as usize >= size_of::<libc::sockaddr_in6>() => {
                // SAFETY: the kernel wrote a sockaddr_in6 (family and length checked)
                let a: &libc::sockaddr_in6 = unsafe { &*(storage as *const libc::sockaddr_storage).cast() };
                let ip = Ipv6Addr::from(a.sin6_addr.s6_addr);
                Some(SocketAddr::V6(SocketAddrV6::new(ip, u16::from_be(a.sin6_port), a.sin6_flowinfo, a.sin6_scope_id)))
            }
            _ => None,
        }
    }

    /// Query `i` and the buffer its reply may be written to (then
    /// [`Batch::reply_ready`]).
    pub(super) fn query_and_reply(&mut self, i: usize) -> (&[u8], &mut Vec<u8>) {
        if self.replies.len() <= self.ready {
            self.replies.push(Vec::with_capacity(512));
        }
        let query = self.queries.get(i).and_then(|q| q.get(..self.lens[i])).unwrap_or_default();
        (query, &mut self.replies[self.ready])
    }

    /// The buffer [`Batch::query_and_reply`] gave holds query `i`'s reply.
    pub(super) fn reply_ready(&mut self, i: usize) {
        if self.reply_to.len() <= self.ready {
            self.reply_to.push(i);
        } else {
            self.reply_to[self.ready] = i;
        }
        self.ready += 1;
    }

    /// A reply built elsewhere, to query `i`'s sender.
    pub(super) fn reply_owned(&mut self, i: usize, reply: Vec<u8>) {
        if self.replies.len() <= self.ready {
            self.replies.push(reply);
        } else {
            self.replies[self.ready] = reply;
        }
        self.reply_ready(i);
    }

    /// Sends the replies ready, in order, without blocking; how many the
    /// kernel took (the rest: [`Batch::unsent`]).
    pub(super) fn send(&mut self, socket: &impl AsRawFd) -> io::Result<usize> {
        let n = self.ready;
        if n == 0 {
            return Ok(0);
        }
        // SAFETY: plain data, zeroes valid
        let mut iov: Vec<libc::iovec> = vec![unsafe { zeroed() }; n];
        let mut headers: Vec<libc::mmsghdr> = vec![unsafe { zeroed() }; n];
        for k in 0..n {
            let to = self.reply_to[k];
            iov[k] = libc::iovec { iov_base: self.replies[k].as_mut_ptr().cast(), iov_len: self.replies[k].len() };
            let h = &mut headers[k].msg_hdr;
            h.msg_name = (&mut self.peers[to] as *mut libc::sockaddr_storage).cast();
            h.msg_namelen = self.peer_lens[to];
            h.msg_iov = &mut iov[k];
            h.msg_iovlen = 1;
        }
        // SAFETY: every header points at a live reply of its length and at
        // the sender's address as recvmmsg wrote it, for the call's duration
        let sent =
            unsafe { libc::sendmmsg(socket.as_raw_fd(), headers.as_mut_ptr(), n as libc::c_uint, libc::MSG_DONTWAIT) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(sent as usize)
    }

    /// The replies after the first `sent`, with their destinations.
    pub(super) fn unsent(&self, sent: usize) -> Vec<(&[u8], SocketAddr)> {
        (sent..self.ready).filter_map(|k| Some((self.replies[k].as_slice(), self.peer(self.reply_to[k])?))).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;

    #[test]
    fn a_batch_goes_in_and_out_with_each_reply_to_its_sender() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server.set_nonblocking(true).unwrap();
        let addr = server.local_addr().unwrap();
        let clients: Vec<UdpSocket> = (0..3).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
        let mut batch = Batch::new(2, 16);
        assert_eq!(batch.receive(&server).unwrap_err().kind(), io::ErrorKind::WouldBlock);
        for (i, c) in clients.iter().enumerate() {
            c.send_to(&[i as u8; 20][..(i + 1) * 5], addr).unwrap();
        }
        let mut seen = Vec::new();
        while seen.len() < 3 {
            let n = match batch.receive(&server) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => panic!("{e}"),
            };
            assert!(n <= 2);
            for i in 0..n {
                let q = batch.query(i).to_vec();
                assert!(q.len() <= 16, "cut to the buffer");
                let peer = batch.peer(i).unwrap();
                if i % 2 == 0 {
                    let (_, out) = batch.query_and_reply(i);
                    out.clear();
                    out.extend_from_slice(b"fast");
                    out.push(q[0]);
                    batch.reply_ready(i);
                } else {
                    batch.reply_owned(i, [b"slow".as_slice(), &[q[0]]].concat());
                }
                seen.push((q[0], peer));
            }
            assert_eq!(batch.send(&server).unwrap(), n);
            assert!(batch.unsent(n).is_empty());
        }
        for (i, c) in clients.iter().enumerate() {
            let mut buf = [0u8; 64];
            c.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
            let (len, from) = c.recv_from(&mut buf).unwrap();
            assert_eq!(from, addr);
            assert_eq!(buf[len - 1], i as u8, "{:?}", &buf[..len]);
            assert_eq!(seen.iter().find(|(b, _)| *b == i as u8).unwrap().1, c.local_addr().unwrap());
        }
    }
}
