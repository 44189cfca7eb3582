//! HTTP load for the benchmarks: clients in a loop against the head-end's API and pages, each with
//! its own URL and token, and the latencies they saw.

use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// A pooled HTTP/1 client.
pub type Http = Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

/// A client keeping up to `idle` connections per host.
pub fn client(idle: usize) -> Http {
    Client::builder(TokioExecutor::new()).pool_max_idle_per_host(idle).build_http()
}

/// Latencies of one measurement.
pub struct Run {
    pub name: &'static str,
    pub latencies: Vec<Duration>,
    /// Failed requests: no answer, a status other than 2xx, or an empty body.
    pub errors: usize,
    /// Answers by status code (no answer: 0).
    pub statuses: std::collections::BTreeMap<u16, usize>,
    pub seconds: f64,
}

impl Run {
    pub fn new(name: &'static str) -> Run {
        Run { name, latencies: Vec::new(), errors: 0, statuses: Default::default(), seconds: 0.0 }
    }

    /// The q-quantile of the latencies, in milliseconds.
    pub fn quantile(&self, q: f64) -> f64 {
        let mut v: Vec<f64> = self.latencies.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
        v.sort_by(f64::total_cmp);
        if v.is_empty() {
            return f64::NAN;
        }
        v[((v.len() - 1) as f64 * q).round() as usize]
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "requests": self.latencies.len(),
            "errors": self.errors,
            "statuses": self.statuses.iter().map(|(s, n)| (s.to_string(), serde_json::json!(n))).collect::<serde_json::Map<_, _>>(),
            "requests_per_s": (self.latencies.len() as f64 / self.seconds).round(),
            "p50_ms": (self.quantile(0.50) * 10.0).round() / 10.0,
            "p90_ms": (self.quantile(0.90) * 10.0).round() / 10.0,
            "p99_ms": (self.quantile(0.99) * 10.0).round() / 10.0,
            "max_ms": (self.quantile(1.0) * 10.0).round() / 10.0,
        })
    }
}

/// `clients` tasks, client k asking for `targets[k mod len]` (URL, bearer token) in a loop until
/// `done()` says so, waiting `think` between its requests (zero: a closed loop, the server's
/// capacity).
pub async fn load(
    http: &Http,
    name: &'static str,
    targets: Arc<Vec<(String, String)>>,
    clients: usize,
    think: Duration,
    done: impl Fn() -> bool + Clone + Send + 'static,
) -> anyhow::Result<Run> {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for k in 0..clients {
        let (http, targets, done) = (http.clone(), targets.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let (url, token) = &targets[k % targets.len()];
            let mut run = Run::new(name);
            // Paced clients start spread over one think time, as people do.
            if !think.is_zero() {
                tokio::time::sleep(think.mul_f64(k as f64 / clients as f64)).await;
            }
            while !done() {
                let req = hyper::Request::get(url.as_str())
                    .header("authorization", format!("Bearer {token}"))
                    .body(Empty::<Bytes>::new())?;
                let t = Instant::now();
                match http.request(req).await {
                    Ok(resp) => {
                        let status = resp.status();
                        let body = resp.into_body().collect().await.map(|b| b.to_bytes().len()).unwrap_or(0);
                        run.latencies.push(t.elapsed());
                        *run.statuses.entry(status.as_u16()).or_default() += 1;
                        if !status.is_success() || body == 0 {
                            run.errors += 1;
                        }
                    }
                    Err(_) => {
                        run.errors += 1;
                        *run.statuses.entry(0).or_default() += 1;
                    }
                }
                if !think.is_zero() {
                    tokio::time::sleep(think).await;
                }
            }
            anyhow::Ok(run)
        }));
    }
    let mut run = Run::new(name);
    for t in tasks {
        let r = t.await??;
        run.latencies.extend(r.latencies);
        run.errors += r.errors;
        for (s, n) in r.statuses {
            *run.statuses.entry(s).or_default() += n;
        }
    }
    run.seconds = start.elapsed().as_secs_f64();
    eprintln!("bench: {name}: {}", run.json());
    Ok(run)
}

/// A `done` for [`load`]: true once `seconds` have passed.
pub fn for_seconds(seconds: f64) -> impl Fn() -> bool + Clone + Send + 'static {
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    move || Instant::now() >= deadline
}
