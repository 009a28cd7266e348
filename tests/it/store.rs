//! The store's conformance suite: every case runs against both backends — the embedded SQLite
//! store and PostgreSQL (a private cluster started by the tests, a database per test) — through
//! the same public interface ([`wharf::store::Store`] and the store functions).
//!
//! Cases that need two processes sharing one database (two replicas racing for the same rows)
//! run on PostgreSQL only: the embedded store has one writer by design.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use wharf::config::{DatabaseUrl, StoreConfig};
use wharf::dispatch::policy::{Filters, Policy, Target};
use wharf::events::{Event, EventKind};
use wharf::route::Repository;
use wharf::store::knowledge::{self, Artifact};
use wharf::store::outbox::{self, Attempt, ClaimLimits, DeliveryState, Lease, Next, Redelivery};
use wharf::store::{self, Store, StoreError, events, idempotency, policies, quota};

use crate::common::postgres as pgc;

/// A store of one backend, and what keeps its files.
struct Opened {
    store: Store,
    _dir: tempfile::TempDir,
    /// The PostgreSQL URL (to open a second handle: another "replica").
    url: Option<String>,
}

#[derive(Debug, Clone, Copy)]
enum Kind {
    Sqlite,
    Postgres,
}

async fn open(kind: Kind) -> Opened {
    let dir = tempfile::Builder::new()
        .prefix("wharf-it-store-")
        .tempdir()
        .unwrap();
    match kind {
        Kind::Sqlite => Opened {
            store: Store::open_sqlite(dir.path(), Default::default()).unwrap(),
            _dir: dir,
            url: None,
        },
        Kind::Postgres => {
            let url = pgc::database().await;
            let store = Store::open(&pg_config(&url), dir.path()).await.unwrap();
            Opened {
                store,
                _dir: dir,
                url: Some(url),
            }
        }
    }
}

fn pg_config(url: &str) -> StoreConfig {
    StoreConfig {
        url: Some(DatabaseUrl::new(url)),
        ..StoreConfig::default()
    }
}

/// Run each case on both backends: `conformance!(name);` expects `async fn name(kind: Kind)`.
macro_rules! conformance {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Kind::Sqlite).await
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Kind::Postgres).await
                }
            )+
        }
    };
}

conformance!(
    events_are_published_with_deliveries_and_pruned_when_done,
    an_event_and_its_deliveries_land_together_and_a_second_insert_is_refused,
    held_events_are_published_absorbed_or_released_once,
    chart_facts_are_remembered_and_forgotten,
    knowledge_counts_shared_blobs_once_and_gives_them_back,
    a_push_learned_blind_counts_as_learn_manifest_does,
    a_push_learned_with_its_event_lands_with_it_or_not_at_all,
    recount_follows_the_known_manifests,
    claims_respect_per_target_limits_and_skips,
    a_claim_that_is_not_full_says_when_the_next_delivery_is_due,
    deliveries_the_dispatcher_admits_are_created_claimed,
    retries_of_a_policy_switched_off_end_as_dead,
    a_delivery_ended_while_attempted_is_not_retried,
    redelivery_skips_running_deliveries_and_disabled_targets,
    redelivery_since_a_time_takes_the_later_dead_only,
    an_expired_lease_lets_another_claimer_take_over,
    old_target_secrets_leave_the_database,
    quota_reservations_never_exceed_the_limit,
    quota_reservations_hold_counted_blobs_and_never_count_twice,
    policy_changes_move_the_version_and_the_cache_follows,
    policies_read_by_a_job_that_failed_are_not_kept,
    events_list_filters,
    a_newer_schema_is_refused,
    project_and_user_ids_are_assigned_once,
    harbor_queries_filter_sort_and_page_in_sql,
    an_artifact_pushed_again_unchanged_is_not_rewritten,
    a_statement_sent_ahead_that_fails_fails_its_job_alone,
    delivery_counts_follow_every_change_without_counting_the_outbox,
    pull_events_leave_the_log_sooner,
    an_event_reads_back_whole_from_its_stored_row,
    deliveries_of_a_schema_13_database_keep_their_events,
    a_first_successful_attempt_is_kept_on_its_delivery,
    event_types_and_states_are_kept_as_codes,
    a_host_is_kept_once_and_only_committed_ids_are_reused,
    text_with_nul_characters_is_stored_with_replacement_characters,
    the_clock_skew_to_the_database_is_measured,
    idempotency_keys_are_kept_per_caller_until_they_expire,
    a_delivery_whose_target_version_is_gone_goes_to_the_current_target,
    a_manifest_pushed_again_while_its_delete_settled_stays_known,
);

fn repo(s: &str) -> Repository {
    Repository::parse(s).unwrap()
}

fn push(r: &str, digest: &str) -> Event {
    let mut e = Event::new(EventKind::PushArtifact, &repo(r), "alice");
    e.digest = Some(digest.to_string());
    e
}

fn policy(project: &str, targets: Vec<Target>) -> Policy {
    Policy {
        id: 0,
        project: project.into(),
        project_id: 0,
        name: format!("p-{}", targets.len()),
        description: String::new(),
        enabled: true,
        event_types: vec![EventKind::PushArtifact, EventKind::PullArtifact],
        targets,
        filters: Filters::default(),
        creator: "admin".into(),
        created_at: 0,
        updated_at: 0,
    }
}

async fn add_policy(s: &Store, p: Policy) -> i64 {
    s.write(move |c| policies::insert(c, &p)).await.unwrap()
}

/// Publish `n` push events of `prj/app`.
async fn publish(s: &Store, n: usize) {
    s.write(move |c| {
        for i in 0..n {
            events::insert(c, &push("prj/app", &format!("sha256:{i}")), None)?;
        }
        Ok(())
    })
    .await
    .unwrap();
}

/// 10,000 deliveries to `http://t/` in `state`, for the plan tests (PostgreSQL).
fn fill_deliveries(c: &wharf::store::Db<'_>, state: &str) -> Result<u64, StoreError> {
    c.exec(
        "INSERT INTO deliveries (event_seq, policy_id, target_index,
           target_address, target, target_id, state, not_before, created_at, updated_at)
         SELECT g, 1, 0, 'http://t/', '', 1, ?1, 0, 0, 0
         FROM generate_series(1, 10000) g",
        wharf::args![state],
    )
}

/// Rows of a table (the copy of a value in it, for checks on what is stored).
async fn count(s: &Store, sql: &'static str) -> i64 {
    s.read(move |c| Ok(c.int(sql, &[])?.unwrap_or(0)))
        .await
        .unwrap()
}

fn limits(limit: usize, per_target: usize) -> ClaimLimits {
    ClaimLimits {
        limit,
        per_target,
        ..ClaimLimits::default()
    }
}

fn lease(token: i64) -> Lease {
    Lease {
        token,
        until: store::now_ms() + 60_000,
    }
}

async fn claim(s: &Store, l: ClaimLimits, lease: Lease) -> Vec<outbox::Claimed> {
    s.write(move |c| outbox::claim(c, store::now_ms() + 1, &l, lease))
        .await
        .unwrap()
}

async fn state(s: &Store, id: i64) -> String {
    s.read(move |c| {
        Ok(c.text(
            "SELECT state FROM deliveries WHERE id = ?1",
            &[store::db::Value::Int(id)],
        )?
        .unwrap_or_default())
    })
    .await
    .unwrap()
}

// ---------------------------------------------------------------------------------------------

async fn events_are_published_with_deliveries_and_pruned_when_done(kind: Kind) {
    let o = open(kind).await;
    let s = &o.store;
    add_policy(s, policy("prj", vec![Target::http("http://a.example/")])).await;
    let published = s
        .write(|c| {
            let mut old = push("prj/a", "sha256:old");
            old.occurred_at = chrono::Utc::now() - chrono::Duration::days(40);
            let mut waiting = push("prj/a", "sha256:waiting");
            waiting.occurred_at = old.occurred_at;
            for e in [&old, &waiting, &push("prj/a", "sha256:fresh")] {
                events::insert(c, e, None)?;
            }
            Ok(c.take_published())
        })
        .await
        .unwrap();
    assert_eq!(
        published.len(),
        3,
        "the job's effects name what it published"
    );
    assert_eq!(count(s, "SELECT COUNT(*) FROM deliveries").await, 3);
    // the old one's delivery is done, the waiting one's is not
    s.write(|c| {
        c.exec(
            "UPDATE deliveries SET state = 'dead' WHERE event_seq IN (SELECT seq FROM events WHERE digest = 'sha256:old')",
            &[],
        )?;
        c.exec(
            "INSERT INTO attempts (delivery_id, started_at, duration_ms) SELECT id, 0, 1 FROM deliveries",
            &[],
        )
    })
    .await
    .unwrap();
    let before = store::now_ms() - 30 * 86_400_000;
    assert_eq!(
        s.write(move |c| events::prune(c, before, 100))
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        s.write(move |c| events::prune(c, before, 100))
            .await
            .unwrap(),
        0
    );
    let left = s
        .read(|c| {
            events::list(
                c,
                &events::EventFilter {
                    all_states: true,
                    limit: 100,
                    ..Default::default()
                },
            )
        })
        .await
        .unwrap();
    let mut digests: Vec<String> = left.into_iter().filter_map(|e| e.event.digest).collect();
    digests.sort();
    assert_eq!(digests, ["sha256:fresh", "sha256:waiting"]);
    assert_eq!(count(s, "SELECT COUNT(*) FROM deliveries").await, 2);
    assert_eq!(count(s, "SELECT COUNT(*) FROM attempts").await, 2);
    s.close().await;
}

/// A published event and its deliveries (on PostgreSQL the event's insert goes with its first
/// delivery's, as one statement): every delivery names the event, an event without one is
/// written alone, and the same event inserted again is refused by the events table — what a
/// retried push's write counts as "already recorded" — without a delivery more.
async fn an_event_and_its_deliveries_land_together_and_a_second_insert_is_refused(kind: Kind) {
    let o = open(kind).await;
    let s = &o.store;
    add_policy(s, policy("prj", vec![Target::http("http://a.example/")])).await;
    add_policy(
        s,
        policy(
            "prj",
            vec![
                Target::http("http://b.example/"),
                Target::http("http://c.example/"),
            ],
        ),
    )
    .await;
    let e = push("prj/a", "sha256:1");
    let (e1, e2) = (e.clone(), e.clone());
    s.write(move |c| {
        events::insert(c, &e1, None)?;
        events::insert(c, &push("other/a", "sha256:2"), None)
    })
    .await
    .unwrap();
    assert_eq!(count(s, "SELECT COUNT(*) FROM events").await, 2);
    assert_eq!(count(s, "SELECT COUNT(*) FROM deliveries").await, 3);
    assert_eq!(
        count(
            s,
            "SELECT COUNT(*) FROM deliveries d JOIN events e ON e.seq = d.event_seq WHERE e.digest = 'sha256:1'"
        )
        .await,
        3,
        "each delivery names its event"
    );
    let again = s
        .write(move |c| events::insert(c, &e2, None))
        .await
        .unwrap_err();
    assert!(again.is_unique_violation(), "{again}");
    if let Kind::Postgres = kind {
        assert_eq!(again.table(), Some("events"), "{again}");
    }
    assert_eq!(count(s, "SELECT COUNT(*) FROM events").await, 2);
    assert_eq!(count(s, "SELECT COUNT(*) FROM deliveries").await, 3);
    s.close().await;
}

