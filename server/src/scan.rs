//! Scan responses: batches encoded as they come (Arrow IPC stream or NDJSON) into a
//! streamed body, so a scan never holds more than a batch or two in memory.

use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use axum::body::Body;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use shoal_format::scan::BatchStream;

use crate::metrics::Metrics;

/// The encodings a scan answers in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutFormat {
    ArrowStream,
    NdJson,
}

enum Encoder {
    Arrow(Box<arrow::ipc::writer::StreamWriter<Vec<u8>>>),
    NdJson,
}

impl Encoder {
    fn encode(&mut self, batch: &RecordBatch) -> Result<Bytes, arrow::error::ArrowError> {
        match self {
            Encoder::Arrow(w) => {
                w.write(batch)?;
                Ok(Bytes::from(std::mem::take(w.get_mut())))
            }
            Encoder::NdJson => {
                let batch = &with_utc_offsets(batch)?;
                let mut out = Vec::with_capacity(batch.num_rows() * 64);
                {
                    let mut w = arrow::json::WriterBuilder::new()
                        .with_explicit_nulls(true)
                        .with_timestamp_tz_format("%Y-%m-%dT%H:%M:%S%.fZ".into())
                        .build::<_, arrow::json::writer::LineDelimited>(&mut out);
                    w.write(batch)?;
                    w.finish()?;
                }
                Ok(Bytes::from(out))
            }
        }
    }

    fn finish(&mut self) -> Result<Bytes, arrow::error::ArrowError> {
        match self {
            Encoder::Arrow(w) => {
                w.finish()?;
                Ok(Bytes::from(std::mem::take(w.get_mut())))
            }
            Encoder::NdJson => Ok(Bytes::new()),
        }
    }
}

/// The batch with time zones as offsets, when it has any (see `utc_offsets`).
fn with_utc_offsets(batch: &RecordBatch) -> Result<RecordBatch, arrow::error::ArrowError> {
    let schema = batch.schema();
    if schema
        .fields()
        .iter()
        .all(|f| crate::ingest::utc_offsets(f.data_type()) == *f.data_type())
    {
        return Ok(batch.clone());
    }
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (f, c) in schema.fields().iter().zip(batch.columns()) {
        let t = crate::ingest::utc_offsets(f.data_type());
        columns.push(if t == *f.data_type() {
            c.clone()
        } else {
            arrow::compute::cast(c, &t)?
        });
        fields.push(f.as_ref().clone().with_data_type(t));
    }
    RecordBatch::try_new(Arc::new(arrow::datatypes::Schema::new(fields)), columns)
}

struct ScanBody {
    stream: BatchStream,
    encoder: Encoder,
    pending: Option<Bytes>,
    done: bool,
    metrics: Arc<Metrics>,
}

/// The response body of a scan. An error in the middle of the stream ends the body
/// abruptly (the status was sent already); the client sees a truncated response.
pub fn body(
    stream: BatchStream,
    schema: SchemaRef,
    format: OutFormat,
    metrics: Arc<Metrics>,
) -> Result<Body, arrow::error::ArrowError> {
    let (encoder, first) = match format {
        OutFormat::ArrowStream => {
            let mut w = arrow::ipc::writer::StreamWriter::try_new(Vec::new(), &schema)?;
            let head = Bytes::from(std::mem::take(w.get_mut()));
            (Encoder::Arrow(Box::new(w)), Some(head))
        }
        OutFormat::NdJson => (Encoder::NdJson, None),
    };
    let state = ScanBody {
        stream,
        encoder,
        pending: first,
        done: false,
        metrics,
    };
    Ok(Body::from_stream(chunks(state)))
}

fn chunks(state: ScanBody) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send {
    futures::stream::unfold(state, |mut st| async move {
        if let Some(b) = st.pending.take() {
            Metrics::add(&st.metrics.bytes_out, b.len() as u64);
            return Some((Ok(b), st));
        }
        if st.done {
            return None;
        }
        let item = match st.stream.next().await {
            Some(Ok(batch)) => {
                Metrics::add(&st.metrics.rows_out, batch.num_rows() as u64);
                st.encoder.encode(&batch).map_err(std::io::Error::other)
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, "scan failed while streaming");
                st.done = true;
                Err(std::io::Error::other(e.to_string()))
            }
            None => {
                st.done = true;
                st.encoder.finish().map_err(std::io::Error::other)
            }
        };
        if let Ok(b) = &item {
            Metrics::add(&st.metrics.bytes_out, b.len() as u64);
        }
        Some((item, st))
    })
}
