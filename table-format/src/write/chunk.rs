//! Column chunks built by Shoal rather than by parquet-rs's Arrow writer, for the
//! column shapes where the Arrow writer's per-row work dominates a write (see
//! [`super::dictionary_chunk`] and [`super::delta_chunk`]): what every such chunk
//! shares. [`ChunkWriter`] takes encoded page bodies and writes the pages (Parquet
//! format v1 data pages, compressed with the column's codec), the offset index, the
//! column index and the chunk's metadata, as parquet-rs does for the same column.

use arrow::array::{ArrayRef, BooleanBufferBuilder};
use arrow::buffer::BooleanBuffer;
use bytes::Bytes;
use parquet::basic::{BoundaryOrder, Compression, Encoding, EncodingMask, PageType};
use parquet::column::page::{CompressedPage, Page, PageWriter};
use parquet::column::writer::ColumnCloseResult;
use parquet::errors::ParquetError;
use parquet::file::metadata::{
    ColumnChunkMetaData, ColumnIndexBuilder, LevelHistogram, OffsetIndexBuilder, PageEncodingStats,
};
use parquet::file::properties::{EnabledStatistics, WriterProperties, WriterVersion};
use parquet::file::statistics::Statistics;
use parquet::file::writer::{SerializedPageWriter, TrackedWrite};
use parquet::schema::types::ColumnDescPtr;

use crate::error::Result;

/// An encoded column chunk: its bytes (its first page at offset 0) and what the row
/// group writer needs to append it.
pub(crate) struct EncodedChunk {
    pub data: Bytes,
    pub close: ColumnCloseResult,
}

/// What an encoder of ours made of a column chunk.
pub(crate) enum Outcome {
    Built(Box<EncodedChunk>),
    /// These values are not covered (the column's next chunk may be): the Arrow
    /// writer takes this chunk.
    NotTheseValues,
    /// The column is not covered under the file's properties, or its values outgrow
    /// what is worth trying again: the Arrow writer takes the rest of the file's
    /// chunks of this column.
    NotThisColumn,
}

/// Whether the chunks built here can stand for the Arrow writer's under `props` for
/// the leaf `descr`: a flat column, format v1 pages, zstd or no compression, no bloom
/// filter, no page header statistics.
pub(crate) fn supported(descr: &ColumnDescPtr, props: &WriterProperties) -> bool {
    let path = descr.path();
    descr.max_rep_level() == 0
        && descr.max_def_level() <= 1
        && props.writer_version() == WriterVersion::PARQUET_1_0
        && matches!(
            props.compression(path),
            Compression::UNCOMPRESSED | Compression::ZSTD(_)
        )
        && props.bloom_filter_properties(path).is_none()
        && !props.write_page_header_statistics(path)
}

/// Whether a required column's values hold nulls (the Arrow writer refuses them with
/// its error; the encoders here leave such chunks to it).
pub(crate) fn nulls_in_required(descr: &ColumnDescPtr, arrays: &[ArrayRef]) -> bool {
    descr.max_def_level() == 0 && arrays.iter().any(|a| a.null_count() > 0)
}

/// Rows per data page: the row count limit, and the page size limit for values of
/// `bits` bits.
pub(crate) fn page_rows(props: &WriterProperties, descr: &ColumnDescPtr, bits: usize) -> usize {
    let path = descr.path();
    let by_size = props.column_data_page_size_limit(path).saturating_mul(8) / bits.max(1);
    props
        .column_data_page_row_count_limit(path)
        .min(by_size)
        .max(1)
}

/// The rows of a data page: its first row, its row count and the positions of its
/// non-null values among the chunk's.
pub(crate) struct PageSpan {
    pub first: usize,
    pub rows: usize,
    pub values: std::ops::Range<usize>,
}

/// The chunk's `rows` rows cut into pages of `rows_per_page`.
pub(crate) fn page_spans(
    rows: usize,
    rows_per_page: usize,
    validity: Option<&BooleanBuffer>,
) -> Vec<PageSpan> {
    let mut next = 0;
    (0..rows)
        .step_by(rows_per_page.max(1))
        .map(|first| {
            let page_rows = rows_per_page.min(rows - first);
            let valid = match validity {
                Some(v) => v.slice(first, page_rows).count_set_bits(),
                None => page_rows,
            };
            next += valid;
            PageSpan {
                first,
                rows: page_rows,
                values: next - valid..next,
            }
        })
        .collect()
}

