//! Time budgets for guest calls without a periodic ticker.
//!
//! The engine runs with epoch interruption. Instead of bumping the epoch on a
//! timer (a wake-up every few ms even when idle), a watchdog thread sleeps
//! until the earliest deadline of a call in flight and bumps the epoch then.
//! Each store's epoch callback compares its own deadline with the clock, so a
//! bump meant for another call only extends the others. With no call in
//! flight the thread blocks without a timeout.

use std::collections::BTreeSet;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Instant;

use wasmtime::Engine;

#[derive(Default)]
struct Deadlines {
    pending: BTreeSet<(Instant, u64)>,
    next_id: u64,
    stopped: bool,
}

/// Owned by the runtime; dropping it ends the thread.
pub struct Watchdog {
    shared: Arc<(Mutex<Deadlines>, Condvar)>,
}

/// Registered while a call runs; dropping it withdraws the deadline.
pub struct Armed {
    shared: Arc<(Mutex<Deadlines>, Condvar)>,
    key: (Instant, u64),
}

impl Watchdog {
    pub fn start(engine: Engine) -> Self {
        let shared: Arc<(Mutex<Deadlines>, Condvar)> = Arc::default();
        let thread_shared = shared.clone();
        std::thread::Builder::new()
            .name("devsieve-watchdog".into())
            .spawn(move || run(thread_shared, engine))
            .expect("spawning the handler watchdog thread");
        Watchdog { shared }
    }

    pub fn arm(&self, deadline: Instant) -> Armed {
        let (lock, wake) = &*self.shared;
        let mut deadlines = lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        let key = (deadline, deadlines.next_id);
        deadlines.next_id += 1;
        let earliest = deadlines.pending.first().is_none_or(|first| key < *first);
        deadlines.pending.insert(key);
        if earliest {
            wake.notify_one();
        }
        Armed { shared: self.shared.clone(), key }
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        let (lock, wake) = &*self.shared;
        lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner()).stopped = true;
        wake.notify_one();
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        let (lock, _) = &*self.shared;
        let mut deadlines = lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        deadlines.pending.remove(&self.key);
    }
}

fn run(shared: Arc<(Mutex<Deadlines>, Condvar)>, engine: Engine) {
    let (lock, wake) = &*shared;
    let mut deadlines = lock.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    while !deadlines.stopped {
        deadlines = match deadlines.pending.first().copied() {
            // An idle agent sleeps here, without a timeout.
            None => wake.wait(deadlines).unwrap_or_else(|poisoned| poisoned.into_inner()),
            Some((deadline, _)) => {
                let now = Instant::now();
                if now >= deadline {
                    engine.increment_epoch();
                    deadlines.pending.retain(|(at, _)| *at > now);
                    deadlines
                } else {
                    wake.wait_timeout(deadlines, deadline - now).unwrap_or_else(|poisoned| poisoned.into_inner()).0
                }
            }
        };
    }
}
