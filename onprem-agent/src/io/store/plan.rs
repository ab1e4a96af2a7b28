//! What one write does with each incoming receipt, decided from content fingerprints before any
//! row is touched: insert it, replace the stored version, skip it as a duplicate, or refuse it
//! as a conflict (`[write] on_conflict`). Pure logic; `store` runs the SQL it asks for.
//!
//! Keeps the guarantee "Conflicting content is never silent": other content under a stored id is
//! told from a duplicate here, by its fingerprint, and follows `[write] on_conflict`.
//!
//! A receipt is compared with the version that is current when it comes: the stored row, or
//! an earlier receipt of the same batch with that id. Same fingerprint: a quiet duplicate. A
//! stored row written before fingerprints existed (NULL) cannot be compared and is taken as
//! the same content: a quiet duplicate.

use std::collections::hash_map::Entry;

use sluice_protocol::Fingerprint;

use crate::config::OnConflict;

use super::{IdMap, IdSet, Row};

/// The actions of one write, as indexes into the rows given.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Plan {
    /// Rows to insert (ids not stored), in row order.
    pub inserts: Vec<usize>,
    /// Rows whose content replaces the stored row of their id, in row order.
    pub updates: Vec<usize>,
    /// Rows that replaced another version (stored, or earlier in the batch): `updated`, in
    /// row order.
    pub replaced: Vec<usize>,
    /// Rows refused, with the fingerprint of the version they differ from.
    pub conflicts: Vec<(usize, Fingerprint)>,
    /// Rows counted as stored: each row that became the version to write (a new id, or a
    /// replacement), in row order. The others are duplicates or conflicts.
    pub stored: Vec<usize>,
}

/// Where the current version of one id stands while the batch is planned.
struct Slot {
    /// Its fingerprint; `None` for a stored row without one.
    current: Option<Fingerprint>,
    /// The row that will be written for this id, if any.
    target: Option<Target>,
}

#[derive(Clone, Copy)]
enum Target {
    Insert(usize),
    Update(usize),
}