async fn held_events_are_published_absorbed_or_released_once(kind: Kind) {
    let o = open(kind).await;
    let s = &o.store;
    let far = store::now_ms() + 3_600_000;
    // a digest as registries give them (kept as 32 bytes on SQLite) beside digests that are not
    let d1 = format!("sha256:{}", "0a".repeat(32));
    let (d1a, d1b, d1c) = (d1.clone(), d1.clone(), d1.clone());
    let published = s
        .write(move |c| {
            events::insert(c, &push("prj/a", &d1a), Some(far))?;
            events::insert(c, &push("prj/a", "sha256:2"), Some(far))?;
            events::insert(c, &push("prj/b", &d1a), Some(far))?;
            events::insert(c, &push("prj/c", "sha256:9"), Some(far))?;
            Ok(events::publish_held(c, "prj/a", &d1a)?
                .into_iter()
                .map(|e| e.digest)
                .collect::<Vec<_>>())
        })
        .await
        .unwrap();
    assert_eq!(published, [Some(d1.clone())]);
    // published once only
    let again = s
        .write(move |c| Ok(events::publish_held(c, "prj/a", &d1b)?.len()))
        .await
        .unwrap();
    assert_eq!(again, 0);
    // an index absorbs a held platform manifest
    let absorbed = s
        .write(move |c| events::cancel_held(c, "prj/b", &[d1c]))
        .await
        .unwrap();
    assert_eq!(absorbed, 1);
    // the rest is released when due
    let due = s
        .write(move |c| {
            Ok((
                events::next_release(c)?,
                events::publish_due(c, far + 1)?.len(),
                events::next_release(c)?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(due, (Some(far), 2, None));
    s.close().await;
}

async fn chart_facts_are_remembered_and_forgotten(kind: Kind) {
    use wharf::store::charts::{self, ChartFacts};
    let o = open(kind).await;
    let s = &o.store;
    let f = ChartFacts {
        project: "prj".into(),
        name: "web".into(),
        version: "1.0.0".into(),
        chart_type: "application".into(),
        app_version: Some("2.4".into()),
        size: Some(1234),
    };
    let got = {
        let f = f.clone();
        s.write(move |c| {
            charts::remember(c, &f)?;
            Ok((
                charts::get(c, "prj", "web", "1.0.0")?,
                charts::get(c, "other", "web", "1.0.0")?,
            ))
        })
        .await
        .unwrap()
    };
    assert_eq!(got, (Some(f.clone()), None));
    let mut g = f.clone();
    g.chart_type = "library".into();
    g.app_version = None;
    g.size = None;
    let again = {
        let g = g.clone();
        s.write(move |c| {
            charts::remember(c, &g)?;
            charts::get(c, "prj", "web", "1.0.0")
        })
        .await
        .unwrap()
    };
    assert_eq!(again, Some(g.clone()));
    // what a download learned from ChartMuseum never replaces what an upload committed
    let kept = {
        let f = f.clone();
        s.write(move |c| {
            charts::remember_if_unknown(c, &f)?;
            charts::get(c, "prj", "web", "1.0.0")
        })
        .await
        .unwrap()
    };
    assert_eq!(kept, Some(g));
    let gone = s
        .write(|c| {
            charts::forget(c, "prj", "web", "1.0.0")?;
            charts::forget(c, "prj", "web", "1.0.0")?;
            charts::get(c, "prj", "web", "1.0.0")
        })
        .await
        .unwrap();
    assert_eq!(gone, None);
    s.close().await;
}

fn artifact(r: &str, digest: &str, blobs: &[(&str, u64)]) -> Artifact {
    Artifact {
        repository: r.into(),
        digest: digest.into(),
        kind: knowledge::ArtifactKind::Image,
        blobs: blobs.iter().map(|(d, n)| (d.to_string(), *n)).collect(),
        ..Artifact::default()
    }
}

async fn knowledge_counts_shared_blobs_once_and_gives_them_back(kind: Kind) {
    let o = open(kind).await;
    let s = &o.store;
    let a = artifact("p/a", "m1", &[("c1", 10), ("l1", 100), ("l2", 200)]);
    let b = artifact("p/b", "m2", &[("c2", 20), ("l1", 100)]);
    let steps = s
        .write(move |c| {
            let first = knowledge::learn_manifest(c, &a, Some("v1"))?;
            let again = knowledge::learn_manifest(c, &a, Some("v2"))?;
            let adding_b = quota::adding(c, "p", &b.blobs)?;
            let second = knowledge::learn_manifest(c, &b, None)?;
            Ok((
                first,
                again,
                adding_b,
                second,
                knowledge::tags_of(c, "p/a", "m1")?,
                knowledge::repository_created(c, "p/a")?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(steps.0.usage, Some((0, 310)));
    // the repository's first-seen time comes with what a push learns, as read afterwards
    assert!(steps.5.is_some());
    assert_eq!(steps.0.repository_created, steps.5);
    assert_eq!(steps.1.repository_created, steps.5);
    assert!(
        !steps.1.new && steps.1.usage.is_none(),
        "a manifest counts once"
    );
    assert_eq!(steps.2, 20, "l1 is already counted");
    assert_eq!(steps.3.usage, Some((310, 330)));
    assert_eq!(steps.4, ["v1", "v2"]);
    let usage = |p: &'static str| s.read(move |c| quota::usage(c, p));
    assert_eq!(usage("other").await.unwrap(), 0);
    let gone = s
        .write(|c| knowledge::forget_manifest(c, "p/a", "m1"))
        .await
        .unwrap();
    assert_eq!(gone, Some((330, 120)), "l1 is still referenced by b");
    assert_eq!(
        s.write(|c| knowledge::forget_manifest(c, "p/a", "m1"))
            .await
            .unwrap(),
        None
    );
    s.write(|c| knowledge::forget_manifest(c, "p/b", "m2"))
        .await
        .unwrap();
    assert_eq!(usage("p").await.unwrap(), 0);
    // sizes never wrap: four blobs of 2^62 bytes saturate
    let huge = artifact(
        "q/h",
        "m3",
        &[
            ("h1", 1 << 62),
            ("h2", 1 << 62),
            ("h3", 1 << 62),
            ("h4", 1 << 62),
        ],
    );
    let learned = s
        .write(move |c| knowledge::learn_manifest(c, &huge, None))
        .await
        .unwrap();
    assert_eq!(learned.usage, Some((0, u64::MAX)));
    assert_eq!(usage("q").await.unwrap(), i64::MAX as u64, "stored clamped");
    s.close().await;
}

/// A push's learning and its event in one job (PostgreSQL: the learning carried into the
/// event's statement — with a delivery created claimed, whose id it returns, or without a
/// delivery — run alone in autocommit): both land, or — the event refused as a second insert
/// of its id — neither. A statement the job sends after the learning sees it.
async fn a_push_learned_with_its_event_lands_with_it_or_not_at_all(kind: Kind) {
    let o = open(kind).await;
    let s = &o.store;
    let target = "http://a.example/";
    add_policy(s, policy("prj", vec![Target::http(target)])).await;
    let intake = Arc::new(TestIntake {
        admits: target.to_string(),
        ..TestIntake::default()
    });
    let dynamic: Arc<dyn outbox::Intake> = intake.clone();
    s.set_intake(Arc::downgrade(&dynamic));
    // events without learning first: the policies are then cached, and the pushes' jobs read
    // nothing before their event (a read would send the carried call first, on its own)
    for e in [push("prj/z", "m0"), push("none/z", "m0")] {
        s.write(move |c| events::insert(c, &e, None)).await.unwrap();
    }
    let tags = |r: &'static str| s.read(move |c| knowledge::tags_of(c, r, "m1"));
    let usage = |p: &'static str| s.read(move |c| quota::usage(c, p));
    let e = push("prj/a", "m1");
    let (e1, e2) = (e.clone(), e.clone());
    for (r, e, blob) in [
        ("prj/a", e1, ("l1", 100)),
        ("none/a", push("none/a", "m1"), ("l2", 200)),
    ] {
        let a = artifact(r, "m1", &[blob]);
        s.write(move |c| {
            knowledge::learn_pushed(c, &a, Some("v1"))?;
            events::insert(c, &e, None)
        })
        .await
        .unwrap();
        assert_eq!(tags(r).await.unwrap(), ["v1"], "{r}");
    }
    assert_eq!(
        usage("prj").await.unwrap(),
        100,
        "learned with its delivery"
    );
    assert_eq!(
        usage("none").await.unwrap(),
        200,
        "learned without a delivery"
    );
    assert_eq!(count(s, "SELECT COUNT(*) FROM events").await, 4);
    assert_eq!(count(s, "SELECT COUNT(*) FROM deliveries").await, 2);
    // the push's delivery was created claimed, and its id came back with the statement
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while intake.started.lock().unwrap().len() < 2 {
        assert!(std::time::Instant::now() < deadline, "not handed over");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let id = {
        let started = intake.started.lock().unwrap();
        assert_eq!(started[1].claimed.event.id, e.id);
        started[1].id.get().expect("id after commit")
    };
    let of = s
        .read(move |c| {
            c.text(
                "SELECT e.repository FROM deliveries d JOIN events e ON e.seq = d.event_seq WHERE d.id = ?1",
                wharf::args![id],
            )
        })
        .await
        .unwrap();
    assert_eq!(of.as_deref(), Some("prj/a"));
    // the event refused: the tag learned with it is not kept
    let a = artifact("prj/a", "m1", &[("l1", 100)]);
    let again = s
        .write(move |c| {
            knowledge::learn_pushed(c, &a, Some("v2"))?;
            events::insert(c, &e2, None)
        })
        .await
        .unwrap_err();
    assert!(again.is_unique_violation(), "{again}");
    assert_eq!(tags("prj/a").await.unwrap(), ["v1"]);
    assert_eq!(count(s, "SELECT COUNT(*) FROM events").await, 4);
    assert_eq!(count(s, "SELECT COUNT(*) FROM deliveries").await, 2);
    // what the job reads after its learning sees it (the call goes first)
    let a = artifact("prj/a", "m1", &[("l1", 100)]);
    let seen = s
        .write(move |c| {
            knowledge::learn_pushed(c, &a, Some("v3"))?;
            knowledge::tags_of(c, "prj/a", "m1")
        })
        .await
        .unwrap();
    assert_eq!(seen, ["v1", "v3"]);
    s.close().await;
}

/// `learn_pushed` (PostgreSQL: nothing read back, the database decides whether the manifest is
/// new) leaves what `learn_manifest` leaves: the artifact, its tags, the project's usage.
async fn a_push_learned_blind_counts_as_learn_manifest_does(kind: Kind) {
    let o = open(kind).await;
    let s = &o.store;
    let usage = |p: &'static str| s.read(move |c| quota::usage(c, p));
    let a = artifact(
        "p/a",
        "m1",
        &[("l1", 100), ("c1", 10), ("l2", 200), ("l1", 100)],
    );
    let b = artifact("p/b", "m2", &[("c2", 20), ("l1", 100)]);
    let (a1, a2, b1) = (a.clone(), a.clone(), b.clone());
    s.write(move |c| knowledge::learn_pushed(c, &a1, Some("v1")))
        .await
        .unwrap();
    assert_eq!(
        usage("p").await.unwrap(),
        310,
        "l1 listed twice counts once"
    );
    // the retag: nothing counted again, and (PostgreSQL) the artifact's row not written
    let version = || {
        s.read(|c| match c.backend() {
            store::Backend::Postgres => c.text(
                "SELECT CAST(xmin AS TEXT) || ':' || CAST(xmax AS TEXT) || ':' || CAST(ctid AS TEXT) FROM artifacts WHERE repository = 'p/a'",
                &[],
            ),
            store::Backend::Sqlite => Ok(None),
        })
    };
    let before = version().await.unwrap();
    s.write(move |c| knowledge::learn_pushed(c, &a2, Some("v2")))
        .await
        .unwrap();
    assert_eq!(
        version().await.unwrap(),
        before,
        "a retag rewrites and locks nothing"
    );
    s.write(move |c| knowledge::learn_pushed(c, &b1, None))
        .await
        .unwrap();
    assert_eq!(usage("p").await.unwrap(), 330, "l1 is already counted");
    let (known, tags) = s
        .read(|c| {
            Ok((
                knowledge::artifact(c, "p/a", "m1")?,
                knowledge::tags_of(c, "p/a", "m1")?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(known.as_ref(), Some(&a));
    assert_eq!(tags, ["v1", "v2"]);
    // a manifest that changed is rewritten, and still counted once
    let changed = Artifact {
        size: Some(5),
        media_type: Some("application/vnd.oci.image.manifest.v1+json".into()),
        ..a.clone()
    };
    let c1 = changed.clone();
    s.write(move |c| knowledge::learn_pushed(c, &c1, None))
        .await
        .unwrap();
    let known = s
        .read(|c| knowledge::artifact(c, "p/a", "m1"))
        .await
        .unwrap();
    assert_eq!(known, Some(changed));
    assert_eq!(usage("p").await.unwrap(), 330);
    // pushes of one new manifest racing (separate transactions on PostgreSQL): counted once
    let n = artifact("p/n", "m9", &[("n1", 1000), ("l1", 100)]);
    let racing = (0..4).map(|_| {
        let n = n.clone();
        s.write(move |c| knowledge::learn_pushed(c, &n, None))
    });
    for r in futures_util::future::join_all(racing).await {
        r.unwrap();
    }
    assert_eq!(usage("p").await.unwrap(), 1330);
    // and deleting gives back what learn_manifest would
    let gone = s
        .write(|c| knowledge::forget_manifest(c, "p/a", "m1"))
        .await
        .unwrap();
    assert_eq!(gone, Some((1330, 1120)), "l1 is still referenced");
    // sizes saturate
    let huge = artifact(
        "q/h",
        "m3",
        &[
            ("h1", 1 << 62),
            ("h2", 1 << 62),
            ("h3", 1 << 62),
            ("h4", u64::MAX),
        ],
    );
    s.write(move |c| knowledge::learn_pushed(c, &huge, None))
        .await
        .unwrap();
    assert_eq!(usage("q").await.unwrap(), i64::MAX as u64, "stored clamped");
    // the repository's first-seen time: cached once read, dropped when a manifest goes
    let cache = s.policy_cache();
    let created = s
        .write(|c| knowledge::repository_created_cached(c, "p/b"))
        .await
        .unwrap();
    assert!(created.is_some());
    assert_eq!(cache.repository_created("p/b"), Some(created));
    s.write(|c| knowledge::forget_manifest(c, "p/b", "m2"))
        .await
        .unwrap();
    assert_eq!(cache.repository_created("p/b"), None);
    assert_eq!(
        s.write(|c| knowledge::repository_created_cached(c, "p/b"))
            .await
            .unwrap(),
        None,
        "no manifest of p/b left"
    );
    // a repository wharf knows no manifest of (pushed before wharf): the answer is cached
    // too, so that each of its pulls does not ask again; learning a manifest of it drops it
    assert_eq!(
        cache.repository_created("p/b"),
        Some(None),
        "kept as unknown"
    );
    let m4 = artifact("p/b", "m4", &[("l4", 4)]);
    s.write(move |c| knowledge::learn_manifest(c, &m4, None))
        .await
        .unwrap();
    assert_ne!(cache.repository_created("p/b"), Some(None));
    assert!(
        s.write(|c| knowledge::repository_created_cached(c, "p/b"))
            .await
            .unwrap()
            .is_some(),
        "p/b has a manifest again"
    );
    s.close().await;
}

async fn recount_follows_the_known_manifests(kind: Kind) {
    let o = open(kind).await;
    let s = &o.store;
    s.write(|c| {
        knowledge::upsert_artifact(c, &artifact("p/a", "m1", &[("c1", 10), ("l1", 100)]))?;
        knowledge::upsert_artifact(c, &artifact("p/b", "m2", &[("c2", 20), ("l1", 100)]))?;
        knowledge::upsert_artifact(c, &artifact("q/a", "m1", &[("c1", 10), ("l1", 100)]))?;
        knowledge::upsert_artifact(c, &artifact("p/i", "idx", &[]))?;
        // stale counts of a blob nobody references any more
        quota::add_refs(c, "p", &[("gone".to_string(), 5000)])?;
        // and usage of a project without manifests
        quota::add_refs(c, "r", &[("gone".to_string(), 7)])
    })
    .await
    .unwrap();
    quota::recount(s).await.unwrap();
    let usage = |p: &'static str| s.read(move |c| quota::usage(c, p));
    assert_eq!(usage("p").await.unwrap(), 130);
    assert_eq!(usage("q").await.unwrap(), 110);
    // l1 is referenced twice in p: deleting one manifest keeps it
    s.write(|c| quota::remove_refs(c, "p", &[("c1".into(), 10), ("l1".into(), 100)]))
        .await
        .unwrap();
    assert_eq!(usage("p").await.unwrap(), 120);
    quota::recount(s).await.unwrap();
    assert_eq!(usage("p").await.unwrap(), 130, "idempotent");
    assert_eq!(usage("r").await.unwrap(), 0);
    let all = s.read(quota::all_usage).await.unwrap();
    assert_eq!(all, [("p".to_string(), 130), ("q".to_string(), 110)]);
    s.close().await;
}

async fn claims_respect_per_target_limits_and_skips(kind: Kind) {
    let o = open(kind).await;
    let s = &o.store;
    let a = "http://a.example/";
    add_policy(s, policy("prj", vec![Target::http(a)])).await;
    publish(s, 5).await;
    // one attempt to `a` is running: room for one more of two
    let busy = ClaimLimits {
        in_flight: HashMap::from([(a.to_string(), 1)]),
        ..limits(100, 2)
    };
    assert_eq!(claim(s, busy, lease(1)).await.len(), 1);
    assert_eq!(claim(s, limits(100, 2), lease(2)).await.len(), 2);
    let full = ClaimLimits {
        in_flight: HashMap::from([(a.to_string(), 2)]),
        ..limits(100, 2)
    };
    assert!(claim(s, full, lease(3)).await.is_empty());
    let skipped = ClaimLimits {
        skip: vec![a.to_string()],
        ..limits(100, 2)
    };
    assert!(claim(s, skipped, lease(4)).await.is_empty());
    // a list of addresses kept from an earlier scan: only those are claimed from
    let listed = ClaimLimits {
        targets: Some(vec!["http://other.example/".to_string()]),
        ..limits(100, 2)
    };
    assert!(claim(s, listed, lease(5)).await.is_empty());
    let listed: Vec<String> = vec![a.to_string()];
    let due = s
        .read(move |c| outbox::next_due_of(c, &[], Some(&listed)))
        .await
        .unwrap();
    assert!(due.is_some());
    let none = s
        .read(|c| outbox::next_due_of(c, &[], Some(&[])))
        .await
        .unwrap();
    assert_eq!(none, None);
    assert_eq!(
        count(s, "SELECT COUNT(*) FROM deliveries WHERE state = 'pending'").await,
        2
    );
    let due = s.read(|c| outbox::next_due(c, &[])).await.unwrap();
    assert!(due.is_some());
    let counts = s.read(outbox::counts).await.unwrap();
    assert!(counts.contains(&(DeliveryState::Running, 3)), "{counts:?}");
    s.close().await;
}

/// Regression: on a database whose collation is not bytewise (`en-US`: `a` < `B` < `c`), the
/// addresses with pending deliveries came in the database's order, while the dispatcher keeps
/// the list in Rust's byte order and searches it (`binary_search`): an address it did not find
/// was added twice, and claimed twice over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_addresses_come_in_byte_order_whatever_the_collation() {
    let c = pgc::cluster();
    let name = format!("icu{}", std::process::id());
    c.execute(
        "postgres",
        &format!(
            "CREATE DATABASE {name} TEMPLATE template0 LOCALE_PROVIDER icu ICU_LOCALE 'en-US' LOCALE 'C.UTF-8'"
        ),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&pg_config(&c.url(&name)), dir.path())
        .await
        .unwrap();
    let (a, b, cc) = (
        "http://a.example/",
        "http://B.example/",
        "http://c.example/",
    );
    add_policy(
        &s,
        policy(
            "prj",
            vec![Target::http(a), Target::http(b), Target::http(cc)],
        ),
    )
    .await;
    publish(&s, 1).await;
    let got = s.read(outbox::pending_targets).await.unwrap();
    assert_eq!(got, [b, a, cc]);
    s.close().await;
}

/// The dispatcher's claim (`outbox::claim_next`): a batch that is not full comes with the due
/// time of the next delivery it could claim, looked up in the same transaction when asked to
/// look ahead, so the dispatcher sleeps until then instead of claiming again to find nothing.
/// Targets at their limit (skipped, or filled by this claim) do not count: they wake it by
/// finishing.
async fn a_claim_that_is_not_full_says_when_the_next_delivery_is_due(kind: Kind) {
    let o = open(kind).await;
    let s = &o.store;
    let (a, b) = ("http://a.example/", "http://b.example/");
    add_policy(s, policy("prj", vec![Target::http(a), Target::http(b)])).await;
    publish(s, 2).await;
    let later = store::now_ms() + 60_000;
    s.write(move |c| {
        c.exec(
            "UPDATE deliveries SET not_before = ?1
             WHERE id = (SELECT MAX(id) FROM deliveries WHERE target_address = ?2)",
            wharf::args![later, a],
        )
    })
    .await
    .unwrap();
    let claim_next = |l: ClaimLimits, known: Option<Vec<String>>, token: i64| {
        let ahead = token != 4;
        s.write(move |c| outbox::claim_next(c, store::now_ms() + 1, l, known, lease(token), ahead))
    };
    // a full batch: no lookup
    let first = claim_next(limits(1, 2), None, 1).await.unwrap();
    assert_eq!(first.batch.len(), 1);
    assert_eq!(first.batch[0].target.address, a);
    assert_eq!(first.scanned, Some(vec![a.to_string(), b.to_string()]));
    assert_eq!(first.next_due, None);
    // not full: `a` has room but its other delivery is due later; `b` is filled by this claim
    let busy = HashMap::from([(a.to_string(), 1)]);
    let second = claim_next(
        ClaimLimits {
            in_flight: busy,
            ..limits(100, 2)
        },
        None,
        2,
    )
    .await
    .unwrap();
    let mut got: Vec<&str> = second
        .batch
        .iter()
        .map(|d| d.target.address.as_str())
        .collect();
    got.sort_unstable();
    assert_eq!(got, vec![b, b]);
    assert_eq!(second.next_due, Some(later));
    assert!(second.filled, "`b` was filled to its limit");
    // from a kept list of addresses, nothing claimable: no scan, the same due time
    let third = claim_next(
        ClaimLimits {
            in_flight: HashMap::from([(a.to_string(), 1), (b.to_string(), 2)]),
            skip: vec![b.to_string()],
            ..limits(100, 2)
        },
        Some(vec![a.to_string(), b.to_string()]),
        3,
    )
    .await
    .unwrap();
    assert!(third.batch.is_empty());
    assert_eq!(third.scanned, None);
    assert_eq!(third.next_due, Some(later));
    assert!(!third.filled);
    // not looking ahead (nothing was scheduled for later since a claim last found nothing)
    let fourth = claim_next(limits(100, 2), Some(vec![a.to_string()]), 4)
        .await
        .unwrap();
    assert!(fourth.batch.is_empty());
    assert_eq!(fourth.next_due, None);
    s.close().await;
}

/// An intake (the dispatcher, as fan-out sees it) that admits one address: counts the holds it
/// gave and those released, and keeps what it is asked to start.
#[derive(Default)]
struct TestIntake {
    admits: String,
    given: std::sync::atomic::AtomicUsize,
    released: Arc<std::sync::atomic::AtomicUsize>,
    started: std::sync::Mutex<Vec<outbox::Born>>,
}

struct TestHold(Arc<std::sync::atomic::AtomicUsize>);

impl Drop for TestHold {
    fn drop(&mut self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl outbox::Intake for TestIntake {
    fn admit(&self, address: &str) -> Option<outbox::Admission> {
        if address != self.admits {
            return None;
        }
        let n = self.given.fetch_add(1, std::sync::atomic::Ordering::SeqCst) as i64;
        Some(outbox::Admission {
            lease: Lease {
                token: 1000 + n,
                until: store::now_ms() + 60_000,
            },
            hold: Box::new(TestHold(self.released.clone())),
        })
    }

    fn start(&self, born: Vec<outbox::Born>) {
        self.started.lock().unwrap().extend(born);
    }
}

/// Fan-out creates a delivery the dispatcher admits already claimed (`running` under the
/// admission's lease, no claim needed) and hands it over after COMMIT with its row's id; the
/// others stay pending for a claim. A job that rolls back releases its admissions and hands
/// nothing over.
async fn deliveries_the_dispatcher_admits_are_created_claimed(kind: Kind) {
    use std::sync::atomic::Ordering::SeqCst;
    let o = open(kind).await;
    let s = &o.store;
    let (a, b) = ("http://a.example/", "http://b.example/");
    add_policy(s, policy("prj", vec![Target::http(a), Target::http(b)])).await;
    let intake = Arc::new(TestIntake {
        admits: a.to_string(),
        ..TestIntake::default()
    });
    let dynamic: Arc<dyn outbox::Intake> = intake.clone();
    s.set_intake(Arc::downgrade(&dynamic));
    publish(s, 1).await;
    // handed over after the answer: wait for it
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while intake.started.lock().unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "nothing started");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let (id, token, until) = {
        let started = intake.started.lock().unwrap();
        assert_eq!(started.len(), 1);
        let born = &started[0];
        assert_eq!(born.claimed.target.address, a);
        assert_eq!(born.claimed.attempts, 0);
        assert!(born.claimed.project_id > 0);
        (
            born.id.get().expect("id after commit"),
            born.claimed.token,
            born.claimed.lease_until,
        )
    };
    assert_eq!(token, 1000);
    let row = s
        .read(move |c| {
            c.row(
                "SELECT state, claim_token, lease_until, target_address FROM deliveries WHERE id = ?1",
                wharf::args![id],
                |r| Ok((r.text(0)?, r.opt_i64(1)?, r.opt_i64(2)?, r.text(3)?)),
            )
        })
        .await
        .unwrap()
        .expect("the delivery handed over is a row");
    assert_eq!(
        row,
        (
            "running".to_string(),
            Some(token),
            Some(until),
            a.to_string()
        )
    );
    // the other target's delivery is pending, and the only one a claim finds
    let claimed = claim(s, limits(10, 10), lease(7)).await;
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].target.address, b);
    // the handed-over delivery's outcome is recorded under the admission's token
    let attempt = Attempt {
        delivery_id: id,
        started_at: store::now_ms(),
        status_code: Some(200),
        ..Attempt::default()
    };
    s.write(move |c| outbox::record(c, &attempt, Next::Succeeded, token))
        .await
        .unwrap();
    assert_eq!(state(s, id).await, "succeeded");
    assert_eq!(
        intake.released.load(SeqCst),
        0,
        "the hold is the dispatcher's until the attempt ends"
    );
    intake.started.lock().unwrap().clear();
    assert_eq!(intake.released.load(SeqCst), 1);

    // a job that fails after its fan-out: nothing created, nothing handed over, hold released
    let before = count(s, "SELECT COUNT(*) FROM deliveries").await;
    let failed = s
        .write(|c| {
            events::insert(c, &push("prj/app", "sha256:rolled-back"), None)?;
            Err::<(), _>(StoreError::Closed)
        })
        .await;
    assert!(failed.is_err());
    assert_eq!(intake.given.load(SeqCst), 2);
    assert_eq!(intake.released.load(SeqCst), 2);
    assert_eq!(count(s, "SELECT COUNT(*) FROM deliveries").await, before);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(intake.started.lock().unwrap().is_empty());
}

async fn retries_of_a_policy_switched_off_end_as_dead(kind: Kind) {
    let o = open(kind).await;
    let s = &o.store;
    add_policy(s, policy("prj", vec![Target::http("http://a.example/")])).await;
    publish(s, 2).await;
    s.write(|c| c.exec("UPDATE policies SET enabled = 0", &[]))
        .await
        .unwrap();
    assert!(claim(s, limits(100, 16), lease(1)).await.is_empty());
    let dead: Vec<String> = s
        .read(|c| {
            c.rows(
                "SELECT last_error FROM deliveries WHERE state = 'dead'",
                &[],
                |r| r.text(0),
            )
        })
        .await
        .unwrap();
    assert_eq!(dead, vec!["policy disabled", "policy disabled"]);
    s.close().await;
}

/// A store with a policy of one target and two published events, both deliveries claimed
/// under token 7: the store, the policy's id and the two deliveries' ids.
async fn two_claimed(kind: Kind) -> (Opened, i64, i64, i64) {
    let o = open(kind).await;
    let pid = add_policy(
        &o.store,
        policy("prj", vec![Target::http("http://a.example/")]),
    )
    .await;
    publish(&o.store, 2).await;
    let got = claim(&o.store, limits(2, 2), lease(7)).await;
    let (a, b) = (got[0].id, got[1].id);
    (o, pid, a, b)
}

async fn a_delivery_ended_while_attempted_is_not_retried(kind: Kind) {
    let (o, pid, a, b) = two_claimed(kind).await;
    let s = &o.store;
    // the policy is deleted while both attempts run
    assert!(
        s.write(move |c| policies::delete(c, "prj", pid))
            .await
            .unwrap()
    );
    let timeout = Attempt {
        delivery_id: a,
        error_kind: Some(outbox::FailureKind::Timeout),
        ..Attempt::default()
    };
    s.write(move |c| outbox::record(c, &timeout, Next::RetryAt(store::now_ms()), 7))
        .await
        .unwrap();
    assert_eq!(state(s, a).await, "dead");
    let ok = Attempt {
        delivery_id: b,
        status_code: Some(200),
        ..Attempt::default()
    };
    s.write(move |c| outbox::record(c, &ok, Next::Succeeded, 7))
        .await
        .unwrap();
    assert_eq!(state(s, b).await, "succeeded");
    let attempts = s.read(move |c| outbox::attempts(c, a)).await.unwrap();
    assert_eq!(attempts.len(), 1, "the attempt is kept");
    s.close().await;
}

async fn redelivery_skips_running_deliveries_and_disabled_targets(kind: Kind) {
    let o = open(kind).await;
    let s = &o.store;
    let pid = add_policy(s, policy("prj", vec![Target::http("http://a.example/")])).await;
    publish(s, 1).await;
    let got = claim(s, limits(1, 1), lease(3)).await;
    let id = got[0].id;
    let r = |p, d| s.write(move |c| outbox::redeliver(c, p, d));
    assert_eq!(r(pid, id).await.unwrap(), Redelivery::Running);
    assert_eq!(r(pid + 1, id).await.unwrap(), Redelivery::NotFound);
    let gone = Attempt {
        delivery_id: id,
        status_code: Some(410),
        ..Attempt::default()
    };
    s.write(move |c| {
        outbox::record(c, &gone, Next::Dead, 3)?;
        outbox::disable_target(c, pid, 0, "http://a.example/", "gone")
    })
    .await
    .unwrap();
    assert_eq!(r(pid, id).await.unwrap(), Redelivery::TargetDisabled);
    // Regression: every later 410 of the target (attempts in flight on every replica) wrote
    // the policy and the policy version again, in the recorder's transaction, which also
    // holds its outcomes' rows: replicas doing so at once could deadlock and lose a batch
    let version = s.policy_version().await.unwrap();
    s.write(move |c| outbox::disable_target(c, pid, 0, "http://a.example/", "gone"))
        .await
        .unwrap();
    assert_eq!(s.policy_version().await.unwrap(), version, "written again");
    assert_eq!(
        s.write(move |c| outbox::redeliver_dead(c, pid))
            .await
            .unwrap(),
        0
    );
    assert_eq!(state(s, id).await, "dead");
    // re-enabled: redelivered, due now, with the current target version
    s.write(move |c| {
        let mut p = policies::get_by_id(c, pid)?.unwrap();
        p.targets[0].disabled = false;
        policies::update(c, &p).map(|_| ())
    })
    .await
    .unwrap();
    assert_eq!(
        s.write(move |c| outbox::redeliver_dead(c, pid))
            .await
            .unwrap(),
        1
    );
    assert_eq!(state(s, id).await, "pending");
    s.close().await;
}

async fn redelivery_since_a_time_takes_the_later_dead_only(kind: Kind) {
    let o = open(kind).await;
    let s = &o.store;
    let pid = add_policy(s, policy("prj", vec![Target::http("http://a.example/")])).await;
    publish(s, 2).await;
    let ids = s
        .read(|c| c.rows("SELECT id FROM deliveries ORDER BY id", &[], |r| r.i64(0)))
        .await
        .unwrap();
    let (older, newer) = (ids[0], ids[1]);
    // both failed for good (set directly: how they got there is another case's matter)
    s.write(|c| c.exec("UPDATE deliveries SET state = 'dead', attempts = 3", &[]))
        .await
        .unwrap();
    // the older one was created an hour ago
    let hour_ago = store::now_ms() - 3_600_000;
    s.write(move |c| {
        c.exec(
            "UPDATE deliveries SET created_at = ?1 WHERE id = ?2",
            wharf::args![hour_ago, older],
        )
        .map(|_| ())
    })
    .await
    .unwrap();
    let since = store::now_ms() - 600_000;
    let n = s
        .write(move |c| outbox::redeliver_dead_since(c, pid, since))
        .await
        .unwrap();
    assert_eq!(n, 1);
    assert_eq!(state(s, newer).await, "pending");
    assert_eq!(state(s, older).await, "dead");
    // no time: every dead one
    assert_eq!(
        s.write(move |c| outbox::redeliver_dead(c, pid))
            .await
            .unwrap(),
        1
    );
    assert_eq!(state(s, older).await, "pending");
    s.close().await;
}

async fn an_expired_lease_lets_another_claimer_take_over(kind: Kind) {
    let o = open(kind).await;
    let s = &o.store;
    add_policy(s, policy("prj", vec![Target::http("http://a.example/")])).await;
    publish(s, 1).await;
    let short = Lease {
        token: 11,
        until: store::now_ms() + 50,
    };
    let first = claim(s, limits(10, 10), short).await;
    assert_eq!(first.len(), 1);
    let id = first[0].id;
    // not before the lease expires
    assert_eq!(
        s.write(|c| outbox::reclaim_expired(c, store::now_ms()))
            .await
            .unwrap(),
        0
    );
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert_eq!(
        s.write(|c| outbox::reclaim_expired(c, store::now_ms()))
            .await
            .unwrap(),
        1
    );
    let second = claim(s, limits(10, 10), lease(22)).await;
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].id, id);
    assert_eq!(
        second[0].event.id, first[0].event.id,
        "same event id on every attempt"
    );
    // the first claimer comes back late: its failure does not move the delivery, nor stand
    // as its last status (alone, or in a batch)
    let late = Attempt {
        delivery_id: id,
        status_code: Some(503),
        error_kind: Some(outbox::FailureKind::Http),
        ..Attempt::default()
    };
    let batch = vec![outbox::Outcome {
        attempt: Attempt {
            status_code: Some(502),
            ..late.clone()
        },
        next: Next::RetryAt(0),
        token: 11,
    }];
    s.write(move |c| outbox::record(c, &late, Next::RetryAt(0), 11))
        .await
        .unwrap();
    s.write(move |c| outbox::record_many(c, &batch))
        .await
        .unwrap();
    assert_eq!(state(s, id).await, "running");
    let last_status = s
        .read(move |c| {
            c.int(
                "SELECT last_status FROM deliveries WHERE id = ?1",
                &[store::db::Value::Int(id)],
            )
        })
        .await
        .unwrap();
    assert_eq!(last_status, None, "a late attempt's status does not stand");
    s.write(move |c| outbox::defer(c, id, 0, 11)).await.unwrap();
    assert_eq!(state(s, id).await, "running", "only the holder defers");
    let ok = Attempt {
        delivery_id: id,
        status_code: Some(200),
        ..Attempt::default()
    };
    s.write(move |c| outbox::record(c, &ok, Next::Succeeded, 22))
        .await
        .unwrap();
    assert_eq!(state(s, id).await, "succeeded");
    s.close().await;
}

async fn old_target_secrets_leave_the_database(kind: Kind) {
    let o = open(kind).await;
    let s = &o.store;
    let with_header = |h: &str| Target {
        auth_header: Some(h.to_string()),
        secret: Some(format!("whsec-{h}")),
        ..Target::http("http://a.example/")
    };
    let pid = add_policy(s, policy("prj", vec![with_header("Bearer old-1")])).await;
    publish(s, 2).await;
    // one delivery done, one still pending when the header is rotated
    let got = claim(s, limits(1, 1), lease(5)).await;
    let ok = Attempt {
        delivery_id: got[0].id,
        status_code: Some(200),
        ..Attempt::default()
    };
    s.write(move |c| outbox::record(c, &ok, Next::Succeeded, 5))
        .await
        .unwrap();
    s.write(move |c| {
        let mut p = policies::get_by_id(c, pid)?.unwrap();
        p.targets = vec![with_header("Bearer new-2")];
        policies::update(c, &p).map(|_| ())
    })
    .await
    .unwrap();
    let stored = || async {
        s.read(|c| {
            let mut all = c.rows("SELECT body FROM delivery_targets", &[], |r| r.text(0))?;
            all.extend(c.rows("SELECT target FROM deliveries", &[], |r| r.text(0))?);
            Ok(all.join("\n"))
        })
        .await
        .unwrap()
    };
    let now = stored().await;
    assert!(
        now.contains("old-1"),
        "the pending delivery still needs the old version"
    );
    // a new event goes to the new version; the pending one finishes
    publish(s, 1).await;
    let got = claim(s, limits(10, 10), lease(6)).await;
    assert_eq!(got.len(), 2);
    let headers: Vec<Option<String>> = got.iter().map(|d| d.target.auth_header.clone()).collect();
    assert!(
        headers.contains(&Some("Bearer old-1".into())),
        "{headers:?}"
    );
    assert!(
        headers.contains(&Some("Bearer new-2".into())),
        "{headers:?}"
    );
    for d in &got {
        let ok = Attempt {
            delivery_id: d.id,
            status_code: Some(200),
            ..Attempt::default()
        };
        s.write(move |c| outbox::record(c, &ok, Next::Succeeded, 6))
            .await
            .unwrap();
    }
    s.write(|c| policies::drop_unused_targets(c, None))
        .await
        .unwrap();
    let now = stored().await;
    assert!(!now.contains("old-1"), "old header still stored:\n{now}");
    assert!(now.contains("new-2"));
    // deleting the policy drops the rest
    s.write(move |c| policies::delete(c, "prj", pid))
        .await
        .unwrap();
    let now = stored().await;
    assert!(!now.contains("new-2"), "header of a deleted policy:\n{now}");
    assert!(!now.contains("whsec"), "{now}");
    s.close().await;
}

async fn quota_reservations_never_exceed_the_limit(kind: Kind) {
    let o = open(kind).await;
    let s = &o.store;
    let blobs = |d: &str, n: u64| vec![(d.to_string(), n)];
    let reserve = |b: Vec<(String, u64)>, expires: i64| {
        s.write(move |c| quota::reserve(c, "p", &b, 1000, expires - store::now_ms()))
    };
    let later = store::now_ms() + 60_000;
    let a = reserve(blobs("a", 600), later).await.unwrap();
    let quota::Reservation::Reserved { id: a_id } = a else {
        panic!("{a:?}")
    };
    // a second push of new content while the first is in flight does not fit
    let b = reserve(blobs("b", 600), later).await.unwrap();
    assert_eq!(
        b,
        quota::Reservation::Exceeded {
            adding: 600,
            usage: 600,
            limit: 1000
        }
    );
    // the same blob again adds nothing new, but holds it too
    let again = reserve(blobs("a", 600), later).await.unwrap();
    let quota::Reservation::Reserved { id: again_id } = again else {
        panic!("{again:?}")
    };
    // the first push failed: the blob stays held by the second (before, it was held by
    // nobody, and other pushes could take its space while the second went on to count it)
    s.write(move |c| quota::release(c, a_id)).await.unwrap();
    assert!(matches!(
        reserve(blobs("b", 600), later).await.unwrap(),
        quota::Reservation::Exceeded { usage: 600, .. }
    ));
    // the second failed too: the space comes back
    s.write(move |c| quota::release(c, again_id)).await.unwrap();
    let b = reserve(blobs("b", 600), later).await.unwrap();
    assert!(matches!(b, quota::Reservation::Reserved { .. }), "{b:?}");
    // a reservation whose push never came back lapses
    let lapsed = reserve(blobs("c", 300), store::now_ms() - 1).await.unwrap();
    assert!(matches!(lapsed, quota::Reservation::Reserved { .. }));
    let d = reserve(blobs("d", 300), later).await.unwrap();
    assert!(matches!(d, quota::Reservation::Reserved { .. }), "{d:?}");
    assert!(
        s.write(|c| quota::prune_reservations(c, store::now_ms()))
            .await
            .unwrap()
            >= 1
    );
    s.close().await;
}

/// A push whose blobs the project counts already still holds them: a delete committed while
/// it is in flight stops counting them, and the push counts them again when it lands — so
/// another push must not take that space meanwhile. And a held blob the project has counted
/// since (a push committed before its reservation is given back) weighs nothing more.
async fn quota_reservations_hold_counted_blobs_and_never_count_twice(kind: Kind) {
    let o = open(kind).await;
    let s = &o.store;
    let later = store::now_ms() + 60_000;
    let reserve = |b: &[(&str, u64)]| {
        let b: Vec<(String, u64)> = b.iter().map(|(d, n)| (d.to_string(), *n)).collect();
        s.write(move |c| quota::reserve(c, "p", &b, 100, later - store::now_ms()))
    };
    let learn = |a: Artifact| s.write(move |c| knowledge::learn_manifest(c, &a, None).map(|_| ()));
    let usage = || s.read(|c| quota::usage(c, "p"));
    // m1 (x: 50) is known; m2 (also x) is pushed: nothing new to count, yet x is held
    learn(artifact("p/a", "m1", &[("x", 50)])).await.unwrap();
    let m2 = reserve(&[("x", 50)]).await.unwrap();
    assert!(matches!(m2, quota::Reservation::Reserved { .. }), "{m2:?}");
    // m1's delete commits: x is no longer counted…
    s.write(|c| knowledge::forget_manifest(c, "p/a", "m1"))
        .await
        .unwrap();
    assert_eq!(usage().await.unwrap(), 0);
    // …but m2 counts it again when it lands: 50 + 60 does not fit in 100
    // (before: reserved against 0, and m2 then took the project to 110)
    assert_eq!(
        reserve(&[("y", 60)]).await.unwrap(),
        quota::Reservation::Exceeded {
            adding: 60,
            usage: 50,
            limit: 100
        }
    );
    learn(artifact("p/a", "m2", &[("x", 50)])).await.unwrap();
    assert_eq!(usage().await.unwrap(), 50);

    // two pushes of one new manifest (z: 40) at once; the first commits, its reservation not
    // given back yet: z is counted once, not once more for the second's reservation
    let o2 = open(kind).await;
    let s = &o2.store;
    let reserve = |b: &[(&str, u64)]| {
        let b: Vec<(String, u64)> = b.iter().map(|(d, n)| (d.to_string(), *n)).collect();
        s.write(move |c| quota::reserve(c, "p", &b, 100, later - store::now_ms()))
    };
    for _ in 0..2 {
        let r = reserve(&[("z", 40)]).await.unwrap();
        assert!(matches!(r, quota::Reservation::Reserved { .. }), "{r:?}");
    }
    let a = artifact("p/a", "m3", &[("z", 40)]);
    s.write(move |c| knowledge::learn_manifest(c, &a, Some("v1")).map(|_| ()))
        .await
        .unwrap();
    // 40 counted + 60 fits in 100 (before: 40 + 40 held twice + 60 did not)
    let y = reserve(&[("y", 60)]).await.unwrap();
    assert!(matches!(y, quota::Reservation::Reserved { .. }), "{y:?}");
    o.store.close().await;
    o2.store.close().await;
}

/// A job that changed a policy, read it (as a fan-out does) and then failed was rolled back:
/// the policy never existed, and the cache must not keep it.
async fn policies_read_by_a_job_that_failed_are_not_kept(kind: Kind) {
    let o = open(kind).await;
    let s = &o.store;
    let p = policy("prj", vec![Target::http("http://a.example/")]);
    let failed = s
        .write(move |c| {
            policies::insert(c, &p)?;
            assert_eq!(policies::for_fanout(c, "prj")?.len(), 1);
            Err::<(), _>(StoreError::Closed)
        })
        .await;
    assert!(failed.is_err());
    assert!(
        s.policy_cache().policies("prj").is_none(),
        "a policy that never existed is cached"
    );
    let listed = s.read(|c| policies::for_fanout(c, "prj")).await.unwrap();
    assert!(listed.is_empty());
    s.close().await;
}

/// The same when the job succeeded but its COMMIT failed (here: a deferred constraint trigger
/// refuses it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_policies_read_in_a_transaction_whose_commit_failed_are_not_kept() {
    let o = open(Kind::Postgres).await;
    let s = &o.store;
    s.write(|c| {
        c.exec(
            "CREATE FUNCTION refuse_commit() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN RAISE EXCEPTION 'refused at commit'; END $$",
            &[],
        )?;
        c.exec(
            "CREATE CONSTRAINT TRIGGER refuse_commit AFTER INSERT ON policies
             DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_commit()",
            &[],
        )
    })
    .await
    .unwrap();
    let p = policy("prj", vec![Target::http("http://a.example/")]);
    let failed = s
        .write(move |c| {
            policies::insert(c, &p)?;
            Ok(policies::for_fanout(c, "prj")?.len())
        })
        .await;
    assert!(failed.is_err(), "{failed:?}");
    assert!(
        s.policy_cache().policies("prj").is_none(),
        "a policy that never existed is cached"
    );
    s.close().await;
}

async fn policy_changes_move_the_version_and_the_cache_follows(kind: Kind) {
    let o = open(kind).await;
    let s = &o.store;
    let v0 = s.policy_version().await.unwrap();
    let pid = add_policy(s, policy("prj", vec![Target::http("http://a.example/")])).await;
    let v1 = s.policy_version().await.unwrap();
    assert!(v1 > v0);
    // fan-out caches the project's policies; a change drops the cache after its commit
    publish(s, 1).await;
    assert!(s.policy_cache().policies("prj").is_some());
    s.write(|c| policies::set_notification_enabled(c, false))
        .await
        .unwrap();
    assert!(s.policy_cache().policies("prj").is_none());
    assert!(s.policy_version().await.unwrap() > v1);
    // switched off: no deliveries
    publish(s, 1).await;
    assert_eq!(count(s, "SELECT COUNT(*) FROM deliveries").await, 1);
    s.write(|c| policies::set_notification_enabled(c, true))
        .await
        .unwrap();
    publish(s, 1).await;
    assert_eq!(count(s, "SELECT COUNT(*) FROM deliveries").await, 2);
    // last trigger: noted by the events' jobs, written by the flush (later time kept; none for a
    // deleted policy)
    s.flush_triggers().await.unwrap();
    let triggers = s.read(|c| policies::last_triggers(c, "prj")).await.unwrap();
    assert_eq!(triggers.len(), 1);
    assert_eq!(triggers[0].0, pid);
    // (asked in a write: it takes the policies' lock)
    let taken = s
        .write(|c| policies::name_taken(c, "prj", "p-1", None))
        .await
        .unwrap();
    assert!(taken);
    // a duplicate name is a unique violation the API can tell apart
    let dup = s
        .write(|c| policies::insert(c, &policy("prj", vec![Target::http("http://b/")])))
        .await
        .unwrap_err();
    assert!(dup.is_unique_violation(), "{dup}");
    // project ids are assigned once
    let ids = s
        .write(|c| {
            Ok((
                policies::ensure_project(c, "prj")?,
                policies::ensure_project(c, "other")?,
                policies::ensure_project(c, "prj")?,
            ))
        })
        .await
        .unwrap();
    assert_eq!(ids.0, ids.2);
    assert_ne!(ids.0, ids.1);
    s.close().await;
}

async fn events_list_filters(kind: Kind) {
    let o = open(kind).await;
    let s = &o.store;
    s.write(|c| {
        events::insert(c, &push("prj/a", "sha256:1"), None)?;
        events::insert(c, &push("prj/b", "sha256:2"), None)?;
        events::insert(c, &push("other/a", "sha256:3"), None)?;
        events::insert(
            c,
            &push("prj/a", "sha256:4"),
            Some(store::now_ms() + 60_000),
        )
    })
    .await
    .unwrap();
    let list = |f: events::EventFilter| s.read(move |c| events::list(c, &f));
    let f = |project: Option<&str>, repository: Option<&str>, all: bool| events::EventFilter {
        project: project.map(str::to_string),
        repository: repository.map(str::to_string),
        kind: Some(EventKind::PushArtifact),
        all_states: all,
        limit: 10,
    };
    assert_eq!(list(f(Some("prj"), None, false)).await.unwrap().len(), 2);
    assert_eq!(list(f(Some("prj"), None, true)).await.unwrap().len(), 3);
    let a = list(f(None, Some("prj/a"), true)).await.unwrap();
    assert_eq!(a.len(), 2);
    assert_eq!(a[0].state, "held", "newest first");
    let id = a[1].event.id.to_string();
    let one = s.read(move |c| events::get(c, &id)).await.unwrap();
    assert_eq!(one.unwrap().digest.as_deref(), Some("sha256:1"));
    s.close().await;
}

async fn a_newer_schema_is_refused(kind: Kind) {
    let o = open(kind).await;
    let latest = store::schema::latest();
    assert_eq!(o.store.schema_version().await.unwrap(), latest);
    match kind {
        Kind::Sqlite => {
            o.store.close().await;
            let conn = rusqlite::Connection::open(o._dir.path().join("wharf.db")).unwrap();
            conn.pragma_update(None, "user_version", latest + 1)
                .unwrap();
            drop(conn);
            let err = Store::open_sqlite(o._dir.path(), Default::default())
                .err()
                .unwrap();
            assert!(matches!(err, StoreError::SchemaTooNew { .. }), "{err}");
        }
        Kind::Postgres => {
            let url = o.url.clone().unwrap();
            o.store
                .write(move |c| {
                    c.exec(
                        "INSERT INTO wharf_schema (version, migrated_at) VALUES (?1, 0)",
                        &[store::db::Value::Int(latest + 1)],
                    )
                })
                .await
                .unwrap();
            o.store.close().await;
            let err = Store::open(&pg_config(&url), o._dir.path())
                .await
                .err()
                .unwrap();
            assert!(matches!(err, StoreError::SchemaTooNew { .. }), "{err}");
            assert!(
                err.to_string().contains("newer than this wharf knows"),
                "{err}"
            );
            let probed = Store::probe(&pg_config(&url)).await.err().unwrap();
            assert!(matches!(probed, StoreError::SchemaTooNew { .. }));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL only: several processes on one database

/// Two "replicas" claim at the same instant: every delivery is claimed exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_replicas_claim_each_delivery_once() {
    let o = open(Kind::Postgres).await;
    let url = o.url.clone().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let other = Store::open(&pg_config(&url), dir.path()).await.unwrap();
    add_policy(
        &o.store,
        policy("prj", vec![Target::http("http://a.example/")]),
    )
    .await;
    publish(&o.store, 200).await;
    let mut tasks = Vec::new();
    for (i, s) in [
        o.store.clone(),
        other.clone(),
        o.store.clone(),
        other.clone(),
    ]
    .into_iter()
    .enumerate()
    {
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            loop {
                let got = claim(&s, limits(7, 1000), lease(100 + i as i64)).await;
                if got.is_empty() {
                    break;
                }
                ids.extend(got.into_iter().map(|d| d.id));
            }
            ids
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(n, 200, "every delivery claimed");
    assert_eq!(all.len(), 200, "none claimed twice");
    other.close().await;
    o.store.close().await;
}

/// Policy `pid` as stored.
async fn policy_of(s: &Store, pid: i64) -> Policy {
    s.read(move |c| policies::get_by_id(c, pid))
        .await
        .unwrap()
        .expect("the policy")
}

/// A new PostgreSQL store, a second handle on it (another "replica", with its data
/// directory), and a policy of `prj` with one target at `address` (its id).
async fn two_replicas_with_a_policy(address: &str) -> (Opened, Store, tempfile::TempDir, i64) {
    let o = open(Kind::Postgres).await;
    let url = o.url.clone().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let other = Store::open(&pg_config(&url), dir.path()).await.unwrap();
    let pid = add_policy(&o.store, policy("prj", vec![Target::http(address)])).await;
    (o, other, dir, pid)
}

/// The outcome of claim `token`'s attempt of delivery `id` that its target (`address`, of
/// policy `pid`) answered with 410 Gone, and the target to disable.
fn answered_410(
    id: i64,
    token: i64,
    pid: i64,
    address: &str,
) -> (outbox::Outcome, outbox::GoneTarget) {
    let outcome = outbox::Outcome {
        attempt: Attempt {
            delivery_id: id,
            status_code: Some(410),
            error_kind: Some(outbox::FailureKind::Gone),
            ..Attempt::default()
        },
        next: Next::Dead,
        token,
    };
    let gone = outbox::GoneTarget {
        delivery_id: id,
        policy_id: pid,
        address: address.to_string(),
    };
    (outcome, gone)
}

/// Two replicas recording the first 410 Gone of one target at the same instant (each for its
/// own delivery): both batches are written, the target disabled once. Before, each held its
/// delivery while its disable waited for the policy row the other had changed, or for the
/// other's delivery: PostgreSQL broke the deadlock by failing one batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_replicas_recording_one_targets_410s_at_once_both_land() {
    let address = "http://gone.example/";
    for round in 0..8 {
        let (o, other, _dir, pid) = two_replicas_with_a_policy(address).await;
        publish(&o.store, 2).await;
        let a = claim(&o.store, limits(1, 10), lease(1)).await;
        let b = claim(&other, limits(1, 10), lease(2)).await;
        assert_eq!((a.len(), b.len()), (1, 1));
        let together = Arc::new(std::sync::Barrier::new(2));
        let mut tasks = Vec::new();
        for (s, id, token) in [(o.store.clone(), a[0].id, 1), (other.clone(), b[0].id, 2)] {
            let together = together.clone();
            tasks.push(tokio::spawn(async move {
                s.write(move |c| {
                    // both transactions under way before either writes
                    together.wait();
                    let (outcome, gone) = answered_410(id, token, pid, address);
                    outbox::record_finished(c, &[outcome], &[gone])
                })
                .await
            }));
        }
        for t in tasks {
            t.await
                .unwrap()
                .unwrap_or_else(|e| panic!("round {round}: a batch failed: {e}"));
        }
        for id in [a[0].id, b[0].id] {
            assert_eq!(state(&o.store, id).await, "dead");
        }
        assert!(policy_of(&o.store, pid).await.targets[0].disabled);
        other.close().await;
        o.store.close().await;
    }
}

/// A target's first 410 recorded by one replica while an operator edits its policy through
/// another: both land. The edit takes the policy version, then the policy row; the recording
/// took the policy row, then (disabling the target) the version — a deadlock, one of them
/// failed (the API request with a 500).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_a_410_recorded_during_an_edit_of_its_policy_both_land() {
    let address = "http://gone.example/";
    let (o, other, _dir, pid) = two_replicas_with_a_policy(address).await;
    publish(&o.store, 1).await;
    let d = claim(&o.store, limits(1, 10), lease(1)).await;
    assert_eq!(d.len(), 1);
    let id = d[0].id;
    let mut edited = policy_of(&o.store, pid).await;
    edited.description = "edited".into();
    let started = Arc::new(std::sync::Barrier::new(2));
    // the edit, as the API makes it, paused between its two locks
    let edit = {
        let started = started.clone();
        let s = other.clone();
        tokio::spawn(async move {
            s.write(move |c| {
                c.note_policies()?;
                started.wait();
                #[allow(clippy::disallowed_methods)]
                std::thread::sleep(Duration::from_millis(300));
                policies::update(c, &edited)
            })
            .await
        })
    };
    let record = {
        let s = o.store.clone();
        tokio::spawn(async move {
            s.write(move |c| {
                started.wait();
                let (outcome, gone) = answered_410(id, 1, pid, address);
                outbox::record_finished(c, &[outcome], &[gone])
            })
            .await
        })
    };
    assert!(edit.await.unwrap().expect("the edit lands"));
    record.await.unwrap().expect("the 410 lands");
    let p = policy_of(&o.store, pid).await;
    assert_eq!(p.description, "edited");
    assert!(p.targets[0].disabled);
    assert_eq!(state(&o.store, id).await, "dead");
    other.close().await;
    o.store.close().await;
}

/// A durable event whose job is dropped unanswered (its batch's writer failed: here a `with`
/// that panics) is counted lost, never as late: nobody would count it later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_durable_event_dropped_unanswered_is_counted_lost() {
    use wharf::events::sink::{Recorded, Sink, With};
    let o = open(Kind::Postgres).await;
    let metrics = Arc::new(wharf::metrics::Metrics::new());
    let sink = Sink::new(o.store.clone(), metrics.clone());
    let with: With = Arc::new(|_, _| panic!("a writer fails (this panic is the test's)"));
    let got = sink
        .durable(push("prj/app", "sha256:1"), None, Some(with))
        .await;
    assert_eq!(got, Recorded::Lost);
    assert_eq!(metrics.events_lost.get(), 1);
    assert_eq!(metrics.events_late.get(), 0);
    // the writer goes on
    assert_eq!(
        sink.durable(push("prj/app", "sha256:2"), None, None).await,
        Recorded::Yes
    );
    o.store.close().await;
}

/// A deadlock the event's transaction loses, set up for a sink on `o`'s store: another replica
/// takes lock 1 and waits for `go`; the event's `with` takes lock 2 and waits for 1; after `go`
/// the other asks for 2, and PostgreSQL rolls the event's transaction back — it waited first,
/// and the other session checks for deadlocks only after 10 s. (A push's and a delete's writes
/// can cross so: a push locks its project's quota row and then a tag, a delete the artifact,
/// its quota row and the same tag.)
struct LosesADeadlock {
    sink: wharf::events::sink::Sink,
    metrics: Arc<wharf::metrics::Metrics>,
    with: wharf::events::sink::With,
    /// How many times `with` ran.
    runs: Arc<std::sync::atomic::AtomicU32>,
    other: Store,
    _other_dir: tempfile::TempDir,
    first: tokio::task::JoinHandle<Result<Option<i64>, StoreError>>,
    go: std::sync::mpsc::Sender<()>,
}

async fn a_deadlock_the_event_loses(o: &Opened) -> LosesADeadlock {
    use std::sync::atomic::{AtomicU32, Ordering};
    let (other, _other_dir) = replica_of(o).await;
    let (ran_tx, ran_rx) = std::sync::mpsc::channel();
    let (go, go_rx) = std::sync::mpsc::channel::<()>();
    let first = {
        let other = other.clone();
        tokio::spawn(async move {
            other
                .write(move |c| {
                    c.exec("SET LOCAL deadlock_timeout = '10s'", &[])?;
                    c.int("SELECT 1 FROM pg_advisory_xact_lock(1)", &[])?;
                    ran_tx.send(()).unwrap();
                    go_rx.recv().unwrap();
                    c.int("SELECT 1 FROM pg_advisory_xact_lock(2)", &[])
                })
                .await
        })
    };
    tokio::task::spawn_blocking(move || ran_rx.recv().unwrap())
        .await
        .unwrap();
    let metrics = Arc::new(wharf::metrics::Metrics::new());
    let sink = wharf::events::sink::Sink::new(o.store.clone(), metrics.clone());
    let runs = Arc::new(AtomicU32::new(0));
    let with: wharf::events::sink::With = {
        let runs = runs.clone();
        Arc::new(move |c, _| {
            runs.fetch_add(1, Ordering::SeqCst);
            c.int("SELECT 1 FROM pg_advisory_xact_lock(2)", &[])?;
            c.int("SELECT 1 FROM pg_advisory_xact_lock(1)", &[])?;
            Ok(true)
        })
    };
    LosesADeadlock {
        sink,
        metrics,
        with,
        runs,
        other,
        _other_dir,
        first,
        go,
    }
}

impl LosesADeadlock {
    /// Once the event's transaction waits for lock 1: close the circle; the other replica's
    /// transaction wins.
    async fn close_the_circle(&mut self, watch: &Store) {
        until_a_session_waits_for_a_lock(watch).await;
        self.go.send(()).unwrap();
        (&mut self.first)
            .await
            .unwrap()
            .expect("the other replica's transaction wins");
    }
}

/// A durable event whose transaction loses a deadlock to another replica's is written again,
/// not lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_a_durable_event_that_loses_a_deadlock_is_written_again() {
    use std::sync::atomic::Ordering;
    use wharf::events::sink::Recorded;
    let o = open(Kind::Postgres).await;
    let mut d = a_deadlock_the_event_loses(&o).await;
    let event = {
        let (sink, with) = (d.sink.clone(), d.with.clone());
        tokio::spawn(async move {
            sink.durable(push("prj/app", "sha256:1"), None, Some(with))
                .await
        })
    };
    d.close_the_circle(&o.store).await;
    assert_eq!(event.await.unwrap(), Recorded::Yes);
    assert_eq!(
        d.runs.load(Ordering::SeqCst),
        2,
        "rolled back once, written again"
    );
    assert_eq!(d.metrics.events_lost.get(), 0);
    assert_eq!(count(&o.store, "SELECT COUNT(*) FROM events").await, 1);
    d.other.close().await;
    o.store.close().await;
}

/// A background group (pull events) whose transaction loses a deadlock to another replica's
/// is written again at once, not lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_background_events_that_lose_a_deadlock_are_written_again() {
    use std::sync::atomic::Ordering;
    let o = open(Kind::Postgres).await;
    let mut d = a_deadlock_the_event_loses(&o).await;
    d.sink.detached(pull("prj/app", 0), Some(d.with.clone()));
    d.close_the_circle(&o.store).await;
    until_recorded_or_lost(&d.metrics, "PULL_ARTIFACT", 1).await;
    assert_eq!(d.metrics.events_lost.get(), 0);
    assert_eq!(
        d.runs.load(Ordering::SeqCst),
        2,
        "rolled back once, written again"
    );
    assert_eq!(count(&o.store, "SELECT COUNT(*) FROM events").await, 1);
    d.other.close().await;
    o.store.close().await;
}

/// A pull of `repository`'s manifest `sha256:{i}`.
fn pull(repository: &str, i: usize) -> Event {
    let mut e = push(repository, &format!("sha256:{i}"));
    e.kind = EventKind::PullArtifact;
    e
}

/// Wait until `n` events of Harbor type `kind` were counted recorded or lost by a sink.
async fn until_recorded_or_lost(metrics: &wharf::metrics::Metrics, kind: &'static str, n: u64) {
    let recorded = || {
        metrics
            .events
            .get_or_create(&wharf::metrics::TypeLabels { r#type: kind })
            .get()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while recorded() + metrics.events_lost.get() < n {
        assert!(
            std::time::Instant::now() < deadline,
            "the events' outcome never came"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        recorded() + metrics.events_lost.get(),
        n,
        "counted once each"
    );
}

/// An event on its way through a sink on `s`: its first try stopped in its `with` until `go`
/// is sent, and the server has ended that try's connection meanwhile. `submit` hands the sink
/// and the `with` to the test, which records its event(s).
struct EndedUnderAnEvent {
    metrics: Arc<wharf::metrics::Metrics>,
    /// How many times its `with` ran.
    runs: Arc<std::sync::atomic::AtomicU32>,
    go: std::sync::mpsc::Sender<()>,
}

async fn an_event_whose_connection_ends<T>(
    s: &Store,
    submit: impl FnOnce(wharf::events::sink::Sink, wharf::events::sink::With) -> T,
) -> (T, EndedUnderAnEvent) {
    use std::sync::atomic::{AtomicU32, Ordering};
    use wharf::events::sink::{Sink, With};
    let metrics = Arc::new(wharf::metrics::Metrics::new());
    let sink = Sink::new(s.clone(), metrics.clone());
    let (pid_tx, pid_rx) = std::sync::mpsc::channel::<i64>();
    let (go, go_rx) = std::sync::mpsc::channel::<()>();
    let go_rx = std::sync::Mutex::new(go_rx);
    let runs = Arc::new(AtomicU32::new(0));
    let with: With = {
        let runs = runs.clone();
        Arc::new(move |c, _| {
            if runs.fetch_add(1, Ordering::SeqCst) == 0 {
                let pid = c.int("SELECT pg_backend_pid()", &[])?.unwrap();
                pid_tx.send(pid).unwrap();
                go_rx.lock().unwrap().recv().unwrap();
                c.int("SELECT 1", &[])?;
            }
            Ok(true)
        })
    };
    let submitted = submit(sink, with);
    let pid = tokio::task::spawn_blocking(move || pid_rx.recv().unwrap())
        .await
        .unwrap();
    let ended = s
        .read(move |c| {
            c.int(
                &format!("SELECT COUNT(*) FROM pg_terminate_backend({pid}) t WHERE t"),
                &[],
            )
        })
        .await
        .unwrap();
    assert_eq!(ended, Some(1), "the writer's session ended");
    (submitted, EndedUnderAnEvent { metrics, runs, go })
}

/// A durable event whose connection PostgreSQL ends in the middle of its transaction
/// (`pg_terminate_backend`, an idle-session limit, a restart that is over within the retries'
/// waits) is written again on a new connection, not lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_a_durable_event_whose_connection_ends_is_written_again() {
    use std::sync::atomic::Ordering;
    let o = open(Kind::Postgres).await;
    let e = push("prj/app", "sha256:1");
    let (event, t) = an_event_whose_connection_ends(&o.store, |sink, with| {
        tokio::spawn(async move { sink.durable(e, None, Some(with)).await })
    })
    .await;
    t.go.send(()).unwrap();
    assert_eq!(event.await.unwrap(), wharf::events::sink::Recorded::Yes);
    assert_eq!(t.runs.load(Ordering::SeqCst), 2, "written again");
    assert_eq!(t.metrics.events_lost.get(), 0);
    assert_eq!(count(&o.store, "SELECT COUNT(*) FROM events").await, 1);
    o.store.close().await;
}

/// Pull events written in the background, in one group, whose connection PostgreSQL ends
/// under them: the group is written again on a new connection, none lost. (They were all lost.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_background_events_whose_connection_ends_are_written_again() {
    use std::sync::atomic::Ordering;
    let o = open(Kind::Postgres).await;
    let (sink, t) = an_event_whose_connection_ends(&o.store, |sink, with| {
        sink.detached(pull("prj/app", 0), Some(with));
        sink
    })
    .await;
    // queued behind the stopped group: taken by the next job, or with the group's retry
    for i in 1..4 {
        sink.detached(pull("prj/app", i), None);
    }
    t.go.send(()).unwrap();
    until_recorded_or_lost(&t.metrics, "PULL_ARTIFACT", 4).await;
    assert_eq!(t.metrics.events_lost.get(), 0);
    assert_eq!(t.runs.load(Ordering::SeqCst), 2, "written again");
    assert_eq!(count(&o.store, "SELECT COUNT(*) FROM events").await, 4);
    o.store.close().await;
}

/// A try after a lost connection that does not find its event yet, because the COMMIT that
/// wrote it is still running (here: another transaction holding the same event open), waits for
/// it and is refused by the event's row: counted recorded, not lost. (As when a COMMIT outlives
/// `store.statement_timeout`: the server does not abort a COMMIT its client left.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_a_retried_event_refused_by_its_own_row_is_counted_recorded() {
    use std::sync::atomic::Ordering;
    let o = open(Kind::Postgres).await;
    let (other, _dir) = replica_of(&o).await;
    let e = push("prj/app", "sha256:1");
    let same = e.clone();
    let (event, t) = an_event_whose_connection_ends(&o.store, |sink, with| {
        tokio::spawn(async move { sink.durable(e, None, Some(with)).await })
    })
    .await;
    // the event's row is being written by a transaction that has not committed yet
    let (commit, holder) = held_write(&other, move |c| store::events::insert(c, &same, None)).await;
    t.go.send(()).unwrap();
    until_a_session_waits_for_a_lock(&o.store).await;
    commit.send(()).unwrap();
    holder.await.unwrap().unwrap();
    assert_eq!(event.await.unwrap(), wharf::events::sink::Recorded::Yes);
    assert_eq!(
        t.runs.load(Ordering::SeqCst),
        2,
        "tried again, refused by the row"
    );
    assert_eq!(t.metrics.events_lost.get(), 0);
    assert_eq!(count(&o.store, "SELECT COUNT(*) FROM events").await, 1);
    other.close().await;
    o.store.close().await;
}

/// A TCP proxy to the test cluster that, once armed, lets the next `COMMIT` a client sends
/// through and drops every answer of that connection from then on (the server committed; the
/// client hears nothing, as when a network fails at that moment). Other connections pass.
struct LosesACommitsAnswer {
    port: u16,
    armed: Arc<std::sync::atomic::AtomicBool>,
}

impl LosesACommitsAnswer {
    async fn start(target: u16) -> Self {
        use std::sync::atomic::{AtomicBool, Ordering};
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let armed = Arc::new(AtomicBool::new(false));
        let arm = armed.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let muted = Arc::new(AtomicBool::new(false));
                let (arm, mute) = (arm.clone(), muted.clone());
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n @ 1..) = cr.read(&mut buf).await {
                        let chunk = &buf[..n];
                        if chunk.windows(6).any(|w| w == b"COMMIT")
                            && arm.swap(false, Ordering::SeqCst)
                        {
                            mute.store(true, Ordering::SeqCst);
                        }
                        if sw.write_all(chunk).await.is_err() {
                            return;
                        }
                    }
                });
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 64 * 1024];
                    while let Ok(n @ 1..) = sr.read(&mut buf).await {
                        if !muted.load(Ordering::SeqCst) && cw.write_all(&buf[..n]).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        LosesACommitsAnswer { port, armed }
    }

    fn arm(&self) {
        self.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    }
}

/// A durable event whose COMMIT landed but whose answer never came (the connection failed at
/// that moment) is found committed by the next try: counted recorded once, its `with` not run
/// again, no second row. (It was counted lost, though delivered all the same.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_a_durable_event_whose_commit_answer_is_lost_is_counted_once() {
    use std::sync::atomic::{AtomicU32, Ordering};
    use wharf::events::sink::{Recorded, Sink, With};
    let proxy = LosesACommitsAnswer::start(pgc::cluster().port).await;
    let url = pgc::database_through(proxy.port).await;
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        statement_timeout: Duration::from_secs(1),
        connect_timeout: Duration::from_secs(1),
        ..pg_config(&url)
    };
    let s = Store::open(&config, dir.path()).await.unwrap();
    let metrics = Arc::new(wharf::metrics::Metrics::new());
    let sink = Sink::new(s.clone(), metrics.clone());
    let runs = Arc::new(AtomicU32::new(0));
    let with: With = {
        let runs = runs.clone();
        Arc::new(move |_, _| {
            runs.fetch_add(1, Ordering::SeqCst);
            Ok(true)
        })
    };
    proxy.arm();
    let got = sink
        .durable(push("prj/app", "sha256:1"), None, Some(with))
        .await;
    assert_eq!(
        got,
        Recorded::Late,
        "no answer within the statement timeout"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let recorded = || {
        metrics
            .events
            .get_or_create(&wharf::metrics::TypeLabels {
                r#type: "PUSH_ARTIFACT",
            })
            .get()
    };
    while recorded() + metrics.events_lost.get() == 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the event's outcome never came"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(metrics.events_lost.get(), 0, "not counted lost");
    assert_eq!(recorded(), 1, "counted recorded");
    assert_eq!(runs.load(Ordering::SeqCst), 1, "its writes not made again");
    assert_eq!(count(&s, "SELECT COUNT(*) FROM events").await, 1);
    s.close().await;
}

/// Pushes into the last free bytes through two "replicas" at the same instant: at most the
/// limit is reserved, whatever the interleaving.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_racing_reservations_never_exceed_the_limit() {
    let o = open(Kind::Postgres).await;
    let url = o.url.clone().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let other = Store::open(&pg_config(&url), dir.path()).await.unwrap();
    let later = store::now_ms() + 60_000;
    let mut tasks = Vec::new();
    for i in 0..20u64 {
        let s = if i % 2 == 0 {
            o.store.clone()
        } else {
            other.clone()
        };
        tasks.push(tokio::spawn(async move {
            let b = vec![(format!("blob-{i}"), 300)];
            s.write(move |c| quota::reserve(c, "p", &b, 1000, later - store::now_ms()))
                .await
                .unwrap()
        }));
    }
    let mut reserved = 0;
    for t in tasks {
        if matches!(t.await.unwrap(), quota::Reservation::Reserved { .. }) {
            reserved += 1;
        }
    }
    assert_eq!(reserved, 3, "3 × 300 fit in 1000, a fourth does not");
    other.close().await;
    o.store.close().await;
}

/// A push moving a tag away from a manifest whose delete settles at the same moment, through
/// two replicas: the delete takes the project's row and then the tags, so a push takes its tag
/// after the project's row too. (Before, a push took the tag first and then waited for the
/// project's row, which the delete held while it waited for the tag: a deadlock, and one of
/// them rolled back.) Here a third session holds the project's row until both wait for it,
/// the delete first. For both ways a push learns a manifest.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_a_push_moving_a_tag_and_a_delete_of_its_old_manifest_do_not_deadlock() {
    type Learn = fn(&wharf::store::Db<'_>, &Artifact, Option<&str>) -> Result<(), StoreError>;
    let o = open(Kind::Postgres).await;
    let (other, _dir) = replica_of(&o).await;
    let ways: [(&str, Learn); 2] = [
        ("p", |c, a, t| {
            knowledge::learn_manifest(c, a, t).map(|_| ())
        }),
        ("q", knowledge::learn_pushed),
    ];
    for (project, learn) in ways {
        let repository = format!("{project}/a");
        let old = artifact(&repository, "m1", &[("x", 10)]);
        o.store
            .write(move |c| knowledge::learn_manifest(c, &old, Some("t")).map(|_| ()))
            .await
            .unwrap();
        let holds = format!("SELECT 1 FROM quota_projects WHERE project = '{project}' FOR UPDATE");
        let (go, holder) = held_write(&o.store, move |c| c.int(&holds, &[]).map(|_| ())).await;
        let sent_at = store::now_ms();
        let delete = {
            let (other, r) = (other.clone(), repository.clone());
            tokio::spawn(async move {
                other
                    .write(move |c| knowledge::forget_deleted(c, &r, "m1", sent_at))
                    .await
            })
        };
        until_sessions_wait_for_locks(&o.store, 1).await;
        let new = artifact(&repository, "m2", &[("y", 20)]);
        let push = {
            let s = o.store.clone();
            tokio::spawn(async move { s.write(move |c| learn(c, &new, Some("t"))).await })
        };
        until_sessions_wait_for_locks(&o.store, 2).await;
        go.send(()).unwrap();
        holder.await.unwrap().unwrap();
        let deleted = delete.await.unwrap();
        let pushed = push.await.unwrap();
        assert!(deleted.is_ok() && pushed.is_ok(), "{deleted:?} {pushed:?}");
        let (r, p) = (repository.clone(), project.to_string());
        let (tags, usage) = o
            .store
            .read(move |c| Ok((knowledge::tags_of(c, &r, "m2")?, quota::usage(c, &p)?)))
            .await
            .unwrap();
        assert_eq!(tags, ["t"]);
        assert_eq!(usage, 20);
    }
    other.close().await;
    o.store.close().await;
}

/// Another replica: a second store on `o`'s PostgreSQL database, and what keeps its files.
async fn replica_of(o: &Opened) -> (Store, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = o.url.as_ref().expect("a PostgreSQL store");
    (Store::open(&pg_config(url), dir.path()).await.unwrap(), dir)
}

/// Until another session of the test database waits for a lock.
async fn until_a_session_waits_for_a_lock(watch: &Store) {
    until_sessions_wait_for_locks(watch, 1).await;
}

/// Until `n` sessions of the test database wait for a lock.
async fn until_sessions_wait_for_locks(watch: &Store, n: i64) {
    let waiting = "SELECT COUNT(*) FROM pg_stat_activity
                   WHERE wait_event_type = 'Lock' AND datname = current_database()";
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while count(watch, waiting).await < n {
        assert!(
            std::time::Instant::now() < deadline,
            "no session waited for a lock"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Run `job` in a write of `s` that waits, before its commit, until the returned sender is
/// used; returns once the job's statements ran.
async fn held_write(
    s: &Store,
    job: impl FnOnce(&wharf::store::Db<'_>) -> Result<(), StoreError> + Send + 'static,
) -> (
    std::sync::mpsc::Sender<()>,
    tokio::task::JoinHandle<Result<(), StoreError>>,
) {
    let (ran_tx, ran_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let s = s.clone();
    let task = tokio::spawn(async move {
        s.write(move |c| {
            job(c)?;
            // (a read: every statement sent ahead has run)
            c.int("SELECT 1", &[])?;
            ran_tx.send(()).unwrap();
            go_rx.recv().unwrap();
            Ok(())
        })
        .await
    });
    tokio::task::spawn_blocking(move || ran_rx.recv().unwrap())
        .await
        .unwrap();
    (go_tx, task)
}

/// `first` runs in a write of `a` and keeps its transaction open until `second` — a task on
/// `b` — waits for a lock `first` holds; then `first` commits. `second`'s outcome.
async fn second_waits_for_first<T: Send + 'static>(
    a: &Store,
    first: impl FnOnce(&wharf::store::Db<'_>) -> Result<(), StoreError> + Send + 'static,
    b: &Store,
    second: impl Future<Output = Result<T, StoreError>> + Send + 'static,
) -> Result<T, StoreError> {
    let (go, first) = held_write(a, first).await;
    let second = tokio::spawn(second);
    until_a_session_waits_for_a_lock(b).await;
    go.send(()).unwrap();
    first.await.unwrap().unwrap();
    second.await.unwrap()
}

/// `job` in a write of `s`, as a task's future.
fn write_of<T: Send + 'static>(
    s: &Store,
    job: impl FnOnce(&wharf::store::Db<'_>) -> Result<T, StoreError> + Send + 'static,
) -> impl Future<Output = Result<T, StoreError>> + Send + 'static {
    let s = s.clone();
    async move { s.write(job).await }
}

/// `quota rescan`'s recount while a push into the project commits through another replica:
/// the push's blobs are counted once, in the usage as in the blob counts. (The recount read
/// the manifests before the push committed and then wrote its own figure over the push's.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_a_recount_during_a_push_leaves_nothing_out() {
    let o = open(Kind::Postgres).await;
    let (other, _dir) = replica_of(&o).await;
    o.store
        .write(|c| {
            knowledge::learn_manifest(c, &artifact("p/a", "m1", &[("c1", 10), ("l1", 100)]), None)
        })
        .await
        .unwrap();
    // the push (through the other replica) holds the project's lock; the recount waits for it
    let push = |c: &wharf::store::Db<'_>| {
        let a = artifact("p/b", "m2", &[("c2", 20), ("l2", 200)]);
        knowledge::learn_manifest(c, &a, Some("v1")).map(|_| ())
    };
    let recount = {
        let s = o.store.clone();
        async move { quota::recount(&s).await }
    };
    second_waits_for_first(&other, push, &o.store, recount)
        .await
        .unwrap();
    let usage = || other.read(|c| quota::usage(c, "p"));
    assert_eq!(usage().await.unwrap(), 330, "both manifests counted");
    assert_eq!(
        count(
            &other,
            "SELECT CAST(SUM(size) AS BIGINT) FROM project_blobs WHERE project = 'p'"
        )
        .await,
        330
    );
    // the next manifest with those blobs adds nothing, and a recount agrees
    other
        .write(|c| {
            knowledge::learn_manifest(c, &artifact("p/c", "m3", &[("c2", 20), ("l2", 200)]), None)
        })
        .await
        .unwrap();
    assert_eq!(usage().await.unwrap(), 330);
    quota::recount(&other).await.unwrap();
    assert_eq!(usage().await.unwrap(), 330);
    other.close().await;
    o.store.close().await;
}

fn kept(event_id: &str) -> idempotency::Kept {
    idempotency::Kept {
        fingerprint: "fp".into(),
        event_id: event_id.into(),
        answer: format!("{{\"event_id\":\"{event_id}\"}}"),
    }
}

async fn idempotency_keys_are_kept_per_caller_until_they_expire(kind: Kind) {
    let o = open(kind).await;
    let s = &o.store;
    let day = idempotency::KEPT_FOR.as_millis() as i64;
    let now = store::now_ms();
    let keep = |caller: &'static str, key: &'static str, id: &'static str, at: i64| {
        s.write(move |c| idempotency::keep(c, caller, key, &kept(id), at))
    };
    let find = |caller: &'static str, key: &'static str, since: i64| {
        s.read(move |c| idempotency::find(c, caller, key, since))
    };
    assert!(keep("side-api", "k", "e1", now - 10).await.unwrap());
    assert!(!keep("side-api", "k", "e2", now).await.unwrap(), "taken");
    assert!(
        keep("admin", "k", "e3", now).await.unwrap(),
        "another caller's"
    );
    assert_eq!(
        find("side-api", "k", now - day).await.unwrap(),
        Some(kept("e1"))
    );
    assert_eq!(
        find("admin", "k", now - day).await.unwrap(),
        Some(kept("e3"))
    );
    assert_eq!(
        find("side-api", "k", now).await.unwrap(),
        None,
        "older than since"
    );
    // an expired key, not pruned yet, is taken over
    assert!(keep("side-api", "old", "e4", now - day - 1).await.unwrap());
    assert!(keep("side-api", "old", "e5", now).await.unwrap());
    assert_eq!(
        find("side-api", "old", now - day).await.unwrap(),
        Some(kept("e5"))
    );
    assert!(keep("side-api", "gone", "e6", now - day - 1).await.unwrap());
    let pruned = s
        .write(move |c| idempotency::prune(c, now - day))
        .await
        .unwrap();
    assert_eq!(pruned, 1);
    assert_eq!(count(s, "SELECT COUNT(*) FROM idempotency_keys").await, 3);
    s.close().await;
}

/// Two replicas keeping one key at the same instant: one keeps it, whatever the interleaving.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_replicas_keeping_one_idempotency_key_keep_it_once() {
    let o = open(Kind::Postgres).await;
    let (other, _dir) = replica_of(&o).await;
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let s = if i % 2 == 0 {
                o.store.clone()
            } else {
                other.clone()
            };
            tokio::spawn(async move {
                let id = format!("e{i}");
                s.write(move |c| idempotency::keep(c, "side-api", "k", &kept(&id), store::now_ms()))
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut kept_by = 0;
    for t in tasks {
        kept_by += usize::from(t.await.unwrap());
    }
    assert_eq!(kept_by, 1);
    other.close().await;
    o.store.close().await;
}

/// A key another replica's transaction is keeping right now is refused at once, not waited
/// for (its writer's group of jobs would wait with it): `find` has nothing yet, and the API
/// answers 409; once that transaction commits the key is found.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_a_key_being_kept_elsewhere_is_refused_without_waiting() {
    let o = open(Kind::Postgres).await;
    let (other, _dir) = replica_of(&o).await;
    let (kept_tx, kept_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let first = tokio::spawn({
        let s = o.store.clone();
        async move {
            s.write(move |c| {
                let kept = idempotency::keep(c, "token", "k", &kept("e1"), store::now_ms())?;
                kept_tx.send(kept).unwrap();
                go_rx.recv().unwrap();
                Ok(kept)
            })
            .await
            .unwrap()
        }
    });
    assert!(
        tokio::task::spawn_blocking(move || kept_rx.recv().unwrap())
            .await
            .unwrap()
    );
    let started = std::time::Instant::now();
    let second = other
        .write(|c| idempotency::keep(c, "token", "k", &kept("e2"), store::now_ms()))
        .await
        .unwrap();
    assert!(!second);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let day = idempotency::KEPT_FOR.as_millis() as i64;
    let find = || other.read(move |c| idempotency::find(c, "token", "k", store::now_ms() - day));
    assert_eq!(find().await.unwrap(), None);
    go_tx.send(()).unwrap();
    assert!(first.await.unwrap());
    assert_eq!(find().await.unwrap(), Some(kept("e1")));
    other.close().await;
    o.store.close().await;
}

/// Two pushes of one new manifest (two tags, as buildx pushes them) through two replicas at
/// once: its blobs are counted once, and its delete gives them back. (Both read "unknown"
/// before either committed and both counted them: usage stayed after the delete.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_one_manifest_pushed_twice_at_once_is_counted_once() {
    let o = open(Kind::Postgres).await;
    let (other, _dir) = replica_of(&o).await;
    let m = || artifact("p/a", "m1", &[("c1", 10), ("l1", 100)]);
    let first =
        move |c: &wharf::store::Db<'_>| knowledge::learn_manifest(c, &m(), Some("1.0")).map(|_| ());
    let second = write_of(&other, move |c| {
        knowledge::learn_manifest(c, &m(), Some("latest"))
    });
    let learned = second_waits_for_first(&o.store, first, &other, second)
        .await
        .unwrap();
    assert!(!learned.new, "the first push made it known");
    let usage = || other.read(|c| quota::usage(c, "p"));
    assert_eq!(usage().await.unwrap(), 110);
    assert_eq!(
        count(
            &other,
            "SELECT CAST(SUM(refs) AS BIGINT) FROM project_blobs"
        )
        .await,
        2
    );
    other
        .write(|c| knowledge::forget_manifest(c, "p/a", "m1"))
        .await
        .unwrap();
    assert_eq!(usage().await.unwrap(), 0, "the delete gave everything back");
    other.close().await;
    o.store.close().await;
}

/// Two deletes of one manifest through two replicas at once give its blobs back once: a blob
/// another manifest still references stays counted. (Both read the manifest before either
/// committed and both gave its blobs back.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_one_manifest_deleted_twice_at_once_is_given_back_once() {
    let o = open(Kind::Postgres).await;
    let (other, _dir) = replica_of(&o).await;
    o.store
        .write(|c| {
            knowledge::learn_manifest(c, &artifact("p/a", "m1", &[("c1", 10), ("l1", 100)]), None)?;
            knowledge::learn_manifest(c, &artifact("p/b", "m2", &[("c2", 20), ("l1", 100)]), None)
        })
        .await
        .unwrap();
    let forget = |c: &wharf::store::Db<'_>| knowledge::forget_manifest(c, "p/a", "m1");
    let first = move |c: &wharf::store::Db<'_>| forget(c).map(|_| ());
    let second = second_waits_for_first(&o.store, first, &other, write_of(&other, forget)).await;
    assert_eq!(second.unwrap(), None, "already forgotten");
    assert_eq!(other.read(|c| quota::usage(c, "p")).await.unwrap(), 120);
    other.close().await;
    o.store.close().await;
}

/// A redelivery requested while a dispatcher claims the delivery leaves the claim alone:
/// "running", not queued again under a cleared claim (which sent the webhook twice, the first
/// attempt's outcome no longer matching its claim).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_a_redelivery_racing_a_claim_leaves_the_claim_alone() {
    let o = open(Kind::Postgres).await;
    let (other, _dir) = replica_of(&o).await;
    let target = Target::http("http://a.example/");
    let pid = add_policy(&o.store, policy("prj", vec![target])).await;
    publish(&o.store, 1).await;
    let id = count(&o.store, "SELECT MIN(id) FROM deliveries").await;
    let claiming = |c: &wharf::store::Db<'_>| {
        let got = outbox::claim(c, store::now_ms() + 1, &limits(1, 1), lease(7))?;
        assert_eq!(got.len(), 1);
        Ok(())
    };
    let redelivery = write_of(&other, move |c| outbox::redeliver(c, pid, id));
    let r = second_waits_for_first(&o.store, claiming, &other, redelivery).await;
    assert_eq!(r.unwrap(), Redelivery::Running);
    assert_eq!(state(&other, id).await, "running");
    assert_eq!(
        count(&other, "SELECT claim_token FROM deliveries").await,
        7,
        "still the dispatcher's claim"
    );
    other.close().await;
    o.store.close().await;
}

