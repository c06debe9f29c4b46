//! The `send` example against the receiver (`ringyo-receiver`), both real, on 127.0.0.1.

use ringyo_test_support as support;

#[allow(dead_code)]
#[path = "../../examples/send.rs"]
mod send_example;

use std::net::SocketAddr;

use ringyo_receiver::{config::inbox_from, process, run, Listeners, ServerLimits, PATH};
use ringyo_webhook::{
    testing::{Fault, DEVELOPMENT_SECRET},
    EventKind, RingyoWebhookLayer,
};
use send_example::Options;
use tokio::net::TcpListener;

/// The receiver as `cargo run -p ringyo-receiver` starts it, on an ephemeral port,
/// with an inbox file of its own (kept for as long as the test runs).
async fn start_receiver() -> SocketAddr {
    let (webhook, addr) = support::local_listener().await;
    let (admin, _) = support::local_listener().await;
    let layer = RingyoWebhookLayer::new(DEVELOPMENT_SECRET).unwrap();
    let database = Box::leak(Box::new(support::inbox::sqlite()));
    let inbox = inbox_from(Ok(database.url.clone())).unwrap();
    tokio::spawn(run(
        Listeners { webhook, admin },
        layer,
        inbox,
        process(std::time::Duration::ZERO),
        support::detached_metrics(),
        ServerLimits::default(),
        std::future::pending(),
    ));
    addr
}

fn options(addr: SocketAddr, args: &[&str]) -> Options {
    let mut args: Vec<String> = args.iter().map(|arg| arg.to_string()).collect();
    args.extend(["--url".into(), format!("http://{addr}{PATH}")]);
    Options::parse(args, None).unwrap().unwrap()
}

#[tokio::test]
async fn all_sends_every_event_and_the_receiver_accepts_each() {
    let addr = start_receiver().await;
    let mut printed = Vec::new();
    let outcomes =
        send_example::send_all(&options(addr, &["--all"]), |o| printed.push(o.to_string()))
            .await
            .unwrap();
    let sent: Vec<&str> = outcomes.iter().map(|o| o.event.as_str()).collect();
    assert_eq!(sent, EventKind::KNOWN);
    for outcome in &outcomes {
        assert_eq!((outcome.status, &outcome.code), (202, &None), "{outcome}");
    }
    assert_eq!(printed.len(), EventKind::KNOWN.len());
    assert!(
        printed[0].starts_with("call.started") && printed[0].contains("202"),
        "{}",
        printed[0]
    );
}

#[tokio::test]
async fn each_fault_option_gets_its_documented_rejection() {
    let addr = start_receiver().await;
    let flags = [
        ("--tamper", Fault::Tamper),
        ("--wrong-secret", Fault::WrongSecret),
        ("--stale", Fault::Stale),
        ("--no-signature", Fault::MissingSignature),
    ];
    assert_eq!(flags.len(), Fault::ALL.len());
    for (flag, fault) in flags {
        let outcomes = send_example::send_all(&options(addr, &["credits.low", flag]), |_| {})
            .await
            .unwrap();
        assert_eq!(outcomes[0].status, 401, "{flag}");
        assert_eq!(
            outcomes[0].code.as_deref(),
            Some(fault.expected().code()),
            "{flag}"
        );
    }
}

#[tokio::test]
async fn two_sends_of_one_sample_are_two_deliveries_and_a_replay_is_a_duplicate() {
    let addr = start_receiver().await;
    let twice = options(addr, &["agent.created", "agent.created"]);
    let outcomes = send_example::send_all(&twice, |_| {}).await.unwrap();
    let statuses: Vec<_> = outcomes.iter().map(|o| (o.status, o.duplicate)).collect();
    assert_eq!(statuses, [(202, false), (202, false)]);

    let replay = options(addr, &["agent.created", "--replay"]);
    let outcomes = send_example::send_all(&replay, |_| {}).await.unwrap();
    let statuses: Vec<_> = outcomes.iter().map(|o| (o.status, o.duplicate)).collect();
    assert_eq!(statuses, [(202, false), (200, true)]);
    assert!(outcomes[1].to_string().contains("duplicate"));
}

#[tokio::test]
async fn receiver_not_listening_is_a_clear_error() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let err = send_example::send_all(&options(addr, &[]), |_| {})
        .await
        .unwrap_err();
    assert!(err.contains("is it running"), "{err}");
    assert!(err.contains(&addr.to_string()), "{err}");
}

#[test]
fn arguments_have_working_defaults_and_clear_errors() {
    let defaults = Options::parse(Vec::<String>::new(), None).unwrap().unwrap();
    assert_eq!(defaults.url, "http://127.0.0.1:3000/webhooks/ringyo");
    assert_eq!(defaults.secret, DEVELOPMENT_SECRET);
    assert_eq!(defaults.events, ["call.completed"]);
    assert_eq!(defaults.fault, None);
    assert!(!defaults.replay);

    let from_env = Options::parse(["--stale".to_owned()], Some("whsec_env".into()))
        .unwrap()
        .unwrap();
    assert_eq!(
        (from_env.secret.as_str(), from_env.fault),
        ("whsec_env", Some(Fault::Stale))
    );

    let help = Options::parse(["--help".to_owned()], None).unwrap();
    assert!(help.is_none());
    let two_faults = ["--tamper", "--stale"].map(String::from);
    assert!(Options::parse(two_faults, None).is_err());
    assert!(Options::parse(["--nope".to_owned()], None)
        .unwrap_err()
        .contains("--nope"));
    assert!(Options::parse(["--url".to_owned()], None).is_err());
}
