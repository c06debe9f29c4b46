//! The Redis delivery store against a real `redis-server` on 127.0.0.1.
//!
//! `.ci/run` starts one on a free port and runs these with `--features redis` and
//! `RINGYO_TEST_REDIS_URL`. Without the feature or the variable they say they were skipped;
//! under CI (`CI` set) a missing server is a failure, not a skip.

#[cfg(not(feature = "redis"))]
#[test]
fn redis_store_tests_are_skipped_without_the_redis_feature() {
    eprintln!(
        "skipped: the Redis store tests need `--features redis` and a server in \
         RINGYO_TEST_REDIS_URL (bash .ci/run starts one)"
    );
}

#[cfg(feature = "redis")]
mod with_redis {
    use std::{
        net::SocketAddr,
        sync::{
            atomic::{AtomicUsize, Ordering},
            Arc,
        },
        time::Duration,
    };

    use axum::{extract::State, http::StatusCode, routing::post, Router};
    use ringyo_webhook::{
        middleware::DUPLICATE_HEADER, replay::RedisDeliveryStore, testing::TestDelivery,
        ClaimToken, RingyoEvent, RingyoWebhookLayer,
    };

    use ringyo_test_support as support;

    const SECRET: &str = "whsec_redis_tests";

    /// The test server's URL, or `None` (and a note) when there is none outside CI.
    fn redis_url() -> Option<String> {
        match std::env::var("RINGYO_TEST_REDIS_URL") {
            Ok(url) => Some(url),
            Err(_) if std::env::var_os("CI").is_some() => {
                panic!("RINGYO_TEST_REDIS_URL is not set: in CI a skipped Redis test is a failure")
            }
            Err(_) => {
                eprintln!("skipped: set RINGYO_TEST_REDIS_URL to a redis-server on 127.0.0.1");
                None
            }
        }
    }

    /// A store under a prefix of this run's own, so runs and tests never share keys.
    fn store(url: &str) -> RedisDeliveryStore {
        RedisDeliveryStore::open(url)
            .unwrap()
            .prefix(format!("ringyo-test:{}:", ClaimToken::new()))
    }

    #[tokio::test]
    async fn redis_store_passes_the_store_suite() {
        let Some(url) = redis_url() else { return };
        support::stores::behaves_as_a_delivery_store(&store(&url)).await;
    }

    /// Redis 6.2 refuses `SET` with `NX` and `GET`, and the store claims with a script there.
    #[tokio::test]
    async fn redis_store_claiming_as_on_redis_6_2_passes_the_store_suite() {
        let Some(url) = redis_url() else { return };
        support::stores::behaves_as_a_delivery_store(&store(&url).with_scripted_claims()).await;
    }

    /// A handler that counts its runs and takes `delay[run]` (the last entry for later runs),
    /// answering 500 on the runs marked to fail.
    #[derive(Clone)]
    struct Handler {
        runs: Arc<AtomicUsize>,
        delays: Arc<[(u64, u16)]>,
    }

    async fn handle(State(handler): State<Handler>, _: RingyoEvent) -> StatusCode {
        let run = handler.runs.fetch_add(1, Ordering::SeqCst);
        let (delay, status) = handler.delays[run.min(handler.delays.len() - 1)];
        tokio::time::sleep(Duration::from_millis(delay)).await;
        StatusCode::from_u16(status).unwrap()
    }

    /// A replica: its own layer and its own connection to the shared Redis.
    async fn replica(store: RedisDeliveryStore, handler: Handler, lease: Duration) -> SocketAddr {
        let layer = RingyoWebhookLayer::new(SECRET)
            .unwrap()
            .delivery_store(store)
            .claim_lease(lease);
        let app = Router::new()
            .route("/", post(handle).route_layer(layer))
            .with_state(handler);
        support::serve(app).await
    }

    async fn send(addr: SocketAddr, body: &str, signature: &str) -> (u16, bool) {
        let response = support::post_signed(addr, "/", body.to_owned(), signature).await;
        let duplicate = response.headers().contains_key(DUPLICATE_HEADER.as_str());
        (response.status().as_u16(), duplicate)
    }