/// The pruner removing an old event while its dead delivery is being redelivered keeps both:
/// the redelivered delivery, its attempts and its event. (It removed them, and the queued
/// redelivery with them.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_the_pruner_keeps_a_delivery_redelivered_meanwhile() {
    let o = open(Kind::Postgres).await;
    let (other, _dir) = replica_of(&o).await;
    let target = Target::http("http://a.example/");
    let pid = add_policy(&o.store, policy("prj", vec![target])).await;
    let mut old = push("prj/app", "sha256:old");
    old.occurred_at = chrono::Utc::now() - chrono::Duration::days(40);
    o.store
        .write(move |c| {
            events::insert(c, &old, None)?;
            c.exec("UPDATE deliveries SET state = 'dead'", &[])?;
            Ok(())
        })
        .await
        .unwrap();
    let id = count(&o.store, "SELECT MIN(id) FROM deliveries").await;
    let redelivery = move |c: &wharf::store::Db<'_>| {
        assert_eq!(outbox::redeliver(c, pid, id)?, Redelivery::Queued);
        Ok(())
    };
    let pruning = write_of(&other, |c| events::prune(c, store::now_ms(), 100));
    let pruned = second_waits_for_first(&o.store, redelivery, &other, pruning).await;
    assert_eq!(pruned.unwrap(), 0, "nothing removed");
    assert_eq!(state(&other, id).await, "pending");
    assert_eq!(count(&other, "SELECT COUNT(*) FROM events").await, 1);
    other.close().await;
    o.store.close().await;
}

