//! [`BatchRetry`] against a fake batch call: which entries go again, how often, after which
//! delays, and what comes back. No SQS involved.

use std::collections::VecDeque;
use std::sync::Mutex;

use tokio::time::Instant;

use super::*;

const RETRY: BatchRetry = BatchRetry {
    tries: 3,
    min_delay: Duration::from_millis(100),
    max_delay: Duration::from_secs(3),
};

/// A batch call that answers from a script (then accepts everything) and records what it got.
#[derive(Debug, Default)]
struct Fake {
    answers: Mutex<VecDeque<Result<Vec<BatchResultErrorEntry>, String>>>,
    calls: Mutex<Vec<Vec<(String, char)>>>,
}

impl Fake {
    fn new(answers: Vec<Result<Vec<BatchResultErrorEntry>, String>>) -> Self {
        Self {
            answers: Mutex::new(answers.into()),
            calls: Mutex::default(),
        }
    }

    async fn call(
        &self,
        entries: Vec<(String, char)>,
    ) -> Result<Vec<BatchResultErrorEntry>, String> {
        self.calls.lock().expect("not poisoned").push(entries);
        let next = self.answers.lock().expect("not poisoned").pop_front();
        next.unwrap_or(Ok(Vec::new()))
    }

    /// The entries of each call, without their ids.
    fn sent(&self) -> Vec<String> {
        self.calls
            .lock()
            .expect("not poisoned")
            .iter()
            .map(|c| c.iter().map(|(_, e)| *e).collect())
            .collect()
    }

    fn ids(&self, call: usize) -> Vec<String> {
        self.calls.lock().expect("not poisoned")[call]
            .iter()
            .map(|(id, _)| id.clone())
            .collect()
    }
}

fn refused(id: &str, sender_fault: bool, code: &str) -> BatchResultErrorEntry {
    BatchResultErrorEntry::builder()
        .id(id)
        .sender_fault(sender_fault)
        .code(code)
        .message("why")
        .build()
        .expect("id, code and sender_fault are set")
}

/// What [`Retrying`] told, as text.
fn heard(event: Retrying<'_, char>) -> String {
    match event {
        Retrying::Call {
            error,
            attempt,
            pending,
        } => format!("call {attempt} ({pending}): {error}"),
        Retrying::Entry { entry, reason } => format!("entry {entry}: {reason}"),
    }
}

async fn run(fake: &Fake, entries: &str) -> (Vec<(char, String)>, Vec<String>) {
    let entries: Vec<char> = entries.chars().collect();
    let mut events = Vec::new();
    let failed = RETRY
        .run(&entries, |e| fake.call(e), |r| events.push(heard(r)))
        .await;
    (failed, events)
}

