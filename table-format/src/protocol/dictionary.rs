//! Dictionary-encoded string and binary arrays expanded to plain ones.
//!
//! Scans read the dictionary-encoded string columns of a Parquet file as Arrow
//! dictionaries (keys plus the page's dictionary) and expand them here. Parquet's own
//! expansion copies each value with a call to `memcpy`, which for the short strings of
//! typical dimension columns (countries, event names, statuses) costs more than the
//! rest of the decode; this one copies every value as one fixed-width chunk of a
//! zero-padded copy of the dictionary and only advances by the value's length.

use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, AsArray, DictionaryArray, GenericByteArray, OffsetSizeTrait, PrimitiveArray,
};
use arrow::buffer::{Buffer, OffsetBuffer, ScalarBuffer};
use arrow::compute::cast;
use arrow::datatypes::{
    ArrowDictionaryKeyType, ArrowNativeType, ByteArrayType, DataType as ArrowType,
    GenericBinaryType, GenericStringType, Int16Type, Int32Type, Int64Type, Int8Type, UInt16Type,
    UInt32Type, UInt64Type, UInt8Type,
};
use arrow::error::ArrowError;

/// Whether [`expand`] has a fast path for dictionaries of this value type.
pub fn expandable(value_type: &ArrowType) -> bool {
    matches!(
        value_type,
        ArrowType::Utf8 | ArrowType::LargeUtf8 | ArrowType::Binary | ArrowType::LargeBinary
    )
}

/// The dictionary array `array` as a plain array of its value type. Other arrays, and
/// dictionaries of other value types, go through Arrow's cast.
pub fn expand(array: &ArrayRef) -> Result<ArrayRef, ArrowError> {
    let ArrowType::Dictionary(key, value) = array.data_type() else {
        return Ok(array.clone());
    };
    let value = value.as_ref().clone();
    macro_rules! by_key {
        ($k:ty) => {
            by_value(array.as_dictionary::<$k>(), &value)
        };
    }
    let out = match key.as_ref() {
        ArrowType::Int8 => by_key!(Int8Type),
        ArrowType::Int16 => by_key!(Int16Type),
        ArrowType::Int32 => by_key!(Int32Type),
        ArrowType::Int64 => by_key!(Int64Type),
        ArrowType::UInt8 => by_key!(UInt8Type),
        ArrowType::UInt16 => by_key!(UInt16Type),
        ArrowType::UInt32 => by_key!(UInt32Type),
        ArrowType::UInt64 => by_key!(UInt64Type),
        _ => None,
    };
    match out {
        Some(a) => Ok(a),
        None => cast(array, &value),
    }
}

fn by_value<K: ArrowDictionaryKeyType>(
    dict: &DictionaryArray<K>,
    value: &ArrowType,
) -> Option<ArrayRef> {
    let values = dict.values();
    // Null dictionary entries are not something Parquet writes: leave them to cast.
    if values.null_count() > 0 {
        return None;
    }
    match value {
        ArrowType::Utf8 => gather::<K, GenericStringType<i32>>(dict.keys(), values.as_string()),
        ArrowType::LargeUtf8 => {
            gather::<K, GenericStringType<i64>>(dict.keys(), values.as_string())
        }
        ArrowType::Binary => gather::<K, GenericBinaryType<i32>>(dict.keys(), values.as_binary()),
        ArrowType::LargeBinary => {
            gather::<K, GenericBinaryType<i64>>(dict.keys(), values.as_binary())
        }
        _ => None,
    }
}

/// `values[keys[i]]` for every row; null keys give nulls. `None` (leave it to cast)
/// when a key is out of range or the result overflows the offset type.
fn gather<K: ArrowDictionaryKeyType, T: ByteArrayType>(
    keys: &PrimitiveArray<K>,
    values: &GenericByteArray<T>,
) -> Option<ArrayRef> {
    let n_values = values.len();
    // Out of range: not found below.
    let checked = |k: usize| if k < n_values { k } else { usize::MAX };
    let value_offsets = values.value_offsets();
    // One more entry, empty, that null rows point at.
    let mut lens: Vec<usize> = value_offsets
        .windows(2)
        .map(|w| w[1].as_usize().saturating_sub(w[0].as_usize()))
        .collect();
    lens.push(0);
    let max_len = lens.iter().copied().max().unwrap_or(0);
    let data = values.value_data();
    let nulls = keys.nulls();
    let (offsets, data) = match nulls {
        None => {
            let index = keys.values().iter().map(|k| checked(k.as_usize()));
            copy_by_width::<T::Offset>(data, value_offsets, &lens, max_len, keys.len(), index)?
        }
        Some(nulls) => {
            let index = keys.values().iter().zip(nulls.iter()).map(|(k, valid)| {
                if valid {
                    checked(k.as_usize())
                } else {
                    n_values
                }
            });
            copy_by_width::<T::Offset>(data, value_offsets, &lens, max_len, keys.len(), index)?
        }
    };
    let offsets = ScalarBuffer::from(offsets);
    let data = Buffer::from_vec(data);
    // `OffsetBuffer::new` checks the offsets (debug builds, the tests, check it all).
    debug_assert!(T::validate(&OffsetBuffer::new(offsets.clone()), &data).is_ok());
    // SAFETY: the offsets start at 0 and grow by each value's length (non-negative) up
    // to the length of `data`, which fits the offset type (checked by `copy_by_width`).
    // `data` is the values copied whole, one after another, from a valid array of the
    // same type: for strings every offset falls on a character boundary and the bytes
    // are valid UTF-8. The null buffer is the keys', of the same length.
    let array = unsafe {
        GenericByteArray::<T>::new_unchecked(
            OffsetBuffer::new_unchecked(offsets),
            data,
            nulls.cloned(),
        )
    };
    Some(Arc::new(array))
}

