//! Dictionary-encoded column chunks for string and binary columns, built here rather
//! than by parquet-rs's Arrow writer.
//!
//! The Arrow writer interns every value of a dictionary-encoded byte array column
//! (hash the bytes, probe, compare) and compares every value twice more for the page's
//! minimum and maximum. For the short, repeated strings of a low-cardinality column
//! (countries, event types, statuses) that per-row work was a fifth of a MERGE's CPU.
//! Here a value of up to 15 bytes is looked up as one 128-bit word (its bytes and its
//! length), and a page's minimum and maximum are found among the page's distinct
//! dictionary entries rather than among its rows.
//!
//! The chunk is the one parquet-rs writes for the same column: a PLAIN dictionary page
//! then RLE_DICTIONARY data pages (Parquet format v1 pages, RLE definition levels),
//! compressed with the column's codec, with the chunk statistics, page encoding stats,
//! definition level histogram, column index and offset index. [`encode`] declines
//! (returns `None`) whatever it does not cover, and the caller falls back to the Arrow
//! writer: format v2 pages, codecs other than zstd, bloom filters, page header
//! statistics, values longer than the statistics truncation length, dictionaries
//! over the page size limit, chunks without a non-null value.

use std::collections::HashMap;

use arrow::array::{Array, ArrayRef, AsArray, BooleanBufferBuilder, GenericByteArray};
use arrow::buffer::BooleanBuffer;
use arrow::datatypes::{ArrowNativeType, ByteArrayType, DataType};
use bytes::Bytes;
use parquet::basic::{BoundaryOrder, Compression, Encoding, EncodingMask, PageType};
use parquet::column::page::{CompressedPage, Page, PageWriter};
use parquet::column::writer::ColumnCloseResult;
use parquet::data_type::ByteArray;
use parquet::errors::ParquetError;
use parquet::file::metadata::{
    ColumnChunkMetaData, ColumnIndexBuilder, LevelHistogram, OffsetIndexBuilder, PageEncodingStats,
};
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};
use parquet::file::statistics::{Statistics, ValueStatistics};
use parquet::file::writer::{SerializedPageWriter, TrackedWrite};
use parquet::schema::types::ColumnDescPtr;

use crate::error::Result;

/// An encoded column chunk: its bytes (the dictionary page at offset 0) and what the
/// row group writer needs to append it.
pub(crate) struct EncodedChunk {
    pub data: Bytes,
    pub close: ColumnCloseResult,
}

/// Whether [`encode`] may take a column of this Arrow type.
pub(crate) fn handles(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Binary | DataType::LargeBinary
    )
}

/// Encodes `arrays` (the column's values in row order, all of one type that
/// [`handles`]) as one dictionary-encoded column chunk of the leaf `descr`, under
/// `props`. `None` when this column or these values are not covered: the caller
/// encodes them with the Arrow writer instead.
pub(crate) fn encode(
    descr: &ColumnDescPtr,
    props: &WriterProperties,
    arrays: &[ArrayRef],
) -> Result<Option<EncodedChunk>> {
    let path = descr.path();
    let compression = props.compression(path);
    if !matches!(
        compression,
        Compression::UNCOMPRESSED | Compression::ZSTD(_)
    ) {
        return Ok(None);
    }
    let statistics = props.statistics_enabled(path);
    let truncation = [
        props.statistics_truncate_length(),
        props.column_index_truncate_length(),
    ]
    .into_iter()
    .flatten()
    .min()
    .unwrap_or(usize::MAX);
    if descr.max_rep_level() != 0
        || descr.max_def_level() > 1
        || props.writer_version() != WriterVersion::PARQUET_1_0
        || !props.dictionary_enabled(path)
        || props.bloom_filter_properties(path).is_some()
        || props.write_page_header_statistics(path)
    {
        return Ok(None);
    }
    let limit = Limits {
        dictionary_bytes: props.column_dictionary_page_size_limit(path),
        longest_value: truncation,
    };
    let mut dictionary = Dictionary::default();
    let mut indices = Vec::new();
    for array in arrays {
        let complete = match array.data_type() {
            DataType::Utf8 => dictionary.add(array.as_string::<i32>(), &mut indices, &limit),
            DataType::LargeUtf8 => dictionary.add(array.as_string::<i64>(), &mut indices, &limit),
            DataType::Binary => dictionary.add(array.as_binary::<i32>(), &mut indices, &limit),
            DataType::LargeBinary => dictionary.add(array.as_binary::<i64>(), &mut indices, &limit),
            _ => false,
        };
        if !complete {
            return Ok(None);
        }
    }
    // Nulls in a required column are the Arrow writer's to refuse.
    let nulls_in_required = descr.max_def_level() == 0 && arrays.iter().any(|a| a.null_count() > 0);
    if dictionary.entries.is_empty() || nulls_in_required {
        return Ok(None);
    }
    let rows: usize = arrays.iter().map(|a| a.len()).sum();
    let validity = (descr.max_def_level() == 1).then(|| validity(arrays, rows));
    let chunk = Chunk {
        descr,
        statistics,
        compression,
        rows_per_page: page_rows(props, descr, dictionary.bit_width()),
    };
    chunk
        .write(&dictionary, &indices, validity.as_ref(), rows)
        .map(Some)
}

