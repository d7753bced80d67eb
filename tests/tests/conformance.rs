//! Conformance: every DAT case and every spark-tables table at every version, against
//! the expected rows in ../shared/conformance.

use std::path::Path;

use shoal_format::{Error, Table};
use shoal_tests::{
    canonical_rows, column_names, read_parquet, require_shared, s3_base, s3_uri, upload_dir,
};

/// Where the tables are read from: in place on local disk, or copied to the S3 gateway.
enum Location {
    Local,
    S3(String),
}

impl Location {
    async fn of(&self, table: &Path) -> String {
        match self {
            Location::Local => table.to_str().unwrap().to_string(),
            Location::S3(base) => {
                let name = table
                    .iter()
                    .rev()
                    .take(2)
                    .map(|p| p.to_string_lossy().to_string())
                    .collect::<Vec<_>>()
                    .join("-");
                let uri = s3_uri(base, &name);
                upload_dir(table, &uri).await;
                uri
            }
        }
    }
}

async fn scan(
    table: &str,
    version: Option<i64>,
) -> shoal_format::Result<Vec<arrow::array::RecordBatch>> {
    let t = Table::at(table)?;
    let snap = match version {
        Some(v) => t.snapshot_at(v).await?,
        None => t.snapshot().await?,
    };
    t.scan(snap).collect().await
}

/// Columns where delta-rs 1.6.6 returns wrong values, checked separately: in
/// `table_with_column_mapping` it returns nulls for `Super Name`, whose physical column
/// (`col-3877fd94-…`) holds names in every data file.
const DELTA_RS_WRONG: &[(&str, &str)] = &[("table_with_column_mapping", "Super Name")];

