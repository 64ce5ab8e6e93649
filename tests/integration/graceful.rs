//! Graceful hand-offs inside the exactly-once guarantee: members of one consumer
//! group join, leave with SIGTERM and are SIGKILLed while the input keeps arriving;
//! a revoked partition is published, acknowledged and checkpointed before it is
//! released, so the output topics equal a single uninterrupted process's, message
//! for message — with the eager and with the cooperative-sticky protocol.

use std::process::{Command, Stdio};
use std::time::Instant;

use crate::common::*;
use crate::exactly_once::{assert_same_output, copy_input, daemon, input, seeded_broker, PIPELINE, TOPICS};
use crate::telemetry::{free_port, scrape, wait_for};

/// The reference (one uninterrupted process over 16,000 real events) and, on a
/// second broker process, what a consumer group under test needs.
struct Group {
    _ref_broker: Child,
    ref_addr: String,
    /// Predictions and dead letters of the reference.
    want: (usize, usize),
    /// The reference's input, interleaved across partitions so every slice of it
    /// feeds every partition.
    input: Vec<tickflare::source::kafka::ReadMessage>,
    _broker: Child,
    addr: String,
    dir: tempfile::TempDir,
    /// The members' logs, and their metrics addresses.
    logs: tempfile::TempDir,
    members: std::cell::RefCell<Vec<String>>,
}

impl Group {
    fn new() -> Self {
        let lines: Vec<Vec<u8>> = input().into_iter().take(16_000).collect();
        let (_ref_broker, ref_addr) = seeded_broker(&lines);
        let ref_dir = tempfile::tempdir().unwrap();
        let out = daemon(&ref_addr, ref_dir.path(), None).output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let want = (read(&ref_addr, "tick-predictions").len(), read(&ref_addr, "ticks-dlq").len());
        let mut input = read(&ref_addr, "ticks");
        input.sort_by_key(|m| (m.offset, m.partition));
        let (_broker, addr) = broker_process_with(&TOPICS);
        Group { _ref_broker, ref_addr, want, input, _broker, addr, dir: tempfile::tempdir().unwrap(), logs: tempfile::tempdir().unwrap(), members: Default::default() }
    }

    /// A member of consumer group `group` serving metrics on `http`, with short
    /// sessions (6 s) and `env` on top; its log goes to [`Group::log_of`].
    fn member(&self, group: &str, http: &str, env: &[(&str, &str)]) -> Child {
        let log = std::fs::File::create(self.log_of(http)).unwrap();
        self.members.borrow_mut().push(http.to_string());
        let mut c = Command::new(bin());
        c.current_dir(repo())
            .args(["run", PIPELINE, "--group", group, "--brokers", &self.addr, "--metrics-addr", http, "--checkpoint-dir"])
            .arg(self.dir.path())
            .env("TICKFLARE_KAFKA_SESSION_TIMEOUT_MS", "6000")
            .env("TICKFLARE_KAFKA_HEARTBEAT_INTERVAL_MS", "500")
            .env("RUST_LOG", "warn,tickflare=info")
            .env_remove("TICKFLARE_FAULT")
            .stdout(Stdio::null())
            .stderr(log);
        for (k, v) in env {
            c.env(k, v);
        }
        Child(c.spawn().unwrap())
    }

    /// Where the member serving metrics on `http` writes its log.
    fn log_of(&self, http: &str) -> std::path::PathBuf {
        self.logs.path().join(format!("{}.log", http.replace([':', '.'], "_")))
    }

