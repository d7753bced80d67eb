//! DELTA_BINARY_PACKED column chunks for integer columns (ids, event times, dates),
//! built here rather than by parquet-rs's Arrow writer, whose delta encoder packs
//! every value through a generic bit writer and whose statistics take a second pass.
//! One pass here finds a block's deltas, their minimum and the page's bounds; each
//! miniblock is then packed word by word.
//!
//! The pages are those parquet-rs writes for a column set to DELTA_BINARY_PACKED with
//! dictionary encoding off: blocks of 4 miniblocks of 64 values (INT64) or 32 (INT32),
//! deltas wrapping at the physical type's width, format v1 pages with RLE definition
//! levels, one DELTA_BINARY_PACKED stream per page.

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::buffer::BooleanBuffer;
use arrow::datatypes::{
    DataType, Date32Type, Int32Type, Int64Type, TimeUnit, TimestampMicrosecondType,
};
use parquet::basic::{Encoding, Type as PhysicalType};
use parquet::file::properties::WriterProperties;
use parquet::file::statistics::{Statistics, ValueStatistics};
use parquet::schema::types::ColumnDescPtr;

use super::chunk::{
    nulls_in_required, pack_bits, page_rows, page_spans, supported, validity, varint, ChunkWriter,
    EncodedChunk, Outcome, PageFacts,
};
use crate::error::Result;

/// Miniblocks per block.
const MINIBLOCKS: usize = 4;
/// Values per block at most (INT64's).
const MAX_BLOCK: usize = 64 * MINIBLOCKS;

/// The physical type's width, which sets the layout of its delta blocks as parquet-rs
/// writes them (miniblocks of as many values as the type has bits, which its reader
/// unpacks that many at a time) and where deltas wrap.
#[derive(Clone, Copy, PartialEq)]
enum Width {
    Int32,
    Int64,
}

impl Width {
    fn bits(self) -> usize {
        match self {
            Width::Int32 => 32,
            Width::Int64 => 64,
        }
    }

    fn miniblock(self) -> usize {
        self.bits()
    }

    /// `value - previous`, wrapping at the type's width.
    fn delta(self, value: i64, previous: i64) -> i64 {
        match self {
            Width::Int32 => i64::from((value as i32).wrapping_sub(previous as i32)),
            Width::Int64 => value.wrapping_sub(previous),
        }
    }

    /// `delta - min_delta` as the unsigned value packed.
    fn adjusted(self, delta: i64, min_delta: i64) -> u64 {
        match self {
            Width::Int32 => u64::from((delta as i32).wrapping_sub(min_delta as i32) as u32),
            Width::Int64 => delta.wrapping_sub(min_delta) as u64,
        }
    }

    /// A value as Parquet's PLAIN encoding of the type stores it (the column index's
    /// bounds).
    fn plain(self, v: i64) -> Vec<u8> {
        match self {
            Width::Int32 => (v as i32).to_le_bytes().to_vec(),
            Width::Int64 => v.to_le_bytes().to_vec(),
        }
    }
}

/// The width of the Arrow types [`encode`] takes.
fn arrow_width(data_type: &DataType) -> Option<Width> {
    match data_type {
        DataType::Int64 | DataType::Timestamp(TimeUnit::Microsecond, _) => Some(Width::Int64),
        DataType::Int32 | DataType::Date32 => Some(Width::Int32),
        _ => None,
    }
}

/// Whether [`encode`] may take a column of this Arrow type.
pub(crate) fn handles(data_type: &DataType) -> bool {
    arrow_width(data_type).is_some()
}

/// Encodes `arrays` (the column's values in row order, all of a type that
/// [`handles`]) as one DELTA_BINARY_PACKED column chunk of the leaf `descr`, when
/// `props` choose that encoding for it; otherwise the caller encodes them with the
/// Arrow writer.
pub(crate) fn encode(
    descr: &ColumnDescPtr,
    props: &WriterProperties,
    arrays: &[ArrayRef],
) -> Result<Outcome> {
    let path = descr.path();
    let width = match descr.physical_type() {
        PhysicalType::INT64 => Width::Int64,
        PhysicalType::INT32 => Width::Int32,
        _ => return Ok(Outcome::NotThisColumn),
    };
    if !supported(descr, props)
        || props.dictionary_enabled(path)
        || props.encoding(path) != Some(Encoding::DELTA_BINARY_PACKED)
    {
        return Ok(Outcome::NotThisColumn);
    }
    // The Arrow type's width must be the physical type's.
    if !arrays
        .iter()
        .all(|a| arrow_width(a.data_type()) == Some(width))
    {
        return Ok(Outcome::NotThisColumn);
    }
    if nulls_in_required(descr, arrays) {
        return Ok(Outcome::NotTheseValues);
    }
    let rows: usize = arrays.iter().map(|a| a.len()).sum();
    let validity = (descr.max_def_level() == 1).then(|| validity(arrays, rows));
    // The non-null values in row order.
    let mut values: Vec<i64> = Vec::with_capacity(rows);
    for array in arrays {
        let nulls = array.nulls().filter(|n| n.null_count() > 0);
        match array.data_type() {
            DataType::Int64 => non_null(
                array.as_primitive::<Int64Type>().values(),
                nulls,
                &mut values,
            ),
            DataType::Int32 => non_null(
                array.as_primitive::<Int32Type>().values(),
                nulls,
                &mut values,
            ),
            DataType::Date32 => non_null(
                array.as_primitive::<Date32Type>().values(),
                nulls,
                &mut values,
            ),
            _ => non_null(
                array.as_primitive::<TimestampMicrosecondType>().values(),
                nulls,
                &mut values,
            ),
        }
    }
    let rows_per_page = page_rows(props, descr, width.bits());
    write(
        ChunkWriter::new(descr, props),
        width,
        &values,
        validity.as_ref(),
        rows,
        rows_per_page,
    )
    .map(|c| Outcome::Built(Box::new(c)))
}

