//! The store on both backends: every store-level promise (sessions with filters and
//! pagination, transcripts and their counters, audit and its retention, targets sealed at
//! rest, API keys, model routes, the writer's batching, group commit and flush on stop) runs
//! once on SQLite and once on PostgreSQL (a real server the tests start, see `pg`); then the
//! service itself on PostgreSQL: transcripts across a restart, two instances sharing one
//! database, and an unreachable database at start.

use std::time::{Duration, SystemTime};

use serde_json::{json, Value};
use switchyard::settings::StoreLocation;
use switchyard::store::writer::{self, Durability, StoreHandle, Write, WriterSettings};
use switchyard::store::{
    ApiKeyRow, AuditDirection, AuditEntry, Backend, Connect, Pool, SessionFilter, Store,
};

use crate::common::{Dirs, TestApp};
use crate::mock::MockUpstream;

/// A fresh store on `backend` (and the directory an SQLite file lives in).
async fn fresh(backend: Backend, instance: &str) -> (Store, Connect, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let location = match backend {
        Backend::Sqlite => StoreLocation::Sqlite(dir.path().join("db.sqlite")),
        Backend::Postgres => StoreLocation::Postgres(crate::pg::database().await),
    };
    let connect = Connect {
        location,
        pool_size: 4,
        connect_timeout: Duration::from_secs(10),
        instance: instance.into(),
    };
    let store = Store::connect(&connect).await.expect("the store opens");
    assert_eq!(store.backend(), backend);
    (store, connect, dir)
}

/// One text column of the first row `sql` answers, on either backend.
async fn text(store: &Store, sql: &str) -> String {
    match store.pool() {
        Pool::Sqlite(p) => sqlx::query_scalar(sql).fetch_one(p).await.unwrap(),
        Pool::Postgres(p) => sqlx::query_scalar(sql).fetch_one(p).await.unwrap(),
    }
}

fn handle(store: Store, window: Duration) -> StoreHandle {
    StoreHandle::new(
        store,
        WriterSettings {
            batch_window: window,
            batch_max_rows: 500,
            queue_capacity: 10_000,
            audit_retention: None,
            audit_max_rows: None,
            history_retention: None,
            prune_interval: Duration::from_secs(3600),
        },
    )
}

fn opened(id: &str, target: &str, at: &str) -> Write {
    Write::SessionOpened {
        id: id.into(),
        target_id: target.into(),
        plugins: json!([{ "id": "openai", "config": { "model": "m" } }]),
        at: at.into(),
    }
}

fn exchange(session: &str, index: u64, text: &str, error: bool) -> Write {
    Write::Exchange {
        session_id: session.into(),
        index,
        sent: text.into(),
        received: (!error).then(|| format!("echo: {text}")),
        metadata: Some(json!({ "z": 1, "a": 2 })),
        response_time_ms: Some(10 * (index + 1)),
        token_usage: (!error).then(|| json!({ "totalTokens": 12.0 })),
        error: error.then(|| "upstream 500".to_string()),
        at: format!("2026-11-26T00:00:0{index}.000Z"),
    }
}

/// One test per backend for each scenario: `<scenario>::sqlite` and `<scenario>::postgres`.
macro_rules! on_both {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            #[actix_web::test]
            async fn sqlite() {
                super::$scenario(switchyard::store::Backend::Sqlite).await;
            }
            #[actix_web::test]
            async fn postgres() {
                super::$scenario(switchyard::store::Backend::Postgres).await;
            }
        }
    )*};
}

on_both!(
    sessions_and_transcripts,
    audit_and_retention,
    targets_sealed_at_rest,
    keys_and_model_routes,
    group_commit_and_flush_on_stop,
    interrupted_sessions_are_this_instances,
    leases_are_taken_once_and_taken_over_when_expired,
    agent_conversations_are_upserted_last_state_wins,
    webhooks_and_their_deliveries,
    old_conversations_and_finished_deliveries_are_pruned,
);