fn compare(ours: &[arrow::array::RecordBatch], expected: &[arrow::array::RecordBatch], what: &str) {
    let expected_rows: usize = expected.iter().map(|b| b.num_rows()).sum();
    let our_rows: usize = ours.iter().map(|b| b.num_rows()).sum();
    assert_eq!(our_rows, expected_rows, "{what}: row count");
    if expected_rows == 0 {
        return;
    }
    let mut cols = column_names(expected);
    cols.sort();
    for (table, col) in DELTA_RS_WRONG {
        if what.starts_with(&format!("{table}@")) {
            cols.retain(|c| c != col);
            let nulls: usize = ours
                .iter()
                .map(|b| b.column_by_name(col).expect("column").null_count())
                .sum();
            assert_eq!(
                nulls, 0,
                "{what}: `{col}` must be read from its physical column"
            );
        }
    }
    let a = canonical_rows(ours, &cols);
    let b = canonical_rows(expected, &cols);
    if a != b {
        let diff: Vec<_> = a.iter().zip(&b).filter(|(x, y)| x != y).take(3).collect();
        panic!("{what}: rows differ, first differences (ours, expected): {diff:#?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dat_cases_match_expected() {
    let Some(shared) = require_shared("DAT conformance") else {
        return;
    };
    dat_cases(&shared, Location::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dat_cases_match_expected_on_s3() {
    let Some(shared) = require_shared("DAT conformance on S3") else {
        return;
    };
    let Some(base) = s3_base("DAT conformance on S3") else {
        return;
    };
    dat_cases(&shared, Location::S3(base)).await;
}

async fn dat_cases(shared: &Path, location: Location) {
    let dat = shared.join("conformance/dat");
    let mut checked = 0;
    for case in std::fs::read_dir(&dat).unwrap().flatten() {
        let table = location.of(&case.path().join("delta")).await;
        let expected = case.path().join("expected");
        for v in std::fs::read_dir(&expected).unwrap().flatten() {
            let name = v.file_name().to_string_lossy().to_string();
            let version = if name == "latest" {
                None
            } else {
                Some(name.trim_start_matches('v').parse::<i64>().unwrap())
            };
            let what = format!("{}@{name}", case.file_name().to_string_lossy());
            let ours = scan(&table, version)
                .await
                .unwrap_or_else(|e| panic!("{what}: {e}"));
            let exp = read_parquet(&v.path().join("table_content.parquet"));
            compare(&ours, &exp, &what);
            // The version metadata must match too.
            let meta: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(v.path().join("table_version_metadata.json")).unwrap(),
            )
            .unwrap();
            let t = Table::at(&table).unwrap();
            let snap = match version {
                Some(v) => t.snapshot_at(v).await.unwrap(),
                None => t.snapshot().await.unwrap(),
            };
            assert_eq!(meta["version"].as_i64(), Some(snap.version()), "{what}");
            assert_eq!(
                meta["min_reader_version"].as_i64(),
                Some(snap.protocol().min_reader_version as i64),
                "{what}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 8, "checked only {checked} DAT versions");
    eprintln!("DAT: {checked} case versions match");
}

/// How a version of a spark table turned out.
#[derive(Debug)]
enum Outcome {
    Match,
    RefusedFeature(#[allow(dead_code)] String),
    Error(#[allow(dead_code)] String),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spark_tables_match_delta_rs_or_refuse_by_feature() {
    let Some(shared) = require_shared("spark-tables conformance") else {
        return;
    };
    spark_tables(&shared, Location::Local).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spark_tables_match_delta_rs_or_refuse_by_feature_on_s3() {
    let Some(shared) = require_shared("spark-tables conformance on S3") else {
        return;
    };
    let Some(base) = s3_base("spark-tables conformance on S3") else {
        return;
    };
    spark_tables(&shared, Location::S3(base)).await;
}

async fn spark_tables(shared: &Path, location: Location) {
    let root = shared.join("conformance");
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("expected/manifest.json")).unwrap(),
    )
    .unwrap();
    let mut report = Vec::new();
    let mut matched = 0;
    for (table, entry) in manifest.as_object().unwrap() {
        let path = location.of(&root.join("spark-tables").join(table)).await;
        let Some(versions) = entry.get("versions").and_then(|v| v.as_object()) else {
            // delta-rs could not open the table at all: we must refuse it too.
            let r = Table::at(&path).unwrap().snapshot().await;
            let err = r.expect_err(&format!("{table}: delta-rs refused it, we read it"));
            report.push(format!("{table}: refused ({err})"));
            continue;
        };
        let mut versions: Vec<(i64, &serde_json::Value)> = versions
            .iter()
            .map(|(k, v)| (k.parse().unwrap(), v))
            .collect();
        versions.sort_by_key(|(v, _)| *v);
        for (v, exp) in versions {
            let what = format!("{table}@v{v}");
            let ours = scan(&path, Some(v)).await;
            let outcome = match (exp.get("file").and_then(|f| f.as_str()), ours) {
                (Some(file), Ok(batches)) => {
                    let expected = read_parquet(&root.join("expected").join(file));
                    compare(&batches, &expected, &what);
                    matched += 1;
                    Outcome::Match
                }
                // Refusing by feature name is allowed; any other failure is a bug.
                (Some(_), Err(Error::UnsupportedFeature { feature, .. })) => {
                    Outcome::RefusedFeature(feature)
                }
                (Some(_), Err(e)) => panic!("{what}: delta-rs reads it, we fail: {e}"),
                (None, Ok(batches)) => {
                    let delta_rs = exp["error"].as_str().unwrap_or_default();
                    // We may only do better than delta-rs where it failed for a reason
                    // that is not about the data (and never where files are missing).
                    assert!(
                        !delta_rs.contains("not found"),
                        "{what}: delta-rs failed with `{delta_rs}` but we returned {} rows",
                        shoal_tests::num_rows(&batches)
                    );
                    Outcome::Match
                }
                (None, Err(e)) => match &e {
                    Error::UnsupportedFeature { feature, .. } => {
                        Outcome::RefusedFeature(feature.clone())
                    }
                    Error::UnsupportedProtocol(m) => Outcome::RefusedFeature(m.clone()),
                    other => Outcome::Error(other.to_string()),
                },
            };
            match outcome {
                Outcome::Match => {}
                other => report.push(format!("{what}: {other:?}")),
            }
        }
    }
    eprintln!("spark-tables: {matched} versions match delta-rs; not read:");
    for r in &report {
        eprintln!("  {r}");
    }
    assert!(matched > 50, "only {matched} versions matched");
}