/// What makes [`Dictionary::add`] give up.
struct Limits {
    /// The dictionary page's PLAIN size.
    dictionary_bytes: usize,
    /// Longer values would need truncated statistics.
    longest_value: usize,
}

/// Slots of [`Dictionary::recent`].
const RECENT_SLOTS: usize = 256;

/// No key of [`short_key`] has all bits set (its top byte is a length below 16).
const NO_KEY: u128 = u128::MAX;

/// The distinct values of a column chunk, in order of first appearance.
struct Dictionary<'a> {
    entries: Vec<&'a [u8]>,
    /// Values of up to 15 bytes, keyed by [`short_key`].
    short: HashMap<u128, u32, ahash::RandomState>,
    /// A direct-mapped cache in front of `short`, slot chosen by [`recent_slot`]: the
    /// few values of a low-cardinality column are found without hashing and probing.
    recent: Box<[(u128, u32); RECENT_SLOTS]>,
    long: HashMap<&'a [u8], u32, ahash::RandomState>,
    /// The dictionary page's size so far (a length prefix and the bytes per entry).
    plain_bytes: usize,
}

/// A value of up to 15 bytes as one word: its bytes (little-endian, zero-padded) with
/// its length in the top byte, so that values differing only in trailing zero bytes
/// stay apart.
#[inline]
fn short_key(values: &[u8], start: usize, len: usize) -> u128 {
    debug_assert!(len < 16);
    let word = match values.get(start..start + 16) {
        Some(bytes) => {
            let mut word = [0u8; 16];
            word.copy_from_slice(bytes);
            u128::from_le_bytes(word)
        }
        None => {
            // The last values of the buffer: copy what is there.
            let mut word = [0u8; 16];
            word[..len].copy_from_slice(&values[start..start + len]);
            u128::from_le_bytes(word)
        }
    };
    let mask = (1u128 << (8 * len)) - 1;
    (word & mask) | ((len as u128) << 120)
}

impl Default for Dictionary<'_> {
    fn default() -> Self {
        Dictionary {
            entries: Vec::new(),
            short: HashMap::default(),
            recent: Box::new([(NO_KEY, 0); RECENT_SLOTS]),
            long: HashMap::default(),
            plain_bytes: 0,
        }
    }
}

/// The slot of `key` in [`Dictionary::recent`]: a multiplicative hash of its two
/// halves.
#[inline]
fn recent_slot(key: u128) -> usize {
    let folded = (key as u64) ^ ((key >> 64) as u64).rotate_left(29);
    (folded.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 56) as usize
}

