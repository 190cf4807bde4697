//! Limits on what one client can take: connections (in total and per IP address, counted from the
//! handshake to the close) and messages per second per connection (a token bucket, governor's GCRA).

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

/// Why a handshake was refused by a connection limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// `server.max_connections` are open: HTTP 503.
    Total(usize),
    /// `server.max_connections_per_ip` are open from this address: HTTP 429.
    PerIp(usize),
}

/// Open connections, in total and per client address.
#[derive(Default)]
pub struct Admission {
    total: AtomicUsize,
    per_ip: DashMap<IpAddr, usize>,
}

/// One admitted connection: its place is given back when this is dropped.
pub struct Admitted {
    admission: Arc<Admission>,
    ip: IpAddr,
}

impl Admission {
    /// Takes a place for a connection from `ip`, or says which limit is full.
    pub fn admit(self: &Arc<Self>, ip: IpAddr, max_total: usize, max_per_ip: usize) -> Result<Admitted, Refused> {
        if self.total.fetch_add(1, Ordering::AcqRel) >= max_total {
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::Total(max_total));
        }
        let mut count = self.per_ip.entry(ip).or_insert(0);
        if *count >= max_per_ip {
            drop(count);
            self.total.fetch_sub(1, Ordering::AcqRel);
            return Err(Refused::PerIp(max_per_ip));
        }
        *count += 1;
        Ok(Admitted { admission: self.clone(), ip })
    }

    /// Open connections from `ip`.
    pub fn from_ip(&self, ip: IpAddr) -> usize {
        self.per_ip.get(&ip).map_or(0, |count| *count)
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.admission.total.fetch_sub(1, Ordering::AcqRel);
        // The entry goes with its last connection, so the map holds only addresses in use.
        self.admission.per_ip.remove_if_mut(&self.ip, |_, count| {
            *count -= 1;
            *count == 0
        });
    }
}

/// What the rate limit says about one client frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Answered with a `rate_limited` error frame, not dispatched.
    Refused,
    /// Refused too many times in a row: the connection is closed (1008).
    Abusive,
}

/// One connection's message rate: `per_second` sustained, `burst` at once.
pub struct MessageRate {
    /// Boxed: it lives in every connection's task, and is off in some deployments.
    limiter: Option<Box<DefaultDirectRateLimiter>>,
    refused_in_a_row: u32,
    close_after: u32,
}

impl MessageRate {
    /// `per_second == 0` turns the limit off.
    pub fn new(per_second: u32, burst: u32, close_after: u32) -> MessageRate {
        let limiter = NonZeroU32::new(per_second).map(|rate| {
            let burst = NonZeroU32::new(burst).unwrap_or(rate);
            Box::new(RateLimiter::direct(Quota::per_second(rate).allow_burst(burst)))
        });
        MessageRate { limiter, refused_in_a_row: 0, close_after }
    }

    /// Takes one frame's token.
    pub fn check(&mut self) -> Verdict {
        let Some(limiter) = &self.limiter else { return Verdict::Allowed };
        if limiter.check().is_ok() {
            self.refused_in_a_row = 0;
            return Verdict::Allowed;
        }
        self.refused_in_a_row = self.refused_in_a_row.saturating_add(1);
        if self.close_after > 0 && self.refused_in_a_row >= self.close_after {
            Verdict::Abusive
        } else {
            Verdict::Refused
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_counted_per_address_and_given_back() {
        let admission = Arc::new(Admission::default());
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let first = admission.admit(a, 3, 2).unwrap();
        let _second = admission.admit(a, 3, 2).unwrap();
        assert_eq!(admission.admit(a, 3, 2).err(), Some(Refused::PerIp(2)));
        let _third = admission.admit(b, 3, 2).unwrap();
        assert_eq!(admission.admit(b, 3, 2).err(), Some(Refused::Total(3)));
        drop(first);
        assert_eq!(admission.from_ip(a), 1);
        let _again = admission.admit(a, 3, 2).unwrap();
        assert_eq!(admission.total.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn a_burst_is_allowed_then_refused_then_abuse_is_called() {
        let mut rate = MessageRate::new(1, 3, 4);
        let verdicts: Vec<Verdict> = (0..7).map(|_| rate.check()).collect();
        assert_eq!(&verdicts[..3], &[Verdict::Allowed; 3]);
        assert_eq!(&verdicts[3..6], &[Verdict::Refused; 3]);
        assert_eq!(verdicts[6], Verdict::Abusive);
        let mut off = MessageRate::new(0, 0, 1);
        assert!((0..10_000).all(|_| off.check() == Verdict::Allowed));
    }
}