/// Offsets and bytes of the values at `index` (the last entry of `lens` is the empty
/// value null rows point at); `None` when an index is out of range or the bytes
/// overflow the offset type `O`.
fn copy_by_width<O: OffsetSizeTrait>(
    data: &[u8],
    offsets: &[impl OffsetSizeTrait],
    lens: &[usize],
    max_len: usize,
    rows: usize,
    index: impl Iterator<Item = usize>,
) -> Option<(Vec<O>, Vec<u8>)> {
    match max_len {
        0..=8 => copy_padded::<8, O>(data, offsets, lens, max_len, rows, index),
        9..=16 => copy_padded::<16, O>(data, offsets, lens, max_len, rows, index),
        17..=32 => copy_padded::<32, O>(data, offsets, lens, max_len, rows, index),
        _ => copy_each::<O>(data, offsets, lens, rows, index),
    }
}

/// Every value copied as one `W`-byte chunk of a zero-padded copy of the dictionary;
/// the output then keeps only the value's length, so the next value overwrites the
/// padding.
fn copy_padded<const W: usize, O: OffsetSizeTrait>(
    data: &[u8],
    offsets: &[impl OffsetSizeTrait],
    lens: &[usize],
    max_len: usize,
    rows: usize,
    index: impl Iterator<Item = usize>,
) -> Option<(Vec<O>, Vec<u8>)> {
    let padded: Vec<([u8; W], usize)> = lens
        .iter()
        .enumerate()
        .map(|(i, &len)| {
            let mut chunk = [0u8; W];
            if len > 0 {
                let start = offsets[i].as_usize();
                chunk[..len].copy_from_slice(&data[start..start + len]);
            }
            (chunk, len)
        })
        .collect();
    // Room for the longest value in every row: reserved, not written.
    let mut out: Vec<u8> = Vec::with_capacity(rows * max_len + W);
    let mut ends: Vec<O> = Vec::with_capacity(rows + 1);
    ends.push(O::usize_as(0));
    for k in index {
        let (chunk, len) = padded.get(k)?;
        let keep = out.len() + len;
        out.extend_from_slice(chunk);
        out.truncate(keep);
        ends.push(O::usize_as(keep));
    }
    O::from_usize(out.len())?;
    Some((ends, out))
}

/// Long values: one slice copy each.
fn copy_each<O: OffsetSizeTrait>(
    data: &[u8],
    offsets: &[impl OffsetSizeTrait],
    lens: &[usize],
    rows: usize,
    index: impl Iterator<Item = usize>,
) -> Option<(Vec<O>, Vec<u8>)> {
    let mut out: Vec<u8> = Vec::new();
    let mut ends: Vec<O> = Vec::with_capacity(rows + 1);
    ends.push(O::usize_as(0));
    for k in index {
        let len = *lens.get(k)?;
        if len > 0 {
            let start = offsets[k].as_usize();
            out.extend_from_slice(&data[start..start + len]);
        }
        ends.push(O::usize_as(out.len()));
    }
    O::from_usize(out.len())?;
    Some((ends, out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{BinaryArray, Int32Array, LargeStringArray, StringArray, UInt8Array};

    fn check(array: ArrayRef) {
        let ArrowType::Dictionary(_, value) = array.data_type() else {
            panic!("not a dictionary")
        };
        let expected = cast(&array, value).unwrap();
        let got = expand(&array).unwrap();
        assert_eq!(got.data_type(), expected.data_type());
        assert_eq!(got.to_data(), expected.to_data());
    }

    #[test]
    fn expands_like_cast_for_every_width() {
        for width in [0usize, 1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 200] {
            // Lengths up to `width` bytes, multi-byte characters included.
            let values: Vec<String> = (0..37)
                .map(|i| {
                    let n = if i % 3 == 0 {
                        0
                    } else {
                        width - (i % (width / 2 + 1))
                    };
                    "é".repeat(n / 2) + &"x".repeat(n % 2)
                })
                .collect();
            let values = StringArray::from(values);
            let keys = Int32Array::from(
                (0..1000)
                    .map(|i| {
                        if i % 11 == 0 {
                            None
                        } else {
                            Some((i * 7) % 37)
                        }
                    })
                    .collect::<Vec<_>>(),
            );
            let dict = DictionaryArray::new(keys, Arc::new(values));
            check(Arc::new(dict.clone()));
            // A slice starts at a non-zero offset of keys and nulls.
            check(Arc::new(dict.slice(13, 500)));
        }
    }

    #[test]
    fn expands_large_binary_and_small_keys() {
        let large = LargeStringArray::from(vec!["NL", "BE", "", "DE-long-name"]);
        let keys = UInt8Array::from(vec![Some(3), None, Some(0), Some(2), Some(1), Some(3)]);
        check(Arc::new(DictionaryArray::new(
            keys.clone(),
            Arc::new(large),
        )));
        let binary = BinaryArray::from(vec![&b"\x00\xff"[..], b"", b"abc"]);
        let keys = UInt8Array::from(vec![Some(0), Some(2), None, Some(1)]);
        check(Arc::new(DictionaryArray::new(keys, Arc::new(binary))));
    }

    #[test]
    fn sliced_dictionary_values_and_empty_arrays() {
        let values = StringArray::from(vec!["a", "bb", "ccc", "dddd", "eeeee"]).slice(1, 3);
        let keys = Int32Array::from(vec![Some(2), Some(0), None, Some(1)]);
        check(Arc::new(DictionaryArray::new(keys, Arc::new(values))));
        let empty = DictionaryArray::new(
            Int32Array::from(Vec::<i32>::new()),
            Arc::new(StringArray::from(Vec::<&str>::new())),
        );
        check(Arc::new(empty));
    }
}