impl<'a> Dictionary<'a> {
    /// Adds the values of `array` (the dictionary index of each non-null one to
    /// `indices`). False when a limit is passed.
    fn add<T: ByteArrayType>(
        &mut self,
        array: &'a GenericByteArray<T>,
        indices: &mut Vec<u32>,
        limit: &Limits,
    ) -> bool {
        let offsets = array.value_offsets();
        let values: &'a [u8] = array.values().as_slice();
        indices.reserve(array.len() - array.null_count());
        let nulls = array.nulls().filter(|n| n.null_count() > 0);
        for row in 0..array.len() {
            if nulls.is_some_and(|n| n.is_null(row)) {
                continue;
            }
            let start = offsets[row].as_usize();
            let len = offsets[row + 1].as_usize() - start;
            let index = if len < 16 {
                let key = short_key(values, start, len);
                let slot = recent_slot(key);
                match self.recent[slot] {
                    (k, i) if k == key => i,
                    _ => {
                        let i = match self.short.get(&key) {
                            Some(&i) => i,
                            None => {
                                let Some(i) = self.insert(&values[start..start + len], limit)
                                else {
                                    return false;
                                };
                                self.short.insert(key, i);
                                i
                            }
                        };
                        self.recent[slot] = (key, i);
                        i
                    }
                }
            } else {
                let value = &values[start..start + len];
                match self.long.get(value) {
                    Some(&i) => i,
                    None => {
                        let Some(i) = self.insert(value, limit) else {
                            return false;
                        };
                        self.long.insert(value, i);
                        i
                    }
                }
            };
            indices.push(index);
        }
        true
    }

    /// A new entry's index, or `None` past a limit.
    fn insert(&mut self, value: &'a [u8], limit: &Limits) -> Option<u32> {
        self.plain_bytes += 4 + value.len();
        if value.len() > limit.longest_value || self.plain_bytes > limit.dictionary_bytes {
            return None;
        }
        let index = u32::try_from(self.entries.len()).ok()?;
        self.entries.push(value);
        Some(index)
    }

    /// Bits per index in the data pages (as parquet-rs: 0 for a single entry).
    fn bit_width(&self) -> u8 {
        let largest = self.entries.len().saturating_sub(1) as u64;
        (64 - largest.leading_zeros()) as u8
    }

    /// The PLAIN dictionary page: each value's length (u32, little-endian) then its
    /// bytes.
    fn plain(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.plain_bytes);
        for value in &self.entries {
            out.extend_from_slice(&(value.len() as u32).to_le_bytes());
            out.extend_from_slice(value);
        }
        out
    }
}

/// The validity of `rows` rows across `arrays`.
fn validity(arrays: &[ArrayRef], rows: usize) -> BooleanBuffer {
    let mut builder = BooleanBufferBuilder::new(rows);
    for array in arrays {
        match array.nulls() {
            Some(nulls) => builder.append_buffer(nulls.inner()),
            None => builder.append_n(array.len(), true),
        }
    }
    builder.finish()
}

/// Rows per data page: the row count limit, and the page size limit at this index
/// width.
fn page_rows(props: &WriterProperties, descr: &ColumnDescPtr, bit_width: u8) -> usize {
    let path = descr.path();
    let by_size = props.column_data_page_size_limit(path) * 8 / usize::from(bit_width.max(1));
    props
        .column_data_page_row_count_limit(path)
        .min(by_size)
        .max(1)
}

/// The pages and metadata of one chunk.
struct Chunk<'d> {
    descr: &'d ColumnDescPtr,
    statistics: EnabledStatistics,
    /// UNCOMPRESSED or ZSTD.
    compression: Compression,
    rows_per_page: usize,
}

/// A page's (or the chunk's) smallest and largest value.
type Bounds<'a> = Option<(&'a [u8], &'a [u8])>;

fn widen<'a>(bounds: Bounds<'a>, other: Bounds<'a>) -> Bounds<'a> {
    match (bounds, other) {
        (Some((lo, hi)), Some((l, h))) => Some((lo.min(l), hi.max(h))),
        (a, b) => a.or(b),
    }
}

