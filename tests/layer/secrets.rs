//! Secrets at run time through real HTTP: rotation under load, tenants on one route, an
//! unknown tenant, a lookup that fails.

use ringyo_test_support as support;

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use axum::{routing::post, Router};
use ringyo_test_support::{deliver, envelope, serve};
use ringyo_webhook::{
    secrets::{
        CachedLookup, LookupError, RotatingSecrets, SecretSource, Secrets, Tenant, TenantKey,
        TenantMap, Tenants,
    },
    MemoryDeliveryStore, RingyoWebhookLayer, VerifiedPayload,
};
use serde_json::json;
use tokio::io::AsyncWriteExt;

const OLD: &str = "whsec_old_endpoint";
const NEW: &str = "whsec_new_endpoint";

fn sign_with(secret: &str, body: &[u8]) -> String {
    ringyo_webhook::testing::sign(secret, body).unwrap()
}

/// What the handler saw: the tenant (or `-`) and the secret index, per delivery.
type Seen = Arc<Mutex<Vec<(String, usize)>>>;

/// A route at `path` behind a layer over `source` (test clock, a memory delivery store), whose
/// handler records the tenant and secret index of each delivery.
async fn server(path: &str, source: impl SecretSource) -> (SocketAddr, Seen) {
    let seen = Seen::default();
    let record = Arc::clone(&seen);
    let layer = RingyoWebhookLayer::from_source(source)
        .clock(support::test_now)
        .delivery_store(MemoryDeliveryStore::new());
    let handler = move |payload: VerifiedPayload| async move {
        let tenant = payload.tenant().map_or("-".to_owned(), ToString::to_string);
        record
            .lock()
            .unwrap()
            .push((tenant, payload.secret_index()));
    };
    let app = Router::new().route(path, post(handler).route_layer(layer));
    (serve(app).await, seen)
}

/// A distinct delivery each call.
fn delivery(n: usize) -> Vec<u8> {
    envelope("call.completed", json!({ "id": format!("call_{n}") }))
}