    /// [`wait_for`], printing what each member (metrics address) reports and the
    /// end of its log if it times out, so a failure on a loaded machine says why.
    fn wait<T>(&self, what: &str, secs: u64, f: impl FnMut() -> Option<T>) -> T {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| wait_for(what, secs, f))) {
            Ok(v) => v,
            Err(e) => {
                for http in self.members.borrow().iter() {
                    let log = std::fs::read_to_string(self.log_of(http)).unwrap_or_default();
                    let tail: Vec<&str> = log.lines().rev().take(40).collect();
                    eprintln!("--- member {http}: assigned {:?}; its log's last lines:", assigned(http));
                    for l in tail.iter().rev() {
                        eprintln!("{l}");
                    }
                }
                std::panic::resume_unwind(e)
            }
        }
    }

    /// Predictions and dead letters on the broker under test.
    fn outputs(&self) -> (usize, usize) {
        (read(&self.addr, "tick-predictions").len(), read(&self.addr, "ticks-dlq").len())
    }

    /// The outputs so far, failing at once on more than the reference has.
    fn no_more_than_reference(&self) -> (usize, usize) {
        let n = self.outputs();
        if n.0 > self.want.0 {
            let per = |addr: &str| {
                let mut m = std::collections::BTreeMap::new();
                for r in read(addr, "tick-predictions") {
                    *m.entry(r.partition).or_insert(0) += 1;
                }
                m
            };
            eprintln!("per partition: reference {:?}, under test {:?}", per(&self.ref_addr), per(&self.addr));
        }
        assert!(n.0 <= self.want.0 && n.1 <= self.want.1, "more output than the reference: {n:?} vs {:?} (duplicates)", self.want);
        n
    }

    /// SIGTERM to every member (each must stop cleanly), then the outputs must equal
    /// the reference's message for message.
    fn stop_and_compare(&self, members: &mut [&mut Child]) {
        for m in members.iter_mut() {
            Command::new("kill").args(["-TERM", &m.0.id().to_string()]).status().unwrap();
            assert!(m.0.wait().unwrap().success());
        }
        assert_same_output(&self.ref_addr, &self.addr, 0);
    }
}

fn assigned(http: &str) -> Option<f64> {
    scrape(http, "tickflare_assigned_partitions")
}

fn graceful_rounds(strategy: &str) {
    let g = Group::new();
    let quarter = g.input.len() / 4;
    let member = |http: &str| g.member("graceful-group", http, &[("TICKFLARE_KAFKA_PARTITION_ASSIGNMENT_STRATEGY", strategy)]);
    let [ha, hb, hc] = [0, 1, 2].map(|_| format!("127.0.0.1:{}", free_port()));
    copy_input(&g.input[..quarter], &g.addr);
    let mut a = member(&ha);
    g.wait("A to be assigned", 60, || (assigned(&ha)? == 3.0).then_some(()));

    // B joins while records arrive.
    let t = Instant::now();
    let mut b = member(&hb);
    copy_input(&g.input[quarter..2 * quarter], &g.addr);
    g.wait("A and B to share", 90, || (assigned(&ha)? > 0.0 && assigned(&hb)? > 0.0 && assigned(&ha)? + assigned(&hb)? == 3.0).then_some(()));
    let join_b = t.elapsed();

    // C joins.
    let t = Instant::now();
    let mut c = member(&hc);
    copy_input(&g.input[2 * quarter..3 * quarter], &g.addr);
    g.wait("three members to share", 90, || (assigned(&ha)? == 1.0 && assigned(&hb)? == 1.0 && assigned(&hc)? == 1.0).then_some(()));
    let join_c = t.elapsed();

    // B leaves gracefully (SIGTERM) while records arrive.
    g.wait("B to have processed records", 60, || (scrape(&hb, "tickflare_records_in_total")? >= 1.0).then_some(()));
    let t = Instant::now();
    Command::new("kill").args(["-TERM", &b.0.id().to_string()]).status().unwrap();
    copy_input(&g.input[3 * quarter..], &g.addr);
    assert!(b.0.wait().unwrap().success(), "B's graceful stop failed");
    g.wait("A and C to take B's partition", 90, || (assigned(&ha)? + assigned(&hc)? == 3.0).then_some(()));
    let leave_b = t.elapsed();

    // C dies without warning.
    let t = Instant::now();
    Command::new("kill").args(["-KILL", &c.0.id().to_string()]).status().unwrap();
    c.0.wait().unwrap();
    g.wait("A to take every partition", 90, || (assigned(&ha)? == 3.0).then_some(()));
    let kill_c = t.elapsed();
    eprintln!("{strategy}: rebalances — B joins {join_b:?}, C joins {join_c:?}, B leaves (SIGTERM) {leave_b:?}, C killed (SIGKILL, session timeout 6 s) {kill_c:?}");

    g.wait("A to finish", 120, || (g.no_more_than_reference() == g.want).then_some(()));
    g.stop_and_compare(&mut [&mut a]);
}

