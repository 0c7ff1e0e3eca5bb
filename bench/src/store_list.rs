//! `wg-bench store-list`: times [`Store::list_sessions`] itself (no HTTP, no JSON) for the
//! default live list at several page sizes, to tell the store's share of the API latency and
//! how it grows with the page.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use wg_store::{SessionFilter, Store};

use crate::latency::{ms, percentile};

/// Arguments of `wg-bench store-list`.
#[derive(Debug, clap::Args)]
pub(crate) struct StoreListArgs {
    /// Store URL: `sqlite://PATH` or `postgres://…`.
    #[arg(long)]
    db: String,
    /// Timed calls per page size.
    #[arg(long, default_value_t = 500)]
    requests: usize,
    /// Untimed calls per page size first.
    #[arg(long, default_value_t = 50)]
    warmup: usize,
    /// Page sizes (`SessionFilter::limit`).
    #[arg(long = "limit", default_values_t = [100u32, 1000])]
    limits: Vec<u32>,
    /// Label printed in the first column (e.g. the engine).
    #[arg(long, default_value = "-")]
    label: String,
}

pub(crate) async fn run(args: StoreListArgs) -> Result<()> {
    let store = Store::connect(&args.db)
        .await
        .with_context(|| format!("opening the store {}", args.db))?;
    for limit in &args.limits {
        let filter = SessionFilter {
            limit: Some(*limit),
            ..SessionFilter::default()
        };
        let mut samples: Vec<Duration> = Vec::with_capacity(args.requests);
        let mut rows = 0;
        for i in 0..args.warmup + args.requests {
            let start = Instant::now();
            let page = store.list_sessions(&filter).await?;
            let took = start.elapsed();
            rows = page.len();
            if i >= args.warmup {
                samples.push(took);
            }
        }
        samples.sort();
        println!(
            "{:<10} {:<28} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6}",
            args.label,
            format!("Store::list_sessions limit={limit}"),
            ms(percentile(&samples, 50.0)),
            ms(percentile(&samples, 90.0)),
            ms(percentile(&samples, 99.0)),
            ms(samples.last().copied().unwrap_or_default()),
            ms(samples.iter().sum::<Duration>() / u32::try_from(samples.len().max(1))?),
            rows
        );
    }
    store.close().await;
    Ok(())
}