/// The history retention rule: conversations not written since the cutoff, and deliveries
/// finished before it, go; a delivery still waiting stays whatever its age.
async fn old_conversations_and_finished_deliveries_are_pruned(backend: Backend) {
    use switchyard::store::webhooks::DeliveryRow;
    let (store, _, _dir) = fresh(backend, "i1").await;
    let handle = handle(store.clone(), Duration::from_millis(5));
    writer::start_detached(&handle);
    let conversation = |session: &str, at: &str| Write::Conversation {
        agent_id: "helper".into(),
        session_id: session.into(),
        summary: None,
        messages: json!([{ "role": "user", "content": "hi" }]),
        at: at.into(),
    };
    handle.write(conversation("old", "2020-01-01T00:00:00.000Z"));
    handle
        .write_committed(conversation(
            "new",
            &switchyard::util::rfc3339(SystemTime::now()),
        ))
        .await
        .unwrap();
    let now_ms = SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let delivery = |id: &str, state: &str, at: i64| DeliveryRow {
        id: id.into(),
        webhook_id: "wh1".into(),
        event: "custom.x".into(),
        body: "{}".into(),
        state: state.into(),
        attempts: 1,
        last_status: None,
        last_error: None,
        latency_ms: None,
        next_attempt_at: None,
        created_at: at,
        updated_at: at,
    };
    let old = 1_577_836_800_000; // 2020-01-01
    for d in [
        delivery("delivered-old", "delivered", old),
        delivery("dead-old", "dead", old),
        delivery("pending-old", "pending", old),
        delivery("delivered-new", "delivered", now_ms),
    ] {
        store.save_delivery(&d).await.unwrap();
    }
    let cutoff = SystemTime::now() - Duration::from_secs(30 * 86_400);
    assert_eq!(store.prune_history(cutoff).await.unwrap(), 3);
    assert!(store.conversation("helper", "old").await.unwrap().is_none());
    assert!(store.conversation("helper", "new").await.unwrap().is_some());
    let left: Vec<String> = store
        .deliveries("wh1", 10)
        .await
        .unwrap()
        .into_iter()
        .map(|d| d.id)
        .collect();
    assert_eq!(left, ["delivered-new", "pending-old"]);
    assert_eq!(
        store.prune_history(cutoff).await.unwrap(),
        0,
        "nothing twice"
    );
}

/// Agent conversations (`turn`): written whole, several times in one batch (one statement
/// may not upsert a row twice on PostgreSQL: the last state wins) and again later, read back
/// from a new connection.
async fn agent_conversations_are_upserted_last_state_wins(backend: Backend) {
    let (store, connect, _dir) = fresh(backend, "i1").await;
    let handle = handle(store.clone(), Duration::from_secs(3600));
    let conversation = |agent: &str, session: &str, n: u64| Write::Conversation {
        agent_id: agent.into(),
        session_id: session.into(),
        summary: (n > 1).then(|| format!("summary {n}")),
        messages: json!([{ "role": "user", "content": format!("turn {n}") }, { "role": "assistant", "content": "é ✓" }]),
        at: "2026-11-26T00:00:00.000Z".into(),
    };
    handle.write(conversation("helper", "s1", 1));
    handle.write(conversation("helper", "s2", 1));
    handle.write(conversation("other", "s1", 1));
    let last = handle.write_committed(conversation("helper", "s1", 2));
    writer::start_detached(&handle);
    last.await.unwrap();
    handle
        .write_committed(conversation("other", "s1", 3))
        .await
        .unwrap();
    store.pool().close().await;
    let again = Store::connect(&connect).await.unwrap();
    let s1 = again.conversation("helper", "s1").await.unwrap().unwrap();
    assert_eq!(s1.summary.as_deref(), Some("summary 2"));
    assert_eq!(s1.messages[0]["content"], "turn 2");
    assert_eq!(s1.messages[1]["content"], "é ✓");
    let s2 = again.conversation("helper", "s2").await.unwrap().unwrap();
    assert_eq!(
        (s2.summary, s2.messages[0]["content"].as_str()),
        (None, Some("turn 1"))
    );
    let other = again.conversation("other", "s1").await.unwrap().unwrap();
    assert_eq!(other.summary.as_deref(), Some("summary 3"));
    assert!(again.conversation("helper", "s3").await.unwrap().is_none());
}

