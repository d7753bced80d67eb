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
//! whatever it does not cover (see [`Outcome`]), and the caller falls back to the Arrow
//! writer: format v2 pages, codecs other than zstd, bloom filters, page header
//! statistics, values longer than the statistics truncation length, dictionaries
//! over the page size limit, chunks without a non-null value.

use std::collections::HashMap;

use arrow::array::{Array, ArrayRef, AsArray, GenericByteArray};
use arrow::buffer::BooleanBuffer;
use arrow::datatypes::{ArrowNativeType, ByteArrayType, DataType};
use parquet::basic::Encoding;
use parquet::data_type::ByteArray;
use parquet::file::properties::{EnabledStatistics, WriterProperties};
use parquet::file::statistics::{Statistics, ValueStatistics};
use parquet::schema::types::ColumnDescPtr;

use super::chunk::{
    nulls_in_required, page_rows, page_spans, rle_hybrid, supported, validity, widen, ChunkWriter,
    EncodedChunk, Outcome, PageFacts,
};
use crate::error::Result;

/// Whether [`encode`] may take a column of this Arrow type.
pub(crate) fn handles(data_type: &DataType) -> bool {
    matches!(
        data_type,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Binary | DataType::LargeBinary
    )
}

/// Encodes `arrays` (the column's values in row order, all of one type that
/// [`handles`]) as one dictionary-encoded column chunk of the leaf `descr`, under
/// `props`; when this column or these values are not covered, the caller encodes
/// them with the Arrow writer instead.
pub(crate) fn encode(
    descr: &ColumnDescPtr,
    props: &WriterProperties,
    arrays: &[ArrayRef],
) -> Result<Outcome> {
    let path = descr.path();
    if !supported(descr, props) || !props.dictionary_enabled(path) {
        return Ok(Outcome::NotThisColumn);
    }
    if nulls_in_required(descr, arrays) {
        return Ok(Outcome::NotTheseValues);
    }
    let statistics = props.statistics_enabled(path);
    // Values longer than the statistics that are kept allow would need truncation.
    let truncations = [
        (statistics != EnabledStatistics::None)
            .then(|| props.statistics_truncate_length())
            .flatten(),
        (statistics == EnabledStatistics::Page)
            .then(|| props.column_index_truncate_length())
            .flatten(),
    ];
    let limit = Limits {
        dictionary_bytes: props.column_dictionary_page_size_limit(path),
        longest_value: truncations
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(usize::MAX),
    };
    let mut dictionary = Dictionary::default();
    let mut indices = Vec::new();
    for array in arrays {
        let added = match array.data_type() {
            DataType::Utf8 => dictionary.add(array.as_string::<i32>(), &mut indices, &limit),
            DataType::LargeUtf8 => dictionary.add(array.as_string::<i64>(), &mut indices, &limit),
            DataType::Binary => dictionary.add(array.as_binary::<i32>(), &mut indices, &limit),
            DataType::LargeBinary => dictionary.add(array.as_binary::<i64>(), &mut indices, &limit),
            _ => return Ok(Outcome::NotThisColumn),
        };
        match added {
            Ok(()) => {}
            // A dictionary this large would be built again, row group after row
            // group, only to be thrown away.
            Err(Stop::Overflow) => return Ok(Outcome::NotThisColumn),
            Err(Stop::LongValue) => return Ok(Outcome::NotTheseValues),
        }
    }
    if dictionary.entries.is_empty() {
        return Ok(Outcome::NotTheseValues);
    }
    let rows: usize = arrays.iter().map(|a| a.len()).sum();
    let validity = (descr.max_def_level() == 1).then(|| validity(arrays, rows));
    let rows_per_page = page_rows(props, descr, usize::from(dictionary.bit_width()));
    write(
        ChunkWriter::new(descr, props),
        &dictionary,
        &indices,
        validity.as_ref(),
        rows,
        rows_per_page,
    )
    .map(|c| Outcome::Built(Box::new(c)))
}

/// Bits per index into a dictionary of `entries` entries (as parquet-rs: 0 for a
/// single entry).
fn index_bits(entries: u32) -> u8 {
    let largest = entries.saturating_sub(1);
    (32 - largest.leading_zeros()) as u8
}

/// Why [`Dictionary::add`] gave up.
enum Stop {
    /// The dictionary page outgrew its size limit.
    Overflow,
    /// A value is longer than its statistics may be.
    LongValue,
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
    (word & SHORT_MASKS[len]) | ((len as u128) << 120)
}