/// Plans `rows` (with `fps[i]` the fingerprint of `rows[i]`) against `stored`, the stored
/// fingerprint of every id among them that is stored.
pub(super) fn resolve(
    rows: &[Row<'_>],
    fps: &[Fingerprint],
    stored: &IdMap<String, Option<Fingerprint>>,
    policy: OnConflict,
) -> Plan {
    let mut plan = Plan::default();
    let mut slots: IdMap<&str, Slot> =
        IdMap::with_capacity_and_hasher(rows.len(), Default::default());
    // A version already refused: the same content again (a chunk delivered twice) is one
    // conflict, not two.
    let mut refused: IdSet<(&str, Fingerprint)> = IdSet::default();
    for (i, (row, fp)) in rows.iter().zip(fps).enumerate() {
        let id = row.receipt.receipt_id.as_str();
        let slot = match slots.entry(id) {
            Entry::Occupied(e) => e.into_mut(),
            Entry::Vacant(e) => match stored.get(id) {
                Some(current) => e.insert(Slot {
                    current: *current,
                    target: None,
                }),
                None => {
                    plan.stored.push(i);
                    e.insert(Slot {
                        current: Some(*fp),
                        target: Some(Target::Insert(i)),
                    });
                    continue;
                }
            },
        };
        let Some(current) = slot.current else {
            continue; // stored before fingerprints: a quiet duplicate
        };
        if current == *fp || refused.contains(&(id, *fp)) {
            continue;
        }
        match policy {
            OnConflict::Ignore => {}
            OnConflict::Reject => {
                refused.insert((id, *fp));
                plan.conflicts.push((i, current));
            }
            OnConflict::Update => {
                slot.current = Some(*fp);
                slot.target = Some(match slot.target {
                    Some(Target::Insert(_)) => Target::Insert(i),
                    _ => Target::Update(i),
                });
                plan.replaced.push(i);
                plan.stored.push(i);
            }
        }
    }
    let mut targets: Vec<Target> = slots.into_values().filter_map(|s| s.target).collect();
    targets.sort_by_key(|t| match t {
        Target::Insert(i) | Target::Update(i) => *i,
    });
    for t in targets {
        match t {
            Target::Insert(i) => plan.inserts.push(i),
            Target::Update(i) => plan.updates.push(i),
        }
    }
    plan
}

impl Plan {
    /// The plan without every row whose id is in `ids`: what stands when those ids turned out
    /// to be taken at insert time and are planned again, every row of them, in the next round.
    pub(super) fn without(self, rows: &[Row<'_>], ids: &IdSet<&str>) -> Plan {
        if ids.is_empty() {
            return self;
        }
        let keep = |i: &usize| !ids.contains(rows[*i].receipt.receipt_id.as_str());
        let only = |v: Vec<usize>| v.into_iter().filter(keep).collect();
        Plan {
            inserts: only(self.inserts),
            updates: only(self.updates),
            replaced: only(self.replaced),
            conflicts: self
                .conflicts
                .into_iter()
                .filter(|(i, _)| keep(i))
                .collect(),
            stored: only(self.stored),
        }
    }
}

#[cfg(test)]
mod tests {
    use sluice_protocol::Receipt;

    use super::*;

    fn receipt(id: u128, total: &str) -> Receipt {
        let v = serde_json::json!({
            "receipt_id": format!("00000000-0000-4000-8000-{id:012}"),
            "tenant_id": "t", "merchant": "m", "issued_on": "2024-01-01",
            "currency": "EUR", "total": total,
        });
        match Receipt::from_value(&v, 0) {
            Ok(r) => r,
            Err(e) => panic!("invalid fixture: {e:?}"),
        }
    }

    /// `receipts` as the rows of one chunk, with their fingerprints.
    fn rows(receipts: &[Receipt]) -> (Vec<Row<'_>>, Vec<Fingerprint>) {
        let rows = receipts
            .iter()
            .map(|r| Row {
                receipt: r,
                batch_id: "b",
                chunk_index: 0,
                photo: None,
            })
            .collect();
        (rows, receipts.iter().map(Receipt::fingerprint).collect())
    }

    fn plan(receipts: &[Receipt], stored: &[&Receipt], policy: OnConflict) -> Plan {
        let (rows, fps) = rows(receipts);
        let stored = stored
            .iter()
            .map(|r| (r.receipt_id.clone(), Some(r.fingerprint())))
            .collect();
        resolve(&rows, &fps, &stored, policy)
    }

    #[test]
    fn the_same_content_again_is_a_quiet_duplicate_under_every_policy() {
        let a = receipt(1, "12.50");
        let again = receipt(1, "12.5");
        for policy in [OnConflict::Reject, OnConflict::Update, OnConflict::Ignore] {
            assert_eq!(
                plan(std::slice::from_ref(&again), &[&a], policy),
                Plan::default()
            );
            let p = plan(&[a.clone(), again.clone()], &[], policy);
            assert_eq!((p.inserts, p.replaced), (vec![0], vec![]));
        }
    }

    #[test]
    fn other_content_follows_the_policy() {
        let a = receipt(1, "12.50");
        let b = receipt(1, "13.00");
        let p = plan(std::slice::from_ref(&b), &[&a], OnConflict::Reject);
        assert_eq!(p.conflicts, vec![(0, a.fingerprint())]);
        assert!(p.inserts.is_empty() && p.updates.is_empty());
        let p = plan(std::slice::from_ref(&b), &[&a], OnConflict::Update);
        assert_eq!((p.updates, p.replaced), (vec![0], vec![0]));
        assert_eq!(plan(&[b], &[&a], OnConflict::Ignore), Plan::default());
    }

    #[test]
    fn versions_that_differ_within_one_batch_are_conflicts_too() {
        let a = receipt(1, "12.50");
        let b = receipt(1, "13.00");
        let p = plan(&[a.clone(), b.clone(), b.clone()], &[], OnConflict::Reject);
        assert_eq!(p.inserts, vec![0]);
        assert_eq!(
            p.conflicts,
            vec![(1, a.fingerprint())],
            "one conflict per version"
        );
        let p = plan(&[a.clone(), b.clone()], &[], OnConflict::Update);
        assert_eq!(
            (p.inserts, p.replaced),
            (vec![1], vec![1]),
            "the later version is written"
        );
        let p = plan(&[a, b], &[], OnConflict::Ignore);
        assert_eq!((p.inserts, p.conflicts), (vec![0], vec![]));
    }

    #[test]
    fn stored_rows_are_the_new_ids_and_the_replacements() {
        let a = receipt(1, "12.50");
        let b = receipt(1, "13.00");
        let c = receipt(2, "1.00");
        let rows = [a.clone(), b.clone(), c.clone(), c.clone()];
        assert_eq!(plan(&rows, &[], OnConflict::Reject).stored, vec![0, 2]);
        assert_eq!(plan(&rows, &[], OnConflict::Update).stored, vec![0, 1, 2]);
        assert_eq!(plan(&rows, &[&a], OnConflict::Update).stored, vec![1, 2]);
        assert_eq!(plan(&rows, &[&a], OnConflict::Ignore).stored, vec![2]);
    }

    #[test]
    fn a_stored_row_without_a_fingerprint_is_a_quiet_duplicate() {
        let b = receipt(1, "13.00");
        let rows = [Row {
            receipt: &b,
            batch_id: "b",
            chunk_index: 0,
            photo: None,
        }];
        let stored = IdMap::from_iter([(b.receipt_id.clone(), None)]);
        for policy in [OnConflict::Reject, OnConflict::Update] {
            assert_eq!(
                resolve(&rows, &[b.fingerprint()], &stored, policy),
                Plan::default()
            );
        }
    }

    #[test]
    fn without_drops_every_row_of_the_ids_given_and_keeps_the_rest() {
        let a = receipt(1, "12.50");
        let b = receipt(1, "13.00");
        let c = receipt(2, "1.00");
        let receipts = [a.clone(), b, c.clone(), c];
        let (rows, fps) = rows(&receipts);
        for policy in [OnConflict::Reject, OnConflict::Update] {
            let full = resolve(&rows, &fps, &IdMap::default(), policy);
            let taken = IdSet::from_iter([a.receipt_id.as_str()]);
            let rest = resolve(&rows[2..], &fps[2..], &IdMap::default(), policy);
            let shifted = |v: Vec<usize>| v.into_iter().map(|i| i + 2).collect::<Vec<_>>();
            assert_eq!(
                full.without(&rows, &taken),
                Plan {
                    inserts: shifted(rest.inserts),
                    updates: shifted(rest.updates),
                    replaced: shifted(rest.replaced),
                    conflicts: vec![],
                    stored: shifted(rest.stored),
                },
                "{policy:?}"
            );
        }
    }
}