impl Chunk<'_> {
    fn write(
        &self,
        dictionary: &Dictionary<'_>,
        indices: &[u32],
        validity: Option<&BooleanBuffer>,
        rows: usize,
    ) -> Result<EncodedChunk> {
        let mut sink = TrackedWrite::new(Vec::new());
        let mut compressor = None;
        let mut pages = SerializedPageWriter::new(&mut sink);
        let plain = dictionary.plain();
        let dictionary_page = Page::DictionaryPage {
            buf: self.compress(plain, &mut compressor)?,
            num_values: dictionary.entries.len() as u32,
            encoding: Encoding::PLAIN,
            is_sorted: false,
        };
        let uncompressed = dictionary.plain_bytes;
        let spec = pages.write_page(CompressedPage::new(dictionary_page, uncompressed))?;
        let mut total_compressed = spec.compressed_size as i64;
        let mut total_uncompressed = spec.uncompressed_size as i64;

        let bit_width = dictionary.bit_width();
        let lengths: Vec<i64> = dictionary.entries.iter().map(|v| v.len() as i64).collect();
        // The page each entry was last seen in, to list a page's distinct entries.
        let mut seen = vec![usize::MAX; dictionary.entries.len()];
        let mut distinct = Vec::new();
        let mut column_index = (self.statistics == EnabledStatistics::Page)
            .then(|| ColumnIndexBuilder::new(self.descr.physical_type()));
        let mut offset_index = OffsetIndexBuilder::new();
        let mut page_bounds: Vec<Bounds<'_>> = Vec::new();
        let mut chunk_bounds: Bounds<'_> = None;
        let mut nulls = 0i64;
        let mut unencoded = 0i64;
        let mut data_pages = 0;
        let mut data_page_offset = None;
        let mut buf = Vec::new();
        let mut levels = Vec::new();
        let mut next = 0;
        for (page, first) in (0..rows).step_by(self.rows_per_page).enumerate() {
            let page_rows = self.rows_per_page.min(rows - first);
            let valid = match validity {
                Some(v) => v.slice(first, page_rows).count_set_bits(),
                None => page_rows,
            };
            let page_indices = &indices[next..next + valid];
            next += valid;

            distinct.clear();
            let mut page_bytes = 0i64;
            for &i in page_indices {
                let i = i as usize;
                page_bytes += lengths[i];
                if seen[i] != page {
                    seen[i] = page;
                    distinct.push(i);
                }
            }
            let bounds = distinct.iter().fold(None, |acc, &i| {
                let v = dictionary.entries[i];
                widen(acc, Some((v, v)))
            });
            chunk_bounds = widen(chunk_bounds, bounds);
            page_bounds.push(bounds);
            let page_nulls = (page_rows - valid) as i64;
            nulls += page_nulls;
            unencoded += page_bytes;

            buf.clear();
            if let Some(validity) = validity {
                levels.clear();
                if valid == page_rows {
                    rle_run(page_rows, 1, 1, &mut levels);
                } else {
                    let bits: Vec<u32> = validity
                        .slice(first, page_rows)
                        .iter()
                        .map(u32::from)
                        .collect();
                    rle_hybrid(&bits, 1, &mut levels);
                }
                buf.extend_from_slice(&(levels.len() as u32).to_le_bytes());
                buf.extend_from_slice(&levels);
            }
            buf.push(bit_width);
            rle_hybrid(page_indices, bit_width, &mut buf);
            let uncompressed = buf.len();
            let data_page = Page::DataPage {
                buf: self.compress(std::mem::take(&mut buf), &mut compressor)?,
                num_values: page_rows as u32,
                encoding: Encoding::RLE_DICTIONARY,
                def_level_encoding: Encoding::RLE,
                rep_level_encoding: Encoding::RLE,
                statistics: None,
            };
            let spec = pages.write_page(CompressedPage::new(data_page, uncompressed))?;
            data_page_offset.get_or_insert(spec.offset as i64);
            data_pages += 1;
            total_compressed += spec.compressed_size as i64;
            total_uncompressed += spec.uncompressed_size as i64;
            offset_index.append_offset_and_size(spec.offset as i64, spec.compressed_size as i32);
            offset_index.append_row_count(page_rows as i64);
            offset_index.append_unencoded_byte_array_data_bytes(Some(page_bytes));
            if let Some(index) = column_index.as_mut() {
                let (min, max) = bounds.map_or((vec![], vec![]), |(l, h)| (l.to_vec(), h.to_vec()));
                index.append(bounds.is_none(), min, max, page_nulls, None);
                let histogram =
                    validity.map(|_| LevelHistogram::from(vec![page_nulls, valid as i64]));
                index.append_histograms(&None, &histogram);
            }
        }
        pages.close()?;

        if let Some(index) = column_index.as_mut() {
            index.set_boundary_order(boundary_order(&page_bounds));
        }
        let mut builder = ColumnChunkMetaData::builder(self.descr.clone())
            .set_compression(self.compression)
            .set_encodings_mask(EncodingMask::new_from_encodings(
                [Encoding::PLAIN, Encoding::RLE, Encoding::RLE_DICTIONARY].iter(),
            ))
            .set_page_encoding_stats(vec![
                PageEncodingStats {
                    page_type: PageType::DICTIONARY_PAGE,
                    encoding: Encoding::PLAIN,
                    count: 1,
                },
                PageEncodingStats {
                    page_type: PageType::DATA_PAGE,
                    encoding: Encoding::RLE_DICTIONARY,
                    count: data_pages,
                },
            ])
            .set_total_compressed_size(total_compressed)
            .set_total_uncompressed_size(total_uncompressed)
            .set_num_values(rows as i64)
            .set_data_page_offset(data_page_offset.unwrap_or(0))
            .set_dictionary_page_offset(Some(0));
        if self.statistics != EnabledStatistics::None {
            let (min, max) = chunk_bounds
                .map(|(l, h)| (ByteArray::from(l.to_vec()), ByteArray::from(h.to_vec())))
                .unzip();
            let stats = ValueStatistics::new(min, max, None, Some(nulls as u64), false)
                .with_backwards_compatible_min_max(self.descr.sort_order().is_signed());
            builder = builder
                .set_statistics(Statistics::ByteArray(stats))
                .set_unencoded_byte_array_data_bytes(Some(unencoded))
                .set_definition_level_histogram(
                    validity.map(|_| LevelHistogram::from(vec![nulls, rows as i64 - nulls])),
                );
        }
        let metadata = builder.build()?;
        let data = sink.into_inner()?;
        let close = ColumnCloseResult {
            bytes_written: data.len() as u64,
            rows_written: rows as u64,
            metadata,
            bloom_filter: None,
            column_index: match column_index {
                Some(index) if index.valid() => Some(index.build()?),
                _ => None,
            },
            offset_index: Some(offset_index.build()),
        };
        Ok(EncodedChunk {
            data: Bytes::from(data),
            close,
        })
    }

    /// The page body, compressed with the column's codec (`compressor` is made on
    /// the first page that needs it and kept for the chunk's other pages).
    fn compress(
        &self,
        page: Vec<u8>,
        compressor: &mut Option<zstd::bulk::Compressor<'static>>,
    ) -> Result<Bytes> {
        let Compression::ZSTD(level) = self.compression else {
            return Ok(Bytes::from(page));
        };
        let compressor = match compressor {
            Some(c) => c,
            None => compressor.insert(
                zstd::bulk::Compressor::new(level.compression_level())
                    .map_err(ParquetError::from)?,
            ),
        };
        Ok(Bytes::from(
            compressor.compress(&page).map_err(ParquetError::from)?,
        ))
    }
}