/// Webhooks with their secret sealed at rest, and deliveries: replaced by id as they go,
/// listed newest first within a limit, the unfinished ones found for resuming, and gone with
/// their webhook.
async fn webhooks_and_their_deliveries(backend: Backend) {
    use switchyard::store::webhooks::{DeliveryRow, WebhookRow};
    let dir = tempfile::tempdir().unwrap();
    let (store, connect, _db) = fresh(backend, "i1").await;
    let store =
        store.with_secrets(switchyard::store::secrets::Secrets::load(None, dir.path()).unwrap());
    let hook = WebhookRow {
        id: "wh1".into(),
        url: "https://example.com/hook".into(),
        events: vec!["plugin.*".into(), "custom.x".into()],
        secret: "the-signing-secret-0123".into(),
        description: None,
        created_at: 1_700_000_000_000,
    };
    store.save_webhook(&hook).await.unwrap();
    let sealed = text(&store, "SELECT secret FROM webhooks").await;
    assert!(
        sealed.starts_with("enc:v1:") && !sealed.contains("signing"),
        "{sealed}"
    );
    assert_eq!(store.webhooks().await.unwrap(), vec![hook]);
    let delivery = |id: &str, at: i64, state: &str| DeliveryRow {
        id: id.into(),
        webhook_id: "wh1".into(),
        event: "custom.x".into(),
        body: r#"{"id":"x","event":"custom.x"}"#.into(),
        state: state.into(),
        attempts: 0,
        last_status: None,
        last_error: None,
        latency_ms: None,
        next_attempt_at: Some(at),
        created_at: at,
        updated_at: at,
    };
    for (id, at) in [
        ("d1", 1_700_000_000_001),
        ("d2", 1_700_000_000_002),
        ("d3", 1_700_000_000_003),
    ] {
        store
            .save_delivery(&delivery(id, at, "pending"))
            .await
            .unwrap();
    }
    let done = DeliveryRow {
        attempts: 3,
        last_status: Some(200),
        latency_ms: Some(12),
        next_attempt_at: None,
        ..delivery("d1", 1_700_000_000_001, "delivered")
    };
    store.save_delivery(&done).await.unwrap();
    let dead = DeliveryRow {
        attempts: 6,
        last_status: Some(503),
        last_error: Some("HTTP 503".into()),
        next_attempt_at: None,
        ..delivery("d2", 1_700_000_000_002, "dead")
    };
    store.save_delivery(&dead).await.unwrap();
    let listed = store.deliveries("wh1", 10).await.unwrap();
    assert_eq!(
        listed.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
        ["d3", "d2", "d1"]
    );
    assert_eq!(listed[1], dead);
    assert_eq!(listed[2], done);
    assert_eq!(store.deliveries("wh1", 2).await.unwrap().len(), 2);
    let unfinished = store.unfinished_deliveries().await.unwrap();
    assert_eq!(
        unfinished.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(),
        ["d3"]
    );
    // Another instance on the same database leaves this one's deliveries to it.
    let other = Store::connect(&Connect {
        instance: "i2".into(),
        ..connect.clone()
    })
    .await
    .unwrap();
    assert!(other.unfinished_deliveries().await.unwrap().is_empty());
    assert!(store.delete_webhook("wh1").await.unwrap());
    assert!(store.webhooks().await.unwrap().is_empty());
    assert!(store.deliveries("wh1", 10).await.unwrap().is_empty());
    assert!(store.unfinished_deliveries().await.unwrap().is_empty());
}

/// Sessions with filters and pagination, transcripts in order with their JSON kept byte for
/// byte, and the summary counters the trigger keeps.
async fn sessions_and_transcripts(backend: Backend) {
    let (store, _, _dir) = fresh(backend, "i1").await;
    let handle = handle(store.clone(), Duration::from_millis(5));
    writer::start_detached(&handle);
    for i in 0..5 {
        handle.write(opened(
            &format!("a{i}"),
            "a",
            &format!("2026-11-26T00:00:0{i}.000Z"),
        ));
    }
    handle.write(opened("b0", "b", "2026-11-26T00:00:09.000Z"));
    for (index, text) in ["one", "two"].iter().enumerate() {
        handle.write(exchange("a0", index as u64, text, false));
    }
    handle.write(exchange("a0", 2, "three", true));
    // A usage whose total is not a number counts no tokens (and fails nothing).
    let mut odd = exchange("b0", 0, "odd", false);
    if let Write::Exchange { token_usage, .. } = &mut odd {
        *token_usage = Some(json!({ "totalTokens": "many" }));
    }
    handle.write(odd);
    for id in ["a0", "a1"] {
        handle.write(Write::SessionEnded {
            id: id.into(),
            state: "closed",
            reason: "done".into(),
            at: "2026-11-26T00:01:00.000Z".into(),
        });
    }
    handle.flush().await;

    let filter = |target: Option<&str>, state: Option<&str>| SessionFilter {
        target_id: target.map(str::to_owned),
        state: state.map(str::to_owned),
    };
    let (page, total) = store
        .sessions(&filter(Some("a"), None), 2, 1)
        .await
        .unwrap();
    assert_eq!(total, 5);
    let ids: Vec<&str> = page.iter().map(|s| s.id.as_str()).collect();
    assert_eq!(ids, ["a3", "a2"], "newest first");
    let (closed, total) = store
        .sessions(&filter(None, Some("closed")), 10, 0)
        .await
        .unwrap();
    assert_eq!(total, 2);
    assert!(closed
        .iter()
        .all(|s| s.end_reason.as_deref() == Some("done")));
    let (open_b, _) = store
        .sessions(&filter(Some("b"), Some("open")), 10, 0)
        .await
        .unwrap();
    assert_eq!(open_b[0].id, "b0");
    assert_eq!(
        store.sessions(&filter(None, None), 10, 0).await.unwrap().1,
        6
    );

    let a0 = store.session("a0").await.unwrap().unwrap();
    assert_eq!(a0.state, "closed");
    assert_eq!(a0.plugins[0]["config"]["model"], "m");
    let s = &a0.summary;
    assert_eq!(
        (
            s.message_count,
            s.total_tokens,
            s.error_count,
            s.avg_response_time_ms
        ),
        (3, 24, 1, 20),
        "the trigger counts answers and errors"
    );
    let b0 = store.session("b0").await.unwrap().unwrap().summary;
    assert_eq!((b0.message_count, b0.total_tokens), (1, 0));
    assert!(store.session("nope").await.unwrap().is_none());

    let (rows, total) = store.messages("a0", 10, 0).await.unwrap();
    assert_eq!(total, 6);
    let shown: Vec<String> = rows
        .iter()
        .map(|m| format!("{}:{}", m.direction, m.content.as_deref().unwrap_or("-")))
        .collect();
    assert_eq!(
        shown,
        [
            "sent:one",
            "received:echo: one",
            "sent:two",
            "received:echo: two",
            "sent:three",
            "error:-"
        ]
    );
    assert_eq!(rows[5].error.as_deref(), Some("upstream 500"));
    assert_eq!(rows[1].token_usage.as_ref().unwrap()["totalTokens"], 12.0);
    // Key order as written (JSON kept as text, not re-ordered).
    assert_eq!(
        serde_json::to_string(rows[1].metadata.as_ref().unwrap()).unwrap(),
        r#"{"z":1,"a":2}"#
    );
    let (page, _) = store.messages("a0", 2, 3).await.unwrap();
    assert_eq!(page[0].content.as_deref(), Some("echo: two"));
    assert_eq!(store.messages("a1", 10, 0).await.unwrap().1, 0);
}

