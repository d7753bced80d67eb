//! Load generator for shoal-server: N clients append fixed-size batches (Arrow IPC or
//! NDJSON) for a duration, then one client scans the table; prints requests/s, rows/s,
//! p50/p99 latency, commits made and scan MB/s.
//!
//! ```sh
//! cargo build --release -p shoal-server -p shoal-tests --bin shoal-server --bin loadgen
//! target/release/shoal-server --warehouse /tmp/wh &
//! target/release/loadgen --clients 32 --rows 1000 --seconds 10 --format arrow
//! ```

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use arrow::array::{Float64Array, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use clap::{Parser, ValueEnum};
use serde_json::{json, Value};

#[derive(Clone, Copy, ValueEnum, PartialEq)]
enum Format {
    Arrow,
    Ndjson,
}

#[derive(Parser)]
#[command(name = "loadgen", about = "Load generator for shoal-server")]
struct Args {
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    url: String,
    #[arg(long, default_value = "loadgen")]
    table: String,
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Rows per append request.
    #[arg(long, default_value_t = 1000)]
    rows: usize,
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    #[arg(long, value_enum, default_value = "arrow")]
    format: Format,
    /// Bearer token, when the server has tokens configured.
    #[arg(long)]
    token: Option<String>,
    /// Skip the scan at the end.
    #[arg(long)]
    no_scan: bool,
}

fn batch(client: usize, rows: usize) -> RecordBatch {
    let schema = Arc::new(Schema::new(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("user", DataType::Utf8, true),
        Field::new("amount", DataType::Float64, true),
        Field::new("country", DataType::Utf8, true),
        Field::new(
            "ts",
            DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into())),
            true,
        ),
    ]));
    let base = (client * rows) as i64;
    let ids = Int64Array::from_iter_values(base..base + rows as i64);
    let users: StringArray = (0..rows)
        .map(|i| Some(format!("user-{}", (i * 7919) % 10_000)))
        .collect();
    let amounts = Float64Array::from_iter_values((0..rows).map(|i| (i % 1000) as f64 * 1.25));
    let countries: StringArray = (0..rows)
        .map(|i| Some(["NL", "US", "DE", "FR", "JP"][i % 5]))
        .collect();
    let ts = TimestampMicrosecondArray::from_iter_values(
        (0..rows).map(|i| 1_700_000_000_000_000 + i as i64 * 1_000_000),
    )
    .with_timezone("+00:00");
    RecordBatch::try_new(
        schema,
        vec![
            Arc::new(ids),
            Arc::new(users),
            Arc::new(amounts),
            Arc::new(countries),
            Arc::new(ts),
        ],
    )
    .expect("batch")
}

fn body(format: Format, b: &RecordBatch) -> Result<Vec<u8>> {
    Ok(match format {
        Format::Arrow => {
            let mut w = arrow::ipc::writer::StreamWriter::try_new(Vec::new(), &b.schema())?;
            w.write(b)?;
            w.finish()?;
            w.into_inner()?
        }
        Format::Ndjson => {
            let mut out = Vec::new();
            let mut w = arrow::json::WriterBuilder::new()
                .with_timestamp_tz_format("%Y-%m-%dT%H:%M:%S%.fZ".into())
                .build::<_, arrow::json::writer::LineDelimited>(&mut out);
            w.write(b)?;
            w.finish()?;
            drop(w);
            out
        }
    })
}

fn auth(rb: reqwest::RequestBuilder, token: &Option<String>) -> reqwest::RequestBuilder {
    match token {
        Some(t) => rb.bearer_auth(t),
        None => rb,
    }
}

