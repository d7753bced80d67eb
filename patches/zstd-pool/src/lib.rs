//! The `zstd` crate's bulk API as parquet uses it, with contexts pooled per thread.
//!
//! parquet (`compression.rs`, `ZSTDCodec`) builds a `bulk::Compressor` and a
//! `bulk::Decompressor` for every column chunk it reads or writes and drops them after
//! that chunk. With the real crate each is a fresh zstd context whose workspace is
//! allocated and grown again on first use. Here a context is taken from the current
//! thread's pool when first needed and returned when the codec is dropped, so a
//! thread reuses a handful of warm contexts. A codec that only decompresses never
//! creates a compression context at all.
//!
//! Contexts are reset on every call (`ZSTD_compress2` and `ZSTD_decompressDCtx`
//! start a new frame), and the compression level is set each time a compression
//! context is taken from the pool, so reuse carries no state between uses.

use std::io;

pub use zstd_safe;

/// The compression levels zstd accepts.
pub fn compression_level_range() -> std::ops::RangeInclusive<zstd_safe::CompressionLevel> {
    zstd_safe::min_c_level()..=zstd_safe::max_c_level()
}

fn map_error_code(code: usize) -> io::Error {
    io::Error::other(zstd_safe::get_error_name(code).to_string())
}

pub mod bulk {
    //! One-shot compression and decompression with pooled contexts.

    use std::cell::RefCell;
    use std::io;
    use std::marker::PhantomData;

    use zstd_safe::{CCtx, CParameter, CompressionLevel, DCtx, WriteBuf};

    use super::map_error_code;

    /// Warm contexts kept per thread (beyond them, contexts are freed).
    const POOL: usize = 8;

    thread_local! {
        static DCTXS: RefCell<Vec<DCtx<'static>>> = const { RefCell::new(Vec::new()) };
        static CCTXS: RefCell<Vec<CCtx<'static>>> = const { RefCell::new(Vec::new()) };
    }

    fn take_dctx() -> DCtx<'static> {
        DCTXS
            .try_with(|p| p.borrow_mut().pop())
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    fn give_dctx(ctx: DCtx<'static>) {
        let _ = DCTXS.try_with(|p| {
            let mut p = p.borrow_mut();
            if p.len() < POOL {
                p.push(ctx);
            }
        });
    }

    fn take_cctx() -> CCtx<'static> {
        CCTXS
            .try_with(|p| p.borrow_mut().pop())
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    fn give_cctx(ctx: CCtx<'static>) {
        let _ = CCTXS.try_with(|p| {
            let mut p = p.borrow_mut();
            if p.len() < POOL {
                p.push(ctx);
            }
        });
    }

