//! Which meters this replica polls: leases on a fixed number of buckets, kept in PostgreSQL.
//!
//! A meter belongs to bucket `fnv1a(cell) mod n` (`cell` = `meters.transformer`; a meter without one
//! is hashed by its serial), so every meter of a cell is polled by one replica and the per-cell
//! session limit ([`super::limits`]) holds across replicas without further coordination.
//!
//! Every `lease_period / 3` a poller runs one transaction ([`Leases::step`]): it records its
//! heartbeat in `poll_pollers`, renews the buckets it holds, counts the live pollers, releases the
//! buckets above its fair share `ceil(n / live)` (highest first, each only once no session of it is
//! running — until then it is *draining*: renewed, but no new session starts) and claims free or
//! expired buckets up to its fair share (`FOR UPDATE SKIP LOCKED`, the expiry re-checked by the
//! `UPDATE`, so two pollers never claim one bucket). A poller that dies stops renewing: its
//! buckets expire after one lease period and the others take them on their next step; a new
//! poller's heartbeat makes the others release what is above the new fair share. Either way the
//! fleet is rebalanced within about one lease period, without a restart.
//!
//! Buckets to hand back are marked draining under the lock sessions take to start, before their
//! running sessions are counted, so none starts between the count and the hand-back; a session
//! holds its bucket until its readings are committed. Every claim gives the bucket a new epoch
//! ([`Leases::epoch`]): a session starts only under the claim its tasks were worked out under.
//!
//! Locally a bucket counts as held until `lease_period · 5/6` after the start of the step that last
//! renewed it — before the database lets anyone else claim it. Sessions check that before they
//! start and before every retry. A session already running when a lease is lost by expiry (the
//! database unreachable for most of a lease period) finishes; its writes are idempotent (`ON CONFLICT
//! DO NOTHING` on the reading's key, events likewise), so a late poll can double nothing — this is
//! the fencing, and the only cost is that a cell may briefly see sessions from two replicas.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use deadpool_postgres::Pool;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Lease errors (the database).
#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("lease database: {0}")]
    Db(#[from] tokio_postgres::Error),
    #[error("lease database pool: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
}

/// What one step should do, from what is held and how many pollers are alive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// The fair share: `ceil(buckets / live)`.
    pub fair: usize,
    /// Held buckets to hand back (the highest ones above the fair share).
    pub release: Vec<i32>,
    /// How many more buckets to claim.
    pub claim: usize,
}

/// The lease arithmetic, pure: `held` sorted or not, `live` counts this poller too.
pub fn plan(held: &BTreeSet<i32>, live: usize, buckets: usize) -> Plan {
    let live = live.max(1);
    let fair = buckets.div_ceil(live);
    let release: Vec<i32> = held.iter().rev().take(held.len().saturating_sub(fair)).copied().collect();
    Plan { fair, release, claim: fair.saturating_sub(held.len()) }
}

/// The bucket of a meter: FNV-1a (64 bit) of its cell, or of its serial when it has no cell.
pub fn bucket_of(cell: &str, serial: &str, buckets: u32) -> i32 {
    let key = if cell.is_empty() { serial } else { cell };
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in key.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    i32::try_from(h % u64::from(buckets.max(1))).unwrap_or(0)
}

#[derive(Debug, Default)]
struct Held {
    /// Bucket → held (locally) until.
    until: BTreeMap<i32, Instant>,
    /// Held buckets being handed back: renewed, but no new session starts.
    draining: BTreeSet<i32>,
    /// Held buckets claimed from another poller (expired, or handed back to rebalance), as opposed
    /// to never held or released by a graceful stop.
    taken_over: BTreeSet<i32>,
    /// Bucket → the claim it is held under (a number that grows with every claim of this poller):
    /// what the scheduler knows of a bucket's meters is only good for the claim it learnt it under.
    epoch: BTreeMap<i32, u64>,
    claims: u64,
}