async fn audit_and_retention(backend: Backend) {
    let (store, _, _dir) = fresh(backend, "i1").await;
    let handle = handle(store.clone(), Duration::from_millis(5));
    writer::start_detached(&handle);
    for (i, direction) in [AuditDirection::Sent, AuditDirection::Received]
        .into_iter()
        .cycle()
        .take(6)
        .enumerate()
    {
        handle.write(Write::Audit(AuditEntry {
            timestamp: format!("2026-11-2{i}T00:00:00.000Z"),
            direction,
            session_id: "s".into(),
            target_id: "t".into(),
            message: Some(format!("m{i}")),
            response_content: None,
            response_time_ms: Some(5),
            token_usage: Some(json!({ "totalTokens": 3 })),
        }));
    }
    handle.flush().await;
    let entries = store.audit("s").await.unwrap();
    assert_eq!(entries.len(), 6);
    assert_eq!(entries[1].direction, AuditDirection::Received);
    assert_eq!(entries[0].token_usage, Some(json!({ "totalTokens": 3 })));
    assert_eq!(
        store
            .prune_audit(Some("2026-11-22T00:00:00.000Z"), None)
            .await
            .unwrap(),
        2,
        "older than the cutoff"
    );
    assert_eq!(store.prune_audit(None, Some(3)).await.unwrap(), 1);
    let kept: Vec<String> = store
        .audit("s")
        .await
        .unwrap()
        .into_iter()
        .filter_map(|e| e.message)
        .collect();
    assert_eq!(kept, ["m3", "m4", "m5"], "the newest stay");
    assert!(store.audit("other").await.unwrap().is_empty());
}

