//! The HTTP API of `steward run` (`/healthz`, `/metrics`, `/status`, `/sd`, `POST /pause` and
//! `/resume` behind the bearer token): the input is the raw bytes a client sends on one
//! connection, served by hyper's HTTP/1 connection (as `axum::serve` does) over an in-memory
//! pipe into the real router.
//!
//! Invariants: nothing panics or hangs; no response carries the token; the pause flag moves
//! only for a request that holds the token.
#![no_main]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use libfuzzer_sys::fuzz_target;
use steward_runtime::server::{router, BearerToken, RawServerConfig, Shared};
use steward_runtime::telemetry::{Loop, Metrics};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const TOKEN: &str = "fuzz-token-5f0c2a9e41d7";

fn shared() -> &'static Shared {
    static SHARED: OnceLock<Shared> = OnceLock::new();
    SHARED.get_or_init(|| {
        let config = RawServerConfig::default()
            .validate()
            .expect("the defaults validate");
        let token = BearerToken::new(TOKEN.into(), "fuzz").expect("a long enough token");
        steward_fuzz::runtime().block_on(async {
            Shared::new(
                "demo",
                &config,
                Some(token),
                Arc::new(Metrics::new()),
                vec![Loop::Scaler, Loop::Repairer],
            )
        })
    })
}

fuzz_target!(|data: &[u8]| {
    let shared = shared();
    shared.set_paused(false, "fuzz");
    let response = steward_fuzz::runtime().block_on(async {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let service = TowerToHyperService::new(router(shared.clone()));
        let conn = tokio::spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(server), service)
                .with_upgrades()
                .await;
        });
        let exchange = async {
            // Written from a task of its own: a large request must not wait on an unread
            // response.
            let (mut read, mut write) = tokio::io::split(&mut client);
            let send = async {
                let _ = write.write_all(data).await;
                let _ = write.shutdown().await;
            };
            let mut response = Vec::new();
            let receive = read.read_to_end(&mut response);
            let ((), _) = tokio::join!(send, receive);
            response
        };
        let response = tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .expect("the server answers within 10 s");
        let _ = conn.await;
        response
    });
    let holds_token = data.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes());
    assert!(
        !response.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()),
        "a response carries the token"
    );
    assert!(
        !shared.is_paused() || holds_token,
        "paused by a request without the token"
    );
});
