//! `delivery = "transactional"` (Apache Kafka): the outputs of one checkpoint epoch
//! go out in one Kafka transaction that commits together with the checkpoint, in
//! two phases — (1) write the checkpoint marked *prepared* with the source offsets
//! it expects to be visible, (2) commit the transaction, (3) mark the checkpoint
//! *committed*, (4) begin the next transaction. A crash between (1) and (3) leaves
//! a prepared checkpoint whose transaction may or may not have committed; on start
//! [`resolve`] decides from what a `read_committed` tail read sees.
//!
//! The state machine is generic over the two side effects so its failure handling
//! is unit-tested against simulated failures; `run` drives it with rdkafka's
//! transactional producer and the checkpoint store.

use crate::error::{Error, Result};

/// A checkpoint's transaction mark (stored in its manifest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TxnMark {
    pub committed: bool,
    /// Highest source offsets this epoch published to the prediction and
    /// dead-letter topics (`None`: nothing) — visible iff the transaction committed.
    pub expect: [Option<i64>; 2],
}

/// The transactional producer's side.
#[allow(async_fn_in_trait)]
pub trait Transactions {
    async fn begin(&mut self) -> Result<()>;
    async fn commit(&mut self) -> Result<()>;
    async fn abort(&mut self) -> Result<()>;
}

/// The checkpoint side: write every owned partition's checkpoint as prepared, then
/// mark them committed (or discard them when the commit failed).
#[allow(async_fn_in_trait)]
pub trait PreparedCheckpoints {
    async fn write_prepared(&mut self) -> Result<()>;
    async fn mark_committed(&mut self) -> Result<()>;
    async fn discard_prepared(&mut self) -> Result<()>;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// No transaction open (before start, or after a failure stopped the daemon).
    Idle,
    /// A transaction is open and outputs may be sent.
    Open,
}

pub struct Coordinator {
    pub phase: Phase,
}

impl Default for Coordinator {
    fn default() -> Self {
        Coordinator { phase: Phase::Idle }
    }
}

impl Coordinator {
    pub async fn start<T: Transactions>(&mut self, tx: &mut T) -> Result<()> {
        tx.begin().await?;
        self.phase = Phase::Open;
        Ok(())
    }

    /// One commit: prepared checkpoints → commit → committed marks → next
    /// transaction. Every output sent so far must be acknowledged. On any failure
    /// the transaction is left aborted (or unresolved, for `resolve` on the next
    /// start) and the error returned: the daemon stops rather than continuing
    /// without the guarantee.
    pub async fn commit<T: Transactions, C: PreparedCheckpoints>(&mut self, tx: &mut T, ck: &mut C) -> Result<()> {
        if self.phase != Phase::Open {
            return Err(Error::Internal("transactional commit without an open transaction".into()));
        }
        if let Err(e) = ck.write_prepared().await {
            self.phase = Phase::Idle;
            let _ = tx.abort().await;
            return Err(e);
        }
        if let Err(e) = tx.commit().await {
            self.phase = Phase::Idle;
            // The outputs are aborted: the prepared checkpoints must not be used.
            // If discarding fails too, `resolve` finds them unmarked on the next start
            // and sees that their outputs are not visible.
            let _ = tx.abort().await;
            let _ = ck.discard_prepared().await;
            return Err(e);
        }
        // Committed. If marking fails, the next start resolves the prepared
        // checkpoints as committed (their outputs are visible).
        if let Err(e) = ck.mark_committed().await {
            self.phase = Phase::Idle;
            return Err(e);
        }
        tx.begin().await.inspect_err(|_| self.phase = Phase::Idle)?;
        Ok(())
    }
}