async fn targets_sealed_at_rest(backend: Backend) {
    let (store, _, dir) = fresh(backend, "i1").await;
    let secrets = switchyard::store::secrets::Secrets::load(None, dir.path()).unwrap();
    let store = store.with_secrets(secrets);
    let body = json!({ "id": "t1", "name": "T", "endpoint": "http://bob:hunter2@h/x",
        "authConfig": { "token": "sk-live-9" }, "zeta": 1, "alpha": 2 });
    store
        .save_target("t1", &body, "2026-11-26T00:00:00.000Z")
        .await
        .unwrap();
    store
        .save_target("t0", &json!({ "id": "t0" }), "2026-11-26T00:00:01.000Z")
        .await
        .unwrap();
    let raw = text(&store, "SELECT body FROM targets WHERE id = 't1'").await;
    for secret in ["hunter2", "sk-live-9"] {
        assert!(!raw.contains(secret), "{raw}");
    }
    assert!(raw.contains("enc:v1:"), "{raw}");
    store
        .set_last_test("t1", &json!({ "ok": true }))
        .await
        .unwrap();
    let targets = store.targets().await.unwrap();
    assert_eq!(targets.len(), 2);
    assert_eq!(targets[0].body, body, "opened back to what was saved");
    assert_eq!(
        serde_json::to_string(&targets[0].body).unwrap(),
        serde_json::to_string(&body).unwrap(),
        "in the order it was written"
    );
    assert_eq!(targets[0].last_test, Some(json!({ "ok": true })));
    // Saving again replaces the row.
    let mut renamed = body.clone();
    renamed["name"] = json!("Renamed");
    store
        .save_target("t1", &renamed, "2026-11-27T00:00:00.000Z")
        .await
        .unwrap();
    assert_eq!(store.targets().await.unwrap()[0].body["name"], "Renamed");
    store.delete_target("t1").await.unwrap();
    assert_eq!(store.targets().await.unwrap().len(), 1);
    // The one-time sweep runs once per database, and finds nothing left in clear.
    let sealed = store.seal_plaintext_once().await.unwrap().unwrap();
    assert_eq!(sealed.targets, 1);
    assert!(store.seal_plaintext_once().await.unwrap().is_none());
}

async fn keys_and_model_routes(backend: Backend) {
    let (store, _, _dir) = fresh(backend, "i1").await;
    let key = |id: &str, at: &str| ApiKeyRow {
        id: id.into(),
        name: format!("key {id}"),
        prefix: "sk-sy-ab".into(),
        key_hash: format!("{id:0>64}"),
        models: vec!["gpt".into()],
        requests_per_minute: Some(60),
        token_budget: Some(1000),
        tokens_used: 0,
        created_at: at.into(),
    };
    store
        .save_api_key(&key("k2", "2026-11-26T00:00:02.000Z"))
        .await
        .unwrap();
    store
        .save_api_key(&key("k1", "2026-11-26T00:00:01.000Z"))
        .await
        .unwrap();
    assert!(
        store.save_api_key(&key("k1", "x")).await.is_err(),
        "ids are unique"
    );
    store.add_api_key_tokens("k1", 30).await.unwrap();
    store.add_api_key_tokens("k1", 12).await.unwrap();
    let keys = store.api_keys().await.unwrap();
    assert_eq!(keys.len(), 2);
    assert_eq!(
        keys[0],
        ApiKeyRow {
            tokens_used: 42,
            ..key("k1", "2026-11-26T00:00:01.000Z")
        }
    );
    store.delete_api_key("k2").await.unwrap();
    assert_eq!(store.api_keys().await.unwrap().len(), 1);

    let route = |n: u32| json!({ "name": "fast", "targets": [{ "target": format!("t{n}") }] });
    store
        .save_model_route("fast", &route(1), "2026-11-26T00:00:01.000Z")
        .await
        .unwrap();
    store
        .save_model_route("alpha", &route(2), "2026-11-26T00:00:02.000Z")
        .await
        .unwrap();
    store
        .save_model_route("fast", &route(3), "2026-11-26T00:00:03.000Z")
        .await
        .unwrap();
    let routes = store.model_routes().await.unwrap();
    assert_eq!(
        routes,
        [route(3), route(2)],
        "replaced in place, oldest first"
    );
    store.delete_model_route("fast").await.unwrap();
    assert_eq!(store.model_routes().await.unwrap(), [route(2)]);
}

/// The writer's promises: waiting writes commit together at once (group commit), a batched
/// write rides along, and a clean stop (SIGTERM) flushes everything queued, read back from a
/// new connection.
async fn group_commit_and_flush_on_stop(backend: Backend) {
    let (store, connect, _dir) = fresh(backend, "i1").await;
    // A window far longer than the test: only a waiting write or the stop can commit.
    let handle = handle(store.clone(), Duration::from_secs(3600));
    // Started and stopped as the supervision tree does.
    use switchyard::supervisor::child::{
        ChildFactory, DownGuard, Placement, StartArgs, StartPhase,
    };
    let running = writer::StoreWriterFactory {
        handle: handle.clone(),
    }
    .start(StartArgs {
        id: "store".into(),
        path: "root/store".into(),
        generation: 1,
        phase: StartPhase::Boot,
        placement: Placement::Shared,
        guard: DownGuard::detached("store"),
    })
    .await
    .unwrap_or_else(|_| panic!("the writer starts"));
    assert_eq!(Durability::default(), Durability::Batched);
    handle.write(opened("batched", "t", "2026-11-26T00:00:00.000Z"));
    let waits: Vec<_> = (0..20)
        .map(|i| handle.write_committed(opened(&format!("w{i}"), "t", "2026-11-26T00:00:01.000Z")))
        .collect();
    for outcome in futures::future::join_all(waits).await {
        outcome.unwrap();
    }
    assert_eq!(
        store
            .sessions(&SessionFilter::default(), 100, 0)
            .await
            .unwrap()
            .1,
        21
    );
    assert_eq!((handle.stats().written, handle.stats().batches), (21, 1));

    for i in 0..50 {
        handle.write(exchange("batched", i, "m", false));
    }
    running.stop().await.unwrap();
    store.pool().close().await;
    let again = Store::connect(&connect).await.unwrap();
    assert_eq!(again.messages("batched", 1000, 0).await.unwrap().1, 100);
    assert_eq!(
        again
            .session("batched")
            .await
            .unwrap()
            .unwrap()
            .summary
            .message_count,
        50
    );
}