/// Two policies of one name created at once through two replicas: one is created, the other
/// finds the name taken (it failed on the unique index, a 500 at the API).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_one_policy_name_created_twice_at_once_is_taken_once() {
    let o = open(Kind::Postgres).await;
    let (other, _dir) = replica_of(&o).await;
    // as the API creates one
    let create = |c: &wharf::store::Db<'_>| -> Result<Option<i64>, StoreError> {
        let p = policy("prj", vec![Target::http("http://a.example/")]);
        if policies::name_taken(c, &p.project, &p.name, None)? {
            return Ok(None);
        }
        policies::insert(c, &p).map(Some)
    };
    let first = move |c: &wharf::store::Db<'_>| {
        assert!(create(c)?.is_some());
        Ok(())
    };
    let second = second_waits_for_first(&o.store, first, &other, write_of(&other, create)).await;
    assert_eq!(second.unwrap(), None, "the name is taken");
    assert_eq!(count(&other, "SELECT COUNT(*) FROM policies").await, 1);
    other.close().await;
    o.store.close().await;
}

/// A delivery created for a target version that is gone (a fan-out that used the policy as it
/// was just before an edit of its targets, committed after the edit dropped that version) is
/// attempted with the policy's current target at its position, as a redelivery would be;
/// ended when that target is disabled. (It ended dead as "unreadable delivery".)
async fn a_delivery_whose_target_version_is_gone_goes_to_the_current_target(kind: Kind) {
    let o = open(kind).await;
    let s = &o.store;
    let pid = add_policy(s, policy("prj", vec![Target::http("http://a.example/")])).await;
    let drop_first_versions = move |c: &wharf::store::Db<'_>| -> Result<(), StoreError> {
        let old = c.int(
            "SELECT MIN(target_id) FROM deliveries WHERE state = 'pending'",
            &[],
        )?;
        c.exec(
            "DELETE FROM delivery_targets WHERE id = ?1",
            &[store::db::Value::Int(old.unwrap_or(0))],
        )?;
        Ok(())
    };
    publish(s, 1).await;
    s.write(move |c| {
        policies::update_targets(c, pid, &[Target::http("http://b.example/")])?;
        drop_first_versions(c)
    })
    .await
    .unwrap();
    let got = claim(s, limits(10, 10), lease(1)).await;
    assert_eq!(got.len(), 1, "attempted");
    assert_eq!(got[0].target.address, "http://b.example/");
    // the same, with the current target disabled (410) since
    publish(s, 1).await;
    let mut disabled = Target::http("http://c.example/");
    disabled.disabled = true;
    s.write(move |c| {
        policies::update_targets(c, pid, &[disabled])?;
        drop_first_versions(c)
    })
    .await
    .unwrap();
    assert!(claim(s, limits(10, 10), lease(2)).await.is_empty());
    let ended = count(
        s,
        "SELECT COUNT(*) FROM deliveries WHERE state = 'dead' AND last_error = 'target disabled'",
    )
    .await;
    assert_eq!(ended, 1);
    s.close().await;
}

