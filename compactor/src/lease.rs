//! Table leases: at most one compactor works on a table at a time, across processes,
//! with nothing but put-if-absent from the store.
//!
//! A lease is a sequence of objects `_shoal/compactor/lease-<generation>.json` inside the
//! table. The newest generation speaks: held by its owner until `expires_ms`, unless
//! `released`. Taking, renewing and releasing a lease all create the next generation
//! with put-if-absent, so of two compactors racing for a table exactly one wins, and a
//! holder that stalled past its expiry learns on its next renewal that it lost the
//! lease. (Compaction commits stay safe without the lease — the commit protocol
//! rejects conflicting rewrites — the lease only keeps two compactors from doing the
//! same work twice.) Expiry compares wall clocks: keep the hosts' clocks in sync to
//! well within the lease TTL.
//!
//! The lease also carries the table's maintenance state (when VACUUM and log cleanup
//! last ran), so every compactor, and every `--once` run from cron, sees it.

use std::time::Duration;

use bytes::Bytes;
use object_store::path::Path;
use serde::{Deserialize, Serialize};
use shoal_format::storage::PutOutcome;
use shoal_format::TableStore;

use crate::CompactorError;

/// Maintenance state shared by every compactor of a table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TableState {
    #[serde(default)]
    pub last_vacuum_ms: Option<i64>,
    #[serde(default)]
    pub last_log_cleanup_ms: Option<i64>,
    #[serde(default)]
    pub last_success_ms: Option<i64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LeaseRecord {
    owner: String,
    acquired_ms: i64,
    expires_ms: i64,
    #[serde(default)]
    released: bool,
    #[serde(default)]
    state: TableState,
}

/// A held lease.
#[derive(Debug)]
pub struct Lease {
    store: TableStore,
    owner: String,
    generation: u64,
    ttl: Duration,
    acquired_ms: i64,
    /// The table's maintenance state; written back on release.
    pub state: TableState,
}

/// The outcome of trying to take a lease.
#[derive(Debug)]
pub enum Acquire {
    Acquired(Lease),
    /// Another compactor holds it.
    Busy {
        owner: String,
        expires_ms: i64,
    },
}

fn lease_dir(store: &TableStore) -> Path {
    store.root().clone().join("_shoal").join("compactor")
}

fn lease_path(store: &TableStore, generation: u64) -> Path {
    lease_dir(store).join(format!("lease-{generation:020}.json"))
}