    /// Sends until the answer is not 503, for at most about a second.
    async fn until_served(addr: SocketAddr, body: &str, signature: &str) -> (u16, bool) {
        let mut answer = (503, false);
        for _ in 0..40 {
            answer = send(addr, body, signature).await;
            if answer.0 != 503 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        answer
    }

    /// Two tenants sharing one secret and one Redis: the same body is a delivery for each,
    /// and a retry to one is that tenant's duplicate only.
    #[tokio::test]
    async fn the_same_body_for_two_tenants_is_two_deliveries_in_redis() {
        use ringyo_webhook::secrets::{Secrets, Tenant, TenantKey, TenantMap, Tenants};
        let Some(url) = redis_url() else { return };
        let map = TenantMap::new();
        for name in ["acme", "globex"] {
            map.insert(Tenant::new(name).unwrap(), Secrets::new(SECRET).unwrap());
        }
        let layer = RingyoWebhookLayer::from_source(Tenants::new(TenantKey::PathSegment(0), map))
            .delivery_store(store(&url));
        let handler = Handler {
            runs: Arc::new(AtomicUsize::new(0)),
            delays: Arc::new([(0, 200)]),
        };
        let app = Router::new()
            .route("/{tenant}", post(handle).route_layer(layer))
            .with_state(handler.clone());
        let addr = support::serve(app).await;
        let (body, signature) = TestDelivery::new("call.completed")
            .secret(SECRET)
            .body_and_signature();
        let signature = signature.unwrap();
        let mut answers = Vec::new();
        for path in ["/acme", "/globex", "/acme"] {
            let response = support::post_signed(addr, path, body.clone(), &signature).await;
            let duplicate = response.headers().contains_key(DUPLICATE_HEADER.as_str());
            answers.push((response.status().as_u16(), duplicate));
        }
        assert_eq!(answers, [(200, false), (200, false), (200, true)]);
        assert_eq!(handler.runs.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn twenty_copies_over_two_replicas_run_the_handler_once() {
        let Some(url) = redis_url() else { return };
        let prefix = format!("ringyo-test:{}:", ClaimToken::new());
        twenty_copies_run_the_handler_once(
            store(&url).prefix(&prefix),
            store(&url).prefix(&prefix),
        )
        .await;
    }

    /// Replicas of a fleet upgraded from Redis 6.2, one still claiming with the script: each
    /// sees the other's claims.
    #[tokio::test]
    async fn twenty_copies_over_replicas_claiming_in_either_way_run_the_handler_once() {
        let Some(url) = redis_url() else { return };
        let prefix = format!("ringyo-test:{}:", ClaimToken::new());
        twenty_copies_run_the_handler_once(
            store(&url).prefix(&prefix),
            store(&url).prefix(&prefix).with_scripted_claims(),
        )
        .await;
    }

    /// Twenty copies of one delivery at once over two replicas, on `first` and `second`:
    /// one runs the handler, the others are 409, and retries are duplicates.
    async fn twenty_copies_run_the_handler_once(
        first: RedisDeliveryStore,
        second: RedisDeliveryStore,
    ) {
        let handler = Handler {
            runs: Arc::new(AtomicUsize::new(0)),
            delays: Arc::new([(300, 200)]),
        };
        let lease = Duration::from_secs(15);
        let replicas = [
            replica(first, handler.clone(), lease).await,
            replica(second, handler.clone(), lease).await,
        ];
        let (body, signature) = TestDelivery::new("call.completed")
            .secret(SECRET)
            .body_and_signature();
        let signature = signature.unwrap();
        let copies = (0..20).map(|n| send(replicas[n % 2], &body, &signature));
        let answers = futures_util::future::join_all(copies).await;
        assert!(
            answers
                .iter()
                .all(|&(status, _)| status == 200 || status == 409),
            "{answers:?}"
        );
        assert_eq!(
            answers
                .iter()
                .filter(|&&answer| answer == (200, false))
                .count(),
            1,
            "exactly one copy ran the handler: {answers:?}"
        );
        assert_eq!(handler.runs.load(Ordering::SeqCst), 1);
        // Ringyo's retry after a 409, on either replica: handled already.
        for addr in replicas {
            assert_eq!(send(addr, &body, &signature).await, (200, true));
        }
        assert_eq!(handler.runs.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_lapsed_lease_lets_a_second_claimer_win_and_the_first_cannot_undo_it() {
        let Some(url) = redis_url() else { return };
        // The first run outlives its 600 ms lease and fails at 800 ms; the copy sent at 700 ms
        // claims anew (lease to 1300 ms) and succeeds at 1700 ms.
        let handler = Handler {
            runs: Arc::new(AtomicUsize::new(0)),
            delays: Arc::new([(800, 500), (1000, 200)]),
        };
        let addr = replica(store(&url), handler.clone(), Duration::from_millis(600)).await;
        let (body, signature) = TestDelivery::new("call.completed")
            .secret(SECRET)
            .body_and_signature();
        let signature = signature.unwrap();

        let first = tokio::spawn({
            let (body, signature) = (body.clone(), signature.clone());
            async move { send(addr, &body, &signature).await }
        });
        tokio::time::sleep(Duration::from_millis(700)).await;
        let second = tokio::spawn({
            let (body, signature) = (body.clone(), signature.clone());
            async move { send(addr, &body, &signature).await }
        });
        // The first run ends at about 800 ms and releases its claim: that must not free the
        // second's, so a copy at about 1000 ms is still in flight.
        assert_eq!(first.await.unwrap(), (500, false));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(send(addr, &body, &signature).await, (409, false));
        assert_eq!(second.await.unwrap(), (200, false));
        assert_eq!(send(addr, &body, &signature).await, (200, true));
        assert_eq!(handler.runs.load(Ordering::SeqCst), 2);
    }

    /// A redis-server of the test's own, persisting every write (AOF, fsync always), that the
    /// test can kill and start again on the same port and data.
    struct OwnRedis {
        port: u16,
        dir: std::path::PathBuf,
        child: Option<std::process::Child>,
    }

    impl OwnRedis {
        fn start() -> Self {
            let port = std::net::TcpListener::bind("127.0.0.1:0")
                .unwrap()
                .local_addr()
                .unwrap()
                .port();
            let dir = std::env::temp_dir().join(format!("ringyo-redis-{}", ClaimToken::new()));
            std::fs::create_dir_all(&dir).unwrap();
            let mut server = Self {
                port,
                dir,
                child: None,
            };
            server.restart();
            server
        }

        fn url(&self) -> String {
            format!("redis://127.0.0.1:{}", self.port)
        }

        /// The server's major version, from `INFO server`.
        async fn major_version(&self) -> u32 {
            let info = info(&self.url(), "server").await;
            let version = info
                .lines()
                .find_map(|line| line.strip_prefix("redis_version:"))
                .unwrap();
            version.split('.').next().unwrap().parse().unwrap()
        }

        /// Starts the server and waits (boundedly) until it accepts connections.
        fn restart(&mut self) {
            let child = std::process::Command::new("redis-server")
                .args(["--bind", "127.0.0.1", "--port", &self.port.to_string()])
                .args([
                    "--appendonly",
                    "yes",
                    "--appendfsync",
                    "always",
                    "--save",
                    "",
                ])
                .arg("--dir")
                .arg(&self.dir)
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("redis-server is installed (bash .ci/run installs it)");
            self.child = Some(child);
            for _ in 0..100 {
                if std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            panic!("redis-server did not start on port {}", self.port);
        }

        /// Kills the server at once, as a crash or an OOM kill would.
        fn kill(&mut self) {
            if let Some(mut child) = self.child.take() {
                child.kill().unwrap();
                child.wait().unwrap();
            }
        }
    }

    impl Drop for OwnRedis {
        fn drop(&mut self) {
            self.kill();
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// A section of the Redis at `url`'s `INFO`.
    async fn info(url: &str, section: &str) -> String {
        let mut connection = redis::Client::open(url)
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        redis::cmd("INFO")
            .arg(section)
            .query_async(&mut connection)
            .await
            .unwrap()
    }

    /// How many scripts Redis has run (`EVALSHA` and `EVAL`), from `INFO commandstats`.
    async fn scripts_run(url: &str) -> u64 {
        info(url, "commandstats")
            .await
            .lines()
            .filter(|line| {
                line.starts_with("cmdstat_evalsha:") || line.starts_with("cmdstat_eval:")
            })
            .map(|line| {
                let calls = line.split_once("calls=").unwrap().1;
                calls.split(',').next().unwrap().parse::<u64>().unwrap()
            })
            .sum()
    }

    /// On Redis 7 a claim is one `SET`: a handled delivery runs one script, the completion's.
    #[tokio::test]
    async fn on_redis_7_a_claim_runs_no_script() {
        if redis_url().is_none() {
            return;
        }
        let redis = OwnRedis::start();
        if redis.major_version().await < 7 {
            // Redis 6.2 refuses `SET` with `NX` and `GET`: its claims run the script.
            eprintln!("skipped: redis-server is older than 7.0");
            return;
        }
        let handler = Handler {
            runs: Arc::new(AtomicUsize::new(0)),
            delays: Arc::new([(0, 200)]),
        };
        let addr = replica(
            RedisDeliveryStore::open(&redis.url()).unwrap(),
            handler.clone(),
            Duration::from_secs(15),
        )
        .await;
        let (body, signature) = TestDelivery::new("call.completed")
            .secret(SECRET)
            .body_and_signature();
        let signature = signature.unwrap();
        assert_eq!(send(addr, &body, &signature).await, (200, false));
        assert_eq!(send(addr, &body, &signature).await, (200, true));
        assert_eq!(handler.runs.load(Ordering::SeqCst), 1);
        // Two claims and one completion, whose script runs by hash: refused the first time
        // (Redis has not loaded it yet), then again once redis-rs has loaded it.
        assert_eq!(scripts_run(&redis.url()).await, 2);
    }

    #[tokio::test]
    async fn redis_killed_mid_run_is_503_forgets_nothing_and_serves_within_a_second_of_return() {
        if redis_url().is_none() {
            return;
        }
        let mut redis = OwnRedis::start();
        let handler = Handler {
            runs: Arc::new(AtomicUsize::new(0)),
            delays: Arc::new([(0, 200)]),
        };
        let store = RedisDeliveryStore::open(&redis.url()).unwrap();
        let addr = replica(store, handler.clone(), Duration::from_secs(15)).await;
        let signed = |event: &str| {
            let (body, signature) = TestDelivery::new(event).secret(SECRET).body_and_signature();
            (body, signature.unwrap())
        };
        let (a, a_signature) = signed("call.completed");
        let (b, b_signature) = signed("credits.low");
        assert_eq!(send(addr, &a, &a_signature).await, (200, false));

        redis.kill();
        for (body, signature) in [(&a, &a_signature), (&b, &b_signature), (&b, &b_signature)] {
            assert_eq!(send(addr, body, signature).await, (503, false));
        }
        assert_eq!(
            handler.runs.load(Ordering::SeqCst),
            1,
            "nothing ran while Redis was down"
        );

        redis.restart();
        let back = std::time::Instant::now();
        let answer = until_served(addr, &b, &b_signature).await;
        assert_eq!(answer, (200, false), "B is handled once Redis is back");
        assert!(
            back.elapsed() < Duration::from_secs(1),
            "served again {:?} after Redis returned",
            back.elapsed()
        );
        // What was handled before the crash is still known: A is a duplicate, not run again.
        assert_eq!(send(addr, &a, &a_signature).await, (200, true));
        assert_eq!(handler.runs.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_slow_redis_is_503_within_the_time_out_and_serves_when_it_answers_again() {
        slow_redis_is_503_then_serves(Duration::from_millis(300)).await;
    }

    /// The connection gives up first (its own response time-out, 1 s, under a store time-out
    /// of 2 s): the claim Redis runs late is released all the same.
    #[tokio::test]
    async fn a_claim_the_connection_gave_up_on_is_released_once_redis_runs_it() {
        slow_redis_is_503_then_serves(Duration::from_secs(2)).await;
    }

    /// Redis stalls every client for 1.5 s, past the store's `timeout`: a delivery is 503
    /// within it, and served once Redis answers again.
    async fn slow_redis_is_503_then_serves(timeout: Duration) {
        if redis_url().is_none() {
            return;
        }
        let redis = OwnRedis::start();
        let handler = Handler {
            runs: Arc::new(AtomicUsize::new(0)),
            delays: Arc::new([(0, 200)]),
        };
        let store = RedisDeliveryStore::open(&redis.url())
            .unwrap()
            .timeout(timeout);
        let addr = replica(store, handler.clone(), Duration::from_secs(15)).await;
        let (body, signature) = TestDelivery::new("call.completed")
            .secret(SECRET)
            .body_and_signature();
        let signature = signature.unwrap();
        // Warm the connection, then make Redis stall every client for 1.5 s.
        let mut admin = redis::Client::open(redis.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        redis::cmd("PING")
            .query_async::<String>(&mut admin)
            .await
            .unwrap();
        redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(1500)
            .arg("ALL")
            .query_async::<()>(&mut admin)
            .await
            .unwrap();
        let started = std::time::Instant::now();
        assert_eq!(send(addr, &body, &signature).await, (503, false));
        assert!(
            started.elapsed() < timeout + Duration::from_millis(700),
            "the claim waited {:?}, past its {timeout:?} time-out",
            started.elapsed()
        );
        assert_eq!(handler.runs.load(Ordering::SeqCst), 0);
        tokio::time::sleep(Duration::from_millis(1800).saturating_sub(started.elapsed())).await;
        // The timed-out claim ran once Redis woke (a `SET` waits in the connection), and the
        // store's release after it: the delivery is free, not held 15 s by a claim no
        // request has.
        let answer = until_served(addr, &body, &signature).await;
        assert_eq!(answer, (200, false));
        assert_eq!(handler.runs.load(Ordering::SeqCst), 1);
    }

    /// Samples of the Redis round-trip histogram recorded since the recorder was installed,
    /// by `op` and `result`.
    fn round_trips(
        snapshotter: &metrics_util::debugging::Snapshotter,
    ) -> std::collections::BTreeMap<(String, String), usize> {
        let mut seen = std::collections::BTreeMap::new();
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            let key = key.key();
            if key.name() != ringyo_webhook::metrics::STORE_SECONDS {
                continue;
            }
            let label = |name: &str| {
                key.labels()
                    .find(|label| label.key() == name)
                    .map(|label| label.value().to_owned())
                    .unwrap_or_default()
            };
            assert_eq!(label("store"), "redis");
            if let metrics_util::debugging::DebugValue::Histogram(samples) = value {
                *seen.entry((label("op"), label("result"))).or_default() += samples.len();
            }
        }
        seen
    }

    #[tokio::test]
    async fn each_round_trip_is_timed_by_operation_and_result() {
        let Some(url) = redis_url() else { return };
        // This process's recorder; other tests here may add samples of their own, never fewer.
        let recorder = metrics_util::debugging::DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        recorder.install().unwrap();
        let handler = Handler {
            runs: Arc::default(),
            delays: Arc::from([(0, 200)]),
        };
        let addr = replica(store(&url), handler.clone(), Duration::from_secs(5)).await;
        for n in 0..2 {
            let (body, signature) = TestDelivery::new("credits.low")
                .secret(SECRET)
                .data(serde_json::json!({ "balance": n }))
                .body_and_signature();
            assert_eq!(send(addr, &body, &signature.unwrap()).await, (200, false));
        }
        // A store whose server is gone: its claim fails, and is timed as an error.
        let gone = RedisDeliveryStore::open("redis://127.0.0.1:1")
            .unwrap()
            .timeout(Duration::from_millis(300));
        let unreachable = replica(gone, handler, Duration::from_secs(5)).await;
        let (body, signature) = TestDelivery::new("credits.low")
            .secret(SECRET)
            .body_and_signature();
        assert_eq!(send(unreachable, &body, &signature.unwrap()).await.0, 503);

        let seen = round_trips(&snapshotter);
        let count = |op: &str, result: &str| seen.get(&(op.into(), result.into())).copied();
        assert!(count("claim", "ok") >= Some(2), "{seen:?}");
        assert!(count("complete", "ok") >= Some(2), "{seen:?}");
        assert!(count("claim", "error") >= Some(1), "{seen:?}");
    }
}