/// A manifest whose delete the registry accepted, pushed again by tag before the delete's
/// transaction committed (wharf checks the tags in between): the registry holds it again, so
/// it stays known and counted, its old tags gone. Without a push since, it is forgotten.
/// (It was forgotten either way: its usage given back while the registry held it.)
async fn a_manifest_pushed_again_while_its_delete_settled_stays_known(kind: Kind) {
    let o = open(kind).await;
    let s = &o.store;
    let m = artifact("p/a", "m1", &[("c1", 10), ("l1", 100)]);
    s.write(move |c| knowledge::learn_manifest(c, &m, Some("old")).map(|_| ()))
        .await
        .unwrap();
    let sent_at = store::now_ms();
    tokio::time::sleep(Duration::from_millis(5)).await;
    // the push again, by tag (a retag of a known manifest: its tag is written)
    let m = artifact("p/a", "m1", &[("c1", 10), ("l1", 100)]);
    s.write(move |c| knowledge::learn_manifest(c, &m, Some("new")).map(|_| ()))
        .await
        .unwrap();
    let kept = s
        .write(move |c| knowledge::forget_deleted(c, "p/a", "m1", sent_at))
        .await
        .unwrap();
    assert_eq!(kept, None, "not forgotten");
    let usage = || s.read(|c| quota::usage(c, "p"));
    assert_eq!(usage().await.unwrap(), 110);
    let tags = s
        .read(|c| knowledge::tags_of(c, "p/a", "m1"))
        .await
        .unwrap();
    assert_eq!(tags, ["new"]);
    // deleted again, nothing pushed since: forgotten, its space given back
    let sent_at = store::now_ms() + 1;
    let gone = s
        .write(move |c| knowledge::forget_deleted(c, "p/a", "m1", sent_at))
        .await
        .unwrap();
    assert_eq!(gone, Some((110, 0)));
    assert!(
        s.read(|c| knowledge::artifact(c, "p/a", "m1"))
            .await
            .unwrap()
            .is_none()
    );
    s.close().await;
}

/// The same race through two replicas, the push not committed yet when the delete settles:
/// the delete waits for it (the push holds its manifest's lock, shared with other pushes of
/// it) and then finds it, whether the push wrote a tag the manifest already had or a new one
/// (no row of the delete's to wait for). Before, the delete forgot the manifest and gave its
/// space back; the push then committed a tag pointing at a manifest wharf no longer knew.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_a_manifest_pushed_again_during_its_delete_stays_known() {
    for (round, tag) in ["old", "new"].into_iter().enumerate() {
        let o = open(Kind::Postgres).await;
        let (other, _dir) = replica_of(&o).await;
        let m = artifact("p/a", "m1", &[("c1", 10), ("l1", 100)]);
        o.store
            .write(move |c| knowledge::learn_manifest(c, &m, Some("old")).map(|_| ()))
            .await
            .unwrap();
        let sent_at = store::now_ms();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let push = move |c: &wharf::store::Db<'_>| {
            let m = artifact("p/a", "m1", &[("c1", 10), ("l1", 100)]);
            knowledge::learn_pushed(c, &m, Some(tag))
        };
        let delete = write_of(&o.store, move |c| {
            knowledge::forget_deleted(c, "p/a", "m1", sent_at)
        });
        let kept = second_waits_for_first(&other, push, &o.store, delete)
            .await
            .unwrap();
        assert_eq!(kept, None, "round {round}: not forgotten");
        let tags = o
            .store
            .read(|c| knowledge::tags_of(c, "p/a", "m1"))
            .await
            .unwrap();
        assert_eq!(tags, [tag], "round {round}");
        assert!(
            o.store
                .read(|c| knowledge::artifact(c, "p/a", "m1"))
                .await
                .unwrap()
                .is_some(),
            "round {round}: known"
        );
        assert_eq!(o.store.read(|c| quota::usage(c, "p")).await.unwrap(), 110);
        other.close().await;
        o.store.close().await;
    }
}

/// Several replicas migrate the same empty database at once: one migrates, the others wait
/// for the advisory lock and find it done.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_replicas_starting_together_migrate_once() {
    let url = pgc::database().await;
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let dir = tempfile::tempdir().unwrap();
            let s = Store::open(&pg_config(&url), dir.path()).await.unwrap();
            let v = s.schema_version().await.unwrap();
            s.close().await;
            v
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), store::schema::latest());
    }
}

