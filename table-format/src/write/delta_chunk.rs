//! DELTA_BINARY_PACKED column chunks for 64-bit integer columns (ids, event times),
//! built here rather than by parquet-rs's Arrow writer, whose delta encoder packs
//! every value through a generic bit writer and whose statistics take a second pass.
//! One pass here finds a block's deltas, their minimum and the page's bounds; each
//! miniblock of 32 values is then packed word by word.
//!
//! The pages are those parquet-rs writes for a column set to DELTA_BINARY_PACKED with
//! dictionary encoding off: blocks of 256 values in 4 miniblocks, format v1 pages with
//! RLE definition levels, one DELTA_BINARY_PACKED stream per page.

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::buffer::BooleanBuffer;
use arrow::datatypes::{DataType, Int64Type, TimeUnit, TimestampMicrosecondType};
use parquet::basic::{Encoding, Type as PhysicalType};
use parquet::file::properties::WriterProperties;
use parquet::file::statistics::{Statistics, ValueStatistics};
use parquet::schema::types::ColumnDescPtr;

use super::chunk::{
    nulls_in_required, page_rows, page_spans, supported, validity, varint, ChunkWriter,
    EncodedChunk, Outcome, PageFacts,
};
use crate::error::Result;

/// Values per block (as parquet-rs for INT64: miniblocks of 64 values, which its
/// reader unpacks 64 at a time).
const BLOCK: usize = 256;
/// Miniblocks per block.
const MINIBLOCKS: usize = 4;
/// Values per miniblock.
const MINIBLOCK: usize = BLOCK / MINIBLOCKS;

/// Whether [`encode`] may take a column of this Arrow type.
pub(crate) fn handles(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Int64 | DataType::Timestamp(TimeUnit::Microsecond, _)
    )
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
    if !supported(descr, props)
        || descr.physical_type() != PhysicalType::INT64
        || props.dictionary_enabled(path)
        || props.encoding(path) != Some(Encoding::DELTA_BINARY_PACKED)
    {
        return Ok(Outcome::NotThisColumn);
    }
    if nulls_in_required(descr, arrays) || !arrays.iter().all(|a| handles(a.data_type())) {
        return Ok(Outcome::NotTheseValues);
    }
    let rows: usize = arrays.iter().map(|a| a.len()).sum();
    let validity = (descr.max_def_level() == 1).then(|| validity(arrays, rows));
    // The non-null values in row order.
    let mut values: Vec<i64> = Vec::with_capacity(rows);
    for array in arrays {
        let raw: &[i64] = match array.data_type() {
            DataType::Int64 => array.as_primitive::<Int64Type>().values(),
            _ => array.as_primitive::<TimestampMicrosecondType>().values(),
        };
        match array.nulls().filter(|n| n.null_count() > 0) {
            Some(nulls) => values.extend(nulls.valid_indices().map(|i| raw[i])),
            None => values.extend_from_slice(raw),
        }
    }
    let rows_per_page = page_rows(props, descr, 64);
    write(
        ChunkWriter::new(descr, props),
        &values,
        validity.as_ref(),
        rows,
        rows_per_page,
    )
    .map(|c| Outcome::Built(Box::new(c)))
}

