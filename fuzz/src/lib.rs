//! Shared plumbing of the fuzz targets (`fuzz_targets/*.rs`): a scratch directory on tmpfs, a
//! current-thread tokio runtime per target, an input split into several bodies, the default
//! policies, `steward evaluate` called as the command line would, and a tiny HTTP server that
//! answers every request with the body under test.
//!
//! What it is not: a test of any behaviour beyond "no input panics, hangs or leaks a secret";
//! each target states the extra invariants it checks.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use clap::Parser;
use steward::evaluate::EvaluateArgs;
use steward_policies::{PolicyConfig, RawPolicyConfig};

/// A directory of this process for files a target must hand over by path. On `/dev/shm` when
/// there is one, so that the writes cost no disk I/O.
pub fn scratch_dir(target: &str) -> PathBuf {
    let base = if Path::new("/dev/shm").is_dir() {
        PathBuf::from("/dev/shm")
    } else {
        std::env::temp_dir()
    };
    let dir = base.join(format!("steward-fuzz-{target}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch directory");
    dir
}

/// Splits an input into at most `n` parts at NUL bytes (the last part keeps any further NULs).
/// A body in JSON or text never needs a raw NUL, so a seed is its bodies joined by `\0`.
pub fn parts(data: &[u8], n: usize) -> Vec<&[u8]> {
    let mut out: Vec<&[u8]> = data.splitn(n, |b| *b == 0).collect();
    out.resize(n, &[]);
    out
}

/// A current-thread runtime, built once per target process.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

/// The default policies, as an empty config file gives them.
pub fn default_policy() -> PolicyConfig {
    RawPolicyConfig::default()
        .validate()
        .expect("the default policies validate")
}

#[derive(Parser)]
struct EvaluateCli {
    #[command(flatten)]
    args: EvaluateArgs,
}

/// Runs `steward evaluate ARGS` with the default policies and returns the report (or the
/// error, printed as the binary prints it). The arguments are the command line's after
/// `evaluate`.
pub fn evaluate(args: &[&str]) -> Result<Vec<u8>, String> {
    let cli = EvaluateCli::try_parse_from(std::iter::once("evaluate").chain(args.iter().copied()))
        .map_err(|e| format!("bad fuzz arguments: {e}"))?;
    let mut out = Vec::new();
    steward::evaluate::run(&cli.args, default_policy(), &mut out)
        .map(|()| out)
        .map_err(|e| format!("{e:#}"))
}

/// What [`BodyServer`] answers: status, content type, body.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Vec<u8>,
}

/// An HTTP/1.1 server on 127.0.0.1 (its own thread and runtime) that answers every request
/// with the current [`Answer`]: how a client that only talks HTTP is fed a fuzzed body.
pub struct BodyServer {
    pub url: String,
    answer: Arc<Mutex<Answer>>,
}

impl BodyServer {
    pub fn start() -> BodyServer {
        let answer = Arc::new(Mutex::new(Answer {
            status: 200,
            content_type: "application/json",
            body: Vec::new(),
        }));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1");
        let url = format!("http://{}", listener.local_addr().expect("local addr"));
        let shared = answer.clone();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("server runtime");
            rt.block_on(async move {
                listener.set_nonblocking(true).expect("nonblocking");
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                loop {
                    let Ok((stream, _)) = listener.accept().await else {
                        continue;
                    };
                    let shared = shared.clone();
                    tokio::spawn(async move {
                        let service = hyper::service::service_fn(move |_req| {
                            let a = shared.lock().unwrap_or_else(|p| p.into_inner()).clone();
                            async move {
                                let response = http::Response::builder()
                                    .status(a.status)
                                    .header("content-type", a.content_type)
                                    .body(http_body_util::Full::new(bytes::Bytes::from(a.body)))
                                    .expect("response");
                                Ok::<_, std::convert::Infallible>(response)
                            }
                        });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                            .await;
                    });
                }
            });
        });
        BodyServer { url, answer }
    }

    /// Sets what every following request is answered.
    pub fn set(&self, answer: Answer) {
        *self.answer.lock().unwrap_or_else(|p| p.into_inner()) = answer;
    }
}