async fn project_and_user_ids_are_assigned_once(kind: Kind) {
    use wharf::store::{projects, users};
    let o = open(kind).await;
    let s = &o.store;
    // admin is user 1 from the migration on
    let admin = s
        .read(|c| users::by_name(c, "admin"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(admin.id, 1);
    let (alice, again) = s
        .write(|c| Ok((users::ensure(c, "alice")?, users::ensure(c, "alice")?)))
        .await
        .unwrap();
    assert_eq!(alice, again);
    assert!(alice.id > 1);
    assert_eq!(
        s.read(move |c| users::by_id(c, alice.id)).await.unwrap(),
        Some(alice)
    );
    // projects: an id once, the same whoever asks again (config, policy, traffic)
    let names: Vec<String> = vec!["b".into(), "a".into()];
    s.write(move |c| projects::ensure_all(c, &names))
        .await
        .unwrap();
    let a = s
        .read(|c| projects::by_name(c, "a"))
        .await
        .unwrap()
        .unwrap();
    let again = s.write(|c| policies::ensure_project(c, "a")).await.unwrap();
    assert_eq!(a.id, again);
    add_policy(s, policy("a", vec![Target::http("http://t.example/")])).await;
    let list = s.read(projects::list).await.unwrap();
    assert_eq!(
        list.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        ["a", "b"],
        "by name"
    );
    assert_eq!(list[0].id, a.id);
    assert_eq!(
        s.read(move |c| projects::by_id(c, a.id))
            .await
            .unwrap()
            .map(|p| p.name),
        Some("a".to_string())
    );
    assert_eq!(s.read(|c| projects::by_id(c, 999_999)).await.unwrap(), None);
    // repositories of a project: its own, not a project whose name starts alike
    s.write(|c| {
        for (r, d) in [
            ("a/x", "sha256:1"),
            ("a/x", "sha256:2"),
            ("a/y/z", "sha256:3"),
            ("ab/x", "sha256:4"),
        ] {
            knowledge::learn_manifest(c, &artifact(r, d, &[]), None)?;
        }
        Ok(())
    })
    .await
    .unwrap();
    assert_eq!(s.read(|c| projects::repo_count(c, "a")).await.unwrap(), 2);
    assert_eq!(s.read(|c| projects::repo_count(c, "ab")).await.unwrap(), 1);
    assert_eq!(s.read(|c| projects::repo_count(c, "b")).await.unwrap(), 0);
    let created = s
        .read(|c| knowledge::repository_created(c, "a/x"))
        .await
        .unwrap()
        .unwrap();
    assert!((created - store::now_ms() / 1000).abs() < 60, "{created}");
    assert_eq!(
        s.read(|c| knowledge::repository_created(c, "none/x"))
            .await
            .unwrap(),
        None
    );
    s.close().await;
}

/// The SQL `q` and `sort` become (LIKE with escapes, ranges, lists, CASE expressions) means the
/// same on both backends.
async fn harbor_queries_filter_sort_and_page_in_sql(kind: Kind) {
    use wharf::api::query::{Field, Kind as F, Query, Sort};
    use wharf::store::executions::{self, STATUS_SQL, VENDOR_TYPE_SQL};
    let o = open(kind).await;
    let s = &o.store;
    s.write(|c| {
        for (r, d) in [
            ("prj/a_b", "sha256:1"),
            ("prj/axb", "sha256:2"),
            ("prj/c", "sha256:3"),
        ] {
            events::insert(c, &push(r, d), None)?;
        }
        Ok(())
    })
    .await
    .unwrap();
    const EVENT_FIELDS: &[Field] = &[
        Field::sql("repository", F::Text, "repository"),
        Field::sql("digest", F::Text, "digest"),
        Field::sql("occurred_at", F::Time, "occurred_at"),
    ];
    let page = |q: &str, sort: &str, window: (i64, i64)| {
        let (filter, args) = Query::parse(q).unwrap().sql_where(EVENT_FIELDS, 1);
        let order = Sort::parse(sort).sql_order(EVENT_FIELDS);
        s.read(move |c| {
            let values: Vec<_> = args.iter().map(|a| a.value()).collect();
            events::page(c, &filter, &values, false, order.as_deref(), window)
        })
    };
    let repos = |r: &(Vec<events::StoredEvent>, u64)| {
        r.0.iter()
            .map(|e| e.event.repository.clone())
            .collect::<Vec<_>>()
    };
    // `_` is no wildcard
    let r = page("repository=~A_B", "", (0, 10)).await.unwrap();
    assert_eq!((repos(&r), r.1), (vec!["prj/a_b".to_string()], 1));
    let r = page("digest={sha256:1 sha256:3}", "digest", (0, 10))
        .await
        .unwrap();
    assert_eq!(repos(&r), ["prj/a_b", "prj/c"]);
    let r = page("digest=[sha256:2~]", "-digest", (0, 10))
        .await
        .unwrap();
    assert_eq!(repos(&r), ["prj/c", "prj/axb"]);
    let r = page("occurred_at=[2000-01-01T00:00:00~]", "", (1, 1))
        .await
        .unwrap();
    assert_eq!(
        (repos(&r), r.1),
        (vec!["prj/axb".to_string()], 3),
        "newest first, page 2 of 1"
    );
    let r = page("occurred_at=[~2000-01-01 00:00:00]", "", (0, 10))
        .await
        .unwrap();
    assert_eq!(r.1, 0);
    let r = page("", "", (i64::MAX, 10)).await.unwrap();
    assert_eq!((r.0.len(), r.1), (0, 3));

    // executions: vendor type and status are expressions over the delivery and its target
    let slack = Target {
        kind: wharf::dispatch::policy::TargetKind::Slack,
        ..Target::http("http://slack.example/")
    };
    let pid = add_policy(
        s,
        policy("prj", vec![Target::http("http://h.example/"), slack]),
    )
    .await;
    publish(s, 1).await;
    const EXEC_FIELDS: &[Field] = &[
        Field::sql("vendor_type", F::Text, VENDOR_TYPE_SQL),
        Field::sql("status", F::Text, STATUS_SQL),
        Field::sql("trigger", F::Text, "'EVENT'"),
    ];
    let list = |q: &str| {
        let (filter, args) = Query::parse(q).unwrap().sql_where(EXEC_FIELDS, 2);
        s.read(move |c| {
            let values: Vec<_> = args.iter().map(|a| a.value()).collect();
            executions::list(c, pid, &filter, &values, None, (0, 10))
        })
    };
    let (rows, total) = list("").await.unwrap();
    assert_eq!(total, 2);
    assert!(rows.iter().all(|r| r.event.is_some() && r.target.is_some()));
    let (rows, _) = list("vendor_type=SLACK").await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(
        rows[0].target.as_ref().unwrap().address,
        "http://slack.example/"
    );
    assert_eq!(list("vendor_type=~webhook").await.unwrap().1, 1);
    assert_eq!(list("status=Pending,trigger=EVENT").await.unwrap().1, 2);
    assert_eq!(list("status={Success Error}").await.unwrap().1, 0);
    s.close().await;
}

/// The dispatcher's plans on PostgreSQL, pinned with the statistics of a burst: analyzed while
/// every delivery was dead, then all of them redelivered (pending) before autovacuum looks
/// again. The planner must still claim by walking `deliveries_pending_by_target` in order, and
/// find targets and due times with one index probe each: before the fix it fetched and sorted
/// every pending delivery per claim (an index on due times alone, 5 ms at 5,000; then, as real
/// deliveries name a target version, the index of open deliveries by target version, 17 ms at
/// 10,000: schema 11) and read every pending entry for each `MIN()` (2 ms).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_dispatcher_plans_hold_with_the_statistics_of_a_burst() {
    let o = open(Kind::Postgres).await;
    o.store
        .write(|c| {
            c.exec(
                "ALTER TABLE deliveries SET (autovacuum_enabled = false)",
                &[],
            )?;
            fill_deliveries(c, "dead")?;
            c.exec("ANALYZE deliveries", &[])?;
            c.exec(
                "UPDATE deliveries SET state = 'pending', not_before = 1000",
                &[],
            )
        })
        .await
        .unwrap();
    let explain = |sql: &'static str, args: Vec<(bool, i64, &'static str)>| {
        let store = o.store.clone();
        async move {
            store
                .write(move |c| {
                    let values: Vec<wharf::store::db::Value<'_>> = args
                        .iter()
                        .map(|(text, n, t)| if *text { (*t).into() } else { (*n).into() })
                        .collect();
                    c.rows(&format!("EXPLAIN {sql}"), &values, |r| r.text(0))
                })
                .await
                .unwrap()
                .join("\n")
        }
    };
    let claim = explain(
        outbox::CLAIM_LOAD_SQL_PG,
        vec![
            (true, 0, "http://t/"),
            (false, 2000, ""),
            (false, 16, ""),
            (false, 7, ""),
            (false, 60_000, ""),
        ],
    )
    .await;
    assert!(
        claim.contains("deliveries_pending_by_target") && !claim.contains("Sort"),
        "the claim does not walk the target's due deliveries in order:\n{claim}"
    );
    assert!(!claim.contains("Seq Scan on deliveries"), "{claim}");
    // what an attempt needs besides the event comes from subqueries on primary keys: joining
    // five tables cost 0.7–1.5 ms of planning per claim (replanned on every call when
    // PostgreSQL prefers custom plans), more than the claim itself
    assert!(
        claim.matches(" Join ").count() <= 1,
        "the claim joins more than the event:\n{claim}"
    );
    let targets = explain(outbox::PENDING_TARGETS_PG, vec![]).await;
    assert!(
        !targets.contains("Aggregate"),
        "the target scan reads every pending entry:\n{targets}"
    );
    let due = explain(outbox::NEXT_DUE_OF_TARGET_PG, vec![(true, 0, "http://t/")]).await;
    assert!(
        due.contains("Limit") && !due.contains("Aggregate") && !due.contains("Sort"),
        "the next due time reads every pending entry:\n{due}"
    );
}

/// The same manifest pushed again (a new tag: the usual CI retag) leaves its row as it is — on
/// PostgreSQL no new row version (each one was walked by the next upsert: 3.5 ms per push after
/// 3,000 retags) — and a changed one is still written.
async fn an_artifact_pushed_again_unchanged_is_not_rewritten(kind: Kind) {
    let o = open(kind).await;
    let a = artifact("p/a", "m1", &[("c1", 10), ("l1", 100)]);
    let version = |store: Store| async move {
        store
            .read(move |c| {
                let sql = match c.backend() {
                    store::Backend::Postgres => "SELECT xmin::text FROM artifacts",
                    store::Backend::Sqlite => "SELECT CAST(rowid AS TEXT) FROM artifacts",
                };
                c.text(sql, &[])
            })
            .await
            .unwrap()
    };
    let first = a.clone();
    o.store
        .write(move |c| knowledge::upsert_artifact(c, &first))
        .await
        .unwrap();
    let before = version(o.store.clone()).await;
    let again = a.clone();
    o.store
        .write(move |c| knowledge::upsert_artifact(c, &again))
        .await
        .unwrap();
    assert_eq!(
        version(o.store.clone()).await,
        before,
        "rewritten unchanged"
    );
    let mut changed = a.clone();
    changed.size = Some(999);
    changed.platforms = vec!["linux/arm64".into()];
    let c2 = changed.clone();
    o.store
        .write(move |c| knowledge::upsert_artifact(c, &c2))
        .await
        .unwrap();
    let got = o
        .store
        .read(|c| knowledge::artifact(c, "p/a", "m1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got.size, Some(999));
    assert_eq!(got.platforms, vec!["linux/arm64".to_string()]);
}

/// A job that writes a tag, then sends ahead a statement that fails (a duplicate key), then
/// perhaps runs a query.
async fn failing_job(s: Store, tag: String, then_query: bool) -> Result<(), StoreError> {
    s.write(move |c| {
        knowledge::set_tag(c, "prj/bad", &tag, "sha256:a")?;
        c.exec_later("INSERT INTO meta (key, n) VALUES ('taken', 2)", &[])?;
        if then_query {
            c.int("SELECT COUNT(*) FROM tags", &[])?;
        }
        Ok(())
    })
    .await
}

/// On PostgreSQL a statement whose answer a job does not need is sent ahead and not waited
/// for (`Db::exec_later`): its failure must still fail that job — whether the job ends right
/// after it, or runs a query first — roll back everything the job wrote, and leave the jobs it
/// shares a group commit with untouched.
async fn a_statement_sent_ahead_that_fails_fails_its_job_alone(kind: Kind) {
    let o = open(kind).await;
    let s = o.store.clone();
    s.write(|c| c.exec_later("INSERT INTO meta (key, n) VALUES ('taken', 1)", &[]))
        .await
        .unwrap();
    // alone, then mixed with good jobs (they share group commits when queued together)
    assert!(failing_job(s.clone(), "alone".into(), false).await.is_err());
    assert!(
        failing_job(s.clone(), "alone-query".into(), true)
            .await
            .is_err()
    );
    let mut bad = Vec::new();
    let mut good = Vec::new();
    for i in 0..12 {
        bad.push(tokio::spawn(failing_job(
            s.clone(),
            format!("t{i}"),
            i % 2 == 0,
        )));
        let s = s.clone();
        good.push(tokio::spawn(async move {
            s.write(move |c| knowledge::set_tag(c, "prj/good", &format!("t{i}"), "sha256:a"))
                .await
        }));
    }
    for j in bad {
        assert!(j.await.unwrap().is_err(), "every failing job fails");
    }
    for j in good {
        j.await
            .unwrap()
            .expect("a good job never carries its neighbour's failure");
    }
    assert_eq!(
        count(&s, "SELECT COUNT(*) FROM tags WHERE repository = 'prj/bad'").await,
        0,
        "a failed job's writes are rolled back"
    );
    assert_eq!(
        count(
            &s,
            "SELECT COUNT(*) FROM tags WHERE repository = 'prj/good'"
        )
        .await,
        12
    );
    assert_eq!(count(&s, "SELECT n FROM meta WHERE key = 'taken'").await, 1);
}

/// The counts `/metrics` reports, and the outbox counted row by row: they must agree.
async fn assert_counts_agree(s: &Store, when: &str) {
    let kept = s.read(outbox::counts).await.unwrap();
    let counted = s
        .read(|c| {
            store::grouped_counts(
                c,
                "SELECT state, COUNT(*) FROM deliveries GROUP BY state ORDER BY state",
            )
        })
        .await
        .unwrap();
    let mut kept: Vec<_> = kept
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .map(|(state, n)| (state.as_str().to_string(), n))
        .collect();
    kept.sort();
    assert_eq!(kept, counted, "{when}");
}

/// `/metrics` reads delivery counts the database keeps as deliveries change (schema
/// migration 10): created, claimed, attempted (success, retry, dead), redelivered, pruned — and
/// on PostgreSQL, changed by another replica, whose counter rows are folded once it is gone.
async fn delivery_counts_follow_every_change_without_counting_the_outbox(kind: Kind) {
    let o = open(kind).await;
    let s = &o.store;
    let pid = add_policy(
        s,
        policy(
            "prj",
            vec![
                Target::http("http://a.example/"),
                Target::http("http://b.example/"),
            ],
        ),
    )
    .await;
    assert_counts_agree(s, "empty").await;
    publish(s, 5).await;
    assert_counts_agree(s, "created").await;
    let got = claim(s, limits(100, 3), lease(7)).await;
    assert_eq!(got.len(), 6);
    assert_counts_agree(s, "claimed").await;
    // the open states are counted when asked (schema migration 12): creating and claiming a
    // delivery writes no counter (on PostgreSQL a trigger on every insert slowed each push)
    assert_eq!(
        count(
            s,
            "SELECT COUNT(*) FROM delivery_counts WHERE state NOT IN ('succeeded', 'dead')"
        )
        .await,
        0,
        "counters of open states"
    );
    let ids: Vec<i64> = got.iter().map(|d| d.id).collect();
    s.write(move |c| {
        for (i, id) in ids.iter().enumerate() {
            let next = match i % 3 {
                0 => Next::Succeeded,
                1 => Next::Dead,
                _ => Next::RetryAt(store::now_ms() + 60_000),
            };
            let a = Attempt {
                delivery_id: *id,
                started_at: store::now_ms(),
                duration_ms: 1,
                ..Default::default()
            };
            if i < 3 {
                outbox::record(c, &a, next, 7)?;
            } else {
                outbox::record_many(
                    c,
                    &[outbox::Outcome {
                        attempt: a,
                        next,
                        token: 7,
                    }],
                )?;
            }
        }
        Ok(())
    })
    .await
    .unwrap();
    assert_counts_agree(s, "attempted").await;
    s.write(move |c| outbox::redeliver_dead(c, pid))
        .await
        .unwrap();
    assert_counts_agree(s, "redelivered").await;
    s.write(|c| c.exec("DELETE FROM deliveries WHERE state = 'succeeded'", &[]))
        .await
        .unwrap();
    assert_counts_agree(s, "deleted").await;
    if let Some(url) = &o.url {
        let dir = tempfile::tempdir().unwrap();
        let other = Store::open(&pg_config(url), dir.path()).await.unwrap();
        publish(&other, 3).await;
        let got = claim(&other, limits(2, 2), lease(8)).await;
        // a final state, which the counters keep
        let id = got[0].id;
        other
            .write(move |c| {
                let a = Attempt {
                    delivery_id: id,
                    started_at: store::now_ms(),
                    duration_ms: 1,
                    ..Default::default()
                };
                outbox::record(c, &a, Next::Succeeded, 8)
            })
            .await
            .unwrap();
        assert_counts_agree(s, "another replica's changes").await;
        let shards = || count(s, "SELECT COUNT(DISTINCT shard) FROM delivery_counts");
        assert!(
            shards().await >= 2,
            "each database process counts in rows of its own"
        );
        other.close().await;
        // its server processes end shortly after its connections close
        let mut folded = 0;
        for _ in 0..50 {
            folded += s.write(outbox::fold_counts).await.unwrap();
            if count(s, "SELECT COUNT(*) FROM delivery_counts WHERE shard <> 0 AND shard NOT IN (SELECT pid FROM pg_stat_activity WHERE pid IS NOT NULL)").await == 0 && folded > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(folded > 0, "the ended processes' rows are folded");
        assert_counts_agree(s, "folded").await;
    }
    s.close().await;
}

/// `store.retention_pulls`: pull events (and their finished deliveries) are pruned on their own
/// schedule; other events of the same age stay for `store.retention`.
async fn pull_events_leave_the_log_sooner(kind: Kind) {
    let o = open(kind).await;
    let s = &o.store;
    add_policy(s, policy("prj", vec![Target::http("http://a.example/")])).await;
    let repo = repo("prj/a");
    s.write(move |c| {
        let days_ago =
            |e: &mut Event, d: i64| e.occurred_at = chrono::Utc::now() - chrono::Duration::days(d);
        let mut old_push = push("prj/a", "sha256:push");
        days_ago(&mut old_push, 10);
        let mut old_pull = Event::new(EventKind::PullArtifact, &repo, "u");
        old_pull.digest = Some("sha256:oldpull".into());
        days_ago(&mut old_pull, 10);
        let mut old_download = Event::new(EventKind::DownloadChart, &repo, "u");
        days_ago(&mut old_download, 10);
        let mut new_pull = Event::new(EventKind::PullArtifact, &repo, "u");
        new_pull.digest = Some("sha256:newpull".into());
        for e in [&old_push, &old_pull, &old_download, &new_pull] {
            events::insert(c, e, None)?;
        }
        c.exec("UPDATE deliveries SET state = 'succeeded'", &[])
    })
    .await
    .unwrap();
    let week = store::now_ms() - 7 * 86_400_000;
    let pruned = s
        .write(move |c| events::prune_pulls(c, week, 100))
        .await
        .unwrap();
    assert_eq!(pruned, 2, "the old pull and the old chart download");
    let left = count(s, "SELECT COUNT(*) FROM events").await;
    assert_eq!(left, 2, "the old push and the new pull stay");
    assert_eq!(
        count(s, "SELECT COUNT(*) FROM events WHERE type = 1").await,
        1
    );
    assert_eq!(count(s, "SELECT COUNT(*) FROM deliveries").await, 2);
    // the general retention takes the push once it is old enough for it
    let pruned = s.write(move |c| events::prune(c, week, 100)).await.unwrap();
    assert_eq!(pruned, 1);
    s.close().await;
}

/// PostgreSQL: a burst of writes is committed in groups (the writers are all busy), and every
/// write of it lands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_burst_of_writes_is_committed_in_groups() {
    let o = open(Kind::Postgres).await;
    let stats = o.store.stats();
    let before = stats.commits.load(std::sync::atomic::Ordering::Relaxed);
    let writes = (0..300i64).map(|i| {
        o.store.write(move |c| {
            c.exec(
                "INSERT INTO meta (key, n) VALUES (?1, ?2)",
                &[format!("burst-{i}").as_str().into(), i.into()],
            )
        })
    });
    for r in futures_util::future::join_all(writes).await {
        assert_eq!(r.unwrap(), 1);
    }
    let commits = stats.commits.load(std::sync::atomic::Ordering::Relaxed) - before;
    assert!(
        commits < 100,
        "300 writes queued together took {commits} commits"
    );
    let n = o
        .store
        .read(|c| c.int("SELECT COUNT(*) FROM meta WHERE key LIKE 'burst-%'", &[]))
        .await
        .unwrap();
    assert_eq!(n, Some(300));
    o.store.close().await;
}

/// SQLite: background writes (pull events) queued together share one group commit while the
/// writer gathers them (it is parked, not woken by each one), and a write somebody waits for
/// joins the gathering batch and commits it with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_background_writes_share_a_commit_with_the_write_that_ends_the_window() {
    let o = open(Kind::Sqlite).await;
    let stats = o.store.stats();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let before = stats.commits.load(std::sync::atomic::Ordering::Relaxed);
    for i in 0..20i64 {
        let tx = tx.clone();
        o.store.write_detached(
            move |c| {
                c.exec(
                    "INSERT INTO meta (key, n) VALUES (?1, ?2)",
                    &[format!("bg-{i}").as_str().into(), i.into()],
                )
            },
            move |r| {
                let _ = tx.send(r.map(|_| ()));
            },
        );
    }
    let waited = o
        .store
        .write(|c| c.exec("INSERT INTO meta (key, n) VALUES ('urgent', 1)", &[]))
        .await;
    assert_eq!(waited.unwrap(), 1);
    for _ in 0..20 {
        rx.recv().await.unwrap().unwrap();
    }
    let commits = stats.commits.load(std::sync::atomic::Ordering::Relaxed) - before;
    assert!(
        commits <= 2,
        "21 writes queued together took {commits} commits"
    );
    let n = o
        .store
        .read(|c| {
            c.int(
                "SELECT COUNT(*) FROM meta WHERE key LIKE 'bg-%' OR key = 'urgent'",
                &[],
            )
        })
        .await
        .unwrap();
    assert_eq!(n, Some(21));
}

/// The first job of a SQLite transaction runs without a savepoint: when it fails, the
/// transaction is rolled back whole and the jobs after it begin another. Background jobs queued
/// together (one window, one batch): a failing first job, good ones, a failing one among them,
/// and again a failing one after that — each failure loses only its own writes, and every other
/// job lands, in at most two commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_a_failing_first_job_of_a_batch_takes_nothing_else_with_it() {
    let o = open(Kind::Sqlite).await;
    let s = &o.store;
    s.write(|c| c.exec("INSERT INTO meta (key, n) VALUES ('taken', 1)", &[]))
        .await
        .unwrap();
    let stats = s.stats();
    let before = stats.commits.load(std::sync::atomic::Ordering::Relaxed);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    // fails: first, then at position 3, then two in a row at the end of the window
    let fails = [true, false, false, true, false, true, true, false];
    for (i, fail) in fails.into_iter().enumerate() {
        let tx = tx.clone();
        s.write_detached(
            move |c| {
                c.exec(
                    "INSERT INTO meta (key, n) VALUES (?1, 1)",
                    &[format!("job-{i}").as_str().into()],
                )?;
                if fail {
                    c.exec("INSERT INTO meta (key, n) VALUES ('taken', 2)", &[])?;
                }
                Ok(())
            },
            move |r: Result<(), StoreError>| {
                let _ = tx.send((i, r.is_ok()));
            },
        );
    }
    s.write(|c| c.exec("INSERT INTO meta (key, n) VALUES ('urgent', 1)", &[]))
        .await
        .unwrap();
    let mut answers = Vec::new();
    for _ in 0..fails.len() {
        answers.push(rx.recv().await.unwrap());
    }
    answers.sort();
    for (i, ok) in answers {
        assert_eq!(ok, !fails[i], "job {i} answered");
    }
    let kept = s
        .read(|c| {
            c.rows(
                "SELECT key FROM meta WHERE key LIKE 'job-%' ORDER BY key",
                &[],
                |r| r.text(0),
            )
        })
        .await
        .unwrap();
    assert_eq!(kept, ["job-1", "job-2", "job-4", "job-7"]);
    assert_eq!(count(s, "SELECT n FROM meta WHERE key = 'taken'").await, 1);
    assert_eq!(
        count(s, "SELECT COUNT(*) FROM meta WHERE key = 'urgent'").await,
        1
    );
    let commits = stats.commits.load(std::sync::atomic::Ordering::Relaxed) - before;
    assert!(commits <= 2, "{commits} commits");
}

