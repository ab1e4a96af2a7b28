//! Groups decoded messages into batches of up to `max_rows` receipts, waiting at most
//! `max_wait` after the first message of a batch. A message is never split across batches, so
//! it can be deleted after exactly one commit; a message larger than `max_rows` is a batch of
//! its own.
//!
//! The batcher ends when its input closes (the pollers stopped) after flushing what it holds.

use std::time::Duration;

use tokio::sync::mpsc;

/// Anything with a row count.
pub trait Rows {
    fn rows(&self) -> usize;
}

pub async fn run<T: Rows>(
    mut input: mpsc::Receiver<T>,
    output: mpsc::Sender<Vec<T>>,
    max_rows: usize,
    max_wait: Duration,
) {
    let mut carry: Option<T> = None;
    loop {
        let first = match carry.take() {
            Some(m) => m,
            None => match input.recv().await {
                Some(m) => m,
                None => return,
            },
        };
        let mut rows = first.rows();
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + max_wait;
        let mut closed = false;
        while rows < max_rows {
            tokio::select! {
                m = input.recv() => match m {
                    Some(m) if rows + m.rows() > max_rows => { carry = Some(m); break; }
                    Some(m) => { rows += m.rows(); batch.push(m); }
                    None => { closed = true; break; }
                },
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
        if output.send(batch).await.is_err() {
            return;
        }
        if closed && carry.is_none() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    impl Rows for usize {
        fn rows(&self) -> usize {
            *self
        }
    }

    async fn collect(sizes: &[usize], max_rows: usize) -> Vec<Vec<usize>> {
        let (tx, rx) = mpsc::channel(100);
        let (otx, mut orx) = mpsc::channel(100);
        for s in sizes {
            tx.send(*s).await.expect("open");
        }
        drop(tx);
        run(rx, otx, max_rows, Duration::from_secs(10)).await;
        let mut out = Vec::new();
        while let Some(b) = orx.recv().await {
            out.push(b);
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn fills_batches_up_to_max_rows_without_splitting_messages() {
        let out = collect(&[200, 200, 200, 50, 600, 10], 500).await;
        assert_eq!(
            out,
            vec![vec![200, 200], vec![200, 50], vec![600], vec![10]]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn flushes_a_partial_batch_after_max_wait() {
        let (tx, rx) = mpsc::channel(10);
        let (otx, mut orx) = mpsc::channel(10);
        let task = tokio::spawn(run(rx, otx, 500, Duration::from_millis(250)));
        tx.send(10usize).await.expect("open");
        let start = tokio::time::Instant::now();
        let batch = orx.recv().await.expect("a batch");
        assert_eq!(batch, vec![10]);
        assert_eq!(start.elapsed(), Duration::from_millis(250));
        drop(tx);
        task.await.expect("batcher ends");
        assert!(orx.recv().await.is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn flushes_what_it_holds_when_input_closes() {
        let out = collect(&[5, 5], 500).await;
        assert_eq!(out, vec![vec![5, 5]]);
    }
}
