use std::collections::HashMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Date32Array, Float64Array, Int32Array, Int64Array, RecordBatch, StringArray,
    StructArray, TimestampMicrosecondArray,
};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{DataType as ArrowType, Schema};

use super::*;
use crate::expr::bind::bind_predicate;
use crate::expr::eval::evaluate_predicate;
use crate::expr::parse::parse_predicate;
use crate::protocol::partition::partition_array;
use crate::protocol::stats::StatsCollector;
use crate::protocol::{StructField, StructType};

fn schema() -> StructType {
    StructType::new(vec![
        StructField::new("i", DataType::Long, true),
        StructField::new("n", DataType::Integer, true),
        StructField::new("s", DataType::String, true),
        StructField::new("d", DataType::Date, true),
        StructField::new("t", DataType::Timestamp, true),
        StructField::new("x", DataType::Double, true),
        StructField::new("amount", DataType::Decimal(10, 2), true),
        StructField::new(
            "st",
            DataType::Struct(Box::new(StructType::new(vec![StructField::new(
                "v",
                DataType::Integer,
                true,
            )]))),
            true,
        ),
        StructField::new("p", DataType::Integer, true),
    ])
}

fn partition_columns() -> Vec<String> {
    vec!["p".to_string()]
}

fn bound(text: &str) -> BoundExpr {
    bind_predicate(&parse_predicate(text).unwrap(), &schema())
        .unwrap_or_else(|e| panic!("{text}: {e}"))
}

fn keeps(text: &str, stats: &str, p: Option<&str>) -> bool {
    let stats = FileStats::from_json(stats).unwrap();
    let pv = HashMap::from([("p".to_string(), p.map(str::to_string))]);
    may_match(&bound(text), Some(&stats), &pv, &partition_columns())
}

const STATS: &str = r#"{"numRecords":10,
    "minValues":{"i":1,"n":-5,"s":"b","d":"2024-01-01","t":"2024-01-01T00:00:00.000Z",
                 "x":-0.0,"amount":1.1,"st":{"v":3}},
    "maxValues":{"i":10,"n":5,"s":"c","d":"2024-01-31","t":"2024-01-02T00:00:00.000Z",
                 "x":2.5,"amount":9.99,"st":{"v":7}},
    "nullCount":{"i":0,"n":10,"s":2,"d":0,"t":0,"x":0,"amount":0,"st":{"v":1}}}"#;

#[test]
fn stats_parse_with_nesting() {
    let s = FileStats::from_json(STATS).unwrap();
    assert_eq!(s.num_records(), Some(10));
    let path = |p: &[&str]| p.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert_eq!(s.null_count(&path(&["st", "v"])), Some(1));
    assert_eq!(s.min_value(&path(&["st", "v"])), Some(&Value::from(3)));
    assert_eq!(s.min_value(&path(&["st"])), None);
    assert_eq!(s.max_value(&path(&["nope"])), None);
    assert!(FileStats::from_json("{not json").is_err());
    assert_eq!(FileStats::from_json("{}").unwrap().num_records(), None);
}

#[test]
fn ranges_prune_comparisons() {
    let k = |t: &str| keeps(t, STATS, Some("1"));
    assert!(k("i = 5"));
    assert!(!k("i = 11"));
    assert!(!k("i > 10"));
    assert!(k("i >= 10"));
    assert!(!k("i < 1"));
    assert!(k("i <= 1"));
    assert!(!k("0 > i"), "literal on the left");
    assert!(k("i != 5"));
    assert!(!k("NOT (i < 20)"));
    assert!(k("NOT (i < 5)"));
    assert!(!k("i > 10 OR i < 0"));
    assert!(k("i > 10 OR i < 2"));
    assert!(!k("i > 5 AND i < 3 + 0") || k("i > 5 AND i < 3 + 0"));
    assert!(!k("i > 5 AND i > 11"));
    assert!(!k("i BETWEEN 11 AND 20"));
    assert!(k("i NOT BETWEEN 2 AND 9"));
    assert!(!k("i NOT BETWEEN 0 AND 11"));
    assert!(!k("st.v > 7"));
    assert!(k("st.v = 7"));
    assert!(!k("d < '2024-01-01'"));
    assert!(k("d = DATE '2024-01-31'"));
    assert!(
        !k("d > TIMESTAMP '2024-01-31 00:00:00'"),
        "date widened to timestamp"
    );
    assert!(k("d >= TIMESTAMP '2024-01-31 00:00:00'"));
    assert!(!k("amount > 10"));
    assert!(k("amount = 1.10"), "decimal bound from a JSON float");
    assert!(!k("amount < 1"));
    assert!(
        k("x > 2.5"),
        "float maxima are not trusted: NaN sorts above them"
    );
    assert!(k("x <= -0.0"));
    assert!(k("x = 0.0"), "-0.0 bound covers 0.0");
    assert!(k("i < st.v"), "column against column is unknown");
    assert!(!k("i < n"), "... unless one side is all null");
}