    /// Decompresses whole frames.
    #[derive(Default)]
    pub struct Decompressor<'a> {
        context: Option<DCtx<'static>>,
        _dictionary: PhantomData<&'a [u8]>,
    }

    impl Decompressor<'static> {
        /// A decompressor; its context is taken from the pool on first use.
        pub fn new() -> io::Result<Self> {
            Ok(Self::default())
        }
    }

    impl Decompressor<'_> {
        /// Decompresses `source` (one or more frames) into `destination`, returning
        /// the bytes written.
        pub fn decompress_to_buffer<C: WriteBuf + ?Sized>(
            &mut self,
            source: &[u8],
            destination: &mut C,
        ) -> io::Result<usize> {
            self.context
                .get_or_insert_with(take_dctx)
                .decompress(destination, source)
                .map_err(map_error_code)
        }

        /// Decompresses `data` into a new buffer of at most `capacity` bytes.
        pub fn decompress(&mut self, data: &[u8], capacity: usize) -> io::Result<Vec<u8>> {
            let mut buffer = Vec::with_capacity(capacity);
            self.decompress_to_buffer(data, &mut buffer)?;
            Ok(buffer)
        }
    }

    impl Drop for Decompressor<'_> {
        fn drop(&mut self) {
            if let Some(ctx) = self.context.take() {
                give_dctx(ctx);
            }
        }
    }

    /// Compresses whole frames at one level.
    pub struct Compressor<'a> {
        level: CompressionLevel,
        context: Option<CCtx<'static>>,
        _dictionary: PhantomData<&'a [u8]>,
    }

    impl Compressor<'static> {
        /// A compressor at `level`; its context is taken from the pool on first use.
        pub fn new(level: CompressionLevel) -> io::Result<Self> {
            if !super::compression_level_range().contains(&level) && level != 0 {
                return Err(io::Error::other(format!(
                    "zstd compression level {level} is out of range"
                )));
            }
            Ok(Compressor {
                level,
                context: None,
                _dictionary: PhantomData,
            })
        }
    }

    impl Compressor<'_> {
        fn context(&mut self) -> io::Result<&mut CCtx<'static>> {
            if self.context.is_none() {
                let mut ctx = take_cctx();
                ctx.set_parameter(CParameter::CompressionLevel(self.level))
                    .map_err(map_error_code)?;
                self.context = Some(ctx);
            }
            Ok(self.context.as_mut().expect("set above"))
        }

        /// Compresses `source` into `destination` as one frame, returning the bytes
        /// written.
        pub fn compress_to_buffer<C: WriteBuf + ?Sized>(
            &mut self,
            source: &[u8],
            destination: &mut C,
        ) -> io::Result<usize> {
            self.context()?
                .compress2(destination, source)
                .map_err(map_error_code)
        }

        /// Compresses `data` into a new buffer.
        pub fn compress(&mut self, data: &[u8]) -> io::Result<Vec<u8>> {
            let mut buffer = Vec::with_capacity(zstd_safe::compress_bound(data.len()));
            self.compress_to_buffer(data, &mut buffer)?;
            Ok(buffer)
        }
    }

    impl Drop for Compressor<'_> {
        fn drop(&mut self) {
            if let Some(ctx) = self.context.take() {
                give_cctx(ctx);
            }
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn sample(n: usize, seed: u64) -> Vec<u8> {
            let mut x = seed;
            (0..n)
                .map(|i| {
                    x = x
                        .wrapping_mul(6364136223846793005)
                        .wrapping_add(1442695040888963407);
                    // Compressible: runs and a small alphabet, some noise.
                    if i % 7 == 0 {
                        (x >> 56) as u8
                    } else {
                        b'a' + (i / 13 % 5) as u8
                    }
                })
                .collect()
        }

        #[test]
        fn round_trips_and_reuses_contexts_across_levels() {
            for round in 0..20u64 {
                let data = sample(10_000 + round as usize * 977, round);
                let level = [1, 3, 9, -5][round as usize % 4];
                let mut c = Compressor::new(level).unwrap();
                let mut packed = Vec::with_capacity(zstd_safe::compress_bound(data.len()));
                c.compress_to_buffer(&data, &mut packed).unwrap();
                assert!(packed.len() < data.len());
                // The frame is standard zstd: its header records the size.
                assert_eq!(
                    zstd_safe::get_frame_content_size(&packed).unwrap(),
                    Some(data.len() as u64)
                );
                drop(c);
                let mut d = Decompressor::new().unwrap();
                let mut out = Vec::with_capacity(data.len());
                let n = d.decompress_to_buffer(&packed, &mut out).unwrap();
                assert_eq!(n, data.len());
                assert_eq!(out, data);
            }
        }

        #[test]
        fn appends_after_existing_bytes_like_parquet_does() {
            let data = sample(50_000, 9);
            let mut packed = Vec::new();
            packed.extend_from_slice(b"head");
            packed.reserve(zstd_safe::compress_bound(data.len()));
            let mut cursor = std::io::Cursor::new(&mut packed);
            cursor.set_position(4);
            let mut c = Compressor::new(1).unwrap();
            c.compress_to_buffer(&data, &mut cursor).unwrap();
            assert_eq!(&packed[..4], b"head");
            let mut out = b"xy".to_vec();
            out.reserve(data.len());
            let mut cursor = std::io::Cursor::new(&mut out);
            cursor.set_position(2);
            let n = Decompressor::new()
                .unwrap()
                .decompress_to_buffer(&packed[4..], &mut cursor)
                .unwrap();
            assert_eq!(n, data.len());
            assert_eq!(&out[2..], &data[..]);
        }

        #[test]
        fn a_failed_call_leaves_the_pooled_context_usable() {
            let mut d = Decompressor::new().unwrap();
            let mut out = Vec::with_capacity(100);
            assert!(d
                .decompress_to_buffer(b"not zstd at all", &mut out)
                .is_err());
            drop(d);
            let data = sample(5_000, 1);
            let packed = Compressor::new(3).unwrap().compress(&data).unwrap();
            let got = Decompressor::new()
                .unwrap()
                .decompress(&packed, data.len())
                .unwrap();
            assert_eq!(got, data);
            // Too small a destination fails cleanly.
            let mut small = Vec::with_capacity(10);
            assert!(Decompressor::new()
                .unwrap()
                .decompress_to_buffer(&packed, &mut small)
                .is_err());
        }
    }
}