#[test]
fn graceful_join_leave_and_kill_under_load_equal_one_process_eager() {
    graceful_rounds("range");
}

#[test]
fn graceful_join_leave_and_kill_under_load_equal_one_process_cooperative() {
    graceful_rounds("cooperative-sticky");
}

/// The mechanism itself, where the broker's slow rebalances cannot hide it: a member
/// holding a revocation keeps its partitions — the member that joined gets none —
/// for as long as it holds (here 8 s, longer than a whole rebalance takes on this
/// broker); once released, the joiner is assigned its share.
#[test]
fn a_held_revocation_keeps_the_partitions_from_the_next_owner_until_released() {
    use std::sync::atomic::Ordering;
    use std::time::Duration;
    use rdkafka::consumer::Consumer;
    use tickflare::source::context::{assigned_count, release_revoked};
    let (_b, addr) = broker_process_with(&["held:2"]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let member = || {
            let c = holding_member(&addr, "held-group", "held");
            let ctx = c.context().clone();
            (c, ctx.hold_revoked.clone(), ctx.held.clone())
        };
        // Serves both members' rebalance callbacks for `secs` or until `done`.
        async fn poll(cs: &[&Detached], secs: u64, done: &dyn Fn() -> bool) -> bool {
            let end = Instant::now() + Duration::from_secs(secs);
            while Instant::now() < end {
                for c in cs {
                    let _ = tokio::time::timeout(Duration::from_millis(50), c.recv()).await;
                }
                if done() {
                    return true;
                }
            }
            false
        }
        let (a, a_hold, a_held) = member();
        assert!(poll(&[&a], 60, &|| assigned_count(&*a, "held") == 2).await, "A was never assigned");
        let (b, b_hold, _) = member();
        assert!(poll(&[&a, &b], 60, &|| !a_held.lock().unwrap().is_empty()).await, "A saw no revocation");
        let held: Vec<i32> = a_held.lock().unwrap().clone();
        assert_eq!(held.len(), 2, "eager protocol: everything revoked");
        let t = Instant::now();
        poll(&[&a, &b], 8, &|| assigned_count(&*b, "held") > 0).await;
        assert_eq!(assigned_count(&*b, "held"), 0, "B was assigned while A held the revocation ({:?})", t.elapsed());
        assert_eq!(assigned_count(&*a, "held"), 2, "A keeps its partitions while it holds");
        // From here on nothing is held: a further rebalance (a loaded machine's
        // late heartbeat) must not be held by either member, or the counts below
        // would be of assignments that both still hold.
        a_hold.store(false, Ordering::SeqCst);
        b_hold.store(false, Ordering::SeqCst);
        a_held.lock().unwrap().clear();
        release_revoked(&*a, "held", &held).unwrap();
        let t = Instant::now();
        assert!(poll(&[&a, &b], 60, &|| assigned_count(&*b, "held") == 1 && assigned_count(&*a, "held") == 1).await, "after the release: A {}, B {}", assigned_count(&*a, "held"), assigned_count(&*b, "held"));
        eprintln!("assigned {:?} after the release", t.elapsed());
        drop((a, b));
    });
}

