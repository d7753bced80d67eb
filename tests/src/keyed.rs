//! A keyed table for process-level tests: rows `(id, p, v)` partitioned by `p`, and an
//! in-memory model of them (`id -> (p, v)`) that the table must equal.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{Array, Int64Array, RecordBatch, StringArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Schema};
use shoal_format::Table;

/// `id -> (p, v)`.
pub type Model = BTreeMap<i64, (String, i64)>;
/// One row `(id, p, v)`.
pub type Row = (i64, String, i64);

/// The partition of an id: `a` for even, `b` for odd.
pub fn part(id: i64) -> String {
    if id % 2 == 0 { "a" } else { "b" }.to_string()
}

pub fn batch(rows: &[Row]) -> RecordBatch {
    RecordBatch::try_new(
        Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("p", DataType::Utf8, true),
            Field::new("v", DataType::Int64, true),
        ])),
        vec![
            Arc::new(Int64Array::from(
                rows.iter().map(|r| r.0).collect::<Vec<_>>(),
            )),
            Arc::new(StringArray::from(
                rows.iter().map(|r| r.1.clone()).collect::<Vec<_>>(),
            )),
            Arc::new(Int64Array::from(
                rows.iter().map(|r| r.2).collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap()
}

/// The rows of batches, by column name (any column order), sorted.
pub fn rows_of(batches: &[RecordBatch]) -> Vec<Row> {
    let mut out = Vec::new();
    for b in batches {
        let col = |name: &str, ty: &DataType| {
            let c = b.column(b.schema().index_of(name).unwrap()).clone();
            cast(&c, ty).unwrap()
        };
        let id = col("id", &DataType::Int64);
        let p = col("p", &DataType::Utf8);
        let v = col("v", &DataType::Int64);
        let id = id.as_any().downcast_ref::<Int64Array>().unwrap();
        let p = p.as_any().downcast_ref::<StringArray>().unwrap();
        let v = v.as_any().downcast_ref::<Int64Array>().unwrap();
        for i in 0..b.num_rows() {
            out.push((id.value(i), p.value(i).to_string(), v.value(i)));
        }
    }
    out.sort();
    out
}

pub fn model_rows(m: &Model) -> Vec<Row> {
    m.iter().map(|(id, (p, v))| (*id, p.clone(), *v)).collect()
}

/// The table's rows at `version` (the latest when `None`), sorted.
pub async fn rows_at(t: &Table, version: Option<i64>) -> Vec<Row> {
    let snap = match version {
        Some(v) => t.snapshot_at(v).await.unwrap(),
        None => t.snapshot().await.unwrap(),
    };
    rows_of(&t.scan(snap).collect().await.unwrap())
}

/// Appends `n` new ids from `next_id` (partitioned by `p`); returns the version.
pub async fn append(t: &Table, model: &mut Model, next_id: &mut i64, n: i64) -> i64 {
    let rows: Vec<Row> = (*next_id..*next_id + n)
        .map(|id| (id, part(id), id * 10))
        .collect();
    *next_id += n;
    let r = t
        .write(vec![batch(&rows)])
        .with_partition_by(&["p"])
        .execute()
        .await
        .unwrap();
    for (id, p, v) in rows {
        model.insert(id, (p, v));
    }
    r.version
}

/// A table of `commits` appends of `rows` rows each (one small file per partition per
/// commit); returns its model.
pub async fn small_files_table(uri: &str, commits: usize, rows: i64) -> Model {
    let t = Table::at(uri).unwrap();
    let mut model = Model::new();
    let mut next_id = 0;
    for _ in 0..commits {
        append(&t, &mut model, &mut next_id, rows).await;
    }
    model
}

pub async fn file_count(t: &Table) -> usize {
    t.snapshot().await.unwrap().num_files()
}