/// Insert `e`'s row as a wharf before schema 20 wrote it, published: `body` is its JSON (SQLite
/// text, PostgreSQL bytes), the time `occurred_ms`.
fn insert_json_row(
    c: &wharf::store::Db<'_>,
    e: &Event,
    occurred_ms: i64,
    body: &str,
) -> Result<u64, StoreError> {
    use store::db::Value;
    let body = match c.backend() {
        store::Backend::Sqlite => Value::Text(body),
        store::Backend::Postgres => Value::Bytes(body.as_bytes()),
    };
    c.exec(
        "INSERT INTO events (id, type, project, repository, digest, occurred_at, state, release_at, body)
         VALUES (?1, ?2, 'prj', ?3, ?4, ?5, 2, NULL, ?6)",
        &[
            Value::from(&e.id),
            Value::Int(events::type_code(e.kind)),
            Value::Text(&e.repository),
            e.digest.as_deref().map_or(Value::Null, Value::Text),
            Value::Int(occurred_ms),
            body,
        ],
    )
}

/// Up to 10 events of project `prj` in the log, newest first, held ones included.
async fn events_of_prj(s: &Store) -> Vec<Event> {
    let f = events::EventFilter {
        project: Some("prj".into()),
        repository: None,
        kind: None,
        all_states: true,
        limit: 10,
    };
    let listed = s.read(move |c| events::list(c, &f)).await.unwrap();
    listed.into_iter().map(|x| x.event).collect()
}

/// The stored body of event `e`.
async fn body_of(s: &Store, e: &Event) -> Vec<u8> {
    let id = e.id;
    let rows = s
        .read(move |c| {
            c.rows(
                "SELECT body FROM events WHERE id = ?1",
                wharf::args![&id],
                |r| r.opt_bytes(0),
            )
        })
        .await
        .unwrap();
    rows.into_iter().flatten().next().unwrap()
}

/// `e`, read back by its id, is `e` whole.
async fn assert_reads_back(s: &Store, e: &Event) {
    let id = e.id.to_string();
    let got = s.read(move |c| events::get(c, &id)).await.unwrap();
    assert_eq!(got.as_ref(), Some(e));
}

/// Each row of `hosts` and how many events name it.
async fn events_per_host(s: &Store) -> Vec<(String, i64)> {
    s.read(|c| {
        c.rows(
            "SELECT h.host, COUNT(e.seq) FROM hosts h LEFT JOIN events e ON e.host_id = h.id
             GROUP BY h.host ORDER BY h.host",
            &[],
            |r| Ok((r.text(0)?, r.i64(1)?)),
        )
    })
    .await
    .unwrap()
}

/// Whether `body` holds `part`.
fn holds(body: &[u8], part: impl AsRef<[u8]>) -> bool {
    let part = part.as_ref();
    body.windows(part.len()).any(|w| w == part)
}

/// The event log keeps an event's id, type, project, repository and digest in columns only (not
/// again in the body); every reader gets the whole event back, and rows written before, whose
/// body holds the whole event, still read.
async fn an_event_reads_back_whole_from_its_stored_row(kind: Kind) {
    use wharf::events::{ChartInfo, QuotaInfo, ScanInfo};
    let o = open(kind).await;
    let s = &o.store;
    let mut full = push("prj/team/app", "sha256:full");
    full.repository_created = Some(1_700_000_000);
    full.tags = vec!["v1".into(), "latest".into()];
    full.media_type = Some("application/vnd.oci.image.index.v1+json".into());
    full.size = Some(1234);
    full.platforms = vec!["linux/amd64".into()];
    full.request_id = Some("req-1".into());
    full.client_addr = Some("127.0.0.1:5000".into());
    full.user_agent = Some("docker/27 \"quoted\"".into());
    full.chart = Some(ChartInfo::default());
    full.scan = Some(ScanInfo::default());
    full.quota = Some(QuotaInfo::default());
    full.test = true;
    let mut bare = Event::new(EventKind::QuotaWarning, &repo("prj/app"), "bob");
    bare.digest = None;
    let old = push("prj/old", "sha256:old");
    // a pull as observe makes it: its resource URL follows from the row but for the host
    let mut pull = Event::new(EventKind::PullArtifact, &repo("prj/team/app"), "anonymous");
    pull.digest = Some("sha256:pulled".into());
    pull.tags = vec!["v2".into()];
    pull.public = true;
    pull.resource_url = Event::oci_resource_url(
        "registry.example:8443",
        "prj/team/app",
        Some("v2"),
        pull.digest.as_deref(),
    );
    pull.request_id = Some("01a2379e-c2b1-76b2-b3ab-8958c36f2211".into());
    // by digest: `…@<digest>`
    let mut by_digest = pull.clone();
    by_digest.id = uuid::Uuid::now_v7();
    by_digest.tags.clear();
    by_digest.public = false;
    // a media type with no code, and a malformed one that looks like a code
    by_digest.media_type = Some("application/vnd.example.manifest+json".into());
    let mut odd = by_digest.clone();
    odd.id = uuid::Uuid::now_v7();
    odd.media_type = Some("om".into());
    // a request id that is a UUID but not in wharf's lowercase text: kept as it came
    odd.request_id = Some("01A2379E-C2B1-76B2-B3AB-8958C36F2211".into());
    // a time on the millisecond: no sub-millisecond part stored
    odd.occurred_at = chrono::DateTime::from_timestamp_millis(1_764_806_400_123).unwrap();
    by_digest.resource_url = Event::oci_resource_url(
        "registry.example:8443",
        "prj/team/app",
        None,
        by_digest.digest.as_deref(),
    );
    // a row as wharf wrote it from the second to the sixth session: long keys, no columns
    let mut long_keys = push("prj/long", "sha256:long");
    long_keys.tags = vec!["v1".into()];
    long_keys.resource_url = "h.example/prj/long:v1".into();
    long_keys.request_id = Some("req-2".into());
    let (f, b, o2) = (full.clone(), bare.clone(), old.clone());
    pull.media_type = Some("application/vnd.oci.image.manifest.v1+json".into());
    let (p, d, l) = (pull.clone(), by_digest.clone(), long_keys.clone());
    let od = odd.clone();
    // a row as wharf wrote it in schemas 13 to 19: JSON with short keys
    let mut short_keys = pull.clone();
    short_keys.id = uuid::Uuid::now_v7();
    short_keys.request_id = Some(short_keys.id.to_string());
    short_keys.occurred_at = chrono::DateTime::from_timestamp_millis(1_764_806_400_123).unwrap();
    let sk = short_keys.clone();
    // a pull that took its request's id (wharf made it): the body says so, without the id
    let mut own = pull.clone();
    own.id = uuid::Uuid::now_v7();
    own.request_id = Some(own.id.to_string());
    let ow = own.clone();
    s.write(move |c| {
        events::insert(c, &ow, None)?;
        events::insert(c, &f, None)?;
        events::insert(c, &b, Some(store::now_ms() + 60_000))?;
        events::insert(c, &p, None)?;
        events::insert(c, &d, None)?;
        events::insert(c, &od, None)?;
        let long = serde_json::json!({
            "occurred_at": l.occurred_at, "operator": l.operator, "public": false,
            "tags": l.tags, "resource_url": l.resource_url, "request_id": l.request_id,
        });
        insert_json_row(c, &l, 1, &long.to_string())?;
        let short =
            r#"{"o":"anonymous","p":true,"g":["v2"],"m":"om","h":"registry.example:8443","Q":""}"#;
        insert_json_row(c, &sk, sk.occurred_at.timestamp_millis(), short)?;
        // a row as wharf wrote it before: the whole event in the body
        insert_json_row(c, &o2, 1, &serde_json::to_string(&o2).unwrap())?;
        Ok(())
    })
    .await
    .unwrap();
    for e in [
        &full,
        &bare,
        &old,
        &pull,
        &by_digest,
        &odd,
        &long_keys,
        &own,
        &short_keys,
    ] {
        let id = e.id.to_string();
        let got = s.read(move |c| events::get(c, &id)).await.unwrap();
        assert_eq!(got.as_ref(), Some(e), "events::get");
    }
    // packed (schema 20): a pull that took its request's id keeps neither the id nor its text
    let body = body_of(s, &own).await;
    assert_eq!(body.first(), Some(&1), "{body:?}");
    assert!(
        !holds(&body, own.id.as_bytes()) && !holds(&body, own.id.to_string()),
        "{body:?}"
    );
    // a pull's body: the resource URL's host named by the row (schema 22, kept once in
    // `hosts`), no operator when anonymous, the common media types as a code, wharf's request
    // id (a UUID) as its 16 bytes
    let hosts = events_per_host(s).await;
    // (`pull`, `by_digest`, `own`; `odd` keeps a resource URL that does not follow from its row)
    assert_eq!(hosts, vec![("registry.example:8443".to_string(), 3)]);
    for (e, public) in [(&pull, true), (&by_digest, false)] {
        let body = body_of(s, e).await;
        for gone in [
            "registry.example",
            "prj/team/app",
            "anonymous",
            "01a2379e",
            "application/vnd.oci",
        ] {
            assert!(!holds(&body, gone), "{gone} in {body:?}");
        }
        let request = uuid::Uuid::try_parse("01a2379e-c2b1-76b2-b3ab-8958c36f2211").unwrap();
        assert!(holds(&body, request.as_bytes()), "{body:?}");
        if public {
            assert!(body.len() < 60, "{} bytes: {body:?}", body.len());
        } else {
            assert!(
                holds(&body, "application/vnd.example.manifest+json"),
                "{body:?}"
            );
        }
    }
    // a request id not in canonical text is kept as it came
    let body = body_of(s, &odd).await;
    assert!(
        holds(&body, "01A2379E-C2B1-76B2-B3AB-8958C36F2211"),
        "{body:?}"
    );
    // the body leaves out what the columns hold
    let body = body_of(s, &full).await;
    for gone in [
        "prj/team/app",
        "sha256:full",
        "PUSH_ARTIFACT",
        &full.id.to_string(),
    ] {
        assert!(!holds(&body, gone), "{gone} in {body:?}");
    }
    assert!(
        body.len() < serde_json::to_string(&full).unwrap().len() - 100,
        "{body:?}"
    );
    // the event log's list and page, held events included
    let mut got = events_of_prj(s).await;
    got.sort_by_key(|e| e.id);
    let mut want = vec![
        full.clone(),
        bare.clone(),
        old.clone(),
        pull.clone(),
        by_digest.clone(),
        odd.clone(),
        long_keys.clone(),
        own.clone(),
        short_keys.clone(),
    ];
    want.sort_by_key(|e| e.id);
    assert_eq!(got, want, "events::list");
    // a held event released is published whole
    let published = s
        .write(|c| events::publish_due(c, store::now_ms() + 120_000))
        .await
        .unwrap();
    assert_eq!(published, vec![bare], "events::publish_due");
    s.close().await;
}

/// `wharf store copy` counts the deliveries it copies in final states (its inserts pass no
/// counter: schema migration 12), so `/metrics` on PostgreSQL agrees with the rows at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copied_outbox_is_counted() {
    let from = open(Kind::Sqlite).await;
    let s = &from.store;
    add_policy(s, policy("prj", vec![Target::http("http://a.example/")])).await;
    publish(s, 4).await;
    let got = claim(s, limits(100, 3), lease(7)).await;
    assert_eq!(got.len(), 3);
    let ids: Vec<i64> = got.iter().map(|d| d.id).collect();
    s.write(move |c| {
        for (i, id) in ids.iter().enumerate() {
            let next = if i == 0 { Next::Dead } else { Next::Succeeded };
            let a = Attempt {
                delivery_id: *id,
                started_at: store::now_ms(),
                duration_ms: 1,
                ..Default::default()
            };
            outbox::record(c, &a, next, 7)?;
        }
        Ok(())
    })
    .await
    .unwrap();
    assert_counts_agree(s, "before the copy").await;
    let to = open(Kind::Postgres).await;
    wharf::store::copy::copy(s, &to.store, false).await.unwrap();
    assert_counts_agree(&to.store, "copied").await;
    let kept = to.store.read(outbox::counts).await.unwrap();
    assert!(kept.contains(&(DeliveryState::Succeeded, 2)), "{kept:?}");
    assert!(kept.contains(&(DeliveryState::Dead, 1)), "{kept:?}");
    assert!(kept.contains(&(DeliveryState::Pending, 1)), "{kept:?}");
}

/// An event's type and state are kept as small integers (schema 21): every kind reads back,
/// `wharf_event_type` and `wharf_event_state` give the names on both backends (the API's
/// filters use them), and the event log's filters by type and state still work.
async fn event_types_and_states_are_kept_as_codes(kind: Kind) {
    let o = open(kind).await;
    let s = &o.store;
    let all: Vec<Event> = EventKind::ALL
        .iter()
        .map(|k| {
            let mut e = Event::new(*k, &repo("prj/a"), "alice");
            e.digest = Some("sha256:x".into());
            e
        })
        .collect();
    let held = push("prj/a", "sha256:held");
    let (a, h) = (all.clone(), held.clone());
    s.write(move |c| {
        for e in &a {
            events::insert(c, e, None)?;
        }
        events::insert(c, &h, Some(store::now_ms() + 60_000))
    })
    .await
    .unwrap();
    let named = s
        .read(|c| {
            c.rows(
                "SELECT type, wharf_event_type(type), wharf_event_state(state) FROM events ORDER BY seq",
                &[],
                |r| Ok((r.i64(0)?, r.text(1)?, r.text(2)?)),
            )
        })
        .await
        .unwrap();
    let mut want: Vec<(i64, String, String)> = all
        .iter()
        .map(|e| {
            let code = events::type_code(e.kind);
            (
                code,
                e.kind.harbor_type().to_string(),
                "published".to_string(),
            )
        })
        .collect();
    want.push((1, "PUSH_ARTIFACT".into(), "held".into()));
    assert_eq!(named, want);
    let codes: std::collections::BTreeSet<i64> = want.iter().map(|w| w.0).collect();
    assert_eq!(codes.len(), EventKind::ALL.len(), "codes are unique");
    for e in &all {
        assert_reads_back(s, e).await;
    }
    let f = events::EventFilter {
        project: Some("prj".into()),
        kind: Some(EventKind::PushArtifact),
        repository: None,
        all_states: true,
        limit: 10,
    };
    let listed = s.read(move |c| events::list(c, &f)).await.unwrap();
    let states: Vec<(uuid::Uuid, String)> = listed
        .iter()
        .map(|x| (x.event.id, x.state.clone()))
        .collect();
    assert_eq!(
        states,
        vec![(held.id, "held".into()), (all[0].id, "published".into())]
    );
}

/// The host of events' resource URLs is kept once (`hosts`, schema 22), and a replica reuses
/// the id it learned only once the row is committed: a job that added a host and rolled back
/// leaves nothing behind that a later event could name. The table is bounded.
async fn a_host_is_kept_once_and_only_committed_ids_are_reused(kind: Kind) {
    let o = open(kind).await;
    let s = &o.store;
    let at = |host: &str| {
        let mut e = Event::new(EventKind::PullArtifact, &repo("prj/a"), "anonymous");
        e.digest = Some("sha256:x".into());
        e.resource_url = Event::oci_resource_url(host, "prj/a", None, e.digest.as_deref());
        e
    };
    let (lost, other, a1, a2) = (
        at("a.example"),
        at("b.example"),
        at("a.example"),
        at("a.example"),
    );
    let failed = s
        .write(move |c| {
            events::insert(c, &lost, None)?;
            Err::<(), _>(StoreError::Closed)
        })
        .await;
    assert!(failed.is_err());
    let (o2, e1, e2) = (other.clone(), a1.clone(), a2.clone());
    s.write(move |c| events::insert(c, &o2, None))
        .await
        .unwrap();
    s.write(move |c| events::insert(c, &e1, None))
        .await
        .unwrap();
    s.write(move |c| events::insert(c, &e2, None))
        .await
        .unwrap();
    for e in [&other, &a1, &a2] {
        assert_reads_back(s, e).await;
    }
    // another process (a replica started later: nothing cached) finds the row that is there
    let a3 = at("a.example");
    let other_process = match kind {
        Kind::Sqlite => {
            s.close().await;
            Store::open_sqlite(o._dir.path(), Default::default()).unwrap()
        }
        Kind::Postgres => Store::open(&pg_config(o.url.as_deref().unwrap()), o._dir.path())
            .await
            .unwrap(),
    };
    let e3 = a3.clone();
    other_process
        .write(move |c| events::insert(c, &e3, None))
        .await
        .unwrap();
    assert_reads_back(&other_process, &a3).await;
    let hosts = events_per_host(&other_process).await;
    assert_eq!(
        hosts,
        [("a.example".to_string(), 3), ("b.example".to_string(), 1)]
    );
    // the table is bounded (clients choose their `Host`): past its last id, and for a host
    // longer than a DNS name and port, the host stays in the event's body
    let long = at(&format!("{}.example", "x".repeat(400)));
    let late = at("late.example");
    let (l, t) = (long.clone(), late.clone());
    other_process
        .write(move |c| {
            c.exec("INSERT INTO hosts (id, host) VALUES (10000, 'filler')", &[])?;
            events::insert(c, &l, None)?;
            events::insert(c, &t, None)
        })
        .await
        .unwrap();
    for e in [long, late] {
        assert_reads_back(&other_process, &e).await;
    }
    let n = other_process
        .read(|c| c.int("SELECT COUNT(*) FROM hosts", &[]))
        .await
        .unwrap();
    assert_eq!(n, Some(3), "a.example, b.example, filler");
}

/// `wharf store copy` moves PostgreSQL's id sequences past every id SQLite ever gave, also
/// those of rows deleted since (AUTOINCREMENT never reuses one): a policy created after the
/// copy does not take a deleted policy's id — and with it the deliveries that still name it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_never_reuses_the_id_of_a_deleted_row() {
    let from = open(Kind::Sqlite).await;
    let s = &from.store;
    add_policy(s, policy("a", vec![Target::http("http://a.example/")])).await;
    let gone = add_policy(s, policy("b", vec![Target::http("http://b.example/")])).await;
    s.write(move |c| policies::delete(c, "b", gone))
        .await
        .unwrap();
    let to = open(Kind::Postgres).await;
    wharf::store::copy::copy(s, &to.store, false).await.unwrap();
    let new = add_policy(
        &to.store,
        policy("c", vec![Target::http("http://c.example/")]),
    )
    .await;
    // before: the deleted policy's id again
    assert!(new > gone, "{new} after {gone}");
}

/// `wharf store copy` moves event bodies of both forms an embedded store holds — packed
/// (schema 20, bytes) and JSON (written before, text) — into PostgreSQL's `bytea` column, and
/// the hosts events name (schema 22); both read back there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn packed_and_json_event_bodies_are_copied() {
    let from = open(Kind::Sqlite).await;
    let s = &from.store;
    let mut packed = push("prj/a", "sha256:packed");
    // its host kept in `hosts` (schema 22), which is copied too
    packed.resource_url =
        Event::oci_resource_url("h.example", "prj/a", None, packed.digest.as_deref());
    let mut json = push("prj/a", "sha256:json");
    json.resource_url = "h.example/prj/a@sha256:json".into();
    json.occurred_at = chrono::DateTime::from_timestamp_millis(1_764_806_400_123).unwrap();
    let (p, j) = (packed.clone(), json.clone());
    s.write(move |c| {
        events::insert(c, &p, None)?;
        let ms = j.occurred_at.timestamp_millis();
        insert_json_row(c, &j, ms, r#"{"o":"alice","h":"h.example"}"#)?;
        Ok(())
    })
    .await
    .unwrap();
    let to = open(Kind::Postgres).await;
    wharf::store::copy::copy(s, &to.store, false).await.unwrap();
    for e in [packed, json] {
        assert_reads_back(&to.store, &e).await;
    }
}

/// `/metrics` on PostgreSQL counts the open deliveries through their partial indexes, never by
/// walking the history (10,000 finished deliveries here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_delivery_counts_walk_only_the_queue() {
    let o = open(Kind::Postgres).await;
    let plan = o
        .store
        .write(|c| {
            fill_deliveries(c, "succeeded")?;
            // rows inserted finished, as only `wharf store copy` does: counted afresh
            outbox::recount(c)?;
            c.exec(
                "UPDATE deliveries SET state = 'pending' WHERE id % 1000 = 0",
                &[],
            )?;
            c.exec("ANALYZE deliveries", &[])?;
            c.rows(&format!("EXPLAIN {}", outbox::COUNTS_SQL), &[], |r| {
                r.text(0)
            })
            .map(|l| l.join("\n"))
        })
        .await
        .unwrap();
    assert!(!plan.contains("Seq Scan on deliveries"), "{plan}");
    assert!(
        plan.contains("deliveries_pending_by_target") && plan.contains("deliveries_lease"),
        "{plan}"
    );
    let counts = o.store.read(outbox::counts).await.unwrap();
    assert!(counts.contains(&(DeliveryState::Pending, 10)), "{counts:?}");
    assert!(
        counts.contains(&(DeliveryState::Succeeded, 9990)),
        "{counts:?}"
    );
}

