//! Sends signed sample events to a local receiver, like the dashboard's "Send Test" button,
//! without a tunnel.
//!
//! ```text
//! cargo run --example send -- --all
//! cargo run --example send -- call.completed credits.low --tamper
//! ```
//!
//! Prints one line a delivery: event, status, error code, time taken. See `--help`.

use std::{process::ExitCode, time::Duration, time::Instant};

use ringyo_webhook::{
    testing::{Fault, TestDelivery, DEFAULT_PATH, DEVELOPMENT_SECRET},
    EventKind,
};

const USAGE: &str = "\
Sends signed sample Ringyo events to a receiver.

Usage: cargo run --example send -- [OPTIONS] [EVENT]...

Events: any names (default: call.completed); --all sends every event the crate knows.

Options:
  --url URL          where to POST (default: http://127.0.0.1:3000/webhooks/ringyo,
                     the receiver's address)
  --secret SECRET    signing secret (default: $RINGYO_WEBHOOK_SECRET, else the receiver's
                     development secret)
  --all              send every known event
  --tamper           change the body after signing    (expect 401 invalid_signature)
  --wrong-secret     sign with another secret          (expect 401 invalid_signature)
  --stale            a timestamp two hours old, outside the freshness window
                                                       (expect 401 timestamp_out_of_tolerance)
  --no-signature     leave out x-ringyo-signature      (expect 401 missing_signature)
  --replay           send each delivery twice, the same bytes: Ringyo's retry of a delivery,
                     to see replay protection (expect the second answered 200 as a duplicate,
                     from a delivery store or the inbox); not the receiver's `inbox replay`
  -h, --help         show this";

#[tokio::main]
async fn main() -> ExitCode {
    let env_secret = match std::env::var("RINGYO_WEBHOOK_SECRET") {
        Ok(secret) if secret.is_empty() => {
            eprintln!(
                "error: RINGYO_WEBHOOK_SECRET is empty; set it to the receiver's secret, or \
                 unset it to sign with the development secret"
            );
            return ExitCode::FAILURE;
        }
        Ok(secret) => Some(secret),
        Err(std::env::VarError::NotPresent) => None,
        // Not the development secret in its place, and not the value: it may be the secret.
        Err(std::env::VarError::NotUnicode(_)) => {
            eprintln!("error: RINGYO_WEBHOOK_SECRET is not valid UTF-8; Ringyo's secrets are");
            return ExitCode::FAILURE;
        }
    };
    let options = match Options::parse(std::env::args().skip(1), env_secret) {
        Ok(Some(options)) => options,
        Ok(None) => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            eprintln!("error: {err}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    for event in unknown_events(&options.events) {
        eprintln!("warning: {}", unknown_warning(event));
    }
    let mut first = true;
    let print = |outcome: &Outcome| {
        if std::mem::take(&mut first) {
            println!(
                "{:<24} {:>6}  {:<28} {:>9}",
                "EVENT", "STATUS", "ERROR", "TIME"
            );
        }
        println!("{outcome}");
    };
    match send_all(&options, print).await {
        Ok(_) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// What to send, and where.
#[derive(Debug, Clone, PartialEq)]
struct Options {
    url: String,
    secret: String,
    events: Vec<String>,
    fault: Option<Fault>,
    /// Send each delivery a second time, byte for byte.
    replay: bool,
}

impl Options {
    /// Parses the arguments; `Ok(None)` for `--help`.
    fn parse(
        args: impl IntoIterator<Item = String>,
        env_secret: Option<String>,
    ) -> Result<Option<Self>, String> {
        let mut options = Self {
            url: format!("http://127.0.0.1:3000{DEFAULT_PATH}"),
            secret: env_secret.unwrap_or_else(|| DEVELOPMENT_SECRET.to_owned()),
            events: Vec::new(),
            fault: None,
            replay: false,
        };
        let mut all = false;
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let mut fault = |fault| match options.fault.replace(fault) {
                Some(_) => Err("give at most one fault option".to_owned()),
                None => Ok(()),
            };
            match arg.as_str() {
                "-h" | "--help" => return Ok(None),
                "--url" => options.url = args.next().ok_or("--url needs a value")?,
                "--secret" => options.secret = args.next().ok_or("--secret needs a value")?,
                "--all" => all = true,
                "--replay" => options.replay = true,
                "--tamper" => fault(Fault::Tamper)?,
                "--wrong-secret" => fault(Fault::WrongSecret)?,
                "--stale" => fault(Fault::Stale)?,
                "--no-signature" => fault(Fault::MissingSignature)?,
                flag if flag.starts_with('-') => return Err(format!("unknown option {flag}")),
                event => options.events.push(event.to_owned()),
            }
        }
        if all {
            options
                .events
                .extend(EventKind::KNOWN.iter().map(|name| name.to_string()));
        }
        if options.events.is_empty() {
            options.events.push("call.completed".to_owned());
        }
        Ok(Some(options))
    }
}

/// The names in `events` that are not events the crate knows: a typo, most likely. They are
/// sent anyway, since a receiver must accept names it does not know yet.
fn unknown_events(events: &[String]) -> impl Iterator<Item = &str> {
    events
        .iter()
        .map(String::as_str)
        .filter(|event| !EventKind::KNOWN.contains(event))
}

/// The warning for an event name the crate does not know.
fn unknown_warning(event: &str) -> String {
    format!(
        "{:?} is not an event Ringyo sends (--all sends every one: {}); sending it anyway, as \
         a receiver must take names it does not know",
        event,
        EventKind::KNOWN.join(", ")
    )
}

/// One delivery's result.
#[derive(Debug, Clone)]
struct Outcome {
    event: String,
    status: u16,
    /// The `error` code of a JSON error answer.
    code: Option<String>,
    /// Answered as a duplicate of a delivery already handled (`x-webhook-duplicate`).
    duplicate: bool,
    elapsed: Duration,
}

impl std::fmt::Display for Outcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{:<24} {:>6}  {:<28} {:>7.1}ms",
            self.event,
            self.status,
            match (&self.code, self.duplicate) {
                (Some(code), _) => code.as_str(),
                (None, true) => "- (duplicate)",
                (None, false) => "-",
            },
            self.elapsed.as_secs_f64() * 1000.0
        )
    }
}

