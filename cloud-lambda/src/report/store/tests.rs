//! [`batch_status`] of items as they are stored: what the status endpoint shows.

use super::*;

fn n(v: u64) -> AttributeValue {
    AttributeValue::N(v.to_string())
}

#[test]
fn a_final_state_is_shown_only_with_its_completed_at() {
    let mut item: Item = [
        ("chunks".to_owned(), n(3)),
        ("chunks_done".to_owned(), n(3)),
        ("stored".to_owned(), n(5)),
    ]
    .into_iter()
    .collect();
    let settling = batch_status("b", &item);
    assert_eq!(settling.state, BatchState::Storing);
    assert_eq!(settling.completed_at, None);
    item.insert("completed_at_ms".to_owned(), n(1_790_000_000_000));
    let done = batch_status("b", &item);
    assert_eq!(done.state, BatchState::Stored);
    assert!(done.completed_at.is_some());
}
