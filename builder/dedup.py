"""Chunk dictionaries: index the chunks of an existing lazyfly image so a build can reuse them.

A chunk found in the dictionary is referenced, not stored; the dictionary blobs that end up used
are copied into the new image (as extra data-blob layers), so the image stays self-contained.
"""

import contextlib
import stat

from lazyfly.builder.blob_writer import BlobHandle, StoredChunk
from lazyfly.builder.chunker import ChunkIndex
from lazyfly.builder.image_source import as_lazy_image, open_local_image
from lazyfly.format.layout import ChunkEntry
from lazyfly.oci.locate import ImageLocation


def load_chunk_dictionary(
    location: ImageLocation, stack: contextlib.ExitStack, *, plain_http: bool, platform: str
) -> ChunkIndex:
    """Index every chunk of the lazyfly image at `location`; its blobs stay open in `stack`."""
    image = as_lazy_image(
        stack.enter_context(open_local_image(location, plain_http=plain_http, platform=platform))
    )
    boot = image.bootstrap
    handles = [
        BlobHandle(
            path=image.layout.blob_path(b.digest),
            digest=b.digest,
            compressed_size=b.compressed_size,
            uncompressed_size=b.uncompressed_size,
            chunk_count=b.chunk_count,
            from_dictionary=True,
        )
        for b in boot.blobs()
    ]
    index: ChunkIndex = {}
    for _, inode in boot.walk():
        if not stat.S_ISREG(inode.mode):
            continue
        for ref in boot.chunks(inode):
            if ref.digest not in index:
                entry = ChunkEntry(
                    ref.uncompressed_offset,
                    ref.compressed_offset,
                    ref.uncompressed_size,
                    ref.compressed_size,
                    ref.compressor,
                    ref.digest,
                )
                index[ref.digest] = StoredChunk(handles[ref.blob_index], entry)
    return index
