//! Per-key rate limits, in this process's memory: requests per minute and tokens per minute
//! (token buckets that refill continuously), and concurrent streams. Decided under one lock, so
//! concurrent requests of one key cannot both take its last token.
//!
//! Across several replicas each keeps its own buckets: a client spread over N replicas can reach
//! N × its limits, never more (docs/high-availability.md says why this is the choice).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::records::RateLimits;

/// Why a rate limit refused a request.
#[derive(Debug, Clone, PartialEq)]
pub struct RateLimited {
    /// What was exceeded, in words.
    pub what: String,
    /// Seconds until a retry can succeed.
    pub retry_after: u64,
    /// Whether waiting can help at all.
    pub can_wait: bool,
}

#[derive(Debug)]
struct Bucket {
    level: f64,
    at: Instant,
}

impl Bucket {
    fn refill(&mut self, capacity: f64, now: Instant) {
        let per_sec = capacity / 60.0;
        self.level = (self.level + now.duration_since(self.at).as_secs_f64() * per_sec).min(capacity);
        self.at = now;
    }
}

#[derive(Debug, Default)]
struct KeyState {
    requests: Option<Bucket>,
    tokens: Option<Bucket>,
    streams: u32,
}

/// Rate-limit state of every key.
#[derive(Debug, Default)]
pub struct RateLimiter {
    keys: Mutex<HashMap<String, KeyState>>,
}

/// A rate-limit admission: holds a stream slot and the tokens taken on account.
#[derive(Debug)]
pub struct RateTicket {
    limiter: Arc<RateLimiter>,
    key_id: String,
    limits: RateLimits,
    stream: bool,
    tokens_taken: u64,
}

impl RateLimiter {
    /// Admits one request of `estimated_tokens`, or says how long to wait.
    pub fn admit(
        self: &Arc<Self>,
        key_id: &str,
        limits: RateLimits,
        stream: bool,
        estimated_tokens: u64,
    ) -> std::result::Result<Option<RateTicket>, RateLimited> {
        if !limits.any() {
            return Ok(None);
        }
        let now = Instant::now();
        let mut keys = self.keys.lock().unwrap_or_else(|p| p.into_inner());
        let state = keys.entry(key_id.to_string()).or_default();
        if let Some(max) = limits.max_streams
            && stream
            && state.streams >= max
        {
            return Err(RateLimited {
                what: format!("{max} concurrent streams"),
                retry_after: 1,
                can_wait: true,
            });
        }
        if let Some(rpm) = limits.rpm {
            let cap = rpm as f64;
            let b = state.requests.get_or_insert(Bucket { level: cap, at: now });
            b.refill(cap, now);
            if b.level < 1.0 {
                let wait = ((1.0 - b.level) / (cap / 60.0)).ceil() as u64;
                return Err(RateLimited {
                    what: format!("{rpm} requests per minute"),
                    retry_after: wait.max(1),
                    can_wait: true,
                });
            }
        }
        if let Some(tpm) = limits.tpm {
            if estimated_tokens > tpm {
                return Err(RateLimited {
                    what: format!("{tpm} tokens per minute (this request alone needs about {estimated_tokens})"),
                    retry_after: 60,
                    can_wait: false,
                });
            }
            let cap = tpm as f64;
            let b = state.tokens.get_or_insert(Bucket { level: cap, at: now });
            b.refill(cap, now);
            if b.level < estimated_tokens as f64 {
                let wait = ((estimated_tokens as f64 - b.level) / (cap / 60.0)).ceil() as u64;
                return Err(RateLimited {
                    what: format!("{tpm} tokens per minute"),
                    retry_after: wait.max(1),
                    can_wait: true,
                });
            }
            b.level -= estimated_tokens as f64;
        }
        if let Some(b) = state.requests.as_mut() {
            b.level -= 1.0;
        }
        if stream {
            state.streams += 1;
        }
        Ok(Some(RateTicket {
            limiter: self.clone(),
            key_id: key_id.to_string(),
            limits,
            stream,
            tokens_taken: estimated_tokens,
        }))
    }
}

/// A concurrent-stream slot; freed when dropped (when the client's response ends or the client
/// goes away — draining the upstream for metering afterwards does not hold it).
#[derive(Debug)]
pub struct StreamSlot {
    limiter: Arc<RateLimiter>,
    key_id: String,
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut keys = self.limiter.keys.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = keys.get_mut(&self.key_id) {
            s.streams = s.streams.saturating_sub(1);
        }
    }
}

impl RateTicket {
    /// Hands the stream slot to whoever holds the client's response.
    pub fn take_stream_slot(&mut self) -> Option<StreamSlot> {
        std::mem::take(&mut self.stream).then(|| StreamSlot {
            limiter: self.limiter.clone(),
            key_id: self.key_id.clone(),
        })
    }

    /// Charges the real token count (the difference to the estimate taken at admission).
    pub fn settle(&mut self, actual_tokens: u64) {
        if self.limits.tpm.is_none() {
            return;
        }
        let mut keys = self.limiter.keys.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = keys.get_mut(&self.key_id).and_then(|s| s.tokens.as_mut()) {
            b.level -= actual_tokens as f64 - self.tokens_taken as f64;
        }
        self.tokens_taken = actual_tokens;
    }
}

impl Drop for RateTicket {
    fn drop(&mut self) {
        if self.stream {
            let mut keys = self.limiter.keys.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(s) = keys.get_mut(&self.key_id) {
                s.streams = s.streams.saturating_sub(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_wait_and_refuse() {
        let rl = Arc::new(RateLimiter::default());
        let limits = RateLimits {
            rpm: Some(2),
            tpm: Some(1000),
            max_streams: Some(1),
        };
        let a = rl.admit("k", limits, true, 100).unwrap().unwrap();
        let e = rl.admit("k", limits, true, 100).unwrap_err();
        assert!(e.what.contains("1 concurrent streams") && e.can_wait);
        drop(a);
        let _b = rl.admit("k", limits, false, 100).unwrap();
        let e = rl.admit("k", limits, false, 100).unwrap_err();
        assert!(
            e.what.contains("2 requests per minute") && e.retry_after >= 1 && e.retry_after <= 30,
            "{e:?}"
        );
        let e = rl.admit("other", limits, false, 5000).unwrap_err();
        assert!(!e.can_wait && e.what.contains("needs about 5000"));
        let mut t = rl
            .admit(
                "tok",
                RateLimits {
                    tpm: Some(1000),
                    ..Default::default()
                },
                false,
                100,
            )
            .unwrap()
            .unwrap();
        t.settle(950); // real usage was much higher than the estimate: the bucket is charged
        let e = rl
            .admit(
                "tok",
                RateLimits {
                    tpm: Some(1000),
                    ..Default::default()
                },
                false,
                100,
            )
            .unwrap_err();
        assert!(e.can_wait && e.retry_after >= 3, "{e:?}");
        assert!(rl.admit("free", RateLimits::default(), true, 10).unwrap().is_none());
    }
}