/// `SHORT_MASKS[n]` keeps the low `n` bytes of a word.
const SHORT_MASKS: [u128; 16] = {
    let mut masks = [0u128; 16];
    let mut n = 1;
    while n < 16 {
        masks[n] = (1u128 << (8 * n)) - 1;
        n += 1;
    }
    masks
};

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
    /// `indices`), unless a limit is passed.
    fn add<T: ByteArrayType>(
        &mut self,
        array: &'a GenericByteArray<T>,
        indices: &mut Vec<u32>,
        limit: &Limits,
    ) -> std::result::Result<(), Stop> {
        let offsets = array.value_offsets();
        let values: &'a [u8] = array.values().as_slice();
        indices.reserve(array.len() - array.null_count());
        let nulls = array.nulls().filter(|n| n.null_count() > 0);
        for (row, bounds) in offsets.windows(2).enumerate() {
            if nulls.is_some_and(|n| n.is_null(row)) {
                continue;
            }
            let start = bounds[0].as_usize();
            let len = bounds[1].as_usize() - start;
            let index = if len < 16 {
                let key = short_key(values, start, len);
                let slot = recent_slot(key);
                match self.recent[slot] {
                    (k, i) if k == key => i,
                    _ => {
                        let i = self.short_index(key, &values[start..start + len], limit)?;
                        self.recent[slot] = (key, i);
                        i
                    }
                }
            } else {
                self.long_index(&values[start..start + len], limit)?
            };
            indices.push(index);
        }
        Ok(())
    }

    /// The index of a value of up to 15 bytes (`key` its [`short_key`]), a new
    /// entry's if it is new.
    fn short_index(
        &mut self,
        key: u128,
        value: &'a [u8],
        limit: &Limits,
    ) -> std::result::Result<u32, Stop> {
        if let Some(&i) = self.short.get(&key) {
            return Ok(i);
        }
        let i = self.insert(value, limit)?;
        self.short.insert(key, i);
        Ok(i)
    }

    /// The index of a longer value, a new entry's if it is new.
    fn long_index(&mut self, value: &'a [u8], limit: &Limits) -> std::result::Result<u32, Stop> {
        if let Some(&i) = self.long.get(value) {
            return Ok(i);
        }
        let i = self.insert(value, limit)?;
        self.long.insert(value, i);
        Ok(i)
    }

    /// A new entry's index, unless a limit is passed.
    fn insert(&mut self, value: &'a [u8], limit: &Limits) -> std::result::Result<u32, Stop> {
        if value.len() > limit.longest_value {
            return Err(Stop::LongValue);
        }
        self.plain_bytes += 4 + value.len();
        if self.plain_bytes > limit.dictionary_bytes {
            return Err(Stop::Overflow);
        }
        let index = u32::try_from(self.entries.len()).map_err(|_| Stop::Overflow)?;
        self.entries.push(value);
        Ok(index)
    }

    /// Bits per index of the whole dictionary.
    fn bit_width(&self) -> u8 {
        index_bits(self.entries.len() as u32)
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

/// Writes the chunk: the dictionary page, then the data pages of `rows_per_page` rows.
fn write(
    mut chunk: ChunkWriter,
    dictionary: &Dictionary<'_>,
    indices: &[u32],
    validity: Option<&BooleanBuffer>,
    rows: usize,
    rows_per_page: usize,
) -> Result<EncodedChunk> {
    chunk.dictionary_page(dictionary.plain(), dictionary.entries.len())?;
    // Entries are numbered in order of first appearance: the pages up to one use
    // the entries up to the largest index seen so far, and its indices need only
    // their bits (as parquet-rs writes them).
    let mut entries_so_far = 0u32;
    let lengths: Vec<i64> = dictionary.entries.iter().map(|v| v.len() as i64).collect();
    // The page each entry was last seen in, to list a page's distinct entries.
    let mut seen = vec![usize::MAX; dictionary.entries.len()];
    let mut distinct = Vec::new();
    let mut page_bounds: Vec<Option<(&[u8], &[u8])>> = Vec::new();
    for (page, span) in page_spans(rows, rows_per_page, validity)
        .into_iter()
        .enumerate()
    {
        let page_indices = &indices[span.values.clone()];
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
        page_bounds.push(bounds);

        if let Some(&largest) = distinct.iter().max() {
            entries_so_far = entries_so_far.max(largest as u32 + 1);
        }
        let bit_width = index_bits(entries_so_far);
        let value_bytes = page_indices.len() * usize::from(bit_width) / 8;
        let mut body = chunk.page_body(validity, &span, value_bytes);
        body.push(bit_width);
        rle_hybrid(page_indices, bit_width, &mut body);
        let facts = PageFacts {
            rows: span.rows,
            nulls: span.rows - span.values.len(),
            bounds: bounds.map(|(l, h)| (l.to_vec(), h.to_vec())),
            unencoded_bytes: Some(page_bytes),
        };
        chunk.data_page(body, Encoding::RLE_DICTIONARY, facts)?;
    }
    let signed = chunk.signed_sort_order();
    chunk.finish(&page_bounds, |min, max, nulls| {
        let bytes = |v: &[u8]| ByteArray::from(v.to_vec());
        Statistics::ByteArray(
            ValueStatistics::new(min.map(bytes), max.map(bytes), None, Some(nulls), false)
                .with_backwards_compatible_min_max(signed),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    use arrow::array::{RecordBatch, StringArray};
    use arrow::datatypes::{Field, Schema};
    use parquet::arrow::ArrowWriter;
    use parquet::basic::{Compression, ZstdLevel};

    use crate::write::chunk::testing;

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

    /// `values` as `data_type` in the batches of [`testing::batches`].
    fn batches(
        values: &[Option<String>],
        data_type: &DataType,
        nullable: bool,
    ) -> Vec<RecordBatch> {
        let strings: ArrayRef = Arc::new(StringArray::from(values.to_vec()));
        testing::batches(&strings, "s", data_type, nullable)
    }

    fn assert_same_as_parquet_rs(batches: &[RecordBatch], compression: Compression) {
        testing::assert_same_as_parquet_rs(encode, props(compression), batches);
    }

    fn outcome(props: WriterProperties, batches: &[RecordBatch]) -> Outcome {
        testing::outcome(encode, props, batches)
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
        // Slices at offsets that are not a multiple of 8 (values, offsets and
        // validity bits all start mid-buffer).
        let values = column(8000, &vocabulary(), true);
        let sliced: Vec<RecordBatch> = batches(&values, &DataType::Utf8, true)
            .iter()
            .filter(|b| b.num_rows() >= 2000)
            .map(|b| b.slice(997, (b.num_rows() - 997) / 1000 * 1000))
            .collect();
        assert_same_as_parquet_rs(&sliced, Compression::UNCOMPRESSED);
    }

    /// Columns it never covers under the file's properties, or whose dictionary
    /// outgrows its page, are given up on for the file; values it does not cover
    /// (too long for exact statistics, all null, nulls in a required column) only
    /// for their chunk.
    #[test]
    fn columns_and_values_it_does_not_cover_are_declined() {
        let data = batches(&column(6000, &vocabulary(), true), &DataType::Utf8, true);
        let snappy = props(Compression::SNAPPY);
        assert!(matches!(outcome(snappy, &data), Outcome::NotThisColumn));
        let small = WriterProperties::builder()
            .set_dictionary_page_size_limit(64)
            .build();
        assert!(matches!(outcome(small, &data), Outcome::NotThisColumn));
        let plain = WriterProperties::builder()
            .set_dictionary_enabled(false)
            .build();
        assert!(matches!(outcome(plain, &data), Outcome::NotThisColumn));

        let uncompressed = || props(Compression::UNCOMPRESSED);
        let long = "x".repeat(65);
        let values = column(6000, &["a", &long], true);
        let long_values = batches(&values, &DataType::Utf8, true);
        assert!(matches!(
            outcome(uncompressed(), &long_values),
            Outcome::NotTheseValues
        ));
        // Without statistics no value is too long.
        let no_statistics = WriterProperties::builder()
            .set_statistics_enabled(parquet::file::properties::EnabledStatistics::None)
            .build();
        assert!(matches!(
            outcome(no_statistics, &long_values),
            Outcome::Built(_)
        ));
        let nulls = batches(&vec![None; 6000], &DataType::Utf8, true);
        assert!(matches!(
            outcome(uncompressed(), &nulls),
            Outcome::NotTheseValues
        ));
        // Nulls in a required column (a batch would not even hold them): the Arrow
        // writer refuses them.
        let required = Arc::new(Schema::new(vec![Field::new("s", DataType::Utf8, false)]));
        let (writer, _) = ArrowWriter::try_new(Vec::new(), required, Some(uncompressed()))
            .unwrap()
            .into_serialized_writer()
            .unwrap();
        let arrays: Vec<ArrayRef> = data.iter().map(|b| b.column(0).clone()).collect();
        let descr = writer.schema_descr().column(0);
        let got = encode(&descr, writer.properties(), &arrays).unwrap();
        assert!(matches!(got, Outcome::NotTheseValues));
    }
}