/// What a data page holds besides its body.
pub(crate) struct PageFacts {
    pub rows: usize,
    pub nulls: usize,
    /// The page's smallest and largest value as Parquet stores them in the column
    /// index (`None` for a page of nulls).
    pub bounds: Option<(Vec<u8>, Vec<u8>)>,
    /// The bytes of the page's variable-length values (byte array columns).
    pub unencoded_bytes: Option<i64>,
}

/// Writes the pages of one column chunk and then its metadata.
pub(crate) struct ChunkWriter {
    descr: ColumnDescPtr,
    statistics: EnabledStatistics,
    compression: Compression,
    compressor: Option<zstd::bulk::Compressor<'static>>,
    sink: TrackedWrite<Vec<u8>>,
    column_index: Option<ColumnIndexBuilder>,
    offset_index: Option<OffsetIndexBuilder>,
    encoding_stats: Vec<PageEncodingStats>,
    encodings: Vec<Encoding>,
    dictionary_page_offset: Option<i64>,
    data_page_offset: Option<i64>,
    /// The pages' sizes before compression, headers included (their sizes after are
    /// the bytes in `sink`).
    total_uncompressed: i64,
    rows: usize,
    nulls: usize,
    unencoded_bytes: Option<i64>,
}

impl ChunkWriter {
    pub fn new(descr: &ColumnDescPtr, props: &WriterProperties) -> ChunkWriter {
        let path = descr.path();
        let statistics = props.statistics_enabled(path);
        ChunkWriter {
            descr: descr.clone(),
            statistics,
            compression: props.compression(path),
            compressor: None,
            sink: TrackedWrite::new(Vec::new()),
            column_index: (statistics == EnabledStatistics::Page)
                .then(|| ColumnIndexBuilder::new(descr.physical_type())),
            // As parquet-rs: written unless turned off (it is not without page
            // statistics).
            offset_index: (!props.offset_index_disabled()).then(OffsetIndexBuilder::new),
            encoding_stats: Vec::new(),
            // Definition levels are RLE (parquet-rs lists it for every column).
            encodings: vec![Encoding::RLE],
            dictionary_page_offset: None,
            data_page_offset: None,
            total_uncompressed: 0,
            rows: 0,
            nulls: 0,
            unencoded_bytes: None,
        }
    }

    /// Whether definition levels precede each page's values.
    pub fn nullable(&self) -> bool {
        self.descr.max_def_level() == 1
    }

    /// Writes the PLAIN dictionary page (before any data page) of `entries` values.
    pub fn dictionary_page(&mut self, plain: Vec<u8>, entries: usize) -> Result<()> {
        let uncompressed = plain.len();
        let page = Page::DictionaryPage {
            buf: self.compress(plain)?,
            num_values: entries as u32,
            encoding: Encoding::PLAIN,
            is_sorted: false,
        };
        let spec = SerializedPageWriter::new(&mut self.sink)
            .write_page(CompressedPage::new(page, uncompressed))?;
        self.dictionary_page_offset = Some(spec.offset as i64);
        self.total_uncompressed += spec.uncompressed_size as i64;
        self.count(PageType::DICTIONARY_PAGE, Encoding::PLAIN);
        Ok(())
    }

    /// A new page body of the rows of `span`: their definition levels when the
    /// column is nullable (`validity`, the chunk's, is then given), to be followed by
    /// the values (about `value_bytes` of them).
    pub fn page_body(
        &self,
        validity: Option<&BooleanBuffer>,
        span: &PageSpan,
        value_bytes: usize,
    ) -> Vec<u8> {
        let mut body = Vec::with_capacity(value_bytes + 64);
        if let Some(validity) = validity {
            def_levels(
                validity,
                span.first,
                span.rows,
                span.values.len(),
                &mut body,
            );
        }
        body
    }