/// Whether a prepared checkpoint's transaction committed, given the highest source
/// offsets a `read_committed` tail read sees in the two output topics.
pub fn resolve(mark: &TxnMark, visible: [Option<i64>; 2]) -> bool {
    mark.committed || mark.expect.iter().zip(visible).all(|(want, seen)| match want {
        None => true,
        Some(w) => seen.is_some_and(|s| s >= *w),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fake broker and store that record what happened and fail on request.
    #[derive(Default)]
    struct World {
        log: Vec<&'static str>,
        fail: Option<&'static str>,
        /// What a restart would find.
        visible_committed: bool,
        prepared: bool,
        marked: bool,
    }

    impl World {
        fn step(&mut self, what: &'static str) -> Result<()> {
            self.log.push(what);
            if self.fail == Some(what) {
                return Err(Error::Checkpoint(format!("simulated failure at {what}")));
            }
            Ok(())
        }
    }

    struct Tx<'a>(&'a std::cell::RefCell<World>);
    struct Ck<'a>(&'a std::cell::RefCell<World>);

    impl Transactions for Tx<'_> {
        async fn begin(&mut self) -> Result<()> {
            self.0.borrow_mut().step("begin")
        }
        async fn commit(&mut self) -> Result<()> {
            let mut w = self.0.borrow_mut();
            w.step("commit")?;
            w.visible_committed = true;
            Ok(())
        }
        async fn abort(&mut self) -> Result<()> {
            self.0.borrow_mut().step("abort")
        }
    }

    impl PreparedCheckpoints for Ck<'_> {
        async fn write_prepared(&mut self) -> Result<()> {
            let mut w = self.0.borrow_mut();
            w.step("prepare")?;
            w.prepared = true;
            Ok(())
        }
        async fn mark_committed(&mut self) -> Result<()> {
            let mut w = self.0.borrow_mut();
            w.step("mark")?;
            w.marked = true;
            Ok(())
        }
        async fn discard_prepared(&mut self) -> Result<()> {
            let mut w = self.0.borrow_mut();
            w.step("discard")?;
            w.prepared = false;
            Ok(())
        }
    }

    fn run(fail: Option<&'static str>) -> (Result<()>, World, Phase) {
        let w = std::cell::RefCell::new(World { fail, ..Default::default() });
        let mut c = Coordinator::default();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let r = rt.block_on(async {
            c.start(&mut Tx(&w)).await?;
            c.commit(&mut Tx(&w), &mut Ck(&w)).await
        });
        (r, w.into_inner(), c.phase)
    }

    /// What a restart concludes about the newest checkpoint: used (committed) or not.
    /// It must be used exactly when its outputs are visible.
    fn restart_uses_checkpoint(w: &World) -> bool {
        if !w.prepared {
            return false;
        }
        let mark = TxnMark { committed: w.marked, expect: [Some(41), None] };
        let visible = if w.visible_committed { [Some(41), None] } else { [Some(17), None] };
        resolve(&mark, visible)
    }

    #[test]
    fn happy_path_order() {
        let (r, w, phase) = run(None);
        r.unwrap();
        assert_eq!(w.log, ["begin", "prepare", "commit", "mark", "begin"]);
        assert_eq!(phase, Phase::Open);
        assert!(restart_uses_checkpoint(&w));
    }

    /// For each step that can fail, the daemon stops with the error, and a restart
    /// uses the new checkpoint exactly when its transaction's outputs are visible —
    /// never a checkpoint past outputs that were aborted (loss), never an old one
    /// when they were committed (that would be caught by the tail read, but the
    /// state machine must not rely on it).
    #[test]
    fn every_failure_leaves_checkpoint_and_outputs_consistent() {
        for step in ["prepare", "commit", "mark", "discard"] {
            let fail = if step == "discard" { Some("discard") } else { Some(step) };
            // "discard" only runs when the commit failed: simulate both.
            let (r, w, phase) = if step == "discard" {
                let w = std::cell::RefCell::new(World { fail: Some("commit"), ..Default::default() });
                let mut c = Coordinator::default();
                let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
                let r = rt.block_on(async {
                    c.start(&mut Tx(&w)).await?;
                    // The discard also fails: the checkpoint stays prepared, unmarked.
                    struct CkFailDiscard<'a>(&'a std::cell::RefCell<World>);
                    impl PreparedCheckpoints for CkFailDiscard<'_> {
                        async fn write_prepared(&mut self) -> Result<()> {
                            Ck(self.0).write_prepared().await
                        }
                        async fn mark_committed(&mut self) -> Result<()> {
                            Ck(self.0).mark_committed().await
                        }
                        async fn discard_prepared(&mut self) -> Result<()> {
                            self.0.borrow_mut().log.push("discard");
                            Err(Error::Checkpoint("disk gone".into()))
                        }
                    }
                    c.commit(&mut Tx(&w), &mut CkFailDiscard(&w)).await
                });
                (r, w.into_inner(), c.phase)
            } else {
                run(fail)
            };
            assert!(r.is_err(), "{step}: the error must stop the daemon");
            assert_eq!(phase, Phase::Idle, "{step}");
            assert_eq!(restart_uses_checkpoint(&w), w.visible_committed, "{step}: log {:?}", w.log);
        }
    }

    #[test]
    fn resolution_rule() {
        let m = TxnMark { committed: false, expect: [Some(10), Some(3)] };
        assert!(resolve(&m, [Some(10), Some(3)]));
        assert!(resolve(&m, [Some(12), Some(3)]), "later outputs (a newer epoch) imply this one committed");
        assert!(!resolve(&m, [Some(10), None]));
        assert!(!resolve(&m, [Some(9), Some(3)]));
        assert!(resolve(&TxnMark { committed: false, expect: [None, None] }, [None, None]), "an epoch without outputs");
        assert!(resolve(&TxnMark { committed: true, expect: [Some(5), None] }, [None, None]));
    }
}