fn generation_of(name: &str) -> Option<u64> {
    name.strip_prefix("lease-")?
        .strip_suffix(".json")?
        .parse()
        .ok()
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// The newest lease generation and its record.
async fn newest(store: &TableStore) -> Result<Option<(u64, LeaseRecord)>, CompactorError> {
    // A concurrent cleanup may delete the newest-but-one between listing and reading;
    // the newest itself is never deleted, so a second listing settles it.
    for _ in 0..3 {
        let (objects, _) = store.list_dir(&lease_dir(store)).await?;
        let Some(generation) = objects
            .iter()
            .filter_map(|o| o.location.filename().and_then(generation_of))
            .max()
        else {
            return Ok(None);
        };
        let path = lease_path(store, generation);
        if let Some(bytes) = store.get_opt(&path).await? {
            let record: LeaseRecord =
                serde_json::from_slice(&bytes).map_err(|e| CompactorError::CorruptLease {
                    path: path.to_string(),
                    reason: e.to_string(),
                })?;
            return Ok(Some((generation, record)));
        }
    }
    Err(CompactorError::CorruptLease {
        path: lease_dir(store).to_string(),
        reason: "the newest lease keeps vanishing".into(),
    })
}

impl Lease {
    /// Takes the table's lease for `ttl` unless another owner holds an unexpired one.
    pub async fn acquire(
        store: &TableStore,
        owner: &str,
        ttl: Duration,
    ) -> Result<Acquire, CompactorError> {
        let now = now_ms();
        let current = newest(store).await?;
        let (next, state) = match &current {
            Some((generation, record)) => {
                if !record.released && record.expires_ms > now && record.owner != owner {
                    return Ok(Acquire::Busy {
                        owner: record.owner.clone(),
                        expires_ms: record.expires_ms,
                    });
                }
                (generation + 1, record.state.clone())
            }
            None => (1, TableState::default()),
        };
        let mut lease = Lease {
            store: store.clone(),
            owner: owner.to_string(),
            generation: next - 1,
            ttl,
            acquired_ms: now,
            state,
        };
        match lease.write_next(false).await? {
            PutOutcome::Created => {
                lease.forget_old().await;
                Ok(Acquire::Acquired(lease))
            }
            PutOutcome::AlreadyExists => {
                // Someone else took (or renewed) it in the meantime.
                let (owner, expires_ms) = match newest(store).await? {
                    Some((_, r)) => (r.owner, r.expires_ms),
                    None => (String::from("unknown"), now),
                };
                Ok(Acquire::Busy { owner, expires_ms })
            }
        }
    }

    /// Extends the lease by its TTL; fails if another compactor took it over.
    pub async fn renew(&mut self) -> Result<(), CompactorError> {
        match self.write_next(false).await? {
            PutOutcome::Created => {
                self.forget_old().await;
                Ok(())
            }
            PutOutcome::AlreadyExists => Err(CompactorError::LeaseLost {
                table: self.store.uri().to_string(),
            }),
        }
    }

    /// Gives the lease up, saving the table state. Best effort: an unreleased lease
    /// simply expires.
    pub async fn release(mut self) -> Result<(), CompactorError> {
        match self.write_next(true).await? {
            PutOutcome::Created => {
                self.forget_old().await;
                Ok(())
            }
            PutOutcome::AlreadyExists => Err(CompactorError::LeaseLost {
                table: self.store.uri().to_string(),
            }),
        }
    }

    pub fn owner(&self) -> &str {
        &self.owner
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    async fn write_next(&mut self, released: bool) -> Result<PutOutcome, CompactorError> {
        let now = now_ms();
        let record = LeaseRecord {
            owner: self.owner.clone(),
            acquired_ms: self.acquired_ms,
            expires_ms: if released {
                now
            } else {
                now + self.ttl.as_millis() as i64
            },
            released,
            state: self.state.clone(),
        };
        let body = serde_json::to_vec(&record).map_err(|e| CompactorError::CorruptLease {
            path: lease_dir(&self.store).to_string(),
            reason: e.to_string(),
        })?;
        let next = self.generation + 1;
        let outcome = self
            .store
            .put_if_absent(&lease_path(&self.store, next), Bytes::from(body))
            .await?;
        if outcome == PutOutcome::Created {
            self.generation = next;
        }
        Ok(outcome)
    }

    /// Deletes generations older than the previous one (best effort).
    async fn forget_old(&self) {
        let Ok((objects, _)) = self.store.list_dir(&lease_dir(&self.store)).await else {
            return;
        };
        for o in objects {
            if let Some(g) = o.location.filename().and_then(generation_of) {
                if g + 1 < self.generation {
                    let _ = self.store.delete(&o.location).await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(dir: &std::path::Path) -> TableStore {
        TableStore::from_uri(dir.to_str().unwrap()).unwrap()
    }

    #[tokio::test]
    async fn one_holder_at_a_time_and_state_carries_over() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let ttl = Duration::from_secs(60);
        let Acquire::Acquired(mut a) = Lease::acquire(&s, "a", ttl).await.unwrap() else {
            panic!("a should get the free lease")
        };
        match Lease::acquire(&s, "b", ttl).await.unwrap() {
            Acquire::Busy { owner, .. } => assert_eq!(owner, "a"),
            Acquire::Acquired(_) => panic!("b must not get a held lease"),
        }
        a.renew().await.unwrap();
        a.state.last_vacuum_ms = Some(42);
        a.release().await.unwrap();
        let Acquire::Acquired(b) = Lease::acquire(&s, "b", ttl).await.unwrap() else {
            panic!("b should get a released lease")
        };
        assert_eq!(b.state.last_vacuum_ms, Some(42));
        // Old generations are cleaned up as the lease moves on.
        let (objects, _) = s.list_dir(&lease_dir(&s)).await.unwrap();
        assert!(objects.len() <= 2, "{objects:?}");
    }

    #[tokio::test]
    async fn an_expired_lease_is_taken_over_and_its_holder_learns_it() {
        let dir = tempfile::tempdir().unwrap();
        let s = store(dir.path());
        let Acquire::Acquired(mut a) = Lease::acquire(&s, "a", Duration::from_millis(1))
            .await
            .unwrap()
        else {
            panic!()
        };
        tokio::time::sleep(Duration::from_millis(10)).await;
        let Acquire::Acquired(_b) = Lease::acquire(&s, "b", Duration::from_secs(60))
            .await
            .unwrap()
        else {
            panic!("an expired lease is free")
        };
        assert!(matches!(
            a.renew().await,
            Err(CompactorError::LeaseLost { .. })
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn racing_acquirers_have_exactly_one_winner() {
        for round in 0..5 {
            let dir = tempfile::tempdir().unwrap();
            let s = store(dir.path());
            let tasks: Vec<_> = (0..8)
                .map(|i| {
                    let s = s.clone();
                    tokio::spawn(async move {
                        Lease::acquire(&s, &format!("c{i}"), Duration::from_secs(60)).await
                    })
                })
                .collect();
            let mut winners = 0;
            for t in tasks {
                if let Acquire::Acquired(_) = t.await.unwrap().unwrap() {
                    winners += 1;
                }
            }
            assert_eq!(winners, 1, "round {round}");
        }
    }
}
