//! The gateway's clock when it runs for real: the monotonic time since it started, optionally
//! running faster than the wall clock (`--time-scale`, for demos and live replays of
//! scenarios). The session core never reads it: transports read it and pass `now` in.

use std::time::{Duration, Instant};

/// Time since `start`, times `scale`.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    start: Instant,
    scale: f64,
}

impl Clock {
    /// The real clock, starting now.
    pub fn start() -> Clock {
        Clock::scaled(Instant::now(), 1.0)
    }

    /// A clock that runs `scale` times as fast as the wall clock from `start`. A scale that is
    /// not a positive finite number is taken as 1.
    pub fn scaled(start: Instant, scale: f64) -> Clock {
        let scale = if scale.is_finite() && scale > 0.0 {
            scale
        } else {
            1.0
        };
        Clock { start, scale }
    }

    /// The gateway's time now.
    pub fn now(&self) -> Duration {
        self.start.elapsed().mul_f64(self.scale)
    }

    /// The wall-clock instant at which the gateway's time reaches `t` (for timers).
    pub fn instant_at(&self, t: Duration) -> Instant {
        let wall = Duration::try_from_secs_f64(t.as_secs_f64() / self.scale)
            .unwrap_or(Duration::from_secs(u64::from(u32::MAX)));
        self.start
            .checked_add(wall)
            .unwrap_or_else(|| self.start + Duration::from_secs(u64::from(u32::MAX)))
    }

    pub fn scale(&self) -> f64 {
        self.scale
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A scaled clock's timer instants map its own time back onto the wall clock.
    #[test]
    fn instant_at_inverts_the_scale() {
        let start = Instant::now();
        let clock = Clock::scaled(start, 30.0);
        assert_eq!(
            clock.instant_at(Duration::from_secs(60)),
            start + Duration::from_secs(2)
        );
        assert_eq!(Clock::scaled(start, f64::NAN).scale(), 1.0);
        assert_eq!(Clock::scaled(start, -2.0).scale(), 1.0);
        // Far deadlines do not overflow.
        let _ = clock.instant_at(Duration::MAX);
    }
}