/// This poller's leases.
pub struct Leases {
    pub holder: String,
    pub buckets: u32,
    pub period: Duration,
    held: Mutex<Held>,
    running: Vec<AtomicUsize>,
    /// Bumped after every step that gained buckets (the group loops start a round).
    gained: tokio::sync::watch::Sender<u64>,
    /// True after the first successful step.
    ready: tokio::sync::watch::Sender<bool>,
}

/// Held while a session of a bucket runs: a draining bucket is released only when none is left.
pub struct BucketGuard<'a> {
    leases: &'a Leases,
    bucket: i32,
}

impl Drop for BucketGuard<'_> {
    fn drop(&mut self) {
        if let Some(c) = self.leases.running.get(self.bucket as usize) {
            c.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// What a step did, for logs and tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepOutcome {
    pub live: usize,
    pub fair: usize,
    pub held: Vec<i32>,
    pub claimed: Vec<i32>,
    pub released: Vec<i32>,
    pub lost: Vec<i32>,
}

impl Leases {
    /// `holder` must be unique per process (see [`holder_id`]).
    pub fn new(holder: String, buckets: u32, period: Duration) -> Self {
        let buckets = buckets.max(1);
        Self {
            holder,
            buckets,
            period: period.max(Duration::from_millis(300)),
            held: Mutex::new(Held::default()),
            running: (0..buckets).map(|_| AtomicUsize::new(0)).collect(),
            gained: tokio::sync::watch::channel(0).0,
            ready: tokio::sync::watch::channel(false).0,
        }
    }

    pub fn bucket_of(&self, cell: &str, serial: &str) -> i32 {
        bucket_of(cell, serial, self.buckets)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether sessions of `bucket` may start now: held, not expired locally, not draining.
    pub fn holds(&self, bucket: i32) -> bool {
        self.may_start(&self.lock(), bucket, None)
    }

    /// The claim `bucket` is held under now (0: not held). A bucket lost and claimed again gets a
    /// new epoch: another poller may have polled its meters in between.
    pub fn epoch(&self, bucket: i32) -> u64 {
        let h = self.lock();
        if h.until.contains_key(&bucket) {
            h.epoch.get(&bucket).copied().unwrap_or(0)
        } else {
            0
        }
    }

    fn may_start(&self, h: &Held, bucket: i32, epoch: Option<u64>) -> bool {
        !h.draining.contains(&bucket)
            && h.until.get(&bucket).is_some_and(|u| *u > Instant::now())
            && epoch.is_none_or(|e| h.epoch.get(&bucket).copied().unwrap_or(0) == e)
    }

    /// Whether the lease of `bucket` is still valid (draining or not): checked before each retry.
    pub fn valid(&self, bucket: i32) -> bool {
        self.lock().until.get(&bucket).is_some_and(|u| *u > Instant::now())
    }

    /// Marks a session of `bucket` as running, if sessions of it may start and the bucket is still
    /// held under the claim `epoch` (what the session's tasks were worked out from).
    pub fn guard(&self, bucket: i32, epoch: u64) -> Option<BucketGuard<'_>> {
        let h = self.lock();
        if !self.may_start(&h, bucket, Some(epoch)) {
            return None;
        }
        self.running.get(bucket as usize)?.fetch_add(1, Ordering::AcqRel);
        Some(BucketGuard { leases: self, bucket })
    }

    /// Whether `bucket` was claimed from another poller (see [`Leases::step`]): its meters start
    /// from their last successful poll rather than being polled again at once.
    pub fn taken_over(&self, bucket: i32) -> bool {
        self.lock().taken_over.contains(&bucket)
    }

    /// Buckets held now (draining ones included).
    pub fn held(&self) -> Vec<i32> {
        let now = Instant::now();
        self.lock().until.iter().filter(|(_, u)| **u > now).map(|(b, _)| *b).collect()
    }

    /// A receiver bumped whenever a step gains buckets.
    pub fn gained(&self) -> tokio::sync::watch::Receiver<u64> {
        self.gained.subscribe()
    }

    /// Waits for the first successful step (or `stop`).
    pub async fn ready(&self, stop: &CancellationToken) {
        let mut rx = self.ready.subscribe();
        tokio::select! {
            _ = rx.wait_for(|r| *r) => {}
            () = stop.cancelled() => {}
        }
    }

    fn running_in(&self, bucket: i32) -> usize {
        self.running.get(bucket as usize).map_or(0, |c| c.load(Ordering::Acquire))
    }

    /// One step: heartbeat, renew, count, release, claim — in one transaction.
    pub async fn step(&self, pool: &Pool) -> Result<StepOutcome, LeaseError> {
        let started = Instant::now();
        let period_ms = i64::try_from(self.period.as_millis()).unwrap_or(i64::MAX);
        let n = i32::try_from(self.buckets).unwrap_or(i32::MAX);
        let mut client = pool.get().await?;
        let tx = client.transaction().await?;
        let lease = "make_interval(secs => $2::bigint / 1000.0)";
        tx.execute(
            &format!(
                "INSERT INTO poll_pollers (holder, seen_until) VALUES ($1, now() + {lease})
                 ON CONFLICT (holder) DO UPDATE SET seen_until = EXCLUDED.seen_until"
            ),
            &[&self.holder, &period_ms],
        )
        .await?;
        tx.execute("INSERT INTO poll_leases (bucket) SELECT generate_series(0, $1 - 1) ON CONFLICT DO NOTHING", &[&n])
            .await?;
        let live: i64 = tx.query_one("SELECT count(*) FROM poll_pollers WHERE seen_until > now()", &[]).await?.get(0);
        // Renew whatever is still ours (an expired lease nobody took is ours again).
        let renewed: BTreeSet<i32> = tx
            .query(
                &format!(
                    "UPDATE poll_leases SET expires_at = now() + {lease}
                     WHERE holder = $1 AND bucket < $3 RETURNING bucket"
                ),
                &[&self.holder, &period_ms, &n],
            )
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        let p = plan(&renewed, usize::try_from(live).unwrap_or(1), self.buckets as usize);
        // Extra buckets drain first; those without a running session are handed back now. They
        // are marked draining here, under the lock `guard` takes, before the database hands them
        // on: no session of theirs can start between the count and the hand-back.
        let (release_now, still_draining): (Vec<i32>, Vec<i32>) = {
            let mut h = self.lock();
            h.draining.extend(p.release.iter().copied());
            p.release.iter().partition(|b| self.running_in(**b) == 0)
        };
        if !release_now.is_empty() {
            tx.execute(
                "UPDATE poll_leases SET holder = NULL, expires_at = '-infinity', handed_over = true
                 WHERE holder = $1 AND bucket = ANY($2)",
                &[&self.holder, &release_now],
            )
            .await?;
        }
        // Claimed from another poller: an expired holder, or one that handed the bucket back.
        let claimed: Vec<(i32, bool)> = if p.claim > 0 {
            tx.query(
                &format!(
                    "UPDATE poll_leases l SET holder = $1, expires_at = now() + {lease}, handed_over = false
                     FROM (SELECT bucket, holder IS NOT NULL OR handed_over AS taken_over FROM poll_leases
                           WHERE bucket < $3 AND (holder IS NULL OR expires_at <= now())
                           ORDER BY bucket LIMIT $4 FOR UPDATE SKIP LOCKED) free
                     WHERE l.bucket = free.bucket AND (l.holder IS NULL OR l.expires_at <= now())
                     RETURNING l.bucket, free.taken_over"
                ),
                &[&self.holder, &period_ms, &n, &i64::try_from(p.claim).unwrap_or(0)],
            )
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1)))
            .collect()
        } else {
            Vec::new()
        };
        // Heartbeats of pollers gone for a day are forgotten.
        tx.execute("DELETE FROM poll_pollers WHERE seen_until < now() - interval '1 day'", &[]).await?;
        tx.commit().await?;

        let until = started + self.period.mul_f64(5.0 / 6.0);
        let mut h = self.lock();
        let before: BTreeSet<i32> = h.until.keys().copied().collect();
        let mut now_held: BTreeSet<i32> = renewed.iter().copied().filter(|b| !release_now.contains(b)).collect();
        now_held.extend(claimed.iter().map(|(b, _)| *b));
        h.until = now_held.iter().map(|b| (*b, until)).collect();
        h.draining = still_draining.into_iter().collect();
        h.taken_over.retain(|b| renewed.contains(b) && now_held.contains(b));
        h.taken_over.extend(claimed.iter().filter(|(_, t)| *t).map(|(b, _)| *b));
        for (b, _) in &claimed {
            h.claims += 1;
            let e = h.claims;
            h.epoch.insert(*b, e);
        }
        h.epoch.retain(|b, _| now_held.contains(b));
        let lost: Vec<i32> =
            before.iter().filter(|b| !now_held.contains(b) && !release_now.contains(b)).copied().collect();
        drop(h);
        if !claimed.is_empty() {
            self.gained.send_modify(|g| *g += 1);
        }
        self.ready.send_replace(true);
        Ok(StepOutcome {
            live: usize::try_from(live).unwrap_or(0),
            fair: p.fair,
            held: now_held.into_iter().collect(),
            claimed: claimed.into_iter().map(|(b, _)| b).collect(),
            released: release_now,
            lost,
        })
    }

    /// Hands every lease back and removes the heartbeat (graceful shutdown): the others take the
    /// buckets on their next step instead of after the expiry.
    pub async fn release_all(&self, pool: &Pool) -> Result<(), LeaseError> {
        let client = pool.get().await?;
        client
            .execute(
                "UPDATE poll_leases SET holder = NULL, expires_at = '-infinity', handed_over = false WHERE holder = $1",
                &[&self.holder],
            )
            .await?;
        client.execute("DELETE FROM poll_pollers WHERE holder = $1", &[&self.holder]).await?;
        self.lock().until.clear();
        Ok(())
    }

    /// Steps every `period / 3` until `stop`; then waits (≤ 30 s) for running sessions and releases.
    pub async fn run(&self, pool: Pool, metrics: std::sync::Arc<crate::metrics::Metrics>, stop: CancellationToken) {
        loop {
            match self.step(&pool).await {
                Ok(o) => {
                    metrics.poll_buckets_held.set(i64::try_from(o.held.len()).unwrap_or(0));
                    if !o.claimed.is_empty() || !o.released.is_empty() || !o.lost.is_empty() {
                        tracing::info!(holder = %self.holder, live = o.live, fair = o.fair, held = o.held.len(),
                            claimed = ?o.claimed, released = ?o.released, lost = ?o.lost, "polling leases changed");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "polling leases not renewed; retrying"),
            }
            tokio::select! {
                () = stop.cancelled() => break,
                () = tokio::time::sleep(self.period / 3) => {}
            }
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.running.iter().any(|c| c.load(Ordering::Acquire) > 0) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        match self.release_all(&pool).await {
            Ok(()) => tracing::info!(holder = %self.holder, "polling leases released"),
            Err(e) => tracing::warn!(error = %e, "polling leases not released; they expire"),
        }
        metrics.poll_buckets_held.set(0);
    }
}

/// A holder id unique to this process: `<client id>-<pid>-<random>` (a restarted replica never
/// mistakes its predecessor's leases for its own).
pub fn holder_id(name: &str) -> String {
    let mut r = [0u8; 4];
    let _ = getrandom::fill(&mut r);
    format!("{name}-{}-{:08x}", std::process::id(), u32::from_le_bytes(r))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::testdb::TestDb;

    #[test]
    fn the_fair_share_rounds_up_and_releases_the_highest() {
        let held: BTreeSet<i32> = (0..64).collect();
        let p = plan(&held, 3, 64);
        assert_eq!(p.fair, 22);
        assert_eq!(p.release, (22..64).rev().collect::<Vec<_>>());
        assert_eq!(p.claim, 0);
        let p = plan(&BTreeSet::new(), 3, 64);
        assert_eq!((p.fair, p.claim), (22, 22));
        assert_eq!(plan(&held, 0, 64).fair, 64, "no heartbeat seen yet counts as one");
        assert_eq!(plan(&(0..5).collect(), 2, 10), Plan { fair: 5, release: vec![], claim: 0 });
    }

    #[test]
    fn buckets_are_stable_and_by_cell() {
        assert_eq!(bucket_of("TS-BG-0319", "SIM1", 64), bucket_of("TS-BG-0319", "SIM2", 64), "one cell, one bucket");
        assert_eq!(bucket_of("", "SIM00000001", 64), bucket_of("SIM00000001", "", 64), "no cell: by serial");
        // FNV-1a of "a" is 0xaf63dc4c8601ec8c: the hash never changes with the platform or release.
        assert_eq!(bucket_of("a", "", 1000), (0xaf63_dc4c_8601_ec8c_u64 % 1000) as i32);
        let spread: BTreeSet<i32> = (0..1000).map(|i| bucket_of(&format!("TS-{i}"), "", 64)).collect();
        assert_eq!(spread.len(), 64, "1000 cells reach every bucket");
    }

    async fn pool(db: &TestDb) -> Pool {
        let _ = db.migrated().await;
        crate::app::pool(&db.url, 4).expect("pool")
    }

    fn sorted(mut v: Vec<i32>) -> Vec<i32> {
        v.sort_unstable();
        v
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pollers_share_the_buckets_and_take_over_a_dead_one() {
        let db = TestDb::new().await;
        let pool = pool(&db).await;
        let period = Duration::from_millis(1500);
        let a = Leases::new("a".into(), 16, period);
        let b = Leases::new("b".into(), 16, period);
        let c = Leases::new("c".into(), 16, period);

        // Alone, a takes everything.
        let o = a.step(&pool).await.expect("a");
        assert_eq!((o.live, o.fair, o.claimed.len()), (1, 16, 16));
        assert!(a.holds(3) && a.guard(3, a.epoch(3)).is_some());

        // b arrives: nothing is free yet, but a sees two pollers and hands back the upper half.
        let o = b.step(&pool).await.expect("b");
        assert_eq!((o.live, o.fair, o.claimed.len()), (2, 8, 0));
        let busy = a.guard(15, a.epoch(15)).expect("a session of bucket 15 is running");
        let o = a.step(&pool).await.expect("a");
        assert_eq!(o.released, (8..15).rev().collect::<Vec<_>>(), "bucket 15 drains while its session runs");
        assert!(!a.holds(15) && a.valid(15), "draining: no new session, lease kept");
        let o = b.step(&pool).await.expect("b");
        assert_eq!(sorted(o.claimed), (8..15).collect::<Vec<_>>());
        assert!(b.taken_over(8) && !a.taken_over(0), "handed over, as opposed to never held");
        drop(busy);
        let o = a.step(&pool).await.expect("a");
        assert_eq!(o.released, vec![15]);
        assert_eq!(o.held, (0..8).collect::<Vec<_>>());
        let o = b.step(&pool).await.expect("b");
        assert_eq!(o.held, (8..16).collect::<Vec<_>>());

        // c arrives: fair share ceil(16/3) = 6; after a round of steps every bucket has one holder.
        c.step(&pool).await.expect("c");
        for _ in 0..2 {
            a.step(&pool).await.expect("a");
            b.step(&pool).await.expect("b");
            c.step(&pool).await.expect("c");
        }
        let (ha, hb, hc) = (a.held(), b.held(), c.held());
        assert!(ha.len() <= 6 && hb.len() <= 6 && hc.len() <= 6, "{ha:?} {hb:?} {hc:?}");
        let mut all: Vec<i32> = ha.iter().chain(&hb).chain(&hc).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..16).collect::<Vec<_>>(), "each bucket held exactly once");

        // b dies (stops stepping). Until its leases expire nobody takes them; then a and c do.
        let o = a.step(&pool).await.expect("a");
        assert!(o.claimed.is_empty());
        tokio::time::sleep(period + Duration::from_millis(200)).await;
        assert!(!b.holds(hb[0]), "b's local view expired before the database's");
        for _ in 0..2 {
            a.step(&pool).await.expect("a");
            c.step(&pool).await.expect("c");
        }
        let (ha, hc) = (a.held(), c.held());
        assert_eq!((ha.len(), hc.len()), (8, 8), "{ha:?} {hc:?}");
        let mut all: Vec<i32> = ha.iter().chain(&hc).copied().collect();
        all.sort_unstable();
        assert_eq!(all, (0..16).collect::<Vec<_>>());

        assert!(hb.iter().all(|x| a.taken_over(*x) || c.taken_over(*x)), "b's buckets taken over after expiry");

        // A graceful stop hands everything back at once, and not as a take-over.
        let of_c = c.held();
        c.release_all(&pool).await.expect("release");
        let o = a.step(&pool).await.expect("a");
        assert_eq!((o.live, o.held.len()), (1, 16));
        assert!(of_c.iter().all(|x| !a.taken_over(*x)), "after a graceful stop the next holder starts afresh");
    }

    /// A bucket handed on and claimed back is held under a new epoch: a session worked out under
    /// the old claim (another poller may have polled its meters since) does not start.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_bucket_claimed_again_has_a_new_epoch() {
        let db = TestDb::new().await;
        let pool = pool(&db).await;
        let period = Duration::from_millis(1500);
        let a = Leases::new("a".into(), 4, period);
        let b = Leases::new("b".into(), 4, period);
        a.step(&pool).await.expect("a");
        let (e0, e3) = (a.epoch(0), a.epoch(3));
        assert!(e0 > 0 && e3 > 0 && a.guard(3, e3).is_some());
        assert!(a.guard(3, e3 + 1).is_none(), "another claim's session");
        b.step(&pool).await.expect("b");
        assert_eq!(a.step(&pool).await.expect("a").released, vec![3, 2]);
        assert_eq!(a.epoch(3), 0, "not held");
        assert!(a.guard(3, e3).is_none());
        assert_eq!(sorted(b.step(&pool).await.expect("b").claimed), vec![2, 3]);
        b.release_all(&pool).await.expect("b stops");
        assert_eq!(sorted(a.step(&pool).await.expect("a").claimed), vec![2, 3]);
        assert!(a.epoch(3) > e3, "claimed again: a new epoch");
        assert!(a.guard(3, e3).is_none(), "a session worked out under the old claim does not start");
        assert!(a.guard(3, a.epoch(3)).is_some());
        assert_eq!(a.epoch(0), e0, "held throughout: the same epoch");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_claims_never_share_a_bucket() {
        let db = TestDb::new().await;
        let pool = pool(&db).await;
        let period = Duration::from_secs(5);
        let pollers: Vec<std::sync::Arc<Leases>> =
            (0..6).map(|i| std::sync::Arc::new(Leases::new(format!("p{i}"), 64, period))).collect();
        // Everyone registers first, then all claim at once, several times.
        for l in &pollers {
            l.step(&pool).await.expect("step");
            l.release_all(&pool).await.expect("reset");
        }
        for l in &pollers {
            let c = pool.get().await.expect("conn");
            c.execute(
                "INSERT INTO poll_pollers (holder, seen_until) VALUES ($1, now() + interval '1 minute')",
                &[&l.holder],
            )
            .await
            .expect("heartbeat");
        }
        for _ in 0..3 {
            let mut set = tokio::task::JoinSet::new();
            for l in &pollers {
                let (l, pool) = (l.clone(), pool.clone());
                set.spawn(async move { l.step(&pool).await.expect("step") });
            }
            while set.join_next().await.is_some() {}
        }
        let mut all: Vec<i32> = pollers.iter().flat_map(|l| l.held()).collect();
        all.sort_unstable();
        let distinct: BTreeSet<i32> = all.iter().copied().collect();
        assert_eq!(all.len(), distinct.len(), "no bucket held twice: {all:?}");
        assert_eq!(distinct.len(), 64, "every bucket held");
        assert!(pollers.iter().all(|l| l.held().len() <= 11), "fair share ceil(64/6) = 11");
        let c = pool.get().await.expect("conn");
        let held_rows: i64 = c
            .query_one("SELECT count(*) FROM poll_leases WHERE holder IS NOT NULL AND expires_at > now()", &[])
            .await
            .expect("count")
            .get(0);
        assert_eq!(held_rows, 64);
    }
}