/// The outcome statement is planned once per connection, not on every batch of outcomes:
/// PostgreSQL chose a custom plan for about half of its calls (0.17 ms of planning each, 0.6 s
/// in one run of the bench's store scenario) although every one takes the primary key. `outbox::OUTCOME_PLANNING_PG` asks for the generic plan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_outcomes_are_not_planned_on_every_call() {
    let o = open(Kind::Postgres).await;
    let plans = o
        .store
        .write(|c| {
            fill_deliveries(c, "running")?;
            c.exec("ANALYZE deliveries", &[])?;
            for i in 0..12i64 {
                let outcomes: Vec<outbox::Outcome> = (0..=i % 3)
                    .map(|k| outbox::Outcome {
                        attempt: Attempt {
                            id: 0,
                            delivery_id: 1 + i * 3 + k,
                            started_at: 1,
                            duration_ms: 2,
                            status_code: Some(200),
                            error_kind: None,
                            error: None,
                            response_excerpt: None,
                        },
                        next: Next::Succeeded,
                        token: 7,
                    })
                    .collect();
                outbox::record_many(c, &outcomes)?;
            }
            c.rows(
                "SELECT generic_plans, custom_plans FROM pg_prepared_statements
                 WHERE statement LIKE 'UPDATE deliveries AS d%'",
                &[],
                |r| Ok((r.i64(0)?, r.i64(1)?)),
            )
        })
        .await
        .unwrap();
    assert_eq!(plans.len(), 1, "one prepared outcome statement: {plans:?}");
    let (generic, custom) = plans[0];
    assert_eq!(custom, 0, "custom plans of the outcome ({generic} generic)");
    assert_eq!(generic, 12, "generic plans of the outcome");
}

/// The dispatcher's statements keep taking the primary key with a plan cached while
/// `deliveries` was empty: PostgreSQL caches a generic plan per connection and keeps it until
/// the next analyze, and one cached early in a burst scanned the whole table on every outcome
/// as it grew (6.5 ms per call for a bench run). They are planned without sequential scans
/// (`outbox::DISPATCHER_PLANNING_PG`); without it this generic plan is a sequential scan.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_dispatcher_plans_cached_on_an_empty_table_take_the_primary_key() {
    let o = open(Kind::Postgres).await;
    let plans = o
        .store
        .write(|c| {
            c.exec(
                "ALTER TABLE deliveries SET (autovacuum_enabled = false)",
                &[],
            )?;
            c.exec("ANALYZE deliveries", &[])?;
            let prepare = |name: &str| {
                format!(
                    "PREPARE {name}(text, bigint) AS {}",
                    wharf::store::db::to_postgres(outbox::OUTCOME_SQL_PG)
                )
            };
            let moves = "[{\"id\": 1, \"state\": \"succeeded\", \"not_before\": null, \"last_status\": 200, \"last_error\": null, \"token\": 7}]";
            let explain = |c: &wharf::store::Db<'_>, name: &str| {
                c.rows(
                    &format!("EXPLAIN EXECUTE {name}('{moves}', 5)"),
                    &[],
                    |r| r.text(0),
                )
                .map(|l| l.join("\n"))
            };
            c.exec("SET LOCAL plan_cache_mode = force_generic_plan", &[])?;
            // the generic plans are made now, while the table is empty
            c.exec(&prepare("unguarded"), &[])?;
            let unguarded_empty = explain(c, "unguarded")?;
            c.batch_later(outbox::DISPATCHER_PLANNING_PG)?;
            c.exec(&prepare("guarded"), &[])?;
            let guarded_empty = explain(c, "guarded")?;
            c.batch_later(outbox::DEFAULT_PLANNING_PG)?;
            fill_deliveries(c, "running")?;
            // the cached plans, now that the table holds 10,000 rows
            let guarded_full = explain(c, "guarded")?;
            c.exec("DEALLOCATE unguarded", &[])?;
            c.exec("DEALLOCATE guarded", &[])?;
            Ok((unguarded_empty, guarded_empty, guarded_full))
        })
        .await
        .unwrap();
    let (unguarded, guarded, guarded_full) = plans;
    assert!(
        unguarded.contains("Seq Scan on deliveries"),
        "the case this guards against did not arise:\n{unguarded}"
    );
    for plan in [guarded, guarded_full] {
        assert!(
            !plan.contains("Seq Scan on deliveries") && plan.contains("deliveries_pkey"),
            "the outcome does not take the primary key:\n{plan}"
        );
    }
}

/// Schema 14 names a delivery's event by its `seq`: a database of schema 13 (deliveries naming
/// their event by id) migrates with every delivery still tied to its event — listed with the
/// event's id, claimed with the event, pruned with it. Schema 15 then keeps the ids, text until
/// then, as 16 bytes, and schema 16 a sha256 digest as 32 bytes on SQLite.
async fn deliveries_of_a_schema_13_database_keep_their_events(kind: Kind) {
    use store::db::Value;
    let o = open(kind).await;
    let s = &o.store;
    let pid = add_policy(s, policy("prj", vec![Target::http("http://a.example/")])).await;
    let mut old = push("prj/a", "sha256:old");
    old.occurred_at = chrono::Utc::now() - chrono::Duration::days(40);
    let fresh = push("prj/a", &format!("sha256:{}", "5f".repeat(32)));
    let (o1, f1) = (old.clone(), fresh.clone());
    s.write(move |c| {
        events::insert(c, &o1, None)?;
        events::insert(c, &f1, None)?;
        Ok(())
    })
    .await
    .unwrap();
    // back to schema 13's shape, as a wharf of the tenth session left it (event ids as text)
    let down = match kind {
        Kind::Sqlite => {
            "ALTER TABLE deliveries ADD COLUMN event_type TEXT NOT NULL DEFAULT '';
             ALTER TABLE deliveries ADD COLUMN project TEXT NOT NULL DEFAULT '';
             ALTER TABLE deliveries DROP COLUMN first_started_at;
             ALTER TABLE deliveries DROP COLUMN first_duration_ms;
             ALTER TABLE deliveries DROP COLUMN first_status;
             ALTER TABLE deliveries DROP COLUMN first_excerpt;
             ALTER TABLE events DROP COLUMN host_id;
             DROP TABLE hosts;
             DROP TABLE idempotency_keys;
             UPDATE events SET id = wharf_uuid_text(id), digest = wharf_digest_text(digest),
                 type = wharf_event_type(type), state = wharf_event_state(state);
             ALTER TABLE deliveries ADD COLUMN event_id TEXT;
             UPDATE deliveries SET event_id = (SELECT e.id FROM events e WHERE e.seq = deliveries.event_seq);
             DROP INDEX deliveries_by_event;
             ALTER TABLE deliveries DROP COLUMN event_seq;
             CREATE INDEX deliveries_by_event ON deliveries(event_id);
             PRAGMA user_version = 13"
        }
        Kind::Postgres => {
            "ALTER TABLE deliveries ADD COLUMN event_type TEXT NOT NULL DEFAULT '',
                 ADD COLUMN project TEXT NOT NULL DEFAULT '';
             ALTER TABLE deliveries DROP COLUMN first_started_at, DROP COLUMN first_duration_ms,
                 DROP COLUMN first_status, DROP COLUMN first_excerpt;
             ALTER TABLE events ALTER COLUMN id TYPE text USING CAST(id AS text);
             ALTER TABLE events ALTER COLUMN body TYPE text USING '';
             ALTER TABLE events DROP COLUMN host_id;
             DROP TABLE hosts;
             DROP TABLE idempotency_keys;
             DROP FUNCTION wharf_learn_pushed;
             DROP INDEX events_held;
             DROP INDEX events_held_digest;
             ALTER TABLE events ALTER COLUMN type TYPE text USING wharf_event_type(type),
                 ALTER COLUMN state TYPE text USING wharf_event_state(state);
             DROP FUNCTION wharf_event_type(smallint);
             DROP FUNCTION wharf_event_state(smallint);
             CREATE INDEX events_held ON events(release_at) WHERE state = 'held';
             CREATE INDEX events_held_digest ON events(repository, digest) WHERE state = 'held';
             DROP FUNCTION wharf_uuid_text(uuid);
             DROP FUNCTION wharf_digest_text(text);
             ALTER TABLE deliveries ADD COLUMN event_id TEXT;
             UPDATE deliveries d SET event_id = e.id FROM events e WHERE e.seq = d.event_seq;
             DROP INDEX deliveries_by_event;
             ALTER TABLE deliveries DROP COLUMN event_seq;
             CREATE INDEX deliveries_by_event ON deliveries(event_id);
             DELETE FROM wharf_schema WHERE version > 13"
        }
    };
    // the bodies as JSON text (schema 20 packs them)
    let bodies: Vec<(String, String)> = [&old, &fresh]
        .iter()
        .map(|e| {
            let body = serde_json::json!({
                "t": e.occurred_at, "o": e.operator, "u": e.resource_url, "g": e.tags,
            });
            (e.id.to_string(), body.to_string())
        })
        .collect();
    s.write(move |c| {
        for stmt in down.split(';') {
            c.exec(stmt, &[])?;
        }
        for (id, body) in &bodies {
            c.exec(
                "UPDATE events SET body = ?2 WHERE id = ?1",
                &[Value::Text(id), Value::Text(body)],
            )?;
        }
        Ok(())
    })
    .await
    .unwrap();
    s.close().await;
    let s = match kind {
        Kind::Sqlite => Store::open_sqlite(o._dir.path(), Default::default()).unwrap(),
        Kind::Postgres => Store::open(&pg_config(o.url.as_deref().unwrap()), o._dir.path())
            .await
            .unwrap(),
    };
    assert_eq!(s.schema_version().await.unwrap(), store::schema::latest());
    let (listed, total) = s
        .read(move |c| outbox::list_for_policy(c, pid, None, 0, 10))
        .await
        .unwrap();
    assert_eq!(total, 2);
    let mut ids: Vec<String> = listed.into_iter().map(|d| d.event_id).collect();
    ids.sort();
    let mut want = vec![old.id.to_string(), fresh.id.to_string()];
    want.sort();
    assert_eq!(ids, want, "each delivery names its event");
    let unlinked = s
        .read(|c| {
            c.int(
                "SELECT COUNT(*) FROM deliveries WHERE event_seq IS NULL",
                &[],
            )
        })
        .await
        .unwrap();
    assert_eq!(unlinked, Some(0));
    // schema 15: the ids, text until then, are kept as their 16 bytes, and read back
    let as_text = match kind {
        Kind::Sqlite => {
            "SELECT COUNT(*) FROM events WHERE typeof(id) <> 'blob' OR length(id) <> 16"
        }
        Kind::Postgres => {
            "SELECT COUNT(*) FROM information_schema.columns
             WHERE table_name = 'events' AND column_name = 'id' AND data_type <> 'uuid'"
        }
    };
    assert_eq!(s.read(move |c| c.int(as_text, &[])).await.unwrap(), Some(0));
    // schema 21: types and states as codes
    let coded = "SELECT COUNT(*) FROM events WHERE type = 1 AND state = 2";
    assert_eq!(s.read(move |c| c.int(coded, &[])).await.unwrap(), Some(2));
    // schema 20: PostgreSQL keeps bodies as bytes; the JSON ones written before still read
    // (the claim below loads both events)
    if matches!(kind, Kind::Postgres) {
        let bytea = "SELECT COUNT(*) FROM information_schema.columns
             WHERE table_name = 'events' AND column_name = 'body' AND data_type = 'bytea'";
        assert_eq!(s.read(move |c| c.int(bytea, &[])).await.unwrap(), Some(1));
    }
    // schema 16: SQLite keeps a sha256 digest as its 32 bytes, any other as text
    let forms = "SELECT COUNT(*) FROM events WHERE typeof(digest) = 'blob' AND length(digest) = 32";
    if matches!(kind, Kind::Sqlite) {
        assert_eq!(s.read(move |c| c.int(forms, &[])).await.unwrap(), Some(1));
    }
    let digest = fresh.digest.clone().unwrap();
    let by_digest =
        "SELECT COUNT(*) FROM events WHERE wharf_digest_text(digest) = ?1 AND digest = ?2";
    let n = s
        .read(move |c| c.int(by_digest, &[Value::Text(&digest), Value::Digest(&digest)]))
        .await;
    assert_eq!(
        n.unwrap(),
        Some(1),
        "wharf_digest_text gives the digest's text"
    );
    let old_id = old.id.to_string();
    let text = old_id.clone();
    let found = s.read(move |c| events::get(c, &old_id)).await.unwrap();
    assert_eq!(found.map(|e| e.id), Some(old.id));
    let by_text = "SELECT COUNT(*) FROM events WHERE wharf_uuid_text(id) = ?1";
    let n = s.read(move |c| c.int(by_text, &[Value::Text(&text)])).await;
    assert_eq!(
        n.unwrap(),
        Some(1),
        "wharf_uuid_text gives the canonical text"
    );
    // the claim loads the event; the old one's delivery ends, and the old event goes with it
    let claimed = claim(&s, limits(10, 10), lease(7)).await;
    let mut got: Vec<String> = claimed.iter().map(|d| d.event.id.to_string()).collect();
    got.sort();
    assert_eq!(got, want, "claimed with their events");
    s.write(|c| {
        c.exec(
            "UPDATE deliveries SET state = 'dead', claim_token = NULL, lease_until = NULL",
            &[],
        )
    })
    .await
    .unwrap();
    let before = store::now_ms() - 30 * 24 * 3_600_000;
    let pruned = s
        .write(move |c| events::prune(c, before, 100))
        .await
        .unwrap();
    assert_eq!(pruned, 1);
    let left = s
        .read(|c| c.int("SELECT COUNT(*) FROM deliveries", &[]))
        .await
        .unwrap();
    assert_eq!(left, Some(1), "the pruned event's delivery went with it");
    let fresh_id = fresh.id;
    let gone = s
        .read(move |c| {
            c.int(
                "SELECT COUNT(*) FROM deliveries d JOIN events e ON e.seq = d.event_seq WHERE e.id = ?1",
                &[Value::from(&fresh_id)],
            )
        })
        .await
        .unwrap();
    assert_eq!(gone, Some(1), "the fresh event keeps its delivery");
    s.close().await;
}

/// A delivery's first successful attempt is kept on its row, every other attempt in
/// `attempts` (schema 18): listed together by start time, task ids their places from 1, the
/// same through `record` and `record_many` (PostgreSQL's batch).
async fn a_first_successful_attempt_is_kept_on_its_delivery(kind: Kind) {
    let (o, pid, a, b) = two_claimed(kind).await;
    let s = &o.store;
    let attempt = |delivery_id, started_at, status: Option<u16>, error: Option<&str>| Attempt {
        id: 0,
        delivery_id,
        started_at,
        duration_ms: started_at % 1000 + 3,
        status_code: status,
        error_kind: error.map(|_| outbox::FailureKind::Http),
        error: error.map(str::to_string),
        response_excerpt: Some(format!("r{started_at}")),
    };
    let outcome = |attempt, next, token| outbox::Outcome {
        attempt,
        next,
        token,
    };
    // a: fails once, then succeeds (the success is kept on the row); b: succeeds at once
    let batch = vec![
        outcome(
            attempt(a, 1_000, Some(500), Some("status 500")),
            Next::RetryAt(0),
            7,
        ),
        outcome(attempt(b, 1_001, Some(204), None), Next::Succeeded, 7),
    ];
    s.write(move |c| outbox::record_many(c, &batch))
        .await
        .unwrap();
    assert_eq!(count(s, "SELECT COUNT(*) FROM attempts").await, 1);
    let again = claim(s, limits(2, 2), lease(8)).await;
    assert_eq!(again.iter().map(|d| d.id).collect::<Vec<_>>(), [a]);
    let ok = attempt(a, 2_000, Some(200), None);
    s.write(move |c| outbox::record(c, &ok, Next::Succeeded, 8))
        .await
        .unwrap();
    assert_eq!(count(s, "SELECT COUNT(*) FROM attempts").await, 1);
    let seen = |d| async move {
        s.read(move |c| outbox::attempts(c, d))
            .await
            .unwrap()
            .into_iter()
            .map(|x| {
                (
                    x.id,
                    x.started_at,
                    x.duration_ms,
                    x.status_code,
                    x.error,
                    x.response_excerpt,
                )
            })
            .collect::<Vec<_>>()
    };
    let row = |id, t: i64, st, e: Option<&str>| {
        (
            id,
            t,
            t % 1000 + 3,
            Some(st),
            e.map(str::to_string),
            Some(format!("r{t}")),
        )
    };
    assert_eq!(
        seen(a).await,
        [
            row(1, 1_000, 500, Some("status 500")),
            row(2, 2_000, 200, None)
        ]
    );
    assert_eq!(seen(b).await, [row(1, 1_001, 204, None)]);
    // b sent again: its second success goes to `attempts`, the first stays task 1
    assert_eq!(
        s.write(move |c| outbox::redeliver(c, pid, b))
            .await
            .unwrap(),
        Redelivery::Queued
    );
    let third = claim(s, limits(2, 2), lease(9)).await;
    assert_eq!(third.iter().map(|d| d.id).collect::<Vec<_>>(), [b]);
    let batch = vec![outcome(
        attempt(b, 3_000, Some(200), None),
        Next::Succeeded,
        9,
    )];
    s.write(move |c| outbox::record_many(c, &batch))
        .await
        .unwrap();
    assert_eq!(
        seen(b).await,
        [row(1, 1_001, 204, None), row(2, 3_000, 200, None)]
    );
    assert_eq!(count(s, "SELECT COUNT(*) FROM attempts").await, 2);
    s.close().await;
}

/// An event whose id is not a UUID (no wharf wrote one; SQLite keeps whatever a column gets)
/// is skipped as unreadable, as before ids became bytes (schema 15): the rest of the log still
/// lists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_with_an_id_that_is_not_a_uuid_is_skipped() {
    let o = open(Kind::Sqlite).await;
    let s = &o.store;
    let good = push("prj/a", "sha256:good");
    let g = good.clone();
    s.write(move |c| {
        events::insert(c, &g, None)?;
        c.exec(
            "INSERT INTO events (id, type, project, repository, digest, occurred_at, state, release_at, body)
             VALUES ('not-a-uuid', 1, 'prj', 'prj/a', 'sha256:bad', 1, 2, NULL, '{\"o\":\"alice\",\"u\":\"h/prj/a\"}')",
            &[],
        )
    })
    .await
    .unwrap();
    let ids: Vec<_> = events_of_prj(s).await.into_iter().map(|e| e.id).collect();
    assert_eq!(ids, [good.id]);
    s.close().await;
}

/// A NUL character (which PostgreSQL's text and JSON refuse) in what a target answered, in an
/// error or in a policy's text is stored as U+FFFD on both backends: the outcome batch it
/// travels in is recorded, not refused whole and attempted again at every lease.
async fn text_with_nul_characters_is_stored_with_replacement_characters(kind: Kind) {
    let (o, _pid, a, b) = two_claimed(kind).await;
    let s = &o.store;
    let attempt = |delivery_id, status, excerpt: &str| Attempt {
        delivery_id,
        started_at: 1_000,
        duration_ms: 3,
        status_code: Some(status),
        error_kind: (status >= 300).then_some(outbox::FailureKind::Http),
        error: (status >= 300).then(|| "HTTP\0 500".to_string()),
        response_excerpt: Some(excerpt.to_string()),
        ..Attempt::default()
    };
    let batch = vec![
        outbox::Outcome {
            attempt: attempt(a, 500, "no\0pe"),
            next: Next::RetryAt(0),
            token: 7,
        },
        outbox::Outcome {
            attempt: attempt(b, 200, "ok\0"),
            next: Next::Succeeded,
            token: 7,
        },
    ];
    s.write(move |c| outbox::record_many(c, &batch))
        .await
        .unwrap();
    assert_eq!(state(s, a).await, "pending");
    assert_eq!(state(s, b).await, "succeeded");
    let seen = |d| async move {
        let x = s.read(move |c| outbox::attempts(c, d)).await.unwrap();
        (x[0].error.clone(), x[0].response_excerpt.clone())
    };
    assert_eq!(
        seen(a).await,
        (
            Some("HTTP\u{fffd} 500".to_string()),
            Some("no\u{fffd}pe".to_string())
        )
    );
    assert_eq!(seen(b).await, (None, Some("ok\u{fffd}".to_string())));
    // one attempt alone (`record`) too
    let again = claim(s, limits(2, 2), lease(8)).await;
    assert_eq!(again.iter().map(|d| d.id).collect::<Vec<_>>(), [a]);
    let ok = Attempt {
        started_at: 2_000,
        ..attempt(a, 200, "\0")
    };
    s.write(move |c| outbox::record(c, &ok, Next::Succeeded, 8))
        .await
        .unwrap();
    assert_eq!(state(s, a).await, "succeeded");
    // a policy's name and description (text and JSON columns)
    let mut p = policy("prj", vec![Target::http("http://a.example/\0")]);
    p.name = "n\0ul".into();
    p.description = "d\0".into();
    let id = add_policy(s, p).await;
    let back = s
        .read(move |c| policies::get(c, "prj", id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(back.name, "n\u{fffd}ul");
    assert_eq!(back.description, "d\u{fffd}");
    assert_eq!(back.targets[0].address, "http://a.example/\u{fffd}");
    s.close().await;
}

/// Replicas compare leases and due times by wall clock: the skew to PostgreSQL's clock is
/// measured (a warning past a second names the risk); SQLite has one process, one clock.
async fn the_clock_skew_to_the_database_is_measured(kind: Kind) {
    let o = open(kind).await;
    let skew = o.store.clock_skew_ms().await.unwrap();
    match kind {
        Kind::Sqlite => assert_eq!(skew, None),
        Kind::Postgres => {
            let skew = skew.expect("a skew on PostgreSQL");
            assert!(skew.abs() < 500, "one host, one clock: {skew} ms");
        }
    }
    assert_eq!(store::clock_skew_warning(900), None);
    let w = store::clock_skew_warning(-2_500).unwrap();
    assert!(
        w.starts_with("this host's clock is 2500 ms behind PostgreSQL's"),
        "{w}"
    );
    assert!(
        store::clock_skew_warning(1_001)
            .unwrap()
            .contains("ahead of")
    );
    o.store.close().await;
}