#[test]
fn nulls_prune_by_counts() {
    let k = |t: &str| keeps(t, STATS, Some("1"));
    assert!(!k("n = 1"), "n is null in every row");
    assert!(!k("NOT (n = 1)"));
    assert!(!k("n IN (1, 2)"));
    assert!(!k("n + 1 > 0"), "arithmetic on an all-null column is null");
    assert!(k("n IS NULL"));
    assert!(!k("n IS NOT NULL"));
    assert!(!k("i IS NULL"));
    assert!(k("i IS NOT NULL"));
    assert!(k("s IS NULL"));
    assert!(!k("i = NULL"));
    assert!(!k("NOT (i = NULL)"));
    assert!(k("coalesce(n, 1) = 1"));
    assert!(!k("i IN (NULL)"));
    assert!(
        !k("i NOT IN (5, NULL)"),
        "NOT IN with a NULL item is never TRUE"
    );
    assert!(!keeps("i = 1", r#"{"numRecords":0}"#, None), "empty file");
}

#[test]
fn in_lists_and_like() {
    let k = |t: &str| keeps(t, STATS, Some("1"));
    assert!(k("i IN (0, 5)"));
    assert!(!k("i IN (0, 11, 12)"));
    assert!(k("i NOT IN (1, 2)"));
    let single = r#"{"numRecords":3,"minValues":{"i":4},"maxValues":{"i":4},"nullCount":{"i":0}}"#;
    assert!(!keeps("i NOT IN (3, 4)", single, None));
    assert!(!keeps("i != 4", single, None));
    assert!(keeps("i != 5", single, None));
    assert!(!k("s LIKE 'a%'"));
    assert!(k("s LIKE 'b%'"));
    assert!(k("s LIKE 'c%'"));
    assert!(k("s LIKE 'c'"));
    assert!(!k("s LIKE 'd%'"));
    assert!(!k("s LIKE 'ca_'"), "'ca' > max 'c'");
    assert!(k("s LIKE '%z'"), "no prefix");
    assert!(k("s NOT LIKE 'b%'"));
    assert!(!k("NOT (s NOT LIKE 'a%')"));
}

#[test]
fn truncated_bounds_stay_conservative() {
    // Timestamp stats truncated to milliseconds.
    let stats = r#"{"numRecords":1,"minValues":{"t":"2024-01-01T00:00:00.000Z"},
        "maxValues":{"t":"2024-01-01T00:00:00.000Z"},"nullCount":{"t":0}}"#;
    assert!(keeps("t = '2024-01-01 00:00:00.000500'", stats, None));
    assert!(keeps("t > '2024-01-01 00:00:00.000999'", stats, None));
    assert!(!keeps("t > '2024-01-01 00:00:00.001'", stats, None));
    assert!(!keeps("t < '2023-12-31 23:59:59.999'", stats, None));
    // A 32-character string maximum may be a prefix of the real maximum.
    let long = "a".repeat(32);
    let stats = format!(
        r#"{{"numRecords":1,"minValues":{{"s":"{long}"}},"maxValues":{{"s":"{long}"}},
            "nullCount":{{"s":0}}}}"#
    );
    assert!(keeps(&format!("s > '{long}'"), &stats, None));
    assert!(
        !keeps(&format!("s < '{long}'"), &stats, None),
        "min stays a lower bound"
    );
    // Missing or partial stats keep the file.
    assert!(keeps("i = 100", r#"{"numRecords":5}"#, None));
    let pv = HashMap::new();
    assert!(may_match(&bound("i = 100"), None, &pv, &[]));
}

#[test]
fn partitions_are_evaluated_exactly() {
    let k = |t: &str, p: Option<&str>| keeps(t, STATS, p);
    assert!(k("p = 1", Some("1")));
    assert!(!k("p = 1", Some("2")));
    assert!(!k("p = 1", None), "null partition");
    assert!(k("p IS NULL", None));
    assert!(!k("p IS NULL", Some("1")));
    assert!(!k("p + 1 = 3", Some("1")));
    assert!(k("p + 1 = 3", Some("2")));
    assert!(!k("p = 2 OR i > 100", Some("1")));
    assert!(k("p = 2 OR i > 5", Some("1")));
    assert!(!k("NOT (p = 1 OR p IS NULL)", Some("1")));
    assert!(k("NOT (p = 1 OR p IS NULL)", Some("3")));
    assert!(!k("1 = 2", Some("1")), "constant false");
    assert!(k("p = i", Some("1")), "partition against data column");
    // A partition value that is missing from the map is unknown.
    let stats = FileStats::from_json(STATS).unwrap();
    assert!(may_match(
        &bound("p = 5"),
        Some(&stats),
        &HashMap::new(),
        &partition_columns()
    ));
}

#[test]
fn add_actions_with_unreadable_stats_are_kept() {
    let add = Add {
        path: "f.parquet".into(),
        partition_values: HashMap::from([("p".to_string(), Some("1".to_string()))]),
        size: 1,
        modification_time: 0,
        data_change: true,
        stats: Some("{broken".into()),
        tags: None,
        deletion_vector: None,
        base_row_id: None,
        default_row_commit_version: None,
        clustering_provider: None,
    };
    assert!(may_match_file(
        &bound("i = 100"),
        &add,
        &partition_columns()
    ));
    assert!(!may_match_file(&bound("p = 2"), &add, &partition_columns()));
}

/// SplitMix64: a tiny deterministic generator for the property test.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }

    fn chance(&mut self, p: f64) -> bool {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 > 1.0 - p
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

const BASE_DAY: i64 = 19_723;
const BASE_MICROS: i64 = 1_704_067_200_000_000;

fn random_string(rng: &mut Rng) -> String {
    if rng.chance(0.1) {
        // Longer than the 32-character statistics prefix.
        let c = *rng.pick(&["a", "b", "bb"]);
        return format!("{}{}", c.repeat(33), rng.pick(&["", "a", "z"]));
    }
    let len = rng.below(4);
    (0..len).map(|_| *rng.pick(&['a', 'b', 'c', 'é'])).collect()
}

fn random_double(rng: &mut Rng) -> f64 {
    *rng.pick(&[-1.5, -0.0, 0.0, 0.5, 1.0, 2.5, f64::NAN, 3.25, -7.0])
}

fn column<T>(
    rng: &mut Rng,
    rows: usize,
    null_rate: f64,
    mut f: impl FnMut(&mut Rng) -> T,
) -> Vec<Option<T>> {
    (0..rows)
        .map(|_| (!rng.chance(null_rate)).then(|| f(rng)))
        .collect()
}

/// A random file: its data batch (no partition column), the full batch and the
/// partition value.
fn random_file(rng: &mut Rng) -> (RecordBatch, RecordBatch, Option<String>) {
    let rows = rng.below(9);
    let mut null_rate = || *rng.pick(&[0.0, 0.0, 0.3, 1.0]);
    let rates: Vec<f64> = (0..8).map(|_| null_rate()).collect();
    let full_schema = schema().to_arrow().unwrap();
    let data_fields: Vec<_> = full_schema.fields()[..8].to_vec();
    let data_schema = Arc::new(Schema::new(data_fields));
    let ints = column(rng, rows, rates[0], |r| r.range(-10, 10));
    let small = column(rng, rows, rates[1], |r| r.range(-5, 5) as i32);
    let strings = column(rng, rows, rates[2], random_string);
    let days = column(rng, rows, rates[3], |r| (BASE_DAY + r.range(-5, 5)) as i32);
    let micros = column(rng, rows, rates[4], |r| {
        BASE_MICROS + r.range(-20, 20) * 250
    });
    let doubles = column(rng, rows, rates[5], random_double);
    let cents = column(rng, rows, rates[6], |r| i128::from(r.range(-500, 500)));
    let inner = column(rng, rows, rates[7], |r| r.range(-3, 3) as i32);
    let struct_nulls: Vec<bool> = (0..rows).map(|_| !rng.chance(0.15)).collect();
    let struct_fields = match data_schema.field(7).data_type() {
        ArrowType::Struct(f) => f.clone(),
        _ => unreachable!(),
    };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(Int64Array::from(ints)),
        Arc::new(Int32Array::from(small)),
        Arc::new(StringArray::from(strings)),
        Arc::new(Date32Array::from(days)),
        Arc::new(TimestampMicrosecondArray::from(micros).with_timezone("UTC")),
        Arc::new(Float64Array::from(doubles)),
        Arc::new(
            arrow::array::Decimal128Array::from(cents)
                .with_precision_and_scale(10, 2)
                .unwrap(),
        ),
        Arc::new(StructArray::new(
            struct_fields,
            vec![Arc::new(Int32Array::from(inner))],
            Some(NullBuffer::from(struct_nulls)),
        )),
    ];
    let data = RecordBatch::try_new(data_schema, columns.clone()).unwrap();
    let p = match rng.below(4) {
        0 => None,
        v => Some(v.to_string()),
    };
    let part = partition_array("p", p.as_deref(), &DataType::Integer, rows).unwrap();
    let mut all = columns;
    all.push(part);
    let full = RecordBatch::try_new(Arc::new(full_schema), all).unwrap();
    (data, full, p)
}

fn timestamp_literal(rng: &mut Rng) -> String {
    let us = BASE_MICROS + rng.range(-24, 24) * 250;
    let text = chrono::DateTime::from_timestamp_micros(us)
        .unwrap()
        .format("%Y-%m-%d %H:%M:%S%.6f")
        .to_string();
    if rng.chance(0.5) {
        format!("TIMESTAMP '{text}'")
    } else {
        format!("'{text}'")
    }
}

fn date_literal(rng: &mut Rng) -> String {
    let text = crate::protocol::partition::format_date((BASE_DAY + rng.range(-7, 7)) as i32);
    if rng.chance(0.5) {
        format!("DATE '{text}'")
    } else {
        format!("'{text}'")
    }
}

fn literal_for(rng: &mut Rng, col: &str) -> String {
    if rng.chance(0.03) {
        return "NULL".into();
    }
    match col {
        "i" | "st.v" | "p" => match rng.below(10) {
            0 => "10000000000".into(),
            1 => format!("{}.5", rng.range(-4, 4)),
            _ => rng.range(-12, 12).to_string(),
        },
        "n" => match rng.below(6) {
            0 => "-10000000000".into(),
            1 => format!("{}.25", rng.range(-6, 6)),
            _ => rng.range(-7, 7).to_string(),
        },
        "s" => format!("'{}'", random_string(rng)),
        "d" => {
            if rng.chance(0.2) {
                timestamp_literal(rng)
            } else {
                date_literal(rng)
            }
        }
        "t" => {
            if rng.chance(0.2) {
                date_literal(rng)
            } else {
                timestamp_literal(rng)
            }
        }
        "x" => rng
            .pick(&[
                "1.5",
                "-0.0",
                "0.0",
                "0",
                "2.5",
                "1e0",
                "-7",
                "CAST('NaN' AS DOUBLE)",
                "3.25",
            ])
            .to_string(),
        _ => rng
            .pick(&["1.10", "-2.5", "0", "3", "4.999", "-5.00"])
            .to_string(),
    }
}

const COLUMNS: [&str; 9] = ["i", "n", "s", "d", "t", "x", "amount", "st.v", "p"];

fn random_leaf(rng: &mut Rng) -> String {
    let col = *rng.pick(&COLUMNS);
    let op = *rng.pick(&["=", "!=", "<", "<=", ">", ">="]);
    match rng.below(12) {
        0 => format!("{col} IS NULL"),
        1 => format!("{col} IS NOT NULL"),
        2 | 3 => {
            let items: Vec<String> = (0..1 + rng.below(3))
                .map(|_| literal_for(rng, col))
                .collect();
            let not = if rng.chance(0.3) { "NOT " } else { "" };
            format!("{col} {not}IN ({})", items.join(", "))
        }
        4 => {
            let (a, b) = (literal_for(rng, col), literal_for(rng, col));
            let not = if rng.chance(0.3) { "NOT " } else { "" };
            format!("{col} {not}BETWEEN {a} AND {b}")
        }
        5 => {
            let prefix = random_string(rng);
            let tail = *rng.pick(&["%", "_%", "", "%b"]);
            let not = if rng.chance(0.3) { "NOT " } else { "" };
            format!("s {not}LIKE '{prefix}{tail}'")
        }
        6 => format!("{} {op} {col}", literal_for(rng, col)),
        7 => match rng.below(3) {
            0 => format!("i {op} n"),
            1 => format!("i + {} {op} {}", rng.range(-3, 3), rng.range(-10, 10)),
            _ => format!(
                "coalesce(n, {}) {op} {}",
                rng.range(-3, 3),
                rng.range(-5, 5)
            ),
        },
        _ => format!("{col} {op} {}", literal_for(rng, col)),
    }
}

fn random_predicate(rng: &mut Rng, depth: u32) -> String {
    if depth == 0 || rng.chance(0.4) {
        return random_leaf(rng);
    }
    match rng.below(3) {
        0 => format!(
            "({} AND {})",
            random_predicate(rng, depth - 1),
            random_predicate(rng, depth - 1)
        ),
        1 => format!(
            "({} OR {})",
            random_predicate(rng, depth - 1),
            random_predicate(rng, depth - 1)
        ),
        _ => format!("NOT ({})", random_predicate(rng, depth - 1)),
    }
}

/// The batch as a table (time zones dropped: Arrow cannot print "UTC" without chrono-tz).
fn show(batch: &RecordBatch) -> String {
    let columns: Vec<ArrayRef> = batch
        .columns()
        .iter()
        .map(|c| match c.data_type() {
            ArrowType::Timestamp(unit, Some(_)) => crate::protocol::schema::retag_timestamp(
                c.clone(),
                &ArrowType::Timestamp(*unit, None),
            ),
            _ => c.clone(),
        })
        .collect();
    let fields: Vec<_> = batch
        .schema()
        .fields()
        .iter()
        .zip(&columns)
        .map(|(f, c)| arrow::datatypes::Field::new(f.name(), c.data_type().clone(), true))
        .collect();
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .and_then(|b| arrow::util::pretty::pretty_format_batches(&[b]))
        .map(|t| t.to_string())
        .unwrap_or_else(|e| format!("{e}"))
}

/// Pruning never drops a file that has a matching row.
#[test]
fn skipping_never_drops_a_matching_row() {
    let mut rng = Rng(0x005E_ED0F_5107);
    let table = schema();
    let (mut skipped, mut iterations) = (0, 0);
    for _ in 0..4000 {
        let (data, full, p) = random_file(&mut rng);
        let mut collector = StatsCollector::new(data.schema_ref(), 32);
        collector.update(&data);
        let stats_json = collector.to_json();
        let stats = FileStats::from_json(&stats_json).unwrap();
        let pv = HashMap::from([("p".to_string(), p.clone())]);
        for _ in 0..5 {
            let text = random_predicate(&mut rng, 3);
            let predicate = match bind_predicate(&parse_predicate(&text).unwrap(), &table) {
                Ok(b) => b,
                Err(e) => panic!("{text}: {e}"),
            };
            iterations += 1;
            if may_match(&predicate, Some(&stats), &pv, &partition_columns()) {
                continue;
            }
            skipped += 1;
            let result =
                evaluate_predicate(&predicate, &full).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(
                result.true_count(),
                0,
                "skipped a file with matching rows\npredicate: {text}\nbound: {predicate}\n\
                 stats: {stats_json}\npartition p: {p:?}\nresult: {result:?}\nrows: {}",
                show(&full)
            );
        }
    }
    // The test means something only if pruning happens often.
    assert!(
        skipped * 5 > iterations,
        "only {skipped} of {iterations} predicates pruned"
    );
}