/// A revocation of nothing — the eager protocol revokes a member's whole
/// assignment, which can be empty (more members than partitions, or a transient
/// assignment of a loaded group) — has nothing to hand over and must not be held:
/// the run loop releases only what it holds, so a held empty revocation was never
/// released, and the member never rejoined the group. One partition, two members:
/// when the owner leaves, the other must rejoin and take it.
#[test]
fn a_member_revoked_of_nothing_rejoins_and_takes_over_when_the_owner_leaves() {
    use std::sync::atomic::Ordering;
    use std::time::Duration;
    use rdkafka::consumer::Consumer;
    use tickflare::source::context::{assigned_count, release_revoked};
    let (_b, addr) = broker_process_with(&["lone:1"]);
    /// A consumer, and the revocations the run loop's hand-off has seen of it.
    struct Member {
        c: Detached,
        seen: std::cell::Cell<u64>,
    }
    impl Member {
        fn assigned(&self) -> usize {
            assigned_count(&*self.c, "lone")
        }
    }
    let member = || Member { c: holding_member(&addr, "lone-group", "lone"), seen: Default::default() };
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        // Serves the members' callbacks and, like the run loop's hand-off, releases
        // what a revocation held, for `secs` or until `done`.
        async fn serve(ms: &[&Member], secs: u64, done: &dyn Fn() -> bool) -> bool {
            let end = Instant::now() + Duration::from_secs(secs);
            while Instant::now() < end {
                for m in ms {
                    let _ = tokio::time::timeout(Duration::from_millis(50), m.c.recv()).await;
                    let ctx = m.c.context();
                    let r = ctx.revocations.load(Ordering::SeqCst);
                    if r != m.seen.get() {
                        m.seen.set(r);
                        let held: Vec<i32> = std::mem::take(&mut *ctx.held.lock().unwrap());
                        if !held.is_empty() {
                            release_revoked(&*m.c, "lone", &held).unwrap();
                        }
                    }
                }
                if done() {
                    return true;
                }
            }
            false
        }
        let a = member();
        assert!(serve(&[&a], 60, &|| a.assigned() == 1).await, "A was never assigned");
        let b = member();
        // B's join revokes A's partition (held, then released) and assigns it to one
        // of the two; the other's assignment is empty.
        let released = std::cell::Cell::new(false);
        let shared = || {
            released.set(released.get() || a.assigned() == 0);
            released.get() && a.assigned() + b.assigned() == 1
        };
        assert!(serve(&[&a, &b], 60, &shared).await, "the two members never shared: A {}, B {}", a.assigned(), b.assigned());
        let (owner, other) = if a.assigned() == 1 { (a, b) } else { (b, a) };
        // The owner leaves (nothing held on the way out); the other is revoked of
        // nothing, must rejoin, and is assigned the partition.
        owner.c.context().hold_revoked.store(false, Ordering::SeqCst);
        drop(owner);
        let t = Instant::now();
        assert!(
            serve(&[&other], 60, &|| other.assigned() == 1).await,
            "the remaining member never took the partition (its revocation of nothing still held: {})",
            other.c.context().revocations.load(Ordering::SeqCst)
        );
        eprintln!("taken over {:?} after the owner left", t.elapsed());
        drop(other);
    });
}

/// A consumer of `topic` in `group` that holds its revocations (as a run with
/// checkpoints does), with short sessions: the broker completes a rebalance within
/// a few heartbeats. Its context's `hold_revoked`, `held` and `revocations` are
/// what the run loop reads.
fn holding_member(addr: &str, group: &str, topic: &str) -> Detached {
    use rdkafka::consumer::Consumer;
    let ctx = tickflare::source::context::SourceContext::new("hold-test", topic, tickflare::telemetry::Health::new());
    ctx.hold_revoked.store(true, std::sync::atomic::Ordering::SeqCst);
    let props: tickflare::pipeline::kafka_props::KafkaProps = toml::from_str("[consumer]\n\"session.timeout.ms\" = 6000\n\"heartbeat.interval.ms\" = 500").unwrap();
    let c = tickflare::source::kafka::consumer_with(addr, group, ctx, &props).unwrap();
    c.subscribe(&[topic]).unwrap();
    Detached(Some(c))
}

/// A consumer closed on its own thread when dropped — also when a failed assertion
/// unwinds: closing waits for the group's LeaveGroup, which this broker can keep
/// behind a pending JoinGroup for minutes.
struct Detached(Option<tickflare::source::kafka::Leaving<tickflare::source::context::SourceContext>>);

impl std::ops::Deref for Detached {
    type Target = rdkafka::consumer::StreamConsumer<tickflare::source::context::SourceContext>;
    fn deref(&self) -> &Self::Target {
        self.0.as_deref().expect("until dropped")
    }
}

impl Drop for Detached {
    fn drop(&mut self) {
        if let Some(c) = self.0.take() {
            std::thread::spawn(move || drop(c));
        }
    }
}

