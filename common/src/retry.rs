//! Capped exponential backoff with jitter, the one retry policy of every process: first wait
//! about 100 ms, doubling up to a cap, each wait drawn between half and one and a half times
//! the nominal delay so replicas that failed together do not retry together.

use std::time::Duration;

use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct Backoff {
    delay: Duration,
    cap: Duration,
}

/// Shutdown was asked for while waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interrupted;

impl Backoff {
    pub const FIRST: Duration = Duration::from_millis(100);
    pub const CAP: Duration = Duration::from_secs(5);

    pub fn new() -> Self {
        Self::with_cap(Self::CAP)
    }

    pub fn with_cap(cap: Duration) -> Self {
        Self { delay: Self::FIRST.min(cap), cap }
    }

    /// The nominal delay of the next wait.
    pub fn delay(&self) -> Duration {
        self.delay
    }

    /// The next jittered delay; advances the backoff.
    pub fn next_delay(&mut self) -> Duration {
        let jittered = self.delay.mul_f64(0.5 + fastrand::f64());
        self.delay = (self.delay * 2).min(self.cap);
        jittered
    }

    /// Sleeps the next delay.
    pub async fn sleep(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }

    /// Sleeps the next delay, cut short by shutdown.
    pub async fn wait(&mut self, shutdown: &mut watch::Receiver<bool>) -> Result<(), Interrupted> {
        if *shutdown.borrow() {
            return Err(Interrupted);
        }
        let delay = self.next_delay();
        tokio::select! {
            _ = shutdown.changed() => Err(Interrupted),
            _ = tokio::time::sleep(delay) => Ok(()),
        }
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_with_jitter_within_half_to_one_and_a_half() {
        let mut backoff = Backoff::with_cap(Duration::from_millis(800));
        let mut nominal = Vec::new();
        for _ in 0..6 {
            let expected = backoff.delay();
            let d = backoff.next_delay();
            assert!(d >= expected.mul_f64(0.5) && d <= expected.mul_f64(1.5), "{d:?} vs {expected:?}");
            nominal.push(expected.as_millis());
        }
        assert_eq!(nominal, vec![100, 200, 400, 800, 800, 800]);
    }
}