/// Appends the values of `raw` that `nulls` (if any) marks valid, widened to i64.
fn non_null<T: Copy + Into<i64>>(
    raw: &[T],
    nulls: Option<&arrow::buffer::NullBuffer>,
    out: &mut Vec<i64>,
) {
    match nulls {
        Some(nulls) => out.extend(nulls.valid_indices().map(|i| raw[i].into())),
        None => out.extend(raw.iter().map(|&v| v.into())),
    }
}

fn write(
    mut chunk: ChunkWriter,
    width: Width,
    values: &[i64],
    validity: Option<&BooleanBuffer>,
    rows: usize,
    rows_per_page: usize,
) -> Result<EncodedChunk> {
    let mut page_bounds: Vec<Option<(i64, i64)>> = Vec::new();
    for span in page_spans(rows, rows_per_page, validity) {
        let mut body = chunk.page_body(validity, &span, span.values.len() * 4);
        let bounds = delta_binary_packed(width, &values[span.values.clone()], &mut body);
        page_bounds.push(bounds);
        let facts = PageFacts {
            rows: span.rows,
            nulls: span.rows - span.values.len(),
            bounds: bounds.map(|(l, h)| (width.plain(l), width.plain(h))),
            unencoded_bytes: None,
        };
        chunk.data_page(body, Encoding::DELTA_BINARY_PACKED, facts)?;
    }
    let signed = chunk.signed_sort_order();
    chunk.finish(&page_bounds, |min, max, nulls| {
        if width == Width::Int32 {
            // The values came from i32s.
            let narrow = |v: i64| v as i32;
            Statistics::Int32(
                ValueStatistics::new(min.map(narrow), max.map(narrow), None, Some(nulls), false)
                    .with_backwards_compatible_min_max(signed),
            )
        } else {
            Statistics::Int64(
                ValueStatistics::new(min, max, None, Some(nulls), false)
                    .with_backwards_compatible_min_max(signed),
            )
        }
    })
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Appends `values` as one DELTA_BINARY_PACKED stream and returns their smallest and
/// largest (`None` when there are none).
fn delta_binary_packed(width: Width, values: &[i64], out: &mut Vec<u8>) -> Option<(i64, i64)> {
    let miniblock = width.miniblock();
    let block_size = miniblock * MINIBLOCKS;
    varint(block_size as u64, out);
    varint(MINIBLOCKS as u64, out);
    varint(values.len() as u64, out);
    let Some(&first) = values.first() else {
        varint(0, out);
        return None;
    };
    varint(zigzag(first), out);
    let (mut lo, mut hi) = (first, first);
    let mut previous = first;
    // A block's deltas, then what is packed of them: `delta - min_delta`, and zeros
    // after the last value (the last miniblock is padded to a full one).
    let mut deltas = [0i64; MAX_BLOCK];
    let mut packed = [0u64; MAX_BLOCK];
    for block in values[1..].chunks(block_size) {
        let n = block.len();
        let mut min_delta = i64::MAX;
        for (d, &v) in deltas.iter_mut().zip(block) {
            *d = width.delta(v, previous);
            previous = v;
            min_delta = min_delta.min(*d);
            lo = lo.min(v);
            hi = hi.max(v);
        }
        varint(zigzag(min_delta), out);
        for (p, &d) in packed.iter_mut().zip(&deltas[..n]) {
            *p = width.adjusted(d, min_delta);
        }
        packed[n..block_size].fill(0);
        // Miniblocks past the last value have no bits (their width is written as 0).
        let used = n.div_ceil(miniblock);
        let miniblocks = packed[..used * miniblock].chunks(miniblock);
        let mut widths = [0u8; MINIBLOCKS];
        for (w, values) in widths.iter_mut().zip(miniblocks.clone()) {
            *w = (64 - values.iter().fold(0u64, |acc, &a| acc | a).leading_zeros()) as u8;
        }
        out.extend_from_slice(&widths);
        for (&w, values) in widths.iter().zip(miniblocks) {
            pack_bits(values, u32::from(w), out);
        }
    }
    Some((lo, hi))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow::array::{Int64Array, RecordBatch};
    use parquet::basic::{Compression, ZstdLevel};
    use parquet::file::properties::WriterProperties;
    use parquet::schema::types::ColumnPath;

    use crate::write::chunk::testing;

    fn props(compression: Compression) -> WriterProperties {
        WriterProperties::builder()
            .set_compression(compression)
            .set_data_page_row_count_limit(1000)
            .set_write_batch_size(1000)
            .set_column_dictionary_enabled(ColumnPath::from("v"), false)
            .set_column_encoding(ColumnPath::from("v"), Encoding::DELTA_BINARY_PACKED)
            .build()
    }

    /// `values` as `data_type` in the batches of [`testing::batches`].
    fn batches(values: &[Option<i64>], data_type: &DataType, nullable: bool) -> Vec<RecordBatch> {
        let wide: ArrayRef = Arc::new(Int64Array::from(values.to_vec()));
        let typed = arrow::compute::cast(&wide, data_type).unwrap();
        assert_eq!(typed.null_count(), wide.null_count(), "values fit the type");
        testing::batches(&wide, "v", data_type, nullable)
    }

    /// The types covered, with values for each (32-bit types get the values cut to
    /// 32 bits, and their own extremes).
    fn typed_values(n: usize, nullable: bool) -> Vec<(DataType, Vec<Option<i64>>)> {
        let wide = values(n, nullable);
        let narrow: Vec<Option<i64>> = wide
            .iter()
            .enumerate()
            .map(|(i, v)| {
                v.map(|x| match i {
                    1700..1710 => i64::from(i32::MIN),
                    1710..1720 => i64::from(i32::MAX),
                    _ => i64::from(x as i32),
                })
            })
            .collect();
        vec![
            (DataType::Int64, wide.clone()),
            (
                DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
                wide,
            ),
            (DataType::Int32, narrow.clone()),
            (DataType::Date32, narrow),
        ]
    }

    fn assert_same_as_parquet_rs(batches: &[RecordBatch], compression: Compression) {
        testing::assert_same_as_parquet_rs(encode, props(compression), batches);
    }

    /// Values of every shape: sequential ids, jittered times, random 64-bit values
    /// (deltas that wrap), the extremes, runs of one value (width 0), nulls and an
    /// all-null page.
    fn values(n: usize, nullable: bool) -> Vec<Option<i64>> {
        let mut x = 0x2545_f491_4f6c_dd1du64;
        (0..n)
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                if nullable && (i % 11 == 4 || (3000..4000).contains(&i)) {
                    return None;
                }
                Some(match i {
                    0..1000 => i as i64 * 3 + 1_000_000,
                    1000..1500 => 1_700_000_000_000_000 + (x % 5000) as i64 + i as i64 * 1000,
                    1500..1700 => x as i64,
                    1700..1710 => i64::MIN,
                    1710..1720 => i64::MAX,
                    1720..2500 => 42,
                    _ => (x % 2_000_000) as i64 - 1_000_000,
                })
            })
            .collect()
    }

    #[test]
    fn chunks_match_parquet_rs() {
        for nullable in [true, false] {
            for (data_type, v) in typed_values(6000, nullable) {
                for compression in [
                    Compression::UNCOMPRESSED,
                    Compression::ZSTD(ZstdLevel::try_new(1).unwrap()),
                ] {
                    assert_same_as_parquet_rs(&batches(&v, &data_type, nullable), compression);
                }
            }
        }
        // Pages of a few values, and at block and miniblock edges of both layouts.
        for (data_type, v) in typed_values(6000, false) {
            for n in [1usize, 2, 33, 65, 129, 257, 1001] {
                assert_same_as_parquet_rs(
                    &batches(&v[..n], &data_type, false),
                    Compression::UNCOMPRESSED,
                );
            }
        }
    }

    #[test]
    fn columns_it_does_not_cover_are_declined() {
        let data = batches(&values(6000, true), &DataType::Int64, true);
        let plain = WriterProperties::builder()
            .set_column_dictionary_enabled(ColumnPath::from("v"), false)
            .build();
        assert!(matches!(
            testing::outcome(encode, plain, &data),
            Outcome::NotThisColumn
        ));
        let snappy = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_column_dictionary_enabled(ColumnPath::from("v"), false)
            .set_column_encoding(ColumnPath::from("v"), Encoding::DELTA_BINARY_PACKED)
            .build();
        assert!(matches!(
            testing::outcome(encode, snappy, &data),
            Outcome::NotThisColumn
        ));
    }
}