/// ASCENDING when no page's minimum or maximum is below the previous page's,
/// DESCENDING for the converse, else UNORDERED (null pages are passed over).
fn boundary_order(pages: &[Bounds<'_>]) -> BoundaryOrder {
    let bounds: Vec<(&[u8], &[u8])> = pages.iter().flatten().copied().collect();
    let ascending = bounds
        .windows(2)
        .all(|w| w[0].0 <= w[1].0 && w[0].1 <= w[1].1);
    let descending = bounds
        .windows(2)
        .all(|w| w[0].0 >= w[1].0 && w[0].1 >= w[1].1);
    match (ascending, descending) {
        (true, _) => BoundaryOrder::ASCENDING,
        (false, true) => BoundaryOrder::DESCENDING,
        _ => BoundaryOrder::UNORDERED,
    }
}

/// Appends an unsigned LEB128 varint.
fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Appends an RLE run of `count` copies of `value`.
fn rle_run(count: usize, value: u32, bit_width: u8, out: &mut Vec<u8>) {
    varint((count as u64) << 1, out);
    let bytes = usize::from(bit_width).div_ceil(8);
    out.extend_from_slice(&value.to_le_bytes()[..bytes]);
}

/// Appends `values` (each below `2^bit_width`) in Parquet's RLE / bit-packing hybrid
/// encoding: runs of 8 or more equal values that start at a group boundary as RLE
/// runs, the rest bit-packed in groups of 8 (the last group zero-padded).
fn rle_hybrid(values: &[u32], bit_width: u8, out: &mut Vec<u8>) {
    let n = values.len();
    let mut packed_from = 0;
    let mut i = 0;
    while i < n {
        let v = values[i];
        let run = values[i..].iter().take_while(|&&x| x == v).count();
        if run >= 8 {
            bit_pack(&values[packed_from..i], bit_width, out);
            rle_run(run, v, bit_width, out);
            i += run;
            packed_from = i;
        } else {
            i = (i + 8).min(n);
        }
    }
    bit_pack(&values[packed_from..n], bit_width, out);
}

/// Appends one bit-packed run of `values` (a multiple of 8 of them, except at the end
/// of the page, where the last group is zero-padded).
fn bit_pack(values: &[u32], bit_width: u8, out: &mut Vec<u8>) {
    if values.is_empty() {
        return;
    }
    let groups = values.len().div_ceil(8);
    varint(((groups as u64) << 1) | 1, out);
    let width = u32::from(bit_width);
    out.reserve(groups * usize::from(bit_width));
    let mut acc = 0u64;
    let mut bits = 0u32;
    for &v in values {
        acc |= u64::from(v) << bits;
        bits += width;
        while bits >= 8 {
            out.push(acc as u8);
            acc >>= 8;
            bits -= 8;
        }
    }
    // Zero padding of the last group.
    let padded_bits = (groups * 8 - values.len()) as u32 * width + bits;
    let mut remaining = padded_bits.div_ceil(8);
    while remaining > 0 {
        out.push(acc as u8);
        acc >>= 8;
        remaining -= 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow::array::{RecordBatch, StringArray};
    use arrow::datatypes::{Field, Schema};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::arrow::ArrowWriter;
    use parquet::basic::ZstdLevel;
    use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};

    /// A deterministic column of `n` values: runs at the start (RLE), then values
    /// drawn from `vocabulary`, with nulls every 7th row and one all-null page
    /// (rows 3000..4000) when `nullable`.
    fn column(n: usize, vocabulary: &[&str], nullable: bool) -> Vec<Option<String>> {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        (0..n)
            .map(|i| {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                if nullable && (i % 7 == 3 || (3000..4000).contains(&i)) {
                    return None;
                }
                let pick = if i < 1500 {
                    i / 100
                } else {
                    (x >> 33) as usize
                };
                Some(vocabulary[pick % vocabulary.len()].to_string())
            })
            .collect()
    }

    fn vocabulary() -> Vec<&'static str> {
        vec![
            "",
            "a",
            "a\0",
            "\0",
            "é",
            "DE",
            "FR",
            "XX",
            "purchase",
            "fifteen bytes!!",
            "sixteen bytes!!!",
            "a value that is longer than sixteen bytes",
            "ünïcödé strings",
            "zz",
        ]
    }

    fn props(compression: Compression) -> WriterProperties {
        WriterProperties::builder()
            .set_compression(compression)
            .set_data_page_row_count_limit(1000)
            .set_write_batch_size(1000)
            .build()
    }

    /// Batches of 2000, 3000 and 1000 rows (page boundaries fall on batch edges for
    /// parquet-rs too) of `values` as `data_type`.
    fn batches(
        values: &[Option<String>],
        data_type: &DataType,
        nullable: bool,
    ) -> Vec<RecordBatch> {
        let schema = Arc::new(Schema::new(vec![Field::new(
            "s",
            data_type.clone(),
            nullable,
        )]));
        let mut out = Vec::new();
        let mut start = 0;
        for len in [2000, 3000, 1000] {
            let len = len.min(values.len() - start);
            let strings = StringArray::from(values[start..start + len].to_vec());
            let array = arrow::compute::cast(&strings, data_type).unwrap();
            out.push(RecordBatch::try_new(schema.clone(), vec![array]).unwrap());
            start += len;
        }
        out
    }

    /// The file parquet-rs's Arrow writer makes of `batches` (one row group).
    fn arrow_file(props: WriterProperties, batches: &[RecordBatch]) -> Bytes {
        let mut writer =
            ArrowWriter::try_new(Vec::new(), batches[0].schema(), Some(props)).unwrap();
        for b in batches {
            writer.write(b).unwrap();
        }
        Bytes::from(writer.into_inner().unwrap())
    }

    /// The same file with the column chunk made by [`encode`] (`None` if declined).
    fn our_file(props: WriterProperties, batches: &[RecordBatch]) -> Option<Bytes> {
        let (mut writer, _) = ArrowWriter::try_new(Vec::new(), batches[0].schema(), Some(props))
            .unwrap()
            .into_serialized_writer()
            .unwrap();
        let descr = writer.schema_descr().column(0);
        let arrays: Vec<ArrayRef> = batches.iter().map(|b| b.column(0).clone()).collect();
        let chunk = encode(&descr, writer.properties(), &arrays).unwrap()?;
        let mut rg = writer.next_row_group().unwrap();
        rg.append_column(&chunk.data, chunk.close).unwrap();
        rg.close().unwrap();
        Some(Bytes::from(writer.into_inner().unwrap()))
    }

    fn metadata(file: &Bytes) -> ParquetMetaData {
        ParquetMetaDataReader::new()
            .with_page_index_policy(PageIndexPolicy::Required)
            .parse_and_finish(file)
            .unwrap()
    }

    fn read(file: Bytes) -> Vec<RecordBatch> {
        ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap()
            .collect::<std::result::Result<_, _>>()
            .unwrap()
    }

    /// Our chunk against parquet-rs's for the same values and properties: the same
    /// values read back, and the same statistics, encodings, histograms, column
    /// index and offset index.
    fn assert_same_as_parquet_rs(batches: &[RecordBatch], compression: Compression) {
        let ours = our_file(props(compression), batches).expect("the chunk is covered");
        let theirs = arrow_file(props(compression), batches);
        let expected = arrow::compute::concat_batches(&batches[0].schema(), batches).unwrap();
        let got = read(ours.clone());
        let got = arrow::compute::concat_batches(&got[0].schema(), &got).unwrap();
        assert_eq!(got, expected);

        let (ours, theirs) = (metadata(&ours), metadata(&theirs));
        let (a, b) = (ours.row_group(0).column(0), theirs.row_group(0).column(0));
        assert_eq!(a.num_values(), b.num_values());
        assert_eq!(a.compression(), b.compression());
        assert_eq!(a.encodings_mask(), b.encodings_mask());
        assert_eq!(
            format!("{:?}", a.page_encoding_stats_mask()),
            format!("{:?}", b.page_encoding_stats_mask())
        );
        let (sa, sb) = (a.statistics().unwrap(), b.statistics().unwrap());
        assert_eq!(sa.min_bytes_opt(), sb.min_bytes_opt());
        assert_eq!(sa.max_bytes_opt(), sb.max_bytes_opt());
        assert_eq!(sa.null_count_opt(), sb.null_count_opt());
        assert_eq!(
            a.unencoded_byte_array_data_bytes(),
            b.unencoded_byte_array_data_bytes()
        );
        assert_eq!(
            a.definition_level_histogram(),
            b.definition_level_histogram()
        );
        assert_eq!(
            format!(
                "{:?}",
                ours.page_index_for_row_group(0).column_index(0).unwrap()
            ),
            format!(
                "{:?}",
                theirs.page_index_for_row_group(0).column_index(0).unwrap()
            )
        );
        let (ours, theirs) = (
            ours.page_index_for_row_group(0),
            theirs.page_index_for_row_group(0),
        );
        let (oa, ob) = (
            ours.offset_index(0).unwrap(),
            theirs.offset_index(0).unwrap(),
        );
        let rows = |o: &parquet::file::page_index::offset_index::OffsetIndexMetaData| {
            o.page_locations
                .iter()
                .map(|p| p.first_row_index)
                .collect::<Vec<_>>()
        };
        assert_eq!(rows(oa), rows(ob));
        assert_eq!(
            oa.unencoded_byte_array_data_bytes,
            ob.unencoded_byte_array_data_bytes
        );
    }

    #[test]
    fn chunks_match_parquet_rs_for_every_byte_type_and_codec() {
        let vocabulary = vocabulary();
        for nullable in [true, false] {
            let values = column(6000, &vocabulary, nullable);
            for data_type in [
                DataType::Utf8,
                DataType::LargeUtf8,
                DataType::Binary,
                DataType::LargeBinary,
            ] {
                for compression in [
                    Compression::UNCOMPRESSED,
                    Compression::ZSTD(ZstdLevel::try_new(1).unwrap()),
                ] {
                    assert_same_as_parquet_rs(&batches(&values, &data_type, nullable), compression);
                }
            }
        }
    }

    /// Index widths 0 (one value), 1 and 12 (3000 values), and sliced arrays.
    #[test]
    fn chunks_match_parquet_rs_at_every_index_width() {
        let many: Vec<String> = (0..3000).map(|i| format!("value-{i:05}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        for vocabulary in [vec!["only"], vec!["no", "yes"], many] {
            let values = column(6000, &vocabulary, true);
            assert_same_as_parquet_rs(
                &batches(&values, &DataType::Utf8, true),
                Compression::UNCOMPRESSED,
            );
        }
        let values = column(8000, &vocabulary(), true);
        let whole = batches(&values, &DataType::Utf8, true);
        let sliced: Vec<RecordBatch> = whole
            .iter()
            .map(|b| b.slice(0, b.num_rows() / 2 * 2 - 1000))
            .collect();
        let sliced: Vec<RecordBatch> = sliced.into_iter().filter(|b| b.num_rows() > 0).collect();
        assert_same_as_parquet_rs(&sliced, Compression::UNCOMPRESSED);
    }

    #[test]
    fn columns_it_does_not_cover_are_declined() {
        let vocabulary = vocabulary();
        let values = column(6000, &vocabulary, true);
        let data = batches(&values, &DataType::Utf8, true);
        let snappy = props(Compression::SNAPPY);
        assert!(our_file(snappy, &data).is_none());
        let small = WriterProperties::builder()
            .set_dictionary_page_size_limit(64)
            .build();
        assert!(our_file(small, &data).is_none());
        let long = "x".repeat(65);
        let values = column(6000, &["a", &long], true);
        assert!(our_file(
            props(Compression::UNCOMPRESSED),
            &batches(&values, &DataType::Utf8, true)
        )
        .is_none());
        let with_nulls = batches(&values, &DataType::Utf8, true);
        let required = Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8, false)]));
        let (writer, _) =
            ArrowWriter::try_new(Vec::new(), required, Some(props(Compression::UNCOMPRESSED)))
                .unwrap()
                .into_serialized_writer()
                .unwrap();
        let arrays: Vec<ArrayRef> = with_nulls.iter().map(|b| b.column(0).clone()).collect();
        let descr = writer.schema_descr().column(0);
        assert!(encode(&descr, writer.properties(), &arrays)
            .unwrap()
            .is_none());
        let nulls: Vec<Option<String>> = vec![None; 6000];
        assert!(our_file(
            props(Compression::UNCOMPRESSED),
            &batches(&nulls, &DataType::Utf8, true)
        )
        .is_none());
    }

    #[test]
    fn the_hybrid_encoding_packs_groups_and_runs() {
        // 3 values bit-packed (one padded group) at width 2.
        let mut out = Vec::new();
        rle_hybrid(&[1, 2, 3], 2, &mut out);
        assert_eq!(out, vec![0b11, 0b0011_1001, 0]);
        // A run of 10 at width 9: header 20, the value in two bytes.
        let mut out = Vec::new();
        rle_hybrid(&[300; 10], 9, &mut out);
        assert_eq!(out, vec![20, 0x2c, 0x01]);
        // Eight values packed, then a run of 8.
        let mut out = Vec::new();
        let values: Vec<u32> = (0..8).chain(std::iter::repeat_n(1, 8)).collect();
        rle_hybrid(&values, 3, &mut out);
        assert_eq!(out[0], 0b11);
        assert_eq!(out.len(), 1 + 3 + 2);
        assert_eq!(&out[4..], &[16, 1]);
    }
}
