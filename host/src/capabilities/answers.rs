//! Answers of capability calls kept for a while, as Kubewarden keeps them
//! (`can_i` 5 s, the `oci` look-ups 60 s), so that a policy asking the same
//! question on every admission request does not cost a remote call each
//! time. Only successes are kept.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Answers kept at most; past it the expired ones go, and if that is not
/// enough, all of them: a burst of distinct questions costs remote calls,
/// never unbounded memory.
const MAX_ANSWERS: usize = 4096;

/// Question → when it was answered, and the answer.
#[derive(Debug)]
pub(crate) struct Answers {
    ttl: Duration,
    answers: Mutex<HashMap<String, (Instant, String)>>,
}

impl Answers {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            answers: Mutex::new(HashMap::new()),
        }
    }

    /// The answer to `question` if it is recent, else `ask`'s, kept when it
    /// succeeds.
    pub(crate) fn get_or_ask<E>(
        &self,
        question: String,
        ask: impl FnOnce() -> Result<String, E>,
    ) -> Result<String, E> {
        if let Some((at, answer)) = self.lock().get(&question) {
            if at.elapsed() < self.ttl {
                return Ok(answer.clone());
            }
        }
        let answer = ask()?;
        let mut answers = self.lock();
        if answers.len() >= MAX_ANSWERS {
            answers.retain(|_, (at, _)| at.elapsed() < self.ttl);
            if answers.len() >= MAX_ANSWERS {
                answers.clear();
            }
        }
        answers.insert(question, (Instant::now(), answer.clone()));
        Ok(answer)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, String)>> {
        self.answers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn successes_are_reused_until_they_expire_and_failures_never() {
        let answers = Answers::new(Duration::from_millis(200));
        let mut asked = 0;
        let mut ask = |result: Result<&'static str, &'static str>| {
            answers.get_or_ask("q".to_owned(), || {
                asked += 1;
                result.map(str::to_owned)
            })
        };
        assert_eq!(ask(Err("down")), Err("down"));
        assert_eq!(ask(Ok("yes")), Ok("yes".to_owned()));
        assert_eq!(ask(Ok("no")), Ok("yes".to_owned()), "reused");
        std::thread::sleep(Duration::from_millis(250));
        assert_eq!(ask(Ok("no")), Ok("no".to_owned()), "expired");
        assert_eq!(asked, 3);
    }
}