/// At start an instance marks its own sessions left open as interrupted. On SQLite that is
/// every open session (one instance per file); on PostgreSQL never another instance's.
async fn interrupted_sessions_are_this_instances(backend: Backend) {
    let (store, connect, _dir) = fresh(backend, "one").await;
    let mut other = connect.clone();
    other.instance = "two".into();
    let two = Store::connect(&other).await.unwrap();
    for (store, id) in [(&store, "of-one"), (&two, "of-two")] {
        let handle = handle(store.clone(), Duration::from_millis(5));
        writer::start_detached(&handle);
        handle.write(opened(id, "t", "2026-11-26T00:00:00.000Z"));
        handle.flush().await;
    }
    // An instance ends only its own sessions: one taken over by another stays open under it.
    two.claim_session("of-one").await.unwrap();
    let one = handle(store.clone(), Duration::from_millis(5));
    writer::start_detached(&one);
    one.write(Write::SessionEnded {
        id: "of-one".into(),
        state: "failed",
        reason: "its lease is held by another instance".into(),
        at: "2026-11-26T00:30:00.000Z".into(),
    });
    one.flush().await;
    assert_eq!(
        store.session("of-one").await.unwrap().unwrap().state,
        "open"
    );
    store.claim_session("of-one").await.unwrap();
    let marked = store
        .mark_interrupted("2026-11-26T01:00:00.000Z")
        .await
        .unwrap();
    let state = |id: &'static str| {
        let store = store.clone();
        async move { store.session(id).await.unwrap().unwrap().state }
    };
    assert_eq!(state("of-one").await, "interrupted");
    match backend {
        Backend::Sqlite => assert_eq!((marked, state("of-two").await.as_str()), (2, "interrupted")),
        Backend::Postgres => assert_eq!((marked, state("of-two").await.as_str()), (1, "open")),
    }
}

/// Session ownership: one owner at a time, renewals keep a lease, an expired lease is taken
/// over, and [`decide`] reads the rows as the SQL does.
async fn leases_are_taken_once_and_taken_over_when_expired(backend: Backend) {
    use switchyard::store::lease::{decide, Decision};
    let (a, connect, _dir) = fresh(backend, "a").await;
    let b = Store::connect(&Connect {
        instance: "b".into(),
        ..connect.clone()
    })
    .await
    .unwrap();
    let minute = Duration::from_secs(60);
    assert!(a.acquire_lease("s1", minute).await.unwrap());
    assert!(
        a.acquire_lease("s1", minute).await.unwrap(),
        "again: it is ours"
    );
    assert!(!b.acquire_lease("s1", minute).await.unwrap(), "a holds it");
    let (lease, now) = b.lease("s1").await.unwrap();
    assert!(matches!(
        decide(lease.as_ref(), "b", now),
        Decision::Wait { ref owner, for_ms } if owner == "a" && for_ms > 50_000
    ));
    assert_eq!(decide(lease.as_ref(), "a", now), Decision::Renew);
    assert_eq!(b.lease("nope").await.unwrap().0, None);

    // A lease of no length is expired at once: as if its owner had died.
    assert!(a.acquire_lease("s2", Duration::ZERO).await.unwrap());
    let expired = b.expired_leases().await.unwrap();
    assert_eq!(
        expired
            .iter()
            .map(|l| (l.session_id.as_str(), l.owner.as_str()))
            .collect::<Vec<_>>(),
        [("s2", "a")]
    );
    let (lease, now) = b.lease("s2").await.unwrap();
    assert_eq!(
        decide(lease.as_ref(), "b", now),
        Decision::TakeOver { from: "a".into() }
    );
    assert_eq!(decide(lease.as_ref(), "a", now), Decision::Lapsed);
    assert!(b.acquire_lease("s2", minute).await.unwrap(), "taken over");
    assert!(
        !a.acquire_lease("s2", minute).await.unwrap(),
        "b holds it now"
    );
    assert!(b.expired_leases().await.unwrap().is_empty());
    // What each holds: the loser sees it lost s2 (its live copy must stop).
    let mut held = a.owned_sessions().await.unwrap();
    held.sort();
    assert_eq!(held, ["s1"]);
    assert_eq!(b.owned_sessions().await.unwrap(), ["s2"]);

    // Renewing extends only what is still held.
    assert_eq!(a.renew_leases(minute).await.unwrap(), 1);
    assert_eq!(b.renew_leases(minute).await.unwrap(), 1);
    assert!(!b.release_lease("s1").await.unwrap(), "not b's to give up");
    assert!(a.release_lease("s1").await.unwrap());
    assert!(b.acquire_lease("s1", minute).await.unwrap(), "free again");
}

