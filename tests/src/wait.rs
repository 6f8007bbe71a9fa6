//! Waiting for a condition: the one poll loop of the tests, which says what it saw when it
//! gives up.
//!
//! ```ignore
//! // Look every 200 ms for a minute:
//! let status = eventually("a checkpoint", Duration::from_secs(60), async || {
//!     worker.status().await.filter(|s| s.last_checkpoint.is_some())
//! })
//! .await?;
//! // The same, printing the worker's status if it times out:
//! Wait::new("a checkpoint", Duration::from_secs(60))
//!     .diagnose(async || format!("worker status: {:?}", worker.status().await))
//!     .until(async || worker.status().await?.last_checkpoint)
//!     .await?;
//! ```

use std::{fmt::Write, future::Ready, time::Duration};

use tokio::time::Instant;

/// What one look at an awaited condition gives: the value once the condition holds; `None`
/// while it does not; or an error while it cannot be told, which is kept and shown if the wait
/// times out.
pub trait Look<T> {
    /// The look as a result.
    fn into_result(self) -> anyhow::Result<Option<T>>;
}

impl<T> Look<T> for Option<T> {
    fn into_result(self) -> anyhow::Result<Option<T>> {
        Ok(self)
    }
}

impl<T> Look<T> for anyhow::Result<Option<T>> {
    fn into_result(self) -> anyhow::Result<Option<T>> {
        self
    }
}

/// A [`Wait`] without diagnostics.
pub type NoDiagnosis = fn() -> Ready<String>;

/// A wait for a condition: what it is, how long and how often to look, and what to add to the
/// error when it times out.
#[must_use = "a wait does nothing until `until` is awaited"]
#[derive(Debug)]
pub struct Wait<D = NoDiagnosis> {
    what: String,
    timeout: Duration,
    every: Duration,
    diagnose: Option<D>,
}

impl Wait {
    /// Waiting up to `timeout` for `what` (named in the error), looking every 200 ms.
    pub fn new(what: impl Into<String>, timeout: Duration) -> Self {
        Wait {
            what: what.into(),
            timeout,
            every: Duration::from_millis(200),
            diagnose: None,
        }
    }
}

impl<D: AsyncFnMut() -> String> Wait<D> {
    /// Looks every `every` instead (zero: as often as the check returns).
    pub fn every(self, every: Duration) -> Self {
        Wait { every, ..self }
    }

    /// On timeout, adds what `diagnose` says to the error: a worker's status, the last value
    /// observed, a process's log.
    pub fn diagnose<E: AsyncFnMut() -> String>(self, diagnose: E) -> Wait<E> {
        Wait {
            what: self.what,
            timeout: self.timeout,
            every: self.every,
            diagnose: Some(diagnose),
        }
    }

    /// Runs `check` until it gives a value, and returns it; fails once the timeout has passed
    /// since the first look, naming what was awaited, the last error and the diagnosis.
    pub async fn until<T, L: Look<T>>(
        mut self,
        mut check: impl AsyncFnMut() -> L,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + self.timeout;
        let mut last_error = None;
        loop {
            match check().await.into_result() {
                Ok(Some(value)) => return Ok(value),
                Ok(None) => {}
                Err(e) => last_error = Some(e),
            }
            if Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(self.every).await;
        }
        let mut message = format!(
            "timed out after {:?} waiting for {}",
            self.timeout, self.what
        );
        if let Some(e) = last_error {
            let _ = write!(message, "; last error: {e:#}");
        }
        if let Some(diagnose) = self.diagnose.as_mut() {
            let _ = write!(message, "\n{}", diagnose().await);
        }
        Err(anyhow::Error::msg(message))
    }
}

/// Runs `check` every 200 ms until it gives a value; fails after `timeout` naming `what`.
/// [`Wait`] adds diagnostics and another pace.
pub async fn eventually<T, L: Look<T>>(
    what: &str,
    timeout: Duration,
    check: impl AsyncFnMut() -> L,
) -> anyhow::Result<T> {
    Wait::new(what, timeout).until(check).await
}

/// Runs `future` to completion from a thread outside the runtime's workers (a
/// `spawn_blocking` closure), for a wait in synchronous code.
pub fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Handle::current().block_on(future)
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;

    #[tokio::test]
    async fn returns_the_first_value_a_check_gives() {
        let looks = Cell::new(0);
        let value = Wait::new("the third look", Duration::from_secs(5))
            .every(Duration::ZERO)
            .until(async || {
                looks.set(looks.get() + 1);
                (looks.get() == 3).then_some("found")
            })
            .await
            .unwrap_or_default();
        assert_eq!((value, looks.get()), ("found", 3));
    }

    #[tokio::test]
    async fn a_timeout_names_the_wait_the_last_error_and_the_diagnosis() {
        let seen = Cell::new(0);
        let err = Wait::new("seven", Duration::from_millis(50))
            .every(Duration::from_millis(10))
            .diagnose(async || format!("last seen {}", seen.get()))
            .until(async || -> anyhow::Result<Option<()>> {
                seen.set(seen.get() + 1);
                anyhow::bail!("not {}", seen.get())
            })
            .await
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        let n = seen.get();
        assert!(n >= 2, "looked {n} times");
        assert!(
            err.starts_with("timed out after 50ms waiting for seven; last error: not "),
            "{err}"
        );
        assert!(err.ends_with(&format!("\nlast seen {n}")), "{err}");
    }

    #[tokio::test]
    async fn a_plain_eventually_gives_up_without_diagnosis() {
        let err = eventually("nothing", Duration::ZERO, async || None::<()>)
            .await
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("timed out after 0ns waiting for nothing")
        );
    }
}
