//! Event generators for the shipped examples, used by local mode on its embedded broker.
//!
//! Event time runs faster than the clock so that windows close within seconds: payments at
//! 20x (a 1-minute window closes every 3 s), clicks with 10 s between events and users that go
//! quiet, so that 30-minute sessions close about a second after a user's last click.

use chrono::{DateTime, SecondsFormat};

use crate::bench::reference::SplitMix64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    Payments,
    Clicks,
}

/// A generator of example events.
#[derive(Clone, Debug)]
pub struct Generator {
    kind: Kind,
    rng: SplitMix64,
    event_time_ms: i64,
    n: u64,
}

/// The generator for a job reading `topics`, when it is one of the shipped examples.
pub fn generator_for(topics: &[String]) -> Option<Generator> {
    let kind = match topics.first().map(String::as_str) {
        Some("payments") => Kind::Payments,
        Some("clicks") => Kind::Clicks,
        _ => return None,
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0);
    Some(Generator {
        kind,
        rng: SplitMix64::new(7),
        event_time_ms: now,
        n: 0,
    })
}

const PAGES: [&str; 6] = [
    "/",
    "/pricing",
    "/docs",
    "/docs/streamjob",
    "/blog",
    "/signup",
];

impl Generator {
    /// What it generates.
    pub fn describe(&self) -> &'static str {
        match self.kind {
            Kind::Payments => {
                "card payments (50 accounts, two of them fraudulent; event time 20x the clock)"
            }
            Kind::Clicks => {
                "clicks (30 users browsing in bursts; 10 s of event time between clicks)"
            }
        }
    }

    /// Events per 100 ms tick.
    pub fn per_tick(&self) -> usize {
        20
    }

    /// The next event: Kafka key and JSON value.
    pub fn next_event(&mut self) -> (Vec<u8>, Vec<u8>) {
        self.n += 1;
        let r = self.rng.next_u64();
        match self.kind {
            Kind::Payments => {
                self.event_time_ms += 100;
                let account = r % 50;
                let amount = if account == 7 || account == 13 {
                    2000 + r % 3000
                } else {
                    5 + (r >> 8) % 300
                };
                let key = format!("acct-{account}");
                let value = format!(
                    r#"{{"account_id":"{key}","amount":{amount}.{:02},"currency":"EUR","ts":{}}}"#,
                    (r >> 20) % 100,
                    self.event_time_ms
                );
                (key.into_bytes(), value.into_bytes())
            }
            Kind::Clicks => {
                self.event_time_ms += 10_000;
                // Users take turns: 10 clicks each, then quiet for 290 clicks (48 minutes).
                let user = (self.n / 10) % 30;
                let page = PAGES[(r % PAGES.len() as u64) as usize];
                let time = DateTime::from_timestamp_millis(self.event_time_ms)
                    .map(|t| t.to_rfc3339_opts(SecondsFormat::Millis, true))
                    .unwrap_or_default();
                let key = format!("user-{user}");
                let value = format!(r#"{{"user":"{key}","page":"{page}","time":"{time}"}}"#);
                (key.into_bytes(), value.into_bytes())
            }
        }
    }
}