/// Zombie fencing without transactions: a member paused (SIGSTOP) past its session
/// timeout loses its partitions to the other member, which restores them and claims a
/// newer writer epoch while the input keeps arriving. Resumed (SIGCONT), the paused
/// member finds the newer epoch before it publishes or checkpoints for them and drops
/// them: the output stays identical to one process's.
#[test]
fn graceful_a_paused_member_resumed_after_its_partitions_moved_is_fenced() {
    let g = Group::new();
    let half = g.input.len() / 2;
    let [ha, hb] = [0, 1].map(|_| format!("127.0.0.1:{}", free_port()));
    let mut a = g.member("fencing-group", &ha, &[]);
    g.wait("A to be assigned", 60, || (assigned(&ha)? == 3.0).then_some(()));
    let mut b = g.member("fencing-group", &hb, &[]);
    g.wait("A and B to share", 90, || (assigned(&ha)? > 0.0 && assigned(&hb)? > 0.0 && assigned(&ha)? + assigned(&hb)? == 3.0).then_some(()));
    copy_input(&g.input[..half], &g.addr);
    // Idle before the pause: nothing of B's in flight.
    let mut last = g.outputs();
    g.wait("the first half to be processed", 90, || {
        std::thread::sleep(std::time::Duration::from_secs(2));
        let now = g.outputs();
        let settled = now == last && now.0 > 0;
        last = now;
        settled.then_some(())
    });
    Command::new("kill").args(["-STOP", &b.0.id().to_string()]).status().unwrap();
    copy_input(&g.input[half..], &g.addr);
    g.wait("A to take B's partitions", 90, || (assigned(&ha)? == 3.0).then_some(()));
    g.wait("A to finish", 120, || (g.no_more_than_reference() == g.want).then_some(()));
    Command::new("kill").args(["-CONT", &b.0.id().to_string()]).status().unwrap();
    let fenced = g.wait("B to find itself fenced", 60, || scrape(&hb, "tickflare_fenced_partitions_total").filter(|n| *n >= 1.0));
    std::thread::sleep(std::time::Duration::from_secs(3));
    assert_eq!(g.outputs(), g.want, "the resumed member published again");
    eprintln!("B fenced from {fenced} partition(s)");
    g.stop_and_compare(&mut [&mut b, &mut a]);
}

/// The same with the pause at the worst moment: a member stalls (injected, 25 s)
/// right before publishing a batch, long enough for the group to drop it
/// (`max.poll.interval.ms` 6 s) and the other member to restore its partitions and
/// republish that batch. When it wakes, it must find the newer writer epoch and drop
/// the batch instead of publishing it a second time.
#[test]
fn graceful_a_member_stalled_before_publishing_is_fenced_when_it_wakes() {
    let g = Group::new();
    let third = g.input.len() / 3;
    let [ha, hb] = [0, 1].map(|_| format!("127.0.0.1:{}", free_port()));
    let poll = ("TICKFLARE_KAFKA_MAX_POLL_INTERVAL_MS", "6000");
    let mut a = g.member("stall-group", &ha, &[poll]);
    g.wait("A to be assigned", 60, || (assigned(&ha)? == 3.0).then_some(()));
    copy_input(&g.input[..third], &g.addr);
    let mut b = g.member("stall-group", &hb, &[poll, ("TICKFLARE_FAULT", "before_publish:3"), ("TICKFLARE_FAULT_STALL_MS", "25000")]);
    g.wait("A and B to share", 90, || (assigned(&ha)? > 0.0 && assigned(&hb)? > 0.0 && assigned(&ha)? + assigned(&hb)? == 3.0).then_some(()));
    copy_input(&g.input[third..], &g.addr);
    // B stalls at its third publish; the group drops it and A takes everything.
    g.wait("A to take B's partitions", 90, || (assigned(&ha)? == 3.0).then_some(()));
    g.wait("B to wake and find itself fenced", 90, || {
        g.no_more_than_reference();
        scrape(&hb, "tickflare_fenced_partitions_total").filter(|n| *n >= 1.0)
    });
    g.wait("A to finish", 120, || (g.no_more_than_reference() == g.want).then_some(()));
    g.stop_and_compare(&mut [&mut b, &mut a]);
}