    /// Writes a data page: `body` is its definition levels (see
    /// [`ChunkWriter::page_body`]) then its values in `encoding`.
    pub fn data_page(&mut self, body: Vec<u8>, encoding: Encoding, page: PageFacts) -> Result<()> {
        let uncompressed = body.len();
        let data_page = Page::DataPage {
            buf: self.compress(body)?,
            num_values: page.rows as u32,
            encoding,
            def_level_encoding: Encoding::RLE,
            rep_level_encoding: Encoding::RLE,
            statistics: None,
        };
        let spec = SerializedPageWriter::new(&mut self.sink)
            .write_page(CompressedPage::new(data_page, uncompressed))?;
        self.data_page_offset.get_or_insert(spec.offset as i64);
        self.total_uncompressed += spec.uncompressed_size as i64;
        self.count(PageType::DATA_PAGE, encoding);
        if let Some(index) = self.offset_index.as_mut() {
            index.append_offset_and_size(spec.offset as i64, spec.compressed_size as i32);
            index.append_row_count(page.rows as i64);
            index.append_unencoded_byte_array_data_bytes(page.unencoded_bytes);
        }
        if let Some(bytes) = page.unencoded_bytes {
            *self.unencoded_bytes.get_or_insert(0) += bytes;
        }
        let histogram = self.nullable().then(|| {
            LevelHistogram::from(vec![page.nulls as i64, (page.rows - page.nulls) as i64])
        });
        if let Some(index) = self.column_index.as_mut() {
            let null_page = page.bounds.is_none();
            let (min, max) = page.bounds.unwrap_or_default();
            index.append(null_page, min, max, page.nulls as i64, None);
            index.append_histograms(&None, &histogram);
        }
        self.rows += page.rows;
        self.nulls += page.nulls;
        Ok(())
    }

    fn count(&mut self, page_type: PageType, encoding: Encoding) {
        if !self.encodings.contains(&encoding) {
            self.encodings.push(encoding);
        }
        match self
            .encoding_stats
            .iter_mut()
            .find(|s| s.page_type == page_type && s.encoding == encoding)
        {
            Some(s) => s.count += 1,
            None => self.encoding_stats.push(PageEncodingStats {
                page_type,
                encoding,
                count: 1,
            }),
        }
    }

    /// The chunk, given the bounds of each of its pages (in the column's order) and
    /// how to make the chunk's statistics of its min, max and null count.
    pub fn finish<T: PartialOrd + Copy>(
        mut self,
        pages: &[Option<(T, T)>],
        statistics: impl FnOnce(Option<T>, Option<T>, u64) -> Statistics,
    ) -> Result<EncodedChunk> {
        if let Some(index) = self.column_index.as_mut() {
            index.set_boundary_order(boundary_order(pages));
        }
        let mut builder = ColumnChunkMetaData::builder(self.descr.clone())
            .set_compression(self.compression)
            .set_encodings_mask(EncodingMask::new_from_encodings(self.encodings.iter()))
            .set_page_encoding_stats(self.encoding_stats)
            .set_total_compressed_size(self.sink.bytes_written() as i64)
            .set_total_uncompressed_size(self.total_uncompressed)
            .set_num_values(self.rows as i64)
            .set_data_page_offset(self.data_page_offset.unwrap_or(0))
            .set_dictionary_page_offset(self.dictionary_page_offset);
        if self.statistics != EnabledStatistics::None {
            let (min, max) = pages.iter().fold(None, |acc, b| widen(acc, *b)).unzip();
            let nulls = self.nulls as i64;
            builder = builder
                .set_statistics(statistics(min, max, self.nulls as u64))
                .set_unencoded_byte_array_data_bytes(self.unencoded_bytes)
                .set_definition_level_histogram(
                    (self.descr.max_def_level() == 1)
                        .then(|| LevelHistogram::from(vec![nulls, self.rows as i64 - nulls])),
                );
        }
        let metadata = builder.build()?;
        let data = self.sink.into_inner()?;
        let close = ColumnCloseResult {
            bytes_written: data.len() as u64,
            rows_written: self.rows as u64,
            metadata,
            bloom_filter: None,
            column_index: match self.column_index {
                Some(index) if index.valid() => Some(index.build()?),
                _ => None,
            },
            offset_index: self.offset_index.map(OffsetIndexBuilder::build),
        };
        Ok(EncodedChunk {
            data: Bytes::from(data),
            close,
        })
    }

    /// Whether the column's sort order is signed (its statistics then also fill the
    /// deprecated min and max fields, as parquet-rs's do).
    pub fn signed_sort_order(&self) -> bool {
        self.descr.sort_order().is_signed()
    }