/// Sends each event in turn, reporting each outcome as it comes.
async fn send_all(
    options: &Options,
    mut report: impl FnMut(&Outcome),
) -> Result<Vec<Outcome>, String> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|err| err.to_string())?;
    let mut outcomes = Vec::new();
    for event in &options.events {
        let mut delivery = TestDelivery::new(event).secret(&options.secret);
        if let Some(fault) = options.fault {
            delivery = delivery.fault(fault);
        }
        // Each `TestDelivery` is a delivery of its own; its bytes again are a replay of it.
        let (body, signature) = delivery.body_and_signature();
        for _ in 0..if options.replay { 2 } else { 1 } {
            let outcome = send_one(&client, options, event, &body, signature.as_deref()).await?;
            report(&outcome);
            outcomes.push(outcome);
        }
    }
    Ok(outcomes)
}

/// POSTs one delivery and reads the answer.
async fn send_one(
    client: &reqwest::Client,
    options: &Options,
    event: &str,
    body: &str,
    signature: Option<&str>,
) -> Result<Outcome, String> {
    let mut request = client
        .post(&options.url)
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(signature) = signature {
        request = request.header("x-ringyo-signature", signature);
    }
    let started = Instant::now();
    let response = request.send().await.map_err(|err| {
        if err.is_connect() {
            format!(
                "cannot reach the receiver at {}: is it running? Start it with \
                 `cargo run -p ringyo-receiver`, or point --url at yours",
                options.url
            )
        } else {
            format!("sending {event} to {} failed: {err}", options.url)
        }
    })?;
    let status = response.status().as_u16();
    let duplicate = response.headers().contains_key("x-webhook-duplicate");
    let body = response.bytes().await.unwrap_or_default();
    let code = serde_json::from_slice::<serde_json::Value>(&body)
        .ok()
        .and_then(|json| json["error"].as_str().map(str::to_owned));
    Ok(Outcome {
        event: event.to_owned(),
        status,
        code,
        duplicate,
        elapsed: started.elapsed(),
    })
}

#[cfg(test)]
mod tests {
    //! The example against the receiver (`ringyo-receiver`), both real, on 127.0.0.1.

    use std::net::SocketAddr;

    use ringyo_receiver::{config::inbox_from, process, run, Listeners, Settings, PATH};
    use ringyo_test_support as support;
    use ringyo_webhook::RingyoWebhookLayer;
    use tokio::net::TcpListener;

    use super::*;

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
            inbox.clone(),
            ringyo_webhook::inbox::Worker::new(&inbox, process(ringyo_receiver::Work::NONE)),
            support::detached_metrics(),
            Settings::default(),
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
        let outcomes = send_all(&options(addr, &["--all"]), |o| printed.push(o.to_string()))
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
            let outcomes = send_all(&options(addr, &["credits.low", flag]), |_| {})
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
        let outcomes = send_all(&twice, |_| {}).await.unwrap();
        let statuses: Vec<_> = outcomes.iter().map(|o| (o.status, o.duplicate)).collect();
        assert_eq!(statuses, [(202, false), (202, false)]);

        let replay = options(addr, &["agent.created", "--replay"]);
        let outcomes = send_all(&replay, |_| {}).await.unwrap();
        let statuses: Vec<_> = outcomes.iter().map(|o| (o.status, o.duplicate)).collect();
        assert_eq!(statuses, [(202, false), (200, true)]);
        assert!(outcomes[1].to_string().contains("duplicate"));
    }

    #[tokio::test]
    async fn receiver_not_listening_is_a_clear_error() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = send_all(&options(addr, &[]), |_| {}).await.unwrap_err();
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

    #[test]
    fn an_unknown_event_name_gets_a_warning_and_known_ones_none() {
        let events = ["call.completed", "call.complete", "credits.low"].map(String::from);
        let unknown: Vec<&str> = unknown_events(&events).collect();
        assert_eq!(unknown, ["call.complete"]);
        let warning = unknown_warning(unknown[0]);
        assert!(
            warning.starts_with("\"call.complete\" is not an event Ringyo sends"),
            "{warning}"
        );
        assert!(warning.contains("call.completed"), "{warning}");
    }
}