#[tokio::test(start_paused = true)]
async fn a_batch_that_is_accepted_is_sent_once() {
    let fake = Fake::new(vec![]);
    let started = Instant::now();
    let (failed, events) = run(&fake, "abc").await;
    assert!(failed.is_empty());
    assert!(events.is_empty());
    assert_eq!(fake.sent(), vec!["abc"]);
    assert_eq!(fake.ids(0), vec!["0", "1", "2"]);
    assert_eq!(started.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn only_the_entries_refused_through_no_fault_of_ours_go_again() {
    let fake = Fake::new(vec![Ok(vec![refused("1", false, "InternalError")])]);
    let (failed, events) = run(&fake, "abc").await;
    assert!(failed.is_empty(), "{failed:?}");
    assert_eq!(fake.sent(), vec!["abc", "b"]);
    assert_eq!(fake.ids(1), vec!["1"], "an entry keeps its id");
    assert_eq!(events, vec!["entry b: InternalError: why"]);
}

#[tokio::test(start_paused = true)]
async fn a_sender_fault_is_returned_at_once_and_never_retried() {
    let fake = Fake::new(vec![Ok(vec![
        refused("0", true, "InvalidParameterValue"),
        refused("2", false, "ServiceUnavailable"),
    ])]);
    let (failed, events) = run(&fake, "abc").await;
    assert_eq!(failed, vec![('a', "InvalidParameterValue: why".to_owned())]);
    assert_eq!(fake.sent(), vec!["abc", "c"]);
    assert_eq!(events, vec!["entry c: ServiceUnavailable: why"]);
}

#[tokio::test(start_paused = true)]
async fn an_entry_refused_every_time_is_returned_after_the_last_try() {
    let always = || Ok(vec![refused("0", false, "InternalError")]);
    let fake = Fake::new(vec![always(), always(), always()]);
    let started = Instant::now();
    let (failed, events) = run(&fake, "ab").await;
    assert_eq!(failed, vec![('a', "InternalError: why".to_owned())]);
    assert_eq!(fake.sent(), vec!["ab", "a", "a"]);
    // Told of the two retries only: the third refusal is the answer.
    assert_eq!(events.len(), 2);
    // Two delays of 100 ms and 200 ms, each with up to as much again of jitter; none after
    // the last try.
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(300) && waited < Duration::from_millis(600),
        "{waited:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_call_that_fails_as_a_whole_retries_every_entry() {
    let fake = Fake::new(vec![Err("timeout".into()), Ok(vec![])]);
    let (failed, events) = run(&fake, "ab").await;
    assert!(failed.is_empty());
    assert_eq!(fake.sent(), vec!["ab", "ab"]);
    assert_eq!(events, vec!["call 1 (2): timeout"]);
}

#[tokio::test(start_paused = true)]
async fn calls_that_keep_failing_return_every_entry_with_the_last_error() {
    let fake = Fake::new(vec![
        Ok(vec![refused("1", false, "InternalError")]),
        Err("first".into()),
        Err("last".into()),
    ]);
    let (failed, events) = run(&fake, "ab").await;
    assert_eq!(failed, vec![('b', "last".to_owned())]);
    assert_eq!(fake.sent(), vec!["ab", "b", "b"]);
    assert_eq!(
        events,
        vec!["entry b: InternalError: why", "call 2 (1): first"]
    );
}

#[tokio::test(start_paused = true)]
async fn failures_name_only_entries_of_the_call() {
    let fake = Fake::new(vec![Ok(vec![refused("7", false, "InternalError")])]);
    let (failed, events) = run(&fake, "ab").await;
    assert!(failed.is_empty());
    assert!(events.is_empty());
    assert_eq!(fake.sent(), vec!["ab"]);
}

#[tokio::test(start_paused = true)]
async fn entries_go_in_calls_of_at_most_ten_in_order() {
    let fake = Fake::new(vec![
        Ok(vec![]),
        Ok(vec![refused("0", true, "InvalidParameterValue")]),
    ]);
    let (failed, _) = run(&fake, "abcdefghijklmnopqrstuvwxy").await;
    assert_eq!(fake.sent(), vec!["abcdefghij", "klmnopqrst", "uvwxy"]);
    assert_eq!(fake.ids(1)[0], "0", "ids are unique within a call");
    assert_eq!(failed, vec![('k', "InvalidParameterValue: why".to_owned())]);
}

#[tokio::test(start_paused = true)]
async fn no_tries_still_means_one_call() {
    let fake = Fake::new(vec![Err("down".into())]);
    let retry = BatchRetry { tries: 0, ..RETRY };
    let failed = retry.run(&['a'], |e| fake.call(e), |_| {}).await;
    assert_eq!(failed, vec![('a', "down".to_owned())]);
    assert_eq!(fake.sent(), vec!["a"]);
}

#[test]
fn a_call_answers_its_failed_list_or_its_whole_error() {
    use aws_sdk_sqs::operation::delete_message_batch::DeleteMessageBatchError;
    let out = DeleteMessageBatchOutput::builder()
        .set_successful(Some(Vec::new()))
        .failed(refused("3", false, "InternalError"))
        .build()
        .expect("successful and failed are set");
    let failed = failed_entries::<_, DeleteMessageBatchError, ()>(Ok(out)).expect("a 200 answer");
    assert_eq!(failed, vec![refused("3", false, "InternalError")]);
    let down = SdkError::<DeleteMessageBatchError, ()>::construction_failure("no region");
    let error = failed_entries::<DeleteMessageBatchOutput, _, _>(Err(down)).expect_err("failed");
    assert!(
        error.starts_with("failed to construct request: no region"),
        "{error}"
    );
}