fn write(
    mut chunk: ChunkWriter,
    values: &[i64],
    validity: Option<&BooleanBuffer>,
    rows: usize,
    rows_per_page: usize,
) -> Result<EncodedChunk> {
    let mut page_bounds: Vec<Option<(i64, i64)>> = Vec::new();
    for span in page_spans(rows, rows_per_page, validity) {
        let mut body = chunk.page_body(validity, &span, span.values.len() * 4);
        let bounds = delta_binary_packed(&values[span.values.clone()], &mut body);
        page_bounds.push(bounds);
        let facts = PageFacts {
            rows: span.rows,
            nulls: span.rows - span.values.len(),
            bounds: bounds.map(|(l, h)| (l.to_le_bytes().to_vec(), h.to_le_bytes().to_vec())),
            unencoded_bytes: None,
        };
        chunk.data_page(body, Encoding::DELTA_BINARY_PACKED, facts)?;
    }
    let signed = chunk.signed_sort_order();
    chunk.finish(&page_bounds, |min, max, nulls| {
        Statistics::Int64(
            ValueStatistics::new(min, max, None, Some(nulls), false)
                .with_backwards_compatible_min_max(signed),
        )
    })
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

/// Appends `values` as one DELTA_BINARY_PACKED stream and returns their smallest and
/// largest (`None` when there are none).
fn delta_binary_packed(values: &[i64], out: &mut Vec<u8>) -> Option<(i64, i64)> {
    varint(BLOCK as u64, out);
    varint(MINIBLOCKS as u64, out);
    varint(values.len() as u64, out);
    let Some(&first) = values.first() else {
        varint(0, out);
        return None;
    };
    varint(zigzag(first), out);
    let (mut lo, mut hi) = (first, first);
    let mut previous = first;
    let mut deltas = [0i64; BLOCK];
    let mut packed = [0u64; MINIBLOCK];
    for block in values[1..].chunks(BLOCK) {
        let mut min_delta = i64::MAX;
        for (d, &v) in deltas.iter_mut().zip(block) {
            *d = v.wrapping_sub(previous);
            previous = v;
            min_delta = min_delta.min(*d);
            lo = lo.min(v);
            hi = hi.max(v);
        }
        varint(zigzag(min_delta), out);
        let n = block.len();
        let mut widths = [0u8; MINIBLOCKS];
        let mut adjusted = [0u64; BLOCK];
        for (a, &d) in adjusted.iter_mut().zip(&deltas[..n]) {
            *a = d.wrapping_sub(min_delta) as u64;
        }
        for (m, width) in widths.iter_mut().enumerate() {
            let start = m * MINIBLOCK;
            if start >= n {
                break;
            }
            let end = (start + MINIBLOCK).min(n);
            let any = adjusted[start..end].iter().fold(0u64, |acc, &a| acc | a);
            *width = (64 - any.leading_zeros()) as u8;
        }
        out.extend_from_slice(&widths);
        for (m, &width) in widths.iter().enumerate() {
            let start = m * MINIBLOCK;
            if start >= n {
                break;
            }
            // The last miniblock is padded with zeros to a full one.
            let mut miniblock = [0u64; MINIBLOCK];
            let end = (start + MINIBLOCK).min(n);
            miniblock[..end - start].copy_from_slice(&adjusted[start..end]);
            pack_miniblock(&miniblock, u32::from(width), &mut packed, out);
        }
    }
    Some((lo, hi))
}

/// Appends 64 values of `width` bits each, least significant bit first (`words` is
/// scratch space).
fn pack_miniblock(
    values: &[u64; MINIBLOCK],
    width: u32,
    words: &mut [u64; MINIBLOCK],
    out: &mut Vec<u8>,
) {
    if width == 0 {
        return;
    }
    // 64 values of `width` bits are `width` words of 64 bits.
    let used = width as usize;
    words[..used].fill(0);
    let mut bit = 0u32;
    for &v in values {
        let word = (bit / 64) as usize;
        let shift = bit % 64;
        words[word] |= v << shift;
        if shift + width > 64 {
            words[word + 1] |= v >> (64 - shift);
        }
        bit += width;
    }
    for w in &words[..used] {
        out.extend_from_slice(&w.to_le_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow::array::{Int64Array, RecordBatch, TimestampMicrosecondArray};
    use arrow::datatypes::{Field, Schema};
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

    /// Batches of 2000, 3000 and 1000 rows (pages fall on batch edges for parquet-rs
    /// too).
    fn batches(values: &[Option<i64>], timestamps: bool, nullable: bool) -> Vec<RecordBatch> {
        let data_type = if timestamps {
            DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
        } else {
            DataType::Int64
        };
        let schema = Arc::new(Schema::new(vec![Field::new("v", data_type, nullable)]));
        let mut out = Vec::new();
        let mut start = 0;
        for len in [2000, 3000, 1000] {
            let len = len.min(values.len() - start);
            let part = values[start..start + len].to_vec();
            let array: ArrayRef = if timestamps {
                Arc::new(TimestampMicrosecondArray::from(part).with_timezone("UTC"))
            } else {
                Arc::new(Int64Array::from(part))
            };
            out.push(RecordBatch::try_new(schema.clone(), vec![array]).unwrap());
            start += len;
        }
        out
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
            let v = values(6000, nullable);
            for timestamps in [false, true] {
                for compression in [
                    Compression::UNCOMPRESSED,
                    Compression::ZSTD(ZstdLevel::try_new(1).unwrap()),
                ] {
                    assert_same_as_parquet_rs(&batches(&v, timestamps, nullable), compression);
                }
            }
        }
        // Pages of 1, 2, 65, 257 and 1001 values (block and miniblock edges).
        for n in [1usize, 2, 65, 257, 1001] {
            let v = values(6000, false);
            let schema = Arc::new(Schema::new(vec![Field::new("v", DataType::Int64, false)]));
            let array = Arc::new(Int64Array::from(v[..n].to_vec()));
            let batch = RecordBatch::try_new(schema, vec![array]).unwrap();
            assert_same_as_parquet_rs(&[batch], Compression::UNCOMPRESSED);
        }
    }

    #[test]
    fn columns_it_does_not_cover_are_declined() {
        let data = batches(&values(6000, true), false, true);
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
