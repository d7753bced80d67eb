//! Prometheus text metrics, kept by hand: requests by route and status, latency
//! histograms, commits, group-commit sizes, rows and bytes in and out.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];
const GROUP_BUCKETS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// A histogram with fixed bucket bounds.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    counts: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, v: f64) {
        if let Some(i) = self.bounds.iter().position(|b| v <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_micros
            .fetch_add((v * 1e6).max(0.0) as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let sep = if labels.is_empty() { "" } else { "," };
        let mut cumulative = 0;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cumulative += c.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"{b}\"}} {cumulative}");
        }
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}{sep}le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let braces = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{labels}}}")
        };
        let _ = writeln!(out, "{name}_sum{braces} {sum}");
        let _ = writeln!(out, "{name}_count{braces} {count}");
    }
}

/// The server's metrics.
#[derive(Debug)]
pub struct Metrics {
    requests: Mutex<BTreeMap<(String, String, u16), u64>>,
    latency: Mutex<BTreeMap<String, std::sync::Arc<Histogram>>>,
    pub commits: AtomicU64,
    pub group_sizes: Histogram,
    pub group_rows: AtomicU64,
    pub replays: AtomicU64,
    pub rows_in: AtomicU64,
    pub rows_out: AtomicU64,
    pub bytes_in: AtomicU64,
    pub bytes_out: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            requests: Mutex::new(BTreeMap::new()),
            latency: Mutex::new(BTreeMap::new()),
            commits: AtomicU64::new(0),
            group_sizes: Histogram::new(&GROUP_BUCKETS),
            group_rows: AtomicU64::new(0),
            replays: AtomicU64::new(0),
            rows_in: AtomicU64::new(0),
            rows_out: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
        }
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    pub fn request(&self, route: &str, method: &str, status: u16, elapsed: Duration) {
        if let Ok(mut m) = self.requests.lock() {
            *m.entry((route.to_string(), method.to_string(), status))
                .or_insert(0) += 1;
        }
        let h = match self.latency.lock() {
            Ok(mut m) => m
                .entry(route.to_string())
                .or_insert_with(|| std::sync::Arc::new(Histogram::new(&LATENCY_BUCKETS)))
                .clone(),
            Err(_) => return,
        };
        h.observe(elapsed.as_secs_f64());
    }

    /// One group commit of `requests` requests and `rows` rows.
    pub fn group_commit(&self, requests: usize, rows: usize) {
        Self::add(&self.commits, 1);
        Self::add(&self.group_rows, rows as u64);
        self.group_sizes.observe(requests as f64);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        out.push_str("# HELP shoal_http_requests_total HTTP requests by route, method and status.\n# TYPE shoal_http_requests_total counter\n");
        if let Ok(m) = self.requests.lock() {
            for ((route, method, status), n) in m.iter() {
                let _ = writeln!(
                    out,
                    "shoal_http_requests_total{{route=\"{}\",method=\"{method}\",status=\"{status}\"}} {n}",
                    escape(route)
                );
            }
        }
        out.push_str("# HELP shoal_http_request_duration_seconds Time to the response head, by route.\n# TYPE shoal_http_request_duration_seconds histogram\n");
        let hists: Vec<(String, std::sync::Arc<Histogram>)> = match self.latency.lock() {
            Ok(m) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            Err(_) => Vec::new(),
        };
        for (route, h) in hists {
            h.render(
                &mut out,
                "shoal_http_request_duration_seconds",
                &format!("route=\"{}\"", escape(&route)),
            );
        }
        let counters: [(&str, &str, &AtomicU64); 7] = [
            (
                "shoal_commits_total",
                "Commits made by group commit.",
                &self.commits,
            ),
            (
                "shoal_group_commit_rows_total",
                "Rows committed by group commit.",
                &self.group_rows,
            ),
            (
                "shoal_append_replays_total",
                "Append requests answered as replays (app_id/app_version already committed).",
                &self.replays,
            ),
            (
                "shoal_rows_in_total",
                "Rows received in write requests.",
                &self.rows_in,
            ),
            (
                "shoal_rows_out_total",
                "Rows streamed by scans.",
                &self.rows_out,
            ),
            (
                "shoal_bytes_in_total",
                "Request body bytes received.",
                &self.bytes_in,
            ),
            (
                "shoal_bytes_out_total",
                "Response body bytes sent (scans streamed included).",
                &self.bytes_out,
            ),
        ];
        for (name, help, c) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                c.load(Ordering::Relaxed)
            );
        }
        out.push_str("# HELP shoal_group_commit_requests Requests per group commit.\n# TYPE shoal_group_commit_requests histogram\n");
        self.group_sizes
            .render(&mut out, "shoal_group_commit_requests", "");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders() {
        let m = Metrics::default();
        m.request(
            "/v1/tables/{name}/append",
            "POST",
            200,
            Duration::from_millis(3),
        );
        m.group_commit(5, 5000);
        let text = m.render();
        assert!(text.contains(
            "shoal_http_requests_total{route=\"/v1/tables/{name}/append\",method=\"POST\",status=\"200\"} 1"
        ));
        assert!(text.contains("shoal_group_commit_requests_bucket{le=\"8\"} 1"));
        assert!(text.contains("shoal_commits_total 1"));
    }
}