    /// A page body compressed with the column's codec (one compressor per chunk).
    fn compress(&mut self, page: Vec<u8>) -> Result<Bytes> {
        let Compression::ZSTD(level) = self.compression else {
            return Ok(Bytes::from(page));
        };
        let compressor = match &mut self.compressor {
            Some(c) => c,
            None => self.compressor.insert(
                zstd::bulk::Compressor::new(level.compression_level())
                    .map_err(ParquetError::from)?,
            ),
        };
        Ok(Bytes::from(
            compressor.compress(&page).map_err(ParquetError::from)?,
        ))
    }
}

/// The smallest and largest of two bounds, either of which may be absent.
pub(crate) fn widen<T: PartialOrd + Copy>(a: Option<(T, T)>, b: Option<(T, T)>) -> Option<(T, T)> {
    match (a, b) {
        (Some((lo, hi)), Some((l, h))) => {
            Some((if l < lo { l } else { lo }, if h > hi { h } else { hi }))
        }
        (a, b) => a.or(b),
    }
}

/// The boundary order of pages' bounds (null pages passed over): ASCENDING when no
/// page's minimum or maximum is below the previous page's, DESCENDING for the
/// converse, else UNORDERED.
fn boundary_order<T: PartialOrd>(pages: &[Option<(T, T)>]) -> BoundaryOrder {
    let bounds: Vec<&(T, T)> = pages.iter().flatten().collect();
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

/// The validity of `rows` rows across `arrays`.
pub(crate) fn validity(arrays: &[ArrayRef], rows: usize) -> BooleanBuffer {
    let mut builder = BooleanBufferBuilder::new(rows);
    for array in arrays {
        match array.nulls() {
            Some(nulls) => builder.append_buffer(nulls.inner()),
            None => builder.append_n(array.len(), true),
        }
    }
    builder.finish()
}

/// Appends the definition levels of rows `first..first + rows` (1 where `validity`
/// is set) to `out` as a v1 data page holds them: their length (u32, little-endian)
/// then the RLE / bit-packing hybrid at width 1.
fn def_levels(
    validity: &BooleanBuffer,
    first: usize,
    rows: usize,
    valid: usize,
    out: &mut Vec<u8>,
) {
    let mut levels = Vec::new();
    if valid == rows {
        rle_run(rows, 1, 1, &mut levels);
    } else {
        let bits: Vec<u32> = validity.slice(first, rows).iter().map(u32::from).collect();
        rle_hybrid(&bits, 1, &mut levels);
    }
    out.extend_from_slice(&(levels.len() as u32).to_le_bytes());
    out.extend_from_slice(&levels);
}

/// Appends an unsigned LEB128 varint.
pub(crate) fn varint(mut v: u64, out: &mut Vec<u8>) {
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

/// Appends `values` (each below `2^bit_width`, `bit_width` at most 32) in Parquet's
/// RLE / bit-packing hybrid encoding: runs of 8 or more equal values that start at a
/// group boundary as RLE runs, the rest bit-packed in groups of 8 (the last group
/// zero-padded).
pub(crate) fn rle_hybrid(values: &[u32], bit_width: u8, out: &mut Vec<u8>) {
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

/// Groups of 8 values in one bit-packed run at most: its header then fits one byte
/// (as parquet-rs writes them).
const MAX_GROUPS_PER_RUN: usize = 63;

/// Appends `values` (a multiple of 8 of them, except at the end of the page, where
/// the last group is zero-padded) as bit-packed runs.
fn bit_pack(values: &[u32], bit_width: u8, out: &mut Vec<u8>) {
    for run in values.chunks(MAX_GROUPS_PER_RUN * 8) {
        bit_pack_run(run, bit_width, out);
    }
}

/// Appends one bit-packed run of `values`.
fn bit_pack_run(values: &[u32], bit_width: u8, out: &mut Vec<u8>) {
    let groups = values.len().div_ceil(8);
    varint(((groups as u64) << 1) | 1, out);
    pack_bits(values, u32::from(bit_width), out);
}

/// Appends `values` of `width` bits each (at most 64), least significant bit first,
/// as whole groups of 8: a last group of fewer values is padded with zero bits. The
/// packing of bit-packed runs and of DELTA_BINARY_PACKED miniblocks.
pub(crate) fn pack_bits<T: Copy + Into<u64>>(values: &[T], width: u32, out: &mut Vec<u8>) {
    if width == 0 {
        return;
    }
    let end = out.len() + values.len().div_ceil(8) * width as usize;
    out.reserve(end - out.len());
    // Eight bytes at a time: `acc` holds fewer than 64 bits between values, and a
    // value has at most 64.
    let mut acc = 0u128;
    let mut bits = 0u32;
    for &v in values {
        acc |= u128::from(v.into()) << bits;
        bits += width;
        if bits >= 64 {
            out.extend_from_slice(&(acc as u64).to_le_bytes());
            acc >>= 64;
            bits -= 64;
        }
    }
    // The bits left, then the zero padding of the last group.
    while out.len() < end {
        out.push(acc as u8);
        acc >>= 8;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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

    /// Bit packing at every width against a bit-by-bit reference, with the last
    /// group padded.
    #[test]
    fn bit_packing_matches_a_reference_at_every_width() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for width in 0..=32u8 {
            for n in [1usize, 7, 8, 9, 64, 101, 504, 505, 1111] {
                let values: Vec<u32> = (0..n)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        (x as u32) & ((1u64 << width) - 1) as u32
                    })
                    .collect();
                // Runs of at most 63 groups, each a one-byte header then its bits.
                let mut expected = Vec::new();
                for run in values.chunks(504) {
                    let groups = run.len().div_ceil(8);
                    expected.push(((groups << 1) | 1) as u8);
                    let mut bits = vec![0u8; groups * usize::from(width)];
                    for (i, v) in run.iter().enumerate() {
                        for b in 0..usize::from(width) {
                            if v >> b & 1 == 1 {
                                let bit = i * usize::from(width) + b;
                                bits[bit / 8] |= 1 << (bit % 8);
                            }
                        }
                    }
                    expected.extend(bits);
                }
                let mut out = Vec::new();
                bit_pack(&values, width, &mut out);
                assert_eq!(out, expected, "width {width}, {n} values");
            }
        }
    }

    #[test]
    fn boundary_orders() {
        let asc = [Some((1, 2)), None, Some((2, 3)), Some((2, 5))];
        assert_eq!(boundary_order(&asc), BoundaryOrder::ASCENDING);
        let desc = [Some((5, 9)), Some((3, 9)), None];
        assert_eq!(boundary_order(&desc), BoundaryOrder::DESCENDING);
        let neither = [Some((1, 9)), Some((3, 4))];
        assert_eq!(boundary_order(&neither), BoundaryOrder::UNORDERED);
    }
}

/// What the tests of the encoders share: files of one column chunk made by an
/// encoder of ours and by parquet-rs, and their comparison.
#[cfg(test)]
pub(crate) mod testing {
    use super::*;
    use std::sync::Arc;

    use arrow::array::RecordBatch;
    use arrow::datatypes::{DataType, Field, Schema};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::arrow::ArrowWriter;
    use parquet::file::metadata::{PageIndexPolicy, ParquetMetaData, ParquetMetaDataReader};

    /// `values` as `data_type` in batches of 2000, 3000 and 1000 rows (fewer when
    /// there are fewer values), of one column `name`: with pages of 1000 rows, pages
    /// fall on batch edges for parquet-rs too.
    pub fn batches(
        values: &ArrayRef,
        name: &str,
        data_type: &DataType,
        nullable: bool,
    ) -> Vec<RecordBatch> {
        let schema = Arc::new(Schema::new(vec![Field::new(
            name,
            data_type.clone(),
            nullable,
        )]));
        let values = arrow::compute::cast(values, data_type).unwrap();
        let mut out = Vec::new();
        let mut start = 0;
        for len in [2000, 3000, 1000] {
            let len = len.min(values.len() - start);
            let part = values.slice(start, len);
            out.push(RecordBatch::try_new(schema.clone(), vec![part]).unwrap());
            start += len;
        }
        out
    }

    /// An encoder of ours.
    pub type Encoder = fn(&ColumnDescPtr, &WriterProperties, &[ArrayRef]) -> Result<Outcome>;

    /// The file parquet-rs's Arrow writer makes of `batches` (one row group).
    pub fn arrow_file(props: WriterProperties, batches: &[RecordBatch]) -> Bytes {
        let mut w = ArrowWriter::try_new(Vec::new(), batches[0].schema(), Some(props)).unwrap();
        for b in batches {
            w.write(b).unwrap();
        }
        Bytes::from(w.into_inner().unwrap())
    }

    /// What `encode` makes of the first column of `batches` under `props`.
    pub fn outcome(encode: Encoder, props: WriterProperties, batches: &[RecordBatch]) -> Outcome {
        let (writer, _) = ArrowWriter::try_new(Vec::new(), batches[0].schema(), Some(props))
            .unwrap()
            .into_serialized_writer()
            .unwrap();
        let arrays: Vec<ArrayRef> = batches.iter().map(|b| b.column(0).clone()).collect();
        encode(
            &writer.schema_descr().column(0),
            writer.properties(),
            &arrays,
        )
        .unwrap()
    }

    /// The file of `batches` with its column chunk made by `encode` (`None` when it
    /// declines).
    pub fn our_file(
        encode: Encoder,
        props: WriterProperties,
        batches: &[RecordBatch],
    ) -> Option<Bytes> {
        let (mut writer, _) = ArrowWriter::try_new(Vec::new(), batches[0].schema(), Some(props))
            .unwrap()
            .into_serialized_writer()
            .unwrap();
        let descr = writer.schema_descr().column(0);
        let arrays: Vec<ArrayRef> = batches.iter().map(|b| b.column(0).clone()).collect();
        let Outcome::Built(chunk) = encode(&descr, writer.properties(), &arrays).unwrap() else {
            return None;
        };
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

    fn read(file: Bytes) -> RecordBatch {
        let batches: Vec<RecordBatch> = ParquetRecordBatchReaderBuilder::try_new(file)
            .unwrap()
            .build()
            .unwrap()
            .collect::<std::result::Result<_, _>>()
            .unwrap();
        arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap()
    }

    /// `encode`'s chunk of `batches` against parquet-rs's under the same `props`: the
    /// same values read back, and the same statistics, encodings, histograms, column
    /// index and offset index. Returns the two files' metadata (ours first).
    pub fn assert_same_as_parquet_rs(
        encode: Encoder,
        props: WriterProperties,
        batches: &[RecordBatch],
    ) -> (ParquetMetaData, ParquetMetaData) {
        let ours = our_file(encode, props.clone(), batches).expect("the chunk is covered");
        let theirs = arrow_file(props, batches);
        let expected = arrow::compute::concat_batches(&batches[0].schema(), batches).unwrap();
        assert_eq!(read(ours.clone()), expected);

        let (ours, theirs) = (metadata(&ours), metadata(&theirs));
        let (a, b) = (ours.row_group(0).column(0), theirs.row_group(0).column(0));
        assert_eq!(a.num_values(), b.num_values());
        assert_eq!(a.compression(), b.compression());
        assert_eq!(a.encodings_mask(), b.encodings_mask());
        assert_eq!(
            format!("{:?}", a.page_encoding_stats_mask()),
            format!("{:?}", b.page_encoding_stats_mask())
        );
        assert_eq!(a.statistics(), b.statistics());
        assert_eq!(
            a.unencoded_byte_array_data_bytes(),
            b.unencoded_byte_array_data_bytes()
        );
        assert_eq!(
            a.definition_level_histogram(),
            b.definition_level_histogram()
        );
        let (pa, pb) = (
            ours.page_index_for_row_group(0),
            theirs.page_index_for_row_group(0),
        );
        assert_eq!(
            format!("{:?}", pa.column_index(0).unwrap()),
            format!("{:?}", pb.column_index(0).unwrap())
        );
        let (oa, ob) = (pa.offset_index(0).unwrap(), pb.offset_index(0).unwrap());
        let first_rows = |o: &parquet::file::page_index::offset_index::OffsetIndexMetaData| {
            o.page_locations
                .iter()
                .map(|p| p.first_row_index)
                .collect::<Vec<_>>()
        };
        assert_eq!(first_rows(oa), first_rows(ob));
        // The same encoding of the same values: pages of the same sizes (compressed
        // pages too: the same bytes through the same codec).
        let sizes = |o: &parquet::file::page_index::offset_index::OffsetIndexMetaData| {
            o.page_locations
                .iter()
                .map(|p| p.compressed_page_size)
                .collect::<Vec<_>>()
        };
        assert_eq!(sizes(oa), sizes(ob), "page sizes");
        assert_eq!(a.compressed_size(), b.compressed_size(), "chunk size");
        assert_eq!(
            oa.unencoded_byte_array_data_bytes,
            ob.unencoded_byte_array_data_bytes
        );
        (ours, theirs)
    }
}
