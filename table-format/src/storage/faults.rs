//! A fault-injecting [`ObjectStore`] wrapper for tests: fail the Nth call or a random
//! fraction of calls, add latency, hang and time out, and, for put-if-absent, report
//! a failure after the write actually happened (the ambiguous commit).
//!
//! ```
//! # use std::sync::Arc;
//! # use shoal_format::storage::faults::{FaultyStore, Faults, Op, Trigger, Fault};
//! let faults = Faults::new(7);
//! faults.add(Op::Create, Trigger::Nth(1), Fault::FailAfterWrite);
//! let store = FaultyStore::new(Arc::new(object_store::memory::InMemory::new()), faults.clone());
//! # let _ = store;
//! ```

use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMode, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions,
};

/// The kind of request a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Any request.
    Any,
    /// A plain (overwriting) put or a multipart upload.
    Put,
    /// A put-if-absent (`PutMode::Create`): a commit.
    Create,
    Get,
    Head,
    List,
    Delete,
    Copy,
}

/// When a rule fires.
#[derive(Debug, Clone, Copy)]
pub enum Trigger {
    /// On the Nth matching call (1-based).
    Nth(u64),
    /// On every matching call from the Nth on.
    From(u64),
    /// On a random fraction of matching calls (seeded, so runs repeat).
    Fraction(f64),
}

/// What a firing rule does.
#[derive(Debug, Clone, Copy)]
pub enum Fault {
    /// The request fails without reaching the store (like a 503).
    Fail,
    /// The request waits this long, then fails as a timeout without reaching the store.
    Timeout(Duration),
    /// The request reaches the store and succeeds there, then the caller is told it
    /// failed (a lost response). For reads this is the same as [`Fault::Fail`] after
    /// the read.
    FailAfterWrite,
    /// The request is delayed, then runs normally.
    Latency(Duration),
    /// The request fails with a permanent error (permission denied).
    Deny,
}

#[derive(Debug)]
struct Rule {
    op: Op,
    trigger: Trigger,
    fault: Fault,
    seen: u64,
}

#[derive(Debug)]
struct State {
    rules: Vec<Rule>,
    rng: u64,
    injected: u64,
    calls: u64,
}

/// The fault plan shared by a test and its stores; rules can change while they run.
#[derive(Debug, Clone)]
pub struct Faults(Arc<Mutex<State>>);

impl Faults {
    /// An empty plan (no faults) with a seed for the random fractions.
    pub fn new(seed: u64) -> Self {
        Faults(Arc::new(Mutex::new(State {
            rules: Vec::new(),
            rng: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            injected: 0,
            calls: 0,
        })))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A test that panicked while holding the lock poisoned it; the plan is still usable.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds a rule; rules are checked in order, the first that fires wins.
    pub fn add(&self, op: Op, trigger: Trigger, fault: Fault) -> &Self {
        self.state().rules.push(Rule {
            op,
            trigger,
            fault,
            seen: 0,
        });
        self
    }

    /// Removes every rule.
    pub fn clear(&self) {
        self.state().rules.clear();
    }

    /// How many faults were injected so far.
    pub fn injected(&self) -> u64 {
        self.state().injected
    }

    /// How many requests went through the stores of this plan.
    pub fn calls(&self) -> u64 {
        self.state().calls
    }

    fn decide(&self, op: Op) -> Option<Fault> {
        let mut st = self.state();
        st.calls += 1;
        let mut fired = None;
        for i in 0..st.rules.len() {
            let rule = &mut st.rules[i];
            if rule.op != Op::Any && rule.op != op {
                continue;
            }
            rule.seen += 1;
            let seen = rule.seen;
            let (trigger, fault) = (rule.trigger, rule.fault);
            let fires = match trigger {
                Trigger::Nth(n) => seen == n,
                Trigger::From(n) => seen >= n,
                Trigger::Fraction(f) => next_unit(&mut st.rng) < f,
            };
            if fires && fired.is_none() {
                fired = Some(fault);
            }
        }
        if fired.is_some() {
            st.injected += 1;
        }
        fired
    }
}

/// xorshift64*: a tiny deterministic generator, in [0, 1).
fn next_unit(state: &mut u64) -> f64 {
    let mut x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
}

/// The error an injected fault returns: a transient one, as a 503 or a timeout would be.
#[derive(Debug)]
pub struct InjectedFault {
    op: Op,
    path: String,
    what: &'static str,
}

impl fmt::Display for InjectedFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "injected fault: {:?} `{}` {}",
            self.op, self.path, self.what
        )
    }
}