async fn commits(client: &reqwest::Client, url: &str) -> Result<u64> {
    let text = client
        .get(format!("{url}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    Ok(text
        .lines()
        .find_map(|l| l.strip_prefix("shoal_commits_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0))
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> Result<()> {
    shoal_format::tune_allocator();
    let args = Args::parse();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients * 2)
        .build()?;
    let url = args.url.trim_end_matches('/').to_string();
    let table_url = format!("{url}/v1/tables/{}", args.table);
    let r = auth(client.put(&table_url), &args.token)
        .json(&json!({"schema": "id long not null, user string, amount double, country string, ts timestamp"}))
        .send()
        .await
        .context("is shoal-server running?")?;
    if !(r.status().is_success() || r.status() == reqwest::StatusCode::CONFLICT) {
        bail!("create failed: {} {}", r.status(), r.text().await?);
    }
    let commits_before = commits(&client, &url).await?;
    let content_type = match args.format {
        Format::Arrow => "application/vnd.apache.arrow.stream",
        Format::Ndjson => "application/x-ndjson",
    };
    let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..args.clients {
        let payload = bytes::Bytes::from(body(args.format, &batch(c, args.rows))?);
        let client = client.clone();
        let append = format!("{table_url}/append");
        let token = args.token.clone();
        let rows = args.rows;
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut failures = 0usize;
            let mut acked_rows = 0usize;
            while Instant::now() < deadline {
                let t = Instant::now();
                let r = auth(client.post(&append), &token)
                    .header("content-type", content_type)
                    .body(payload.clone())
                    .send()
                    .await;
                match r {
                    Ok(r) if r.status().is_success() => {
                        let _ = r.bytes().await;
                        latencies.push(t.elapsed());
                        acked_rows += rows;
                    }
                    Ok(r) => {
                        failures += 1;
                        if failures < 3 {
                            eprintln!(
                                "append failed: {} {}",
                                r.status(),
                                r.text().await.unwrap_or_default()
                            );
                        }
                    }
                    Err(e) => {
                        failures += 1;
                        if failures < 3 {
                            eprintln!("append failed: {e}");
                        }
                    }
                }
            }
            (latencies, failures, acked_rows)
        }));
    }
    let mut latencies = Vec::new();
    let (mut failures, mut rows) = (0usize, 0usize);
    for t in tasks {
        let (l, f, r) = t.await?;
        latencies.extend(l);
        failures += f;
        rows += r;
    }
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort();
    let commits_made = commits(&client, &url).await? - commits_before;
    let format = match args.format {
        Format::Arrow => "arrow",
        Format::Ndjson => "ndjson",
    };
    let summary: Value = json!({
        "format": format,
        "clients": args.clients,
        "rows_per_request": args.rows,
        "seconds": (elapsed * 100.0).round() / 100.0,
        "requests": latencies.len(),
        "failures": failures,
        "requests_per_s": (latencies.len() as f64 / elapsed).round(),
        "rows_per_s": (rows as f64 / elapsed).round(),
        "p50_ms": (pct(&latencies, 0.50) * 10.0).round() / 10.0,
        "p99_ms": (pct(&latencies, 0.99) * 10.0).round() / 10.0,
        "commits": commits_made,
        "requests_per_commit": ((latencies.len() as f64 / commits_made.max(1) as f64) * 10.0).round() / 10.0,
    });
    println!("{summary}");
    if !args.no_scan {
        let t = Instant::now();
        let mut r = auth(client.get(format!("{table_url}/scan")), &args.token)
            .header("accept", "application/vnd.apache.arrow.stream")
            .send()
            .await?;
        if !r.status().is_success() {
            bail!("scan failed: {}", r.status());
        }
        let mut bytes = 0usize;
        while let Some(chunk) = r.chunk().await? {
            bytes += chunk.len();
        }
        let secs = t.elapsed().as_secs_f64();
        println!(
            "{}",
            json!({
                "scan_bytes": bytes,
                "scan_seconds": (secs * 1000.0).round() / 1000.0,
                "scan_mb_per_s": ((bytes as f64 / 1e6 / secs) * 10.0).round() / 10.0,
            })
        );
    }
    Ok(())
}
