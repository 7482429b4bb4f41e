//! Exponential backoff: the one schedule every retry in the agent follows
//! (re-opening the udev monitor, re-enumerating while it is down, fetching a
//! handler again, registering with the kubelet, re-watching a ConfigMap).

use std::time::Duration;

/// Delays that double from `first` up to `max`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub const fn new(first: Duration, max: Duration) -> Self {
        Backoff { first, max, next: first }
    }

    /// The delay to wait now; the one after it is twice as long (at most `max`).
    pub fn next_delay(&mut self) -> Duration {
        let delay = self.next;
        self.next = self.next.saturating_mul(2).min(self.max);
        delay
    }

    /// The delay [`next_delay`](Self::next_delay) will return, without taking it.
    pub fn peek(&self) -> Duration {
        self.next
    }

    /// Back to the first delay (after a success).
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_up_to_the_cap_and_resets() {
        let ms = Duration::from_millis;
        let mut backoff = Backoff::new(ms(20), ms(100));
        let delays: Vec<Duration> = (0..5).map(|_| backoff.next_delay()).collect();
        assert_eq!(delays, [ms(20), ms(40), ms(80), ms(100), ms(100)]);
        assert_eq!(backoff.peek(), ms(100));
        backoff.reset();
        assert_eq!(backoff.next_delay(), ms(20));
    }
}