impl std::error::Error for InjectedFault {}

fn injected(op: Op, path: &Path, what: &'static str) -> object_store::Error {
    object_store::Error::Generic {
        store: "FaultyStore",
        source: Box::new(InjectedFault {
            op,
            path: path.to_string(),
            what,
        }),
    }
}

/// An [`ObjectStore`] that injects the faults of a [`Faults`] plan into another store.
#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    faults: Faults,
}

impl FaultyStore {
    pub fn new(inner: Arc<dyn ObjectStore>, faults: Faults) -> Self {
        FaultyStore { inner, faults }
    }

    /// Applies the faults that act before the request: failures, timeouts, latency.
    /// Returns whether the request must fail after it ran.
    async fn before(&self, op: Op, path: &Path) -> object_store::Result<bool> {
        match self.faults.decide(op) {
            None => Ok(false),
            Some(Fault::Fail) => Err(injected(op, path, "failed (service unavailable)")),
            Some(Fault::Timeout(d)) => {
                tokio::time::sleep(d).await;
                Err(injected(op, path, "timed out"))
            }
            Some(Fault::Latency(d)) => {
                tokio::time::sleep(d).await;
                Ok(false)
            }
            Some(Fault::FailAfterWrite) => Ok(true),
            Some(Fault::Deny) => Err(object_store::Error::PermissionDenied {
                path: path.to_string(),
                source: Box::new(InjectedFault {
                    op,
                    path: path.to_string(),
                    what: "denied",
                }),
            }),
        }
    }

    async fn around<T>(
        &self,
        op: Op,
        path: &Path,
        request: impl std::future::Future<Output = object_store::Result<T>>,
    ) -> object_store::Result<T> {
        let fail_after = self.before(op, path).await?;
        let out = request.await?;
        if fail_after {
            return Err(injected(
                op,
                path,
                "failed after it was done (response lost)",
            ));
        }
        Ok(out)
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        let op = if matches!(opts.mode, PutMode::Create) {
            Op::Create
        } else {
            Op::Put
        };
        self.around(op, location, self.inner.put_opts(location, payload, opts))
            .await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.around(
            Op::Put,
            location,
            self.inner.put_multipart_opts(location, opts),
        )
        .await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let op = if options.head { Op::Head } else { Op::Get };
        self.around(op, location, self.inner.get_opts(location, options))
            .await
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[Range<u64>],
    ) -> object_store::Result<Vec<Bytes>> {
        self.around(Op::Get, location, self.inner.get_ranges(location, ranges))
            .await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let faults = self.faults.clone();
        let checked = locations.map(move |p| {
            let p = p?;
            match faults.decide(Op::Delete) {
                Some(Fault::Fail | Fault::Timeout(_) | Fault::Deny) => {
                    Err(injected(Op::Delete, &p, "failed (service unavailable)"))
                }
                _ => Ok(p),
            }
        });
        self.inner.delete_stream(checked.boxed())
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let at = prefix.cloned().unwrap_or_default();
        match self.faults.decide(Op::List) {
            Some(Fault::Fail | Fault::Timeout(_) | Fault::FailAfterWrite | Fault::Deny) => {
                futures::stream::once(async move { Err(injected(Op::List, &at, "failed")) }).boxed()
            }
            _ => self.inner.list(prefix),
        }
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let at = prefix.cloned().unwrap_or_default();
        match self.faults.decide(Op::List) {
            Some(Fault::Fail | Fault::Timeout(_) | Fault::FailAfterWrite | Fault::Deny) => {
                futures::stream::once(async move { Err(injected(Op::List, &at, "failed")) }).boxed()
            }
            _ => self.inner.list_with_offset(prefix, offset),
        }
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let at = prefix.cloned().unwrap_or_default();
        self.around(Op::List, &at, self.inner.list_with_delimiter(prefix))
            .await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.around(Op::Copy, to, self.inner.copy_opts(from, to, options))
            .await
    }

    async fn rename_opts(
        &self,
        from: &Path,
        to: &Path,
        options: RenameOptions,
    ) -> object_store::Result<()> {
        self.around(Op::Copy, to, self.inner.rename_opts(from, to, options))
            .await
    }
}