// The service itself on PostgreSQL.

fn openai_target(mock: &MockUpstream, id: &str) -> Value {
    json!({
        "id": id, "name": id, "connectorType": "HTTP_REST", "endpoint": mock.url("/openai"),
        "requestTemplate": { "messagePath": "input", "structure": { "messages": "${messages}" } },
        "responseTemplate": { "responsePath": "$.choices[0].message.content", "tokenUsagePath": "$.usage" }
    })
}

/// Settings for a service on the PostgreSQL database `url`, as instance `instance`.
fn pg_env(
    dirs: &Dirs,
    mock: &MockUpstream,
    url: &str,
    instance: &str,
) -> Vec<(&'static str, String)> {
    let path = dirs.root.path().join("targets.toml");
    std::fs::write(
        &path,
        toml::to_string(&json!({ "targets": [openai_target(mock, "gpt")] })).unwrap(),
    )
    .unwrap();
    vec![
        (
            "SWITCHYARD__SESSIONS__TARGETS_FILE",
            path.display().to_string(),
        ),
        ("SWITCHYARD__PLUGINS__NATIVE", r#"["openai"]"#.to_string()),
        ("SWITCHYARD__STORE__URL", url.to_string()),
        ("SWITCHYARD__SERVER__INSTANCE_ID", instance.to_string()),
        // One key for every instance: each must open the targets the others sealed.
        ("SWITCHYARD_SECRET_KEY", "ab".repeat(32)),
    ]
}

async fn spawn(dirs: std::sync::Arc<Dirs>, env: &[(&'static str, String)]) -> TestApp {
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    TestApp::spawn_in(dirs, &env, vec![]).await
}

async fn open_session(app: &TestApp, target: &str) -> String {
    let (status, body) = app.post_json("/api/sessions", json!({ "targetId": target, "plugins": [{ "id": "openai", "config": { "model": "gpt-4o" } }] })).await;
    assert_eq!(status, 201, "{body}");
    body["id"].as_str().unwrap().to_string()
}

async fn say(app: &TestApp, session: &str, text: &str) {
    let (status, body) = app
        .post_json(
            &format!("/api/sessions/{session}/messages"),
            json!({ "message": text }),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[actix_web::test]
async fn the_service_on_postgres_keeps_transcripts_across_a_restart() {
    let mock = MockUpstream::start().await;
    let url = crate::pg::database().await;
    let dirs = Dirs::new();
    let env = pg_env(&dirs, &mock, &url, "solo");
    let app = spawn(dirs.clone(), &env).await;
    let (_, health) = app.get("/health").await;
    assert_eq!(
        health["checks"]["store:backend"][0]["observedValue"],
        "postgres"
    );
    assert!(!health.to_string().contains(crate::pg::PASSWORD));
    let id = open_session(&app, "gpt").await;
    for text in ["one", "two"] {
        say(&app, &id, text).await;
    }
    app.stop().await;
    // Nothing was written to an SQLite file.
    assert!(!dirs.data().join("switchyard.db").exists());

    let app = spawn(dirs, &env).await;
    let (status, session) = app.get(&format!("/api/sessions/{id}")).await;
    assert_eq!(status, 200, "{session}");
    assert_eq!(session["state"], "closed");
    assert_eq!(session["summary"]["messageCount"], 2);
    assert_eq!(session["summary"]["totalTokens"], 24);
    let (_, transcript) = app.get(&format!("/api/sessions/{id}/messages")).await;
    let rows = crate::store::transcript_rows(&transcript);
    assert_eq!(
        rows,
        [
            "sent:one",
            "received:openai says: one",
            "sent:two",
            "received:openai says: two"
        ]
    );
    app.stop().await;
    mock.stop().await;
}

#[actix_web::test]
async fn two_services_on_one_postgres_database_share_targets_and_sessions() {
    let mock = MockUpstream::start().await;
    let url = crate::pg::database().await;
    let (dirs_a, dirs_b) = (Dirs::new(), Dirs::new());
    let a = spawn(dirs_a.clone(), &pg_env(&dirs_a, &mock, &url, "a")).await;
    let mut target = openai_target(&mock, "shared");
    target["authType"] = json!("BEARER_TOKEN");
    target["authConfig"] = json!({ "token": "sk-shared-1" });
    let (status, created) = a.post_json("/api/targets", target).await;
    assert_eq!(status, 201, "{created}");
    let on_a = open_session(&a, "shared").await;
    say(&a, &on_a, "from a").await;

    // B starts on the same database while A runs: it has A's target (credentials opened with
    // the shared key) and sees A's session, still open (B marks only its own interrupted).
    let b = spawn(dirs_b.clone(), &pg_env(&dirs_b, &mock, &url, "b")).await;
    let (status, shared) = b.get("/api/targets/shared").await;
    assert_eq!(status, 200, "{shared}");
    assert_eq!(shared["source"], "api");
    let on_b = open_session(&b, "shared").await;
    say(&b, &on_b, "from b").await;
    assert_eq!(
        mock.requests("/openai")
            .last()
            .unwrap()
            .header("authorization"),
        Some("Bearer sk-shared-1")
    );
    a.sessions.store().unwrap().flush().await;
    b.sessions.store().unwrap().flush().await;
    let (_, seen_by_b) = b.get(&format!("/api/sessions/{on_a}")).await;
    assert_eq!(
        (
            seen_by_b["state"].as_str(),
            &seen_by_b["summary"]["messageCount"]
        ),
        (Some("open"), &json!(1)),
        "{seen_by_b}"
    );
    let (_, transcript) = b.get(&format!("/api/sessions/{on_a}/messages")).await;
    assert_eq!(transcript["items"][1]["content"], "openai says: from a");
    // And A lists B's session next to its own.
    let (_, list) = a.get("/api/sessions?targetId=shared").await;
    assert_eq!(list["total"], 2, "{list}");
    a.stop().await;
    b.stop().await;
    mock.stop().await;
}

#[actix_web::test]
async fn an_instance_with_another_key_than_the_database_does_not_start() {
    let mock = MockUpstream::start().await;
    let url = crate::pg::database().await;
    let dirs = Dirs::new();
    let app = spawn(dirs.clone(), &pg_env(&dirs, &mock, &url, "a")).await;
    app.stop().await;
    let other = Dirs::new();
    let mut env = pg_env(&other, &mock, &url, "b");
    env.retain(|(k, _)| *k != "SWITCHYARD_SECRET_KEY");
    env.push(("SWITCHYARD_SECRET_KEY", "cd".repeat(32)));
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let settings = crate::common::settings(&other, &env);
    let error = match switchyard::App::build(settings, switchyard::Options::default()).await {
        Ok(_) => panic!("started with another key"),
        Err(error) => error,
    };
    assert_eq!(error.exit_code(), 2);
    let text = error.to_string();
    assert!(text.contains("sealed with another key"), "{text}");
    assert!(!text.contains(crate::pg::PASSWORD), "{text}");
    mock.stop().await;
}

#[actix_web::test]
async fn an_unreachable_postgres_stops_the_start_without_showing_its_password() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!(
        "postgres://app:{}@127.0.0.1:{port}/nowhere",
        crate::pg::PASSWORD
    );
    let dirs = Dirs::new();
    let settings = crate::common::settings(
        &dirs,
        &[
            ("SWITCHYARD__STORE__URL", &url),
            ("SWITCHYARD__STORE__CONNECT_TIMEOUT_MS", "300"),
        ],
    );
    let began = std::time::Instant::now();
    let error = match switchyard::App::build(settings, switchyard::Options::default()).await {
        Ok(_) => panic!("started without its database"),
        Err(error) => error,
    };
    assert!(began.elapsed() < Duration::from_secs(10));
    assert_eq!(error.exit_code(), 2, "a setup problem");
    let shown = format!("{error} {error:?}");
    assert!(!shown.contains(crate::pg::PASSWORD), "{shown}");
    assert!(
        error
            .to_string()
            .starts_with(&format!("cannot reach PostgreSQL at postgres://app:********@127.0.0.1:{port}/nowhere within 300 ms")),
        "{error}"
    );
}