/// Deliveries flow from 8 senders while the old endpoint's secret is joined by the new one,
/// the new one is promoted and the old one retired: every delivery signed with a secret valid
/// when it was sent is accepted, and once the old one is retired it is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_under_load_refuses_nothing_signed_with_a_valid_secret() {
    let secrets = RotatingSecrets::new(Secrets::new(OLD).unwrap());
    let (addr, seen) = server("/hook", secrets.clone()).await;
    // Phase 0: only OLD is valid; 1: both, NEW added; 2: NEW promoted, senders sign with NEW.
    let phase = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    // Per sender, the phase its last finished delivery was signed in (MAX once it stopped).
    let finished: Arc<[AtomicUsize; 8]> = Arc::new(Default::default());
    let mut senders = Vec::new();
    for sender in 0..8 {
        let (phase, stop, sent) = (Arc::clone(&phase), Arc::clone(&stop), Arc::clone(&sent));
        let finished = Arc::clone(&finished);
        senders.push(tokio::spawn(async move {
            let mut refused = Vec::new();
            for round in 0..2_000 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let body = delivery(sender * 10_000 + round);
                let signed_in = phase.load(Ordering::SeqCst);
                let secret = match signed_in {
                    0 => OLD,
                    1 if round % 2 == 0 => OLD,
                    _ => NEW,
                };
                let (status, json, _) =
                    deliver(addr, "/hook", body.clone(), Some(&sign_with(secret, &body))).await;
                sent.fetch_add(1, Ordering::SeqCst);
                finished[sender].store(signed_in, Ordering::SeqCst);
                if status != 200 {
                    refused.push((status, json, secret));
                }
            }
            finished[sender].store(usize::MAX, Ordering::SeqCst);
            refused
        }));
    }
    let wait_for = |count: usize| {
        let sent = Arc::clone(&sent);
        async move {
            while sent.load(Ordering::SeqCst) < count {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    };
    wait_for(200).await;
    secrets.add(NEW).unwrap();
    phase.store(1, Ordering::SeqCst);
    wait_for(400).await;
    assert!(secrets.promote(1));
    phase.store(2, Ordering::SeqCst);
    // Every sender finishes what it signed with OLD before OLD is retired.
    while finished.iter().any(|at| at.load(Ordering::SeqCst) < 2) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let switched = sent.load(Ordering::SeqCst);
    assert!(secrets.retire(1));
    wait_for(switched + 300).await;
    stop.store(true, Ordering::SeqCst);
    for sender in senders {
        let refused = sender.await.unwrap();
        assert!(refused.is_empty(), "refused: {refused:?}");
    }
    let seen = seen.lock().unwrap().clone();
    let by_index = |index| seen.iter().filter(|(_, at)| *at == index).count();
    assert_eq!(seen.len(), sent.load(Ordering::SeqCst), "each handled once");
    assert!(
        by_index(0) > 0 && by_index(1) > 0,
        "both secrets and both orders were used"
    );

    // Retired: refused like any wrong signature.
    let body = delivery(999_999);
    let (status, json, _) =
        deliver(addr, "/hook", body.clone(), Some(&sign_with(OLD, &body))).await;
    assert_eq!(
        (status, json["error"].as_str()),
        (401, Some("invalid_signature"))
    );
}

/// A request whose secrets were looked up before a secret was retired keeps them: its body,
/// arriving after the retirement, still verifies.
#[tokio::test]
async fn a_request_in_flight_keeps_the_secrets_it_started_with() {
    let secrets = RotatingSecrets::new(Secrets::new(NEW).unwrap().with(OLD).unwrap());
    let (addr, seen) = server("/hook", secrets.clone()).await;
    let body = delivery(1);
    let head = format!(
        "POST /hook HTTP/1.1\r\nhost: 127.0.0.1\r\nx-ringyo-signature: {}\r\ncontent-length: {}\r\n\r\n",
        sign_with(OLD, &body),
        body.len()
    );
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&body[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(secrets.retire(1));
    stream.write_all(&body[10..]).await.unwrap();
    let response = support::read_response(&mut stream).await;
    assert_eq!(support::status_of(&response), 200, "{response}");
    assert_eq!(seen.lock().unwrap().as_slice(), [("-".to_owned(), 1)]);
}

fn tenant(name: &str) -> Tenant {
    Tenant::new(name).unwrap()
}

/// Two tenants on one route, each with its own secret: each accepts its own signature and
/// refuses the other's; the same body sent to both is two deliveries, even with one secret.
#[tokio::test]
async fn two_tenants_on_one_route_each_refuse_the_others_signature() {
    let map = TenantMap::new();
    map.insert(tenant("acme"), Secrets::new("whsec_acme").unwrap());
    map.insert(tenant("globex"), Secrets::new("whsec_globex").unwrap());
    let path = "/webhooks/ringyo/{tenant}";
    let (addr, seen) = server(path, Tenants::new(TenantKey::PathSegment(2), map.clone())).await;
    let body = delivery(1);
    let post = |name: &'static str, secret: &'static str| {
        let body = body.clone();
        async move {
            let url = format!("/webhooks/ringyo/{name}");
            let signature = sign_with(secret, &body);
            let (status, json, headers) = deliver(addr, &url, body, Some(&signature)).await;
            (
                status,
                json["error"].clone(),
                headers.contains_key("x-webhook-duplicate"),
            )
        }
    };
    assert_eq!(post("acme", "whsec_acme").await.0, 200);
    assert_eq!(post("globex", "whsec_globex").await.0, 200);
    for (name, secret) in [("acme", "whsec_globex"), ("globex", "whsec_acme")] {
        let (status, error, _) = post(name, secret).await;
        assert_eq!((status, error.as_str()), (401, Some("invalid_signature")));
    }
    // A retry to acme is acme's duplicate, not globex's delivery.
    assert_eq!(
        post("acme", "whsec_acme").await,
        (200, serde_json::Value::Null, true)
    );
    // One secret for two tenants: still two deliveries.
    map.insert(tenant("initech"), Secrets::new("whsec_acme").unwrap());
    assert_eq!(
        post("initech", "whsec_acme").await,
        (200, serde_json::Value::Null, false)
    );
    let seen = seen.lock().unwrap().clone();
    let tenants: Vec<&str> = seen.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(tenants, ["acme", "globex", "initech"]);

    // Removed at run time: refused from the next request on.
    assert!(map.remove("globex"));
    assert_eq!(post("globex", "whsec_globex").await.0, 401);
}

/// A tenant nobody knows, or a name that is no tenant, gets exactly the answer a bad
/// signature gets, signed or not.
#[tokio::test]
async fn an_unknown_tenant_is_answered_like_a_bad_signature() {
    let map: TenantMap = [(tenant("acme"), Secrets::new("whsec_acme").unwrap())]
        .into_iter()
        .collect();
    let header = ringyo_webhook::http::HeaderName::from_static("x-workspace");
    let (addr, seen) = server("/hook", Tenants::new(TenantKey::Header(header), map)).await;
    let body = delivery(1);
    let signature = sign_with("whsec_acme", &body);
    let send = |workspace: Option<&'static str>, signature: String| {
        let body = body.clone();
        async move {
            let mut request = support::client()
                .post(format!("http://{addr}/hook"))
                .header("x-ringyo-signature", signature)
                .body(body);
            if let Some(workspace) = workspace {
                request = request.header("x-workspace", workspace);
            }
            let response = request.send().await.unwrap();
            (response.status().as_u16(), response.text().await.unwrap())
        }
    };
    let wrong = send(Some("acme"), "00".repeat(32)).await;
    assert_eq!(wrong.0, 401);
    for workspace in [Some("globex"), Some("../acme"), None] {
        assert_eq!(
            send(workspace, signature.clone()).await,
            wrong,
            "{workspace:?}"
        );
    }
    assert!(seen.lock().unwrap().is_empty());
    assert_eq!(send(Some("acme"), signature).await.0, 200);
}

/// A lookup that fails is 503 `secrets_unavailable` with `Retry-After`, never 401; once the
/// lookup works again, the retry is accepted.
#[tokio::test]
async fn a_failing_lookup_is_503_and_the_retry_passes_once_it_recovers() {
    let down = Arc::new(AtomicBool::new(true));
    let fetches = Arc::new(AtomicUsize::new(0));
    let (fetch_down, counted) = (Arc::clone(&down), Arc::clone(&fetches));
    let lookup = CachedLookup::new(move |tenant: Tenant| {
        counted.fetch_add(1, Ordering::SeqCst);
        let down = fetch_down.load(Ordering::SeqCst);
        async move {
            if down {
                return Err(LookupError::new("connection refused"));
            }
            Ok((tenant.as_str() == "acme").then(|| Secrets::new("whsec_acme").unwrap()))
        }
    });
    let (addr, seen) = server(
        "/webhooks/ringyo/{tenant}",
        Tenants::new(TenantKey::PathSegment(2), lookup),
    )
    .await;
    let body = delivery(1);
    let signature = sign_with("whsec_acme", &body);
    let url = "/webhooks/ringyo/acme";
    let (status, json, headers) = deliver(addr, url, body.clone(), Some(&signature)).await;
    assert_eq!(
        (status, json["error"].as_str()),
        (503, Some("secrets_unavailable"))
    );
    assert_eq!(headers["retry-after"], "5");
    assert!(!json.to_string().contains("connection refused"), "{json}");

    down.store(false, Ordering::SeqCst);
    let (status, _, _) = deliver(addr, url, body.clone(), Some(&signature)).await;
    assert_eq!(status, 200);
    // Unknown: 401, and cached as unknown, so asking again fetches nothing.
    for _ in 0..2 {
        let url = "/webhooks/ringyo/globex";
        let (status, _, _) = deliver(addr, url, body.clone(), Some(&signature)).await;
        assert_eq!(status, 401);
    }
    assert_eq!(fetches.load(Ordering::SeqCst), 3, "acme down, acme, globex");
    assert_eq!(seen.lock().unwrap().as_slice(), [("acme".to_owned(), 0)]);
}

/// An unknown tenant is refused after the same work as a known one (its body read and hashed
/// under a stand-in secret), so response times do not tell which tenants exist. Medians of
/// interleaved runs, in one process: a ratio, never an absolute time.
#[tokio::test]
async fn an_unknown_tenant_is_refused_in_the_time_a_known_one_is() {
    use std::time::Instant;

    use http_body_util::Full;
    use ringyo_webhook::http::{Request, Response};
    use tower::{service_fn, ServiceExt};

    // One tenant with one secret, one in mid-rotation with two.
    let rotating = Secrets::new("whsec_new")
        .unwrap()
        .with("whsec_old")
        .unwrap();
    let map: TenantMap = [
        (tenant("acme"), Secrets::new("whsec_acme").unwrap()),
        (tenant("globex"), rotating),
    ]
    .into_iter()
    .collect();
    let layer = RingyoWebhookLayer::from_source(Tenants::new(TenantKey::PathSegment(0), map))
        .clock(support::test_now);
    let service = tower::ServiceBuilder::new()
        .layer(layer)
        .service(service_fn(|_| async {
            Ok::<_, std::convert::Infallible>(Response::new(Full::<bytes::Bytes>::default()))
        }));
    let body = bytes::Bytes::from(vec![b'x'; 64 * 1024]);
    let forged = "00".repeat(32);
    // Per round, each time against the one-secret tenant's in the same round, so drift in the
    // machine's speed (other tests run beside this one) cancels out; then the median round.
    let mut ratios = [Vec::new(), Vec::new()];
    for _ in 0..61 {
        let mut round = [0.0; 3];
        for (at, path) in ["/acme", "/globex", "/nobody"].into_iter().enumerate() {
            let request = Request::post(path)
                .header("x-ringyo-signature", &forged)
                .body(Full::new(body.clone()))
                .unwrap();
            let started = Instant::now();
            let response = service.clone().oneshot(request).await.unwrap();
            round[at] = started.elapsed().as_secs_f64();
            assert_eq!(response.status(), 401);
        }
        ratios[0].push(round[2] / round[0]);
        ratios[1].push(round[1] / round[0]);
    }
    let [unknown, two] = ratios.map(|mut ratios| {
        ratios.sort_by(f64::total_cmp);
        ratios[ratios.len() / 2]
    });
    // Every refusal hashes the body twice. Refusing an unknown tenant before hashing would
    // make its ratio a small fraction, and hashing once per secret would put the tenant with
    // two secrets at 2.
    for (name, ratio) in [("unknown", unknown), ("two secrets", two)] {
        assert!(
            (0.75..1.33).contains(&ratio),
            "{name} / one secret: {ratio:.3}"
        );
    }
}

/// Behind tenants, the inbox stores the same body sent to two tenants as two deliveries, and
/// hands each job its tenant.
#[tokio::test(flavor = "multi_thread")]
async fn the_inbox_keeps_tenants_apart_and_gives_each_job_its_tenant() {
    use axum::routing::post_service;
    use ringyo_webhook::inbox::{Inbox, Job, Worker};

    let database = support::inbox::sqlite();
    let inbox = Inbox::open(&database.url).unwrap();
    let map = TenantMap::new();
    for name in ["acme", "globex"] {
        map.insert(tenant(name), Secrets::new("whsec_shared").unwrap());
    }
    let layer = RingyoWebhookLayer::from_source(Tenants::new(TenantKey::PathSegment(2), map))
        .clock(support::test_now);
    let app = Router::new().route(
        "/webhooks/ringyo/{tenant}",
        post_service(inbox.clone()).route_layer(layer),
    );
    let addr = serve(app).await;
    let body = delivery(1);
    let signature = sign_with("whsec_shared", &body);
    for (name, expected) in [("acme", 202), ("globex", 202), ("acme", 200)] {
        let url = format!("/webhooks/ringyo/{name}");
        let (status, _, _) = deliver(addr, &url, body.clone(), Some(&signature)).await;
        assert_eq!(status, expected, "{name}");
    }

    let (report, mut reports) = tokio::sync::mpsc::unbounded_channel();
    let handler = move |job: Job| {
        let report = report.clone();
        async move {
            let _ = report.send(job.event.tenant.map(|tenant| tenant.to_string()));
            Ok::<(), std::convert::Infallible>(())
        }
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(Worker::new(&inbox, handler).run(async {
        let _ = stopped.await;
    }));
    let mut tenants = Vec::new();
    for _ in 0..2 {
        let next = tokio::time::timeout(Duration::from_secs(10), reports.recv()).await;
        tenants.push(next.expect("the handler did not run").unwrap());
    }
    tenants.sort();
    assert_eq!(
        tenants,
        [Some("acme".to_owned()), Some("globex".to_owned())]
    );
    stop.send(()).unwrap();
    worker.await.unwrap();
}
