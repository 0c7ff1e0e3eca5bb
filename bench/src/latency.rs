//! `wg-bench latency`: sequential `GET /api/v1/sessions` requests over one keep-alive
//! connection, timed from sending the request to having read the whole body.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Arguments of `wg-bench latency`.
#[derive(Debug, clap::Args)]
pub(crate) struct LatencyArgs {
    /// Base URL of the API, e.g. `http://127.0.0.1:8080`.
    #[arg(long)]
    api: String,
    /// File holding the bearer token (e.g. the data dir's `admin.token`).
    #[arg(long)]
    token_file: PathBuf,
    /// Timed requests per case.
    #[arg(long, default_value_t = 500)]
    requests: usize,
    /// Untimed requests per case before the timed ones.
    #[arg(long, default_value_t = 50)]
    warmup: usize,
    /// Label printed in the first column (e.g. the engine).
    #[arg(long, default_value = "-")]
    label: String,
    /// A case: `NAME|QUERY`, QUERY being the query string without `?` (may be empty).
    #[arg(long = "case", required = true)]
    cases: Vec<String>,
    /// Print the header line first.
    #[arg(long)]
    header: bool,
}

/// Nearest-rank percentile of sorted samples.
pub(crate) fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub(crate) fn ms(d: Duration) -> String {
    format!("{:.2}", d.as_secs_f64() * 1e3)
}

pub(crate) async fn run(args: LatencyArgs) -> Result<()> {
    let token = std::fs::read_to_string(&args.token_file)
        .with_context(|| format!("reading {}", args.token_file.display()))?;
    let token = token.trim();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(1)
        .build()
        .context("building the HTTP client")?;
    if args.header {
        println!(
            "{:<10} {:<28} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6} {:>9}",
            "engine", "case", "p50_ms", "p90_ms", "p99_ms", "max_ms", "mean_ms", "rows", "bytes"
        );
    }
    for case in &args.cases {
        let (name, query) = case.split_once('|').unwrap_or((case.as_str(), ""));
        let url = if query.is_empty() {
            format!("{}/api/v1/sessions", args.api)
        } else {
            format!("{}/api/v1/sessions?{query}", args.api)
        };
        let mut samples = Vec::with_capacity(args.requests);
        let mut rows = 0;
        let mut bytes = 0;
        for i in 0..args.warmup + args.requests {
            let start = Instant::now();
            let resp = client
                .get(&url)
                .bearer_auth(token)
                .send()
                .await
                .with_context(|| format!("GET {url}"))?;
            let status = resp.status();
            let body = resp.bytes().await.with_context(|| format!("GET {url}"))?;
            let took = start.elapsed();
            if !status.is_success() {
                bail!(
                    "GET {url}: HTTP {status}: {}",
                    String::from_utf8_lossy(&body)
                );
            }
            if i == 0 {
                let v: serde_json::Value =
                    serde_json::from_slice(&body).context("decoding the session list")?;
                rows = v["sessions"].as_array().map_or(0, Vec::len);
                bytes = body.len();
            }
            if i >= args.warmup {
                samples.push(took);
            }
        }
        samples.sort();
        let mean = samples.iter().sum::<Duration>() / u32::try_from(samples.len().max(1))?;
        println!(
            "{:<10} {:<28} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6} {:>9}",
            args.label,
            name,
            ms(percentile(&samples, 50.0)),
            ms(percentile(&samples, 90.0)),
            ms(percentile(&samples, 99.0)),
            ms(samples.last().copied().unwrap_or_default()),
            ms(mean),
            rows,
            bytes
        );
    }
    Ok(())
}
