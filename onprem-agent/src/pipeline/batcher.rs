//! Groups decoded messages into batches of up to `max_rows` receipts and `max_bytes` decoded
//! bytes, waiting at most `max_wait` after the first message of a batch. A message is never
//! split across batches, so it can be deleted after exactly one commit; a message larger than
//! either cap is a batch of its own. The byte cap bounds what one transaction copies into its
//! statement, whatever the receipts' size.
//!
//! The batcher ends when its input closes (the pollers stopped) after flushing what it holds.

use std::time::Duration;

use tokio::sync::mpsc;

/// Anything with a row count (and a size in decoded bytes, when it has one).
pub trait Rows {
    fn rows(&self) -> usize;
    fn bytes(&self) -> usize {
        0
    }
}

pub async fn run<T: Rows>(
    mut input: mpsc::Receiver<T>,
    output: mpsc::Sender<Vec<T>>,
    max_rows: usize,
    max_bytes: usize,
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
        let mut bytes = first.bytes();
        let mut batch = vec![first];
        let deadline = tokio::time::Instant::now() + max_wait;
        let mut closed = false;
        while rows < max_rows && bytes < max_bytes {
            tokio::select! {
                m = input.recv() => match m {
                    Some(m) if rows + m.rows() > max_rows || bytes + m.bytes() > max_bytes => {
                        carry = Some(m);
                        break;
                    }
                    Some(m) => { rows += m.rows(); bytes += m.bytes(); batch.push(m); }
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
        run(rx, otx, max_rows, usize::MAX, Duration::from_secs(10)).await;
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
        let task = tokio::spawn(run(rx, otx, 500, usize::MAX, Duration::from_millis(250)));
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

    /// A message of (rows, bytes).
    #[derive(Debug, PartialEq)]
    struct Sized(usize, usize);

    impl Rows for Sized {
        fn rows(&self) -> usize {
            self.0
        }
        fn bytes(&self) -> usize {
            self.1
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_stops_at_max_bytes_and_a_larger_message_goes_alone() {
        let (tx, rx) = mpsc::channel(100);
        let (otx, mut orx) = mpsc::channel(100);
        for (r, b) in [(1, 6), (1, 4), (1, 1), (1, 25), (1, 3)] {
            tx.send(Sized(r, b)).await.expect("open");
        }
        drop(tx);
        run(rx, otx, 500, 10, Duration::from_secs(10)).await;
        let mut sizes = Vec::new();
        while let Some(b) = orx.recv().await {
            sizes.push(b.iter().map(|m| m.1).collect::<Vec<_>>());
        }
        assert_eq!(sizes, vec![vec![6, 4], vec![1], vec![25], vec![3]]);
    }
}
